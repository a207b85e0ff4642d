//! [`Pipeline::load`]: a checkpoint opened once, its three networks on the
//! device, ready for any number of generations.
//!
//! - Precision: the UNet and text encoder in f16 on a GPU and f32 on the CPU
//!   unless [`LoadOptions::dtype`] says otherwise; the VAE always in f32 (the
//!   SD VAE overflows f16, docs/engine.md "Precision").
//! - Tokenizer: the checkpoint's `tokenizer/` folder when it has one, else the
//!   CLIP vocabulary built into the binary (the same files).
//! - Checks first: [`check`] compares every size and weight shape before a
//!   weight is read or allocated.
//! - Scheduler: the checkpoint's `scheduler_config.json` (SD 1.x defaults
//!   without one, e.g. single files); its `_class_name` picks the default
//!   sampler, as diffusers does: PNDM for SD 1.5 (and, with a warning, for a
//!   class sd-wgpu does not have).
//! - Model hash: A1111's "AutoV2" hash (the first 10 hex digits of the
//!   SHA-256 of the weights file: the single file, or a folder's UNet
//!   weights), computed on a background thread while the weights load; the
//!   same for a replacement VAE ([`LoadOptions::vae`]), A1111's `VAE hash`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::check::check;
use super::embedded::{default_cache_dir, demo_model_dir, DEMO_MODEL_NAME};
use super::request::hex_prefix;
use crate::checkpoint::{open_vae, open_with, Layout, OpenOptions};
use crate::lora::{LoraSet, LoraSpec, Part};
use crate::models::{ClipTextModel, Tiling, UNet, Vae};
use crate::schedulers::{SamplerKind, SchedulerConfig};
use crate::text::ClipTokenizer;
use crate::{DType, Device, Result};

/// Where a model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A diffusers folder or a single `.safetensors` / `.ckpt` file.
    Path(PathBuf),
    /// The demo model built into the binary, written out once as a diffusers
    /// folder under `cache_dir` (see [`super::embedded`]) and loaded from there.
    Demo { cache_dir: PathBuf },
}

impl ModelSource {
    /// The built-in demo model, cached in [`default_cache_dir`].
    pub fn demo() -> ModelSource {
        ModelSource::Demo {
            cache_dir: default_cache_dir(),
        }
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> Self {
        ModelSource::Path(p)
    }
}

impl From<&Path> for ModelSource {
    fn from(p: &Path) -> Self {
        ModelSource::Path(p.to_path_buf())
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Storage type of the UNet and text encoder; `None`: f16 on a GPU, f32 on the CPU.
    pub dtype: Option<DType>,
    pub vae_tiling: Tiling,
    /// A diffusers weights variant (`fp16`).
    pub variant: Option<String>,
    /// A VAE replacing the checkpoint's: a diffusers `vae/` folder, a
    /// standalone VAE file or a full checkpoint (`checkpoint::open_vae`).
    pub vae: Option<PathBuf>,
    /// LoRAs merged into the UNet and text encoder as they load (see [`crate::lora`]).
    pub loras: Vec<LoraSpec>,
}

impl Default for LoadOptions {
    /// The CPU backend, default precision, automatic VAE tiling.
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: None,
            vae_tiling: Tiling::Auto,
            variant: None,
            vae: None,
            loras: Vec::new(),
        }
    }
}

/// A loaded model. Holds no global state; generations borrow it immutably.
pub struct Pipeline {
    pub(super) text_encoder: ClipTextModel,
    pub(super) unet: UNet,
    pub(super) vae: Vae,
    pub(super) tokenizer: ClipTokenizer,
    pub(super) scheduler: SchedulerConfig,
    pub(super) default_sampler: SamplerKind,
    pub(super) vae_tiling: Tiling,
    /// The base UNet / text encoder weights and the LoRAs merged into them.
    pub(super) loras: LoraSet,
    model_name: String,
    device: Device,
    hash: ModelHash,
    /// The replacement VAE's name and hash (A1111's `VAE` / `VAE hash`).
    vae_override: Option<(String, ModelHash)>,
    notes: Vec<String>,
    warnings: Vec<String>,
}

