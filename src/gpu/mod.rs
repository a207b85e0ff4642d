//! The wgpu backend: context, buffer pool, shader variants, and one Rust file
//! per kernel family under `ops/` (its WGSL is `shaders/<family>.wgsl`).

mod context;
mod kernel;
mod pool;
mod preprocess;

pub mod ops;

pub use context::{list_adapters, AdapterPreference, Capabilities, GpuContext, GpuOptions};
pub use kernel::{grid_1d, Binding, Dispatch, Kernel, Shader};
pub use pool::{GpuBuffer, MemoryStats};
pub use preprocess::{assemble, Define};
