//! Conv2d at the UNet's and the VAE decoder's 3x3 shapes: the rate counts
//! 2 * N * C_out * H_out * W_out * C_in * kh * kw FLOP.

use sd_wgpu::ops::{ConvOpts, Variant};
use sd_wgpu::{DType, Device};

use crate::common::{report, time_cpu, Bench};

/// `(dtype, [N, C_in, H, W], C_out)`, 3x3, stride 1, padding 1, bias: the
/// UNet's resnet convs at each level for a 64x64 latent with CFG (f16), the
/// VAE decoder at its 128x128 and 512x512 levels for a 512x512 image (f32,
/// as the VAE runs by default).
const FULL: [(DType, [usize; 4], usize); 5] = [
    (DType::F16, [2, 320, 64, 64], 320),
    (DType::F16, [2, 640, 32, 32], 640),
    (DType::F16, [2, 1280, 16, 16], 1280),
    (DType::F32, [1, 512, 128, 128], 512),
    (DType::F32, [1, 128, 512, 512], 128),
];
const SHORT: [(DType, [usize; 4], usize); 2] = [
    (DType::F16, [1, 320, 16, 16], 320),
    (DType::F32, [1, 128, 32, 32], 128),
];

/// Largest convolution (FLOP) the naive kernel is timed at on a software
/// adapter, where it runs at well under 1 GFLOP/s.
const NAIVE_MAX_SOFTWARE: f64 = 1e9;

pub fn run(b: &Bench) {
    let shapes: &[(DType, [usize; 4], usize)] = if b.short { &SHORT } else { &FULL };
    for &(dt, xs, c_out) in shapes {
        let x = b.rand(&xs, dt);
        let w = b.rand(&[c_out, xs[1], 3, 3], dt);
        let bias = b.rand(&[c_out], dt);
        let opts = ConvOpts::new(1, 1, Some(&bias));
        let flops = 2.0 * (xs[0] * c_out * xs[2] * xs[3] * xs[1] * 9) as f64;
        let shape = format!("{} {xs:?} 3x3 -> {c_out}", dt.name());
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
    let xs = if b.short {
        [1, 320, 32, 32]
    } else {
        [2, 320, 64, 64]
    };
    let cpu = |t: sd_wgpu::Tensor| t.to_device(&Device::Cpu).expect("read back");
    let x = cpu(b.rand(&xs, DType::F32));
    let w = cpu(b.rand(&[320, 320, 3, 3], DType::F32));
    let s = time_cpu(b.iters(3), || x.conv2d(&w, &ConvOpts::new(1, 1, None)));
    let flops = 2.0 * (xs[0] * 320 * xs[2] * xs[3] * 320 * 9) as f64;
    let shape = format!("f32 {xs:?} 3x3 -> 320, {} threads", rayon::current_num_threads());
    report("conv2d", "cpu", &shape, s, flops / s / 1e9, "GFLOP/s", None);
}
