//! CPU twin of `shaders/conv2d.wgsl`: im2col on pixel chunks, then GEMM.

use rayon::prelude::*;

use super::matmul::gemm;
use crate::ops::conv::{ConvDims, ConvOpts};
use crate::tensor::Tensor;

/// Floats of im2col scratch per chunk (32 MiB).
const COL_BUDGET: usize = 8 << 20;

pub fn conv2d(x: &Tensor, w: &Tensor, opts: &ConvOpts, d: ConvDims) -> Tensor {
    let xv = x.cpu_data().to_f32();
    let wv = w.cpu_data().to_f32(); // [C_out, C_in*kh*kw]
    let bias = opts.bias.map(|t| t.cpu_data().to_f32().into_owned());
    let resid = opts.residual.map(|t| t.cpu_data().to_f32().into_owned());
    let ck = d.c_in * d.kh * d.kw;
    let pixels = d.h_out * d.w_out;
    let chunk = (COL_BUDGET / ck).clamp(64, pixels.max(64));
    let mut out = vec![0.0f32; d.n * d.c_out * pixels];
    for n in 0..d.n {
        let xn = &xv[n * d.c_in * d.h * d.w..(n + 1) * d.c_in * d.h * d.w];
        let on = &mut out[n * d.c_out * pixels..(n + 1) * d.c_out * pixels];
        for p0 in (0..pixels).step_by(chunk) {
            let p = chunk.min(pixels - p0);
            // col [ck, p]: row (ci, ky, kx), column = output pixel.
            let mut col = vec![0.0f32; ck * p];
            col.par_chunks_mut(p).enumerate().for_each(|(r, row)| {
                let (ci, ky, kx) = (r / (d.kh * d.kw), (r / d.kw) % d.kh, r % d.kw);
                for (j, v) in row.iter_mut().enumerate() {
                    let (oy, ox) = ((p0 + j) / d.w_out, (p0 + j) % d.w_out);
                    let iy = (oy * d.stride + ky) as isize - d.pad[0] as isize;
                    let ix = (ox * d.stride + kx) as isize - d.pad[2] as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w {
                        *v = xn[ci * d.h * d.w + iy as usize * d.w + ix as usize];
                    }
                }
            });
            let mut tile = vec![0.0f32; d.c_out * p];
            gemm(&wv, &col, &mut tile, d.c_out, p, ck);
            for co in 0..d.c_out {
                on[co * pixels + p0..co * pixels + p0 + p].copy_from_slice(&tile[co * p..(co + 1) * p]);
            }
        }
    }
    out.par_chunks_mut(pixels).enumerate().for_each(|(nc, plane)| {
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
