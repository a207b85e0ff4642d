//! Attention: flash (tuned) against naive at the SD shapes of
//! `tests/ops/cases/attention.rs`, counting its `flops`.

use sd_wgpu::ops::{attention_variant, AttentionOpts, Variant};
use sd_wgpu::DType;

use crate::cases::attention::{self as sd, Attention};
use crate::common::{report, Bench};

/// SD 1.5 at 512x512 (64x64 latent, CFG batch 2) and 768x768, the VAE mid
/// block at 512x512, and the CLIP text encoder.
const FULL: [Attention; 9] = [
    sd::UNET_SELF_64,
    sd::UNET_SELF_96,
    sd::UNET_CROSS_64,
    sd::UNET_SELF_32,
    sd::UNET_CROSS_32,
    sd::UNET_SELF_16,
    sd::UNET_CROSS_16,
    sd::VAE_MID_64,
    sd::CLIP,
];

/// A few shapes small enough for a software adapter (run in f16 only).
const SHORT: [Attention; 4] = [sd::UNET_CROSS_64, sd::UNET_SELF_16, sd::VAE_MID_16, sd::CLIP];

/// The naive kernel is skipped above this many flops on a software adapter,
/// where one call would take minutes.
const SOFTWARE_NAIVE_MAX_FLOPS: f64 = 100e9;

pub fn run(b: &Bench) {
    let shapes: &[Attention] = if b.short { &SHORT } else { &FULL };
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
            let opts = AttentionOpts {
                causal: s.causal,
                ..AttentionOpts::new(s.heads, s.w)
            };
            let flops = s.flops();
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
                s.d()
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
    }
}
