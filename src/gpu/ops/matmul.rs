//! GPU side of the matmul family (`shaders/matmul.wgsl` on the tile core of
//! `shaders/gemm_tile.wgsl`).
//!
//! Operands over the storage-binding limit are processed in windows: whole
//! batch items first, then, for an item that is itself too large, row windows
//! of M (rows of A, C and the residual are contiguous) and, when B alone is
//! over the limit, column windows of N (rows of a `[N, K]` B are contiguous;
//! C is then bound by whole rows and written a column range at a time).

use super::params::{params, Params as _};
use super::tile::{balanced, fits, max_rows, Tile, WG};
use super::{buf, ctx, new_tensor};
use crate::gpu::{grid_1d, Define, Dispatch, GpuContext, Kernel, Shader};
use crate::ops::matmul::{MatmulDims, MatmulOpts};
use crate::ops::Variant;
use crate::tensor::{DType, Tensor};

pub(super) static MATMUL: Shader = crate::tiled_shader!("matmul");

params! {
    /// The `Params` uniform of matmul.wgsl.
    pub(super) struct Params {
        batch: u32,
        m: u32,
        n: u32,
        k: u32,
        lda: u32,
        ldb: u32,
        ldc: u32,
        a_bs: u32,
        b_bs: u32,
        c_bs: u32,
        a_off: u32,
        b_off: u32,
        c_off: u32,
        r_off: u32,
        bias_off: u32,
        alpha: f32,
        has_bias: u32,
        has_res: u32,
        tiles_m: u32,
        tiles_n: u32,
    }
}

/// One dispatch's share: batch items `b0..b0+nb`, rows `m0..m0+mw`, columns `n0..n0+nw`.
#[derive(Debug, Clone, Copy)]
struct Window {
    b0: usize,
    nb: usize,
    m0: usize,
    mw: usize,
    n0: usize,
    nw: usize,
}

/// `(start, len)` element ranges a window reads or writes in each operand.
struct Spans {
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
    bias: (usize, usize),
}

fn spans(d: &MatmulDims, opts: &MatmulOpts, w: &Window) -> Spans {
    let (m, n, k) = (d.m, d.n, d.k);
    let a = if opts.trans_a {
        // [K, M]: columns m0.. of every k-row.
        (
            w.b0 * m * k + w.m0,
            (w.nb - 1) * m * k + k.saturating_sub(1) * m + w.mw,
        )
    } else {
        (w.b0 * m * k + w.m0 * k, (w.nb - 1) * m * k + w.mw * k)
    };
    let (b_item, b_first) = if d.b_shared { (0, 0) } else { (k * n, w.b0 * k * n) };
    let b = if opts.trans_b {
        // [N, K]: rows n0.. are contiguous.
        (b_first + w.n0 * k, (w.nb - 1) * b_item + w.nw * k)
    } else {
        (
            b_first + w.n0,
            (w.nb - 1) * b_item + k.saturating_sub(1) * n + w.nw,
        )
    };
    let c = (
        w.b0 * m * n + w.m0 * n + w.n0,
        (w.nb - 1) * m * n + (w.mw - 1) * n + w.nw,
    );
    Spans {
        a,
        b,
        c,
        bias: (w.n0, w.nw),
    }
}

/// The windows covering the whole product, each within the binding limit.
fn plan(ctx: &GpuContext, dt: DType, d: &MatmulDims, opts: &MatmulOpts) -> Vec<Window> {
    let (m, n, k) = (d.m, d.n, d.k);
    let rows_of = |len| max_rows(ctx, dt, len);
    let whole = |b0, nb| Window {
        b0,
        nb,
        m0: 0,
        mw: m,
        n0: 0,
        nw: n,
    };
    // Whole batch items per window, as many as A, C and a batched B allow.
    let items = rows_of(m * k)
        .min(rows_of(m * n))
        .min(if d.b_shared { usize::MAX } else { rows_of(k * n) });
    if items > 0 && (!d.b_shared || fits(ctx, dt, 0, k * n)) {
        return balanced(d.batch, items, 1)
            .into_iter()
            .map(|(b0, nb)| whole(b0, nb))
            .collect();
    }
    // An item too large for one window: rows of M, and rows of N when B
    // alone is too large.
    let mut out = Vec::new();
    for bi in 0..d.batch {
        let s = spans(d, opts, &whole(bi, 1));
        let n_wins = if fits(ctx, dt, s.b.0, s.b.1) {
            vec![(0, n)]
        } else {
            assert!(
                opts.trans_b,
                "matmul: B [{k}, {n}] is over the binding limit; only a B stored [N, K] (trans_b) can be split"
            );
            balanced(n, rows_of(k), 128)
        };
        let rows = if opts.trans_a {
            assert!(
                fits(ctx, dt, s.a.0, s.a.1),
                "matmul: A stored [K, M] = [{k}, {m}] is over the binding limit; store it [M, K]"
            );
            rows_of(n)
        } else {
            rows_of(k).min(rows_of(n))
        };
        assert!(
            rows > 0,
            "matmul: one row of [{m}, {k}] x [{k}, {n}] is over the binding limit"
        );
        for &(m0, mw) in &balanced(m, rows, 128) {
            for &(n0, nw) in &n_wins {
                out.push(Window {
                    b0: bi,
                    nb: 1,
                    m0,
                    mw,
                    n0,
                    nw,
                });
            }
        }
    }
    out
}

