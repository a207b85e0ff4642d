//! diffusers `Encoder` of `AutoencoderKL`: image -> posterior moments.

use super::mid::{VaeMidBlock, VAE_EPS};
use crate::models::config::VaeConfig;
use crate::models::layers::{Conv2d, GroupNorm};
use crate::models::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig};
use crate::weights::VarBuilder;
use crate::Tensor;

/// `DownEncoderBlock2D`: resnets, then a stride-2 downsampler (padded
/// `(0, 1, 0, 1)`) except at the last level.
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(vb: &VarBuilder, cfg: &VaeConfig) -> Encoder {
        let chans = &cfg.block_out_channels;
        let levels = chans.len();
        let g = cfg.norm_num_groups;
        let down_blocks = (0..levels)
            .map(|i| {
                let vb = vb.pp("down_blocks").pp(i);
                let c_out = chans[i];
                let c_in = if i == 0 { chans[0] } else { chans[i - 1] };
                DownEncoderBlock {
                    resnets: (0..cfg.layers_per_block)
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
                    downsampler: (i + 1 < levels)
                        .then(|| Downsample2D::new(&vb.pp("downsamplers").pp(0), c_out, 0)),
                }
            })
            .collect();
        let c_last = chans[levels - 1];
        Encoder {
            conv_in: Conv2d::new(&vb.pp("conv_in"), cfg.in_channels, chans[0], 3, 1, 1),
            down_blocks,
            mid_block: VaeMidBlock::new(&vb.pp("mid_block"), c_last, g, cfg.mid_block_add_attention),
            conv_norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), g, c_last, VAE_EPS),
            conv_out: Conv2d::new(&vb.pp("conv_out"), c_last, 2 * cfg.latent_channels, 3, 1, 1),
        }
    }

    /// `image [B, 3, H, W]` -> moments `[B, 2 Z, H/f, W/f]` (mean, then logvar).
    pub fn forward(&self, image: &Tensor) -> Tensor {
        let mut x = self.conv_in.forward(image); // [B, C0, H, W]
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, None);
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(&x);
            }
        }
        let x = self.mid_block.forward(&x); // [B, C_last, H/f, W/f]
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&x))
    }
}
