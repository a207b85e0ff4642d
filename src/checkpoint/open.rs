//! The entry point the pipeline calls: [`open`] a diffusers folder or a
//! single-file checkpoint and get each model's weights (with diffusers names)
//! and config, the detected family, and what the user should know.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::family::{Detection, Family};
use super::source::dtype_counts;
use crate::models::config::{ClipConfig, UNetConfig, VaeConfig};
use crate::weights::TensorSource;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    DiffusersFolder,
    SingleFile,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Layout::DiffusersFolder => "diffusers folder",
            Layout::SingleFile => "single-file checkpoint",
        })
    }
}

/// One model of the checkpoint: its config and its weights under diffusers
/// names (the text encoder's with the `text_model.` prefix).
pub struct Component<C> {
    pub config: C,
    pub weights: Arc<dyn TensorSource>,
    /// The files the weights come from.
    pub files: Vec<PathBuf>,
}

impl<C> Component<C> {
    /// Parameters per stored dtype name (`"f16" -> 859520964`).
    pub fn dtype_counts(&self) -> BTreeMap<&'static str, usize> {
        dtype_counts(&*self.weights)
    }

    pub fn param_count(&self) -> usize {
        self.dtype_counts().values().sum()
    }
}

pub struct Checkpoint {
    pub path: PathBuf,
    pub layout: Layout,
    pub detection: Detection,
    pub unet: Component<UNetConfig>,
    pub vae: Component<VaeConfig>,
    pub text_encoder: Component<ClipConfig>,
    /// A diffusers folder's `tokenizer/` (vocab.json, merges.txt).
    pub tokenizer_dir: Option<PathBuf>,
    /// A diffusers folder's `scheduler/scheduler_config.json`, unparsed.
    pub scheduler_config: Option<serde_json::Value>,
    /// Things the user should know (EMA weights used, fp16 variant chosen...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// A diffusers weights variant to use (`"fp16"` picks
    /// `diffusion_pytorch_model.fp16.safetensors`).
    pub variant: Option<String>,
}

/// Opens `path` with default options.
pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
    open_with(path, &OpenOptions::default())
}

/// Opens a diffusers folder or a single-file checkpoint. Families other than
/// SD 1.x are refused with what was detected.
pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Checkpoint> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    if meta.is_dir() {
        super::diffusers::open_folder(path, opts)
    } else {
        if opts.variant.is_some() {
            return Err(Error::invalid(
                "variant",
                "weights variants apply to diffusers folders, not to single files",
            ));
        }
        super::single_file::open_file(path)
    }
}

/// Refuses every family but SD 1.x and SD 1.x inpainting, naming what was found.
pub(super) fn require_sd1(path: &Path, d: &Detection) -> Result<()> {
    if matches!(d.family, Family::Sd1 | Family::Sd1Inpainting) {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "{}: detected {} ({}): not supported yet, sd-wgpu runs Stable Diffusion 1.x only",
        path.display(),
        d.family,
        d.evidence
    )))
}
