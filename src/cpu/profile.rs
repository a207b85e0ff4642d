//! Where the CPU backend's time goes: wall time, calls and FLOP per op
//! family, summed over every CPU op since the last `reset`. Always on: one
//! clock read per op call, nothing per element. `sd-wgpu bench --backend cpu`
//! prints the table, with the process's peak resident memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The op families the CPU twins are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Matmul,
    Conv,
    Attention,
    Norm,
    Elementwise,
    Layout,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Matmul,
        Family::Conv,
        Family::Attention,
        Family::Norm,
        Family::Elementwise,
        Family::Layout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Conv => "conv",
            Family::Attention => "attention",
            Family::Norm => "norm",
            Family::Elementwise => "elementwise",
            Family::Layout => "layout",
        }
    }
}

/// Per family: nanoseconds, calls, FLOP.
static COUNTERS: [[AtomicU64; 3]; 6] = [const { [const { AtomicU64::new(0) }; 3] }; 6];

/// Records one op call from its creation to its drop.
pub(crate) struct Timer {
    family: Family,
    flops: f64,
    start: Instant,
}

impl Timer {
    /// `flops`: the op's arithmetic, 2 per multiply-add (0 for data movement).
    pub(crate) fn new(family: Family, flops: f64) -> Timer {
        Timer {
            family,
            flops,
            start: Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let c = &COUNTERS[self.family as usize];
        c[0].fetch_add(self.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        c[1].fetch_add(1, Ordering::Relaxed);
        c[2].fetch_add(self.flops as u64, Ordering::Relaxed);
    }
}

/// Totals of one family since the last reset.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    pub family: Family,
    pub secs: f64,
    pub calls: u64,
    pub flops: f64,
}

/// Zeroes every counter.
pub fn reset() {
    for c in COUNTERS.iter().flatten() {
        c.store(0, Ordering::Relaxed);
    }
}

/// The families with at least one call since the last reset.
pub fn totals() -> Vec<Totals> {
    Family::ALL
        .iter()
        .map(|&family| {
            let c = &COUNTERS[family as usize];
            Totals {
                family,
                secs: c[0].load(Ordering::Relaxed) as f64 * 1e-9,
                calls: c[1].load(Ordering::Relaxed),
                flops: c[2].load(Ordering::Relaxed) as f64,
            }
        })
        .filter(|t| t.calls > 0)
        .collect()
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), or None
/// where `/proc` does not say.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Restarts the peak-RSS count from the current RSS (Linux `clear_refs`);
/// false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
