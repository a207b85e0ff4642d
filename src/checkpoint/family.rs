//! Which model a checkpoint holds, from its keys and shapes (single files) or
//! its configs (diffusers folders). Only SD 1.x runs; everything else is
//! named and refused, never guessed (docs/formats.md, "Family detection").

use std::fmt;

use crate::models::config::{ClipConfig, UNetConfig};
use crate::weights::TensorSource;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Sd1,
    Sd1Inpainting,
    Sd2,
    Sd2Inpainting,
    SdxlBase,
    SdxlRefiner,
    /// Anything else, described.
    Other(String),
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Family::Sd1 => "Stable Diffusion 1.x",
            Family::Sd1Inpainting => "Stable Diffusion 1.x inpainting",
            Family::Sd2 => "Stable Diffusion 2.x",
            Family::Sd2Inpainting => "Stable Diffusion 2.x inpainting",
            Family::SdxlBase => "Stable Diffusion XL base",
            Family::SdxlRefiner => "Stable Diffusion XL refiner",
            Family::Other(s) => s,
        })
    }
}

/// A detected family and the facts it was detected from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub family: Family,
    pub evidence: String,
}

/// Families from UNet input channels and cross-attention width.
fn from_unet(in_channels: usize, context: usize) -> Family {
    match (in_channels, context) {
        (4, 768) => Family::Sd1,
        (9, 768) => Family::Sd1Inpainting,
        (4, 1024) => Family::Sd2,
        (9, 1024) => Family::Sd2Inpainting,
        (8, _) => Family::Other("an InstructPix2Pix-like model (8 UNet input channels)".into()),
        (c, w) => Family::Other(format!(
            "an unknown UNet ({c} input channels, cross-attention width {w})"
        )),
    }
}

/// Detects the family of a single-file checkpoint from its (float) tensors.
pub fn detect_single_file(src: &dyn TensorSource) -> Detection {
    let names = src.names();
    let has = |p: &str| names.iter().any(|n| n.starts_with(p));
    let found = |family: Family, evidence: &str| Detection {
        family,
        evidence: evidence.to_string(),
    };
    if has("conditioner.embedders.1.") {
        return found(
            Family::SdxlBase,
            "keys conditioner.embedders.1.* (OpenCLIP-G text encoder)",
        );
    }
    if has("conditioner.embedders.") {
        return found(Family::SdxlRefiner, "keys conditioner.embedders.0.* only");
    }
    for (prefix, what) in [
        ("joint_blocks.", "SD3 (MMDiT joint_blocks)"),
        ("model.diffusion_model.joint_blocks.", "SD3 (MMDiT joint_blocks)"),
        ("double_blocks.", "Flux (double_blocks)"),
        ("model.diffusion_model.double_blocks.", "Flux (double_blocks)"),
        ("lora_unet_", "a LoRA (lora_unet_* keys), not a checkpoint"),
        ("lora_te_", "a LoRA (lora_te_* keys), not a checkpoint"),
        ("control_model.", "a ControlNet (control_model.* keys)"),
    ] {
        if has(prefix) {
            return found(Family::Other(what.into()), &format!("keys {prefix}*"));
        }
    }
    let conv_in = src.info("model.diffusion_model.input_blocks.0.0.weight");
    let Some(conv_in) = conv_in.filter(|i| i.shape.len() == 4) else {
        let what = if has("encoder.conv_in.") || has("decoder.conv_in.") {
            "a standalone VAE, not a full checkpoint"
        } else if has("down_blocks.") && has("conv_in.") {
            "diffusers-named UNet weights (one component of a diffusers folder), not a full checkpoint"
        } else if has("model.diffusion_model.") {
            "an unknown diffusion model (no input_blocks.0.0 convolution)"
        } else {
            "no Stable Diffusion UNet (no model.diffusion_model.* keys)"
        };
        let sample: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
        return found(
            Family::Other(what.into()),
            &format!("first keys: {}", sample.join(", ")),
        );
    };
    let context = names
        .iter()
        .filter(|n| n.starts_with("model.diffusion_model.") && n.ends_with("attn2.to_k.weight"))
        .find_map(|n| src.info(n))
        .and_then(|i| i.shape.last().copied());
    let in_channels = conv_in.shape[1];
    let open_clip = has("cond_stage_model.model.");
    let family = match context {
        Some(c) => from_unet(in_channels, c),
        None if open_clip => from_unet(in_channels, 1024),
        None => Family::Other(format!(
            "a UNet without cross-attention ({in_channels} input channels): an upscaler or unconditional model"
        )),
    };
    let text = if open_clip {
        "OpenCLIP text encoder (cond_stage_model.model.*)"
    } else if has("cond_stage_model.transformer.") {
        "CLIP text encoder (cond_stage_model.transformer.*)"
    } else {
        "no text encoder"
    };
    let context = context.map_or("no cross-attention".into(), |c| {
        format!("cross-attention width {c}")
    });
    found(
        family,
        &format!("UNet with {in_channels} input channels, {context}, {text}"),
    )
}

/// Detects the family of a diffusers folder from `model_index.json` (if any)
/// and the component configs.
pub fn detect_folder(
    class_name: Option<&str>,
    components: &[&str],
    unet: &UNetConfig,
    clip: Option<&ClipConfig>,
) -> Detection {
    let class = class_name.unwrap_or("no model_index.json");
    let has = |c: &str| components.contains(&c);
    if has("text_encoder_2") || class.contains("XL") {
        // The refiner has only the second (OpenCLIP-G) text encoder.
        let family = if has("text_encoder") || !has("text_encoder_2") {
            Family::SdxlBase
        } else {
            Family::SdxlRefiner
        };
        return Detection {
            family,
            evidence: format!("pipeline {class}, components {}", components.join(", ")),
        };
    }
    let mut family = from_unet(unet.in_channels, unet.cross_attention_dim);
    // A small model of SD 1.x architecture (test fixtures, demo models): a
    // StableDiffusionPipeline whose 4-channel UNet (an inpainting pipeline's
    // 9-channel UNet) attends to its own text encoder's width.
    let small = |class_name: &str, channels: usize| {
        class == class_name
            && unet.in_channels == channels
            && !matches!(unet.cross_attention_dim, 768 | 1024)
            && clip.is_some_and(|c| c.hidden_size == unet.cross_attention_dim)
    };
    let small_sd1 = if small("StableDiffusionPipeline", 4) {
        family = Family::Sd1;
        true
    } else if small("StableDiffusionInpaintPipeline", 9) {
        family = Family::Sd1Inpainting;
        true
    } else {
        false
    };
    if let Some(c) = clip.filter(|_| !small_sd1) {
        if matches!(family, Family::Sd1 | Family::Sd1Inpainting) && c.hidden_size != 768 {
            family = Family::Other(format!(
                "an unknown model (text encoder width {} with a 768-wide UNet)",
                c.hidden_size
            ));
        }
    }
    Detection {
        family,
        evidence: format!(
            "pipeline {class}, UNet in_channels {}, cross_attention_dim {}{}",
            unet.in_channels,
            unet.cross_attention_dim,
            if small_sd1 {
                " (a small SD 1.x-architecture model)"
            } else {
                ""
            }
        ),
    }
}
