//! CPU twin of `shaders/conv2d.wgsl`: per image, `out [C_out, H_out*W_out] =
//! W [C_out, C_in*kh*kw] @ patches [C_in*kh*kw, H_out*W_out]` through the
//! GEMM, whose B panels are packed straight from the input (`patch_row`), so
//! the im2col matrix is never materialised, and whose result is already
//! NCHW. Weights are read in their stored dtype. Every output element is a
//! sum over (ci, ky, kx) of f32 products; the direct convolution is the
//! reference in `tests/cpu_kernels.rs`.

use rayon::prelude::*;

use super::gemm::{gemm, gemm_rows, Elems, View};
use super::matmul::elems;
use super::pool;
use super::profile::{Family, Timer};
use crate::ops::conv::{ConvDims, ConvOpts};
use crate::tensor::Tensor;

/// Row `p = (ci, ky, kx)` of one image's patch matrix, output pixels
/// `j0..j0 + dst.len()`: the input value under tap (ky, kx) of each output
/// pixel, 0 in the padding. `xn` is the image `[C_in, H, W]`.
fn patch_row(xn: &[f32], d: &ConvDims, p: usize, j0: usize, dst: &mut [f32]) {
    let (ci, ky, kx) = (p / (d.kh * d.kw), (p / d.kw) % d.kh, p % d.kw);
    let plane = &xn[ci * d.h * d.w..(ci + 1) * d.h * d.w];
    let mut t = 0;
    while t < dst.len() {
        // One run of output pixels along an output row.
        let (oy, ox) = ((j0 + t) / d.w_out, (j0 + t) % d.w_out);
        let run = (d.w_out - ox).min(dst.len() - t);
        let out = &mut dst[t..t + run];
        t += run;
        let iy = (oy * d.stride + ky) as isize - d.pad[0] as isize;
        if iy < 0 || iy as usize >= d.h {
            out.fill(0.0);
            continue;
        }
        let x_row = &plane[iy as usize * d.w..(iy as usize + 1) * d.w];
        for (u, v) in out.iter_mut().enumerate() {
            let ix = ((ox + u) * d.stride + kx) as isize - d.pad[2] as isize;
            *v = if ix >= 0 && (ix as usize) < d.w {
                x_row[ix as usize]
            } else {
                0.0
            };
        }
    }
}

pub fn conv2d(x: &Tensor, w: &Tensor, opts: &ConvOpts, d: ConvDims) -> Tensor {
    let macs = d.n * d.c_out * d.h_out * d.w_out * d.c_in * d.kh * d.kw;
    let _t = Timer::new(Family::Conv, 2.0 * macs as f64);
    let xv = x.cpu_data().to_f32();
    let wv = View::rows(elems(w), d.c_in * d.kh * d.kw); // [C_out, C_in*kh*kw]
    let bias = opts.bias.map(|t| t.cpu_data().to_f32());
    let resid = opts.residual.map(|t| t.cpu_data().to_f32());
    let ck = d.c_in * d.kh * d.kw;
    let pixels = d.h_out * d.w_out;
    let image = d.c_in * d.h * d.w;
    // A 1x1 conv without stride or padding: the input is the patch matrix.
    let pointwise = d.kh == 1 && d.kw == 1 && d.stride == 1 && d.pad == [0; 4];
    let mut out = pool::zeroed(d.n * d.c_out * pixels);
    for (xn, on) in xv
        .chunks_exact(image.max(1))
        .zip(out.chunks_exact_mut((d.c_out * pixels).max(1)))
    {
        if pointwise {
            gemm(wv, View::rows(Elems::F32(xn), pixels), on, d.c_out, pixels, ck);
        } else {
            let fill = |p: usize, j0: usize, dst: &mut [f32]| patch_row(xn, &d, p, j0, dst);
            gemm_rows(wv, &fill, on, d.c_out, pixels, ck);
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
