//! Attention cases: q `[B, Lq, W]`, k/v `[B, Lk, W]`, W = H*D, at the shapes
//! SD 1.5 runs (UNet self- and cross-attention per level, the VAE mid block,
//! the CLIP text encoder).

use sd_wgpu::DType;

/// NMSE bound of attention. Both sides compute in f32 from identical inputs
/// (f16 inputs are rounded before either side sees them); they differ only
/// in summation order (dot products over D, the running sums over keys, the
/// flash kernel's per-tile rescaling) and exp2 vs exp (Vulkan allows
/// exp/exp2 3 + 2|x| ulp), a relative error of ~1e-6 per output at worst:
/// NMSE <= ~1e-12, measured <= 4e-12 on llvmpipe. f32 bound 1e-10.
/// f16 outputs are those f32 results rounded once: they differ by one f16
/// ulp (2^-11 relative) where the two f32 values straddle a rounding
/// boundary, ~1e-6 / 2^-11 ~ 2e-3 of the outputs: NMSE ~ 2e-3 * 2^-22 ~
/// 5e-10, measured <= 8e-10. f16 bound 1e-8. Both stay below what a lost key
/// among 4096 gives (~6e-8) or a wrong row among 4096 (~2e-4).
pub fn max_nmse(dt: DType) -> f64 {
    super::bound(dt, 1e-10, 1e-8)
}

/// One attention problem.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub what: &'static str,
    pub b: usize,
    pub lq: usize,
    pub lk: usize,
    pub w: usize,
    pub heads: usize,
    /// Query i sees keys 0..=i only.
    pub causal: bool,
}

impl Attention {
    pub const fn new(
        what: &'static str,
        b: usize,
        lq: usize,
        lk: usize,
        w: usize,
        heads: usize,
    ) -> Attention {
        Attention {
            what,
            b,
            lq,
            lk,
            w,
            heads,
            causal: false,
        }
    }

    pub const fn causal(self) -> Attention {
        Attention { causal: true, ..self }
    }

    /// The same heads with `lq` queries (query blocks are independent).
    pub const fn queries(self, lq: usize) -> Attention {
        Attention { lq, ..self }
    }

    /// The same heads with `lk` keys.
    pub const fn keys(self, lk: usize) -> Attention {
        Attention { lk, ..self }
    }

    /// Head dim D.
    pub fn d(&self) -> usize {
        self.w / self.heads
    }

    /// 4 B Lq Lk W: Q K^T and P V, a multiply and an add each; causal counts
    /// the unmasked (query, key) pairs only.
    pub fn flops(&self) -> f64 {
        let pairs = if self.causal {
            self.lq * (self.lq + 1) / 2
        } else {
            self.lq * self.lk
        };
        (4 * self.b * pairs * self.w) as f64
    }
}

/// UNet self-attention at a 64x64 latent (512x512 image), CFG batch 2, D=40.
pub const UNET_SELF_64: Attention = Attention::new("unet self 64x64", 2, 4096, 4096, 320, 8);
/// The same at a 96x96 latent (768x768 image).
pub const UNET_SELF_96: Attention = Attention::new("unet self 96x96", 2, 9216, 9216, 320, 8);
/// Cross-attention to the 77-token text encoding.
pub const UNET_CROSS_64: Attention = Attention::new("unet cross 64x64", 2, 4096, 77, 320, 8);
/// A long prompt: two 77-token chunks.
pub const UNET_CROSS_64_LONG: Attention = UNET_CROSS_64.keys(154);
/// Level 2 (32x32), D=80.
pub const UNET_SELF_32: Attention = Attention::new("unet self 32x32", 2, 1024, 1024, 640, 8);
pub const UNET_CROSS_32: Attention = Attention::new("unet cross 32x32", 2, 1024, 77, 640, 8);
/// Level 3 (16x16), D=160.
pub const UNET_SELF_16: Attention = Attention::new("unet self 16x16", 2, 256, 256, 1280, 8);
pub const UNET_CROSS_16: Attention = Attention::new("unet cross 16x16", 2, 256, 77, 1280, 8);
/// The VAE mid block's single head, D=512, at 512x512 and at 128x128.
pub const VAE_MID_64: Attention = Attention::new("vae mid 64x64", 1, 4096, 4096, 512, 1);
pub const VAE_MID_16: Attention = Attention::new("vae mid 16x16", 1, 256, 256, 512, 1);
/// The CLIP text encoder: 77 tokens, 12 heads of D=64, causal.
pub const CLIP: Attention = Attention::new("clip", 1, 77, 77, 768, 12).causal();
