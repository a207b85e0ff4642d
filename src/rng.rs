//! Gaussian noise that reproduces `torch.randn` on a CPU `torch.Generator` bit for bit.
//!
//! diffusers, ComfyUI and stable-diffusion.cpp (`--rng cpu`) draw the initial latents with
//! `torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)`, and
//! diffusers' ancestral samplers keep drawing from the same generator. [`TorchRng`] is that
//! generator: the same seed gives the same starting noise, so an image can be reproduced across
//! tools.
//!
//! What torch does (PyTorch 2.x, `aten/src/ATen/native/cpu/DistributionTemplates.h`,
//! `aten/src/ATen/core/{MT19937RNGEngine,DistributionsHelper,TransformationHelper}.h`,
//! `aten/src/ATen/CPUGeneratorImpl.cpp`):
//! - the engine is the standard 32-bit Mersenne Twister (mt19937), seeded with the **low 32 bits**
//!   of the 64-bit seed (`manual_seed(2**32 + 5)` gives the stream of seed 5);
//! - a float32 tensor of `n >= 16` values: `n` uniforms `u = (next_u32() & 0xFF_FFFF) * 2^-24`
//!   are drawn first, then each block of 16 becomes 16 normals by Box-Muller on the pairs
//!   `(i, i + 8)`: `r = sqrt(-2 ln(1 - u[i]))`, `theta = 2 pi u[i + 8]`,
//!   `out[i] = r cos(theta)`, `out[i + 8] = r sin(theta)`. When 16 does not divide `n`, 16 fresh
//!   uniforms replace the last 16 values and that block is recomputed, so `n + 16` uniforms are
//!   consumed;
//! - fewer than 16 values: one normal at a time in double precision from two 53-bit uniforms
//!   (each from two `next_u32()`), `r = sqrt(-2 ln(1 - u2))`, `theta = 2 pi u1`, returning
//!   `r cos(theta)` as f32 and caching `r sin(theta)` in the generator for the next scalar draw.
//!   The >= 16 path neither reads nor clears that cache. Like torch, this path uses the platform's
//!   f64 `log1p`, `sin` and `cos`; a last-bit difference between libms almost never survives the
//!   rounding to f32.
//!
//! On x86-64 CPUs with AVX2 (torch's AVX2 and AVX512 builds alike) the >= 16 path computes `ln`,
//! `sin` and `cos` with the Cephes polynomials of `avx_mathfun.h` in f32, compiled by GCC with
//! fused multiply-adds at fixed places. [`cephes_ln`] and [`cephes_sincos`] reproduce those
//! operations one rounding at a time, which is what makes the result bit-exact (checked against
//! torch 2.15 on x86-64 in `tests/rng.rs`). torch builds without AVX2 (e.g. aarch64) use libm's
//! `logf`/`sinf`/`cosf` there instead and differ from this in the last bit of ~1% of values;
//! `dtype=torch.float16` is a different algorithm altogether (11-bit uniforms) and is not
//! reproduced.

/// The 32-bit Mersenne Twister (MT19937), as `at::mt19937` and `std::mt19937` define it.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; 624],
    next: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    /// Seeds from the low 32 bits of `seed`, as torch does.
    pub fn new(seed: u64) -> Mt19937 {
        let mut state = [0u32; Self::N];
        state[0] = seed as u32;
        for j in 1..Self::N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, next: Self::N }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.next == Self::N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let upper = self.state[i] & 0x8000_0000;
            let lower = self.state[(i + 1) % Self::N] & 0x7fff_ffff;
            let y = upper | lower;
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + Self::M) % Self::N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }
}

/// A CPU `torch.Generator` seeded with `manual_seed(seed)`; successive [`TorchRng::randn`] calls
/// continue one stream exactly as successive `torch.randn(..., generator=g)` calls do.
#[derive(Clone)]
pub struct TorchRng {
    mt: Mt19937,
    /// The second Box-Muller value of the scalar (< 16 values) path, kept for the next scalar draw
    /// (torch's `next_double_normal_sample`).
    cached_normal: Option<f64>,
}

impl TorchRng {
    pub fn new(seed: u64) -> TorchRng {
        TorchRng {
            mt: Mt19937::new(seed),
            cached_normal: None,
        }
    }

