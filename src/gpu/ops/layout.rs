//! GPU side of the layout family (`shaders/layout.wgsl`): values are moved
//! as stored, so f16 results equal the input bits.
//!
//! `permute` first collapses the permutation (drops size-1 dims, merges input
//! dims that stay adjacent and in order): SD's `[B, C, H, W] <-> [B, H*W, C]`
//! becomes the batched transpose `[B, R, C] -> [B, C, R]`, which goes through
//! workgroup-memory tiles so reads and writes are both coalesced; other
//! permutations use a per-element gather. `cat` and `narrow` are strided row
//! copies. Tensors over the binding limit are split where the work splits:
//! batches or blocks of a transpose, rows of a copy, planes of an upsample,
//! table rows of an embedding.

use std::sync::LazyLock;

use super::{buf, ctx, new_tensor, windows};
use crate::cpu::layout::nearest_scale;
use crate::gpu::{f32_word, grid_1d, Binding, Define, Dispatch, GpuContext, Kernel, Shader};
use crate::ops::Variant;
use crate::tensor::{DType, Tensor};

static LAYOUT: Shader = crate::shader!("layout");

/// Threads per workgroup of the per-element kernels.
const WG: u32 = 256;
/// Transpose tile side, and rows of threads (each moves TILE / TILE_ROWS values).
const TILE: u32 = 32;
const TILE_ROWS: u32 = 8;

static DEFINES: LazyLock<[Define; 3]> = LazyLock::new(|| {
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

/// Records one dispatch of `entry` with bindings `[x, ids, o]` (kernels that
/// read no ids get x again).
fn dispatch(
    c: &GpuContext,
    entry: &'static str,
    dt: DType,
    params: &[u32],
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
        params,
        inputs: &[x, ids],
        outputs: &[o],
        groups,
    });
}

/// Workgroups for `n` one-value threads.
fn grid(c: &GpuContext, n: usize) -> [u32; 3] {
    grid_1d((n as u32).div_ceil(WG), c.max_workgroups_per_dim())
}

// ----- permute --------------------------------------------------------------

/// `(shape, perm)` with size-1 dims dropped and each run of input dims that
/// stays adjacent and in order in the output merged into one dim.
fn collapse(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = (0..shape.len()).filter(|&d| shape[d] != 1).collect();
    let renum = |d: usize| kept.iter().position(|&k| k == d).expect("kept dim");
    let perm: Vec<usize> = perm
        .iter()
        .filter(|&&p| shape[p] != 1)
        .map(|&p| renum(p))
        .collect();
    // Runs of consecutive input dims, in output order.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &p in &perm {
        match runs.last_mut() {
            Some(run) if run[run.len() - 1] + 1 == p => run.push(p),
            _ => runs.push(vec![p]),
        }
    }
    let mut by_input: Vec<usize> = (0..runs.len()).collect();
    by_input.sort_by_key(|&r| runs[r][0]);
    let in_shape = by_input
        .iter()
        .map(|&r| runs[r].iter().map(|&d| shape[kept[d]]).product())
        .collect();
    let mut new_perm = vec![0; runs.len()];
    for (pos, &r) in by_input.iter().enumerate() {
        new_perm[r] = pos;
    }
    (in_shape, new_perm)
}

pub fn permute(x: &Tensor, perm: &[usize], variant: Variant) -> Tensor {
    let c = ctx(x);
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.dim(p as isize)).collect();
    let out = new_tensor(&c, &out_shape, x.dtype());
    let (shape, perm) = collapse(x.shape(), perm);
    if variant == Variant::Naive && !perm.is_empty() {
        gather(&c, x, &out, &shape, &perm);
        return out;
    }
    match perm.as_slice() {
        [] | [0] => {
            let n = x.elem_count();
            copy_rows(&c, x, 0, &out, 0, 1, n, n, n);
        }
        [1, 0] => transpose(&c, x, &out, 1, shape[0], shape[1]),
        [0, 2, 1] => transpose(&c, x, &out, shape[0], shape[1], shape[2]),
        _ => gather(&c, x, &out, &shape, &perm),
    }
    out
}

