//! CPU twin of `shaders/elementwise.wgsl`.

use rayon::prelude::*;

use super::pool;
use super::profile::{Family, Timer};
use crate::ops::elementwise::broadcast_strides;
use crate::ops::{Binary, Unary};
use crate::tensor::{DType, Tensor};

pub fn unary(x: &Tensor, op: Unary) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    let v = x.cpu_data().to_f32();
    let mut out = pool::take(v.len());
    out.par_iter_mut()
        .zip(v.par_iter())
        .for_each(|(o, &a)| *o = op.apply(a));
    Tensor::cpu_from_f32(out, x.shape(), x.dtype())
}

pub fn binary(a: &Tensor, op: Binary, b: &Tensor) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    let av = a.cpu_data().to_f32();
    let bv = b.cpu_data().to_f32();
    let shape = a.shape();
    let strides = broadcast_strides(shape, b.shape()).expect("checked at op entry");
    let mut out = pool::take(av.len());
    if b.shape() == shape {
        (out.par_iter_mut().zip(av.par_iter()).zip(bv.par_iter()))
            .for_each(|((o, &x), &y)| *o = op.apply(x, y));
    } else {
        (out.par_iter_mut().zip(av.par_iter()).enumerate()).for_each(|(i, (o, &x))| {
            // Walk the dims of `shape` from the last to find b's index.
            let (mut rem, mut bi) = (i, 0);
            for d in (0..shape.len()).rev() {
                bi += (rem % shape[d]) * strides[d];
                rem /= shape[d];
            }
            *o = op.apply(x, bv[bi]);
        });
    }
    Tensor::cpu_from_f32(out, shape, a.dtype())
}

pub fn geglu(x: &Tensor) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    let v = x.cpu_data().to_f32();
    let f = x.dim(-1) / 2;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = f;
    let mut out = pool::take(v.len() / 2);
    (out.par_chunks_mut(f.max(1)).zip(v.par_chunks(2 * f.max(1)))).for_each(|(o, row)| {
        for (j, ov) in o.iter_mut().enumerate() {
            *ov = row[j] * Unary::Gelu.apply(row[f + j]);
        }
    });
    Tensor::cpu_from_f32(out, &shape, x.dtype())
}

pub fn cast(x: &Tensor, dtype: DType) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    Tensor::cpu_from_f32(x.cpu_data().to_f32().into_owned(), x.shape(), dtype)
}
