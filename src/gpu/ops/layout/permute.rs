//! `permute`: the permutation is first collapsed (size-1 dims dropped, input
//! dims that stay adjacent and in order merged): SD's `[B, C, H, W] <->
//! [B, H*W, C]` becomes the batched transpose `[B, R, C] -> [B, C, R]`, which
//! goes through workgroup-memory tiles so reads and writes are both
//! coalesced; other permutations use a per-element gather.

use super::{copy_rows, dispatch, grid, TILE};
use crate::gpu::ops::params::params;
use crate::gpu::ops::{buf, ctx, new_tensor, windows};
use crate::gpu::{grid_1d, GpuContext};
use crate::ops::Variant;
use crate::tensor::Tensor;

params! {
    /// `TransposeParams` of layout.wgsl.
    pub(in crate::gpu::ops) struct TransposeParams {
        x_off: u32,
        o_off: u32,
        rows: u32,
        cols: u32,
        nr: u32,
        nc: u32,
        tiles_r: u32,
        tiles_c: u32,
        batches: u32,
    }
}

params! {
    /// `GatherParams` of layout.wgsl.
    pub(in crate::gpu::ops) struct GatherParams {
        n: u32,
        x_off: u32,
        o_off: u32,
        start: u32,
        x_start: u32,
        rank: u32,
        _pad0: u32,
        _pad1: u32,
        shape: [u32; 8],
        stride: [u32; 8],
    }
}

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
        let u = |x: usize| x as u32;
        let params = TransposeParams {
            x_off,
            o_off,
            rows: u(rows),
            cols: u(cols),
            nr: u(nr),
            nc: u(nc),
            tiles_r: u(tiles_r),
            tiles_c: u(tiles_c),
            batches: u(nb),
        };
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
    let (mut out_shape, mut stride) = ([0u32; 8], [0u32; 8]);
    for (i, &p) in perm.iter().enumerate() {
        out_shape[i] = shape[p] as u32;
        stride[i] = in_strides[p] as u32;
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
        let params = GatherParams {
            n: len as u32,
            x_off,
            o_off,
            start: start as u32,
            x_start: x_start as u32,
            rank: shape.len() as u32,
            shape: out_shape,
            stride,
            ..Default::default()
        };
        dispatch(c, "gather", dt, &params, [xb, xb, ob], grid(c, len));
    }
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
