//! Conv2d cases: the UNet's and the VAE's convolutions, NCHW.

use sd_wgpu::DType;

/// NMSE bound of a convolution: an implicit GEMM with K = C_in*kh*kw, so the
/// reasoning of the matmul bound holds (f32: summation differences only,
/// ~K * 3.6e-15 < 1e-11 for K <= 2880; f16: same f16 inputs, f32
/// accumulation, output rounding only).
pub fn max_nmse(dt: DType) -> f64 {
    super::bound(dt, 1e-10, 1e-6)
}

/// One convolution: input, weight, stride, padding, and what is fused.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub what: &'static str,
    /// `[N, C_in, H, W]`.
    pub x: [usize; 4],
    /// `[C_out, C_in, kh, kw]`.
    pub w: [usize; 4],
    pub stride: usize,
    /// `[top, bottom, left, right]`.
    pub pad: [usize; 4],
    pub bias: bool,
    pub residual: bool,
}

impl Conv {
    /// `[H_out, W_out]`.
    pub fn out_hw(&self) -> [usize; 2] {
        let [_, _, h, w] = self.x;
        let [_, _, kh, kw] = self.w;
        let [t, b, l, r] = self.pad;
        [
            (h + t + b - kh) / self.stride + 1,
            (w + l + r - kw) / self.stride + 1,
        ]
    }

    /// 2 N C_out H_out W_out C_in kh kw: a multiply and an add per term.
    pub fn flops(&self) -> f64 {
        let [n, c_in, _, _] = self.x;
        let [c_out, _, kh, kw] = self.w;
        let [ho, wo] = self.out_hw();
        2.0 * (n * c_out * ho * wo * c_in * kh * kw) as f64
    }
}

/// A 3x3, stride 1, padding 1 convolution with bias from `c_in` to `c_out`
/// channels over `[n, c_in, hw, hw]`.
const fn conv3x3(what: &'static str, n: usize, c_in: usize, hw: usize, c_out: usize) -> Conv {
    Conv {
        what,
        x: [n, c_in, hw, hw],
        w: [c_out, c_in, 3, 3],
        stride: 1,
        pad: [1; 4],
        bias: true,
        residual: false,
    }
}

/// The UNet at a 64x64 latent, CFG batch 2: a resnet's conv2 at each level
/// (bias and the skip connection fused), the down-sampler (stride 2), a
/// resnet shortcut (1x1, C_in != C_out) and conv_in from 4 latent channels.
pub const UNET_RESNET_64: Conv = Conv {
    residual: true,
    ..conv3x3("unet resnet 64x64", 2, 320, 64, 320)
};
pub const UNET_RESNET_32: Conv = Conv {
    residual: true,
    ..conv3x3("unet resnet 32x32", 2, 640, 32, 640)
};
pub const UNET_RESNET_16: Conv = Conv {
    residual: true,
    ..conv3x3("unet resnet 16x16", 2, 1280, 16, 1280)
};
pub const UNET_DOWN_64: Conv = Conv {
    stride: 2,
    ..conv3x3("unet down 64x64", 2, 320, 64, 320)
};
pub const UNET_SHORTCUT_32: Conv = Conv {
    w: [640, 320, 1, 1],
    pad: [0; 4],
    ..conv3x3("unet shortcut 32x32", 2, 320, 32, 640)
};
pub const UNET_CONV_IN: Conv = conv3x3("unet conv_in", 2, 4, 64, 320);

/// The VAE decoder for a 512x512 image at its 128x128 and 512x512 levels.
pub const VAE_DEC_128: Conv = conv3x3("vae dec 128x128", 1, 512, 128, 512);
pub const VAE_DEC_512: Conv = conv3x3("vae dec 512x512", 1, 128, 512, 128);
/// The VAE encoder's own forms at a 64x64 image: conv_in from 3 RGB channels
/// (K = 27, no vec4 path) and the down-sampler, padded (0, 1, 0, 1) then
/// stride 2 without padding.
pub const VAE_ENC_IN_64: Conv = conv3x3("vae enc conv_in 64x64", 1, 3, 64, 128);
pub const VAE_ENC_DOWN_64: Conv = Conv {
    stride: 2,
    pad: [0, 1, 0, 1],
    ..conv3x3("vae enc down 64x64", 1, 128, 64, 128)
};
