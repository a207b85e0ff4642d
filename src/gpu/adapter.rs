//! Adapter choice: which wgpu adapters exist, which of them are software
//! (CPU) renderers, and the one a preference picks.

use std::sync::Once;

use crate::{Error, Result};

/// Which adapters `GpuContext::new` may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPreference {
    /// A hardware GPU if there is one, else a software (CPU) Vulkan adapter
    /// (llvmpipe, WARP, SwiftShader). What `--backend gpu` asks for.
    HardwareFirst,
    /// Only a hardware GPU. What `--backend auto` asks for: a software
    /// adapter is slower than the CPU backend on the same cores.
    HardwareOnly,
}

/// Whether an adapter renders on the CPU (llvmpipe, WARP, SwiftShader).
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// All adapters wgpu can see (Vulkan, Metal, DX12), hardware ones first.
pub fn list_adapters() -> Vec<wgpu::Adapter> {
    quiet_display_probe();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    adapters.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    });
    adapters
}

/// The first of `adapters` (best first, as `list_adapters` sorts them) that
/// `pref` allows; the error names every adapter seen.
pub fn pick_adapter(adapters: Vec<wgpu::Adapter>, pref: AdapterPreference) -> Result<wgpu::Adapter> {
    let seen: Vec<String> = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
        })
        .collect();
    let allowed = |a: &wgpu::Adapter| match pref {
        AdapterPreference::HardwareFirst => true,
        AdapterPreference::HardwareOnly => !is_software(&a.get_info()),
    };
    adapters.into_iter().find(allowed).ok_or_else(|| {
        Error::NoAdapter(format!(
            "no {} adapter found (adapters seen: {}). On Debian/Ubuntu, \
             `apt-get install mesa-vulkan-drivers` provides a software Vulkan adapter",
            match pref {
                AdapterPreference::HardwareFirst => "Vulkan/Metal/DX12",
                AdapterPreference::HardwareOnly => "hardware GPU",
            },
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ))
    })
}

/// Keeps Mesa's device-select Vulkan layer from printing
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment` on
/// every run outside a desktop session (ssh, cron, containers).
///
/// wgpu enables every window-system instance extension the loader offers,
/// and the layer, seeing `VK_KHR_wayland_surface`, connects to the Wayland
/// compositor to find the display's GPU and sort it first; libwayland prints
/// that line when there is no runtime directory to look in. sd-wgpu draws
/// nothing and sorts adapters itself (`list_adapters`), so when there is no
/// runtime directory the probe can only fail: the layer's own switch
/// (`NODEVICE_SELECT=1`, read by the Vulkan loader) turns it off. A user who
/// steers the layer (`MESA_VK_DEVICE_SELECT`) or set the switch keeps it.
///
/// The variable is set once, before the first wgpu instance (every one is
/// created here): no driver thread exists yet that could read the
/// environment while it changes.
fn quiet_display_probe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let has_runtime_dir =
            std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute());
        let user_choice = std::env::var_os("NODEVICE_SELECT").is_some()
            || std::env::var_os("MESA_VK_DEVICE_SELECT").is_some();
        if !has_runtime_dir && !user_choice {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}
