//! CPU twin of `shaders/norm.wgsl`: two-pass mean/variance in f64.

use rayon::prelude::*;

use super::pool;
use super::profile::{Family, Timer};
use crate::ops::Unary;
use crate::tensor::Tensor;

/// Mean and biased variance of `v`, two passes in f64.
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

pub fn group_norm(x: &Tensor, groups: usize, eps: f32, gamma: &Tensor, beta: &Tensor, silu: bool) -> Tensor {
    let _t = Timer::new(Family::Norm, 0.0);
    let xv = x.cpu_data().to_f32();
    let g = gamma.cpu_data().to_f32();
    let b = beta.cpu_data().to_f32();
    let c = x.dim(1);
    let spatial: usize = x.shape()[2..].iter().product();
    let group_len = c / groups * spatial;
    let mut out = pool::take(xv.len());
    out.par_chunks_mut(group_len)
        .zip(xv.par_chunks(group_len))
        .enumerate()
        .for_each(|(ng, (o, v))| {
            let (mean, var) = moments(v);
            let inv = 1.0 / (var + eps as f64).sqrt();
            let c0 = (ng % groups) * (c / groups);
            for (i, (ov, &xv)) in o.iter_mut().zip(v).enumerate() {
                let ch = c0 + i / spatial;
                let y = ((xv as f64 - mean) * inv) as f32 * g[ch] + b[ch];
                *ov = if silu { Unary::Silu.apply(y) } else { y };
            }
        });
    Tensor::cpu_from_f32(out, x.shape(), x.dtype())
}

pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
    let _t = Timer::new(Family::Norm, 0.0);
    let xv = x.cpu_data().to_f32();
    let g = gamma.cpu_data().to_f32();
    let b = beta.cpu_data().to_f32();
    let d = x.dim(-1);
    let mut out = pool::take(xv.len());
    out.par_chunks_mut(d).zip(xv.par_chunks(d)).for_each(|(o, v)| {
        let (mean, var) = moments(v);
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (j, (ov, &xv)) in o.iter_mut().zip(v).enumerate() {
            *ov = ((xv as f64 - mean) * inv) as f32 * g[j] + b[j];
        }
    });
    Tensor::cpu_from_f32(out, x.shape(), x.dtype())
}
