//! Timestep conditioning: diffusers `get_timestep_embedding` (sinusoids,
//! computed on the host in f32 exactly as diffusers does) and
//! `TimestepEmbedding` (linear, SiLU, linear).

use crate::models::layers::Linear;
use crate::weights::VarBuilder;
use crate::{DType, Device, Result, Tensor};

/// Sinusoidal embedding of each timestep, `[timesteps.len() * dim]` row-major.
///
/// Frequency i is `exp(-ln(10000) * i / (dim/2 - freq_shift))`; the first half
/// is sin and the second cos, swapped when `flip_sin_to_cos` (SD 1.x). Every
/// step is rounded to f32 in diffusers' order so the values match bit for bit
/// up to the last ulp of sin/cos.
pub fn timestep_sinusoids(timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let log_max = -(10000f64.ln() as f32);
    let denom = half as f32 - freq_shift as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (log_max * i as f32 / denom).exp()).collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args = freqs.iter().map(|&f| t * f);
        let sin: Vec<f32> = args.clone().map(f32::sin).collect();
        let cos: Vec<f32> = args.map(f32::cos).collect();
        let (first, second) = if flip_sin_to_cos { (cos, sin) } else { (sin, cos) };
        out.extend(first);
        out.extend(second);
        // An odd `dim` is zero-padded, as in diffusers.
        out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    out
}

/// The sinusoids as a `[B, dim]` tensor of `dtype` on `device`.
pub fn timestep_tensor(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let v = timestep_sinusoids(timesteps, dim, flip_sin_to_cos, freq_shift);
    Tensor::from_f32(v, &[timesteps.len(), dim], dtype, device)
}

/// diffusers `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: &VarBuilder, c_in: usize, c_time: usize) -> TimestepEmbedding {
        TimestepEmbedding {
            linear_1: Linear::with_bias(&vb.pp("linear_1"), c_in, c_time),
            linear_2: Linear::with_bias(&vb.pp("linear_2"), c_time, c_time),
        }
    }

    /// `[B, C0]` -> `[B, 4 C0]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.linear_2.forward(&self.linear_1.forward(x).silu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_layout() {
        // t = 0: sin 0 = 0, cos 0 = 1; flipped puts the cosines first.
        assert_eq!(timestep_sinusoids(&[0.0], 4, true, 0.0), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(
            timestep_sinusoids(&[0.0], 4, false, 0.0),
            vec![0.0, 0.0, 1.0, 1.0]
        );
        // Frequency 1 of 2 with shift 0 is 10000^(-1/2) = 0.01.
        let v = timestep_sinusoids(&[100.0], 4, false, 0.0);
        assert!((v[1] - 1f32.sin()).abs() < 1e-6, "{v:?}");
        assert!((v[3] - 1f32.cos()).abs() < 1e-6, "{v:?}");
        assert_eq!(timestep_sinusoids(&[1.0, 2.0], 5, true, 1.0).len(), 10);
    }
}
