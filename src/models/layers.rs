//! The PyTorch layers the networks are built from, each owning its weight
//! names: `Linear` (`weight`, `bias`), `Conv2d`, `GroupNorm`, `LayerNorm`.
//! Constructors take the module's [`VarBuilder`] (already scoped to the
//! layer, e.g. `vb.pp("conv1")`) and the sizes the config implies.

use crate::ops::ConvOpts;
use crate::weights::VarBuilder;
use crate::Tensor;

/// `y = x W^T + b` over the last dim.
pub struct Linear {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out]`.
    bias: Option<Tensor>,
}

impl Linear {
    /// `weight [out, in]` and `bias [out]`.
    pub fn with_bias(vb: &VarBuilder, inp: usize, out: usize) -> Linear {
        Linear {
            weight: vb.get("weight", &[out, inp]),
            bias: Some(vb.get("bias", &[out])),
        }
    }

    /// `weight [out, in]` only (the attention projections of the UNet).
    pub fn no_bias(vb: &VarBuilder, inp: usize, out: usize) -> Linear {
        Linear {
            weight: vb.get("weight", &[out, inp]),
            bias: None,
        }
    }

    /// `[.., in]` -> `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }

    /// `forward(x) + residual`, the add fused into the matmul epilogue.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        x.linear_residual(&self.weight, self.bias.as_ref(), Some(residual))
    }

    /// From loaded tensors: `weight [out, in]`, `bias [out]`.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }
}

/// 2-D convolution with bias, NCHW.
pub struct Conv2d {
    /// `[C_out, C_in, k, k]`.
    weight: Tensor,
    /// `[C_out]`.
    bias: Option<Tensor>,
    stride: usize,
    /// `[top, bottom, left, right]`.
    padding: [usize; 4],
}

impl Conv2d {
    /// A `k`x`k` convolution with bias, the same padding on every side.
    pub fn new(vb: &VarBuilder, c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> Conv2d {
        Conv2d::with_padding(vb, c_in, c_out, k, stride, [pad; 4])
    }

    pub fn with_padding(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: [usize; 4],
    ) -> Conv2d {
        Conv2d {
            weight: vb.get("weight", &[c_out, c_in, k, k]),
            bias: Some(vb.get("bias", &[c_out])),
            stride,
            padding,
        }
    }

    /// From loaded tensors: `weight [C_out, C_in, k, k]`, `bias [C_out]`.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: [usize; 4]) -> Conv2d {
        Conv2d {
            weight,
            bias,
            stride,
            padding,
        }
    }

    fn opts<'a>(&'a self, residual: Option<&'a Tensor>) -> ConvOpts<'a> {
        ConvOpts {
            stride: self.stride,
            padding: self.padding,
            bias: self.bias.as_ref(),
            residual,
        }
    }

    /// `[B, C_in, H, W]` -> `[B, C_out, H', W']`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, &self.opts(None))
    }

    /// `forward(x) + residual`, the add fused into the conv epilogue.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        x.conv2d(&self.weight, &self.opts(Some(residual)))
    }
}

/// GroupNorm with affine parameters `weight`, `bias` `[C]`.
pub struct GroupNorm {
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    pub fn new(vb: &VarBuilder, groups: usize, channels: usize, eps: f64) -> GroupNorm {
        GroupNorm {
            gamma: vb.get("weight", &[channels]),
            beta: vb.get("bias", &[channels]),
            groups,
            eps: eps as f32,
        }
    }

    /// `[B, C, ..]` -> same shape.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(self.groups, self.eps, &self.gamma, &self.beta)
    }

    /// `silu(forward(x))`, the SiLU fused into the norm kernel.
    pub fn forward_silu(&self, x: &Tensor) -> Tensor {
        x.group_norm_silu(self.groups, self.eps, &self.gamma, &self.beta)
    }
}

/// LayerNorm over the last dim with `weight`, `bias` `[D]`.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn new(vb: &VarBuilder, dim: usize, eps: f64) -> LayerNorm {
        LayerNorm {
            gamma: vb.get("weight", &[dim]),
            beta: vb.get("bias", &[dim]),
            eps: eps as f32,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(&self.gamma, &self.beta, self.eps)
    }
}
