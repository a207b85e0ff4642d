//! Matmul at the UNet's linear-layer shapes and a square reference: TFLOP/s
//! counts 2*M*N*K per product. Weights are stored `[N, K]` as in `linear`.

use sd_wgpu::ops::{MatmulOpts, Variant};
use sd_wgpu::DType;

use crate::common::{report, Bench};

/// `(M, N, K)`: a square reference, then the UNet's projections at 64x64
/// latents (attention 320, feed-forward 320 <-> 1280, deeper levels).
const FULL: [(usize, usize, usize); 6] = [
    (4096, 4096, 4096),
    (4096, 320, 320),
    (4096, 1280, 320),
    (4096, 320, 1280),
    (1024, 640, 640),
    (256, 1280, 1280),
];
const SHORT: [(usize, usize, usize); 2] = [(4096, 320, 320), (1024, 640, 640)];

pub fn run(b: &Bench) {
    let shapes: &[(usize, usize, usize)] = if b.short { &SHORT } else { &FULL };
    for dt in [DType::F32, DType::F16] {
        for &(m, n, k) in shapes {
            let x = b.rand(&[m, k], dt);
            let w = b.rand(&[n, k], dt);
            let opts = MatmulOpts {
                trans_b: true,
                ..Default::default()
            };
            let flops = 2.0 * (m * n * k) as f64;
            let shape = format!("{} {m}x{n}x{k}", dt.name());
            let iters = b.iters(((4e10 / flops) as usize).clamp(1, 20));
            // The naive kernel is too slow to time at the largest size on a CPU adapter.
            let naive = (!b.ctx.caps().software || flops < 1e11)
                .then(|| b.time(iters.min(3), || x.matmul_variant(&w, &opts, Variant::Naive)));
            if let Some(s) = naive {
                report("matmul", "naive", &shape, s, flops / s / 1e12, "TFLOP/s", None);
            }
            let s = b.time(iters, || x.matmul_variant(&w, &opts, Variant::Tuned));
            report("matmul", "tuned", &shape, s, flops / s / 1e12, "TFLOP/s", naive);
        }
    }
}