impl Pipeline {
    pub fn load(source: impl Into<ModelSource>, opts: &LoadOptions) -> Result<Pipeline> {
        let (path, display_name) = match source.into() {
            ModelSource::Path(path) => (path, None),
            ModelSource::Demo { cache_dir } => (demo_model_dir(&cache_dir)?, Some(DEMO_MODEL_NAME)),
        };
        let mut ck = open_with(
            &path,
            &OpenOptions {
                variant: opts.variant.clone(),
            },
        )?;
        let vae_override = match &opts.vae {
            Some(vae_path) => {
                let vae = open_vae(vae_path, &ck.vae.config, opts.variant.as_deref())?;
                let (name, file) = (vae.name.clone(), vae.file.clone());
                ck.replace_vae(vae)?;
                Some((name, ModelHash::start(Some(file))))
            }
            None => None,
        };
        // Every size and shape is checked before anything is allocated.
        let mut checked = check(&ck)?;
        let hash_file = ck.unet.files.first().cloned();
        let hash = ModelHash::start(hash_file);

        let tokenizer = match &ck.tokenizer_dir {
            Some(dir) => {
                let (tokenizer, note) = ClipTokenizer::for_folder(dir)?;
                checked.warnings.extend(note);
                tokenizer
            }
            None => ClipTokenizer::embedded(),
        };
        let clip_cfg = &ck.text_encoder.config;

        let device = opts.device.clone();
        let dtype = opts
            .dtype
            .unwrap_or(if device.is_gpu() { DType::F16 } else { DType::F32 });
        let loras = LoraSet::open(
            ck.unet.weights.clone(),
            ck.text_encoder.weights.clone(),
            &opts.loras,
        )?;
        let text_encoder = ClipTextModel::load(loras.source(Part::TextEncoder), clip_cfg, &device, dtype)?;
        let unet = UNet::load(loras.source(Part::Unet), &ck.unet.config, &device, dtype)?;
        let vae = Vae::load(ck.vae.weights.clone(), &ck.vae.config, &device, DType::F32)?;
        device.sync()?;
        let model_name = match display_name {
            Some(name) => Some(std::ffi::OsStr::new(name)),
            None => match ck.layout {
                Layout::SingleFile => path.file_stem(),
                Layout::DiffusersFolder => path.file_name(),
            },
        }
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
        Ok(Pipeline {
            text_encoder,
            unet,
            vae,
            tokenizer,
            scheduler: checked.scheduler,
            default_sampler: checked.default_sampler,
            vae_tiling: opts.vae_tiling,
            loras,
            model_name,
            device,
            hash,
            vae_override,
            notes: ck.warnings,
            warnings: checked.warnings,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The UNet / text encoder storage type.
    pub fn dtype(&self) -> DType {
        self.unet.dtype()
    }

    /// The sampler used when a request names none.
    pub fn default_sampler(&self) -> SamplerKind {
        self.default_sampler
    }

    /// The model's native image size: UNet sample size x VAE factor (512 for SD 1.5).
    pub fn default_size(&self) -> (usize, usize) {
        let side = self.unet.config().sample_size * self.vae.scale();
        (side, side)
    }

    /// Pixels per latent (8 for SD): image sides must be multiples of it.
    pub fn vae_scale(&self) -> usize {
        self.vae.scale()
    }

    /// The checkpoint's folder or file name, as A1111's `Model:` field.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// A1111's model hash; waits for the background hash when it is still running.
    /// `None` when the weights file could not be read again.
    pub fn model_hash(&self) -> Option<String> {
        self.hash.get()
    }

    /// The replacement VAE's file (or folder) name, as A1111's `VAE:` field;
    /// `None` when the checkpoint's own VAE is used.
    pub fn vae_name(&self) -> Option<&str> {
        self.vae_override.as_ref().map(|(name, _)| name.as_str())
    }

    /// A1111's `VAE hash` of the replacement VAE (first 10 hex digits of its
    /// weights file's SHA-256); waits for the background hash.
    pub fn vae_hash(&self) -> Option<String> {
        self.vae_override.as_ref().and_then(|(_, hash)| hash.get())
    }

    /// What the loader noticed (EMA weights chosen, variant used, ...): for
    /// verbose output.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// What the user should see on every run (a scheduler class sd-wgpu
    /// does not have, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    pub fn text_encoder(&self) -> &ClipTextModel {
        &self.text_encoder
    }
}

/// The model hash, computed once on a background thread.
struct ModelHash(Mutex<HashState>);

enum HashState {
    Running(JoinHandle<Option<String>>),
    Done(Option<String>),
}

impl ModelHash {
    fn start(file: Option<PathBuf>) -> ModelHash {
        let state = match file {
            Some(f) => HashState::Running(std::thread::spawn(move || sha256_prefix(&f))),
            None => HashState::Done(None),
        };
        ModelHash(Mutex::new(state))
    }

    fn get(&self) -> Option<String> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let hash = match std::mem::replace(&mut *state, HashState::Done(None)) {
            HashState::Running(handle) => handle.join().ok().flatten(),
            HashState::Done(hash) => hash,
        };
        *state = HashState::Done(hash.clone());
        hash
    }
}

/// First 10 hex digits of the file's SHA-256, streamed (checkpoints are GBs).
fn sha256_prefix(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex_prefix(&hasher.finalize(), 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_a_known_file() {
        let p = std::env::temp_dir().join(format!("sdw-hash-{}", std::process::id()));
        std::fs::write(&p, b"abc").unwrap();
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let h = ModelHash::start(Some(p.clone()));
        assert_eq!(h.get().as_deref(), Some("ba7816bf8f"));
        assert_eq!(h.get().as_deref(), Some("ba7816bf8f"), "cached");
        std::fs::remove_file(&p).unwrap();
        assert_eq!(ModelHash::start(Some(p)).get(), None);
    }
}
