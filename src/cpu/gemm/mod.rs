//! The CPU GEMM: `C [m, n] += A [m, k] B [k, n]`, A and B f32 or f16 with
//! any strides, C row-major f32.
//!
//! The Goto / BLIS structure. For each `KC`-slab of k, B is packed into
//! panels of `nr` columns (`[kc, nr]`, zero-padded), converting f16 to f32 as
//! it goes, so weights stay in their stored dtype and only one slab is ever
//! widened. The slab's work is then split into tasks of (`mc` rows, a run of
//! panels): along the rows when there are many, along the columns too when
//! there are few (the time embedding has m = 2), so every core has work on
//! every shape. A task packs its rows of A (`[kc, mr]` groups) into a
//! thread-local buffer and runs the register-blocked micro-kernel
//! (`kernels`) over its panels, each panel reused from L1 by every group.
//!
//! Every output element is the sum over k in increasing order within each
//! slab, the slabs added in order, with fused multiply-adds where the CPU has
//! them; the last bits may differ between machines (the tests compare with
//! a plain triple loop by relative error).

mod kernels;

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::pool;
pub use kernels::available as kernels_available;
use kernels::Kernel;

/// K-slab per packing: a `[KC, 32]` B panel (32 KiB) stays in L1 while the
/// A groups stream past it.
const KC: usize = 256;
/// Rows of A per task: `[KC, MC]` floats (96 KiB) stay in L2. A multiple of
/// every kernel's `mr` (12 and 6).
const MC: usize = 96;
/// Columns of B per packed block (with KC: 4 MiB of f32).
const NC: usize = 4096;
/// Largest `mr * nr` of any kernel, the edge tile's size.
const MAX_TILE: usize = 12 * 32;

