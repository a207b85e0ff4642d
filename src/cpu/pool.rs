//! Recycled f32 buffers for the CPU backend's op outputs and scratch.
//!
//! Each op returns a fresh tensor, and a denoising step makes hundreds of
//! multi-megabyte ones. From the system allocator, every buffer that size is
//! a fresh `mmap`: the kernel zeroes and maps each page on first touch and
//! unmaps it on free (millions of page faults per image). Here a dropped
//! tensor's buffer goes back to a pool (`CpuData`'s `Drop`) and the next op
//! of a similar size takes it: a steady-state UNet pass at 256x256 went from
//! about a million minor page faults to about nine thousand.
//! The pool holds at most `MAX_BYTES`; small buffers bypass it.

use std::sync::Mutex;

/// Buffers smaller than this (64 KiB) come from the allocator, which
/// recycles them well itself.
const MIN_LEN: usize = 16 << 10;
/// The pool's cap (512 MiB): beyond it freed buffers go back to the system.
const MAX_BYTES: usize = 512 << 20;

struct Pool {
    /// Free buffers, each with `len == capacity`.
    free: Vec<Vec<f32>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

/// A buffer of `len` floats whose contents are unspecified (stale values of
/// an earlier op): for callers that overwrite every element.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len >= MIN_LEN {
        if let Ok(mut pool) = POOL.lock() {
            // The smallest free buffer that fits, if it wastes under half.
            let best = (pool.free.iter().enumerate())
                .filter(|(_, v)| v.len() >= len && v.len() <= 2 * len)
                .min_by_key(|(_, v)| v.len())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut v = pool.free.swap_remove(i);
                pool.bytes -= 4 * v.len();
                v.truncate(len);
                return v;
            }
        }
    }
    vec![0.0; len]
}

/// A buffer of `len` zeros.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Gives a buffer back for reuse.
pub(crate) fn recycle(mut v: Vec<f32>) {
    if v.capacity() < MIN_LEN {
        return;
    }
    // The spare capacity becomes part of the buffer (a later `take` truncates).
    v.resize(v.capacity(), 0.0);
    if let Ok(mut pool) = POOL.lock() {
        pool.bytes += 4 * v.len();
        pool.free.push(v);
        // Over the cap: drop the oldest buffers first.
        while pool.bytes > MAX_BYTES {
            let old = pool.free.remove(0);
            pool.bytes -= 4 * old.len();
        }
    }
}

/// Bytes held by the pool now.
pub fn pooled_bytes() -> usize {
    POOL.lock().map_or(0, |p| p.bytes)
}
