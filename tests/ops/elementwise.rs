//! Element-wise family: activations, affine, broadcast binary, GEGLU, casts.

use sd_wgpu::ops::{Binary, Unary};
use sd_wgpu::{DType, Device, Tensor};

use crate::cases::elementwise::{self as sd, max_nmse};
use crate::common::*;

const UNARY: [Unary; 6] = [
    Unary::Gelu,
    Unary::QuickGelu,
    Unary::Silu,
    Unary::Exp,
    Unary::Affine {
        mul: 0.18215,
        add: -0.5,
    },
    Unary::Clamp { min: -0.3, max: 0.7 },
];

#[test]
fn unary_ops() {
    let mut rng = Rng::new(1);
    for dt in DTYPES {
        // Odd length (not a multiple of the workgroup) and an SD activation.
        for shape in [&[1usize][..], &[3, 1001], sd::ACT_64.x] {
            let (c, g) = pair(&mut rng, shape, 2.0, dt);
            for op in UNARY {
                assert_close(
                    &format!("{op:?} {dt} {shape:?}"),
                    &g.unary(op),
                    &c.unary(op),
                    max_nmse(dt, false),
                );
            }
        }
    }
}

#[test]
fn binary_broadcast() {
    let mut rng = Rng::new(2);
    for dt in DTYPES {
        let cases: [(&[usize], &[usize]); 5] = [
            (sd::RESIDUAL_64.x, sd::RESIDUAL_64.y),
            (sd::TIME_EMB_64.x, sd::TIME_EMB_64.y),
            (sd::BIAS_64.x, sd::BIAS_64.y),
            (&[3, 5, 7], &[1, 5, 1]),
            (&[1, 1, 1], &[1]),
        ];
        for (sa, sb) in cases {
            let (ca, ga) = pair(&mut rng, sa, 1.0, dt);
            let (cb, gb) = pair(&mut rng, sb, 1.0, dt);
            for op in [Binary::Add, Binary::Sub, Binary::Mul] {
                assert_close(
                    &format!("{op:?} {dt} {sa:?} {sb:?}"),
                    &ga.binary(op, &gb),
                    &ca.binary(op, &cb),
                    max_nmse(dt, true),
                );
            }
        }
    }
}

#[test]
fn geglu() {
    let mut rng = Rng::new(3);
    for dt in DTYPES {
        for shape in [sd::GEGLU_64.x, &[1, 7, 6], &[5, 2]] {
            let (c, g) = pair(&mut rng, shape, 1.5, dt);
            assert_close(
                &format!("geglu {dt} {shape:?}"),
                &g.geglu(),
                &c.geglu(),
                max_nmse(dt, false),
            );
        }
    }
}

#[test]
fn casts_round_trip() {
    let mut rng = Rng::new(4);
    let (c, g) = pair(&mut rng, &[3, 333], 100.0, DType::F32);
    assert_close(
        "cast f32->f16",
        &g.to_dtype(DType::F16),
        &c.to_dtype(DType::F16),
        0.0,
    );
    let h = c.to_dtype(DType::F16);
    let gh = h.to_device(&gpu()).unwrap();
    assert_close(
        "cast f16->f32",
        &gh.to_dtype(DType::F32),
        &h.to_dtype(DType::F32),
        0.0,
    );
}

/// A tensor above the 128 MiB storage-binding limit of llvmpipe is processed
/// in windows: every window must be written (checked against the CPU twin).
#[test]
fn larger_than_binding_limit() {
    let dev = gpu();
    let ctx = dev.gpu().unwrap().clone();
    let n = ctx.max_binding_elems(DType::F32) + 3_000_017;
    let v: Vec<f32> = (0..n).map(|i| (i % 1013) as f32 * 0.01 - 5.0).collect();
    let c = Tensor::from_vec(v, &[n], &Device::Cpu).unwrap();
    let g = c.to_device(&dev).unwrap();
    let small = Tensor::from_vec(vec![0.5], &[1], &Device::Cpu).unwrap();
    let gs = small.to_device(&dev).unwrap();
    assert_close("silu > limit", &g.silu(), &c.silu(), 1e-12);
    assert_close("mul > limit", &g.mul(&gs), &c.mul(&small), 1e-14);
    assert_close("add full > limit", &g.add(&g), &c.add(&c), 1e-14);
}

/// The CPU twins themselves, on hand-computed values.
#[test]
fn cpu_twin_hand_values() {
    let x = Tensor::from_vec(vec![1.0, -2.0, 3.0, 4.0], &[2, 2], &Device::Cpu).unwrap();
    let b = Tensor::from_vec(vec![10.0, 20.0], &[2], &Device::Cpu).unwrap();
    assert_eq!(x.add(&b).to_vec_f32().unwrap(), vec![11.0, 18.0, 13.0, 24.0]);
    assert_eq!(x.mul(&b).to_vec_f32().unwrap(), vec![10.0, -40.0, 30.0, 80.0]);
    let col = Tensor::from_vec(vec![1.0, 2.0], &[2, 1], &Device::Cpu).unwrap();
    assert_eq!(x.sub(&col).to_vec_f32().unwrap(), vec![0.0, -3.0, 1.0, 2.0]);
    // geglu([h, g]) = h * gelu(g): gelu(0) = 0, gelu(1) = 0.8413447
    let y = Tensor::from_vec(vec![2.0, 0.0, 3.0, 1.0], &[2, 2], &Device::Cpu)
        .unwrap()
        .geglu();
    let v = y.to_vec_f32().unwrap();
    assert_eq!(v[0], 0.0);
    assert!((v[1] - 3.0 * 0.841_344_7).abs() < 1e-6);
    let h = Tensor::from_vec(vec![1.0 / 3.0], &[1], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16);
    assert_eq!(h.to_vec_f32().unwrap(), vec![0.333_251_95]);
}
