//! What the samplers that work on sigmas (Euler, Euler ancestral, LMS, Heun) share: their state
//! ([`SigmaSteps`]: the schedule, where img2img starts in it, which call comes next) and every
//! [`Sampler`] method but the update itself ([`SigmaSampler`]).

use super::config::{ClassDefaults, Prediction, SchedulerConfig, TimestepSpacing};
use super::schedule::{SigmaSchedule, TrainSchedule};
use super::{check_call, zip_map, Sampler, SamplerKind};
use crate::rng::BatchRng;
use crate::Result;

/// A sampler on sigmas: its state and its update. [`Sampler`] follows from these (the impl
/// below), so the four samplers write only what differs between them.
pub(super) trait SigmaSampler: Send {
    const KIND: SamplerKind;
    /// Model calls per inference step that img2img skips (Heun evaluates twice per step).
    const CALLS_PER_STEP: usize = 1;

    fn state(&self) -> &SigmaSteps;

    fn state_mut(&mut self) -> &mut SigmaSteps;

    /// [`Sampler::step`]: the sample after call `call`.
    fn update(&mut self, model_output: &[f32], call: usize, sample: &[f32], rng: &mut BatchRng) -> Vec<f32>;
}

impl<T: SigmaSampler> Sampler for T {
    fn kind(&self) -> SamplerKind {
        T::KIND
    }

    fn steps(&self) -> usize {
        self.state().steps
    }

    fn timesteps(&self) -> &[f64] {
        self.state().timesteps()
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(self.state().sigmas())
    }

    fn init_noise_sigma(&self) -> f64 {
        self.state().init_noise_sigma
    }

    fn scale_model_input(&self, sample: &[f32], call: usize) -> Vec<f32> {
        self.state().scale_model_input(sample, call)
    }

    fn step(&mut self, model_output: &[f32], call: usize, sample: &[f32], rng: &mut BatchRng) -> Vec<f32> {
        self.update(model_output, call, sample, rng)
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        self.state().add_noise(original, noise, call)
    }

    fn skip_steps(&mut self, steps: usize) -> Result<()> {
        self.state_mut().skip(T::CALLS_PER_STEP * steps);
        Ok(())
    }
}

pub(super) struct SigmaSteps {
    /// The number of inference steps (Heun makes about twice as many calls).
    steps: usize,
    /// `timesteps[i]` is the model call at noise level `sigmas[i]`; `sigmas` ends with 0.
    pub schedule: SigmaSchedule,
    pub prediction: Prediction,
    init_noise_sigma: f64,
    /// Index of the first call to run (img2img; diffusers' `begin_index`).
    begin: usize,
    /// The next call, counted from `begin`.
    next: usize,
}

impl SigmaSteps {
    /// The state of a sampler with diffusers' common class defaults: the config's training
    /// schedule and spacing, Karras sigmas when `karras` (the config's flag, or false for a
    /// class that has none).
    pub fn from_config(config: &SchedulerConfig, steps: usize, karras: bool) -> SigmaSteps {
        let defaults = ClassDefaults::COMMON;
        let train = TrainSchedule::new(config, &defaults);
        let spacing = config.timestep_spacing.unwrap_or(defaults.timestep_spacing);
        let schedule = SigmaSchedule::new(&train, spacing, steps, config.steps_offset, karras);
        SigmaSteps::new(steps, schedule, spacing, config.prediction_type)
    }

    pub fn new(
        steps: usize,
        schedule: SigmaSchedule,
        spacing: TimestepSpacing,
        prediction: Prediction,
    ) -> SigmaSteps {
        SigmaSteps {
            steps,
            init_noise_sigma: schedule.init_noise_sigma(spacing),
            schedule,
            prediction,
            begin: 0,
            next: 0,
        }
    }

    pub fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps[self.begin..]
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.schedule.sigmas[self.begin..]
    }

    /// The noise level of call `call`.
    pub fn sigma(&self, call: usize) -> f64 {
        self.schedule.sigmas[self.begin + call]
    }

    /// Checks that `call` is the next call and moves past it; returns its index in the full
    /// schedule (diffusers' `step_index`).
    pub fn advance(&mut self, call: usize) -> usize {
        check_call(call, self.next, self.timesteps().len());
        self.next += 1;
        self.begin + call
    }

    /// Starts at call `first` of the full schedule (img2img).
    pub fn skip(&mut self, first: usize) {
        assert!(
            self.begin == 0 && self.next == 0,
            "skip_steps must come once, before the first call"
        );
        assert!(
            first < self.schedule.timesteps.len(),
            "img2img keeps at least one call"
        );
        self.begin = first;
    }

    /// `sample / sqrt(sigma^2 + 1)`: the model sees unit-variance input at every noise level.
    pub fn scale_model_input(&self, sample: &[f32], call: usize) -> Vec<f32> {
        let sigma = self.sigma(call);
        let scale = (sigma * sigma + 1.0).sqrt();
        sample.iter().map(|&x| (x as f64 / scale) as f32).collect()
    }

    /// `original + noise * sigma`.
    pub fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        let sigma = self.sigma(call);
        zip_map(original, noise, |x, n| x + n * sigma)
    }

    /// The predicted clean sample from the model output at noise level `sigma`.
    pub fn x0(&self, sample: f64, output: f64, sigma: f64) -> f64 {
        match self.prediction {
            Prediction::Epsilon => sample - sigma * output,
            Prediction::VPrediction => {
                output * (-sigma / (sigma * sigma + 1.0).sqrt()) + sample / (sigma * sigma + 1.0)
            }
        }
    }
}
