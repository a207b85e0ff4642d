//! DPM++ 2M: diffusers `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"` (Lu et al. 2022). It works on the model's x0
//! prediction in log-SNR time `lambda = ln(alpha / sigma)`: a first-order step on the first call,
//! then second-order multistep updates from the last two x0 predictions.
//!
//! The final sigma is 0 (`final_sigmas_type="zero"`, the only value accepted), for which diffusers
//! always takes the last step at first order, whatever `lower_order_final` / `euler_at_final` say;
//! for order 2 those keys change nothing else, so they are not read. "DPM++ 2M Karras" is the
//! same with Karras sigmas (as is `use_karras_sigmas: true` in the config).

use super::config::{ClassDefaults, Prediction, SchedulerConfig};
use super::schedule::{dpm_timesteps, karras_sigmas, TrainSchedule};
use super::{check_call, zip_map, Sampler, SamplerKind};
use crate::rng::BatchRng;
use crate::Result;

pub struct DpmSolver2m {
    steps: usize,
    karras: bool,
    /// One per step (integers, as diffusers passes them).
    timesteps: Vec<f64>,
    /// One per step plus the final 0 (float32 values).
    sigmas: Vec<f64>,
    prediction: Prediction,
    /// The previous call's x0 prediction (none before the first step).
    previous_x0: Option<Vec<f64>>,
    begin: usize,
    next: usize,
}

/// The variance-preserving view of noise level `sigma`: `(alpha_t, sigma_t, lambda_t)` with
/// `alpha_t^2 + sigma_t^2 = 1`. At sigma 0, lambda is +infinity, and the update formulas reduce to
/// returning x0 exactly.
fn vp(sigma: f64) -> (f64, f64, f64) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha_t;
    (alpha_t, sigma_t, alpha_t.ln() - sigma_t.ln())
}

impl DpmSolver2m {
    pub fn new(config: &SchedulerConfig, steps: usize, karras: bool) -> DpmSolver2m {
        let defaults = ClassDefaults::COMMON;
        let train = TrainSchedule::new(config, &defaults);
        let n_train = train.num_train_timesteps();
        let spacing = config.timestep_spacing.unwrap_or(defaults.timestep_spacing);
        let karras = karras || config.use_karras_sigmas;
        let mut timesteps = dpm_timesteps(spacing, n_train, steps, config.steps_offset);
        let mut sigmas: Vec<f64>;
        if karras {
            // Between the table's smallest and largest sigma; timesteps rounded to integers.
            let table = &train.sigmas;
            sigmas = karras_sigmas(table[0] as f64, table[n_train - 1] as f64, steps);
            timesteps = sigmas
                .iter()
                .map(|&s| train.sigma_to_t(s).round_ties_even())
                .collect();
        } else {
            sigmas = timesteps.iter().map(|&t| train.sigma_at(t)).collect();
        }
        sigmas.push(0.0);
        DpmSolver2m {
            steps,
            karras,
            timesteps,
            sigmas: sigmas.into_iter().map(|s| s as f32 as f64).collect(),
            prediction: config.prediction_type,
            previous_x0: None,
            begin: 0,
            next: 0,
        }
    }
}

impl Sampler for DpmSolver2m {
    fn kind(&self) -> SamplerKind {
        if self.karras {
            SamplerKind::DpmPp2mKarras
        } else {
            SamplerKind::DpmPp2m
        }
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps[self.begin..]
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas[self.begin..])
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &[f32], _call: usize) -> Vec<f32> {
        sample.to_vec()
    }

    fn step(&mut self, model_output: &[f32], call: usize, sample: &[f32], _rng: &mut BatchRng) -> Vec<f32> {
        check_call(call, self.next, self.timesteps().len());
        self.next += 1;
        let i = self.begin + call;
        let (alpha_s0, sigma_s0, lambda_s0) = vp(self.sigmas[i]);
        let (alpha_t, sigma_t, lambda_t) = vp(self.sigmas[i + 1]);
        let x0: Vec<f64> = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &out)| match self.prediction {
                Prediction::Epsilon => (x as f64 - sigma_s0 * out as f64) / alpha_s0,
                Prediction::VPrediction => alpha_s0 * x as f64 - sigma_s0 * out as f64,
            })
            .collect();
        let h = lambda_t - lambda_s0;
        let sample_coeff = sigma_t / sigma_s0;
        let x0_coeff = alpha_t * ((-h).exp() - 1.0);
        let last_step = i + 1 == self.timesteps.len();
        let prev: Vec<f32> = match self.previous_x0.as_ref().filter(|_| !last_step) {
            // First order: x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) x0.
            None => sample
                .iter()
                .zip(&x0)
                .map(|(&x, d0)| (sample_coeff * x as f64 - x0_coeff * d0) as f32)
                .collect(),
            Some(x0_before) => {
                // Second order (midpoint): D1 = (x0 - x0_before) / r0, r0 = h_before / h.
                let (_, _, lambda_s1) = vp(self.sigmas[i - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                sample
                    .iter()
                    .zip(x0.iter().zip(x0_before))
                    .map(|(&x, (d0, m1))| {
                        let d1 = (d0 - m1) / r0;
                        (sample_coeff * x as f64 - x0_coeff * d0 - 0.5 * x0_coeff * d1) as f32
                    })
                    .collect()
            }
        };
        self.previous_x0 = Some(x0);
        prev
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        let (alpha_t, sigma_t, _) = vp(self.sigmas[self.begin + call]);
        zip_map(original, noise, |x, n| alpha_t * x + sigma_t * n)
    }

    fn skip_steps(&mut self, steps: usize) -> Result<()> {
        assert!(
            self.begin == 0 && self.next == 0,
            "skip_steps must come once, before the first call"
        );
        assert!(steps < self.steps, "img2img keeps at least one step");
        self.begin = steps;
        Ok(())
    }
}
