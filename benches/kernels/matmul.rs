//! Matmul at the UNet's linear-layer shapes and a square reference: the rate
//! counts 2*M*N*K FLOP per product. Weights are stored `[N, K]` as in `linear`.

use sd_wgpu::ops::{MatmulOpts, Variant};
use sd_wgpu::{DType, Device};

use crate::common::{report, time_cpu, Bench};

/// `(M, N, K)`: a square reference, then the UNet's projections at a 64x64
/// latent (attention 320, feed-forward 320 <-> 1280, the deeper levels).
const FULL: [(usize, usize, usize); 6] = [
    (4096, 4096, 4096),
    (4096, 320, 320),
    (4096, 1280, 320),
    (4096, 320, 1280),
    (1024, 640, 640),
    (256, 1280, 1280),
];
const SHORT: [(usize, usize, usize); 1] = [(1024, 320, 320)];

/// Largest product (FLOP) the naive kernel is timed at on a software
/// adapter, where it runs at well under 1 GFLOP/s.
const NAIVE_MAX_SOFTWARE: f64 = 1e9;

pub fn run(b: &Bench) {
    let shapes: &[(usize, usize, usize)] = if b.short { &SHORT } else { &FULL };
    for dt in [DType::F32, DType::F16] {
        for &(m, n, k) in shapes {
            let x = b.rand(&[m, k], dt);
            let w = b.rand(&[n, k], dt);
            let bias = b.rand(&[n], dt);
            let opts = MatmulOpts {
                trans_b: true,
                bias: Some(&bias),
                ..Default::default()
            };
            let flops = 2.0 * (m * n * k) as f64;
            let shape = format!("{} {m}x{n}x{k}", dt.name());
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
    let (m, n, k) = (4096, 320, 320);
    let cpu = |t: sd_wgpu::Tensor| t.to_device(&Device::Cpu).expect("read back");
    let x = cpu(b.rand(&[m, k], DType::F32));
    let w = cpu(b.rand(&[n, k], DType::F32));
    let s = time_cpu(b.iters(10), || x.linear(&w, None));
    let flops = 2.0 * (m * n * k) as f64;
    let shape = format!("f32 {m}x{n}x{k}, {} threads", rayon::current_num_threads());
    report("matmul", "cpu", &shape, s, flops / s / 1e9, "GFLOP/s", None);
}
