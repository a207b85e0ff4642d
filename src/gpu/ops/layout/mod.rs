//! GPU side of the layout family (`shaders/layout.wgsl`): values are moved
//! as stored, so f16 results equal the input bits.
//!
//! `permute` (in `permute.rs`) is a tiled transpose or a gather; `cat` and
//! `narrow` are strided row copies. Tensors over the binding limit are split where the work splits:
//! batches or blocks of a transpose, rows of a copy, planes of an upsample,
//! table rows of an embedding.

use std::sync::LazyLock;

use super::params::{params, Params};
use super::{buf, ctx, new_tensor, windows};
use crate::cpu::layout::nearest_scale;
use crate::gpu::{grid_1d, Binding, Define, Dispatch, GpuContext, Kernel, Shader};
use crate::tensor::{DType, Tensor};

pub(super) mod permute;
pub use permute::permute;

pub(super) static LAYOUT: Shader = crate::shader!("layout");

/// Threads per workgroup of the per-element kernels.
const WG: u32 = 256;
/// Transpose tile side, and rows of threads (each moves TILE / TILE_ROWS values).
const TILE: u32 = 32;
const TILE_ROWS: u32 = 8;

pub(super) static DEFINES: LazyLock<[Define; 3]> = LazyLock::new(|| {
    [
        Define {
            name: "WG",
            value: WG,
        },
        Define {
            name: "TILE",
            value: TILE,
        },
        Define {
            name: "TILE_ROWS",
            value: TILE_ROWS,
        },
    ]
});

params! {
    /// `CopyParams` of layout.wgsl.
    pub(super) struct CopyParams {
        n: u32,
        x_off: u32,
        o_off: u32,
        row_len: u32,
        x_stride: u32,
        o_stride: u32,
    }
}

params! {
    /// `UpsampleParams` of layout.wgsl.
    pub(super) struct UpsampleParams {
        n: u32,
        x_off: u32,
        o_off: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        scale_h: f32,
        scale_w: f32,
    }
}

params! {
    /// `EmbeddingParams` of layout.wgsl.
    pub(super) struct EmbeddingParams {
        n: u32,
        x_off: u32,
        o_off: u32,
        i_off: u32,
        dim: u32,
        v0: u32,
        nv: u32,
    }
}

/// Records one dispatch of `entry` with bindings `[x, ids, o]` (kernels that
/// read no ids get x again).
fn dispatch(
    c: &GpuContext,
    entry: &'static str,
    dt: DType,
    params: &impl Params,
    io: [Binding; 3],
    groups: [u32; 3],
) {
    let [x, ids, o] = io;
    c.dispatch(&Dispatch {
        kernel: Kernel {
            shader: &LAYOUT,
            entry,
            inputs: 2,
            outputs: 1,
        },
        dtype: dt,
        defines: &*DEFINES,
        params: params.words(),
        inputs: &[x, ids],
        outputs: &[o],
        groups,
    });
}

/// Workgroups for `n` one-value threads.
fn grid(c: &GpuContext, n: usize) -> [u32; 3] {
    grid_1d((n as u32).div_ceil(WG), c.max_workgroups_per_dim())
}

// ----- cat / narrow -----------------------------------------------------------

/// Copies `rows` rows of `row_len` values from `x` (row i at `x_start + i *
/// x_stride`) into `out` (row i at `o_start + i * o_stride`).
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    c: &GpuContext,
    x: &Tensor,
    x_start: usize,
    out: &Tensor,
    o_start: usize,
    rows: usize,
    row_len: usize,
    x_stride: usize,
    o_stride: usize,
) {
    let dt = x.dtype();
    let max = c.max_binding_elems(dt);
    if rows == 0 || row_len == 0 {
        return;
    }
    // (first row, rows, first value in the row, values per row)
    let pieces: Vec<(usize, usize, usize, usize)> = if row_len <= max {
        // Rows per window so that both spans (n-1)*stride + row_len fit.
        let per = 1 + (max - row_len) / x_stride.max(o_stride).max(1);
        windows(rows, per, 1)
            .into_iter()
            .map(|(r0, nr)| (r0, nr, 0, row_len))
            .collect()
    } else {
        (0..rows)
            .flat_map(|r| {
                windows(row_len, max, 1)
                    .into_iter()
                    .map(move |(j0, nj)| (r, 1, j0, nj))
            })
            .collect()
    };
    for (r0, nr, j0, nj) in pieces {
        let (xb, x_off) = c.bind(buf(x), dt, x_start + r0 * x_stride + j0, (nr - 1) * x_stride + nj);
        let (ob, o_off) = c.bind(
            buf(out),
            dt,
            o_start + r0 * o_stride + j0,
            (nr - 1) * o_stride + nj,
        );
        let params = CopyParams {
            n: (nr * nj) as u32,
            x_off,
            o_off,
            row_len: nj as u32,
            x_stride: x_stride as u32,
            o_stride: o_stride as u32,
        };
        dispatch(c, "copy", dt, &params, [xb, xb, ob], grid(c, nr * nj));
    }
}

