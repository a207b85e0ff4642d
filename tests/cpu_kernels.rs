//! The fast CPU kernels against plain references written here: a triple-loop
//! GEMM, a direct convolution, a naive attention (full score row, softmax,
//! P V), all accumulating in f64. Each kernel is checked at SD 1.5 shapes
//! and awkward ones (odd sizes, edges of every register block, 1-sized dims),
//! with f32 and f16 storage, by normalised MSE with the op suite's bounds.
//! Every GEMM micro-kernel this CPU has is checked, not only the one chosen.
//!
//! `cargo test --release --test cpu_kernels`.

use sd_wgpu::cpu::gemm::{gemm_named, kernels_available};
use sd_wgpu::ops::{attention, AttentionOpts, ConvOpts, MatmulOpts};
use sd_wgpu::{DType, Device, Tensor};

/// SplitMix64 values in [-1, 1), the same on every run.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// A CPU tensor of `dtype` and the f32 values it holds (rounded for f16),
/// which the references use.
fn tensor(seed: u64, shape: &[usize], dtype: DType) -> (Tensor, Vec<f32>) {
    let n = shape.iter().product();
    let t = Tensor::from_f32(values(seed, n), shape, dtype, &Device::Cpu).unwrap();
    let v = t.to_vec_f32().unwrap();
    (t, v)
}

/// NMSE bound of a result stored in `dtype` (the op suite's matmul bound).
fn bound(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-10,
        DType::F16 => 1e-6,
    }
}

/// Panics unless `got` is within `max_nmse` of `want` (normalised MSE).
fn check(what: &str, got: &[f32], want: &[f64], max_nmse: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "{what}: non-finite output");
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    let e = if den == 0.0 { num } else { num / den };
    assert!(e <= max_nmse, "{what}: NMSE {e:.3e} > {max_nmse:.1e}");
}

/// `c [m, n] = a [m, k] @ b [k, n]`, the triple loop, in f64.
fn gemm_ref(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
        }
    }
    c
}

/// Shapes at the edges of every kernel's blocks (mr 12 or 6, nr 32 or 16,
/// the 256-deep k slab, the 96-row task) and the SD linear layers' sizes.
const GEMM_SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (2, 1280, 320),
    (5, 7, 3),
    (11, 31, 255),
    (12, 32, 256),
    (13, 33, 257),
    (97, 65, 513),
    (154, 320, 768),
    (200, 17, 40),
    (1, 130, 600),
    (512, 320, 320),
    (256, 1280, 640),
];

#[test]
fn gemm_every_kernel_matches_triple_loop() {
    let kernels = kernels_available();
    assert!(kernels.contains(&"portable"));
    for name in kernels {
        for (s, &(m, n, k)) in GEMM_SHAPES.iter().enumerate() {
            let a = values(s as u64, m * k);
            let b = values(100 + s as u64, k * n);
            // C starts non-zero: the kernels accumulate into it.
            let c0 = values(200 + s as u64, m * n);
            let mut c = c0.clone();
            assert!(gemm_named(name, &a, &b, &mut c, m, n, k));
            let want: Vec<f64> = gemm_ref(&a, &b, m, n, k)
                .iter()
                .zip(&c0)
                .map(|(r, &c)| r + c as f64)
                .collect();
            check(&format!("gemm {name} {m}x{n}x{k}"), &c, &want, 1e-12);
        }
    }
}

#[test]
fn unknown_kernel_is_refused() {
    let mut c = [0.0];
    assert!(!gemm_named("no-such-kernel", &[1.0], &[1.0], &mut c, 1, 1, 1));
    assert_eq!(c, [0.0]);
}

/// `matmul_ex` on the CPU backend (f32 and f16 storage, every transpose,
/// batches, alpha, bias, residual) against the triple loop.
#[test]
fn matmul_matches_triple_loop() {
    let cases: [(&[usize], usize, usize, usize); 5] = [
        (&[], 154, 320, 768),
        (&[2], 77, 33, 40),
        (&[3], 13, 65, 300),
        (&[], 2, 1280, 320),
        (&[], 1024, 640, 640),
    ];
    for dt in [DType::F32, DType::F16] {
        for (ci, &(lead, m, n, k)) in cases.iter().enumerate() {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let seed = 10 * ci as u64;
                let batch: usize = lead.iter().product();
                let shape = |r: usize, c: usize| [lead, &[r, c]].concat();
                let (at, av) = tensor(seed, &if ta { shape(k, m) } else { shape(m, k) }, dt);
                let (bt, bv) = tensor(seed + 1, &if tb { shape(n, k) } else { shape(k, n) }, dt);
                let (bias, biasv) = tensor(seed + 2, &[n], dt);
                let (res, resv) = tensor(seed + 3, &shape(m, n), dt);
                let opts = MatmulOpts {
                    trans_a: ta,
                    trans_b: tb,
                    alpha: 0.5,
                    bias: Some(&bias),
                    residual: Some(&res),
                };
                let got = at.matmul_ex(&bt, &opts).to_vec_f32().unwrap();
                let mut want = Vec::new();
                for bi in 0..batch {
                    // Untranspose into plain row-major [m, k] and [k, n].
                    let a: Vec<f32> = (0..m * k)
                        .map(|x| {
                            let (i, p) = (x / k, x % k);
                            av[bi * m * k + if ta { p * m + i } else { i * k + p }]
                        })
                        .collect();
                    let b: Vec<f32> = (0..k * n)
                        .map(|x| {
                            let (p, j) = (x / n, x % n);
                            bv[bi * k * n + if tb { j * k + p } else { p * n + j }]
                        })
                        .collect();
                    let c = gemm_ref(&a, &b, m, n, k);
                    want.extend(
                        c.iter()
                            .enumerate()
                            .map(|(x, v)| 0.5 * v + biasv[x % n] as f64 + resv[bi * m * n + x] as f64),
                    );
                }
                let what = format!("matmul {dt} {lead:?} {m}x{n}x{k} trans {ta} {tb}");
                check(&what, &got, &want, bound(dt));
            }
        }
    }
}

