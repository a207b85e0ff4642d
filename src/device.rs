//! Where tensors live and ops run: the CPU (rayon twins) or a GPU context.
//!
//! `Backend::Auto` picks a hardware GPU adapter, else a software Vulkan
//! adapter (llvmpipe), else the CPU path, and says which it picked. The
//! `SD_WGPU_BACKEND` environment variable (auto|gpu|cpu) overrides the default
//! when no flag is given.

use std::sync::Arc;

use crate::gpu::{AdapterPreference, GpuContext};
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
        match self {
            Backend::Cpu => Ok(Device::Cpu),
            Backend::Gpu => Ok(Device::Gpu(GpuContext::new(AdapterPreference::HardwareFirst)?)),
            Backend::Auto => match GpuContext::new(AdapterPreference::HardwareFirst) {
                Ok(c) => Ok(Device::Gpu(c)),
                Err(Error::NoAdapter(_)) => Ok(Device::Cpu),
                Err(e) => Err(e),
            },
        }
    }
}
