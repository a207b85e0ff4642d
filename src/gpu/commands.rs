//! Recording and submission: dispatches are recorded, with their params in
//! one uniform arena, and submitted together as one compute pass at the next
//! flush (read-back, upload, `sync`, or a full batch); `sync_timed` times
//! such a pass with timestamp queries.

use std::sync::Arc;

use super::kernel::Dispatch;
use super::pool::lock;
use super::GpuContext;
use crate::{Error, Result};

/// Bytes reserved per dispatch in the uniform arena (the largest params block).
const PARAM_SLOT: u64 = 256;
/// Dispatches per batch before the recorder submits on its own.
const MAX_BATCH: u64 = 2048;

struct Command {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// The dispatches recorded since the last submit.
pub(super) struct Recorder {
    commands: Vec<Command>,
    /// Uniform arena contents for `commands`, one `PARAM_SLOT` each.
    params: Vec<u8>,
    param_buf: wgpu::Buffer,
}

impl Recorder {
    pub fn new(device: &wgpu::Device) -> Recorder {
        Recorder {
            commands: Vec::new(),
            params: Vec::new(),
            param_buf: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params arena"),
                size: PARAM_SLOT * MAX_BATCH,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }
}

impl GpuContext {
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

    /// `flush`, writing the pass's begin and end timestamps to `timer`'s
    /// query set and resolving them into its buffer.
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
        if !self.caps().timestamps {
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
        let bytes = self.read_raw(&resolve, 16)?;
        let ts: [u64; 2] = bytemuck::pod_read_unaligned(&bytes);
        let period = self.queue.get_timestamp_period() as f64;
        Ok(ts[1].saturating_sub(ts[0]) as f64 * period * 1e-9)
    }
}
