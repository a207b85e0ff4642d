//! CPU twin of `shaders/elementwise.wgsl`.

use rayon::prelude::*;

use super::profile::{Family, Timer};
use crate::ops::elementwise::broadcast_strides;
use crate::ops::{Binary, Unary};
use crate::tensor::{DType, Tensor};

pub fn unary(x: &Tensor, op: Unary) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    let v = x.cpu_data().to_f32();
    let out: Vec<f32> = v.par_iter().map(|&a| op.apply(a)).collect();
    Tensor::cpu_from_f32(out, x.shape(), x.dtype())
}

pub fn binary(a: &Tensor, op: Binary, b: &Tensor) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    let av = a.cpu_data().to_f32();
    let bv = b.cpu_data().to_f32();
    let shape = a.shape();
    let strides = broadcast_strides(shape, b.shape()).expect("checked at op entry");
    let out: Vec<f32> = if b.shape() == shape {
        av.par_iter()
            .zip(bv.par_iter())
            .map(|(&x, &y)| op.apply(x, y))
            .collect()
    } else {
        av.par_iter()
            .enumerate()
            .map(|(i, &x)| {
                // Walk the dims of `shape` from the last to find b's index.
                let (mut rem, mut bi) = (i, 0);
                for d in (0..shape.len()).rev() {
                    bi += (rem % shape[d]) * strides[d];
                    rem /= shape[d];
                }
                op.apply(x, bv[bi])
            })
            .collect()
    };
    Tensor::cpu_from_f32(out, shape, a.dtype())
}

pub fn geglu(x: &Tensor) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    let v = x.cpu_data().to_f32();
    let f = x.dim(-1) / 2;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = f;
    let out: Vec<f32> = v
        .par_chunks(2 * f)
        .flat_map_iter(|row| (0..f).map(move |j| row[j] * Unary::Gelu.apply(row[f + j])))
        .collect();
    Tensor::cpu_from_f32(out, &shape, x.dtype())
}

pub fn cast(x: &Tensor, dtype: DType) -> Tensor {
    let _t = Timer::new(Family::Elementwise, 0.0);
    Tensor::cpu_from_f32(x.cpu_data().to_f32().into_owned(), x.shape(), dtype)
}
