//! LoRA files for SD 1.x, merged into the weights at load time.
//!
//! ```no_run
//! use sd_wgpu::lora::LoraSpec;
//! use sd_wgpu::pipeline::{LoadOptions, Pipeline};
//! # fn main() -> sd_wgpu::Result<()> {
//! let opts = LoadOptions {
//!     loras: vec![LoraSpec::file("fox_style.safetensors", 0.8)],
//!     ..LoadOptions::default()
//! };
//! let pipe = Pipeline::load(std::path::Path::new("v1-5-pruned-emaonly.safetensors"), &opts)?;
//! # Ok(())
//! # }
//! ```
//!
//! Files: `keys` (the one key map: kohya and diffusers/PEFT names to our
//! weights), `file` (format detection, refusals, shape checks, scales),
//! `metadata` (PEFT's alpha in diffusers' metadata), `merge` (the f32
//! merge, as a tensor source the models load from), `hash` (A1111's LoRA
//! hash), `tags` (`<lora:NAME:W>` prompt tags and `--lora-dir`).

mod file;
mod hash;
pub mod keys;
mod merge;
mod metadata;
mod tags;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use file::{Bases, Format, Layer, LoraFile};
pub use keys::Part;
use merge::Applied;
pub use tags::{parse_tags, specs_for_prompt, strip_tags, LoraDir, Tag};

use crate::weights::TensorSource;
use crate::Result;

/// A LoRA to apply: which file, under which name, how strongly.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    /// What the infotext's `Lora hashes` records: a prompt tag's NAME, a
    /// file's name without extension (`:` and `,` removed, as A1111 does).
    pub name: String,
    /// Multiplier of the UNet layers' deltas (negative allowed).
    pub unet_weight: f32,
    /// Multiplier of the text encoder layers' deltas.
    pub text_encoder_weight: f32,
}

impl LoraSpec {
    /// `path` at `weight` for both networks, named after the file.
    pub fn file(path: impl Into<PathBuf>, weight: f32) -> LoraSpec {
        let path = path.into();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        LoraSpec {
            path,
            name,
            unet_weight: weight,
            text_encoder_weight: weight,
        }
    }
}

/// The base weights of the UNet and text encoder with a set of LoRAs
/// opened and matched to them: what the pipeline loads its networks from.
pub struct LoraSet {
    unet: Arc<dyn TensorSource>,
    text_encoder: Arc<dyn TensorSource>,
    specs: Vec<LoraSpec>,
    applied: Vec<Applied>,
}

impl LoraSet {
    /// Opens every file of `specs` and matches it to the base weights;
    /// nothing is merged until the networks read their weights.
    pub fn open(
        unet: Arc<dyn TensorSource>,
        text_encoder: Arc<dyn TensorSource>,
        specs: &[LoraSpec],
    ) -> Result<LoraSet> {
        let bases = Bases {
            unet: &*unet,
            text_encoder: &*text_encoder,
        };
        let applied = specs
            .iter()
            .map(|s| {
                Ok(Applied {
                    file: Arc::new(LoraFile::open(&s.path, bases)?),
                    unet_weight: s.unet_weight,
                    text_encoder_weight: s.text_encoder_weight,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LoraSet {
            unet,
            text_encoder,
            specs: specs.to_vec(),
            applied,
        })
    }

    /// The weights of `part` with the LoRAs merged on read.
    pub fn source(&self, part: Part) -> Arc<dyn TensorSource> {
        let base = match part {
            Part::Unet => self.unet.clone(),
            Part::TextEncoder => self.text_encoder.clone(),
        };
        merge::merged(base, part, &self.applied)
    }

    pub fn specs(&self) -> &[LoraSpec] {
        &self.specs
    }

    /// `(name, short hash)` per LoRA, for the infotext's `Lora hashes`.
    pub fn hashes(&self) -> Vec<(String, String)> {
        self.specs
            .iter()
            .zip(&self.applied)
            .map(|(s, a)| (s.name.replace([':', ','], ""), a.file.hash.clone()))
            .collect()
    }

    /// The same base weights with other LoRAs.
    pub fn with(&self, specs: &[LoraSpec]) -> Result<LoraSet> {
        LoraSet::open(self.unet.clone(), self.text_encoder.clone(), specs)
    }
}

/// Parses `FILE[:WEIGHT]` (`--lora`): the weight after the last `:` when it
/// is a number, so `C:\loras\x.safetensors` stays a path.
pub fn parse_lora_arg(arg: &str) -> std::result::Result<LoraSpec, String> {
    if let Some((path, w)) = arg.rsplit_once(':') {
        if let Ok(weight) = w.trim().parse::<f32>() {
            if !weight.is_finite() {
                return Err(format!("weight {w:?} is not a finite number"));
            }
            if path.is_empty() {
                return Err("expected FILE[:WEIGHT], found no file".into());
            }
            return Ok(LoraSpec::file(Path::new(path), weight));
        }
    }
    if arg.is_empty() {
        return Err("expected FILE[:WEIGHT], found nothing".into());
    }
    Ok(LoraSpec::file(Path::new(arg), 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_flag_values() {
        let s = parse_lora_arg("dir/fox.safetensors:-0.5").unwrap();
        assert_eq!(
            (s.path.as_path(), s.name.as_str(), s.unet_weight),
            (Path::new("dir/fox.safetensors"), "fox", -0.5)
        );
        assert_eq!(s.text_encoder_weight, -0.5);
        let s = parse_lora_arg(r"C:\loras\x.safetensors").unwrap();
        assert_eq!(
            (s.path.as_path(), s.unet_weight),
            (Path::new(r"C:\loras\x.safetensors"), 1.0)
        );
        assert!(parse_lora_arg("x.pt:inf").unwrap_err().contains("finite"));
        assert!(parse_lora_arg(":1").is_err());
    }
}
