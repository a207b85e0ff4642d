//! Element-wise cases: the activations, broadcast adds and GEGLU of SD.

use sd_wgpu::DType;

/// NMSE bounds: only output rounding differs (the erf approximation is
/// < 2e-7), so f32 1e-12 (1e-14 for the exact binary ops), f16 1e-6.
pub fn max_nmse(dt: DType, exact: bool) -> f64 {
    match (dt, exact) {
        (DType::F32, false) => 1e-12,
        (DType::F32, true) => 1e-14,
        (DType::F16, _) => 1e-6,
    }
}

/// `x`, and for a binary op the `y` broadcast against it.
#[derive(Debug, Clone, Copy)]
pub struct Elementwise {
    pub what: &'static str,
    pub x: &'static [usize],
    pub y: &'static [usize],
}

impl Elementwise {
    /// Bytes a unary op moves: x read once and the output written once.
    pub fn unary_bytes(&self, dt: DType) -> f64 {
        (2 * self.x.iter().product::<usize>() * dt.size()) as f64
    }

    /// Bytes GEGLU moves: x read once, an output half its size written.
    pub fn geglu_bytes(&self, dt: DType) -> f64 {
        (3 * self.x.iter().product::<usize>() / 2 * dt.size()) as f64
    }
}

const fn unary(what: &'static str, x: &'static [usize]) -> Elementwise {
    Elementwise { what, x, y: &[] }
}

/// The resnet activations of the UNet at a 64x64 latent and at 8x8, CFG batch 2.
pub const ACT_64: Elementwise = unary("unet act 64x64", &[2, 320, 64, 64]);
pub const ACT_8: Elementwise = unary("unet act 8x8", &[2, 1280, 8, 8]);
/// The feed-forward GEGLU at 64x64: [B, L, 2F] -> [B, L, F].
pub const GEGLU_64: Elementwise = unary("unet geglu 64x64", &[2, 4096, 2560]);
/// Broadcast binary ops: a residual, the time embedding per channel, a bias
/// on the last dim.
pub const RESIDUAL_64: Elementwise = Elementwise {
    what: "unet residual 64x64",
    x: &[2, 320, 64, 64],
    y: &[2, 320, 64, 64],
};
pub const TIME_EMB_64: Elementwise = Elementwise {
    what: "unet time embedding 64x64",
    x: &[2, 320, 64, 64],
    y: &[2, 320, 1, 1],
};
pub const BIAS_64: Elementwise = Elementwise {
    what: "unet bias 64x64",
    x: &[2, 4096, 320],
    y: &[320],
};
