//! A VAE that replaces the checkpoint's own (`--vae PATH`), in the forms users
//! have it:
//! - a diffusers `vae/` folder (`config.json` + weights), or a whole diffusers
//!   pipeline folder, whose `vae/` is taken;
//! - a standalone weights file (`.safetensors`, `.ckpt`, `.pt`) with the
//!   original LDM names (`encoder.down.0.block.0...`, as
//!   `vae-ft-mse-840000-ema-pruned`), sometimes under `first_stage_model.`,
//!   or with diffusers names;
//! - a full single-file checkpoint, whose `first_stage_model.*` is taken.
//!
//! A file carries no config: it is read with the model's VAE architecture and
//! scaling factor, and every weight shape is checked against them. What does
//! not fit the model is refused before anything is read ([`VaeOverride::fit`]):
//! other latent channels, another scaling factor (an SDXL VAE folder or
//! checkpoint), another pixels-per-latent factor, mismatched shapes. As A1111
//! does, `loss*` tensors and `model_ema.decay` / `model_ema.num_updates` of
//! VAE training checkpoints are ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diffusers::component_weights;
use super::family::{detect_single_file, Family};
use super::single_file::vae_map;
use super::source::{open_weights, Renamed};
use crate::models::config::{read_config, VaeConfig};
use crate::models::Vae;
use crate::weights::TensorSource;
use crate::{Error, Result};

/// The scaling factor of the SDXL VAE (SD 1.x and 2.x use 0.18215).
const SDXL_SCALING_FACTOR: f64 = 0.13025;
const VAE_PREFIX: &str = "first_stage_model.";
const UNET_PREFIX: &str = "model.diffusion_model.";

/// What the replacement VAE was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeLayout {
    /// A diffusers `vae/` folder, or a pipeline folder's `vae/`.
    DiffusersFolder,
    /// A standalone VAE weights file.
    StandaloneFile,
    /// The `first_stage_model.*` part of a full single-file checkpoint.
    CheckpointFile,
}

impl std::fmt::Display for VaeLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            VaeLayout::DiffusersFolder => "diffusers VAE folder",
            VaeLayout::StandaloneFile => "standalone VAE file",
            VaeLayout::CheckpointFile => "full checkpoint's VAE",
        })
    }
}

/// A replacement VAE, opened; [`VaeOverride::fit`] checks it against a model.
pub struct VaeOverride {
    /// The path the user gave.
    pub path: PathBuf,
    pub layout: VaeLayout,
    pub config: VaeConfig,
    /// Where `config` comes from, for messages: the folder's config.json, or
    /// the model's VAE config (a file carries none).
    pub config_origin: String,
    /// Weights under diffusers names.
    pub weights: Arc<dyn TensorSource>,
    /// The weights file: its SHA-256 is A1111's `VAE hash`.
    pub file: PathBuf,
    /// A1111's `VAE` infotext value: the file name (with extension), or the
    /// folder's name.
    pub name: String,
    /// What the user should know (the variant used, a pickle read...).
    pub notes: Vec<String>,
}

/// Opens the VAE at `path`; `model` is the model's VAE config, the
/// architecture a weights file (which has no config) is read with.
pub fn open_vae(path: &Path, model: &VaeConfig, variant: Option<&str>) -> Result<VaeOverride> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("--vae {}", path.display()), e))?;
    if meta.is_dir() {
        open_folder(path, variant)
    } else {
        open_file(path, model)
    }
}

fn open_folder(path: &Path, variant: Option<&str>) -> Result<VaeOverride> {
    let dir = if path.join("config.json").is_file() {
        path.to_path_buf()
    } else if path.join("vae/config.json").is_file() {
        path.join("vae")
    } else {
        return Err(Error::bad_file(
            path,
            "not a VAE folder: expected config.json and diffusion_pytorch_model.safetensors (a \
             diffusers vae/ folder), or a diffusers pipeline folder with vae/",
        ));
    };
    let config_path = dir.join("config.json");
    let json: serde_json::Value = read_config(&config_path)?;
    let class = json
        .get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("AutoencoderKL");
    if class != "AutoencoderKL" {
        return Err(Error::Unsupported(format!(
            "{}: a {class}, not a VAE of Stable Diffusion's kind (AutoencoderKL)",
            config_path.display()
        )));
    }
    let config: VaeConfig = read_config(&config_path)?;
    config.validate(&config_path)?;
    let mut notes = Vec::new();
    let (weights, file) = component_weights(&dir, &["diffusion_pytorch_model"], variant, &mut notes)?;
    // A folder named `vae` says little: name it with its parent (`my-model/vae`).
    let name = match (file_name(&dir), dir.parent().map(file_name)) {
        (n, Some(parent)) if n == "vae" && !parent.is_empty() => format!("{parent}/vae"),
        (n, _) => n,
    };
    Ok(VaeOverride {
        path: path.to_path_buf(),
        layout: VaeLayout::DiffusersFolder,
        config,
        config_origin: format!("its {}", config_path.display()),
        weights,
        file,
        name,
        notes,
    })
}