pub fn matmul(
    a: &Tensor,
    b: &Tensor,
    opts: &MatmulOpts,
    d: MatmulDims,
    out_shape: &[usize],
    variant: Variant,
) -> Tensor {
    let c = ctx(a);
    let out = new_tensor(&c, out_shape, a.dtype());
    if out.elem_count() == 0 {
        return out;
    }
    for w in plan(&c, a.dtype(), &d, opts) {
        dispatch(&c, [a, b, &out], opts, &d, &w, variant);
    }
    out
}

/// Records the kernel for one window.
fn dispatch(
    c: &GpuContext,
    [a, b, out]: [&Tensor; 3],
    opts: &MatmulOpts,
    d: &MatmulDims,
    w: &Window,
    variant: Variant,
) {
    let dt = a.dtype();
    let s = spans(d, opts, w);
    let (ab, a_off) = c.bind(buf(a), dt, s.a.0, s.a.1);
    let (bb, b_off) = c.bind(buf(b), dt, s.b.0, s.b.1);
    let (ob, c_off) = c.bind(buf(out), dt, s.c.0, s.c.1);
    // Absent operands bind A again; the kernel never reads them.
    let (biasb, bias_off) = opts
        .bias
        .map_or((ab, a_off), |t| c.bind(buf(t), dt, s.bias.0, s.bias.1));
    let (rb, r_off) = opts
        .residual
        .map_or((ab, a_off), |t| c.bind(buf(t), dt, s.c.0, s.c.1));

    let (m, n, k) = (d.m, d.n, d.k);
    let tuned = variant == Variant::Tuned;
    // The naive kernel ignores the tile; one fixed value keeps one pipeline.
    let tile = if !tuned {
        Tile::SMALL
    } else {
        Tile::choose(c.caps().software, w.nb, w.mw, w.nw)
    };
    let (tiles_m, tiles_n) = (w.mw.div_ceil(tile.rows()), w.nw.div_ceil(tile.cols()));
    let contiguous_ok = |x: usize| x.is_multiple_of(4);
    let vec4 = tuned
        && contiguous_ok(n)
        && contiguous_ok(if opts.trans_a { m } else { k })
        && (!opts.trans_b || contiguous_ok(k))
        && [a_off, b_off, c_off, bias_off, r_off].iter().all(|&o| o % 4 == 0);
    let u = |x: usize| x as u32;
    let params = Params {
        batch: u(w.nb),
        m: u(w.mw),
        n: u(w.nw),
        k: u(k),
        lda: u(if opts.trans_a { m } else { k }),
        ldb: u(if opts.trans_b { k } else { n }),
        ldc: u(n),
        a_bs: u(m * k),
        b_bs: u(if d.b_shared { 0 } else { k * n }),
        c_bs: u(m * n),
        a_off,
        b_off,
        c_off,
        r_off,
        bias_off,
        alpha: opts.alpha,
        has_bias: opts.bias.is_some() as u32,
        has_res: opts.residual.is_some() as u32,
        tiles_m: u(tiles_m),
        tiles_n: u(tiles_n),
    };
    let defines = defines(tile, opts.trans_a, opts.trans_b, vec4);
    let groups = if tuned {
        w.nb * tiles_m * tiles_n
    } else {
        (w.nb * w.mw * w.nw).div_ceil(WG as usize)
    };
    c.dispatch(&Dispatch {
        kernel: Kernel {
            shader: &MATMUL,
            entry: if tuned { "tiled" } else { "naive" },
            inputs: 4,
            outputs: 1,
        },
        dtype: dt,
        defines: &defines,
        params: params.words(),
        inputs: &[ab, bb, biasb, rb],
        outputs: &[ob],
        groups: grid_1d(groups as u32, c.max_workgroups_per_dim()),
    });
}

/// The defines of one kernel variant.
pub(super) fn defines(tile: Tile, trans_a: bool, trans_b: bool, vec4: bool) -> [Define; 6] {
    let def = |name, on: bool| Define {
        name,
        value: on as u32,
    };
    let [tall, wide] = tile.defines();
    [
        Define {
            name: "WG",
            value: WG,
        },
        tall,
        wide,
        def("TRANS_A", trans_a),
        def("TRANS_B", trans_b),
        def("VEC4", vec4),
    ]
}
