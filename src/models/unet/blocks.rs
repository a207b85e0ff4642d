//! The UNet's down, mid and up blocks. A `CrossAttnDownBlock2D` and a
//! `DownBlock2D` differ only in having spatial transformers after their
//! resnets, so one struct serves both (likewise for the up blocks). The
//! channel arithmetic follows diffusers `UNet2DConditionModel.__init__`.

use super::transformer::{Transformer2DConfig, Transformer2DModel};
use crate::models::config::UNetConfig;
use crate::models::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::weights::VarBuilder;
use crate::Tensor;

fn resnet(vb: &VarBuilder, cfg: &UNetConfig, c_in: usize, c_out: usize, output_scale: f64) -> ResnetBlock2D {
    let c = ResnetConfig {
        c_in,
        c_out,
        temb: Some(4 * cfg.block_out_channels[0]),
        groups: cfg.norm_num_groups,
        eps: cfg.norm_eps,
        output_scale,
    };
    ResnetBlock2D::new(vb, c)
}

/// The spatial transformer of level `level` (0 = highest resolution).
fn transformer(vb: &VarBuilder, cfg: &UNetConfig, channels: usize, level: usize) -> Transformer2DModel {
    let c = Transformer2DConfig {
        channels,
        heads: cfg.heads(level),
        layers: cfg.transformer_layers_per_block.at(level),
        groups: cfg.norm_num_groups,
        context_dim: cfg.cross_attention_dim,
        linear_projection: cfg.use_linear_projection,
    };
    Transformer2DModel::new(vb, c)
}

/// Resnets (each followed by a transformer in a cross-attention block), then
/// a stride-2 downsampler except at the lowest resolution.
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    /// Empty for `DownBlock2D`.
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(vb: &VarBuilder, cfg: &UNetConfig, level: usize) -> DownBlock {
        let chans = &cfg.block_out_channels;
        let c_out = chans[level];
        let c_in = if level == 0 { chans[0] } else { chans[level - 1] };
        let cross = cfg.down_block_types[level] == "CrossAttnDownBlock2D";
        let n = cfg.layers_per_block;
        DownBlock {
            resnets: (0..n)
                .map(|j| {
                    resnet(
                        &vb.pp("resnets").pp(j),
                        cfg,
                        if j == 0 { c_in } else { c_out },
                        c_out,
                        1.0,
                    )
                })
                .collect(),
            attentions: if cross {
                (0..n)
                    .map(|j| transformer(&vb.pp("attentions").pp(j), cfg, c_out, level))
                    .collect()
            } else {
                Vec::new()
            },
            downsampler: (level + 1 < chans.len())
                .then(|| Downsample2D::new(&vb.pp("downsamplers").pp(0), c_out, cfg.downsample_padding)),
        }
    }

    /// `x [B, C_in, H, W]` -> `[B, C_out, H', W']`; pushes every intermediate
    /// result onto `skips` for the up blocks.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, skips: &mut Vec<Tensor>) -> Tensor {
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, context);
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs.
pub struct MidBlock {
    first: ResnetBlock2D,
    /// (transformer, resnet) pairs; one pair in SD.
    rest: Vec<(Transformer2DModel, ResnetBlock2D)>,
}

impl MidBlock {
    pub fn new(vb: &VarBuilder, cfg: &UNetConfig) -> MidBlock {
        let last = cfg.block_out_channels.len() - 1;
        let c = cfg.block_out_channels[last];
        let scale = cfg.mid_block_scale_factor;
        MidBlock {
            first: resnet(&vb.pp("resnets").pp(0), cfg, c, c, scale),
            rest: vec![(
                transformer(&vb.pp("attentions").pp(0), cfg, c, last),
                resnet(&vb.pp("resnets").pp(1), cfg, c, c, scale),
            )],
        }
    }

    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Tensor {
        let mut x = self.first.forward(x, Some(temb));
        for (attn, resnet) in &self.rest {
            x = resnet.forward(&attn.forward(&x, context), Some(temb));
        }
        x
    }
}

/// Resnets on the concatenation of the running state and a skip connection
/// (each followed by a transformer in a cross-attention block), then an
/// upsampler except at the highest resolution.
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    /// Empty for `UpBlock2D`.
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Up block `i` works at level `levels - 1 - i`.
    pub fn new(vb: &VarBuilder, cfg: &UNetConfig, i: usize) -> UpBlock {
        let chans = &cfg.block_out_channels;
        let levels = chans.len();
        let level = levels - 1 - i;
        let c_out = chans[level];
        // The previous up block's width (the mid block's before the first).
        let c_prev = chans[(level + 1).min(levels - 1)];
        // Width of the down-path level whose skips arrive here last.
        let c_skip_in = chans[level.saturating_sub(1)];
        let cross = cfg.up_block_types[i] == "CrossAttnUpBlock2D";
        let n = cfg.layers_per_block + 1;
        UpBlock {
            resnets: (0..n)
                .map(|j| {
                    let c_res = if j == 0 { c_prev } else { c_out };
                    let c_skip = if j == n - 1 { c_skip_in } else { c_out };
                    resnet(&vb.pp("resnets").pp(j), cfg, c_res + c_skip, c_out, 1.0)
                })
                .collect(),
            attentions: if cross {
                (0..n)
                    .map(|j| transformer(&vb.pp("attentions").pp(j), cfg, c_out, level))
                    .collect()
            } else {
                Vec::new()
            },
            upsampler: (level > 0).then(|| Upsample2D::new(&vb.pp("upsamplers").pp(0), c_out)),
        }
    }

    /// `x [B, C_prev, H, W]` -> `[B, C_out, H', W']`, popping its skips from
    /// `skips`. The upsampler scales to the size of the next skip (the one the
    /// next block concatenates first), so odd sizes on the way down round-trip.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, skips: &mut Vec<Tensor>) -> Tensor {
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip per up-block resnet"); // [B, C_skip, H, W]
            x = resnet.forward(&Tensor::cat(&[&x, &skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, context);
            }
        }
        if let Some(up) = &self.upsampler {
            let next = skips.last().expect("a skip below the top level");
            x = up.forward(&x, next.dim(2), next.dim(3));
        }
        x
    }
}
