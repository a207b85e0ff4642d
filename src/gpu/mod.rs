//! The wgpu backend: the runtime (adapter choice, context, buffers,
//! pipelines, command recording, binding windows), the buffer pool, shader
//! variants, and one Rust file per kernel family under `ops/` (its WGSL is
//! `shaders/<family>.wgsl`).

mod adapter;
mod binding;
mod buffers;
mod commands;
mod context;
mod kernel;
mod pipelines;
mod pool;
mod preprocess;

pub mod ops;

pub use adapter::{is_software, list_adapters, pick_adapter, AdapterPreference};
pub use context::{Capabilities, GpuContext, GpuOptions};
pub use kernel::{grid_1d, Binding, Dispatch, Kernel, Shader};
pub use pool::{GpuBuffer, MemoryStats};
pub use preprocess::{assemble, Define};
