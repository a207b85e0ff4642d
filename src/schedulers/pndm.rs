//! PNDM / PLMS: diffusers `PNDMScheduler` (Liu et al. 2022), SD 1.x's default sampler.
//!
//! With `skip_prk_steps` (SD's config) it is PLMS: linear multistep on the model output, with
//! the warm-up diffusers uses: call 0 takes a plain step from `t0` to `t1`; call 1 evaluates the
//! model there, goes back to the sample at `t0` and redoes the step with the average of the two
//! outputs; from then on Adams-Bashforth of growing order (2, 3, then 4) on the outputs kept.
//! Call 1 repeats timestep `t1`, so `steps` steps are `steps + 1` calls. Without
//! `skip_prk_steps` the first three steps are the paper's pseudo Runge-Kutta warm-up (4 calls at
//! half steps each).
//!
//! img2img: the sampler restarts on the kept steps: the same construction on the last `kept`
//! timesteps, the first call at the noise level `add_noise` gives (the timestep DDIM starts at
//! for the same strength). diffusers' img2img pipeline instead slices PNDM's call list as if it
//! had one call per step: it starts one noise level higher than DDIM, skips the warm-up repeat,
//! and from its third call evaluates the model one timestep below the sample's noise level.

use super::config::{ClassDefaults, Prediction, SchedulerConfig};
use super::ddim::check_timesteps_in_table;
use super::schedule::{spaced_timesteps, TrainSchedule};
use super::{check_call, Sampler, SamplerKind};
use crate::rng::BatchRng;
use crate::{Error, Result};

/// Adams-Bashforth weights (newest output first) for 2, 3 and 4 outputs.
const AB2: [f64; 2] = [3.0 / 2.0, -1.0 / 2.0];
const AB3: [f64; 3] = [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0];
const AB4: [f64; 4] = [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0];

pub struct Pndm {
    steps: usize,
    train: TrainSchedule,
    skip_prk_steps: bool,
    final_alpha_cumprod: f64,
    prediction: Prediction,
    /// `num_train_timesteps / steps`.
    ratio: usize,
    /// Inference timesteps, ascending (diffusers' `_timesteps`).
    spaced: Vec<f64>,
    /// Calls of the Runge-Kutta warm-up (empty with `skip_prk_steps`).
    prk_calls: usize,
    /// One timestep per model call.
    calls: Vec<f64>,
    /// Calls made so far (diffusers' `counter`).
    counter: usize,
    /// Model outputs kept for the multistep formulas, newest last (at most 4).
    ets: Vec<Vec<f32>>,
    /// Runge-Kutta: the weighted sum of this step's outputs so far.
    rk_sum: Vec<f64>,
    /// The sample the current warm-up step started from.
    warmup_sample: Option<Vec<f32>>,
}

impl Pndm {
    const DEFAULTS: ClassDefaults = ClassDefaults {
        timestep_spacing: super::config::TimestepSpacing::Leading,
        ..ClassDefaults::COMMON
    };

    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Pndm> {
        let defaults = Self::DEFAULTS;
        let train = TrainSchedule::new(config, &defaults);
        let n_train = train.num_train_timesteps();
        let spacing = config.timestep_spacing.unwrap_or(defaults.timestep_spacing);
        let mut spaced = spaced_timesteps(spacing, n_train, steps, config.steps_offset, true);
        check_timesteps_in_table(&spaced, n_train, config.steps_offset)?;
        spaced.reverse();
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(defaults.set_alpha_to_one) {
            1.0
        } else {
            train.alphas_cumprod[0] as f64
        };
        let mut pndm = Pndm {
            steps,
            train,
            skip_prk_steps: config.skip_prk_steps.unwrap_or(defaults.skip_prk_steps),
            final_alpha_cumprod,
            prediction: config.prediction_type,
            ratio: n_train / steps,
            spaced,
            prk_calls: 0,
            calls: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            rk_sum: Vec::new(),
            warmup_sample: None,
        };
        pndm.build_calls(steps)?;
        Ok(pndm)
    }

    /// The call list for the last `kept` inference timesteps (all of them for txt2img).
    fn build_calls(&mut self, kept: usize) -> Result<()> {
        let ts = &self.spaced[..kept];
        if self.skip_prk_steps {
            // ts[..n-1], then ts[n-2] again, then ts[n-1]; reversed: t_max, t_2nd, t_2nd, ...
            let mut calls = ts[..kept - 1].to_vec();
            calls.extend_from_slice(&ts[kept.saturating_sub(2)..kept - 1]);
            calls.push(ts[kept - 1]);
            calls.reverse();
            self.prk_calls = 0;
            self.calls = calls;
            return Ok(());
        }
        if kept < 4 {
            return Err(Error::invalid(
                "steps",
                format!("PNDM with skip_prk_steps=false needs at least 4 steps to run, found {kept}"),
            ));
        }
        // The Runge-Kutta warm-up on the 4 largest timesteps and the midpoints between them:
        // t3, t3-h, t3-h, t2, t2, t2-h, t2-h, t1, t1, t1-h, t1-h, t0 (h = half a step), then PLMS
        // from t0 down.
        let half = (self.ratio / 2) as f64;
        let top: Vec<f64> = ts[kept - 4..].iter().flat_map(|&t| [t, t + half]).collect();
        let mut prk: Vec<f64> = top[..7].iter().flat_map(|&t| [t, t]).collect();
        prk = prk[1..13].to_vec();
        prk.reverse();
        self.prk_calls = prk.len();
        self.calls = prk;
        self.calls.extend(ts[..kept - 3].iter().rev());
        Ok(())
    }

