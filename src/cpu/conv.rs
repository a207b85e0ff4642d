//! CPU twin of `shaders/conv2d.wgsl`: im2col on chunks of output rows, then GEMM.
//! Every output element is a sum over (ci, ky, kx) of f32 products.

use rayon::prelude::*;

use super::gemm::{gemm, Elems, View};
use super::matmul::elems;
use super::profile::{Family, Timer};
use crate::ops::conv::{ConvDims, ConvOpts};
use crate::tensor::Tensor;

/// Floats of im2col scratch per chunk (32 MiB).
const COL_BUDGET: usize = 8 << 20;

/// `col [C_in*kh*kw, rows*W_out]`: row (ci, ky, kx), column = output pixel of
/// output rows `oy0..oy0+rows`; taps in the padding stay zero.
fn im2col(xn: &[f32], d: &ConvDims, oy0: usize, rows: usize, col: &mut [f32]) {
    let p = rows * d.w_out;
    col.par_chunks_mut(p).enumerate().for_each(|(r, out)| {
        let (ci, ky, kx) = (r / (d.kh * d.kw), (r / d.kw) % d.kh, r % d.kw);
        let plane = &xn[ci * d.h * d.w..(ci + 1) * d.h * d.w];
        for (oy, out_row) in (oy0..oy0 + rows).zip(out.chunks_exact_mut(d.w_out)) {
            let iy = (oy * d.stride + ky) as isize - d.pad[0] as isize;
            if iy < 0 || iy as usize >= d.h {
                out_row.fill(0.0);
                continue;
            }
            let x_row = &plane[iy as usize * d.w..(iy as usize + 1) * d.w];
            for (ox, v) in out_row.iter_mut().enumerate() {
                let ix = (ox * d.stride + kx) as isize - d.pad[2] as isize;
                *v = if ix >= 0 && (ix as usize) < d.w {
                    x_row[ix as usize]
                } else {
                    0.0
                };
            }
        }
    });
}

pub fn conv2d(x: &Tensor, w: &Tensor, opts: &ConvOpts, d: ConvDims) -> Tensor {
    let macs = d.n * d.c_out * d.h_out * d.w_out * d.c_in * d.kh * d.kw;
    let _t = Timer::new(Family::Conv, 2.0 * macs as f64);
    let xv = x.cpu_data().to_f32();
    let wv = elems(w); // [C_out, C_in*kh*kw], in its stored dtype
    let bias = opts.bias.map(|t| t.cpu_data().to_f32().into_owned());
    let resid = opts.residual.map(|t| t.cpu_data().to_f32().into_owned());
    let ck = d.c_in * d.kh * d.kw;
    let pixels = d.h_out * d.w_out;
    // Whole output rows per chunk, as many as the scratch budget allows.
    let chunk_rows = (COL_BUDGET / (ck * d.w_out).max(1)).clamp(1, d.h_out.max(1));
    let mut out = vec![0.0f32; d.n * d.c_out * pixels];
    let mut col = Vec::new();
    let mut tile = Vec::new();
    for n in 0..d.n {
        let xn = &xv[n * d.c_in * d.h * d.w..(n + 1) * d.c_in * d.h * d.w];
        let on = &mut out[n * d.c_out * pixels..(n + 1) * d.c_out * pixels];
        for oy0 in (0..d.h_out).step_by(chunk_rows) {
            let rows = chunk_rows.min(d.h_out - oy0);
            let (p0, p) = (oy0 * d.w_out, rows * d.w_out);
            col.resize(ck * p, 0.0);
            im2col(xn, &d, oy0, rows, &mut col);
            // tile [p, C_out] = col^T [p, ck] @ w^T [ck, C_out]: the large
            // operand on the side the GEMM parallelises over and packs per task.
            tile.clear();
            tile.resize(p * d.c_out, 0.0);
            gemm(
                View::transposed(Elems::F32(&col), p),
                View::transposed(wv, ck),
                &mut tile,
                p,
                d.c_out,
                ck,
            );
            on.par_chunks_mut(pixels).enumerate().for_each(|(co, plane)| {
                for (i, v) in plane[p0..p0 + p].iter_mut().enumerate() {
                    *v = tile[i * d.c_out + co];
                }
            });
        }
    }
    out.par_chunks_mut(pixels.max(1))
        .enumerate()
        .for_each(|(nc, plane)| {
            let b = bias.as_ref().map_or(0.0, |b| b[nc % d.c_out]);
            for (i, v) in plane.iter_mut().enumerate() {
                *v += b;
                if let Some(r) = &resid {
                    *v += r[nc * pixels + i];
                }
            }
        });
    Tensor::cpu_from_f32(out, &[d.n, d.c_out, d.h_out, d.w_out], x.dtype())
}
