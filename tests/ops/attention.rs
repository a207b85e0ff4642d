//! Attention family: flash (tuned) and naive attention against the CPU twin.
//!
//! NMSE bounds: see `cases::attention::max_nmse`.
//!
//! Cost. On llvmpipe (2 cores) the flash kernel does ~1.5 GFLOP per CPU second
//! and the naive one ~1: a 4096-token self-attention (34-43 GFLOP) takes half
//! a minute. So the two largest SD shapes run at full size in one dtype, tuned
//! only, and in the other dtype with the same head dim and all 4096 keys but
//! fewer queries (query blocks are independent, so this covers the same code);
//! the naive kernel runs on every head dim at shorter lengths. The CPU
//! reference checks a sample of query rows where the whole would be slow.

use sd_wgpu::ops::{attention, attention_variant, AttentionOpts, Variant};
use sd_wgpu::{DType, Device, Tensor};

use crate::cases::attention::{self as sd, max_nmse, Attention};
use crate::common::*;

const VARIANTS: [Variant; 2] = [Variant::Tuned, Variant::Naive];

/// One attention problem on one device, with the spread of its queries.
struct Case {
    s: Attention,
    /// Standard deviation of q: larger makes the softmax peakier, so the
    /// running max changes across key tiles and the rescaling is exercised.
    q_scale: f32,
    dev: Device,
}

impl Case {
    /// An SD shape from the shared table.
    fn sd(s: Attention) -> Case {
        Case {
            s,
            q_scale: 1.0,
            dev: gpu(),
        }
    }

    /// A shape of its own: q [b, lq, w], k/v [b, lk, w].
    fn new(b: usize, lq: usize, lk: usize, w: usize, heads: usize) -> Case {
        Case::sd(Attention::new("", b, lq, lk, w, heads))
    }

    fn on(mut self, dev: Device) -> Case {
        self.dev = dev;
        self
    }

    fn causal(mut self) -> Case {
        self.s = self.s.causal();
        self
    }

    fn peaky(mut self) -> Case {
        self.q_scale = 3.0;
        self
    }

    fn name(&self, dt: DType, variant: Variant) -> String {
        format!(
            "attention {} {variant:?} {dt} q [{}, {}, {}] kv {} heads {} (D={}){}",
            self.s.what,
            self.s.b,
            self.s.lq,
            self.s.w,
            self.s.lk,
            self.s.heads,
            self.s.d(),
            if self.s.causal { " causal" } else { "" }
        )
    }

    /// Runs `variants` in `dt` and compares with the CPU twin on every query
    /// row, or only on the rows of `sample` (query windows of every batch
    /// item) when the full reference would take too long on the CPU.
    fn check(&self, rng: &mut Rng, dt: DType, variants: &[Variant], sample: Option<&[(usize, usize)]>) {
        let mut input = |len: usize, scale: f32| {
            let c = Tensor::from_f32(
                rng.vec(self.s.b * len * self.s.w, scale),
                &[self.s.b, len, self.s.w],
                dt,
                &Device::Cpu,
            )
            .unwrap();
            let g = c.to_device(&self.dev).unwrap();
            (c, g)
        };
        let (cq, gq) = input(self.s.lq, self.q_scale);
        let (ck, gk) = input(self.s.lk, 1.0);
        let (cv, gv) = input(self.s.lk, 1.0);
        let opts = AttentionOpts {
            causal: self.s.causal,
            ..AttentionOpts::new(self.s.heads, self.s.w)
        };
        let full = [(0, self.s.lq)];
        let rows = sample.unwrap_or(&full);
        // [b, sum of window lengths, w]
        let refs: Vec<Tensor> = rows
            .iter()
            .map(|&(s, n)| attention(&cq.narrow(1, s, n), &ck, &cv, &opts))
            .collect();
        let reference = Tensor::cat(&refs.iter().collect::<Vec<_>>(), 1);
        for &variant in variants {
            let out = attention_variant(&gq, &gk, &gv, &opts, variant);
            let picked = pick_rows(&out, rows);
            assert_close(&self.name(dt, variant), &picked, &reference, max_nmse(dt));
        }
    }
}

/// The query windows `rows` of a GPU result [b, lq, w], as a CPU tensor.
fn pick_rows(out: &Tensor, rows: &[(usize, usize)]) -> Tensor {
    let (b, lq, w) = (out.dim(0), out.dim(1), out.dim(2));
    let all = out.to_vec_f32().expect("GPU result");
    // Rows outside the sample are not compared, but must at least be finite.
    let bad = all.iter().position(|x| !x.is_finite());
    assert!(
        bad.is_none(),
        "non-finite GPU output at {bad:?} of {:?}",
        out.shape()
    );
    let mut v = Vec::new();
    for bi in 0..b {
        for &(s, n) in rows {
            v.extend_from_slice(&all[(bi * lq + s) * w..(bi * lq + s + n) * w]);
        }
    }
    let total: usize = rows.iter().map(|r| r.1).sum();
    Tensor::from_f32(v, &[b, total, w], out.dtype(), &Device::Cpu).unwrap()
}

