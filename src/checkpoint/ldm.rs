//! The one place that maps original (LDM / CompVis) single-file names to the
//! diffusers names our models ask for (docs/formats.md). Names here have
//! their file prefix already removed (`model.diffusion_model.`,
//! `first_stage_model.`, `cond_stage_model.transformer.`).
//!
//! UNet, with `P = layers_per_block + 1` slots per level:
//! | LDM | diffusers |
//! |---|---|
//! | `time_embed.0` / `.2` | `time_embedding.linear_1` / `linear_2` |
//! | `input_blocks.0.0` | `conv_in` |
//! | `input_blocks.(P*i+j+1).0` / `.1` | `down_blocks.i.resnets.j` / `attentions.j` |
//! | `input_blocks.(P*(i+1)).0.op` | `down_blocks.i.downsamplers.0.conv` |
//! | `middle_block.0` / `.1` / `.2` | `mid_block.resnets.0` / `attentions.0` / `resnets.1` |
//! | `output_blocks.(P*i+j).0` / `.1` | `up_blocks.i.resnets.j` / `attentions.j` |
//! | `output_blocks.(P*i+P-1).(1 or 2).conv` | `up_blocks.i.upsamplers.0.conv` |
//! | `out.0` / `out.2` | `conv_norm_out` / `conv_out` |
//!
//! VAE: decoder levels are numbered in reverse (`decoder.up.(n-1-i)` is
//! `decoder.up_blocks.i`), the mid-block attention's q/k/v/proj_out are 1x1
//! convolutions `[C, C, 1, 1]` in LDM and linears `[C, C]` in diffusers.
//!
//! Text encoder: already transformers names; we present them with the
//! `text_model.` prefix of transformers 4 (see `super::source`).

use crate::models::config::{UNetConfig, VaeConfig};

/// Resnet sub-layers of the UNet: LDM -> diffusers.
const UNET_RESNET: &[(&str, &str)] = &[
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];

/// Splits `"12.rest"` into `(12, "rest")`.
fn index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

fn unet_resnet(rest: &str) -> Option<String> {
    UNET_RESNET.iter().find_map(|(old, new)| {
        let leaf = rest.strip_prefix(old)?.strip_prefix('.')?;
        Some(format!("{new}.{leaf}"))
    })
}

