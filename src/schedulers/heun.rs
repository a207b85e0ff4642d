//! Heun: diffusers `HeunDiscreteScheduler` (Karras et al. 2022, Algorithm 1, without churn). Each
//! step but the last is two model calls: an Euler step to `sigma_next`, then a second evaluation
//! there and the average of the two slopes. The last step (to sigma 0) is plain Euler. So
//! `steps` steps are `2 * steps - 1` calls; the schedule repeats every timestep but the first.

use super::config::{ClassDefaults, SchedulerConfig, TimestepSpacing};
use super::schedule::{SigmaSchedule, TrainSchedule};
use super::sigmas::{SigmaSampler, SigmaSteps};
use super::SamplerKind;
use crate::rng::BatchRng;

/// The first half of a step, kept for the second.
struct FirstHalf {
    derivative: Vec<f64>,
    dt: f64,
    sample: Vec<f32>,
}

pub struct Heun {
    s: SigmaSteps,
    /// Clamp of the predicted x0 (`clip_sample`), if on.
    clip: Option<f64>,
    pending: Option<FirstHalf>,
}

impl Heun {
    /// diffusers' Heun class defaults to SD's beta range (with linear betas).
    const DEFAULTS: ClassDefaults = ClassDefaults {
        beta_start: 0.00085,
        beta_end: 0.012,
        ..ClassDefaults::COMMON
    };

    pub fn new(config: &SchedulerConfig, steps: usize) -> Heun {
        let defaults = Self::DEFAULTS;
        let train = TrainSchedule::new(config, &defaults);
        let spacing: TimestepSpacing = config.timestep_spacing.unwrap_or(defaults.timestep_spacing);
        let plain = SigmaSchedule::new(
            &train,
            spacing,
            steps,
            config.steps_offset,
            config.use_karras_sigmas,
        );
        // [t0, t1, t1, t2, t2, ...] and [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0].
        let twice = |v: &[f64]| v.iter().flat_map(|&x| [x, x]).collect::<Vec<f64>>();
        let timesteps = [&plain.timesteps[..1], &twice(&plain.timesteps[1..])].concat();
        let n = plain.sigmas.len();
        let sigmas = [
            &plain.sigmas[..1],
            &twice(&plain.sigmas[1..n - 1]),
            &plain.sigmas[n - 1..],
        ]
        .concat();
        let schedule = SigmaSchedule { timesteps, sigmas };
        Heun {
            s: SigmaSteps::new(steps, schedule, spacing, config.prediction_type),
            clip: config
                .clip_sample
                .unwrap_or(defaults.clip_sample)
                .then_some(config.clip_sample_range),
            pending: None,
        }
    }

    /// The clamped x0 prediction at noise level `sigma`.
    fn x0(&self, x: f64, out: f64, sigma: f64) -> f64 {
        let x0 = self.s.x0(x, out, sigma);
        match self.clip {
            Some(range) => x0.clamp(-range, range),
            None => x0,
        }
    }
}

impl SigmaSampler for Heun {
    const KIND: SamplerKind = SamplerKind::Heun;
    const CALLS_PER_STEP: usize = 2;

    fn state(&self) -> &SigmaSteps {
        &self.s
    }

    fn state_mut(&mut self) -> &mut SigmaSteps {
        &mut self.s
    }

    fn update(&mut self, model_output: &[f32], call: usize, sample: &[f32], _rng: &mut BatchRng) -> Vec<f32> {
        assert_eq!(
            sample.len(),
            model_output.len(),
            "sample and model output lengths differ"
        );
        let i = self.s.advance(call);
        let pending = self.pending.take();
        let sigmas = &self.s.schedule.sigmas;
        let slope = |sigma: f64| -> Vec<f64> {
            sample
                .iter()
                .zip(model_output)
                .map(|(&x, &out)| (x as f64 - self.x0(x as f64, out as f64, sigma)) / sigma)
                .collect()
        };
        match pending {
            None => {
                let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
                let derivative = slope(sigma);
                let dt = sigma_next - sigma;
                let next = sample
                    .iter()
                    .zip(&derivative)
                    .map(|(&x, d)| (x as f64 + d * dt) as f32)
                    .collect();
                self.pending = Some(FirstHalf {
                    derivative,
                    dt,
                    sample: sample.to_vec(),
                });
                next
            }
            Some(first) => {
                // The model was evaluated at sigma_next = sigmas[i] (the repeated entry).
                let second = slope(sigmas[i]);
                first
                    .sample
                    .iter()
                    .zip(first.derivative.iter().zip(&second))
                    .map(|(&x, (d1, d2))| (x as f64 + (d1 + d2) / 2.0 * first.dt) as f32)
                    .collect()
            }
        }
    }
}
