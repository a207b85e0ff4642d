//! Matmul family: both GPU kernels (naive, tuned) against the CPU twin in f32
//! and f16, at SD 1.5 linear-layer shapes and awkward ones; splitting over
//! the binding limit; grids over 65535 workgroups; the CPU twin on
//! hand-computed values.

use sd_wgpu::ops::{MatmulOpts, Variant};
use sd_wgpu::{DType, Device, Tensor};

use crate::cases::matmul::{max_nmse, SD_LINEAR};
use crate::common::*;

const BOTH: [Variant; 2] = [Variant::Naive, Variant::Tuned];

/// What a case fuses besides the product.
#[derive(Clone, Copy, Default)]
struct Fused {
    trans_a: bool,
    trans_b: bool,
    alpha: Option<f32>,
    bias: bool,
    residual: bool,
}

/// Random A (`a`) and B (`b`, stored shapes) plus the fused operands, the
/// CPU twin's result, then each GPU variant compared with it.
fn check(rng: &mut Rng, dt: DType, a: &[usize], b: &[usize], f: Fused, variants: &[Variant]) {
    let (ca, ga) = pair(rng, a, 1.0, dt);
    let (cb, gb) = pair(rng, b, 1.0, dt);
    let n = if f.trans_b { b[b.len() - 2] } else { b[b.len() - 1] };
    let m = if f.trans_a { a[a.len() - 1] } else { a[a.len() - 2] };
    let mut out = a[..a.len() - 2].to_vec();
    out.extend([m, n]);
    let bias = f.bias.then(|| pair(rng, &[n], 1.0, dt));
    let res = f.residual.then(|| pair(rng, &out, 1.0, dt));
    let copts = MatmulOpts {
        trans_a: f.trans_a,
        trans_b: f.trans_b,
        alpha: f.alpha.unwrap_or(1.0),
        bias: bias.as_ref().map(|p| &p.0),
        residual: res.as_ref().map(|p| &p.0),
    };
    let cpu = ca.matmul_ex(&cb, &copts);
    let gopts = MatmulOpts {
        bias: bias.as_ref().map(|p| &p.1),
        residual: res.as_ref().map(|p| &p.1),
        ..copts
    };
    for &v in variants {
        let what = format!(
            "matmul {dt} {a:?} x {b:?} (trans {} {}, alpha {:?}, bias {}, residual {}) {v:?}",
            f.trans_a, f.trans_b, f.alpha, f.bias, f.residual
        );
        assert_close(&what, &ga.matmul_variant(&gb, &gopts, v), &cpu, max_nmse(dt));
    }
}

/// The UNet's linear layers (`cases::matmul::SD_LINEAR`) through `linear`.
#[test]
fn sd_linear_shapes() {
    let mut rng = Rng::new(10);
    for dt in DTYPES {
        for case in SD_LINEAR {
            let (cx, gx) = pair(&mut rng, case.x, 1.0, dt);
            let (cw, gw) = pair(&mut rng, &case.w(), 0.05, dt);
            let (cb, gb) = pair(&mut rng, &[case.n], 1.0, dt);
            let (cr, gr) = pair(&mut rng, &case.out(), 1.0, dt);
            let (bias, res) = (case.bias, case.residual);
            let cpu = cx.linear_residual(&cw, bias.then_some(&cb), res.then_some(&cr));
            let gpu = gx.linear_residual(&gw, bias.then_some(&gb), res.then_some(&gr));
            assert_close(
                &format!("linear {} {dt} {:?} x {:?}", case.what, case.x, case.w()),
                &gpu,
                &cpu,
                max_nmse(dt),
            );
        }
    }
    // The naive kernel once at an SD shape (it is slow on a CPU adapter).
    check(
        &mut rng,
        DType::F32,
        &[154, 768],
        &[320, 768],
        Fused {
            trans_b: true,
            ..Default::default()
        },
        &BOTH,
    );
}

/// Sizes that are not multiples of the tiles or of 4, 1-sized dims, every
/// transpose combination, batched and shared B, alpha, bias and residual.
#[test]
fn awkward_shapes() {
    let mut rng = Rng::new(11);
    // (M, N, K): odd sizes hit the tile and vec4 edges; (132, 68, 36) takes
    // the vec4 path at every transpose; (200, 200, 40) the 128 x 128 tile.
    let sizes = [
        (1, 1, 1),
        (67, 33, 19),
        (129, 65, 17),
        (5, 300, 7),
        (132, 68, 36),
        (200, 200, 40),
        (1, 130, 256),
        (200, 1, 40),
    ];
    for dt in DTYPES {
        for (i, &(m, n, k)) in sizes.iter().enumerate() {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                // Alternate batch layouts: none, batched B, shared B.
                let (lead, b_lead): (&[usize], &[usize]) = match i % 3 {
                    0 => (&[], &[]),
                    1 => (&[3], &[3]),
                    _ => (&[2], &[]),
                };
                let mut a = lead.to_vec();
                a.extend(if ta { [k, m] } else { [m, k] });
                let mut b = b_lead.to_vec();
                b.extend(if tb { [n, k] } else { [k, n] });
                let f = Fused {
                    trans_a: ta,
                    trans_b: tb,
                    alpha: (i % 2 == 1).then_some(0.125),
                    bias: i % 2 == 0,
                    residual: i % 4 < 2,
                };
                check(&mut rng, dt, &a, &b, f, &BOTH);
            }
        }
    }
}

