//! CPU twin of `shaders/matmul.wgsl`: blocked, rayon over row blocks.

use rayon::prelude::*;

use crate::ops::matmul::{MatmulDims, MatmulOpts};
use crate::tensor::Tensor;

/// Rows of C computed by one rayon task.
const ROW_BLOCK: usize = 16;
/// K-slab kept hot in cache while a row block is accumulated.
const K_BLOCK: usize = 256;

/// Copies a stored `[r, c]` matrix (transposed when `t`) into row-major
/// `[rows, cols]` of the logical operand.
fn logical(src: &[f32], rows: usize, cols: usize, t: bool) -> Vec<f32> {
    if !t {
        return src.to_vec();
    }
    let mut out = vec![0.0; rows * cols];
    out.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            *o = src[j * rows + i];
        }
    });
    out
}

/// `c [m, n] = a [m, k] @ b [k, n]`, all row-major, c zero-initialised.
pub(crate) fn gemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    c[..m * n]
        .par_chunks_mut(ROW_BLOCK * n)
        .enumerate()
        .for_each(|(blk, c_rows)| {
            let r0 = blk * ROW_BLOCK;
            let rows = c_rows.len() / n;
            for k0 in (0..k).step_by(K_BLOCK) {
                let k1 = (k0 + K_BLOCK).min(k);
                for r in 0..rows {
                    let a_row = &a[(r0 + r) * k..(r0 + r + 1) * k];
                    let c_row = &mut c_rows[r * n..(r + 1) * n];
                    for kk in k0..k1 {
                        let s = a_row[kk];
                        if s == 0.0 {
                            continue;
                        }
                        let b_row = &b[kk * n..(kk + 1) * n];
                        for (cv, bv) in c_row.iter_mut().zip(b_row) {
                            *cv += s * bv;
                        }
                    }
                }
            }
        });
}

pub fn matmul(a: &Tensor, b: &Tensor, opts: &MatmulOpts, d: MatmulDims, out_shape: &[usize]) -> Tensor {
    let MatmulDims {
        batch,
        b_shared,
        m,
        n,
        k,
    } = d;
    let av = a.cpu_data().to_f32();
    let bv = b.cpu_data().to_f32();
    let bias = opts.bias.map(|t| t.cpu_data().to_f32().into_owned());
    let resid = opts.residual.map(|t| t.cpu_data().to_f32().into_owned());
    let mut out = vec![0.0f32; batch * m * n];
    let b_shared_logical = b_shared.then(|| logical(&bv, k, n, opts.trans_b));
    for bi in 0..batch {
        let a_l = logical(&av[bi * m * k..(bi + 1) * m * k], m, k, opts.trans_a);
        let b_own;
        let b_l: &[f32] = match &b_shared_logical {
            Some(s) => s,
            None => {
                b_own = logical(&bv[bi * k * n..(bi + 1) * k * n], k, n, opts.trans_b);
                &b_own
            }
        };
        gemm(&a_l, b_l, &mut out[bi * m * n..(bi + 1) * m * n], m, n, k);
    }
    out.par_chunks_mut(n).enumerate().for_each(|(row, o)| {
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
