//! Layout family: permute, cat, narrow, nearest upsampling, embedding.
//!
//! These ops move values without arithmetic, so the GPU must return exactly
//! the CPU twin's values, bit for bit, in f32 and f16. Inputs mix normal
//! values with -0.0, f16 subnormals, large finite values and values that are
//! infinite in f16, so a conversion anywhere on the way would show.

use sd_wgpu::ops::Variant;
use sd_wgpu::{DType, Device, Tensor};

use crate::common::*;

/// A CPU tensor of random values with special ones sprinkled in.
fn values(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| match i % 97 {
            13 => -0.0,
            29 => 3.0e-6,
            41 => -60000.0,
            53 => 1.0e30,
            _ => rng.normal(),
        })
        .collect();
    Tensor::from_f32(v, shape, dtype, &Device::Cpu).unwrap()
}

/// GPU result equals the CPU twin bit for bit.
fn assert_exact(what: &str, gpu: &Tensor, cpu: &Tensor) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let g = gpu
        .to_vec_f32()
        .unwrap_or_else(|e| panic!("{what}: GPU error: {e}"));
    let c = cpu.to_vec_f32().unwrap();
    // f16 -> f32 is injective, so equal f32 bits mean equal stored bits.
    if let Some(i) = (0..g.len()).find(|&i| g[i].to_bits() != c[i].to_bits()) {
        panic!("{what}: value {i} is {} on the GPU, {} on the CPU", g[i], c[i]);
    }
}

fn on_gpu(t: &Tensor) -> Tensor {
    t.to_device(&gpu()).unwrap()
}

/// Both GPU variants (tiled / collapsed and naive gather) against the twin.
fn check_permute(rng: &mut Rng, shape: &[usize], perm: &[usize], dt: DType) {
    let x = values(rng, shape, dt);
    let (g, want) = (on_gpu(&x), x.permute(perm));
    for v in [Variant::Tuned, Variant::Naive] {
        let what = format!("permute {v:?} {dt} {shape:?} by {perm:?}");
        assert_exact(&what, &g.permute_variant(perm, v), &want);
    }
}

#[test]
fn permute_unet_transpose_and_back() {
    let mut rng = Rng::new(31);
    for dt in DTYPES {
        // [B, C, H, W] -> [B, H, W, C] (into a transformer) and back.
        let x = values(&mut rng, &[2, 320, 64, 64], dt);
        let g = on_gpu(&x);
        let t = g.permute(&[0, 2, 3, 1]);
        assert_exact(&format!("to channels-last {dt}"), &t, &x.permute(&[0, 2, 3, 1]));
        assert_exact(&format!("and back {dt}"), &t.permute(&[0, 3, 1, 2]), &x);
        // Batch 1 collapses to a plain 2-D transpose; odd sizes leave partial tiles.
        check_permute(&mut rng, &[1, 77, 33, 65], &[0, 2, 3, 1], dt);
        check_permute(&mut rng, &[33, 65], &[1, 0], dt);
    }
}

#[test]
fn permute_general() {
    let mut rng = Rng::new(32);
    for dt in DTYPES {
        check_permute(&mut rng, &[2, 3, 4, 5, 2, 3], &[5, 1, 3, 0, 4, 2], dt);
        // Heads out of [B, L, H, D]: the inner dim stays contiguous.
        check_permute(&mut rng, &[2, 7, 8, 5], &[0, 2, 1, 3], dt);
        // [A, B, C] -> [C, A, B] collapses to a transpose of [AB, C].
        check_permute(&mut rng, &[6, 5, 40], &[2, 0, 1], dt);
        // Only size-1 dims move: a copy.
        check_permute(&mut rng, &[3, 1, 5], &[1, 0, 2], dt);
        check_permute(&mut rng, &[17], &[0], dt);
    }
}

/// Permutes whose tensors exceed the binding limit, on a context limited to
/// 1 MiB bindings: a matrix too big for one binding (blocks), batches of
/// matrices (batch windows), and a gather split along its leading dim.
#[test]
fn permute_windows() {
    let mut rng = Rng::new(33);
    let dev = gpu_small_bindings();
    for (shape, perm) in [
        (vec![600, 500], vec![1, 0]),
        (vec![3, 300, 400], vec![0, 2, 1]),
        (vec![3, 10, 100, 100], vec![0, 2, 1, 3]),
    ] {
        let x = values(&mut rng, &shape, DType::F32);
        assert!(x.size_in_bytes() as u64 > SMALL_BINDING);
        let what = format!("permute f32 {shape:?} by {perm:?} (1 MiB bindings)");
        assert_exact(
            &what,
            &x.to_device(&dev).unwrap().permute(&perm),
            &x.permute(&perm),
        );
    }
}

