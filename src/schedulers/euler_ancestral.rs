//! Euler ancestral ("Euler a"): diffusers `EulerAncestralDiscreteScheduler`. Each step goes down
//! to `sigma_down` deterministically, then adds fresh noise of `sigma_up`, with
//! `sigma_down^2 + sigma_up^2 = sigma_next^2`. The noise is drawn at every step, the last one
//! included (where `sigma_up` is 0), so the generator stream stays in step with diffusers.
//! Karras sigmas do not apply (diffusers' class has none).

use super::config::SchedulerConfig;
use super::sigmas::{SigmaSampler, SigmaSteps};
use super::SamplerKind;
use crate::rng::BatchRng;

pub struct EulerAncestral {
    s: SigmaSteps,
}

impl EulerAncestral {
    pub fn new(config: &SchedulerConfig, steps: usize) -> EulerAncestral {
        EulerAncestral {
            s: SigmaSteps::from_config(config, steps, false),
        }
    }
}

impl SigmaSampler for EulerAncestral {
    const KIND: SamplerKind = SamplerKind::EulerAncestral;

    fn state(&self) -> &SigmaSteps {
        &self.s
    }

    fn state_mut(&mut self) -> &mut SigmaSteps {
        &mut self.s
    }

    fn update(&mut self, model_output: &[f32], call: usize, sample: &[f32], rng: &mut BatchRng) -> Vec<f32> {
        assert_eq!(
            sample.len(),
            model_output.len(),
            "sample and model output lengths differ"
        );
        let i = self.s.advance(call);
        let (sigma, sigma_to) = (self.s.schedule.sigmas[i], self.s.schedule.sigmas[i + 1]);
        let sigma_up = (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        // Mathematically sigma_to^4 / sigma^2 >= 0; the max keeps a rounding from making it NaN.
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let noise = rng.randn(sample.len());
        sample
            .iter()
            .zip(model_output)
            .zip(&noise)
            .map(|((&x, &out), &n)| {
                let x = x as f64;
                let derivative = (x - self.s.x0(x, out as f64, sigma)) / sigma;
                (x + derivative * (sigma_down - sigma) + n as f64 * sigma_up) as f32
            })
            .collect()
    }
}
