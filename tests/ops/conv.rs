//! Conv2d family: both GPU kernels (naive direct, tuned implicit GEMM)
//! against the CPU twin in f32 and f16, at SD 1.5 / VAE shapes and awkward
//! ones; the VAE's 512x512 activations at and over the binding limit; the
//! CPU twin on hand-computed values.

use sd_wgpu::ops::{ConvOpts, Variant};
use sd_wgpu::{DType, Device, Tensor};

use crate::cases::conv::{self as sd, max_nmse, Conv};
use crate::common::*;

const BOTH: [Variant; 2] = [Variant::Naive, Variant::Tuned];

fn check(rng: &mut Rng, dt: DType, c: Conv, variants: &[Variant]) {
    let (cx, gx) = pair(rng, &c.x, 1.0, dt);
    // Weights ~ 1/sqrt(fan-in) keep outputs O(1), well inside f16's range.
    let fan_in = (c.w[1] * c.w[2] * c.w[3]) as f32;
    let (cw, gw) = pair(rng, &c.w, fan_in.sqrt().recip(), dt);
    let (cb, gb) = pair(rng, &[c.w[0]], 1.0, dt);
    let mut opts = ConvOpts {
        stride: c.stride,
        padding: c.pad,
        bias: c.bias.then_some(&cb),
        residual: None,
    };
    let shape = cx.conv2d(&cw, &opts).shape().to_vec();
    let (cr, gr) = pair(rng, &shape, 1.0, dt);
    opts.residual = c.residual.then_some(&cr);
    let cpu = cx.conv2d(&cw, &opts);
    let gopts = ConvOpts {
        bias: c.bias.then_some(&gb),
        residual: c.residual.then_some(&gr),
        ..opts
    };
    for &v in variants {
        let what = format!(
            "conv2d {} {dt} x {:?} w {:?} stride {} pad {:?} (bias {}, residual {}) {v:?}",
            c.what, c.x, c.w, c.stride, c.pad, c.bias, c.residual
        );
        assert_close(&what, &gx.conv2d_variant(&gw, &gopts, v), &cpu, max_nmse(dt));
    }
}

/// The UNet's convolutions at a 64x64 latent, CFG batch 2.
#[test]
fn sd_unet_convs() {
    let mut rng = Rng::new(20);
    for dt in DTYPES {
        let cases = [
            sd::UNET_RESNET_64,
            sd::UNET_DOWN_64,
            sd::UNET_SHORTCUT_32,
            sd::UNET_CONV_IN,
        ];
        for c in cases {
            check(&mut rng, dt, c, &[Variant::Tuned]);
        }
    }
}

/// The VAE encoder's own forms at a reduced size: conv_in from 3 RGB channels
/// (K = 27, no vec4 path) and the down-sampler, padded (0, 1, 0, 1) then
/// stride 2 without padding.
#[test]
fn vae_convs() {
    let mut rng = Rng::new(21);
    for dt in DTYPES {
        check(&mut rng, dt, sd::VAE_ENC_IN_64, &BOTH);
        check(&mut rng, dt, sd::VAE_ENC_DOWN_64, &BOTH);
    }
}

/// Odd sizes (tile, vec4 and row edges), 1-sized dims, batch > 1, general
/// kernel sizes and asymmetric padding, a strided 1x1.
#[test]
fn awkward_shapes() {
    let mut rng = Rng::new(22);
    let cases = [
        Conv {
            what: "",
            x: [1, 1, 1, 1],
            w: [1, 1, 1, 1],
            stride: 1,
            pad: [0; 4],
            bias: true,
            residual: true,
        },
        Conv {
            what: "",
            x: [3, 5, 7, 9],
            w: [70, 5, 3, 3],
            stride: 1,
            pad: [1; 4],
            bias: true,
            residual: true,
        },
        Conv {
            what: "",
            x: [2, 8, 15, 17],
            w: [13, 8, 3, 3],
            stride: 2,
            pad: [1; 4],
            bias: false,
            residual: true,
        },
        Conv {
            what: "",
            x: [1, 4, 5, 7],
            w: [3, 4, 2, 3],
            stride: 1,
            pad: [2, 0, 1, 3],
            bias: true,
            residual: false,
        },
        Conv {
            what: "",
            x: [2, 6, 11, 11],
            w: [9, 6, 5, 5],
            stride: 2,
            pad: [2; 4],
            bias: true,
            residual: false,
        },
        Conv {
            what: "",
            x: [2, 12, 9, 10],
            w: [20, 12, 1, 1],
            stride: 2,
            pad: [0; 4],
            bias: true,
            residual: true,
        },
        // 1x1 stride 1: the vec4 pointwise path, 130 channels: the tall tile
        Conv {
            what: "",
            x: [2, 32, 8, 8],
            w: [130, 32, 1, 1],
            stride: 1,
            pad: [0; 4],
            bias: true,
            residual: true,
        },
        // K = 130*9 not a multiple of 4; 200 pixels: the wide tile
        Conv {
            what: "",
            x: [1, 130, 10, 20],
            w: [96, 130, 3, 3],
            stride: 1,
            pad: [1; 4],
            bias: true,
            residual: false,
        },
    ];
    for dt in DTYPES {
        for c in cases {
            check(&mut rng, dt, c, &BOTH);
        }
    }
}

