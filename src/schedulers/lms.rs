//! LMS: diffusers `LMSDiscreteScheduler`, a linear multistep method on `dx/dsigma` of order up to
//! 4. Step `t` integrates the Lagrange polynomial through the last derivatives over
//! `[sigma_t, sigma_{t+1}]`.
//!
//! The integrand is a polynomial of degree `order - 1 <= 3` in sigma, so 3-point Gauss-Legendre
//! quadrature (exact up to degree 5) gives the integral exactly, up to f64 rounding (~1e-16
//! relative). diffusers calls `scipy.integrate.quad` with `epsrel=1e-4` on the same polynomial
//! evaluated in float32, which lands within float32 rounding of the exact value.
//!
//! The order is diffusers' `min(step_index + 1, 4)`, with `step_index` counted in the full
//! schedule. After an img2img start that counts steps that never ran: the polynomial still has
//! `order` nodes (the sigmas of the skipped steps included), but only the derivatives gathered
//! since the start are weighted: the first img2img step takes only the coefficient of the newest
//! node of a 4-node polynomial (1.5 to 4 times a plain Euler step for SD 1.5's schedules, about
//! 2 typically). k-diffusion caps the order by the derivatives gathered instead; for txt2img the
//! two rules agree.

use std::collections::VecDeque;

use super::config::SchedulerConfig;
use super::sigmas::{SigmaSampler, SigmaSteps};
use super::SamplerKind;
use crate::rng::BatchRng;

const MAX_ORDER: usize = 4;

pub struct Lms {
    s: SigmaSteps,
    /// The last derivatives `(x - x0) / sigma`, newest last.
    derivatives: VecDeque<Vec<f64>>,
}

impl Lms {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Lms {
        Lms {
            s: SigmaSteps::from_config(config, steps, config.use_karras_sigmas),
            derivatives: VecDeque::new(),
        }
    }

    /// `integral over [sigma_t, sigma_{t+1}]` of the Lagrange basis polynomial of node
    /// `sigma_{t - current}` on the nodes `sigma_t, ..., sigma_{t - order + 1}`.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let sigmas = &self.s.schedule.sigmas;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - sigmas[t - k]) / (sigmas[t - current] - sigmas[t - k]))
                .product::<f64>()
        };
        gauss_legendre_3(basis, sigmas[t], sigmas[t + 1])
    }
}

/// `integral of f over [a, b]` by 3-point Gauss-Legendre quadrature: exact for polynomials of
/// degree <= 5.
fn gauss_legendre_3(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    // Nodes 0 and +-sqrt(3/5) on [-1, 1], weights 8/9 and 5/9, mapped to [a, b].
    let node = (3.0f64 / 5.0).sqrt();
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * (5.0 / 9.0 * f(mid - half * node) + 8.0 / 9.0 * f(mid) + 5.0 / 9.0 * f(mid + half * node))
}

impl SigmaSampler for Lms {
    const KIND: SamplerKind = SamplerKind::Lms;

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
        let t = self.s.advance(call);
        let sigma = self.s.schedule.sigmas[t];
        let derivative = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &out)| (x as f64 - self.s.x0(x as f64, out as f64, sigma)) / sigma)
            .collect();
        self.derivatives.push_back(derivative);
        if self.derivatives.len() > MAX_ORDER {
            self.derivatives.pop_front();
        }
        let order = (t + 1).min(MAX_ORDER);
        // One coefficient per derivative kept (diffusers zips the `order` coefficients with them).
        let coeffs: Vec<f64> = (0..self.derivatives.len())
            .map(|c| self.coefficient(order, t, c))
            .collect();
        (0..sample.len())
            .map(|e| {
                let update: f64 = coeffs
                    .iter()
                    .zip(self.derivatives.iter().rev())
                    .map(|(c, d)| c * d[e])
                    .sum();
                (sample[e] as f64 + update) as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::gauss_legendre_3;

    /// Against the closed-form integral of a cubic (the highest degree LMS integrates): the
    /// error is f64 rounding.
    #[test]
    fn gauss_legendre_integrates_cubics_exactly() {
        let (r1, r2, r3) = (0.37, 1.9, 4.25);
        let p = |x: f64| (x - r1) * (x - r2) * (x - r3);
        // Antiderivative of x^3 - e1 x^2 + e2 x - e3.
        let (e1, e2, e3) = (r1 + r2 + r3, r1 * r2 + r1 * r3 + r2 * r3, r1 * r2 * r3);
        let antiderivative = |x: f64| x.powi(4) / 4.0 - e1 * x.powi(3) / 3.0 + e2 * x * x / 2.0 - e3 * x;
        for (a, b) in [(14.6, 11.2), (0.9, 0.0), (3.0, 2.5)] {
            let exact = antiderivative(b) - antiderivative(a);
            let quad = gauss_legendre_3(p, a, b);
            assert!(
                (quad - exact).abs() <= 1e-13 * exact.abs().max(1.0),
                "[{a}, {b}]: {quad} vs {exact}"
            );
        }
    }
}
