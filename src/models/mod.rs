//! The SD 1.x networks written on the tensor API, configured from diffusers
//! `config.json` files: the CLIP text encoder, the UNet and the VAE.

pub mod clip;
pub mod config;
pub mod flops;
pub mod layers;
pub mod resnet;
pub mod unet;
pub mod vae;

pub use clip::ClipTextModel;
pub use unet::UNet;
pub use vae::{Posterior, Tiling, Vae};

use crate::Device;

/// GPU memory held by tensors now and at the peak since the last
/// `GpuContext::reset_peak_memory`, for verbose output and benchmarks
/// (`None` on the CPU backend, which does not track memory).
pub fn memory_summary(device: &Device) -> Option<String> {
    let s = device.gpu()?.memory_stats();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Some(format!(
        "{:.2} GiB in use, peak {:.2} GiB in use / {:.2} GiB allocated",
        gib(s.in_use),
        gib(s.peak_in_use),
        gib(s.peak_allocated)
    ))
}