/// A real over-limit transpose: f32 [5000, 7000] is 140 MB.
#[test]
fn permute_over_binding_limit() {
    let mut rng = Rng::new(39);
    let x = values(&mut rng, &[5000, 7000], DType::F32);
    assert_exact(
        "permute f32 [5000, 7000]",
        &on_gpu(&x).permute(&[1, 0]),
        &x.permute(&[1, 0]),
    );
}

#[test]
fn cat_and_narrow() {
    let mut rng = Rng::new(34);
    for dt in DTYPES {
        // UNet skip connection on channels.
        let a = values(&mut rng, &[2, 1280, 8, 8], dt);
        let b = values(&mut rng, &[2, 1280, 8, 8], dt);
        let want = Tensor::cat(&[&a, &b], 1);
        let got = Tensor::cat(&[&on_gpu(&a), &on_gpu(&b)], 1);
        assert_exact(&format!("cat skips {dt}"), &got, &want);
        // Last dim and first dim, unequal sizes, three inputs.
        let a = values(&mut rng, &[2, 3, 5], dt);
        let b = values(&mut rng, &[2, 3, 7], dt);
        let c = values(&mut rng, &[2, 3, 1], dt);
        let got = Tensor::cat(&[&on_gpu(&a), &on_gpu(&b), &on_gpu(&c)], 2);
        assert_exact(&format!("cat last {dt}"), &got, &Tensor::cat(&[&a, &b, &c], 2));
        let c = values(&mut rng, &[4, 3, 5], dt);
        let got = Tensor::cat(&[&on_gpu(&a), &on_gpu(&c)], 0);
        assert_exact(&format!("cat first {dt}"), &got, &Tensor::cat(&[&a, &c], 0));

        let x = values(&mut rng, &[2, 640, 32, 32], dt);
        let g = on_gpu(&x);
        for (dim, start, len) in [(1, 320, 320), (0, 1, 1), (3, 5, 17), (2, 0, 1)] {
            assert_exact(
                &format!("narrow {dt} dim {dim} {start}+{len}"),
                &g.narrow(dim, start, len),
                &x.narrow(dim, start, len),
            );
        }
        let x = values(&mut rng, &[3, 10], dt);
        assert_exact(
            &format!("chunk {dt}"),
            &on_gpu(&x).chunk(2, 1)[1],
            &x.chunk(2, 1)[1],
        );
    }
}

/// cat, narrow, upsample and embedding over the binding limit, on a context
/// limited to 1 MiB bindings: copies split by rows and within a row, planes
/// of an upsample, table rows of an embedding.
#[test]
fn windows_small_bindings() {
    let mut rng = Rng::new(35);
    let dev = gpu_small_bindings();
    let g = |t: &Tensor| t.to_device(&dev).unwrap();
    let a = values(&mut rng, &[2, 410, 410], DType::F32);
    let b = values(&mut rng, &[2, 10, 410], DType::F32);
    assert!(a.size_in_bytes() as u64 > SMALL_BINDING);
    let want = Tensor::cat(&[&a, &b], 1);
    let got = Tensor::cat(&[&g(&a), &g(&b)], 1);
    assert_exact("cat dim 1 (1 MiB bindings)", &got, &want);
    assert_exact(
        "narrow (1 MiB bindings)",
        &got.narrow(1, 7, 410),
        &want.narrow(1, 7, 410),
    );
    // One row of 336200 values: split inside the row.
    let got = Tensor::cat(&[&g(&a), &g(&a)], 0);
    assert_exact("cat dim 0 (1 MiB bindings)", &got, &Tensor::cat(&[&a, &a], 0));
    let x = values(&mut rng, &[1, 8, 64, 64], DType::F32);
    assert_exact(
        "upsample (1 MiB bindings)",
        &g(&x).upsample_nearest(256, 256),
        &x.upsample_nearest(256, 256),
    );
    let table = values(&mut rng, &[1000, 512], DType::F32);
    let ids = [999, 0, 400, 600, 999, 1];
    assert_exact(
        "embedding (1 MiB bindings)",
        &Tensor::embedding(&g(&table), &ids),
        &Tensor::embedding(&table, &ids),
    );
}

