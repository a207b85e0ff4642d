//! Attention: flash (tuned) against naive at the SD shapes, counting
//! 4 * B * H * Lq * Lk * D flops (Q K^T and P V, a multiply and an add each;
//! about half of that for causal); softmax over the last dim in GB/s (bytes
//! read once and written once).

use sd_wgpu::ops::{attention_variant, AttentionOpts, Variant};
use sd_wgpu::DType;

use crate::common::{report, Bench};

/// One attention problem: q [b, lq, w], k/v [b, lk, w], `heads` heads.
struct Shape {
    what: &'static str,
    b: usize,
    lq: usize,
    lk: usize,
    w: usize,
    heads: usize,
    causal: bool,
}

const fn shape(what: &'static str, b: usize, lq: usize, lk: usize, w: usize, heads: usize) -> Shape {
    Shape {
        what,
        b,
        lq,
        lk,
        w,
        heads,
        causal: false,
    }
}

/// SD 1.5 at 512x512 (64x64 latent, CFG batch 2) and 768x768, the VAE mid
/// block at 512x512, and the CLIP text encoder.
const FULL: [Shape; 9] = [
    shape("unet self 64x64", 2, 4096, 4096, 320, 8),
    shape("unet self 96x96", 2, 9216, 9216, 320, 8),
    shape("unet cross 64x64", 2, 4096, 77, 320, 8),
    shape("unet self 32x32", 2, 1024, 1024, 640, 8),
    shape("unet cross 32x32", 2, 1024, 77, 640, 8),
    shape("unet self 16x16", 2, 256, 256, 1280, 8),
    shape("unet cross 16x16", 2, 256, 77, 1280, 8),
    shape("vae mid 64x64", 1, 4096, 4096, 512, 1),
    Shape {
        causal: true,
        ..shape("clip", 1, 77, 77, 768, 12)
    },
];

/// A few shapes small enough for a software adapter (run in f16 only).
const SHORT: [Shape; 4] = [
    shape("unet cross 64x64", 2, 4096, 77, 320, 8),
    shape("unet self 16x16", 2, 256, 256, 1280, 8),
    shape("vae mid 16x16", 1, 256, 256, 512, 1),
    Shape {
        causal: true,
        ..shape("clip", 1, 77, 77, 768, 12)
    },
];

/// The naive kernel is skipped above this many flops on a software adapter,
/// where one call would take minutes.
const SOFTWARE_NAIVE_MAX_FLOPS: f64 = 100e9;

pub fn run(b: &Bench) {
    let shapes: &[Shape] = if b.short { &SHORT } else { &FULL };
    let software = b.ctx.caps().software;
    let dtypes: &[DType] = if b.short {
        &[DType::F16]
    } else {
        &[DType::F16, DType::F32]
    };
    for &dt in dtypes {
        for s in shapes {
            let q = b.rand(&[s.b, s.lq, s.w], dt);
            let k = b.rand(&[s.b, s.lk, s.w], dt);
            let v = b.rand(&[s.b, s.lk, s.w], dt);
            let opts = AttentionOpts::new(s.heads, s.w, s.causal);
            let pairs = if s.causal {
                s.lq * (s.lq + 1) / 2
            } else {
                s.lq * s.lk
            };
            let flops = (4 * s.b * pairs * s.w) as f64;
            let iters = b.iters(if flops > 10e9 {
                1
            } else if flops > 1e9 {
                3
            } else {
                10
            });
            let name = format!(
                "{} [{},{},{}]x{} H{} D{}",
                s.what,
                s.b,
                s.lq,
                s.w,
                s.lk,
                s.heads,
                s.w / s.heads
            );
            let naive = (!software || flops <= SOFTWARE_NAIVE_MAX_FLOPS)
                .then(|| b.time(iters, || attention_variant(&q, &k, &v, &opts, Variant::Naive)));
            if let Some(t) = naive {
                let (rate, unit) = b.flop_rate(flops, t);
                report("attn naive", dt.name(), &name, t, rate, unit, None);
            }
            let t = b.time(iters, || attention_variant(&q, &k, &v, &opts, Variant::Tuned));
            let (rate, unit) = b.flop_rate(flops, t);
            report("attn flash", dt.name(), &name, t, rate, unit, naive);
        }
        for shape in [[2usize, 8, 4096], [24, 77, 77]] {
            let x = b.rand(&shape, dt);
            let t = b.time(b.iters(10), || x.softmax_last());
            let bytes = (2 * shape.iter().product::<usize>() * dt.size()) as f64;
            report(
                "softmax",
                dt.name(),
                &format!("{shape:?}"),
                t,
                bytes / t / 1e9,
                "GB/s",
                None,
            );
        }
    }
}