/// First block, an unaligned middle window, and the partial last block.
fn sample_rows(lq: usize) -> [(usize, usize); 3] {
    [(0, 48), (lq / 2 - 37, 48), (lq - 45, 45)]
}

#[test]
fn unet_self_attention_d40() {
    let mut rng = Rng::new(10);
    let c = Case::sd(sd::UNET_SELF_64);
    c.check(&mut rng, DType::F16, &[Variant::Tuned], Some(&sample_rows(4096)));
    let c = Case::sd(sd::UNET_SELF_64.queries(1024)).peaky();
    c.check(&mut rng, DType::F32, &[Variant::Tuned], Some(&sample_rows(1024)));
    let c = Case::sd(sd::UNET_SELF_64.queries(256).keys(1024));
    for dt in DTYPES {
        c.check(&mut rng, dt, &[Variant::Naive], None);
    }
}

#[test]
fn unet_cross_attention() {
    let mut rng = Rng::new(11);
    // 77 tokens and a long prompt of two 77-token chunks.
    for s in [sd::UNET_CROSS_64, sd::UNET_CROSS_64_LONG] {
        let c = Case::sd(s).peaky();
        for dt in DTYPES {
            c.check(&mut rng, dt, &VARIANTS, Some(&sample_rows(4096)));
        }
    }
}

#[test]
fn unet_levels_d80_d160() {
    let mut rng = Rng::new(12);
    for dt in DTYPES {
        let c = Case::sd(sd::UNET_SELF_32);
        c.check(&mut rng, dt, &[Variant::Tuned], Some(&sample_rows(1024)));
        // Three 77-token chunks.
        let c = Case::sd(sd::UNET_CROSS_32.keys(231)).peaky();
        c.check(&mut rng, dt, &VARIANTS, Some(&sample_rows(1024)));
        let c = Case::sd(sd::UNET_SELF_16).peaky();
        c.check(&mut rng, dt, &VARIANTS, None);
    }
}

#[test]
fn clip_causal() {
    let mut rng = Rng::new(13);
    for dt in DTYPES {
        Case::sd(sd::CLIP).check(&mut rng, dt, &VARIANTS, None);
        // Several key tiles, a partial last block, batch 2.
        Case::new(2, 150, 150, 96, 2)
            .causal()
            .peaky()
            .check(&mut rng, dt, &VARIANTS, None);
    }
}

#[test]
fn vae_mid_block_d512() {
    let mut rng = Rng::new(14);
    let c = Case::sd(sd::VAE_MID_64);
    c.check(&mut rng, DType::F32, &[Variant::Tuned], Some(&sample_rows(4096)));
    let c = Case::sd(sd::VAE_MID_64.queries(512)).peaky();
    c.check(&mut rng, DType::F16, &[Variant::Tuned], None);
    // Both variants at D=512 on a shorter sequence, every row checked.
    let c = Case::new(1, 300, 300, 512, 1).peaky();
    for dt in DTYPES {
        c.check(&mut rng, dt, &VARIANTS, None);
    }
}

#[test]
fn awkward_shapes() {
    let mut rng = Rng::new(15);
    let cases = [
        Case::new(1, 1, 50, 64, 1),           // a single query
        Case::new(2, 40, 1, 64, 2),           // a single key
        Case::new(1, 1, 1, 16, 2),            // one of each
        Case::new(1, 333, 77, 320, 8),        // Lq not a multiple of any block
        Case::new(3, 65, 33, 96, 4),          // batch 3, D=24
        Case::new(3, 70, 70, 96, 4).causal(), // causal, D=24
        Case::new(2, 100, 45, 16, 2),         // D=8
        Case::new(1, 50, 50, 45, 3).peaky(),  // D=15: not a multiple of 4
        Case::new(1, 40, 41, 256, 4),         // D=64
        Case::new(2, 33, 65, 256, 8),         // D=32
    ];
    for dt in DTYPES {
        for c in &cases {
            c.check(&mut rng, dt, &VARIANTS, None);
        }
    }
}

