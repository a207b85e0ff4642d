//! Layout kernels move values without arithmetic: GB/s counts x read once
//! and y written once. The permutes are the transformer's way in and out,
//! `[B, C, H, W] <-> [B, HW, C]`, tiled (tuned) against the per-element
//! gather (naive).

use sd_wgpu::ops::Variant;
use sd_wgpu::DType;

use crate::common::{report, Bench};

pub fn run(b: &Bench) {
    for dt in [DType::F16, DType::F32] {
        if b.short && dt == DType::F32 {
            continue;
        }
        let x = b.rand(&[2, 320, 64, 64], dt);
        let y = x.reshape(&[2, 320, 4096]).permute(&[0, 2, 1]);
        let bytes = (2 * x.size_in_bytes()) as f64;
        for (t, perm, shape) in [
            (&x, &[0, 2, 3, 1][..], "[2, 320, 64, 64] -> [0, 2, 3, 1]"),
            (&y, &[0, 2, 1][..], "[2, 4096, 320] -> [0, 2, 1]"),
        ] {
            let naive = b.time(b.iters(20), || t.permute_variant(perm, Variant::Naive));
            let s = b.time(b.iters(20), || t.permute(perm));
            report(
                "permute",
                "naive",
                shape,
                naive,
                bytes / naive / 1e9,
                "GB/s",
                None,
            );
            report(
                "permute",
                dt.name(),
                shape,
                s,
                bytes / s / 1e9,
                "GB/s",
                Some(naive),
            );
        }
    }
}
