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
//! img2img, as diffusers' `StableDiffusionImg2ImgPipeline` runs it: PNDM declares one call per
//! step (`order = 1`), so the pipeline keeps its call list from index `t_start = steps - kept`
//! on, and the scheduler runs that tail with its counter starting from 0: the warm-up (the plain
//! step, then the redo from the sample it started from) runs on the first two kept calls. With
//! `t_start >= 2` the first call is one timestep above DDIM's start, and from the third call on
//! the model is evaluated one timestep below the level the sample was stepped to. A start that
//! keeps no step still keeps PNDM's last call (its list is one longer than its steps). Without
//! `skip_prk_steps` the first 12 kept calls take the Runge-Kutta warm-up, which reads its step
//! starts from the full schedule. (Restarting the warm-up on the kept steps instead would start
//! where DDIM does and give a different image.)

use super::config::{ClassDefaults, Prediction, SchedulerConfig};
use super::ddim::check_timesteps_in_table;
use super::schedule::{spaced_timesteps, TrainSchedule};
use super::{check_call, Img2ImgStart, Sampler, SamplerKind};
use crate::rng::BatchRng;
use crate::{Error, Result};

/// Adams-Bashforth weights (newest output first) for 2, 3 and 4 outputs.
const AB2: [f64; 2] = [3.0 / 2.0, -1.0 / 2.0];
const AB3: [f64; 3] = [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0];
const AB4: [f64; 4] = [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0];

pub struct Pndm {
    steps: usize,
    train: TrainSchedule,
    final_alpha_cumprod: f64,
    prediction: Prediction,
    /// `num_train_timesteps / steps`.
    ratio: usize,
    /// The timesteps of the Runge-Kutta warm-up of the full schedule (diffusers'
    /// `prk_timesteps`; empty with `skip_prk_steps`).
    prk: Vec<f64>,
    /// One timestep per model call (diffusers' `timesteps`).
    calls: Vec<f64>,
    /// The first call to run (img2img; diffusers' `t_start * order`).
    begin: usize,
    /// Calls made so far (diffusers' `counter`, which an img2img start does not advance).
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
        let ratio = n_train / steps;
        let skip_prk_steps = config.skip_prk_steps.unwrap_or(defaults.skip_prk_steps);
        let (prk, plms) = if skip_prk_steps {
            (Vec::new(), plms_calls(&spaced))
        } else {
            prk_calls(&spaced, ratio)?
        };
        Ok(Pndm {
            steps,
            train,
            final_alpha_cumprod,
            prediction: config.prediction_type,
            ratio,
            calls: prk.iter().chain(&plms).copied().collect(),
            prk,
            begin: 0,
            counter: 0,
            ets: Vec::new(),
            rk_sum: Vec::new(),
            warmup_sample: None,
        })
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
        // diffusers reads the step's start from the full warm-up list, also after an img2img start.
        let t_start = self.prk[self.counter / 4 * 4];
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

/// PLMS's calls, from the inference timesteps (ascending): `ts[..n-1]`, then `ts[n-2]` again, then
/// `ts[n-1]`; reversed: t_max, t_2nd, t_2nd, ...
fn plms_calls(ts: &[f64]) -> Vec<f64> {
    let n = ts.len();
    let mut calls = ts[..n - 1].to_vec();
    calls.extend_from_slice(&ts[n.saturating_sub(2)..n - 1]);
    calls.push(ts[n - 1]);
    calls.reverse();
    calls
}

/// The Runge-Kutta warm-up calls and the PLMS calls after them, from the inference timesteps
/// (ascending). The warm-up runs on the 4 largest timesteps and the midpoints between them:
/// t3, t3-h, t3-h, t2, t2, t2-h, t2-h, t1, t1, t1-h, t1-h, t0 (h = half a step); PLMS then goes
/// from t0 down.
fn prk_calls(ts: &[f64], ratio: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = ts.len();
    if n < 4 {
        return Err(Error::invalid(
            "steps",
            format!("PNDM with skip_prk_steps=false needs at least 4 steps, found {n}"),
        ));
    }
    let half = (ratio / 2) as f64;
    let top: Vec<f64> = ts[n - 4..].iter().flat_map(|&t| [t, t + half]).collect();
    let doubled: Vec<f64> = top[..7].iter().flat_map(|&t| [t, t]).collect();
    let prk = doubled[1..13].iter().rev().copied().collect();
    Ok((prk, ts[..n - 3].iter().rev().copied().collect()))
}

impl Sampler for Pndm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Pndm
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn timesteps(&self) -> &[f64] {
        &self.calls[self.begin..]
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
        check_call(call, self.counter, self.timesteps().len());
        let t = self.timesteps()[call];
        let prev = if self.counter < self.prk.len() {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        };
        self.counter += 1;
        prev
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        let a_t = self.train.alpha_cumprod(self.timesteps()[call]);
        super::zip_map(original, noise, |x, n| a_t.sqrt() * x + (1.0 - a_t).sqrt() * n)
    }

    /// Drops the first `steps` calls: diffusers' img2img slices PNDM's call list at
    /// `t_start * order` with `order = 1`.
    fn skip_steps(&mut self, steps: usize) -> Result<()> {
        assert!(
            self.begin == 0 && self.counter == 0,
            "skip_steps must come once, before the first call"
        );
        assert!(steps < self.calls.len(), "img2img keeps at least one call");
        self.begin = steps;
        Ok(())
    }

    /// diffusers' slice at `t_start = steps - kept` leaves PNDM's last call even when the strength
    /// keeps no step (its call list is one longer than its steps); only with 1 step is nothing
    /// left, and then the step runs anyway.
    fn start_at_strength(&mut self, strength: f64) -> Result<Img2ImgStart> {
        let start = Img2ImgStart::new(self.steps, strength)?;
        let kept = if start.raised_to_one { 0 } else { start.steps_run };
        let t_start = self.steps - kept;
        if t_start < self.calls.len() {
            self.skip_steps(t_start)?;
            return Ok(Img2ImgStart {
                steps_run: start.steps_run,
                raised_to_one: false,
            });
        }
        self.skip_steps(self.steps - start.steps_run)?;
        Ok(start)
    }
}