/// Inputs above the storage-binding limit (1 MiB on this context) are split
/// into windows: along the batch while whole batch items fit, else along the
/// queries; with several key passes, causal, and partial windows.
#[test]
fn larger_than_binding_limit() {
    let mut rng = Rng::new(16);
    let max = (SMALL_BINDING / 4) as usize; // f32 elements per binding
    let w = 256;
    for dt in DTYPES {
        // Batch windows: 5 items of ~30% of the limit each, 300 keys.
        let lq = max * 3 / 10 / w;
        Case::new(5, lq, 300, w, 4)
            .on(gpu_small_bindings())
            .check(&mut rng, dt, &VARIANTS, None);
        Case::new(5, lq, lq, w, 4)
            .causal()
            .on(gpu_small_bindings())
            .check(&mut rng, dt, &VARIANTS, None);
        // Query windows: one batch item above the limit.
        let lq = max / w + 233;
        Case::new(2, lq, 77, w, 4)
            .on(gpu_small_bindings())
            .check(&mut rng, dt, &VARIANTS, None);
    }
}

/// The CPU twin on hand-computed values.
#[test]
fn cpu_twin_hand_values() {
    let cpu = Device::Cpu;
    // One query, two keys, one head of D=2, scale 1: scores q.k = [0, ln 3],
    // so the weights are [1/4, 3/4] and the output 1/4 v0 + 3/4 v1.
    let ln3 = 3f32.ln();
    let q = Tensor::from_vec(vec![1.0, 0.0], &[1, 1, 2], &cpu).unwrap();
    let k = Tensor::from_vec(vec![0.0, 5.0, ln3, -7.0], &[1, 2, 2], &cpu).unwrap();
    let v = Tensor::from_vec(vec![4.0, -8.0, 8.0, 4.0], &[1, 2, 2], &cpu).unwrap();
    let opts = AttentionOpts {
        heads: 1,
        causal: false,
        scale: 1.0,
    };
    let out = attention(&q, &k, &v, &opts).to_vec_f32().unwrap();
    assert!(
        (out[0] - 7.0).abs() < 1e-5 && (out[1] - 1.0).abs() < 1e-5,
        "{out:?}"
    );
    // Causal: row 0 sees only key 0 and returns v0, whatever the scores.
    let q = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2], &cpu).unwrap();
    let opts = AttentionOpts {
        heads: 1,
        causal: true,
        scale: 1.0,
    };
    let out = attention(&q, &k, &v, &opts).to_vec_f32().unwrap();
    assert_eq!(&out[..2], &[4.0, -8.0]);
    // Two heads of D=1 keep their channels apart: head 1 has equal scores.
    let q = Tensor::from_vec(vec![1.0, 0.0], &[1, 1, 2], &cpu).unwrap();
    let k = Tensor::from_vec(vec![0.0, 1.0, ln3, 2.0], &[1, 2, 2], &cpu).unwrap();
    let v = Tensor::from_vec(vec![0.0, 10.0, 4.0, 20.0], &[1, 2, 2], &cpu).unwrap();
    let opts = AttentionOpts {
        heads: 2,
        causal: false,
        scale: 1.0,
    };
    let out = attention(&q, &k, &v, &opts).to_vec_f32().unwrap();
    assert!(
        (out[0] - 3.0).abs() < 1e-5 && (out[1] - 15.0).abs() < 1e-5,
        "{out:?}"
    );
}

/// The GPU kernels on the hand-computed case, so a wrong mask or head
/// offset shows as a readable difference rather than an NMSE.
#[test]
fn gpu_hand_values() {
    let dev = gpu();
    let ln3 = 3f32.ln();
    let q = Tensor::from_vec(vec![1.0, 0.0, 1.0, 2.0], &[1, 2, 2], &dev).unwrap();
    let k = Tensor::from_vec(vec![0.0, 5.0, ln3, -7.0], &[1, 2, 2], &dev).unwrap();
    let v = Tensor::from_vec(vec![4.0, -8.0, 8.0, 4.0], &[1, 2, 2], &dev).unwrap();
    for variant in VARIANTS {
        let causal = AttentionOpts {
            heads: 1,
            causal: true,
            scale: 1.0,
        };
        let out = attention_variant(&q, &k, &v, &causal, variant)
            .to_vec_f32()
            .unwrap();
        assert!(
            (out[0] - 4.0).abs() < 1e-6 && (out[1] + 8.0).abs() < 1e-6,
            "{variant:?} {out:?}"
        );
        let plain = AttentionOpts {
            causal: false,
            ..causal
        };
        let out = attention_variant(&q, &k, &v, &plain, variant)
            .to_vec_f32()
            .unwrap();
        assert!(
            (out[0] - 7.0).abs() < 1e-5 && (out[1] - 1.0).abs() < 1e-5,
            "{variant:?} {out:?}"
        );
    }
}
