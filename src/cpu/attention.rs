//! CPU twin of the attention kernels (`shaders/attention_*.wgsl`), flash
//! style: per (batch, head, block of `BQ` queries) the keys are visited in
//! blocks of `BK`; each block's scores `S = scale Q K^T [BQ, BK]` come from
//! the GEMM, then an online softmax (running max `m` and sum `l` per query,
//! earlier partial outputs rescaled by `exp(m_old - m_new)`) and `O += P V`,
//! again through the GEMM. No score matrix larger than `BQ x BK` exists, and
//! q, k, v are read in their stored dtype. The softmax is f32, the products
//! f32 with fused multiply-adds; the plain version (full score row, one
//! softmax) is the reference in `tests/cpu_kernels.rs`.

use rayon::prelude::*;

use super::gemm::{gemm_serial, Elems, View};
use super::matmul::elems;
use super::pool;
use super::profile::{Family, Timer};
use crate::ops::AttentionOpts;
use crate::tensor::Tensor;

/// Queries per task: the `[BQ, D]` output block and `[BQ, BK]` scores stay
/// in L2.
const BQ: usize = 64;
/// Keys per block.
const BK: usize = 256;

pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Tensor {
    let (b, lq, width) = (q.dim(0), q.dim(1), q.dim(2));
    let lk = k.dim(1);
    let h = opts.heads;
    let d = width / h;
    let _t = Timer::new(Family::Attention, 4.0 * (b * h * lq * lk * d) as f64);
    let (qe, ke, ve) = (elems(q), elems(k), elems(v));
    let q_blocks = lq.div_ceil(BQ);
    // Per task: (batch bi, head hh, query block), its output `[rows, D]`.
    let blocks: Vec<(usize, Vec<f32>)> = (0..b * h * q_blocks)
        .into_par_iter()
        .map(|t| {
            let (bh, qb) = (t / q_blocks, t % q_blocks);
            let (bi, hh) = (bh / h, bh % h);
            let q0 = qb * BQ;
            let rows = BQ.min(lq - q0);
            let qv = View::rows(qe.tail((bi * lq + q0) * width + hh * d), width);
            let kv = |k0| View::transposed(ke.tail((bi * lk + k0) * width + hh * d), width);
            let vv = |k0| View::rows(ve.tail((bi * lk + k0) * width + hh * d), width);
            (t, block(qv, kv, vv, (q0, rows), lk, d, opts))
        })
        .collect();
    // Every element is written below.
    let mut out = pool::take(b * lq * width);
    for (t, o) in blocks {
        let (bh, qb) = (t / q_blocks, t % q_blocks);
        let (bi, hh) = (bh / h, bh % h);
        for (r, row) in o.chunks_exact(d).enumerate() {
            let at = (bi * lq + qb * BQ + r) * width + hh * d;
            out[at..at + d].copy_from_slice(row);
        }
    }
    Tensor::cpu_from_f32(out, q.shape(), q.dtype())
}

/// One head's output for queries `q0..q0+rows`: `o [rows, D]`. `q` views the
/// block's queries `[rows, D]`; `k(k0)` keys `k0..` as `[D, keys]`, `v(k0)`
/// values `k0..` as `[keys, D]`.
fn block<'a>(
    q: View,
    k: impl Fn(usize) -> View<'a>,
    v: impl Fn(usize) -> View<'a>,
    (q0, rows): (usize, usize),
    lk: usize,
    d: usize,
    opts: &AttentionOpts,
) -> Vec<f32> {
    let mut o = vec![0.0f32; rows * d]; // [rows, D]
    let mut s = vec![0.0f32; rows * BK]; // [rows, bk]
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut l = vec![0.0f32; rows];
    // A causal block needs no key past its last query.
    let keys = if opts.causal { lk.min(q0 + rows) } else { lk };
    for k0 in (0..keys).step_by(BK) {
        let bk = BK.min(keys - k0);
        let s = &mut s[..rows * bk];
        s.fill(0.0);
        gemm_serial(q, k(k0), s, rows, bk, d);
        for (r, sr) in s.chunks_exact_mut(bk).enumerate() {
            // Keys this query sees in the block.
            let seen = if opts.causal {
                (q0 + r + 1).saturating_sub(k0).min(bk)
            } else {
                bk
            };
            let mut mx = m[r];
            for x in &mut sr[..seen] {
                *x *= opts.scale;
                mx = mx.max(*x);
            }
            let mut sum = 0.0f32;
            for x in &mut sr[..seen] {
                *x = (*x - mx).exp();
                sum += *x;
            }
            sr[seen..].fill(0.0);
            // Earlier blocks were weighted by exp(-m_old); now exp(-mx).
            let rescale = (m[r] - mx).exp();
            if rescale != 1.0 {
                o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= rescale);
            }
            l[r] = l[r] * rescale + sum;
            m[r] = mx;
        }
        gemm_serial(View::rows(Elems::F32(s), bk), v(k0), &mut o, rows, d, bk);
    }
    for (orow, &lr) in o.chunks_exact_mut(d).zip(&l) {
        orow.iter_mut().for_each(|x| *x /= lr);
    }
    o
}
