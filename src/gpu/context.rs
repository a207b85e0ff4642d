//! The GPU context: one per wgpu device, opened on the adapter a preference
//! picks, with the facts kernels ask about (limits, capabilities) and the
//! first asynchronous GPU error.
//!
//! The rest of the runtime is split by concern, each an `impl GpuContext`:
//! `buffers` (allocation, upload, read-back), `pipelines` (layouts and the
//! pipeline cache), `commands` (recording, batching, submit, timing) and
//! `binding` (binding windows). Nothing here is global: create a context,
//! share it through `Device::Gpu`.

use std::sync::{Arc, Mutex, Weak};

use super::adapter::{is_software, list_adapters, pick_adapter, AdapterPreference};
use super::commands::Recorder;
use super::pipelines::PipelineCache;
use super::pool::{lock, BufferPool, MemoryStats};
use crate::tensor::DType;
use crate::{Error, Result};

/// Switches for opening a context. `Default` uses everything the adapter offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    /// Use subgroup operations when the adapter has them. Off makes every
    /// reduction take its workgroup-memory path, so tests and benchmarks can
    /// cover both on one adapter.
    pub subgroups: bool,
    /// Lowers the storage-binding limit (bytes) below the adapter's, so tests
    /// can run the windowed paths of every op on small tensors.
    pub max_binding_bytes: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            subgroups: true,
            max_binding_bytes: None,
        }
    }
}

/// What the adapter can do that the kernels care about.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
    pub software: bool,
}

pub struct GpuContext {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(super) limits: wgpu::Limits,
    caps: Capabilities,
    pub(super) pipelines: PipelineCache,
    pool: Mutex<BufferPool>,
    pub(super) recorder: Mutex<Recorder>,
    /// First asynchronous error reported by wgpu since the last check.
    error: Arc<Mutex<Option<Error>>>,
    me: Weak<GpuContext>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

impl GpuContext {
    /// Opens the best adapter allowed by `pref`.
    pub fn new(pref: AdapterPreference) -> Result<Arc<GpuContext>> {
        GpuContext::new_with(pref, GpuOptions::default())
    }

    /// Opens the best adapter allowed by `pref`, with `opts`.
    pub fn new_with(pref: AdapterPreference, opts: GpuOptions) -> Result<Arc<GpuContext>> {
        GpuContext::from_adapter_with(pick_adapter(list_adapters(), pref)?, opts)
    }

    /// Opens a device on `adapter` with its real limits and the optional
    /// features the kernels use (f16, subgroups, timestamps) when present.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Arc<GpuContext>> {
        GpuContext::from_adapter_with(adapter, GpuOptions::default())
    }

    /// `from_adapter` with `opts` (e.g. subgroups off).
    pub fn from_adapter_with(adapter: wgpu::Adapter, opts: GpuOptions) -> Result<Arc<GpuContext>> {
        let info = adapter.get_info();
        let have = adapter.features();
        let mut wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        if opts.subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = have & wanted;
        let mut limits = adapter.limits();
        if let Some(max) = opts.max_binding_bytes {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(max);
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sd-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| Error::NoAdapter(format!("{}: request_device failed: {e}", info.name)))?;

        let error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let err = match e {
                wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
                other => Error::Gpu(other.to_string()),
            };
            keep_first(&slot, err);
        }));
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                keep_first(&slot, Error::DeviceLost(format!("{reason:?}: {msg}")));
            }
        });

        let caps = Capabilities {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            software: is_software(&info),
        };
        let recorder = Recorder::new(&device);
        Ok(Arc::new_cyclic(|me| GpuContext {
            device,
            queue,
            info,
            limits,
            caps,
            pipelines: PipelineCache::default(),
            pool: Mutex::new(BufferPool::default()),
            recorder: Mutex::new(recorder),
            error,
            me: me.clone(),
        }))
    }

    // ----- facts --------------------------------------------------------

    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// One line naming the adapter, e.g.
    /// "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, software; f16 yes, subgroups yes)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {}; f16 {}, subgroups {})",
            self.info.name,
            self.info.backend,
            if self.caps.software {
                "software"
            } else {
                "hardware"
            },
            if self.caps.f16 { "yes" } else { "no" },
            if self.caps.subgroups { "yes" } else { "no" },
        )
    }

    /// Largest storage binding in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Largest number of `dtype` elements one binding window may cover,
    /// leaving room for the alignment slack of `bind`.
    pub fn max_binding_elems(&self, dtype: DType) -> usize {
        let slack = self.limits.min_storage_buffer_offset_alignment as u64;
        (self.max_binding_bytes().saturating_sub(slack) / dtype.size() as u64) as usize
    }

    pub fn max_workgroups_per_dim(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    // ----- memory accounting --------------------------------------------

    pub fn memory_stats(&self) -> MemoryStats {
        lock(&self.pool).stats
    }

    /// Resets the peak counters to the current values (e.g. before a benchmark).
    pub fn reset_peak_memory(&self) {
        let mut p = lock(&self.pool);
        p.stats.peak_allocated = p.stats.allocated;
        p.stats.peak_in_use = p.stats.in_use;
    }

    /// Frees pooled buffers no tensor holds.
    pub fn trim_pool(&self) {
        lock(&self.pool).trim();
    }

    pub(crate) fn pool(&self) -> std::sync::MutexGuard<'_, BufferPool> {
        lock(&self.pool)
    }

    /// This context as the `Arc` buffers keep alive.
    pub(super) fn arc(&self) -> Arc<GpuContext> {
        self.me.upgrade().expect("context alive while used")
    }

    // ----- errors -------------------------------------------------------

    /// Returns (and clears) the first GPU error reported since the last check.
    pub fn check(&self) -> Result<()> {
        match lock(&self.error).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Keeps `e` for the next `check` unless an earlier error is waiting.
    pub(super) fn record_error(&self, e: Error) {
        keep_first(&self.error, e);
    }
}

/// The first error is the cause; later ones are usually its consequences.
fn keep_first(slot: &Mutex<Option<Error>>, e: Error) {
    let mut s = lock(slot);
    if s.is_none() {
        *s = Some(e);
    }
}