/// (outer, size, inner) of `shape` around `dim`.
fn split3(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

pub fn cat(ts: &[&Tensor], dim: usize) -> Tensor {
    let c = ctx(ts[0]);
    let mut shape = ts[0].shape().to_vec();
    shape[dim] = ts.iter().map(|t| t.dim(dim as isize)).sum();
    let out = new_tensor(&c, &shape, ts[0].dtype());
    // out: [outer, total, inner]; input t fills [.., off .. off+len, ..].
    let (outer, total, inner) = split3(&shape, dim);
    let mut off = 0;
    for t in ts {
        let len = t.dim(dim as isize);
        copy_rows(
            &c,
            t,
            0,
            &out,
            off * inner,
            outer,
            len * inner,
            len * inner,
            total * inner,
        );
        off += len;
    }
    out
}

pub fn narrow(x: &Tensor, dim: usize, start: usize, len: usize) -> Tensor {
    let c = ctx(x);
    let mut shape = x.shape().to_vec();
    shape[dim] = len;
    let out = new_tensor(&c, &shape, x.dtype());
    // x: [outer, size, inner] -> out: [outer, len, inner]
    let (outer, size, inner) = split3(x.shape(), dim);
    copy_rows(
        &c,
        x,
        start * inner,
        &out,
        0,
        outer,
        len * inner,
        size * inner,
        len * inner,
    );
    out
}

// ----- upsample, embedding -----------------------------------------------------

pub fn upsample_nearest(x: &Tensor, out_h: usize, out_w: usize) -> Tensor {
    let c = ctx(x);
    let dt = x.dtype();
    // x: [N, C, H, W] -> out: [N, C, OH, OW], windows of whole planes.
    let (n, ch, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let out = new_tensor(&c, &[n, ch, out_h, out_w], dt);
    let (plane_in, plane_out) = (h * w, out_h * out_w);
    let max = c.max_binding_elems(dt);
    let per = max / plane_in.max(plane_out).max(1);
    assert!(
        per > 0,
        "upsample: one {h}x{w} -> {out_h}x{out_w} plane exceeds the binding limit"
    );
    if x.elem_count() == 0 || plane_out == 0 {
        return out;
    }
    for (p0, np) in windows(n * ch, per, 1) {
        let (xb, x_off) = c.bind(buf(x), dt, p0 * plane_in, np * plane_in);
        let (ob, o_off) = c.bind(buf(&out), dt, p0 * plane_out, np * plane_out);
        let u = |x: usize| x as u32;
        let params = UpsampleParams {
            n: u(np * plane_out),
            x_off,
            o_off,
            h: u(h),
            w: u(w),
            oh: u(out_h),
            ow: u(out_w),
            scale_h: nearest_scale(h, out_h),
            scale_w: nearest_scale(w, out_w),
        };
        dispatch(
            &c,
            "upsample",
            dt,
            &params,
            [xb, xb, ob],
            grid(&c, np * plane_out),
        );
    }
    out
}

pub fn embedding(table: &Tensor, ids: &[u32]) -> Tensor {
    let c = ctx(table);
    let dt = table.dtype();
    // table: [V, D] -> out: [ids, D]
    let (v, d) = (table.dim(0), table.dim(1));
    let out = new_tensor(&c, &[ids.len(), d], dt);
    if ids.is_empty() || d == 0 {
        return out;
    }
    // Like `GpuContext::upload`, but an allocation failure stays recorded in
    // the context and surfaces at read-back, as for every op.
    let id_buf = c.alloc(ids.len() * 4);
    // `write_buffer` runs before recorded commands, which may still use the
    // pooled buffer: submit them first.
    c.flush();
    c.queue().write_buffer(id_buf.raw(), 0, bytemuck::cast_slice(ids));
    let (ib, i_off) = c.bind(&id_buf, DType::F32, 0, ids.len());
    let (ob, o_off) = c.bind(buf(&out), dt, 0, ids.len() * d);
    let n = ids.len() * d;
    // The table may exceed the binding limit (CLIP's f32 token table is
    // 151 MB): one dispatch per window of rows that some id falls in.
    for (v0, nv) in windows(v, c.max_binding_elems(dt) / d, 1) {
        if !ids.iter().any(|&i| (v0..v0 + nv).contains(&(i as usize))) {
            continue;
        }
        let (xb, x_off) = c.bind(buf(table), dt, v0 * d, nv * d);
        let u = |x: usize| x as u32;
        let params = EmbeddingParams {
            n: u(n),
            x_off,
            o_off,
            i_off,
            dim: u(d),
            v0: u(v0),
            nv: u(nv),
        };
        dispatch(&c, "embedding", dt, &params, [xb, ib, ob], grid(&c, n));
    }
    out
}