#[test]
fn upsample() {
    let mut rng = Rng::new(36);
    for dt in DTYPES {
        // SD's 2x upsampler, diffusers' forward_upsample_size (7x5 -> 13x11), a shrink.
        // 26 -> 44 and 28 -> 46 hit PyTorch's f32 scale rounding down at an
        // exact integer.
        for (shape, oh, ow) in [
            ([2, 320, 32, 32], 64, 64),
            ([1, 3, 7, 5], 13, 11),
            ([2, 2, 13, 11], 7, 5),
            ([1, 2, 26, 28], 44, 46),
        ] {
            let x = values(&mut rng, &shape, dt);
            assert_exact(
                &format!("upsample {dt} {shape:?} -> {oh}x{ow}"),
                &on_gpu(&x).upsample_nearest(oh, ow),
                &x.upsample_nearest(oh, ow),
            );
        }
    }
}

/// The VAE decoder's last upsampler in f32: a 256 MiB output, windows of planes.
#[test]
fn upsample_over_binding_limit() {
    let mut rng = Rng::new(37);
    let x = values(&mut rng, &[1, 256, 256, 256], DType::F32);
    assert_exact(
        "upsample > limit",
        &on_gpu(&x).upsample_nearest(512, 512),
        &x.upsample_nearest(512, 512),
    );
}

/// CLIP's token table in f32 (151 MB, over the binding limit), ids in both
/// windows, repeated, at both ends of the vocabulary.
#[test]
fn embedding_clip_table() {
    let mut rng = Rng::new(38);
    let table = values(&mut rng, &[49408, 768], DType::F32);
    let mut ids = vec![49406, 320, 0, 49407, 49407, 320, 25000, 43690, 1];
    ids.extend((0..68).map(|_| (rng.next_u64() % 49408) as u32));
    assert_exact(
        "embedding f32 [49408, 768]",
        &Tensor::embedding(&on_gpu(&table), &ids),
        &Tensor::embedding(&table, &ids),
    );
    let small = values(&mut rng, &[10, 6], DType::F16);
    let ids = [3, 3, 9, 0, 3];
    assert_exact(
        "embedding f16 [10, 6]",
        &Tensor::embedding(&on_gpu(&small), &ids),
        &Tensor::embedding(&small, &ids),
    );
}

/// The CPU twins on hand-computed values.
#[test]
fn cpu_twin_hand_values() {
    let cpu = &Device::Cpu;
    let v = |t: Tensor| t.to_vec_f32().unwrap();
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], cpu).unwrap();
    assert_eq!(v(x.transpose(0, 1)), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(v(x.narrow(1, 1, 2)), vec![2.0, 3.0, 5.0, 6.0]);
    let y = Tensor::from_vec(vec![7.0, 8.0], &[2, 1], cpu).unwrap();
    assert_eq!(
        v(Tensor::cat(&[&x, &y], 1)),
        vec![1.0, 2.0, 3.0, 7.0, 4.0, 5.0, 6.0, 8.0]
    );
    let x3 = x.reshape(&[1, 1, 2, 3]);
    // 2x: each value twice along both axes.
    let up = v(x3.upsample_nearest(4, 6));
    assert_eq!(&up[..6], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    assert_eq!(&up[6..12], &up[..6]);
    assert_eq!(&up[12..18], &[4.0, 4.0, 5.0, 5.0, 6.0, 6.0]);
    // 2x3 -> 3x5: rows floor(0*2/3, 1*2/3, 2*2/3) = 0, 0, 1;
    // columns floor(j*3/5) = 0, 0, 1, 1, 2.
    let up = v(x3.upsample_nearest(3, 5));
    let row0 = [1.0, 1.0, 2.0, 2.0, 3.0];
    assert_eq!(&up[..5], &row0);
    assert_eq!(&up[5..10], &row0);
    assert_eq!(&up[10..], &[4.0, 4.0, 5.0, 5.0, 6.0]);
    // PyTorch (F.interpolate(size=(1, 44)) on 26 columns) reads columns 12,
    // 12, 13 for outputs 21..24: exact arithmetic would give 22 * 26 / 44 = 13
    // for output 22.
    let row = Tensor::from_vec((0..26).map(|i| i as f32).collect(), &[1, 1, 1, 26], cpu).unwrap();
    assert_eq!(v(row.upsample_nearest(1, 44))[21..24], [12.0, 12.0, 13.0]);
    assert_eq!(
        v(Tensor::embedding(&x, &[1, 1, 0])),
        vec![4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0]
    );
}
