//! Conv2d at the UNet's and the VAE decoder's 3x3 shapes
//! (`tests/ops/cases/conv.rs`): the rate counts 2 * N * C_out * H_out *
//! W_out * C_in * kh * kw FLOP.

use sd_wgpu::ops::{ConvOpts, Variant};
use sd_wgpu::{DType, Device};

use crate::cases::conv::{self as sd, Conv};
use crate::common::{report, time_cpu, Bench};

/// The UNet's resnet convs at each level for a 64x64 latent with CFG (f16),
/// the VAE decoder at its 128x128 and 512x512 levels for a 512x512 image
/// (f32, as the VAE runs by default).
const FULL: [(DType, Conv); 5] = [
    (DType::F16, sd::UNET_RESNET_64),
    (DType::F16, sd::UNET_RESNET_32),
    (DType::F16, sd::UNET_RESNET_16),
    (DType::F32, sd::VAE_DEC_128),
    (DType::F32, sd::VAE_DEC_512),
];
/// The UNet's first level at batch 1 and 16x16, the VAE's last at 32x32.
const SHORT: [(DType, Conv); 2] = [
    (
        DType::F16,
        Conv {
            what: "unet resnet, 1x16x16",
            x: [1, 320, 16, 16],
            ..sd::UNET_RESNET_64
        },
    ),
    (
        DType::F32,
        Conv {
            what: "vae dec, 32x32",
            x: [1, 128, 32, 32],
            ..sd::VAE_DEC_512
        },
    ),
];

/// Largest convolution (FLOP) the naive kernel is timed at on a software
/// adapter, where it runs at well under 1 GFLOP/s.
const NAIVE_MAX_SOFTWARE: f64 = 1e9;

pub fn run(b: &Bench) {
    let cases: &[(DType, Conv)] = if b.short { &SHORT } else { &FULL };
    for &(dt, case) in cases {
        let x = b.rand(&case.x, dt);
        let w = b.rand(&case.w, dt);
        let bias = case.bias.then(|| b.rand(&[case.w[0]], dt));
        let [ho, wo] = case.out_hw();
        let residual = case.residual.then(|| b.rand(&[case.x[0], case.w[0], ho, wo], dt));
        let opts = ConvOpts {
            stride: case.stride,
            padding: case.pad,
            bias: bias.as_ref(),
            residual: residual.as_ref(),
        };
        let flops = case.flops();
        let shape = format!("{} {} {:?} -> {}", dt.name(), case.what, case.x, case.w[0]);
        let iters = b.iters(((4e10 / flops) as usize).clamp(1, 20));
        let naive = (!b.ctx.caps().software || flops <= NAIVE_MAX_SOFTWARE)
            .then(|| b.time(iters.min(2), || x.conv2d_variant(&w, &opts, Variant::Naive)));
        if let Some(s) = naive {
            let (rate, unit) = b.flop_rate(flops, s);
            report("conv2d", "naive", &shape, s, rate, unit, None);
        }
        let s = b.time(iters, || x.conv2d_variant(&w, &opts, Variant::Tuned));
        let (rate, unit) = b.flop_rate(flops, s);
        report("conv2d", "tuned", &shape, s, rate, unit, naive);
    }
    cpu_backend(b);
}

/// The CPU twin, which is also the CPU backend, at the UNet's first level
/// (an eighth of it in short mode).
fn cpu_backend(b: &Bench) {
    let case = if b.short {
        Conv {
            x: [1, 320, 32, 32],
            ..sd::UNET_RESNET_64
        }
    } else {
        sd::UNET_RESNET_64
    };
    let cpu = |t: sd_wgpu::Tensor| t.to_device(&Device::Cpu).expect("read back");
    let x = cpu(b.rand(&case.x, DType::F32));
    let w = cpu(b.rand(&case.w, DType::F32));
    let s = time_cpu(b.iters(3), || x.conv2d(&w, &ConvOpts::new(1, 1, None)));
    let shape = format!(
        "f32 {:?} 3x3 -> 320, {} threads",
        case.x,
        rayon::current_num_threads()
    );
    report(
        "conv2d",
        "cpu",
        &shape,
        s,
        case.flops() / s / 1e9,
        "GFLOP/s",
        None,
    );
}
