//! The VAE's mid block (diffusers `UNetMidBlock2D` without time embedding):
//! resnet, single-head self-attention over all pixels, resnet.
//!
//! Letters: B batch, C channels, H/W spatial, N = H*W pixels.

use crate::models::layers::{Conv2d, GroupNorm, Linear};
use crate::models::resnet::{ResnetBlock2D, ResnetConfig};
use crate::ops::{attention, AttentionOpts};
use crate::weights::VarBuilder;
use crate::Tensor;

/// Every norm in the SD VAE uses eps 1e-6.
pub const VAE_EPS: f64 = 1e-6;

/// diffusers `Attention` with a group norm, one head over C channels,
/// q/k/v/out linear layers with biases, residual.
pub struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    /// `to_out.0`, run as a 1x1 conv in NCHW to fuse the residual.
    to_out: Conv2d,
}

impl VaeAttention {
    pub fn new(vb: &VarBuilder, c: usize, groups: usize) -> VaeAttention {
        let out = vb.pp("to_out").pp(0);
        VaeAttention {
            group_norm: GroupNorm::new(&vb.pp("group_norm"), groups, c, VAE_EPS),
            to_q: Linear::with_bias(&vb.pp("to_q"), c, c),
            to_k: Linear::with_bias(&vb.pp("to_k"), c, c),
            to_v: Linear::with_bias(&vb.pp("to_v"), c, c),
            to_out: Conv2d::from_parts(
                out.get("weight", &[c, c]).reshape(&[c, c, 1, 1]),
                Some(out.get("bias", &[c])),
                1,
                [0; 4],
            ),
        }
    }

    /// `x [B, C, H, W]` -> `x + attn(x)`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let t = self.group_norm.forward(x).reshape(&[b, c, h * w]).transpose(1, 2); // [B, N, C]
        let q = self.to_q.forward(&t);
        let k = self.to_k.forward(&t);
        let v = self.to_v.forward(&t);
        let o = attention(&q, &k, &v, &AttentionOpts::new(1, c)); // [B, N, C]
        let o = o.transpose(1, 2).reshape(&[b, c, h, w]); // [B, C, H, W]
        self.to_out.forward_residual(&o, x)
    }
}

pub struct VaeMidBlock {
    resnet0: ResnetBlock2D,
    /// Absent when the config says `mid_block_add_attention: false`.
    attention: Option<VaeAttention>,
    resnet1: ResnetBlock2D,
}

impl VaeMidBlock {
    pub fn new(vb: &VarBuilder, c: usize, groups: usize, add_attention: bool) -> VaeMidBlock {
        let rc = ResnetConfig {
            c_in: c,
            c_out: c,
            temb: None,
            groups,
            eps: VAE_EPS,
            output_scale: 1.0,
        };
        VaeMidBlock {
            resnet0: ResnetBlock2D::new(&vb.pp("resnets").pp(0), rc),
            attention: add_attention.then(|| VaeAttention::new(&vb.pp("attentions").pp(0), c, groups)),
            resnet1: ResnetBlock2D::new(&vb.pp("resnets").pp(1), rc),
        }
    }

    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = self.resnet0.forward(x, None);
        if let Some(attn) = &self.attention {
            x = attn.forward(&x);
        }
        self.resnet1.forward(&x, None)
    }
}