/// Element storage of an operand.
#[derive(Clone, Copy)]
pub(crate) enum Elems<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// A read-only matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: Elems<'a>,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Elems<'a> {
    /// The elements from `start` on.
    pub fn tail(self, start: usize) -> Elems<'a> {
        match self {
            Elems::F32(v) => Elems::F32(&v[start..]),
            Elems::F16(v) => Elems::F16(&v[start..]),
        }
    }
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: Elems<'a>, cols: usize) -> View<'a> {
        View {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: Elems<'a>, cols: usize) -> View<'a> {
        View {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// `dst[t] = data[start + t * step]` as f32.
    fn read(&self, start: usize, step: usize, dst: &mut [f32]) {
        let n = dst.len();
        match self.data {
            Elems::F32(v) if step == 1 => dst.copy_from_slice(&v[start..start + n]),
            // Bulk conversion: F16C / NEON where the CPU has it.
            Elems::F16(v) if step == 1 => v[start..start + n].convert_to_f32_slice(dst),
            Elems::F32(v) => {
                for (t, d) in dst.iter_mut().enumerate() {
                    *d = v[start + t * step];
                }
            }
            Elems::F16(v) => {
                for (t, d) in dst.iter_mut().enumerate() {
                    *d = v[start + t * step].to_f32();
                }
            }
        }
    }
}

/// `fill(p, j0, dst)` writes `B[p, j0..j0 + dst.len()]`.
pub(crate) type RowFill<'a> = &'a (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// Where B's values come from.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    View(View<'a>),
    /// Computed row runs: the conv's patches, packed straight from its
    /// input so the full im2col matrix never exists.
    Rows(RowFill<'a>),
}

/// Rows `k0..k0+kc`, columns `j0..j0+n` of B as `n.div_ceil(nr)` panels,
/// each `[kc, nr]` row-major, zero-padded past column n. In parallel over
/// panels when `parallel`.
fn pack_b(
    b: Rhs,
    (k0, kc): (usize, usize),
    (j0, n): (usize, usize),
    nr: usize,
    out: &mut [f32],
    parallel: bool,
) {
    let pack = |(jp, panel): (usize, &mut [f32])| {
        let cols = nr.min(n - jp * nr);
        let j0 = j0 + jp * nr;
        if cols < nr {
            panel.fill(0.0);
        }
        let b = match b {
            Rhs::View(v) => v,
            Rhs::Rows(fill) => {
                for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                    fill(k0 + p, j0, &mut row[..cols]);
                }
                return;
            }
        };
        if b.cs == 1 {
            // Rows of B are contiguous: copy row runs.
            for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                b.read((k0 + p) * b.rs + j0, 1, &mut row[..cols]);
            }
        } else {
            // Columns run along k (a `[n, k]` linear weight): read each
            // column once, then scatter it across the panel.
            let mut col = [0.0f32; KC];
            for jj in 0..cols {
                b.read(k0 * b.rs + (j0 + jj) * b.cs, b.rs, &mut col[..kc]);
                for (p, &v) in col[..kc].iter().enumerate() {
                    panel[p * nr + jj] = v;
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(kc * nr).enumerate().for_each(pack);
    } else {
        out.chunks_mut(kc * nr).enumerate().for_each(pack);
    }
}

/// Rows `i0..i0+rows`, columns `k0..k0+kc` of A as groups of `mr` rows,
/// each `[kc, mr]`, zero-padded to whole groups.
fn pack_a(a: View, i0: usize, rows: usize, k0: usize, kc: usize, mr: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(rows.div_ceil(mr) * kc * mr, 0.0);
    let mut run = [0.0f32; KC];
    for (g, group) in out.chunks_exact_mut(kc * mr).enumerate() {
        let valid = mr.min(rows - g * mr);
        if a.cs == 1 {
            // Rows of A are contiguous (activations): one run per row.
            for r in 0..valid {
                a.read((i0 + g * mr + r) * a.rs + k0, 1, &mut run[..kc]);
                for (p, &v) in run[..kc].iter().enumerate() {
                    group[p * mr + r] = v;
                }
            }
        } else {
            // Columns contiguous (a transposed A, e.g. the conv's patches).
            for (p, dst) in group.chunks_exact_mut(mr).enumerate() {
                a.read((i0 + g * mr) * a.rs + (k0 + p) * a.cs, a.rs, &mut dst[..valid]);
            }
        }
    }
}

/// C's storage shared by the tasks of one slab.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);

// SAFETY: the tasks of a slab write disjoint blocks of C (distinct row
// blocks or distinct panels), and slabs run one after another.
unsafe impl Send for SharedC {}
unsafe impl Sync for SharedC {}

impl SharedC {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

thread_local! {
    /// Packed rows of A, reused by every task this thread runs.
    static A_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c [m, n] += a [m, k] @ b [k, n]` with the best kernel of this CPU, on
/// every core.
pub(crate) fn gemm(a: View, b: View, c: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_with(kernels::best(), a, Rhs::View(b), c, (m, n, k), true);
}

/// `gemm` with B given by rows (`Rhs::Rows`).
pub(crate) fn gemm_rows(a: View, b: RowFill, c: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_with(kernels::best(), a, Rhs::Rows(b), c, (m, n, k), true);
}

/// `gemm` on the calling thread only, for callers that are already one
/// task among many (attention's query blocks).
pub(crate) fn gemm_serial(a: View, b: View, c: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_with(kernels::best(), a, Rhs::View(b), c, (m, n, k), false);
}

/// `gemm` with the kernel called `kernel` (one of `kernels_available()`):
/// for the tests, which check every kernel this CPU has. False if the CPU
/// lacks it.
pub fn gemm_named(kernel: &str, a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) -> bool {
    let Some(kern) = kernels::by_name(kernel) else {
        return false;
    };
    gemm_with(
        kern,
        View::rows(Elems::F32(a), k),
        Rhs::View(View::rows(Elems::F32(b), n)),
        c,
        (m, n, k),
        true,
    );
    true
}

fn gemm_with(kern: Kernel, a: View, b: Rhs, c: &mut [f32], (m, n, k): (usize, usize, usize), parallel: bool) {
    assert!(
        c.len() >= m * n,
        "gemm: C has {} values, needs {m} x {n}",
        c.len()
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (mr, nr) = (kern.mr, kern.nr);
    // Column blocks of at most NC: the packed B slab stays a few MiB even
    // for the VAE's 512x512 convs.
    let bp_len = NC.min(n).div_ceil(nr) * KC.min(k) * nr;
    // Every panel is filled before it is read.
    let mut bp = pool::take(bp_len);
    let shared = SharedC(c.as_mut_ptr());
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels = nc.div_ceil(nr);
        let row_blocks = m.div_ceil(MC);
        // Enough tasks to balance the threads: split the panels when the
        // rows alone are too few.
        let want = if parallel {
            4 * rayon::current_num_threads()
        } else {
            1
        };
        let per_chunk = panels.div_ceil(want.div_ceil(row_blocks).clamp(1, panels));
        let col_chunks = panels.div_ceil(per_chunk);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let bp = &mut bp[..panels * kc * nr];
            pack_b(b, (k0, kc), (jc, nc), nr, bp, parallel);
            let bp = &*bp;
            let task = |t: usize| {
                let (i0, ch) = ((t / col_chunks) * MC, t % col_chunks);
                let rows = MC.min(m - i0);
                A_PACK.with(|ap| {
                    let ap = &mut *ap.borrow_mut();
                    pack_a(a, i0, rows, k0, kc, mr, ap);
                    for jp in ch * per_chunk..((ch + 1) * per_chunk).min(panels) {
                        let panel = &bp[jp * kc * nr..(jp + 1) * kc * nr];
                        let (j0, cols) = (jc + jp * nr, nr.min(nc - jp * nr));
                        for (g, group) in ap.chunks_exact(kc * mr).enumerate() {
                            let (i, valid) = (i0 + g * mr, mr.min(rows - g * mr));
                            micro(kern, kc, group, panel, shared, (i, j0), (valid, cols), n);
                        }
                    }
                });
            };
            if parallel {
                (0..row_blocks * col_chunks).into_par_iter().for_each(task);
            } else {
                (0..row_blocks * col_chunks).for_each(task);
            }
        }
    }
    pool::recycle(bp);
}

/// One `mr x nr` block at `(i, j)` of C; an edge block (`valid` rows,
/// `cols` columns) goes through a zeroed tile so the kernel never reads or
/// writes past C.
#[allow(clippy::too_many_arguments)]
fn micro(
    kern: Kernel,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: SharedC,
    (i, j): (usize, usize),
    (valid, cols): (usize, usize),
    ldc: usize,
) {
    debug_assert!(a.len() >= kc * kern.mr && b.len() >= kc * kern.nr);
    if valid == kern.mr && cols == kern.nr {
        // SAFETY: the packed blocks hold kc steps; the block lies inside C
        // (i + mr <= m, j + nr <= n) and belongs to this task alone.
        unsafe { (kern.f)(kc, a.as_ptr(), b.as_ptr(), c.at(i * ldc + j), ldc) };
        return;
    }
    let mut tile = [0.0f32; MAX_TILE];
    // SAFETY: as above, into the local tile of mr x nr <= MAX_TILE floats.
    unsafe { (kern.f)(kc, a.as_ptr(), b.as_ptr(), tile.as_mut_ptr(), kern.nr) };
    for (r, row) in tile.chunks_exact(kern.nr).take(valid).enumerate() {
        for (jj, v) in row[..cols].iter().enumerate() {
            // SAFETY: (i + r, j + jj) is inside C and this task's block.
            unsafe { *c.at((i + r) * ldc + j + jj) += v };
        }
    }
}

/// The micro-kernel this CPU runs (`avx512`, `avx2+fma` or `portable`).
pub fn kernel_name() -> &'static str {
    kernels::best().name
}

/// Measured rate of the micro-kernel with its operands in L1, all threads
/// busy, in GFLOP/s: the ceiling the GEMM's figures are compared against.
pub fn kernel_peak_gflops() -> f64 {
    let kern = kernels::best();
    let kc = KC;
    let a = vec![1e-3f32; kc * kern.mr];
    let b = vec![1e-3f32; kc * kern.nr];
    let reps = 2000;
    let threads = rayon::current_num_threads();
    let t = std::time::Instant::now();
    (0..threads).into_par_iter().for_each(|_| {
        let mut c = vec![0.0f32; kern.mr * kern.nr];
        for _ in 0..reps {
            // SAFETY: a and b hold kc steps, c one full block with ldc = nr.
            unsafe { (kern.f)(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), kern.nr) };
        }
        std::hint::black_box(&c);
    });
    let flops = 2.0 * (threads * reps * kc * kern.mr * kern.nr) as f64;
    flops / t.elapsed().as_secs_f64() / 1e9
}
