//! Single-file SD 1.x checkpoints (`.safetensors`, `.ckpt`): one file, three
//! models under three prefixes, LDM names mapped to diffusers names by
//! `ldm.rs`, SD 1.5 configs (no config travels with the file).
//!
//! A UNet key the map does not know keeps its LDM name, so the model's
//! `VarBuilder::finish` lists it as unexpected instead of it vanishing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::family::{detect_single_file, Family};
use super::ldm::{ema_name, unet_name, vae_name};
use super::open::{require_sd1, Checkpoint, Component, Layout};
use super::source::{open_weights, Renamed, Target};
use crate::models::config::{ClipConfig, UNetConfig, VaeConfig};
use crate::weights::TensorSource;
use crate::{Error, Result};

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const TEXT: &str = "cond_stage_model.transformer.";

pub fn open_file(path: &Path) -> Result<Checkpoint> {
    let src = open_weights(path)?;
    let detection = detect_single_file(&*src);
    require_sd1(path, &detection)?;
    let mut warnings = Vec::new();
    let file = path.display();
    // SD 1.5's UNet; an inpainting checkpoint's takes 9 input channels (the family says which).
    let unet_cfg = UNetConfig {
        in_channels: match detection.family {
            Family::Sd1Inpainting => 9,
            _ => UNetConfig::default().in_channels,
        },
        ..UNetConfig::default()
    };
    let vae_cfg = VaeConfig::default();
    let unet = unet_map(&*src, &unet_cfg, &mut warnings);
    let vae = vae_map(&*src, VAE, Some(&vae_cfg));
    let text = text_map(&*src, TEXT);
    for (map, what, prefix) in [
        (&unet, "UNet", UNET),
        (&vae, "VAE", VAE),
        (&text, "text encoder", TEXT),
    ] {
        if map.is_empty() {
            return Err(Error::bad_file(
                path,
                format!(
                    "no {what} weights ({prefix}*) in the file: sd-wgpu needs a full checkpoint \
                     (UNet, VAE and text encoder)"
                ),
            ));
        }
    }
    let component = |map, what: &str| -> Arc<dyn TensorSource> {
        Arc::new(Renamed::new(src.clone(), map, format!("{what} of {file}")))
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        layout: Layout::SingleFile,
        detection,
        unet: Component {
            config: unet_cfg,
            weights: component(unet, "UNet"),
            files: vec![path.to_path_buf()],
        },
        vae: Component {
            config: vae_cfg,
            weights: component(vae, "VAE"),
            files: vec![path.to_path_buf()],
        },
        text_encoder: Component {
            config: ClipConfig::default(),
            weights: component(text, "text encoder"),
            files: vec![path.to_path_buf()],
        },
        tokenizer_dir: None,
        scheduler_config: None,
        warnings,
    })
}

/// The UNet under diffusers names, reading the EMA copies when the file has
/// a complete set of them.
fn unet_map(
    src: &dyn TensorSource,
    cfg: &UNetConfig,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Target> {
    let names = src.names();
    let ldm: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix(UNET)).collect();
    let ema_count = names
        .iter()
        .filter(|n| n.starts_with("model_ema.diffusion_model"))
        .count();
    let ema_complete = ema_count > 0
        && ldm.iter().all(|n| {
            let (full, ema) = (src.info(&format!("{UNET}{n}")), src.info(&ema_name(n)));
            ema.is_some_and(|e| full.is_some_and(|f| f.shape == e.shape))
        });
    if ema_complete {
        warnings
            .push("using the EMA weights of the UNet (model_ema.*) rather than the training weights".into());
    } else if ema_count > 0 {
        warnings.push(format!(
            "the file has {ema_count} EMA tensors (model_ema.*) but not one matching each of the {} UNet \
             weights: using the training weights",
            ldm.len()
        ));
    } else {
        warnings.push(
            "no separate EMA weights (model_ema.*): using the UNet weights as stored (in an -emaonly file \
             they are the EMA weights)"
                .into(),
        );
    }
    let mut map = BTreeMap::new();
    for n in ldm {
        let stored = if ema_complete {
            ema_name(n)
        } else {
            format!("{UNET}{n}")
        };
        let target = Target { stored, shape: None };
        match unet_name(n, cfg) {
            Some(d) if !map.contains_key(&d) => map.insert(d, target),
            _ => map.insert(n.to_string(), target),
        };
    }
    map
}

/// The VAE weights under `prefix`, under diffusers names: LDM names mapped
/// with `cfg` (the attention's 1x1 convolutions seen as linears), or, with no
/// `cfg`, names that are diffusers names already. VAE training leftovers are
/// skipped, as A1111 does: `loss*` and `model_ema.decay` / `.num_updates`.
pub(super) fn vae_map(
    src: &dyn TensorSource,
    prefix: &str,
    cfg: Option<&VaeConfig>,
) -> BTreeMap<String, Target> {
    let mut map = BTreeMap::new();
    for name in src.names() {
        let Some(n) = name.strip_prefix(prefix) else {
            continue;
        };
        if n.starts_with("loss") || n == "model_ema.decay" || n == "model_ema.num_updates" {
            continue;
        }
        let shape = src.info(&name).map(|i| i.shape).unwrap_or_default();
        let (new, shape) = match cfg.and_then(|cfg| vae_name(n, cfg)) {
            Some(v) if !map.contains_key(&v.name) => {
                let squeezed = match shape[..] {
                    [o, i, 1, 1] if v.squeeze => Some(vec![o, i]),
                    _ => None,
                };
                (v.name, squeezed)
            }
            _ => (n.to_string(), None),
        };
        map.insert(
            new,
            Target {
                stored: name.clone(),
                shape,
            },
        );
    }
    map
}

/// Text-encoder weights under `prefix`, presented with the `text_model.`
/// prefix of transformers 4 whatever the file uses (transformers 5 saves
/// without it). Stored `position_ids` are dropped: positions are 0..76, and
/// merged files often hold a corrupted float copy.
pub fn text_map(src: &dyn TensorSource, prefix: &str) -> BTreeMap<String, Target> {
    let mut map = BTreeMap::new();
    for name in src.names() {
        let Some(n) = name.strip_prefix(prefix) else {
            continue;
        };
        if n.ends_with("position_ids") {
            continue;
        }
        let inner = ["embeddings.", "encoder.", "final_layer_norm."]
            .iter()
            .any(|p| n.starts_with(p));
        let new = if inner {
            format!("text_model.{n}")
        } else {
            n.to_string()
        };
        map.insert(
            new,
            Target {
                stored: name.clone(),
                shape: None,
            },
        );
    }
    map
}
