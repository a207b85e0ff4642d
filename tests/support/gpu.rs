//! The GPU device of a test binary, for the test files that include this one
//! (`#[path = "support/gpu.rs"] mod support_gpu;`).

use std::sync::{Arc, OnceLock};

use sd_wgpu::gpu::{AdapterPreference, GpuContext};
use sd_wgpu::Device;

/// The one GPU context of this test binary (a hardware adapter if there is
/// one, else a software one). Fails, never skips, when there is no adapter.
pub fn gpu() -> Device {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| match GpuContext::new(AdapterPreference::HardwareFirst) {
        Ok(c) => {
            eprintln!("GPU tests on {}", c.describe());
            c
        }
        Err(e) => panic!(
            "GPU tests need a wgpu adapter and none was found: {e}\n\
             Install a software Vulkan driver (Debian: apt-get install mesa-vulkan-drivers)."
        ),
    });
    Device::Gpu(ctx.clone())
}
