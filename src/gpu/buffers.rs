//! Buffers: allocation through the pool (with the out-of-memory path),
//! host-to-GPU upload and the one GPU-to-host read-back.

use super::pool::{size_class, GpuBuffer, POOL_USAGE};
use super::GpuContext;
use crate::{Error, Result};

/// Size of the placeholder `alloc` hands out when it cannot allocate: the
/// failing op still gets a buffer to bind, and `check` reports the error.
pub(super) const PLACEHOLDER_BYTES: u64 = 256;

impl GpuContext {
    /// A buffer of at least `bytes` bytes, from the pool when one is free.
    /// Allocation failures are recorded and returned by the next `check`;
    /// the buffer is then a `PLACEHOLDER_BYTES` stand-in.
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
            return self.create_pooled(PLACEHOLDER_BYTES);
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
                self.create_pooled(PLACEHOLDER_BYTES)
            }
        }
    }

    /// A new buffer of `class` bytes, or `None` when the device is out of memory.
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
        self.read_raw(buf.raw(), bytes)
    }

    /// Reads the first `bytes` bytes of `buffer` (a `COPY_SRC` buffer) once
    /// the work already submitted is done: copies them to a mappable staging
    /// buffer, waits, and checks the mapping succeeded before reading.
    pub(super) fn read_raw(&self, buffer: &wgpu::Buffer, bytes: usize) -> Result<Vec<u8>> {
        // Copies move whole 4-byte words.
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
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
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
}
