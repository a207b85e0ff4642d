//! Noise-schedule arithmetic shared by the samplers: betas, `alphas_cumprod`, sigmas, timestep
//! spacing, sigma interpolation, Karras sigmas.
//!
//! Precision: arithmetic is f64, except that where diffusers **stores** a table in float32 (betas,
//! `alphas_cumprod`, the sigma table, the inference timesteps and sigmas) the value is rounded to
//! f32 at the same point, with torch's f32 operations where they make it. betas and
//! `alphas_cumprod` then agree with diffusers' bit for bit and every model call sees the timestep
//! diffusers passes. (A pure-f64 `alphas_cumprod` would differ from diffusers' by ~1e-6 relative,
//! which becomes ~1e-5 in the small sigmas, where `1 - alpha_cumprod` cancels.) The sigma table
//! agrees to 1 ulp: torch's float32 `sqrt` (MKL's vector math in the x86 builds) is not correctly
//! rounded and is 1 ulp off in ~19% of the entries, where ours is correctly rounded.
//!
//! numpy's behaviour is reproduced where diffusers relies on it: `np.linspace` (`i * step +
//! start`, exact end point), `np.round` (ties to even), `np.interp`, and float `np.arange`
//! (`start + i * ((start + step) - start)`, length `ceil((stop - start) / step)`). For 62 step
//! counts between 1 and 1000 (61, 103, 121, ...) that float `arange` yields one point too many for
//! "trailing" spacing and diffusers ends its schedule on timestep -1; we keep the `steps` points
//! the spacing intends.

use super::config::{BetaSchedule, ClassDefaults, SchedulerConfig, TimestepSpacing};

/// The training noise schedule as diffusers stores it: float32 tables indexed by training
/// timestep `0..N`.
#[derive(Debug, Clone)]
pub struct TrainSchedule {
    pub betas: Vec<f32>,
    /// `prod_{s <= t} (1 - beta_s)`.
    pub alphas_cumprod: Vec<f32>,
    /// `sqrt((1 - alphas_cumprod) / alphas_cumprod)`, the noise level of timestep `t` in the
    /// variance-exploding view (`x_t / alpha_t = x_0 + sigma_t * noise`).
    pub sigmas: Vec<f32>,
}

