//! Matmul at the UNet's linear-layer shapes (`tests/ops/cases/matmul.rs`)
//! and a square reference: the rate counts 2*M*N*K FLOP per product. Weights
//! are stored `[N, K]` as in `linear`; bias and residual as the layer has them.

use sd_wgpu::ops::{MatmulOpts, Variant};
use sd_wgpu::{DType, Device};

use crate::cases::matmul::{Linear, SD_LINEAR, SQUARE};
use crate::common::{report, time_cpu, Bench};

/// Largest case (FLOP) of the short run: the cross-attention K/V projection.
const SHORT_MAX_FLOPS: f64 = 1e8;

/// Largest product (FLOP) the naive kernel is timed at on a software
/// adapter, where it runs at well under 1 GFLOP/s.
const NAIVE_MAX_SOFTWARE: f64 = 1e9;

pub fn run(b: &Bench) {
    let cases: Vec<Linear> = std::iter::once(SQUARE)
        .chain(SD_LINEAR)
        .filter(|c| !b.short || c.flops() <= SHORT_MAX_FLOPS)
        .collect();
    for dt in [DType::F32, DType::F16] {
        for case in &cases {
            let x = b.rand(case.x, dt);
            let w = b.rand(&case.w(), dt);
            let bias = case.bias.then(|| b.rand(&[case.n], dt));
            let residual = case.residual.then(|| b.rand(&case.out(), dt));
            let opts = MatmulOpts {
                trans_b: true,
                bias: bias.as_ref(),
                residual: residual.as_ref(),
                ..Default::default()
            };
            let flops = case.flops();
            let (m, n, k) = (case.m(), case.n, case.k());
            let shape = format!("{} {} {m}x{n}x{k}", dt.name(), case.what);
            let iters = b.iters(((4e10 / flops) as usize).clamp(1, 20));
            let naive = (!b.ctx.caps().software || flops <= NAIVE_MAX_SOFTWARE)
                .then(|| b.time(iters.min(2), || x.matmul_variant(&w, &opts, Variant::Naive)));
            if let Some(s) = naive {
                let (rate, unit) = b.flop_rate(flops, s);
                report("matmul", "naive", &shape, s, rate, unit, None);
            }
            let s = b.time(iters, || x.matmul_variant(&w, &opts, Variant::Tuned));
            let (rate, unit) = b.flop_rate(flops, s);
            report("matmul", "tuned", &shape, s, rate, unit, naive);
        }
    }
    cpu_backend(b);
}

/// The CPU twin, which is also the CPU backend, at the attention projection.
fn cpu_backend(b: &Bench) {
    let case = SD_LINEAR[0];
    let cpu = |t: sd_wgpu::Tensor| t.to_device(&Device::Cpu).expect("read back");
    let x = cpu(b.rand(case.x, DType::F32));
    let w = cpu(b.rand(&case.w(), DType::F32));
    let s = time_cpu(b.iters(10), || x.linear(&w, None));
    let flops = case.flops();
    let (m, n, k) = (case.m(), case.n, case.k());
    let shape = format!("f32 {m}x{n}x{k}, {} threads", rayon::current_num_threads());
    report("matmul", "cpu", &shape, s, flops / s / 1e9, "GFLOP/s", None);
}
