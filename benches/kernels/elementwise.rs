//! Element-wise kernels are bandwidth bound: report GB/s (bytes read + written).

use sd_wgpu::DType;

use crate::common::{report, Bench};

pub fn run(b: &Bench) {
    for dt in [DType::F32, DType::F16] {
        for shape in [[2usize, 320, 64, 64], [2, 1280, 8, 8]] {
            if b.short && shape[1] == 1280 {
                continue;
            }
            let x = b.rand(&shape, dt);
            let n: usize = shape.iter().product();
            let s = b.time(b.iters(20), || x.silu());
            let bytes = (2 * n * dt.size()) as f64;
            report(
                "silu",
                dt.name(),
                &format!("{shape:?}"),
                s,
                bytes / s / 1e9,
                "GB/s",
                None,
            );
            let g = b.rand(&[2, 4096, 2560], dt);
            let s = b.time(b.iters(20), || g.geglu());
            let bytes = (3 * 2 * 4096 * 1280 * dt.size()) as f64;
            report(
                "geglu",
                dt.name(),
                "[2, 4096, 2560]",
                s,
                bytes / s / 1e9,
                "GB/s",
                None,
            );
        }
    }
}