impl TrainSchedule {
    pub fn new(config: &SchedulerConfig, defaults: &ClassDefaults) -> TrainSchedule {
        let n = config.num_train_timesteps;
        let start = config.beta_start.unwrap_or(defaults.beta_start);
        let end = config.beta_end.unwrap_or(defaults.beta_end);
        let betas: Vec<f32> = match config.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(start as f32, end as f32, n),
            // torch: `linspace(beta_start**0.5, beta_end**0.5, N, dtype=float32) ** 2`, the square
            // roots taken in Python (f64) and the square in f32.
            BetaSchedule::ScaledLinear => torch_linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
        };
        // torch.cumprod on CPU accumulates float32 in double and rounds each output to float32.
        let mut acc = 1.0f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|&b| {
                acc *= (1.0f32 - b) as f64;
                acc as f32
            })
            .collect();
        let sigmas = alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        TrainSchedule {
            betas,
            alphas_cumprod,
            sigmas,
        }
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `alphas_cumprod[t]` for an integer timestep.
    pub fn alpha_cumprod(&self, t: f64) -> f64 {
        self.alphas_cumprod[t as usize] as f64
    }

    /// `np.interp(t, arange(N), sigmas)`: linear interpolation at a fractional timestep, clamped to
    /// the table's ends.
    pub fn sigma_at(&self, t: f64) -> f64 {
        let table = &self.sigmas;
        let last = table.len() - 1;
        if t <= 0.0 {
            return table[0] as f64;
        }
        if t >= last as f64 {
            return table[last] as f64;
        }
        let j = t.floor() as usize;
        let (lo, hi) = (table[j] as f64, table[j + 1] as f64);
        if t == j as f64 {
            lo
        } else {
            (hi - lo) * (t - j as f64) + lo
        }
    }

    /// diffusers' `_sigma_to_t`: the fractional timestep whose sigma is `sigma`, interpolating
    /// linearly in `ln sigma` between the two table entries around it.
    ///
    /// diffusers' table of `ln sigma` is float32 too, from numpy's float32 `log`, a SIMD
    /// approximation whose last bit differs from the correctly rounded logarithm (used here) in
    /// ~20% of the entries; the timesteps recovered can then differ from diffusers' in the last
    /// bits (1e-7 relative, see tests/schedulers.rs), well below what changes a model call.
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let log_table: Vec<f64> = self
            .sigmas
            .iter()
            .map(|&s| (s as f64).ln() as f32 as f64)
            .collect();
        // The last index whose log sigma is <= log_sigma (the table is increasing), kept one short
        // of the end so that `high` exists; 0 when even the first entry is larger (numpy's argmax
        // of an all-zero cumsum).
        let below = log_table.iter().take_while(|&&l| log_sigma - l >= 0.0).count();
        let low = below.saturating_sub(1).min(log_table.len() - 2);
        let (lo, hi) = (log_table[low], log_table[low + 1]);
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` as torch's vectorised CPU kernel computes
/// it: `fma(step, i, start)` below the midpoint and `fma(-step, n - 1 - i, end)` from it, with
/// `step = (end - start) / (n - 1)` in f32 (one rounding per value; checked value for value
/// against torch 2.15 for both beta schedules in the tests).
pub fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (f64): `i * step + start`, the last point exactly `stop`.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, 0, -step)` for a float `step > 0`, cut to at most `max_len` points (see the
/// module comment on the extra point).
fn np_arange_down(start: f64, step: f64, max_len: usize) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil() as usize;
    // numpy fills with the difference of its first two points, not with `step` itself.
    let delta = (start - step) - start;
    (0..len.min(max_len))
        .map(|i| {
            if i == 1 {
                start - step
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
}

/// Inference timesteps, descending, as `set_timesteps` of DDIM, PNDM and the Euler family (Euler,
/// Euler ancestral, LMS, Heun) compute them. `round_linspace`: DDIM and PNDM round "linspace"
/// points to integers; the Euler family keeps them fractional (as float32).
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| {
                if round_linspace {
                    t.round_ties_even()
                } else {
                    t as f32 as f64
                }
            })
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            np_arange_down(num_train as f64, ratio, steps)
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// Inference timesteps, descending, as `DPMSolverMultistepScheduler.set_timesteps` computes them
/// (integers; it spaces `steps + 1` points and drops the last).
pub fn dpm_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps + 1)
            .into_iter()
            .rev()
            .take(steps)
            .map(f64::round_ties_even)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => spaced_timesteps(spacing, num_train, steps, 0, true),
    }
}

/// Karras et al. (2022) sigmas: `steps` points evenly spaced in `sigma^(1/rho)` from `sigma_max`
/// down to `sigma_min`, rho = 7.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// The schedule of the samplers that work on sigmas (Euler, Euler ancestral, LMS, Heun).
#[derive(Debug, Clone)]
pub struct SigmaSchedule {
    /// One per step, descending (float32 values).
    pub timesteps: Vec<f64>,
    /// One per step plus the final 0 (float32 values).
    pub sigmas: Vec<f64>,
}

impl SigmaSchedule {
    /// `set_timesteps` of the Euler family: spaced timesteps, sigmas interpolated at them, or, with
    /// `karras`, Karras sigmas between the first and last of those and the timesteps recovered
    /// from the Karras sigmas.
    pub fn new(
        train: &TrainSchedule,
        spacing: TimestepSpacing,
        steps: usize,
        offset: usize,
        karras: bool,
    ) -> Self {
        let mut timesteps = spaced_timesteps(spacing, train.num_train_timesteps(), steps, offset, false);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| train.sigma_at(t)).collect();
        if karras {
            sigmas = karras_sigmas(sigmas[steps - 1], sigmas[0], steps);
            timesteps = sigmas
                .iter()
                .map(|&s| train.sigma_to_t(s) as f32 as f64)
                .collect();
        }
        sigmas.push(0.0);
        let sigmas = sigmas.into_iter().map(|s| s as f32 as f64).collect();
        SigmaSchedule { timesteps, sigmas }
    }

    /// The initial noise scale of the Euler family: the largest sigma for "linspace" and
    /// "trailing" spacing, `sqrt(sigma_max^2 + 1)` (in f32, as torch computes it) for "leading".
    pub fn init_noise_sigma(&self, spacing: TimestepSpacing) -> f64 {
        let max = self.sigmas.iter().fold(0.0f64, |m, &s| m.max(s)) as f32;
        match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }
}
