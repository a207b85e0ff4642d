//! CPU twin of `shaders/matmul.wgsl`, and the GEMM of the CPU backend:
//! batches and the fused epilogue (alpha, bias, residual) around
//! `super::gemm`, which reads f32 or f16 operands directly.

use rayon::prelude::*;

use super::gemm::{gemm, Elems, View};
use super::pool;
use super::profile::{Family, Timer};
use crate::ops::matmul::{MatmulDims, MatmulOpts};
use crate::tensor::{CpuData, Tensor};

/// The stored elements of a CPU tensor, borrowed in their dtype.
pub(crate) fn elems(t: &Tensor) -> Elems<'_> {
    match t.cpu_data() {
        CpuData::F32(v) => Elems::F32(v),
        CpuData::F16(v) => Elems::F16(v),
    }
}

/// `len` elements from `start`, same dtype.
fn slice(e: Elems<'_>, start: usize, len: usize) -> Elems<'_> {
    match e {
        Elems::F32(v) => Elems::F32(&v[start..start + len]),
        Elems::F16(v) => Elems::F16(&v[start..start + len]),
    }
}

pub fn matmul(a: &Tensor, b: &Tensor, opts: &MatmulOpts, d: MatmulDims, out_shape: &[usize]) -> Tensor {
    let MatmulDims {
        batch,
        b_shared,
        m,
        n,
        k,
    } = d;
    let _t = Timer::new(Family::Matmul, 2.0 * (batch * m * n * k) as f64);
    let (av, bv) = (elems(a), elems(b));
    let bias = opts.bias.map(|t| t.cpu_data().to_f32());
    let resid = opts.residual.map(|t| t.cpu_data().to_f32());
    let mut out = pool::zeroed(batch * m * n);
    // Stored [m, k] or [k, m] (trans_a); [k, n] or [n, k] (trans_b).
    let view_a = |s| {
        if opts.trans_a {
            View::transposed(s, m)
        } else {
            View::rows(s, k)
        }
    };
    let view_b = |s| {
        if opts.trans_b {
            View::transposed(s, k)
        } else {
            View::rows(s, n)
        }
    };
    // Batch items in parallel too: many small products (attention heads)
    // would leave the cores idle one at a time.
    out.par_chunks_mut((m * n).max(1))
        .enumerate()
        .for_each(|(bi, o)| {
            let a_i = view_a(slice(av, bi * m * k, m * k));
            let b_i = if b_shared { 0 } else { bi };
            let b_i = view_b(slice(bv, b_i * k * n, k * n));
            gemm(a_i, b_i, o, m, n, k);
        });
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(row, o)| {
        for (j, v) in o.iter_mut().enumerate() {
            *v *= opts.alpha;
            if let Some(b) = &bias {
                *v += b[j];
            }
            if let Some(r) = &resid {
                *v += r[row * n + j];
            }
        }
    });
    Tensor::cpu_from_f32(out, out_shape, a.dtype())
}