/// Direct convolution of `x [N, C, H, W]` with `w [Co, C, kh, kw]`, in f64.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    stride: usize,
    pad: [usize; 4],
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [co, _, kh, kw] = ws;
    let ho = (h + pad[0] + pad[1] - kh) / stride + 1;
    let wo = (wd + pad[2] + pad[3] - kw) / stride + 1;
    let mut out = vec![0.0f64; n * co * ho * wo];
    for b in 0..n {
        for o in 0..co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0.0f64;
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad[0] as isize;
                                let ix = (ox * stride + kx) as isize - pad[2] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                let xv = x[((b * c + ci) * h + iy as usize) * wd + ix as usize];
                                s += xv as f64 * w[((o * c + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    out[((b * co + o) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    (out, [n, co, ho, wo])
}

#[test]
fn conv_matches_direct_convolution() {
    // (x, w, stride, padding): SD's 3x3 resnet conv at 32x32 latent, the
    // downsampler (stride 2), the VAE's asymmetric pad, a 1x1 shortcut,
    // odd sizes and channel counts off every block edge.
    /// Input `[N, C, H, W]`, weight `[Co, C, kh, kw]`, stride, padding.
    type Case = ([usize; 4], [usize; 4], usize, [usize; 4]);
    let cases: [Case; 6] = [
        ([1, 320, 32, 32], [320, 320, 3, 3], 1, [1; 4]),
        ([2, 64, 17, 15], [40, 64, 3, 3], 2, [1; 4]),
        ([1, 16, 9, 9], [16, 16, 3, 3], 2, [0, 1, 0, 1]),
        ([2, 96, 8, 8], [33, 96, 1, 1], 1, [0; 4]),
        ([1, 3, 5, 7], [13, 3, 3, 3], 1, [1; 4]),
        ([1, 4, 1, 1], [5, 4, 3, 3], 1, [1; 4]),
    ];
    for dt in [DType::F32, DType::F16] {
        for (ci, &(xs, ws, stride, pad)) in cases.iter().enumerate() {
            let seed = 1000 + 10 * ci as u64;
            let (x, xv) = tensor(seed, &xs, dt);
            let (w, wv) = tensor(seed + 1, &ws, dt);
            let (bias, bv) = tensor(seed + 2, &[ws[0]], dt);
            let (mut want, os) = conv_ref(&xv, xs, &wv, ws, stride, pad);
            let (res, rv) = tensor(seed + 3, &os, dt);
            let plane = os[2] * os[3];
            for (i, v) in want.iter_mut().enumerate() {
                *v += bv[(i / plane) % os[1]] as f64 + rv[i] as f64;
            }
            let opts = ConvOpts {
                stride,
                padding: pad,
                bias: Some(&bias),
                residual: Some(&res),
            };
            let got = x.conv2d(&w, &opts);
            assert_eq!(got.shape(), &os);
            let what = format!("conv {dt} {xs:?} * {ws:?} stride {stride} pad {pad:?}");
            check(&what, &got.to_vec_f32().unwrap(), &want, bound(dt));
        }
    }
}

/// Naive attention: per (batch, head, query) the full score row, softmax,
/// then P V, in f64. `q [B, Lq, H*D]`, `k`, `v [B, Lk, H*D]`.
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: (usize, usize, usize, usize),
    heads: usize,
    causal: bool,
) -> Vec<f64> {
    let (b, lq, lk, width) = dims;
    let d = width / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0f64; b * lq * width];
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..lq {
                let keys = if causal { i + 1 } else { lk };
                let qr = &q[(bi * lq + i) * width + h * d..][..d];
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        let kr = &k[(bi * lk + j) * width + h * d..][..d];
                        qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let sum: f64 = p.iter().sum();
                for (j, pj) in p.iter().enumerate() {
                    let vr = &v[(bi * lk + j) * width + h * d..][..d];
                    for (x, &vv) in vr.iter().enumerate() {
                        out[(bi * lq + i) * width + h * d + x] += pj / sum * vv as f64;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_naive() {
    // (B, Lq, Lk, width, heads, causal): SD self-attention at a 32x32 latent
    // and cross-attention on 77 tokens, CLIP's causal text attention, and
    // odd lengths and head dims off every block edge.
    let cases = [
        (2, 1024, 1024, 320, 8, false),
        (2, 256, 77, 640, 8, false),
        (1, 77, 77, 768, 12, true),
        (1, 1, 1, 8, 2, false),
        (3, 37, 129, 60, 4, false),
        (1, 70, 70, 21, 3, true),
    ];
    for dt in [DType::F32, DType::F16] {
        for (ci, &(b, lq, lk, width, heads, causal)) in cases.iter().enumerate() {
            let seed = 2000 + 10 * ci as u64;
            let (q, qv) = tensor(seed, &[b, lq, width], dt);
            let (k, kv) = tensor(seed + 1, &[b, lk, width], dt);
            let (v, vv) = tensor(seed + 2, &[b, lk, width], dt);
            let opts = if causal {
                AttentionOpts::causal(heads, width)
            } else {
                AttentionOpts::new(heads, width)
            };
            let got = attention(&q, &k, &v, &opts).to_vec_f32().unwrap();
            let want = attention_ref(&qv, &kv, &vv, (b, lq, lk, width), heads, causal);
            let what = format!("attention {dt} [{b}, {lq}/{lk}, {width}] heads {heads} causal {causal}");
            check(&what, &got, &want, bound(dt));
        }
    }
}
