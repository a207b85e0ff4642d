//! diffusers `Decoder` of `AutoencoderKL`: latents -> image. Up blocks run in
//! diffusers order (lowest resolution first).

use super::mid::{VaeMidBlock, VAE_EPS};
use crate::models::config::VaeConfig;
use crate::models::layers::{Conv2d, GroupNorm};
use crate::models::resnet::{ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::weights::VarBuilder;
use crate::Tensor;

/// `UpDecoderBlock2D`: `layers_per_block + 1` resnets, then a 2x upsampler
/// except at the last (full-resolution) block.
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

pub struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(vb: &VarBuilder, cfg: &VaeConfig) -> Decoder {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let levels = rev.len();
        let g = cfg.norm_num_groups;
        let up_blocks = (0..levels)
            .map(|i| {
                let vb = vb.pp("up_blocks").pp(i);
                let c_out = rev[i];
                let c_in = if i == 0 { rev[0] } else { rev[i - 1] };
                UpDecoderBlock {
                    resnets: (0..cfg.layers_per_block + 1)
                        .map(|j| {
                            let rc = ResnetConfig {
                                c_in: if j == 0 { c_in } else { c_out },
                                c_out,
                                temb: None,
                                groups: g,
                                eps: VAE_EPS,
                                output_scale: 1.0,
                            };
                            ResnetBlock2D::new(&vb.pp("resnets").pp(j), rc)
                        })
                        .collect(),
                    upsampler: (i + 1 < levels).then(|| Upsample2D::new(&vb.pp("upsamplers").pp(0), c_out)),
                }
            })
            .collect();
        Decoder {
            conv_in: Conv2d::new(&vb.pp("conv_in"), cfg.latent_channels, rev[0], 3, 1, 1),
            mid_block: VaeMidBlock::new(&vb.pp("mid_block"), rev[0], g, cfg.mid_block_add_attention),
            up_blocks,
            conv_norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), g, rev[levels - 1], VAE_EPS),
            conv_out: Conv2d::new(&vb.pp("conv_out"), rev[levels - 1], cfg.out_channels, 3, 1, 1),
        }
    }

    /// Latents (after `post_quant_conv`) `[B, Z, h, w]` -> the mid block's
    /// output `[B, C_last, h, w]`.
    pub fn forward_mid(&self, z: &Tensor) -> Tensor {
        self.mid_block.forward(&self.conv_in.forward(z))
    }

    /// The mid block's output -> image `[B, 3, h*f, w*f]`.
    pub fn forward_up(&self, x: &Tensor) -> Tensor {
        let mut x = x.clone();
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, None);
            }
            if let Some(up) = &block.upsampler {
                x = up.forward(&x, 2 * x.dim(2), 2 * x.dim(3));
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&x))
    }
}
