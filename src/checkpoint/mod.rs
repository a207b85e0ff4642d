//! Reading what users have: safetensors files, torch pickles, diffusers
//! folders, single-file SD checkpoints, textual-inversion embeddings.
//!
//! [`open`] is the entry point for models: it returns each component's
//! weights under diffusers names (text encoder: `text_model.`-prefixed, as
//! transformers 4 saves them) with its config, after refusing anything that
//! is not SD 1.x. [`Embedding::load`] reads textual-inversion files.
//!
//! Files by concern: `bytes` (mmap), `safetensors` (+ `safetensors_header`, the
//! bounded streaming JSON reader), `pickle/` + `torch`
//! (non-executing torch zip reader), `source` (renamed / sharded views),
//! `ldm` (the LDM -> diffusers key map), `family` (detection),
//! `single_file`, `diffusers`, `open`, `embedding`, `vae_file` (a VAE that
//! replaces the checkpoint's).

pub mod bytes;
mod diffusers;
mod embedding;
pub mod family;
pub mod ldm;
mod open;
pub mod pickle;
pub mod safetensors;
mod safetensors_header;
mod single_file;
pub mod source;
pub mod torch;
mod vae_file;

pub use self::family::{Detection, Family};
pub use self::open::{open, open_with, Checkpoint, Component, Layout, OpenOptions};
pub use self::safetensors::SafetensorsFile;
pub use self::torch::{TorchFile, TorchSource};
pub use self::vae_file::{open_vae, VaeLayout, VaeOverride};

/// A textual-inversion concept: a trigger word and the `n` vectors of width
/// `width` that replace it in a prompt (row-major `[n, width]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub trigger: String,
    pub n: usize,
    pub width: usize,
    pub vectors: Vec<f32>,
}
