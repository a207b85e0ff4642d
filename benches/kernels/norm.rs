//! Norm kernels are bandwidth bound: GB/s counts the bytes the op must move,
//! x read once and y written once. (The norm kernels read x twice,
//! for the statistics and to normalise; the second read is often served by
//! the cache, so DRAM traffic is between 1x and 1.5x the figure's bytes.)
//!
//! Each norm case runs on the default context (subgroup reductions when the
//! adapter has them, "sg") and on one with subgroups off (workgroup-memory
//! tree, "wg"); the sg line gives the ratio measured in the same run.

use sd_wgpu::gpu::{AdapterPreference, GpuContext, GpuOptions};
use sd_wgpu::{DType, Device};

use crate::cases::norm::{self as sd, bytes, GroupNorm, LayerNorm};
use crate::common::{report, Bench};

/// The same adapter with subgroups off.
fn without_subgroups(b: &Bench) -> Bench {
    let opts = GpuOptions {
        subgroups: false,
        ..Default::default()
    };
    let ctx = GpuContext::new_with(AdapterPreference::HardwareFirst, opts).expect("second context");
    Bench {
        dev: Device::Gpu(ctx.clone()),
        ctx,
        short: b.short,
    }
}

/// Seconds per call of `time` on both contexts; prints the two lines.
fn sg_vs_wg<C: Copy>(both: &[Bench; 2], family: &str, dt: DType, shape: &[usize], case: C, time: Timer<C>) {
    let secs = both.each_ref().map(|b| time(b, case, dt));
    let bytes = bytes(shape, dt);
    for (i, tag) in ["sg", "wg"].iter().enumerate() {
        let note = match (i, both[0].ctx.caps().subgroups) {
            (0, true) => format!(" sg x{:.2} vs wg", secs[1] / secs[0]),
            (0, false) => " (adapter has no subgroups)".into(),
            _ => String::new(),
        };
        report(
            family,
            &format!("{}/{tag}", dt.name()),
            &format!("{shape:?}{note}"),
            secs[i],
            bytes / secs[i] / 1e9,
            "GB/s",
            None,
        );
    }
}

type Timer<C> = fn(&Bench, C, DType) -> f64;

fn group_norm(b: &Bench, c: GroupNorm, dt: DType) -> f64 {
    let x = b.rand(&c.x, dt);
    let (gamma, beta) = (b.rand(&[c.x[1]], dt), b.rand(&[c.x[1]], dt));
    // Every timed output stays alive until the sync: fewer of the VAE's 128 MiB.
    let iters = if x.size_in_bytes() > 64 << 20 { 5 } else { 20 };
    b.time(b.iters(iters), || {
        if c.silu {
            x.group_norm_silu(c.groups, c.eps, &gamma, &beta)
        } else {
            x.group_norm(c.groups, c.eps, &gamma, &beta)
        }
    })
}

fn layer_norm(b: &Bench, c: LayerNorm, dt: DType) -> f64 {
    let d = c.x[2];
    let x = b.rand(&c.x, dt);
    let (gamma, beta) = (b.rand(&[d], dt), b.rand(&[d], dt));
    b.time(b.iters(20), || x.layer_norm(&gamma, &beta, c.eps))
}

pub fn run(b: &Bench) {
    let both = [
        Bench {
            ctx: b.ctx.clone(),
            dev: b.dev.clone(),
            short: b.short,
        },
        without_subgroups(b),
    ];
    // Group norm: UNet resnets (64x64 and 8x8 latents, batch 2 for CFG), the
    // VAE decoder's mid block at 512^2 (64x64 latent) and its up-blocks.
    let mut cases = vec![
        (sd::UNET_RESNET_64, DType::F16),
        (sd::UNET_RESNET_64, DType::F32),
        (sd::VAE_MID_64, DType::F32),
    ];
    if !b.short {
        cases.extend([
            (sd::UNET_RESNET_8, DType::F16),
            (sd::VAE_UP_256, DType::F32),
            (sd::VAE_UP_512, DType::F32),
        ]);
    }
    for (c, dt) in cases {
        sg_vs_wg(&both, "group_norm", dt, &c.x, c, group_norm);
    }
    // Layer norm: UNet transformer rows at 64x64 (320 wide), CLIP (768 wide).
    let mut cases = vec![(sd::UNET_TRANSFORMER_64, DType::F16)];
    if !b.short {
        cases.extend([(sd::UNET_TRANSFORMER_64, DType::F32), (sd::CLIP, DType::F16)]);
    }
    for (c, dt) in cases {
        sg_vs_wg(&both, "layer_norm", dt, &c.x, c, layer_norm);
    }
}
