//! 2-D convolution, NCHW, with fused bias and residual.

use super::Variant;
use crate::tensor::Tensor;
use crate::{cpu, gpu};

/// Options of [`Tensor::conv2d`]. Padding is `[top, bottom, left, right]`
/// so the VAE's asymmetric `(0, 1, 0, 1)` is expressible.
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts<'a> {
    pub stride: usize,
    pub padding: [usize; 4],
    /// `[C_out]`.
    pub bias: Option<&'a Tensor>,
    /// Same shape as the result, added last (resnet skip).
    pub residual: Option<&'a Tensor>,
}

impl<'a> ConvOpts<'a> {
    /// Stride `stride`, the same padding on every side.
    pub fn new(stride: usize, pad: usize, bias: Option<&'a Tensor>) -> Self {
        ConvOpts {
            stride,
            padding: [pad; 4],
            bias,
            residual: None,
        }
    }
}

/// Sizes of one conv2d call after shape checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvDims {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub h_out: usize,
    pub w_out: usize,
    pub stride: usize,
    /// `[top, bottom, left, right]`.
    pub pad: [usize; 4],
}

pub fn conv_dims(x: &[usize], w: &[usize], opts: &ConvOpts) -> ConvDims {
    assert_eq!(x.len(), 4, "conv2d: input must be [N, C, H, W], found {x:?}");
    assert_eq!(
        w.len(),
        4,
        "conv2d: weight must be [C_out, C_in, kh, kw], found {w:?}"
    );
    assert_eq!(x[1], w[1], "conv2d: input channels {x:?} vs weight {w:?}");
    assert!(opts.stride >= 1);
    let [pt, pb, pl, pr] = opts.padding;
    let (hp, wp) = (x[2] + pt + pb, x[3] + pl + pr);
    assert!(
        hp >= w[2] && wp >= w[3],
        "conv2d: kernel {w:?} larger than padded input {x:?}"
    );
    let d = ConvDims {
        n: x[0],
        c_in: x[1],
        h: x[2],
        w: x[3],
        c_out: w[0],
        kh: w[2],
        kw: w[3],
        h_out: (hp - w[2]) / opts.stride + 1,
        w_out: (wp - w[3]) / opts.stride + 1,
        stride: opts.stride,
        pad: opts.padding,
    };
    if let Some(b) = opts.bias {
        assert_eq!(b.shape(), &[d.c_out], "conv2d: bias shape");
    }
    if let Some(r) = opts.residual {
        assert_eq!(
            r.shape(),
            &[d.n, d.c_out, d.h_out, d.w_out],
            "conv2d: residual shape"
        );
    }
    d
}

impl Tensor {
    /// `x [N, C_in, H, W]` conv `w [C_out, C_in, kh, kw]` -> `[N, C_out, H_out, W_out]`.
    pub fn conv2d(&self, w: &Tensor, opts: &ConvOpts) -> Tensor {
        self.conv2d_variant(w, opts, Variant::Tuned)
    }

    pub fn conv2d_variant(&self, w: &Tensor, opts: &ConvOpts, variant: Variant) -> Tensor {
        let mut ops = vec![self, w];
        ops.extend(opts.bias);
        ops.extend(opts.residual);
        super::check_same("conv2d", &ops);
        let d = conv_dims(self.shape(), w.shape(), opts);
        if self.is_gpu() {
            gpu::ops::conv::conv2d(self, w, opts, d, variant)
        } else {
            cpu::conv::conv2d(self, w, opts, d)
        }
    }
}