fn open_file(path: &Path, model: &VaeConfig) -> Result<VaeOverride> {
    let src = open_weights(path)?;
    let names = src.names();
    let has = |p: &str| names.iter().any(|n| n.starts_with(p));
    let mut config = model.clone();
    let mut config_origin = "the model's VAE config (a weights file carries none)".to_string();
    let (layout, prefix) = if has(UNET_PREFIX) {
        let detection = detect_single_file(&*src);
        // SD 1.x and 2.x share the VAE and its 0.18215; SDXL's is scaled otherwise.
        if matches!(detection.family, Family::SdxlBase | Family::SdxlRefiner) {
            config.scaling_factor = SDXL_SCALING_FACTOR;
            config_origin = format!("SDXL's scaling factor (a {} checkpoint)", detection.family);
        }
        (VaeLayout::CheckpointFile, VAE_PREFIX)
    } else if has(VAE_PREFIX) {
        (VaeLayout::StandaloneFile, VAE_PREFIX)
    } else {
        (VaeLayout::StandaloneFile, "")
    };
    let vae_keys = |p: &str| {
        names.iter().any(|n| {
            n.strip_prefix(prefix).is_some_and(|n| {
                n.starts_with(&format!("encoder.{p}")) || n.starts_with(&format!("decoder.{p}"))
            })
        })
    };
    if !vae_keys("") {
        let what = if has("lora_") || names.iter().any(|n| n.contains(".lora_")) {
            "a LoRA, not a VAE".to_string()
        } else if layout == VaeLayout::CheckpointFile {
            "a checkpoint without VAE weights (no first_stage_model.encoder.* / decoder.*)".to_string()
        } else {
            let sample: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            format!(
                "no VAE weights: expected encoder.* and decoder.* (a standalone VAE) or \
                 first_stage_model.* (a full checkpoint); first keys: {}",
                sample.join(", ")
            )
        };
        return Err(Error::bad_file(path, what));
    }
    let diffusers_names = vae_keys("down_blocks.") || vae_keys("up_blocks.");
    let map = vae_map(&*src, prefix, (!diffusers_names).then_some(&config));
    let weights = Arc::new(Renamed::new(src, map, format!("VAE of {}", path.display())));
    Ok(VaeOverride {
        path: path.to_path_buf(),
        layout,
        config,
        config_origin,
        weights,
        file: path.to_path_buf(),
        name: file_name(path),
        notes: Vec::new(),
    })
}

impl VaeOverride {
    /// Refuses a VAE that does not fit a model whose own VAE is `model`:
    /// latent channels, scaling factor and pixels per latent must agree, and
    /// every weight must have the shape the VAE's config implies (names and
    /// shapes only; nothing is read).
    pub fn fit(&self, model: &VaeConfig, model_path: &Path) -> Result<()> {
        let c = &self.config;
        let what = format!("{} ({})", self.path.display(), self.layout);
        let refuse = |fact: &str, theirs: String, ours: String| {
            Err(Error::Unsupported(format!(
                "--vae {what}: {fact} {theirs} (config: {}), but the model {} needs {ours}",
                self.config_origin,
                model_path.display()
            )))
        };
        let facts = [
            ("latent channels", c.latent_channels, model.latent_channels),
            ("pixels per latent", c.scale_factor(), model.scale_factor()),
            ("image channels in", c.in_channels, model.in_channels),
            ("image channels out", c.out_channels, model.out_channels),
        ];
        for (fact, theirs, ours) in facts {
            if theirs != ours {
                return refuse(
                    &format!("the VAE has {fact}:"),
                    theirs.to_string(),
                    ours.to_string(),
                );
            }
        }
        if (c.scaling_factor - model.scaling_factor).abs() > 1e-6 * model.scaling_factor.abs() {
            return refuse(
                "the VAE's latents are scaled by scaling_factor",
                c.scaling_factor.to_string(),
                format!(
                    "{} (SDXL's VAE uses 0.13025, SD 1.x and 2.x 0.18215)",
                    model.scaling_factor
                ),
            );
        }
        Vae::check(self.weights.clone(), c).map_err(|e| {
            Error::Weights(format!(
                "--vae {what}: {e}\n  (expected shapes follow from {}: block_out_channels {:?}, \
                 layers_per_block {})",
                self.config_origin, c.block_out_channels, c.layers_per_block
            ))
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl super::Checkpoint {
    /// Replaces the checkpoint's VAE by `vae` once it [fits](VaeOverride::fit).
    pub fn replace_vae(&mut self, vae: VaeOverride) -> Result<()> {
        vae.fit(&self.vae.config, &self.path)?;
        self.warnings.extend(vae.notes.iter().cloned());
        self.warnings.push(format!(
            "VAE replaced by {} ({}, {} tensors)",
            vae.path.display(),
            vae.layout,
            vae.weights.names().len()
        ));
        self.vae = super::Component {
            config: vae.config,
            weights: vae.weights,
            files: vec![vae.file],
        };
        Ok(())
    }
}
