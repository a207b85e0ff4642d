//! DDIM: diffusers `DDIMScheduler` (Song et al. 2020, eq. 12). `eta = 0` (the pipelines'
//! default) is deterministic; `eta > 0` adds `eta * sigma_t` of fresh noise per step (`eta = 1`
//! is DDPM-like), drawn at every step.
//!
//! As in diffusers, the previous timestep is `t - num_train_timesteps / steps` whatever the
//! spacing, and below timestep 0 the "previous" `alpha_cumprod` is 1 (`set_alpha_to_one`) or
//! `alphas_cumprod[0]`.

use super::config::{ClassDefaults, Prediction, SchedulerConfig, TimestepSpacing};
use super::schedule::{spaced_timesteps, TrainSchedule};
use super::{check_call, zip_map, Sampler, SamplerKind};
use crate::rng::BatchRng;
use crate::{Error, Result};

pub struct Ddim {
    steps: usize,
    train: TrainSchedule,
    timesteps: Vec<f64>,
    /// `num_train_timesteps / steps`: the distance to the previous timestep.
    ratio: usize,
    final_alpha_cumprod: f64,
    eta: f64,
    prediction: Prediction,
    clip: Option<f64>,
    begin: usize,
    next: usize,
}

impl Ddim {
    const DEFAULTS: ClassDefaults = ClassDefaults {
        timestep_spacing: TimestepSpacing::Leading,
        set_alpha_to_one: true,
        clip_sample: true,
        ..ClassDefaults::COMMON
    };

    pub fn new(config: &SchedulerConfig, steps: usize, eta: f64) -> Result<Ddim> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::invalid(
                "eta",
                format!("must be a finite number >= 0, found {eta}"),
            ));
        }
        let defaults = Self::DEFAULTS;
        let train = TrainSchedule::new(config, &defaults);
        let n_train = train.num_train_timesteps();
        let spacing = config.timestep_spacing.unwrap_or(defaults.timestep_spacing);
        let timesteps = spaced_timesteps(spacing, n_train, steps, config.steps_offset, true);
        check_timesteps_in_table(&timesteps, n_train, config.steps_offset)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(defaults.set_alpha_to_one) {
            1.0
        } else {
            train.alphas_cumprod[0] as f64
        };
        Ok(Ddim {
            steps,
            ratio: n_train / steps,
            timesteps,
            train,
            final_alpha_cumprod,
            eta,
            prediction: config.prediction_type,
            clip: config
                .clip_sample
                .unwrap_or(defaults.clip_sample)
                .then_some(config.clip_sample_range),
            begin: 0,
            next: 0,
        })
    }

    /// `alphas_cumprod` at `t - ratio`, or the final value below timestep 0.
    fn alpha_cumprod_prev(&self, t: f64) -> f64 {
        let prev = t as i64 - self.ratio as i64;
        if prev >= 0 {
            self.train.alphas_cumprod[prev as usize] as f64
        } else {
            self.final_alpha_cumprod
        }
    }
}

/// "leading" spacing plus `steps_offset` can pass the last training timestep (1000 steps with
/// offset 1 give timestep 1000), which diffusers' DDIM and PNDM then index out of range.
pub(super) fn check_timesteps_in_table(timesteps: &[f64], n_train: usize, offset: usize) -> Result<()> {
    match timesteps.iter().find(|&&t| t >= n_train as f64) {
        Some(t) => Err(Error::invalid(
            "steps",
            format!(
                "{} steps with steps_offset {offset} reach timestep {t}, past the {n_train} training timesteps; \
                 use fewer steps",
                timesteps.len()
            ),
        )),
        None => Ok(()),
    }
}

impl Sampler for Ddim {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddim
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps[self.begin..]
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

    fn step(&mut self, model_output: &[f32], call: usize, sample: &[f32], rng: &mut BatchRng) -> Vec<f32> {
        check_call(call, self.next, self.timesteps().len());
        self.next += 1;
        let t = self.timesteps[self.begin + call];
        let a_t = self.train.alpha_cumprod(t);
        let a_prev = self.alpha_cumprod_prev(t);
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction = (1.0 - a_prev - std_dev * std_dev).sqrt();
        assert_eq!(
            sample.len(),
            model_output.len(),
            "sample and model output lengths differ"
        );
        let noise = (self.eta > 0.0).then(|| rng.randn(sample.len()));
        (0..sample.len())
            .map(|e| {
                let (x, out) = (sample[e] as f64, model_output[e] as f64);
                let (x0, eps) = match self.prediction {
                    Prediction::Epsilon => ((x - (1.0 - a_t).sqrt() * out) / a_t.sqrt(), out),
                    Prediction::VPrediction => (
                        a_t.sqrt() * x - (1.0 - a_t).sqrt() * out,
                        a_t.sqrt() * out + (1.0 - a_t).sqrt() * x,
                    ),
                };
                // diffusers keeps the unclipped eps for the direction term (its pipelines leave
                // use_clipped_model_output off).
                let x0 = self.clip.map_or(x0, |r| x0.clamp(-r, r));
                let fresh = noise.as_ref().map_or(0.0, |n| std_dev * n[e] as f64);
                (a_prev.sqrt() * x0 + direction * eps + fresh) as f32
            })
            .collect()
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        let a_t = self.train.alpha_cumprod(self.timesteps[self.begin + call]);
        zip_map(original, noise, |x, n| a_t.sqrt() * x + (1.0 - a_t).sqrt() * n)
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
