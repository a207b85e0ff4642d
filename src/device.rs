//! Where tensors live and ops run: the CPU (rayon twins) or a GPU context.
//!
//! `Backend::Auto` picks a hardware GPU adapter, else the CPU path: a
//! software Vulkan adapter (llvmpipe) runs on the same cores as the CPU
//! backend and is several times slower there (6.5x for the demo model, ~10x
//! for SD 1.5), so it is used only when asked for (`Backend::Gpu`). The
//! `device:` line says which was picked and what `auto` passed over. The
//! `SD_WGPU_BACKEND` environment variable (auto|gpu|cpu) overrides the default
//! when no flag is given.

use std::sync::Arc;

use crate::gpu::{is_software, list_adapters, pick_adapter, AdapterPreference, GpuContext};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Gpu(Arc<GpuContext>),
}

impl Device {
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// The GPU context, if this is a GPU device.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        match self {
            Device::Gpu(c) => Some(c),
            Device::Cpu => None,
        }
    }

    /// One line for logs: "CPU (rayon, 2 threads)" or the adapter.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!("CPU (rayon, {} threads)", rayon::current_num_threads()),
            Device::Gpu(c) => c.describe(),
        }
    }

    /// Waits for all recorded GPU work and reports GPU errors (no-op on CPU).
    pub fn sync(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(c) => c.sync(),
        }
    }

    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The user's backend choice (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "gpu" => Ok(Backend::Gpu),
            "cpu" => Ok(Backend::Cpu),
            _ => Err(Error::invalid(
                "backend",
                format!("expected auto, gpu or cpu, found {s:?}"),
            )),
        }
    }
}

impl Backend {
    /// `SD_WGPU_BACKEND` when set, else `Auto`.
    pub fn from_env() -> Result<Backend> {
        match std::env::var("SD_WGPU_BACKEND") {
            Ok(v) if !v.is_empty() => v.parse().map_err(|_| {
                Error::invalid(
                    "SD_WGPU_BACKEND",
                    format!("expected auto, gpu or cpu, found {v:?}"),
                )
            }),
            _ => Ok(Backend::Auto),
        }
    }

    /// Opens the device for this choice.
    pub fn open(self) -> Result<Device> {
        Ok(self.choose()?.device)
    }

    /// Opens the device for this choice, and says what `auto` passed over.
    pub fn choose(self) -> Result<Choice> {
        let device = match self {
            Backend::Cpu => Device::Cpu,
            Backend::Gpu => Device::Gpu(GpuContext::new(AdapterPreference::HardwareFirst)?),
            Backend::Auto => return choose_auto(),
        };
        Ok(Choice {
            device,
            skipped: Vec::new(),
        })
    }
}

/// A hardware adapter if there is one, else the CPU, noting the software
/// adapters left unused.
fn choose_auto() -> Result<Choice> {
    let adapters = list_adapters();
    let software: Vec<String> = adapters
        .iter()
        .map(|a| a.get_info())
        .filter(is_software)
        .map(|i| i.name)
        .collect();
    let device =
        match pick_adapter(adapters, AdapterPreference::HardwareOnly).and_then(GpuContext::from_adapter) {
            Ok(c) => Device::Gpu(c),
            Err(Error::NoAdapter(_)) => Device::Cpu,
            Err(e) => return Err(e),
        };
    let skipped = if device.is_gpu() { Vec::new() } else { software };
    Ok(Choice { device, skipped })
}

/// The device a [`Backend`] opened.
#[derive(Debug, Clone)]
pub struct Choice {
    pub device: Device,
    /// Names of the software adapters `auto` did not use (none unless the
    /// CPU was picked for want of a hardware GPU).
    pub skipped: Vec<String>,
}

impl Choice {
    /// The `device:` line: the device, and why `auto` passed over a
    /// software adapter.
    pub fn describe(&self) -> String {
        let device = self.device.describe();
        match self.skipped.as_slice() {
            [] => device,
            names => format!(
                "{device}; auto skipped the software adapter{} {} (slower than the \
                 CPU backend; --backend gpu to use it)",
                if names.len() > 1 { "s" } else { "" },
                names.join(", ")
            ),
        }
    }
}
