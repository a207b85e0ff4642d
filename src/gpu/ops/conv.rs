//! GPU side of the conv2d family (`shaders/conv2d.wgsl` on the tile core of
//! `shaders/gemm_tile.wgsl`).
//!
//! Tensors over the storage-binding limit (f32 VAE activations from 512x512
//! up) are processed in windows: groups of whole images first; for an image
//! that is itself too large, output-channel windows (contiguous per image)
//! and, when the input is too large, input-channel chunks accumulated in the
//! output: the first chunk adds bias and residual, later chunks add the
//! partial sum already stored. The weights stay bound by output-channel rows;
//! a column offset selects the chunk's input channels.

use super::params::{params, Params as _};
use super::tile::{balanced, fits, max_rows, Tile, WG};
use super::{buf, ctx, new_tensor};
use crate::gpu::{grid_1d, Define, Dispatch, GpuContext, Kernel, Shader};
use crate::ops::conv::{ConvDims, ConvOpts};
use crate::ops::Variant;
use crate::tensor::{DType, Tensor};

pub(super) static CONV2D: Shader = crate::tiled_shader!("conv2d");

params! {
    /// The `Params` uniform of conv2d.wgsl.
    pub(super) struct Params {
        images: u32,
        c_in: u32,
        h: u32,
        w: u32,
        c_out: u32,
        h_out: u32,
        w_out: u32,
        stride: u32,
        pad_t: u32,
        pad_l: u32,
        x_bs: u32,
        o_bs: u32,
        w_ld: u32,
        x_off: u32,
        w_off: u32,
        o_off: u32,
        r_off: u32,
        bias_off: u32,
        has_bias: u32,
        has_res: u32,
        accumulate: u32,
        tiles_m: u32,
        tiles_n: u32,
    }
}

/// One dispatch's share: images `n0..n0+nn`, output channels `co0..co0+cw`,
/// input channels `ci0..ci0+cc` (`first`: the chunk that adds bias and residual).
#[derive(Debug, Clone, Copy)]
struct Window {
    n0: usize,
    nn: usize,
    co0: usize,
    cw: usize,
    ci0: usize,
    cc: usize,
    first: bool,
}

/// The windows covering the whole convolution, each within the binding limit.
fn plan(ctx: &GpuContext, dt: DType, d: &ConvDims) -> Vec<Window> {
    let rows_of = |len| max_rows(ctx, dt, len);
    let (plane_in, plane_out) = (d.h * d.w, d.h_out * d.w_out);
    let (x_item, o_item) = (d.c_in * plane_in, d.c_out * plane_out);
    let w_row = d.c_in * d.kh * d.kw;
    let weights_fit = fits(ctx, dt, 0, d.c_out * w_row);
    let images = rows_of(x_item).min(rows_of(o_item));
    if images > 0 && weights_fit {
        return balanced(d.n, images, 1)
            .into_iter()
            .map(|(n0, nn)| Window {
                n0,
                nn,
                co0: 0,
                cw: d.c_out,
                ci0: 0,
                cc: d.c_in,
                first: true,
            })
            .collect();
    }
    let (max_co, max_ci) = (rows_of(plane_out).min(rows_of(w_row)), rows_of(plane_in));
    assert!(
        max_co > 0 && max_ci > 0,
        "conv2d: one channel plane of {d:?} is over the binding limit"
    );
    let mut out = Vec::new();
    for img in 0..d.n {
        // Output channels in windows of whole 64-row tiles where possible.
        let co_wins = if fits(ctx, dt, img * o_item, o_item) && weights_fit {
            vec![(0, d.c_out)]
        } else {
            balanced(d.c_out, max_co, 64)
        };
        // Multiples of 4 input channels keep the weight column offset vec4-aligned.
        let ci_wins = if fits(ctx, dt, img * x_item, x_item) {
            vec![(0, d.c_in)]
        } else {
            balanced(d.c_in, max_ci, 4)
        };
        for &(co0, cw) in &co_wins {
            for (i, &(ci0, cc)) in ci_wins.iter().enumerate() {
                out.push(Window {
                    n0: img,
                    nn: 1,
                    co0,
                    cw,
                    ci0,
                    cc,
                    first: i == 0,
                });
            }
        }
    }
    out
}

pub fn conv2d(x: &Tensor, w: &Tensor, opts: &ConvOpts, d: ConvDims, variant: Variant) -> Tensor {
    let c = ctx(x);
    let out = new_tensor(&c, &[d.n, d.c_out, d.h_out, d.w_out], x.dtype());
    if out.elem_count() == 0 {
        return out;
    }
    for win in plan(&c, x.dtype(), &d) {
        dispatch(&c, [x, w, &out], opts, &d, &win, variant);
    }
    out
}

