//! CPU twin of `shaders/layout.wgsl`.
//!
//! These ops move values without arithmetic, so they work on the stored
//! representation and are exact in both dtypes.

use rayon::prelude::*;

use super::profile::{Family, Timer};
use crate::tensor::{CpuData, Tensor};

/// Builds `out[i] = src[index(i)]` for `n` outputs, on either stored dtype.
fn gather(x: &Tensor, n: usize, shape: &[usize], index: impl Fn(usize) -> usize + Sync) -> Tensor {
    let data = match x.cpu_data() {
        CpuData::F32(v) => {
            let mut out = super::pool::take(n);
            out.par_iter_mut().enumerate().for_each(|(i, o)| *o = v[index(i)]);
            CpuData::F32(out)
        }
        CpuData::F16(v) => CpuData::F16((0..n).into_par_iter().map(|i| v[index(i)]).collect()),
    };
    Tensor::from_cpu_data(data, shape, &crate::Device::Cpu).expect("sizes computed here")
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

pub fn permute(x: &Tensor, perm: &[usize]) -> Tensor {
    let _t = Timer::new(Family::Layout, 0.0);
    let in_strides = strides(x.shape());
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    // Stride in the input of each output dim.
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    gather(x, x.elem_count(), &out_shape, |i| {
        let (mut rem, mut src) = (i, 0);
        for d in (0..out_shape.len()).rev() {
            src += (rem % out_shape[d]) * src_strides[d];
            rem /= out_shape[d];
        }
        src
    })
}

/// (outer, dim size, inner) view of `shape` around `dim`.
fn split3(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

pub fn narrow(x: &Tensor, dim: usize, start: usize, len: usize) -> Tensor {
    let _t = Timer::new(Family::Layout, 0.0);
    let (_, size, inner) = split3(x.shape(), dim);
    let mut shape = x.shape().to_vec();
    shape[dim] = len;
    let n: usize = shape.iter().product();
    gather(x, n, &shape, |i| {
        let (o, r) = (i / (len * inner), i % (len * inner));
        o * size * inner + start * inner + r
    })
}

pub fn cat(ts: &[&Tensor], dim: usize) -> Tensor {
    let _t = Timer::new(Family::Layout, 0.0);
    let mut shape = ts[0].shape().to_vec();
    shape[dim] = ts.iter().map(|t| t.dim(dim as isize)).sum();
    let (outer, total, inner) = split3(&shape, dim);
    // Every element is copied from an input below.
    let mut out = super::pool::take(outer * total * inner);
    let mut off = 0;
    for t in ts {
        let v = t.cpu_data().to_f32();
        let len = t.dim(dim as isize);
        out.par_chunks_mut(total * inner)
            .enumerate()
            .for_each(|(o, dst)| {
                dst[off * inner..(off + len) * inner]
                    .copy_from_slice(&v[o * len * inner..(o + 1) * len * inner]);
            });
        off += len;
    }
    // f16 values widened and narrowed again round-trip exactly.
    Tensor::cpu_from_f32(out, &shape, ts[0].dtype())
}

/// PyTorch's nearest source index (ATen `nearest_idx`): the same size maps
/// to itself, 2x to `dst / 2`, anything else to `floor(dst * (in / out))`
/// with the scale and the product in f32, clamped to `in - 1`. The f32 scale
/// matters where `dst * in / out` is an integer and `in / out` rounds down
/// (26 -> 44: dst 22 reads 12, not 13). The GPU kernel gets the same scale.
pub(crate) fn nearest_src(dst: usize, len_in: usize, len_out: usize) -> usize {
    if len_out == len_in {
        dst
    } else if len_out == 2 * len_in {
        dst / 2
    } else {
        ((dst as f32 * nearest_scale(len_in, len_out)).floor() as usize).min(len_in - 1)
    }
}

/// `in / out` in f32, as PyTorch computes it when given an output size.
pub(crate) fn nearest_scale(len_in: usize, len_out: usize) -> f32 {
    len_in as f32 / len_out as f32
}

pub fn upsample_nearest(x: &Tensor, out_h: usize, out_w: usize) -> Tensor {
    let _t = Timer::new(Family::Layout, 0.0);
    let (n, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    gather(x, n * c * out_h * out_w, &[n, c, out_h, out_w], |i| {
        let (plane, r) = (i / (out_h * out_w), i % (out_h * out_w));
        let (oy, ox) = (r / out_w, r % out_w);
        plane * h * w + nearest_src(oy, h, out_h) * w + nearest_src(ox, w, out_w)
    })
}

pub fn embedding(table: &Tensor, ids: &[u32]) -> Tensor {
    let _t = Timer::new(Family::Layout, 0.0);
    let d = table.dim(1);
    gather(table, ids.len() * d, &[ids.len(), d], |i| {
        ids[i / d] as usize * d + i % d
    })
}
