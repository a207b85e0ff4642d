//! Buffer pool: freed tensor buffers are kept by size class and reused.
//!
//! Reuse is stream-ordered: a buffer released while commands that read it are
//! still recorded may be handed to a later op of the same batch, which is safe
//! because commands run in recording order (wgpu inserts the barriers).
//! Host writes (`queue.write_buffer`) are the exception: they run before the
//! pending batch, so uploads flush first (see `GpuContext::upload`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::GpuContext;

/// Every pooled buffer can be a storage binding and a copy source/target.
pub(crate) const POOL_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Rounds a request up to its size class: at most 12.5% waste, multiples of 256 B.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let p = bytes.next_power_of_two();
    // bytes > p/2, so a step of p/16 wastes at most bytes/8.
    let step = (p / 16).max(256);
    bytes.div_ceil(step) * step
}

#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStats {
    /// Bytes of all buffers the pool has created and not destroyed (in use + free).
    pub allocated: u64,
    /// Bytes held by live tensors.
    pub in_use: u64,
    /// Highest `allocated` seen.
    pub peak_allocated: u64,
    /// Highest `in_use` seen.
    pub peak_in_use: u64,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    pub stats: MemoryStats,
}

impl BufferPool {
    /// A free buffer of exactly this class, if any.
    pub fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let b = self.free.get_mut(&class)?.pop()?;
        self.stats.in_use += class;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        Some(b)
    }

    /// Accounts for a buffer just created for `class`.
    pub fn created(&mut self, class: u64) {
        self.stats.allocated += class;
        self.stats.in_use += class;
        self.stats.peak_allocated = self.stats.peak_allocated.max(self.stats.allocated);
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
    }

    pub fn release(&mut self, class: u64, buffer: wgpu::Buffer) {
        self.stats.in_use -= class;
        self.free.entry(class).or_default().push(buffer);
    }

    /// Destroys every free buffer (under memory pressure, or between jobs).
    pub fn trim(&mut self) {
        for (class, bufs) in self.free.drain() {
            self.stats.allocated -= class * bufs.len() as u64;
            for b in bufs {
                b.destroy();
            }
        }
    }
}

/// A pooled storage buffer owned by one tensor storage; returns to the pool on drop.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    ctx: Arc<GpuContext>,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.class)
    }
}

impl GpuBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, class: u64, ctx: Arc<GpuContext>) -> Self {
        GpuBuffer {
            buffer: Some(buffer),
            class,
            ctx,
        }
    }

    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Capacity in bytes (the size class, >= what was asked for).
    pub fn capacity(&self) -> u64 {
        self.class
    }

    pub fn context(&self) -> Arc<GpuContext> {
        self.ctx.clone()
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.ctx.pool().release(self.class, b);
        }
    }
}

/// Lock helper that survives a poisoned mutex (a panicking thread must not wedge the pool).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn classes_bound_waste() {
        for n in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            4097,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(n);
            assert!(c >= n && c.is_multiple_of(256));
            assert!(
                n < 2048 || (c - n) as f64 <= n as f64 * 0.125 + 256.0,
                "{n} -> {c}"
            );
        }
    }
}
