//! GEMM micro-kernels, one per instruction set, chosen once at run time.
//!
//! Each computes `C[mr, nr] += A_packed[kc, mr]^T B_packed[kc, nr]` for one
//! register block: `mr x nr` f32 accumulators that never leave registers
//! during the k loop, one broadcast of A and `nr / lanes` loads of B per
//! row and step. Sizes fill the register file:
//! - AVX-512 (32 zmm): 12 x 32, 24 accumulators + 2 B vectors + 1 broadcast.
//! - AVX2 + FMA (16 ymm): 6 x 16, 12 accumulators + 2 B vectors + 1 broadcast.
//! - otherwise (aarch64 NEON, where FMA is baseline, or plain x86-64): 6 x 16
//!   in portable Rust that LLVM vectorises for the baseline target.

/// `kernel(kc, a, b, c, ldc)`: `a` is `[kc, mr]` and `b` `[kc, nr]` packed,
/// `c` the top-left of a full `mr x nr` block of a row-major matrix with row
/// stride `ldc`.
pub(crate) type KernelFn = unsafe fn(usize, *const f32, *const f32, *mut f32, usize);

/// A micro-kernel and its block shape.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub f: KernelFn,
}

/// The fastest kernel this CPU runs, detected once.
pub(crate) fn best() -> Kernel {
    static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return x86::AVX512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return x86::AVX2;
            }
        }
        PORTABLE
    })
}

/// Every kernel this CPU can run, best first (the tests check each).
pub fn available() -> Vec<&'static str> {
    let mut names = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            names.push(x86::AVX512.name);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            names.push(x86::AVX2.name);
        }
    }
    names.push(PORTABLE.name);
    names
}

/// The kernel called `name`, if this CPU runs it.
pub(crate) fn by_name(name: &str) -> Option<Kernel> {
    let all = [
        #[cfg(target_arch = "x86_64")]
        x86::AVX512,
        #[cfg(target_arch = "x86_64")]
        x86::AVX2,
        PORTABLE,
    ];
    let k = all.into_iter().find(|k| k.name == name)?;
    available().contains(&k.name).then_some(k)
}

const PORTABLE: Kernel = Kernel {
    name: "portable",
    mr: 6,
    nr: 16,
    f: portable,
};

/// Portable Rust: fixed-size arrays LLVM keeps in vector registers; `mul_add`
/// only where it is a single instruction (aarch64), else a separate multiply
/// and add (a libm call per element would be far slower).
unsafe fn portable(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    const MR: usize = 6;
    const NR: usize = 16;
    let mut acc = [[0.0f32; NR]; MR];
    // SAFETY (caller): a holds kc * MR floats, b kc * NR, c a full MR x NR block.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * MR),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = if cfg!(target_arch = "aarch64") {
                    ap[r].mul_add(bp[j], acc[r][j])
                } else {
                    acc[r][j] + ap[r] * bp[j]
                };
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY (caller): row r, column j lies in the block.
            unsafe { *c.add(r * ldc + j) += v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Kernel;
    use std::arch::x86_64::*;

    pub const AVX512: Kernel = Kernel {
        name: "avx512",
        mr: 12,
        nr: 32,
        f: avx512,
    };

    pub const AVX2: Kernel = Kernel {
        name: "avx2+fma",
        mr: 6,
        nr: 16,
        f: avx2,
    };

    /// # Safety
    /// The CPU has AVX-512F; `a`, `b`, `c` as `KernelFn` says.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        const MR: usize = 12;
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..kc {
            // SAFETY: p < kc, so these reads stay in the packed blocks.
            unsafe {
                let b0 = _mm512_loadu_ps(b.add(p * 32));
                let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
                let ap = a.add(p * MR);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r));
                    acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            // SAFETY: row r of the full block.
            unsafe {
                let cr = c.add(r * ldc);
                _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), acc_r[0]));
                _mm512_storeu_ps(cr.add(16), _mm512_add_ps(_mm512_loadu_ps(cr.add(16)), acc_r[1]));
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `a`, `b`, `c` as `KernelFn` says.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        const MR: usize = 6;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for p in 0..kc {
            // SAFETY: p < kc, so these reads stay in the packed blocks.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                let ap = a.add(p * MR);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*ap.add(r));
                    acc_r[0] = _mm256_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(av, b1, acc_r[1]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            // SAFETY: row r of the full block.
            unsafe {
                let cr = c.add(r * ldc);
                _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), acc_r[0]));
                _mm256_storeu_ps(cr.add(8), _mm256_add_ps(_mm256_loadu_ps(cr.add(8)), acc_r[1]));
            }
        }
    }
}
