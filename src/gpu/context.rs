//! The GPU context: one per wgpu device. It owns the pipeline cache, the
//! buffer pool and the recorder that batches dispatches into one submit.
//!
//! Nothing here is global: create a context, share it through `Device::Gpu`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::kernel::{Binding, Dispatch, Kernel};
use super::pool::{lock, size_class, BufferPool, GpuBuffer, MemoryStats, POOL_USAGE};
use super::preprocess::{assemble, Define};
use crate::tensor::DType;
use crate::{Error, Result};

/// Bytes reserved per dispatch in the uniform arena (the largest params block).
const PARAM_SLOT: u64 = 256;
/// Dispatches per batch before the recorder submits on its own.
const MAX_BATCH: u64 = 2048;

/// Which adapters `GpuContext::new` may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPreference {
    /// A hardware GPU if there is one, else a software (CPU) Vulkan adapter.
    HardwareFirst,
    /// Only a hardware GPU.
    HardwareOnly,
    /// Only a software adapter (llvmpipe, WARP, SwiftShader).
    SoftwareOnly,
}

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

struct Command {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

struct Recorder {
    commands: Vec<Command>,
    /// Uniform arena contents for `commands`, one `PARAM_SLOT` each.
    params: Vec<u8>,
    param_buf: wgpu::Buffer,
}

struct Layout {
    bind_group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    caps: Capabilities,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    layouts: Mutex<HashMap<(u32, u32), Arc<Layout>>>,
    pool: Mutex<BufferPool>,
    recorder: Mutex<Recorder>,
    /// First asynchronous error reported by wgpu since the last check.
    error: Arc<Mutex<Option<Error>>>,
    me: Weak<GpuContext>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// All adapters wgpu can see (Vulkan, Metal, DX12), hardware ones first.
pub fn list_adapters() -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    adapters.sort_by_key(|a| {
        let t = a.get_info().device_type;
        match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        }
    });
    adapters
}

impl GpuContext {
    /// Opens the best adapter allowed by `pref`.
    pub fn new(pref: AdapterPreference) -> Result<Arc<GpuContext>> {
        GpuContext::new_with(pref, GpuOptions::default())
    }

