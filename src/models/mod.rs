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

use crate::{DType, Device};

/// The three networks, for per-component defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    TextEncoder,
    UNet,
    Vae,
}

/// The storage type a component runs in unless the user asks otherwise:
/// f16 for the text encoder and UNet on a GPU with shader f16 (arithmetic
/// stays f32), f32 on the CPU and for the VAE everywhere (the SD VAE
/// overflows f16).
pub fn default_dtype(device: &Device, component: Component) -> DType {
    let f16 = device.gpu().is_some_and(|c| c.caps().f16);
    match component {
        Component::TextEncoder | Component::UNet if f16 => DType::F16,
        _ => DType::F32,
    }
}

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