    /// `torch.randn(n, generator=self, dtype=torch.float32)`, flattened (the shape does not
    /// matter, only the number of values).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n >= 16 {
            self.randn_blocks(n)
        } else {
            (0..n).map(|_| self.normal_f64() as f32).collect()
        }
    }

    /// `at::uniform_real_distribution<float>(0, 1)`: 24 random bits scaled to [0, 1).
    fn uniform_f32(&mut self) -> f32 {
        (self.mt.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `at::uniform_real_distribution<double>(0, 1)`: 53 random bits of two draws (first draw
    /// high) scaled to [0, 1).
    fn uniform_f64(&mut self) -> f64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `at::normal_distribution<double>(0, 1)`.
    fn normal_f64(&mut self) -> f64 {
        if let Some(z) = self.cached_normal.take() {
            return z;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// torch's `normal_fill` for `n >= 16` float32 values.
    fn randn_blocks(&mut self, n: usize) -> Vec<f32> {
        let mut out: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in out.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        out
    }
}

/// One block of torch's `normal_fill_16_AVX2` (mean 0, std 1): uniforms in, normals out.
fn box_muller_16(block: &mut [f32]) {
    // 2 pi rounded to f32 once, as `_mm256_set1_ps(2.0f * c10::pi<double>)` does.
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let radius = (-2.0 * cephes_ln(1.0 - block[j])).sqrt();
        let (sin, cos) = cephes_sincos(two_pi * block[j + 8]);
        block[j] = radius * cos;
        block[j + 8] = radius * sin;
    }
}

// The constants of `avx_mathfun.h`, written as there (double literals) and rounded to f32 the way
// its `float` tables are initialised.
#[allow(clippy::excessive_precision)]
mod cephes {
    pub const SQRT_HALF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
    pub const LN_P: [f32; 9] = [
        7.0376836292E-2_f64 as f32,
        -1.1514610310E-1_f64 as f32,
        1.1676998740E-1_f64 as f32,
        -1.2420140846E-1_f64 as f32,
        1.4249322787E-1_f64 as f32,
        -1.6668057665E-1_f64 as f32,
        2.0000714765E-1_f64 as f32,
        -2.4999993993E-1_f64 as f32,
        3.3333331174E-1_f64 as f32,
    ];
    pub const LN_Q1: f32 = -2.12194440e-4_f64 as f32;
    pub const LN_Q2: f32 = 0.693359375;
    pub const FOUR_OVER_PI: f32 = 1.27323954473516_f64 as f32;
    pub const DP1: f32 = -0.78515625;
    pub const DP2: f32 = -2.4187564849853515625e-4_f64 as f32;
    pub const DP3: f32 = -3.77489497744594108e-8_f64 as f32;
    pub const SIN_P: [f32; 3] = [
        -1.9515295891E-4_f64 as f32,
        8.3321608736E-3_f64 as f32,
        -1.6666654611E-1_f64 as f32,
    ];
    pub const COS_P: [f32; 3] = [
        2.443315711809948E-005_f64 as f32,
        -1.388731625493765E-003_f64 as f32,
        4.166664568298827E-002_f64 as f32,
    ];
}

/// `log256_ps` of `avx_mathfun.h` for one lane, for `x` in (0, 1] (all Box-Muller needs): `x` is
/// split into mantissa and exponent, and `ln` of the mantissa is a degree-9 Cephes polynomial.
/// `mul_add` marks each multiply-add that the GCC build of torch fuses (found by matching torch's
/// output bit for bit; every other product is rounded on its own).
pub fn cephes_ln(x: f32) -> f32 {
    use cephes::*;
    // Denormals are raised to the smallest normal, as the AVX code does.
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    // Exponent, with the mantissa taken into [0.5, 1).
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    if m < SQRT_HALF {
        e -= 1.0;
        m = (m - 1.0) + m;
    } else {
        m -= 1.0;
    }
    let z = m * m;
    let mut y = LN_P[0];
    for &p in &LN_P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    let y = y.mul_add(z, e * LN_Q1);
    let y = (-z).mul_add(0.5, y);
    e.mul_add(LN_Q2, m + y)
}

/// `sincos256_ps` of `avx_mathfun.h` for one lane, for `x >= 0` (Box-Muller's `theta` is in
/// [0, 2 pi)): Cody-Waite reduction by pi/4 in three parts, then the Cephes sine and cosine
/// polynomials, swapped and signed by octant. Returns `(sin, cos)`. Fused multiply-adds as in
/// [`cephes_ln`].
pub fn cephes_sincos(x: f32) -> (f32, f32) {
    use cephes::*;
    let sign_in = x.is_sign_negative();
    let x = x.abs();
    // Octant index rounded up to even: j in {0, 2, 4, 6, ...}.
    let j = ((x * FOUR_OVER_PI) as i32 + 1) & !1;
    let jf = j as f32;
    let x = jf.mul_add(DP1, x);
    let x = jf.mul_add(DP2, x);
    let x = jf.mul_add(DP3, x);
    let sin_negative = sign_in ^ (j & 4 != 0);
    let cos_negative = !(j - 2) & 4 != 0;
    let polys_in_place = j & 2 == 0;

    let z = x * x;
    let mut c = COS_P[0].mul_add(z, COS_P[1]);
    c = c.mul_add(z, COS_P[2]);
    c *= z;
    let c = c.mul_add(z, -(z * 0.5)) + 1.0;
    let mut s = SIN_P[0].mul_add(z, SIN_P[1]);
    s = s.mul_add(z, SIN_P[2]);
    s *= z;
    let s = s.mul_add(x, x);

    let (sin, cos) = if polys_in_place { (s, c) } else { (c, s) };
    (
        if sin_negative { -sin } else { sin },
        if cos_negative { -cos } else { cos },
    )
}

/// The noise of a batch: one [`TorchRng`] per item, item `i` seeded with `seed + i` (wrapping at
/// 2^64). This is diffusers' `generator=[torch.Generator().manual_seed(seed + i) for i in
/// range(batch)]`, so image `i` of a batch is the image a batch of one gives with seed `seed + i`.
pub struct BatchRng {
    items: Vec<TorchRng>,
}

impl BatchRng {
    pub fn new(seed: u64, batch: usize) -> BatchRng {
        assert!(batch > 0, "a batch has at least one item");
        BatchRng {
            items: (0..batch as u64)
                .map(|i| TorchRng::new(seed.wrapping_add(i)))
                .collect(),
        }
    }

    pub fn batch(&self) -> usize {
        self.items.len()
    }

    /// `len` normals, `len / batch` from each item's generator in turn: a `[B, ...]` tensor whose
    /// item `i` is `torch.randn` of item `i`'s generator.
    pub fn randn(&mut self, len: usize) -> Vec<f32> {
        let batch = self.items.len();
        assert!(
            len.is_multiple_of(batch),
            "{len} values do not split into {batch} batch items"
        );
        let mut out = Vec::with_capacity(len);
        for item in &mut self.items {
            out.extend(item.randn(len / batch));
        }
        out
    }
}