/// Records the kernel for one window.
fn dispatch(
    c: &GpuContext,
    [x, w, out]: [&Tensor; 3],
    opts: &ConvOpts,
    d: &ConvDims,
    win: &Window,
    variant: Variant,
) {
    let dt = x.dtype();
    let kk = d.kh * d.kw;
    let (plane_in, pixels) = (d.h * d.w, d.h_out * d.w_out);
    let (x_item, o_item, w_row) = (d.c_in * plane_in, d.c_out * pixels, d.c_in * kk);
    // x: channels ci0.. of images n0..; w: rows co0..; out/residual: channels co0.. of images n0...
    let (xb, x_off) = c.bind(
        buf(x),
        dt,
        win.n0 * x_item + win.ci0 * plane_in,
        (win.nn - 1) * x_item + win.cc * plane_in,
    );
    let (wb, w_base) = c.bind(buf(w), dt, win.co0 * w_row, win.cw * w_row);
    let o_span = (
        win.n0 * o_item + win.co0 * pixels,
        (win.nn - 1) * o_item + win.cw * pixels,
    );
    let (ob, o_off) = c.bind(buf(out), dt, o_span.0, o_span.1);
    let bias = opts.bias.filter(|_| win.first);
    let residual = opts.residual.filter(|_| win.first);
    // Absent operands bind x again; the kernel never reads them.
    let (biasb, bias_off) = bias.map_or((xb, x_off), |t| c.bind(buf(t), dt, win.co0, win.cw));
    let (rb, r_off) = residual.map_or((xb, x_off), |t| c.bind(buf(t), dt, o_span.0, o_span.1));
    let w_off = w_base + (win.ci0 * kk) as u32;

    let tuned = variant == Variant::Tuned;
    // The naive kernel ignores the tile; one fixed value keeps one pipeline.
    let tile = if !tuned {
        Tile::SMALL
    } else {
        Tile::choose(c.caps().software, win.nn, win.cw, pixels)
    };
    let (tiles_m, tiles_n) = (win.cw.div_ceil(tile.rows()), pixels.div_ceil(tile.cols()));
    let vec4 = tuned
        && (win.cc * kk).is_multiple_of(4)
        && w_row.is_multiple_of(4)
        && pixels.is_multiple_of(4)
        && [w_off, o_off, r_off].iter().all(|&o| o % 4 == 0);
    let pointwise = vec4
        && kk == 1
        && d.stride == 1
        && d.pad == [0; 4]
        && x_off.is_multiple_of(4)
        && x_item.is_multiple_of(4);
    let u = |x: usize| x as u32;
    let params = Params {
        images: u(win.nn),
        c_in: u(win.cc),
        h: u(d.h),
        w: u(d.w),
        c_out: u(win.cw),
        h_out: u(d.h_out),
        w_out: u(d.w_out),
        stride: u(d.stride),
        pad_t: u(d.pad[0]),
        pad_l: u(d.pad[2]),
        x_bs: u(x_item),
        o_bs: u(o_item),
        w_ld: u(w_row),
        x_off,
        w_off,
        o_off,
        r_off,
        bias_off,
        has_bias: bias.is_some() as u32,
        has_res: residual.is_some() as u32,
        accumulate: !win.first as u32,
        tiles_m: u(tiles_m),
        tiles_n: u(tiles_n),
    };
    let defines = defines(tile, d.kh as u32, d.kw as u32, vec4, pointwise);
    let groups = if tuned {
        win.nn * tiles_m * tiles_n
    } else {
        (win.nn * win.cw * pixels).div_ceil(WG as usize)
    };
    c.dispatch(&Dispatch {
        kernel: Kernel {
            shader: &CONV2D,
            entry: if tuned { "tiled" } else { "naive" },
            inputs: 4,
            outputs: 1,
        },
        dtype: dt,
        defines: &defines,
        params: params.words(),
        inputs: &[xb, wb, biasb, rb],
        outputs: &[ob],
        groups: grid_1d(groups as u32, c.max_workgroups_per_dim()),
    });
}

/// The defines of one kernel variant.
pub(super) fn defines(tile: Tile, kh: u32, kw: u32, vec4: bool, pointwise: bool) -> [Define; 7] {
    let def = |name, value| Define { name, value };
    let [tall, wide] = tile.defines();
    [
        def("WG", WG),
        tall,
        wide,
        def("KH", kh),
        def("KW", kw),
        def("VEC4", vec4 as u32),
        def("POINTWISE", pointwise as u32),
    ]
}
