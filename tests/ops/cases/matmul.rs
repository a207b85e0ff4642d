//! Matmul cases: the UNet's linear layers, `x [.., K] W^T (+ bias) (+ residual)`
//! with W stored `[N, K]` as `linear` takes it.

use sd_wgpu::DType;

/// NMSE bound of a matmul.
/// f32: both sides sum the K products in f32 in increasing k order; they
/// differ only where the GPU fuses a multiply-add (one rounding fewer), so
/// the relative error is ~sqrt(K) * 2^-24: NMSE ~ K * 3.6e-15 < 1e-11 for
/// K <= 2560.
/// f16: both sides read the same f16 inputs and accumulate in f32; the
/// results differ only when two nearly equal f32 sums round to neighbouring
/// f16 values (2^-11 relative): NMSE < 2.4e-7 even if every output did.
pub fn max_nmse(dt: DType) -> f64 {
    super::bound(dt, 1e-10, 1e-6)
}

/// One linear layer.
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    pub what: &'static str,
    /// Input `[.., K]`.
    pub x: &'static [usize],
    /// Output features (rows of W).
    pub n: usize,
    pub bias: bool,
    pub residual: bool,
}

impl Linear {
    pub fn k(&self) -> usize {
        self.x[self.x.len() - 1]
    }

    /// Rows of the product: every leading dim of x.
    pub fn m(&self) -> usize {
        self.x[..self.x.len() - 1].iter().product()
    }

    /// W as stored, `[N, K]`.
    pub fn w(&self) -> [usize; 2] {
        [self.n, self.k()]
    }

    /// `[.., N]`.
    pub fn out(&self) -> Vec<usize> {
        let mut out = self.x.to_vec();
        *out.last_mut().expect("rank >= 1") = self.n;
        out
    }

    /// 2 M N K: a multiply and an add per product term.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m() * self.n * self.k()) as f64
    }
}

const fn linear(what: &'static str, x: &'static [usize], n: usize, bias: bool, residual: bool) -> Linear {
    Linear {
        what,
        x,
        n,
        bias,
        residual,
    }
}

/// The UNet's linear layers at a 64x64 latent with CFG batch 2: attention
/// projections and feed-forward of each transformer level (GEGLU in is one
/// half of the doubled projection; FF out adds the residual), and the
/// cross-attention K/V projections of the 77-token text encoding.
pub const SD_LINEAR: [Linear; 6] = [
    linear("attn proj 64x64", &[2, 4096, 320], 320, true, false),
    linear("geglu in 64x64", &[2, 4096, 320], 1280, true, false),
    linear("ff out 64x64", &[2, 4096, 1280], 320, true, true),
    linear("cross k/v", &[2, 77, 768], 320, false, false),
    linear("attn proj 32x32", &[2, 1024, 640], 640, true, false),
    linear("attn proj 16x16", &[2, 256, 1280], 1280, true, false),
];

/// A square product, not an SD shape: a figure to compare adapters by.
pub const SQUARE: Linear = linear("square", &[4096, 4096], 4096, false, false);
