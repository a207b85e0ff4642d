//! Euler: diffusers `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2, without churn as
//! diffusers' pipelines call it): one first-order step along `dx/dsigma = (x - x0) / sigma`.

use super::config::SchedulerConfig;
use super::sigmas::{SigmaSampler, SigmaSteps};
use super::{zip_map, SamplerKind};
use crate::rng::BatchRng;

pub struct Euler {
    s: SigmaSteps,
}

impl Euler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Euler {
        Euler {
            s: SigmaSteps::from_config(config, steps, config.use_karras_sigmas),
        }
    }
}

impl SigmaSampler for Euler {
    const KIND: SamplerKind = SamplerKind::Euler;

    fn state(&self) -> &SigmaSteps {
        &self.s
    }

    fn state_mut(&mut self) -> &mut SigmaSteps {
        &mut self.s
    }

    fn update(&mut self, model_output: &[f32], call: usize, sample: &[f32], _rng: &mut BatchRng) -> Vec<f32> {
        let i = self.s.advance(call);
        let (sigma, sigma_next) = (self.s.schedule.sigmas[i], self.s.schedule.sigmas[i + 1]);
        zip_map(sample, model_output, |x, out| {
            let derivative = (x - self.s.x0(x, out, sigma)) / sigma;
            x + derivative * (sigma_next - sigma)
        })
    }
}