    /// Opens the best adapter allowed by `pref`, with `opts`.
    pub fn new_with(pref: AdapterPreference, opts: GpuOptions) -> Result<Arc<GpuContext>> {
        let adapters = list_adapters();
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect();
        let pick = adapters.into_iter().find(|a| {
            let sw = is_software(&a.get_info());
            match pref {
                AdapterPreference::HardwareFirst => true,
                AdapterPreference::HardwareOnly => !sw,
                AdapterPreference::SoftwareOnly => sw,
            }
        });
        match pick {
            Some(a) => GpuContext::from_adapter_with(a, opts),
            None => Err(Error::NoAdapter(format!(
                "no {} adapter found (adapters seen: {}). On Debian/Ubuntu, \
                 `apt-get install mesa-vulkan-drivers` provides a software Vulkan adapter",
                match pref {
                    AdapterPreference::HardwareFirst => "Vulkan/Metal/DX12",
                    AdapterPreference::HardwareOnly => "hardware GPU",
                    AdapterPreference::SoftwareOnly => "software",
                },
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ))),
        }
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
            let mut s = lock(&slot);
            if s.is_none() {
                *s = Some(err);
            }
        }));
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut s = lock(&slot);
            if s.is_none() && reason != wgpu::DeviceLostReason::Destroyed {
                *s = Some(Error::DeviceLost(format!("{reason:?}: {msg}")));
            }
        });

        let param_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params arena"),
            size: PARAM_SLOT * MAX_BATCH,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let caps = Capabilities {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            software: is_software(&info),
        };
        Ok(Arc::new_cyclic(|me| GpuContext {
            device,
            queue,
            info,
            limits,
            caps,
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            pool: Mutex::new(BufferPool::default()),
            recorder: Mutex::new(Recorder {
                commands: Vec::new(),
                params: Vec::new(),
                param_buf,
            }),
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

    /// One line naming the adapter, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, software)".
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
        ((self.max_binding_bytes() - slack) / dtype.size() as u64) as usize
    }

    pub fn max_workgroups_per_dim(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

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

    fn arc(&self) -> Arc<GpuContext> {
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

    fn record_error(&self, e: Error) {
        let mut s = lock(&self.error);
        if s.is_none() {
            *s = Some(e);
        }
    }

    // ----- memory -------------------------------------------------------

    /// A buffer of at least `bytes` bytes, from the pool when one is free.
    /// Allocation failures are recorded and returned by the next `check`.
    pub fn alloc(&self, bytes: usize) -> GpuBuffer {
        let class = size_class(bytes as u64);
        if let Some(b) = self.pool().take(class) {
            return GpuBuffer::new(b, class, self.arc());
        }
        if class > self.limits.max_buffer_size {
            self.record_error(Error::OutOfMemory(format!(
                "a tensor of {} MiB exceeds this adapter's largest buffer ({} MiB); \
                 use a smaller size, tiling, or the CPU backend",
                bytes >> 20,
                self.limits.max_buffer_size >> 20
            )));
            return self.create_pooled(256);
        }
        let buffer = self.try_create(class).or_else(|| {
            // Out of memory: drop what the pool keeps, let the GPU finish, retry once.
            self.trim_pool();
            self.flush();
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
            self.try_create(class)
        });
        match buffer {
            Some(b) => {
                self.pool().created(class);
                GpuBuffer::new(b, class, self.arc())
            }
            None => {
                let s = self.memory_stats();
                self.record_error(Error::OutOfMemory(format!(
                    "could not allocate {} MiB with {} MiB already allocated",
                    class >> 20,
                    s.allocated >> 20
                )));
                self.create_pooled(256)
            }
        }
    }

    fn try_create(&self, class: u64) -> Option<wgpu::Buffer> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: POOL_USAGE,
            mapped_at_creation: false,
        });
        match pollster::block_on(scope.pop()) {
            None => Some(b),
            Some(_) => None,
        }
    }

    fn create_pooled(&self, class: u64) -> GpuBuffer {
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: POOL_USAGE,
            mapped_at_creation: false,
        });
        self.pool().created(class);
        GpuBuffer::new(b, class, self.arc())
    }

    /// Copies host bytes into a new buffer.
    pub(crate) fn upload(&self, bytes: &[u8]) -> Result<GpuBuffer> {
        let buf = self.alloc(bytes.len());
        // `write_buffer` runs before the next submit's commands: the pooled
        // buffer may still be read by recorded commands, so submit those first.
        self.flush();
        let whole = bytes.len() / 4 * 4;
        self.queue.write_buffer(buf.raw(), 0, &bytes[..whole]);
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(buf.raw(), whole as u64, &tail);
        }
        self.check()?;
        Ok(buf)
    }

    /// Reads the first `bytes` bytes of a buffer (runs pending work first).
    pub(crate) fn read_back(&self, buf: &GpuBuffer, bytes: usize) -> Result<Vec<u8>> {
        self.flush();
        let size = (bytes as u64).div_ceil(4) * 4;
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Gpu(format!("mapping a read-back buffer: {e}"))),
            Err(_) => return Err(Error::DeviceLost("read-back callback dropped".into())),
        }
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?[..bytes]
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    // ----- pipelines ----------------------------------------------------

    fn layout(&self, inputs: u32, outputs: u32) -> Arc<Layout> {
        let mut layouts = lock(&self.layouts);
        layouts
            .entry((inputs, outputs))
            .or_insert_with(|| {
                let storage = |read_only| wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                };
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                for i in 0..inputs + outputs {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: 1 + i,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: storage(i < inputs),
                        count: None,
                    });
                }
                let bind_group = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("kernel bindings"),
                        entries: &entries,
                    });
                let pipeline = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&bind_group)],
                        immediate_size: 0,
                    });
                Arc::new(Layout { bind_group, pipeline })
            })
            .clone()
    }

    /// The compiled pipeline of a kernel variant, compiled on first use.
    pub fn pipeline(
        &self,
        kernel: &Kernel,
        dtype: DType,
        defines: &[Define],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if dtype == DType::F16 && !self.caps.f16 {
            return Err(Error::Unsupported(format!(
                "{} has no shader f16 support; use f32 (--dtype f32)",
                self.info.name
            )));
        }
        let key = format!(
            "{}:{}:{}:sg{}:{:?}",
            kernel.shader.name,
            kernel.entry,
            dtype.name(),
            self.caps.subgroups as u8,
            defines
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let src = assemble(kernel.shader.source, dtype, self.caps.subgroups, defines).map_err(|msg| {
            Error::Shader {
                name: kernel.shader.name.into(),
                msg,
            }
        })?;
        let layout = self.layout(kernel.inputs, kernel.outputs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.shader.name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&layout.pipeline),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                name: format!(
                    "{}::{} ({}, {:?})",
                    kernel.shader.name,
                    kernel.entry,
                    dtype.name(),
                    defines
                ),
                msg: e.to_string(),
            });
        }
        let p = Arc::new(pipeline);
        lock(&self.pipelines).insert(key, p.clone());
        Ok(p)
    }

    // ----- recording and submission -------------------------------------

    /// Records one dispatch. It runs at the next flush (read-back, upload,
    /// `sync`, or when the batch is full). A shader that fails to compile is
    /// a bug in sd-wgpu: it is recorded as an error and the dispatch skipped.
    pub fn dispatch(&self, d: &Dispatch) {
        assert_eq!(
            d.inputs.len() as u32,
            d.kernel.inputs,
            "{}: inputs",
            d.kernel.entry
        );
        assert_eq!(
            d.outputs.len() as u32,
            d.kernel.outputs,
            "{}: outputs",
            d.kernel.entry
        );
        assert!(d.params.len() * 4 <= PARAM_SLOT as usize);
        let pipeline = match self.pipeline(&d.kernel, d.dtype, d.defines) {
            Ok(p) => p,
            Err(e) => {
                self.record_error(e);
                return;
            }
        };
        let layout = self.layout(d.kernel.inputs, d.kernel.outputs);
        let mut rec = lock(&self.recorder);
        if rec.commands.len() as u64 >= MAX_BATCH {
            drop(rec);
            self.flush();
            rec = lock(&self.recorder);
        }
        let slot = rec.commands.len() as u64 * PARAM_SLOT;
        rec.params.extend_from_slice(bytemuck::cast_slice(d.params));
        rec.params.resize((slot + PARAM_SLOT) as usize, 0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &rec.param_buf,
                offset: slot,
                size: wgpu::BufferSize::new(PARAM_SLOT),
            }),
        }];
        for (i, b) in d.inputs.iter().chain(d.outputs.iter()).enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 1 + i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buffer,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout.bind_group,
            entries: &entries,
        });
        rec.commands.push(Command {
            pipeline,
            bind_group,
            groups: d.groups,
        });
    }

    /// Submits every recorded dispatch as one compute pass.
    pub fn flush(&self) {
        self.submit(None);
    }

    fn submit(&self, timer: Option<(&wgpu::QuerySet, &wgpu::Buffer)>) {
        let mut rec = lock(&self.recorder);
        if rec.commands.is_empty() {
            return;
        }
        self.queue.write_buffer(&rec.param_buf, 0, &rec.params);
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sd-wgpu batch"),
                timestamp_writes: timer.map(|(q, _)| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for c in &rec.commands {
                pass.set_pipeline(&c.pipeline);
                pass.set_bind_group(0, &c.bind_group, &[]);
                pass.dispatch_workgroups(c.groups[0], c.groups[1], c.groups[2]);
            }
        }
        if let Some((q, resolve)) = timer {
            enc.resolve_query_set(q, 0..2, resolve, 0);
        }
        self.queue.submit([enc.finish()]);
        rec.commands.clear();
        rec.params.clear();
    }

    /// Runs all recorded work and waits for it; returns the first GPU error.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Runs the recorded work as one pass and returns its GPU time in seconds
    /// from timestamp queries (wall-clock after a sync when the adapter has none).
    /// For benchmarks: work recorded before the call must already be synced.
    pub fn sync_timed(&self) -> Result<f64> {
        if !self.caps.timestamps {
            let t = std::time::Instant::now();
            self.sync()?;
            return Ok(t.elapsed().as_secs_f64());
        }
        let q = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timer resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.submit(Some((&q, &resolve)));
        let bytes = self.read_back_raw(&resolve, 16)?;
        let ts: [u64; 2] = bytemuck::pod_read_unaligned(&bytes);
        let period = self.queue.get_timestamp_period() as f64;
        Ok(ts[1].saturating_sub(ts[0]) as f64 * period * 1e-9)
    }

    fn read_back_raw(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    // ----- binding windows ----------------------------------------------

    /// Binds elements `start..start+len` of `buf` (of `dtype`): the binding
    /// begins at the aligned offset at or below `start`, and the returned
    /// element index says where `start` lies inside it. This is how tensors
    /// larger than the storage-binding limit are processed a window at a time.
    pub fn bind<'a>(&self, buf: &'a GpuBuffer, dtype: DType, start: usize, len: usize) -> (Binding<'a>, u32) {
        let es = dtype.size() as u64;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let byte_start = start as u64 * es;
        let offset = byte_start / align * align;
        let base = ((byte_start - offset) / es) as u32;
        let end = ((start + len.max(1)) as u64 * es).div_ceil(4) * 4;
        let size = (end - offset).min(buf.capacity() - offset);
        assert!(
            size <= self.max_binding_bytes(),
            "binding window of {size} bytes exceeds the adapter limit: split the op"
        );
        (
            Binding {
                buffer: buf.raw(),
                offset,
                size,
            },
            base,
        )
    }
}