/// The diffusers name of the LDM UNet parameter `name`, if it is one.
pub fn unet_name(name: &str, cfg: &UNetConfig) -> Option<String> {
    let levels = cfg.block_out_channels.len();
    let per = cfg.layers_per_block + 1;
    let fixed = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (old, new) in fixed {
        if let Some(leaf) = name.strip_prefix(old) {
            return Some(format!("{new}{leaf}"));
        }
    }
    if let Some(rest) = name.strip_prefix("input_blocks.") {
        let (n, rest) = index(rest)?;
        let (m, rest) = index(rest)?;
        let (i, j) = ((n.checked_sub(1)?) / per, (n - 1) % per);
        if i >= levels {
            return None;
        }
        return match (j < cfg.layers_per_block, m) {
            (true, 0) => Some(format!("down_blocks.{i}.resnets.{j}.{}", unet_resnet(rest)?)),
            (true, 1) => Some(format!("down_blocks.{i}.attentions.{j}.{rest}")),
            (false, 0) => Some(format!(
                "down_blocks.{i}.downsamplers.0.conv.{}",
                rest.strip_prefix("op.")?
            )),
            _ => None,
        };
    }
    if let Some(rest) = name.strip_prefix("middle_block.") {
        return match index(rest)? {
            (0, r) => Some(format!("mid_block.resnets.0.{}", unet_resnet(r)?)),
            (1, r) => Some(format!("mid_block.attentions.0.{r}")),
            (2, r) => Some(format!("mid_block.resnets.1.{}", unet_resnet(r)?)),
            _ => None,
        };
    }
    if let Some(rest) = name.strip_prefix("output_blocks.") {
        let (n, rest) = index(rest)?;
        let (m, rest) = index(rest)?;
        let (i, j) = (n / per, n % per);
        if i >= levels {
            return None;
        }
        // The up-sampler follows the resnet (slot 1) in attention-less levels
        // and the attention (slot 2) in the others.
        if let Some(leaf) = rest.strip_prefix("conv.") {
            return (j == per - 1 && (m == 1 || m == 2))
                .then(|| format!("up_blocks.{i}.upsamplers.0.conv.{leaf}"));
        }
        return match m {
            0 => Some(format!("up_blocks.{i}.resnets.{j}.{}", unet_resnet(rest)?)),
            1 => Some(format!("up_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    None
}

/// A VAE name in diffusers form; `squeeze` when the LDM tensor is a 1x1
/// convolution `[C, C, 1, 1]` that diffusers stores as a linear `[C, C]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeName {
    pub name: String,
    pub squeeze: bool,
}

/// The diffusers name of the LDM VAE parameter `name`, if it is one.
pub fn vae_name(name: &str, cfg: &VaeConfig) -> Option<VaeName> {
    let plain = |name: String| {
        Some(VaeName {
            name: name.replace("nin_shortcut", "conv_shortcut"),
            squeeze: false,
        })
    };
    if name.starts_with("quant_conv.") || name.starts_with("post_quant_conv.") {
        return plain(name.to_string());
    }
    let (part, rest) = name.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return None;
    }
    let levels = cfg.block_out_channels.len();
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return plain(name.to_string());
    }
    if let Some(leaf) = rest.strip_prefix("norm_out.") {
        return plain(format!("{part}.conv_norm_out.{leaf}"));
    }
    if let Some(r) = rest.strip_prefix("mid.") {
        if let Some(leaf) = r.strip_prefix("block_1.") {
            return plain(format!("{part}.mid_block.resnets.0.{leaf}"));
        }
        if let Some(leaf) = r.strip_prefix("block_2.") {
            return plain(format!("{part}.mid_block.resnets.1.{leaf}"));
        }
        let (layer, leaf) = r.strip_prefix("attn_1.")?.split_once('.')?;
        let new = match layer {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        return Some(VaeName {
            name: format!("{part}.mid_block.attentions.0.{new}.{leaf}"),
            squeeze: layer != "norm" && leaf == "weight",
        });
    }
    let (dir, blocks) = if part == "encoder" {
        ("down", "down_blocks")
    } else {
        ("up", "up_blocks")
    };
    let (k, r) = index(rest.strip_prefix(dir)?.strip_prefix('.')?)?;
    if k >= levels {
        return None;
    }
    let i = if part == "encoder" { k } else { levels - 1 - k };
    if let Some(r) = r.strip_prefix("block.") {
        let (j, leaf) = index(r)?;
        return plain(format!("{part}.{blocks}.{i}.resnets.{j}.{leaf}"));
    }
    let sampler = if part == "encoder" {
        "downsample.conv."
    } else {
        "upsample.conv."
    };
    let leaf = r.strip_prefix(sampler)?;
    let kind = if part == "encoder" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    plain(format!("{part}.{blocks}.{i}.{kind}.0.conv.{leaf}"))
}

/// The EMA copy of the UNet parameter `name` (LDM naming, no prefix):
/// LitEma registers `diffusion_model.<name>` with the dots removed.
pub fn ema_name(name: &str) -> String {
    format!("model_ema.diffusion_model{}", name.replace('.', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_irregular_unet_slots() {
        let c = UNetConfig::default();
        let m = |s: &str| unet_name(s, &c);
        assert_eq!(
            m("input_blocks.3.0.op.weight").as_deref(),
            Some("down_blocks.0.downsamplers.0.conv.weight")
        );
        assert_eq!(
            m("output_blocks.2.1.conv.bias").as_deref(),
            Some("up_blocks.0.upsamplers.0.conv.bias")
        );
        assert_eq!(
            m("output_blocks.5.2.conv.weight").as_deref(),
            Some("up_blocks.1.upsamplers.0.conv.weight")
        );
        assert_eq!(
            m("input_blocks.11.0.skip_connection.weight").as_deref(),
            Some("down_blocks.3.resnets.1.conv_shortcut.weight")
        );
        assert_eq!(m("input_blocks.13.0.in_layers.0.weight"), None);
        assert_eq!(m("label_emb.0.0.weight"), None);
        assert_eq!(
            ema_name("input_blocks.0.0.weight"),
            "model_ema.diffusion_modelinput_blocks00weight"
        );
    }

    #[test]
    fn maps_the_reversed_vae_decoder() {
        let c = VaeConfig::default();
        let v = vae_name("decoder.up.3.upsample.conv.weight", &c).unwrap();
        assert_eq!(v.name, "decoder.up_blocks.0.upsamplers.0.conv.weight");
        let v = vae_name("decoder.mid.attn_1.proj_out.weight", &c).unwrap();
        assert_eq!(v.name, "decoder.mid_block.attentions.0.to_out.0.weight");
        assert!(v.squeeze);
        assert!(!vae_name("encoder.mid.attn_1.q.bias", &c).unwrap().squeeze);
        assert_eq!(vae_name("decoder.up.4.block.0.conv1.weight", &c), None);
    }
}
