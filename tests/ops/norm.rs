//! Norm family: group norm (+ fused SiLU) and layer norm, on both reduction
//! paths (subgroups and workgroup memory).
//!
//! Error bounds (NMSE against the f64 CPU twin). Outputs are normalised, so
//! errors are relative to values of order 1:
//! - f32: the statistics are f32 sums of centred values (relative error
//!   ~1e-7) and `inverseSqrt` is good to 2 ulp, so NMSE is ~1e-13 (measured
//!   5e-15..3e-14); 1e-10 leaves room without hiding a wrong channel or
//!   group (NMSE ~1).
//! - f32 with a large mean (1000 + N(0,1)): the mean itself is an f32 near
//!   1000, exact only to half an ulp (3e-5 of one sigma), so NMSE can reach
//!   ~1e-9 (measured 3e-10..6e-10): bound 1e-8. A naive E[x^2] - E[x]^2 in
//!   f32 misses the variance of these 16384 values by ~5% (ulp of 1e6 is
//!   0.06; checked with numpy pairwise sums), NMSE ~1e-3.
//! - f16 output: both sides round to 11 bits, so they differ only where the
//!   f32 difference crosses a rounding boundary (measured 1e-11..6e-9); one
//!   ulp everywhere would be NMSE ~1e-7: bound 1e-6, as for the element-wise ops.

use sd_wgpu::{DType, Device, Tensor};

use crate::cases::norm::{self as sd, max_nmse};
use crate::common::*;

fn devices() -> [Device; 2] {
    [gpu(), gpu_no_subgroups()]
}

fn name(dev: &Device) -> &'static str {
    if dev.gpu().is_some_and(|c| c.caps().subgroups) {
        "subgroups"
    } else {
        "workgroup"
    }
}

/// Random CPU tensor `mean + N(0,1) * scale`, stored in `dtype`.
fn rand(rng: &mut Rng, shape: &[usize], mean: f32, scale: f32, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    let v = rng.vec(n, scale).into_iter().map(|x| x + mean).collect();
    Tensor::from_f32(v, shape, dtype, &Device::Cpu).unwrap()
}

/// Checks group norm of `x [N, C, *]` on every device against the CPU twin.
fn check_group_norm(rng: &mut Rng, x: &Tensor, groups: usize, eps: f32, silu: bool, max_nmse: f64) {
    check_group_norm_on(&devices(), rng, x, groups, eps, silu, max_nmse);
}

fn check_group_norm_on(
    devs: &[Device],
    rng: &mut Rng,
    x: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
    max_nmse: f64,
) {
    let c = x.dim(1);
    let dt = x.dtype();
    let gamma = rand(rng, &[c], 1.0, 0.3, dt);
    let beta = rand(rng, &[c], 0.0, 0.3, dt);
    let norm = |x: &Tensor, gamma: &Tensor, beta: &Tensor| {
        if silu {
            x.group_norm_silu(groups, eps, gamma, beta)
        } else {
            x.group_norm(groups, eps, gamma, beta)
        }
    };
    let want = norm(x, &gamma, &beta);
    for dev in devs {
        let got = norm(
            &x.to_device(dev).unwrap(),
            &gamma.to_device(dev).unwrap(),
            &beta.to_device(dev).unwrap(),
        );
        let what = format!(
            "group_norm {dt} {:?} g{groups} silu {silu} ({})",
            x.shape(),
            name(dev)
        );
        assert_close(&what, &got, &want, max_nmse);
    }
}

fn check_layer_norm(rng: &mut Rng, x: &Tensor, max_nmse: f64) {
    let d = x.dim(-1);
    let dt = x.dtype();
    let gamma = rand(rng, &[d], 1.0, 0.3, dt);
    let beta = rand(rng, &[d], 0.0, 0.3, dt);
    let want = x.layer_norm(&gamma, &beta, 1e-5);
    for dev in devices() {
        let got = x.to_device(&dev).unwrap().layer_norm(
            &gamma.to_device(&dev).unwrap(),
            &beta.to_device(&dev).unwrap(),
            1e-5,
        );
        let what = format!("layer_norm {dt} {:?} ({})", x.shape(), name(&dev));
        assert_close(&what, &got, &want, max_nmse);
    }
}

#[test]
fn group_norm_unet_shapes() {
    let mut rng = Rng::new(21);
    for dt in DTYPES {
        // (case, mean, spread of the input)
        let cases = [
            (sd::UNET_RESNET_64, 0.3, 2.0),
            (sd::UNET_PROJ_IN_64, 0.3, 2.0),
            (sd::UNET_RESNET_8, -0.5, 3.0),
        ];
        for (c, mean, scale) in cases {
            let x = rand(&mut rng, &c.x, mean, scale, dt);
            check_group_norm(&mut rng, &x, c.groups, c.eps, c.silu, max_nmse(dt));
        }
    }
}

/// The VAE decoder's last up-block at 512x512 (`cases::norm::VAE_UP_512`),
/// f32 as the VAE runs.
#[test]
fn group_norm_vae() {
    let mut rng = Rng::new(22);
    let c = sd::VAE_UP_512;
    let x = rand(&mut rng, &c.x, 0.0, 4.0, DType::F32);
    check_group_norm(&mut rng, &x, c.groups, c.eps, c.silu, max_nmse(DType::F32));
}

/// 256 MiB of f32, twice the binding limit: windows of chunks, with groups
/// that straddle two windows.
#[test]
fn group_norm_over_binding_limit() {
    let mut rng = Rng::new(23);
    let x = rand(&mut rng, &[1, 256, 512, 512], 0.5, 3.0, DType::F32);
    check_group_norm(&mut rng, &x, 32, 1e-6, true, 1e-10);
}