/// A grid beyond 65535 workgroups folds into y: 16.8M outputs of the naive
/// kernel (a 1x1 over one 4100x4100 channel).
#[test]
fn grid_over_65535_groups() {
    let mut rng = Rng::new(23);
    let c = Conv {
        what: "",
        x: [1, 1, 4100, 4100],
        w: [1, 1, 1, 1],
        stride: 1,
        pad: [0; 4],
        bias: true,
        residual: false,
    };
    check(&mut rng, DType::F32, c, &[Variant::Naive]);
}

/// Compares output channels `c0..c0+n` of a GPU result `[1, C, H, W]` with the
/// CPU twin run on the matching rows of the weight and bias: the reference
/// for a few channels of a convolution too large to recompute on the CPU.
fn check_channels(
    what: &str,
    gpu: &[f32],
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    opts: &ConvOpts,
    c0: usize,
) {
    let n = 4;
    let wc = w.narrow(0, c0, n);
    let bc = bias.narrow(0, c0, n);
    let cpu = x.conv2d(
        &wc,
        &ConvOpts {
            bias: Some(&bc),
            ..*opts
        },
    );
    let plane = cpu.elem_count() / n;
    let got = &gpu[c0 * plane..(c0 + n) * plane];
    let reference = cpu.to_vec_f32().unwrap();
    let e = nmse(got, &reference);
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    assert!(
        e <= max_nmse(DType::F32),
        "{what}: channels {c0}..{}: NMSE {e:.3e}",
        c0 + n
    );
}

/// The VAE decoder at 512x512 in f32: a 3x3 128 -> 128 conv on
/// [1, 128, 512, 512], exactly 128 MiB, the binding limit of llvmpipe (bound
/// whole, starting aligned). Checked on the first and last 4 channels.
#[test]
fn vae_512_at_binding_limit() {
    let mut rng = Rng::new(24);
    let case = sd::VAE_DEC_512;
    let (cx, gx) = pair(&mut rng, &case.x, 1.0, DType::F32);
    let (cw, gw) = pair(&mut rng, &case.w, 1.0 / 34.0, DType::F32);
    let (cb, gb) = pair(&mut rng, &[128], 1.0, DType::F32);
    let opts = ConvOpts::new(1, 1, None);
    let g = gx
        .conv2d(
            &gw,
            &ConvOpts {
                bias: Some(&gb),
                ..opts
            },
        )
        .to_vec_f32()
        .unwrap();
    for c0 in [0, 124] {
        check_channels("vae 512 conv", &g, &cx, &cw, &cb, &opts, c0);
    }
}

/// An input over the binding limit, [1, 256, 512, 512] f32 (256 MiB): the
/// input channels are split in chunks accumulated in the output, and the
/// residual must be added once. The VAE encoder's down-sampler form keeps
/// it affordable on a CPU adapter.
#[test]
fn input_over_binding_limit() {
    let mut rng = Rng::new(25);
    let c = Conv {
        what: "",
        x: [1, 256, 512, 512],
        w: [8, 256, 3, 3],
        stride: 2,
        pad: [0, 1, 0, 1],
        bias: true,
        residual: true,
    };
    check(&mut rng, DType::F32, c, &[Variant::Tuned]);
}

fn cpu(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// The CPU twin on values worked out by hand.
#[test]
fn cpu_twin_hand_values() {
    let ones = cpu(&[1.0; 9], &[1, 1, 3, 3]);
    // x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], 3x3 box sum with padding 1:
    // corner (0,0) = 1+2+4+5 = 12, edge (0,1) = 1+2+3+4+5+6 = 21, centre = 45, ...
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let x = cpu(&x, &[1, 1, 3, 3]);
    let y = x.conv2d(&ones, &ConvOpts::new(1, 1, None));
    assert_eq!(
        y.to_vec_f32().unwrap(),
        [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]
    );
    // The VAE down-sampler: x = 0..16 as 4x4, pad (0, 1, 0, 1), stride 2, so
    // the output is 2x2 and the last row and column read the zero padding:
    // (0,0) = 0+1+2+4+5+6+8+9+10 = 45, (0,1) = 2+3+6+7+10+11 = 39,
    // (1,0) = 8+9+10+12+13+14 = 66, (1,1) = 10+11+14+15 = 50.
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let x = cpu(&x, &[1, 1, 4, 4]);
    let down = ConvOpts {
        stride: 2,
        padding: [0, 1, 0, 1],
        bias: None,
        residual: None,
    };
    assert_eq!(
        x.conv2d(&ones, &down).to_vec_f32().unwrap(),
        [45.0, 39.0, 66.0, 50.0]
    );
    // 1x1, 2 -> 3 channels with bias and residual: x = ch0 [1, 2], ch1 [3, 4];
    // w rows [1, 0], [0, 1], [1, -1]; bias [0, 10, 0.5]; residual 1:
    // ch0 [1, 2] + 1, ch1 [13, 14] + 1, ch2 [1-3+0.5, 2-4+0.5] + 1.
    let x = cpu(&[1.0, 2.0, 3.0, 4.0], &[1, 2, 1, 2]);
    let w = cpu(&[1.0, 0.0, 0.0, 1.0, 1.0, -1.0], &[3, 2, 1, 1]);
    let b = cpu(&[0.0, 10.0, 0.5], &[3]);
    let r = cpu(&[1.0; 6], &[1, 3, 1, 2]);
    let opts = ConvOpts {
        stride: 1,
        padding: [0; 4],
        bias: Some(&b),
        residual: Some(&r),
    };
    assert_eq!(
        x.conv2d(&w, &opts).to_vec_f32().unwrap(),
        [2.0, 3.0, 14.0, 15.0, -0.5, -0.5]
    );
}