/// `x [B, R, C] -> out [B, C, R]`.
fn transpose(c: &GpuContext, x: &Tensor, out: &Tensor, batches: usize, rows: usize, cols: usize) {
    let dt = x.dtype();
    let max = c.max_binding_elems(dt);
    let mat = rows * cols;
    // (first matrix, matrices, first row, rows, first column, columns)
    let mut blocks = Vec::new();
    if mat <= max {
        for (b0, nb) in windows(batches, max / mat, 1) {
            blocks.push((b0, nb, 0, rows, 0, cols));
        }
    } else {
        // One matrix is too big: blocks whose x span ((nr-1)*C + nc) and
        // o span ((nc-1)*R + nr) each fit in a binding.
        let nr = (max / 2 / cols).clamp(1, rows);
        let nc = (max / 2 / rows).clamp(1, cols);
        for b in 0..batches {
            for (r0, nr) in windows(rows, nr, 1) {
                for (c0, nc) in windows(cols, nc, 1) {
                    blocks.push((b, 1, r0, nr, c0, nc));
                }
            }
        }
    }
    for (b0, nb, r0, nr, c0, nc) in blocks {
        let span = |n: usize, stride: usize, last: usize| (nb - 1) * mat + (n - 1) * stride + last;
        let (xb, x_off) = c.bind(buf(x), dt, b0 * mat + r0 * cols + c0, span(nr, cols, nc));
        let (ob, o_off) = c.bind(buf(out), dt, b0 * mat + c0 * rows + r0, span(nc, rows, nr));
        let (tiles_r, tiles_c) = (nr.div_ceil(TILE as usize), nc.div_ceil(TILE as usize));
        let params = [
            x_off as usize,
            o_off as usize,
            rows,
            cols,
            nr,
            nc,
            tiles_r,
            tiles_c,
            nb,
        ]
        .map(|v| v as u32);
        let groups = grid_1d((nb * tiles_r * tiles_c) as u32, c.max_workgroups_per_dim());
        dispatch(c, "transpose", dt, &params, [xb, xb, ob], groups);
    }
}

/// Any collapsed permutation: one thread per output value.
fn gather(c: &GpuContext, x: &Tensor, out: &Tensor, shape: &[usize], perm: &[usize]) {
    let dt = x.dtype();
    let max = c.max_binding_elems(dt);
    let n = x.elem_count();
    let mut in_strides = vec![1usize; shape.len()];
    for d in (0..shape.len() - 1).rev() {
        in_strides[d] = in_strides[d + 1] * shape[d + 1];
    }
    let mut words = [0u32; 16];
    for (i, &p) in perm.iter().enumerate() {
        words[i] = shape[p] as u32;
        words[8 + i] = in_strides[p] as u32;
    }
    // (first output, outputs, first input, inputs bound)
    let pieces: Vec<(usize, usize, usize, usize)> = if n <= max {
        windows(n, max, 1)
            .into_iter()
            .map(|(s, len)| (s, len, 0, n))
            .collect()
    } else {
        // Too big for one binding: split along a leading dim the permutation keeps.
        let slice = n / shape[0];
        assert!(
            perm[0] == 0 && slice <= max,
            "permute of {shape:?} by {perm:?} (collapsed): a slice exceeds the storage \
             binding limit; split the tensor first"
        );
        windows(shape[0], max / slice, 1)
            .into_iter()
            .map(|(b0, nb)| (b0 * slice, nb * slice, b0 * slice, nb * slice))
            .collect()
    };
    for (start, len, x_start, x_len) in pieces {
        let (xb, x_off) = c.bind(buf(x), dt, x_start, x_len);
        let (ob, o_off) = c.bind(buf(out), dt, start, len);
        let mut params = vec![
            len as u32,
            x_off,
            o_off,
            start as u32,
            x_start as u32,
            shape.len() as u32,
            0,
            0,
        ];
        params.extend(words);
        dispatch(c, "gather", dt, &params, [xb, xb, ob], grid(c, len));
    }
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
        let params = [nr * nj, x_off as usize, o_off as usize, nj, x_stride, o_stride].map(|v| v as u32);
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
        let mut params = [np * plane_out, x_off as usize, o_off as usize, h, w, out_h, out_w]
            .map(|v| v as u32)
            .to_vec();
        params.extend([nearest_scale(h, out_h), nearest_scale(w, out_w)].map(f32_word));
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
        let params = [n, x_off as usize, o_off as usize, i_off as usize, d, v0, nv].map(|v| v as u32);
        dispatch(&c, "embedding", dt, &params, [xb, ib, ob], grid(&c, n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::collapse;

    #[test]
    fn collapse_merges_runs() {
        // [B, C, H, W] -> [B, H, W, C] is a batched transpose of [B, C, HW].
        assert_eq!(
            collapse(&[2, 320, 64, 64], &[0, 2, 3, 1]),
            (vec![2, 320, 4096], vec![0, 2, 1])
        );
        assert_eq!(
            collapse(&[2, 4096, 320], &[0, 2, 1]),
            (vec![2, 4096, 320], vec![0, 2, 1])
        );
        // Batch 1 and moved size-1 dims disappear.
        assert_eq!(
            collapse(&[1, 320, 64, 64], &[0, 2, 3, 1]),
            (vec![320, 4096], vec![1, 0])
        );
        assert_eq!(collapse(&[3, 1, 5], &[1, 0, 2]), (vec![15], vec![0]));
        // [A, B, C] -> [C, A, B] is a 2-D transpose of [AB, C].
        assert_eq!(collapse(&[2, 3, 4], &[2, 0, 1]), (vec![6, 4], vec![1, 0]));
        // Heads: [B, L, H, D] -> [B, H, L, D] stays rank 4.
        assert_eq!(
            collapse(&[2, 7, 8, 5], &[0, 2, 1, 3]),
            (vec![2, 7, 8, 5], vec![0, 2, 1, 3])
        );
        assert_eq!(collapse(&[1, 1], &[1, 0]), (vec![], vec![]));
    }
}