/// Windows on a context limited to 1 MiB bindings: chunked groups that
/// straddle windows, and whole small groups per window.
#[test]
fn group_norm_windows() {
    let mut rng = Rng::new(27);
    let devs = [gpu_small_bindings()];
    for shape in [[2, 64, 48, 48], [4, 32, 48, 48]] {
        let x = rand(&mut rng, &shape, 0.0, 1.0, DType::F32);
        assert!(x.size_in_bytes() as u64 > SMALL_BINDING);
        check_group_norm_on(&devs, &mut rng, &x, 32, 1e-5, true, 1e-10);
    }
}

/// Values 1000 + N(0,1): both the one-workgroup path (128 values per group)
/// and the chunked path (16384 values per group) must keep the variance.
#[test]
fn group_norm_large_mean() {
    let mut rng = Rng::new(24);
    for dt in DTYPES {
        for shape in [[2, 64, 8, 8], [1, 32, 128, 128]] {
            let x = rand(&mut rng, &shape, 1000.0, 1.0, dt);
            check_group_norm(&mut rng, &x, 32, 1e-5, false, bound(dt, 1e-8, 1e-6));
        }
    }
}

#[test]
fn group_norm_awkward() {
    let mut rng = Rng::new(25);
    for dt in DTYPES {
        let b = bound(dt, 1e-10, 1e-6);
        // One value per group: variance 0, the output is beta.
        let x = rand(&mut rng, &[1, 32, 1, 1], 0.0, 1.0, dt);
        check_group_norm(&mut rng, &x, 32, 1e-5, false, b);
        // Odd spatial size, 2 channels per group, batch 3.
        let x = rand(&mut rng, &[3, 64, 5, 7], 0.2, 1.0, dt);
        check_group_norm(&mut rng, &x, 32, 1e-5, true, b);
        // One channel per group; rank 2 and rank 3 inputs.
        let x = rand(&mut rng, &[2, 32, 9, 11], 0.0, 1.0, dt);
        check_group_norm(&mut rng, &x, 32, 1e-5, false, b);
        let x = rand(&mut rng, &[4, 64], 0.0, 1.0, dt);
        check_group_norm(&mut rng, &x, 32, 1e-5, false, b);
        // Groups just over the one-workgroup size: two chunks, the last short.
        let x = rand(&mut rng, &[2, 6, 4097], 0.0, 1.0, dt);
        check_group_norm(&mut rng, &x, 3, 1e-5, true, b);
    }
}

#[test]
fn layer_norm_shapes() {
    let mut rng = Rng::new(26);
    for dt in DTYPES {
        let b = bound(dt, 1e-10, 1e-6);
        // UNet transformer at 64x64, CLIP, a tiny row, a row long enough
        // for the chunked path.
        let sd_shapes = [sd::UNET_TRANSFORMER_64.x, sd::CLIP.x].map(|x| x.to_vec());
        for shape in sd_shapes.into_iter().chain([vec![5, 3], vec![3, 5000]]) {
            let x = rand(&mut rng, &shape, 0.1, 1.5, dt);
            check_layer_norm(&mut rng, &x, b);
        }
        let x = rand(&mut rng, &[7, 768], 1000.0, 1.0, dt);
        check_layer_norm(&mut rng, &x, bound(dt, 1e-8, 1e-6));
    }
}

#[test]
fn no_subgroups_context_has_none() {
    let dev = gpu_no_subgroups();
    assert!(!dev.gpu().unwrap().caps().subgroups);
}

/// The CPU twins on hand-computed values.
#[test]
fn cpu_twin_hand_values() {
    let cpu = &Device::Cpu;
    // One group of [1, 2, 3, 4]: mean 2.5, variance 1.25.
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2], cpu).unwrap();
    let g = Tensor::from_vec(vec![1.0, 2.0], &[2], cpu).unwrap();
    let b = Tensor::from_vec(vec![0.0, 10.0], &[2], cpu).unwrap();
    let y = x.group_norm(1, 0.0, &g, &b).to_vec_f32().unwrap();
    let s = 1.25f32.sqrt();
    let want = [-1.5 / s, -0.5 / s, 10.0 + 2.0 * 0.5 / s, 10.0 + 2.0 * 1.5 / s];
    for (a, w) in y.iter().zip(want) {
        assert!((a - w).abs() < 1e-6, "{y:?} vs {want:?}");
    }
    // Two groups of one channel: each channel normalised alone; SiLU(0) = 0.
    let y = x.group_norm_silu(2, 0.0, &g, &b).to_vec_f32().unwrap();
    let silu = |v: f32| v / (1.0 + (-v).exp());
    let want = [silu(-1.0), silu(1.0), silu(10.0 - 2.0), silu(10.0 + 2.0)];
    for (a, w) in y.iter().zip(want) {
        assert!((a - w).abs() < 1e-6, "{y:?} vs {want:?}");
    }
    // Layer norm of [0, 3, 6]: mean 3, variance 6.
    let x = Tensor::from_vec(vec![0.0, 3.0, 6.0], &[1, 3], cpu).unwrap();
    let g = Tensor::from_vec(vec![1.0, 1.0, 2.0], &[3], cpu).unwrap();
    let b = Tensor::from_vec(vec![0.0, 1.0, 0.0], &[3], cpu).unwrap();
    let y = x.layer_norm(&g, &b, 0.0).to_vec_f32().unwrap();
    let s = 6.0f32.sqrt();
    let want = [-3.0 / s, 1.0, 6.0 / s];
    for (a, w) in y.iter().zip(want) {
        assert!((a - w).abs() < 1e-6, "{y:?} vs {want:?}");
    }
}
