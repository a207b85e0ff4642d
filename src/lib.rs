//! sd-wgpu: Stable Diffusion 1.x on hand-written WGSL kernels, with a rayon
//! CPU twin of every kernel as its specification.
//!
//! Layers, bottom up:
//! - [`tensor`], [`device`]: the tensor value type and where it lives;
//! - [`ops`]: every op the models need, one signature, dispatched to
//!   [`cpu`] (the twins) or [`gpu`] (WGSL through wgpu).

pub mod checkpoint;
pub mod cpu;
pub mod device;
pub mod error;
pub mod gpu;
pub mod lora;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
pub mod server;
pub mod tensor;
pub mod text;
pub mod weights;

pub use device::{Backend, Device};
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
