//! Shared helpers of the op suite: the GPU context, seeded random tensors,
//! and the normalised-MSE comparison every GPU-vs-CPU check uses.

use std::sync::{Arc, OnceLock};

use sd_wgpu::gpu::{AdapterPreference, GpuContext, GpuOptions};
use sd_wgpu::{DType, Device, Tensor};

#[path = "../support/gpu.rs"]
mod support_gpu;
pub use support_gpu::gpu;

/// A second context on the same adapter with subgroups off, so every
/// reduction also runs its workgroup-memory path. Fails without an adapter.
pub fn gpu_no_subgroups() -> Device {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        let opts = GpuOptions {
            subgroups: false,
            ..Default::default()
        };
        match GpuContext::new_with(AdapterPreference::HardwareFirst, opts) {
            Ok(c) => c,
            Err(e) => panic!("GPU tests need a wgpu adapter and none was found: {e}"),
        }
    });
    Device::Gpu(ctx.clone())
}

/// Storage-binding limit of `gpu_small_bindings()`: 1 MiB.
pub const SMALL_BINDING: u64 = 1 << 20;

/// A context on the same adapter whose storage bindings are limited to
/// `SMALL_BINDING` bytes, so the windowed path of every op (normally taken
/// only above 128 MiB or more) runs on small tensors.
pub fn gpu_small_bindings() -> Device {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        let opts = GpuOptions {
            max_binding_bytes: Some(SMALL_BINDING),
            ..Default::default()
        };
        match GpuContext::new_with(AdapterPreference::HardwareFirst, opts) {
            Ok(c) => c,
            Err(e) => panic!("GPU tests need a wgpu adapter and none was found: {e}"),
        }
    });
    Device::Gpu(ctx.clone())
}

/// Small, seeded generator (SplitMix64) so inputs are identical on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Approximately standard normal (sum of uniforms, cheap and bounded).
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// The same random values as a CPU tensor and a GPU tensor of `dtype`
/// (rounded to f16 first when `dtype` is f16, so both sides see equal inputs).
pub fn pair(rng: &mut Rng, shape: &[usize], scale: f32, dtype: DType) -> (Tensor, Tensor) {
    let n = shape.iter().product();
    let v = rng.vec(n, scale);
    let cpu = Tensor::from_f32(v, shape, dtype, &Device::Cpu).unwrap();
    let gpu = cpu.to_device(&gpu()).unwrap();
    (cpu, gpu)
}

/// Normalised mean squared error: sum (a-b)^2 / sum b^2 (b the reference).
pub fn nmse(a: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(a.len(), reference.len(), "length");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &r) in a.iter().zip(reference) {
        num += ((x - r) as f64).powi(2);
        den += (r as f64).powi(2);
    }
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// NMSE bound per dtype (f16 keeps 11 bits: output rounding alone is a
/// relative error of 2^-11, squared ~ 2.4e-7).
pub use crate::cases::bound;

/// Compares a GPU result with its CPU twin; panics with the figures when off.
pub fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor, max_nmse: f64) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let g = gpu
        .to_vec_f32()
        .unwrap_or_else(|e| panic!("{what}: GPU error: {e}"));
    let c = cpu.to_vec_f32().unwrap();
    let bad = g.iter().position(|v| !v.is_finite());
    assert!(bad.is_none(), "{what}: non-finite GPU output at {bad:?}");
    let e = nmse(&g, &c);
    let max_abs = g
        .iter()
        .zip(&c)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        e <= max_nmse,
        "{what}: NMSE {e:.3e} > bound {max_nmse:.1e} (max abs diff {max_abs:.3e}, {} values)",
        g.len()
    );
}

pub const DTYPES: [DType; 2] = [DType::F32, DType::F16];
