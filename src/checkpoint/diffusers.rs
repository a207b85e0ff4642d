//! diffusers folders: `model_index.json`, `unet/`, `vae/`, `text_encoder/`
//! (each a `config.json` and weights), `tokenizer/`, `scheduler/`.
//!
//! Weights per component, first found wins: `<stem>.safetensors`, the sharded
//! `<stem>.safetensors.index.json`, the pickled `<stem>.bin`; with a variant
//! (`fp16`) asked for, `<stem>.fp16.safetensors` and friends instead. When
//! only a variant exists it is used, with a warning saying so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::family::detect_folder;
use super::open::{require_sd1, Checkpoint, Component, Layout, OpenOptions};
use super::single_file::text_map;
use super::source::{open_weights, Renamed, Sharded};
use crate::models::config::{read_config, ClipConfig, UNetConfig, VaeConfig};
use crate::weights::TensorSource;
use crate::{Error, Result};

/// Sub-folders that tell what a pipeline is made of.
const KNOWN: &[&str] = &[
    "unet",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "scheduler",
    "transformer",
];

pub fn open_folder(dir: &Path, opts: &OpenOptions) -> Result<Checkpoint> {
    let mut warnings = Vec::new();
    let index = dir.join("model_index.json");
    let class = if index.is_file() {
        let json = read_json(&index)?;
        Some(
            json.get("_class_name")
                .and_then(|c| c.as_str())
                .unwrap_or("unknown pipeline")
                .to_string(),
        )
    } else {
        warnings.push("no model_index.json: family detected from the component configs only".into());
        None
    };
    let components: Vec<&str> = KNOWN.iter().copied().filter(|c| dir.join(c).is_dir()).collect();
    if !components.contains(&"unet") {
        let msg = if components.contains(&"transformer") {
            "has a transformer/ folder instead of unet/: a diffusion-transformer model (SD3, Flux...), \
             not supported yet"
                .to_string()
        } else {
            format!(
                "not a diffusers Stable Diffusion folder: no unet/ (found: {})",
                if components.is_empty() {
                    "none of unet/, vae/, text_encoder/".to_string()
                } else {
                    components.join(", ")
                }
            )
        };
        return Err(Error::bad_file(dir, msg));
    }
    let unet_cfg_path = dir.join("unet/config.json");
    let unet_cfg: UNetConfig = read_config(&unet_cfg_path)?;
    let clip_cfg_path = dir.join("text_encoder/config.json");
    let clip_cfg: Option<ClipConfig> = if clip_cfg_path.is_file() {
        Some(read_config(&clip_cfg_path)?)
    } else {
        None
    };
    let detection = detect_folder(class.as_deref(), &components, &unet_cfg, clip_cfg.as_ref());
    require_sd1(dir, &detection)?;
    for c in ["vae", "text_encoder"] {
        if !components.contains(&c) {
            return Err(Error::bad_file(
                dir,
                format!("no {c}/ folder: the pipeline is incomplete"),
            ));
        }
    }
    let clip_cfg = clip_cfg.ok_or_else(|| Error::bad_file(&clip_cfg_path, "missing"))?;
    let vae_cfg_path = dir.join("vae/config.json");
    let vae_cfg: VaeConfig = read_config(&vae_cfg_path)?;
    unet_cfg.validate(&unet_cfg_path)?;
    vae_cfg.validate(&vae_cfg_path)?;
    clip_cfg.validate(&clip_cfg_path)?;

    let variant = opts.variant.as_deref();
    let (unet, unet_file) = component_weights(
        &dir.join("unet"),
        &["diffusion_pytorch_model"],
        variant,
        &mut warnings,
    )?;
    let (vae, vae_file) = component_weights(
        &dir.join("vae"),
        &["diffusion_pytorch_model"],
        variant,
        &mut warnings,
    )?;
    let (text, text_file) = component_weights(
        &dir.join("text_encoder"),
        &["model", "pytorch_model"],
        variant,
        &mut warnings,
    )?;
    let text: Arc<dyn TensorSource> =
        Arc::new(Renamed::new(text.clone(), text_map(&*text, ""), text.describe()));

    let tokenizer = dir.join("tokenizer");
    let scheduler = dir.join("scheduler/scheduler_config.json");
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        layout: Layout::DiffusersFolder,
        detection,
        unet: Component {
            config: unet_cfg,
            weights: unet,
            files: vec![unet_file],
        },
        vae: Component {
            config: vae_cfg,
            weights: vae,
            files: vec![vae_file],
        },
        text_encoder: Component {
            config: clip_cfg,
            weights: text,
            files: vec![text_file],
        },
        tokenizer_dir: tokenizer.is_dir().then_some(tokenizer),
        scheduler_config: if scheduler.is_file() {
            Some(read_json(&scheduler)?)
        } else {
            None
        },
        warnings,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::bad_file(path, format!("invalid JSON: {e}")))
}

