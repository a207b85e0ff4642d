//! Reading what users have: safetensors files, torch pickles, diffusers
//! folders, single-file SD checkpoints, textual-inversion embeddings.

pub mod bytes;
mod embedding;
pub mod pickle;
pub mod safetensors;
pub mod torch;

pub use self::safetensors::SafetensorsFile;
pub use self::torch::{TorchFile, TorchSource};

/// A textual-inversion concept: a trigger word and the `n` vectors of width
/// `width` that replace it in a prompt (row-major `[n, width]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub trigger: String,
    pub n: usize,
    pub width: usize,
    pub vectors: Vec<f32>,
}
