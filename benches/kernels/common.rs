//! Timing and reporting shared by every kernel family.

use std::sync::Arc;

use sd_wgpu::gpu::{AdapterPreference, GpuContext};
use sd_wgpu::{DType, Device, Tensor};

pub struct Bench {
    pub ctx: Arc<GpuContext>,
    pub dev: Device,
    pub short: bool,
}

impl Bench {
    pub fn new(short: bool) -> Bench {
        let ctx = GpuContext::new(AdapterPreference::HardwareFirst).unwrap_or_else(|e| {
            eprintln!("benchmarks need a GPU adapter: {e}");
            std::process::exit(1)
        });
        Bench {
            dev: Device::Gpu(ctx.clone()),
            ctx,
            short,
        }
    }

    /// Iterations to time: few in short mode.
    pub fn iters(&self, full: usize) -> usize {
        if self.short {
            full.clamp(1, 3)
        } else {
            full
        }
    }

    /// A FLOP rate in the unit that reads well on this adapter: TFLOP/s, or
    /// GFLOP/s on a software adapter (where TFLOP/s would print 0.000).
    pub fn flop_rate(&self, flops: f64, secs: f64) -> (f64, &'static str) {
        if self.ctx.caps().software {
            (flops / secs / 1e9, "GFLOP/s")
        } else {
            (flops / secs / 1e12, "TFLOP/s")
        }
    }

    /// A random GPU tensor (values in [-1, 1)).
    pub fn rand(&self, shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = 0x1234_5678_9abc_def0u64;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_f32(v, shape, dtype, &self.dev).expect("upload")
    }

    /// Seconds per call of `f`: one warm-up call (compiles pipelines), then
    /// `iters` calls recorded into one pass and timed together.
    pub fn time(&self, iters: usize, mut f: impl FnMut() -> Tensor) -> f64 {
        drop(f());
        self.ctx.sync().expect("warm-up");
        let outs: Vec<Tensor> = (0..iters).map(|_| f()).collect();
        let t = self.ctx.sync_timed().expect("timed run");
        drop(outs);
        t / iters as f64
    }
}

/// Seconds per call of a CPU-backend op: one warm-up call, then the mean of
/// `iters` calls.
pub fn time_cpu(iters: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    drop(f());
    let t = std::time::Instant::now();
    for _ in 0..iters {
        drop(f());
    }
    t.elapsed().as_secs_f64() / iters as f64
}

/// One result line, aligned.
pub fn report(family: &str, variant: &str, shape: &str, secs: f64, rate: f64, unit: &str, vs: Option<f64>) {
    let ratio = vs
        .map(|base| format!("  x{:.2} vs naive", base / secs))
        .unwrap_or_default();
    println!(
        "{family:<11} {variant:<6} {shape:<44} {:>10.3} ms {:>9.3} {unit}{ratio}",
        secs * 1e3,
        rate
    );
}
