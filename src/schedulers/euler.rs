//! Euler: diffusers `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2, without churn as
//! diffusers' pipelines call it): one first-order step along `dx/dsigma = (x - x0) / sigma`.

use super::config::SchedulerConfig;
use super::sigmas::SigmaSteps;
use super::{zip_map, Sampler, SamplerKind};
use crate::rng::BatchRng;
use crate::Result;

pub struct Euler {
    steps: usize,
    s: SigmaSteps,
}

impl Euler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Euler {
        Euler {
            steps,
            s: SigmaSteps::from_config(config, steps, config.use_karras_sigmas),
        }
    }
}

impl Sampler for Euler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Euler
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn timesteps(&self) -> &[f64] {
        self.s.timesteps()
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(self.s.sigmas())
    }

    fn init_noise_sigma(&self) -> f64 {
        self.s.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &[f32], call: usize) -> Vec<f32> {
        self.s.scale_model_input(sample, call)
    }

    fn step(&mut self, model_output: &[f32], call: usize, sample: &[f32], _rng: &mut BatchRng) -> Vec<f32> {
        let i = self.s.advance(call);
        let (sigma, sigma_next) = (self.s.schedule.sigmas[i], self.s.schedule.sigmas[i + 1]);
        zip_map(sample, model_output, |x, out| {
            let derivative = (x - self.s.x0(x, out, sigma)) / sigma;
            x + derivative * (sigma_next - sigma)
        })
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], call: usize) -> Vec<f32> {
        self.s.add_noise(original, noise, call)
    }

    fn skip_steps(&mut self, steps: usize) -> Result<()> {
        self.s.skip(steps);
        Ok(())
    }
}