    /// diffusers' `_get_prev_sample`: PNDM's transfer from `t` to `t_prev` (its eq. 9).
    fn transfer(&self, sample: &[f32], t: f64, t_prev: f64, output: &[f64]) -> Vec<f32> {
        let a_t = self.train.alpha_cumprod(t);
        let a_prev = if t_prev >= 0.0 {
            self.train.alpha_cumprod(t_prev)
        } else {
            self.final_alpha_cumprod
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let sample_coeff = (a_prev / a_t).sqrt();
        let output_denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        sample
            .iter()
            .zip(output)
            .map(|(&x, &out)| {
                let x = x as f64;
                let eps = match self.prediction {
                    Prediction::Epsilon => out,
                    Prediction::VPrediction => a_t.sqrt() * out + b_t.sqrt() * x,
                };
                (sample_coeff * x - (a_prev - a_t) * eps / output_denom) as f32
            })
            .collect()
    }

    /// One Runge-Kutta warm-up call (diffusers' `step_prk`).
    fn step_prk(&mut self, output: &[f32], t: f64, sample: &[f32]) -> Vec<f32> {
        let half = (self.ratio / 2) as f64;
        let t_prev = if self.counter % 2 == 1 { t } else { t - half };
        let t_start = self.calls[self.counter / 4 * 4];
        let combined: Vec<f64> = match self.counter % 4 {
            0 => {
                self.rk_sum = output.iter().map(|&e| e as f64 / 6.0).collect();
                self.ets.push(output.to_vec());
                self.warmup_sample = Some(sample.to_vec());
                output.iter().map(|&e| e as f64).collect()
            }
            1 | 2 => {
                self.rk_sum
                    .iter_mut()
                    .zip(output)
                    .for_each(|(s, &e)| *s += e as f64 / 3.0);
                output.iter().map(|&e| e as f64).collect()
            }
            _ => self
                .rk_sum
                .iter()
                .zip(output)
                .map(|(s, &e)| s + e as f64 / 6.0)
                .collect(),
        };
        let start = self
            .warmup_sample
            .as_deref()
            .expect("set at the first call of each RK step");
        self.transfer(start, t_start, t_prev, &combined)
    }

    /// One PLMS call (diffusers' `step_plms`).
    fn step_plms(&mut self, output: &[f32], t: f64, sample: &[f32]) -> Vec<f32> {
        let ratio = self.ratio as f64;
        let (mut t, mut t_prev) = (t, t - ratio);
        if self.counter == 1 {
            // The warm-up repeat: redo the step t + ratio -> t from the sample it started from.
            t_prev = t;
            t += ratio;
        } else {
            if self.ets.len() == 4 {
                self.ets.remove(0);
            }
            self.ets.push(output.to_vec());
        }
        let newest_first = |weights: &[f64]| -> Vec<f64> {
            (0..output.len())
                .map(|e| {
                    weights
                        .iter()
                        .zip(self.ets.iter().rev())
                        .map(|(w, et)| w * et[e] as f64)
                        .sum()
                })
                .collect()
        };
        let (combined, from): (Vec<f64>, Vec<f32>) = match (self.ets.len(), self.counter) {
            (1, 0) => {
                self.warmup_sample = Some(sample.to_vec());
                (output.iter().map(|&e| e as f64).collect(), sample.to_vec())
            }
            (1, 1) => {
                let first = &self.ets[0];
                let avg = output
                    .iter()
                    .zip(first)
                    .map(|(&a, &b)| (a as f64 + b as f64) / 2.0)
                    .collect();
                (avg, self.warmup_sample.take().expect("set by call 0"))
            }
            (2, _) => (newest_first(&AB2), sample.to_vec()),
            (3, _) => (newest_first(&AB3), sample.to_vec()),
            _ => (newest_first(&AB4), sample.to_vec()),
        };
        self.transfer(&from, t, t_prev, &combined)
    }
}

impl Sampler for Pndm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Pndm
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn timesteps(&self) -> &[f64] {
        &self.calls
    }

    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &[f32], _call: usize) -> Vec<f32> {
        sample.to_vec()
    }

    fn step(&mut self, model_output: &[f32], call: usize, sample: &[f32], _rng: &mut BatchRng) -> Vec<f32> {
        assert_eq!(
            sample.len(),
            model_output.len(),
            "sample and model output lengths differ"
        );
        check_call(call, self.counter, self.calls.len());
        let t = self.calls[call];
        let prev = if self.counter < self.prk_calls {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        };
        self.counter += 1;
        prev
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        let a_t = self.train.alpha_cumprod(self.calls[call]);
        super::zip_map(original, noise, |x, n| a_t.sqrt() * x + (1.0 - a_t).sqrt() * n)
    }

    fn skip_steps(&mut self, steps: usize) -> Result<()> {
        assert!(self.counter == 0, "skip_steps must come before the first call");
        assert!(steps < self.steps, "img2img keeps at least one step");
        self.build_calls(self.steps - steps)
    }
}
