//! CPU twin of `shaders/matmul.wgsl`, and the GEMM of the CPU backend.
//!
//! The classic blocked GEMM (Goto / BLIS structure) in plain Rust: B is packed
//! once into panels of `NR` columns, each rayon task packs `MC` rows of A per
//! `KC`-slab into groups of `MR` rows, and a register-sized `MR x NR`
//! micro-kernel, which LLVM keeps in vector registers, accumulates a block.
//! Packing zero-pads the edges, so the micro-kernel has no bounds checks, and
//! reads transposed operands directly through strides. Every output element
//! is the sum over k in increasing order within each slab, the slabs added
//! in order; with fused multiply-adds where the CPU has AVX2 + FMA, so the
//! last bits may differ between machines (the op tests compare by NMSE).

use rayon::prelude::*;

use super::profile::{Family, Timer};
use crate::ops::matmul::{MatmulDims, MatmulOpts};
use crate::tensor::Tensor;

/// Rows of the micro-kernel block.
const MR: usize = 4;
/// Columns of the micro-kernel block (two AVX vectors).
const NR: usize = 16;
/// Rows of C per rayon task (a multiple of MR).
const MC: usize = 64;
/// K-slab per packed A block: MC x KC floats (64 KiB) stay in L2.
const KC: usize = 256;

/// A read-only matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> View<'a> {
        View {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> View<'a> {
        View {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// B `[k, n]` as `n.div_ceil(NR)` panels, each `[k, NR]` row-major, zero-padded.
fn pack_b(b: View, k: usize, n: usize) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut out = vec![0.0; panels * k * NR];
    out.par_chunks_mut(k * NR).enumerate().for_each(|(jp, panel)| {
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            for (jj, v) in row.iter_mut().enumerate() {
                let j = jp * NR + jj;
                if j < n {
                    *v = b.at(p, j);
                }
            }
        }
    });
    out
}

/// Rows `i0..i0+rows` and columns `k0..k0+kc` of A as groups of MR rows,
/// each `[kc, MR]` (k-major), zero-padded to whole groups.
fn pack_a(a: View, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(rows.div_ceil(MR) * kc * MR, 0.0);
    for (g, group) in out.chunks_exact_mut(kc * MR).enumerate() {
        let valid = MR.min(rows - g * MR);
        for (p, dst) in group.chunks_exact_mut(MR).enumerate() {
            for (r, v) in dst[..valid].iter_mut().enumerate() {
                *v = a.at(i0 + g * MR + r, k0 + p);
            }
        }
    }
}

/// `acc[r][j] = sum_p a[p][r] * b[p][j]` over one packed group and panel,
/// with fused multiply-adds when `FMA`.
#[inline(always)]
fn micro_body<const FMA: bool>(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = if FMA {
                    ap[r].mul_add(bp[j], acc[r][j])
                } else {
                    acc[r][j] + ap[r] * bp[j]
                };
            }
        }
    }
    acc
}

/// The micro-kernel compiled for AVX2 + FMA (8 ymm accumulators); the
/// default x86-64 target only has SSE2, a quarter of the peak.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn micro_avx2(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    micro_body::<true>(a, b)
}

fn micro_kernel(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { micro_avx2(a, b) };
    }
    micro_body::<false>(a, b)
}

/// `c [m, n] += a [m, k] @ b [k, n]`, c row-major, a and b any strides.
pub(crate) fn gemm_view(a: View, b: View, c: &mut [f32], m: usize, n: usize, k: usize) {
    debug_assert!(c.len() >= m * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let bp = pack_b(b, k, n);
    c[..m * n]
        .par_chunks_mut(MC * n)
        .enumerate()
        .for_each_init(Vec::new, |ap, (blk, c_rows)| {
            let (i0, rows) = (blk * MC, c_rows.len() / n);
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                pack_a(a, i0, rows, k0, kc, ap);
                for jp in 0..n.div_ceil(NR) {
                    let panel = &bp[(jp * k + k0) * NR..(jp * k + k0 + kc) * NR];
                    let cols = NR.min(n - jp * NR);
                    for (g, group) in ap.chunks_exact(kc * MR).enumerate() {
                        let acc = micro_kernel(group, panel);
                        for (r, acc_row) in acc.iter().enumerate().take(rows - g * MR) {
                            let row = (g * MR + r) * n + jp * NR;
                            for (cv, av) in c_rows[row..row + cols].iter_mut().zip(acc_row) {
                                *cv += av;
                            }
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
    let _t = Timer::new(Family::Matmul, 2.0 * (batch * m * n * k) as f64);
    let av = a.cpu_data().to_f32();
    let bv = b.cpu_data().to_f32();
    let bias = opts.bias.map(|t| t.cpu_data().to_f32().into_owned());
    let resid = opts.residual.map(|t| t.cpu_data().to_f32().into_owned());
    let mut out = vec![0.0f32; batch * m * n];
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
            let a_i = view_a(&av[bi * m * k..(bi + 1) * m * k]);
            let b_i = if b_shared { 0 } else { bi };
            let b_i = view_b(&bv[b_i * k * n..(b_i + 1) * k * n]);
            gemm_view(a_i, b_i, o, m, n, k);
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