/// A 4-d batch (attention-style [B, H, L, D] x [B, H, D, L]) is flattened
/// into one batch dimension.
#[test]
fn batch_dims() {
    let mut rng = Rng::new(12);
    for dt in DTYPES {
        let f = Fused {
            trans_b: true,
            alpha: Some(40f32.powf(-0.5)),
            ..Default::default()
        };
        check(&mut rng, dt, &[2, 3, 77, 40], &[2, 3, 77, 40], f, &BOTH);
    }
}

/// Grids beyond 65535 workgroups in x fold into y (`grid_1d`): the tuned
/// kernel with 70000 one-element tiles, the naive one with 17.2M outputs.
#[test]
fn grid_over_65535_groups() {
    let mut rng = Rng::new(13);
    let f = Fused::default();
    check(
        &mut rng,
        DType::F32,
        &[70000, 1, 4],
        &[70000, 4, 1],
        f,
        &[Variant::Tuned],
    );
    check(&mut rng, DType::F32, &[4200, 3], &[3, 4096], f, &[Variant::Naive]);
}

/// Operands over the 128 MiB storage-binding limit (llvmpipe's) are split:
/// A by rows of M, C and the residual by rows (here with A stored [K, M]),
/// and a B stored [N, K] by rows of N.
#[test]
fn over_binding_limit() {
    let dev = gpu();
    let cap = dev.gpu().unwrap().max_binding_elems(DType::F32);
    let mut rng = Rng::new(14);
    let m_big = cap / 128 + 1000;
    assert!(m_big * 128 > cap);
    let linear = Fused {
        trans_b: true,
        bias: true,
        ..Default::default()
    };
    check(
        &mut rng,
        DType::F32,
        &[m_big, 128],
        &[8, 128],
        linear,
        &[Variant::Tuned],
    );
    let c_big = Fused {
        trans_a: true,
        residual: true,
        ..Default::default()
    };
    assert!(8200 * 4100 > cap);
    check(&mut rng, DType::F32, &[4, 8200], &[4, 4100], c_big, &BOTH);
    check(
        &mut rng,
        DType::F32,
        &[8, 128],
        &[m_big, 128],
        linear,
        &[Variant::Tuned],
    );
}

fn cpu(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// The CPU twin on values worked out by hand.
#[test]
fn cpu_twin_hand_values() {
    // [[1, 2], [3, 4]] @ [[5, 6], [7, 8]] = [[1*5+2*7, 1*6+2*8], [3*5+4*7, 3*6+4*8]]
    //                                     = [[19, 22], [43, 50]]
    let a = cpu(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = cpu(&[5.0, 6.0, 7.0, 8.0], &[2, 2]);
    let ab = [19.0, 22.0, 43.0, 50.0];
    assert_eq!(a.matmul(&b).to_vec_f32().unwrap(), ab);
    // The same product from transposed storage: A^T = [[1, 3], [2, 4]], B^T = [[5, 7], [6, 8]].
    let at = cpu(&[1.0, 3.0, 2.0, 4.0], &[2, 2]);
    let bt = cpu(&[5.0, 7.0, 6.0, 8.0], &[2, 2]);
    let t = |ta, tb| MatmulOpts {
        trans_a: ta,
        trans_b: tb,
        ..Default::default()
    };
    assert_eq!(at.matmul_ex(&b, &t(true, false)).to_vec_f32().unwrap(), ab);
    assert_eq!(a.matmul_ex(&bt, &t(false, true)).to_vec_f32().unwrap(), ab);
    assert_eq!(at.matmul_ex(&bt, &t(true, true)).to_vec_f32().unwrap(), ab);
    // 0.5 * AB + bias [1, -1] + residual 1: [[9.5+1+1, 11-1+1], [21.5+1+1, 25-1+1]].
    let bias = cpu(&[1.0, -1.0], &[2]);
    let ones = cpu(&[1.0; 4], &[2, 2]);
    let opts = MatmulOpts {
        alpha: 0.5,
        bias: Some(&bias),
        residual: Some(&ones),
        ..Default::default()
    };
    assert_eq!(
        a.matmul_ex(&b, &opts).to_vec_f32().unwrap(),
        [11.5, 11.0, 23.5, 25.0]
    );
    // A shared B over a batch of 2 rows: [1, 2] B = [19, 22], [3, 4] B = [43, 50].
    let a3 = cpu(&[1.0, 2.0, 3.0, 4.0], &[2, 1, 2]);
    let y = a3.matmul(&b);
    assert_eq!(y.shape(), &[2, 1, 2]);
    assert_eq!(y.to_vec_f32().unwrap(), ab);
    // Batched B: batch 0 uses the identity, batch 1 doubles: [1, 2], [6, 8].
    let bb = cpu(&[1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0], &[2, 2, 2]);
    assert_eq!(a3.matmul(&bb).to_vec_f32().unwrap(), [1.0, 2.0, 6.0, 8.0]);
    // linear: x [1, 2, 3] with w [[1, 0, -1], [2, 1, 0]] and bias [0.5, -0.5]:
    // [1 - 3 + 0.5, 2 + 2 - 0.5] = [-1.5, 3.5].
    let x = cpu(&[1.0, 2.0, 3.0], &[1, 3]);
    let w = cpu(&[1.0, 0.0, -1.0, 2.0, 1.0, 0.0], &[2, 3]);
    let lb = cpu(&[0.5, -0.5], &[2]);
    assert_eq!(x.linear(&w, Some(&lb)).to_vec_f32().unwrap(), [-1.5, 3.5]);
}