/// Finds and opens the weights of one component folder.
pub(super) fn component_weights(
    dir: &Path,
    stems: &[&str],
    variant: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<(Arc<dyn TensorSource>, PathBuf)> {
    let component = dir
        .file_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names = |v: Option<&str>| -> Vec<String> {
        let dot = v.map(|v| format!(".{v}")).unwrap_or_default();
        stems
            .iter()
            .flat_map(|s| {
                [
                    format!("{s}{dot}.safetensors"),
                    format!("{s}.safetensors.index{dot}.json"),
                    format!("{s}{dot}.bin"),
                ]
            })
            .collect()
    };
    let first = |candidates: Vec<String>| candidates.into_iter().map(|c| dir.join(c)).find(|p| p.is_file());
    let chosen = match variant {
        Some(v) => match (first(names(Some(v))), first(names(None))) {
            (Some(p), _) => {
                warnings.push(format!("{component}: {v} variant {}", file_name(&p)));
                p
            }
            (None, Some(p)) => {
                warnings.push(format!("{component}: no {v} variant, using {}", file_name(&p)));
                p
            }
            (None, None) => {
                return Err(Error::bad_file(
                    dir,
                    format!(
                        "no {v:?} variant weights (looked for {}) and no full weights; files: {}",
                        names(Some(v)).join(", "),
                        listing(dir)
                    ),
                ))
            }
        },
        None => match first(names(None)) {
            Some(p) => p,
            None => {
                let found = only_variant(dir, stems).ok_or_else(|| {
                    Error::bad_file(
                        dir,
                        format!(
                            "no weights: expected {} (or a variant such as {}.fp16.safetensors); files: {}",
                            names(None).join(", "),
                            stems[0],
                            listing(dir)
                        ),
                    )
                })?;
                warnings.push(format!(
                    "{component}: no full-precision weights, using the variant {}",
                    file_name(&found)
                ));
                found
            }
        },
    };
    let name = file_name(&chosen);
    let source: Arc<dyn TensorSource> = if name.ends_with(".json") {
        Arc::new(Sharded::open(&chosen)?)
    } else {
        if name.ends_with(".bin") {
            warnings.push(format!(
                "{component}: weights from a torch pickle ({name}), read without executing it"
            ));
        }
        open_weights(&chosen)?
    };
    Ok((source, chosen))
}

/// The only variant file present (`<stem>.<variant>.safetensors` or `.bin`), if any.
fn only_variant(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = file_name(p);
            stems.iter().any(|s| {
                n.strip_prefix(s)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|r| {
                        r.split_once('.')
                            .is_some_and(|(v, ext)| !v.is_empty() && (ext == "safetensors" || ext == "bin"))
                    })
            })
        })
        .collect();
    // Safetensors before pickles, then by name.
    files.sort_by_key(|p| (file_name(p).ends_with(".bin"), file_name(p)));
    files.into_iter().next()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| file_name(&e.path()))).collect())
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
