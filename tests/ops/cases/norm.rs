//! Norm cases: the group norms of the UNet's and the VAE's resnets and the
//! layer norms of the UNet's transformers and CLIP.

use sd_wgpu::DType;

/// NMSE bound of a norm on values of order 1 (see tests/ops/norm.rs for the
/// derivation and the large-mean bound): f32 1e-10, f16 output 1e-6.
pub fn max_nmse(dt: DType) -> f64 {
    super::bound(dt, 1e-10, 1e-6)
}

/// Group norm of `x [N, C, *]` with `groups` groups, then SiLU when `silu`.
#[derive(Debug, Clone, Copy)]
pub struct GroupNorm {
    pub what: &'static str,
    pub x: [usize; 4],
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

/// Layer norm over the last dim of `x`.
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm {
    pub what: &'static str,
    pub x: [usize; 3],
    pub eps: f32,
}

/// Bytes a norm must move: x read once and y written once.
pub fn bytes(shape: &[usize], dt: DType) -> f64 {
    (2 * shape.iter().product::<usize>() * dt.size()) as f64
}

const fn resnet(what: &'static str, x: [usize; 4], eps: f32) -> GroupNorm {
    GroupNorm {
        what,
        x,
        groups: 32,
        eps,
        silu: true,
    }
}

/// UNet resnet norms at a 64x64 latent and at 8x8 (1280 channels), CFG
/// batch 2, eps 1e-5 with SiLU; the transformer's proj-in norm, eps 1e-6
/// without SiLU.
pub const UNET_RESNET_64: GroupNorm = resnet("unet resnet 64x64", [2, 320, 64, 64], 1e-5);
pub const UNET_RESNET_8: GroupNorm = resnet("unet resnet 8x8", [2, 1280, 8, 8], 1e-5);
pub const UNET_PROJ_IN_64: GroupNorm = GroupNorm {
    silu: false,
    ..resnet("unet proj-in 64x64", [2, 320, 64, 64], 1e-6)
};
/// The VAE decoder for a 512x512 image (eps 1e-6): the mid block, and its
/// up-blocks at 256x256 and 512x512 (4 channels x 262144 pixels per group).
pub const VAE_MID_64: GroupNorm = resnet("vae mid 64x64", [1, 512, 64, 64], 1e-6);
pub const VAE_UP_256: GroupNorm = resnet("vae up 256x256", [1, 256, 256, 256], 1e-6);
pub const VAE_UP_512: GroupNorm = resnet("vae up 512x512", [1, 128, 512, 512], 1e-6);

/// The UNet's transformer rows at 64x64 (320 wide) and CLIP's (768 wide,
/// cond and uncond prompts).
pub const UNET_TRANSFORMER_64: LayerNorm = LayerNorm {
    what: "unet transformer 64x64",
    x: [2, 4096, 320],
    eps: 1e-5,
};
pub const CLIP: LayerNorm = LayerNorm {
    what: "clip",
    x: [2, 77, 768],
    eps: 1e-5,
};
