//! diffusers `ResnetBlock2D` (UNet and VAE) and the `Downsample2D` /
//! `Upsample2D` layers between resolution levels.

use super::layers::{Conv2d, GroupNorm, Linear};
use crate::weights::VarBuilder;
use crate::Tensor;

/// Sizes of one resnet block.
#[derive(Debug, Clone, Copy)]
pub struct ResnetConfig {
    pub c_in: usize,
    pub c_out: usize,
    /// Width of the time embedding (UNet), `None` in the VAE.
    pub temb: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    /// The output is divided by this (`mid_block_scale_factor`; 1 elsewhere).
    pub output_scale: f64,
}

/// `x -> GN+SiLU -> conv1 (+ time proj) -> GN+SiLU -> conv2 + shortcut(x)`.
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// 1x1 conv when the channel count changes.
    conv_shortcut: Option<Conv2d>,
    output_scale: f32,
}

impl ResnetBlock2D {
    pub fn new(vb: &VarBuilder, c: ResnetConfig) -> ResnetBlock2D {
        ResnetBlock2D {
            norm1: GroupNorm::new(&vb.pp("norm1"), c.groups, c.c_in, c.eps),
            conv1: Conv2d::new(&vb.pp("conv1"), c.c_in, c.c_out, 3, 1, 1),
            time_emb_proj: c
                .temb
                .map(|t| Linear::with_bias(&vb.pp("time_emb_proj"), t, c.c_out)),
            norm2: GroupNorm::new(&vb.pp("norm2"), c.groups, c.c_out, c.eps),
            conv2: Conv2d::new(&vb.pp("conv2"), c.c_out, c.c_out, 3, 1, 1),
            conv_shortcut: (c.c_in != c.c_out)
                .then(|| Conv2d::new(&vb.pp("conv_shortcut"), c.c_in, c.c_out, 1, 1, 0)),
            output_scale: c.output_scale as f32,
        }
    }

    /// `x [B, C_in, H, W]`, `temb_act [B, T]` (the time embedding after SiLU,
    /// shared by all resnets) -> `[B, C_out, H, W]`.
    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Tensor {
        let h = self.norm1.forward_silu(x); // [B, C_in, H, W]
        let mut h = self.conv1.forward(&h); // [B, C_out, H, W]
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb_act) {
            let t = proj.forward(t); // [B, C_out]
            h = h.add(&t.reshape(&[t.dim(0), t.dim(1), 1, 1]));
        }
        let h = self.norm2.forward_silu(&h);
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x.clone(),
        };
        let out = self.conv2.forward_residual(&h, &skip);
        if self.output_scale == 1.0 {
            out
        } else {
            out.scale(1.0 / self.output_scale)
        }
    }
}

/// Stride-2 3x3 conv. diffusers pads `(0, 1, 0, 1)` when `padding` is 0
/// (the VAE encoder), else `padding` on every side (the UNet).
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn new(vb: &VarBuilder, channels: usize, padding: usize) -> Downsample2D {
        let pad = if padding == 0 { [0, 1, 0, 1] } else { [padding; 4] };
        Downsample2D {
            conv: Conv2d::with_padding(&vb.pp("conv"), channels, channels, 3, 2, pad),
        }
    }

    /// `[B, C, H, W]` -> `[B, C, ceil(H/2), ceil(W/2)]` (SD's padding 1 or (0,1,0,1)).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(x)
    }
}

/// Nearest upsampling then a 3x3 conv.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: &VarBuilder, channels: usize) -> Upsample2D {
        Upsample2D {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 1, 1),
        }
    }

    /// `[B, C, H, W]` -> `[B, C, out_h, out_w]`: twice the size, or the size of
    /// the skip connection the result is concatenated with (diffusers
    /// `upsample_size`, needed when a level had an odd size).
    pub fn forward(&self, x: &Tensor, out_h: usize, out_w: usize) -> Tensor {
        self.conv.forward(&x.upsample_nearest(out_h, out_w))
    }
}
