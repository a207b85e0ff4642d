//! The pipeline's behaviour on the small fixture model (CPU): batches and
//! seeds, progress and cancellation, img2img sizes and strengths, prompts
//! (long, weighted, with textual-inversion embeddings), errors. Conformance
//! with diffusers is tests/pipeline_e2e.rs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use sd_wgpu::checkpoint::{Embedding, SafetensorsFile};
use sd_wgpu::pipeline::{
    Control, LoadOptions, NoProgress, Pipeline, Request, RgbImage, Stage, Step, TextualInversion,
};
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{DType, Error};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model")
}

fn pipe() -> &'static Pipeline {
    static PIPE: OnceLock<Pipeline> = OnceLock::new();
    PIPE.get_or_init(|| Pipeline::load(model_dir(), &LoadOptions::default()).unwrap())
}

fn quick(prompt: &str) -> Request {
    Request {
        steps: 3,
        sampler: Some(SamplerKind::EulerAncestral),
        seed: 10,
        ..Request::new(prompt)
    }
}

/// A progress recorder that stops after `stop_after` calls.
struct Recorder {
    stages: Vec<Stage>,
    steps: Vec<(usize, usize, usize, usize, usize)>,
    stop_after: Option<usize>,
}

impl Recorder {
    fn new(stop_after: Option<usize>) -> Recorder {
        Recorder {
            stages: Vec::new(),
            steps: Vec::new(),
            stop_after,
        }
    }
}

impl sd_wgpu::pipeline::Progress for Recorder {
    fn stage(&mut self, stage: Stage) {
        self.stages.push(stage);
    }

    fn step(&mut self, s: &Step) -> Control {
        assert_eq!(s.latents.len(), s.latent_shape.iter().product::<usize>());
        self.steps
            .push((s.image, s.images, s.call, s.calls, s.latents.len()));
        match self.stop_after {
            Some(n) if self.steps.len() >= n => Control::Stop,
            _ => Control::Continue,
        }
    }
}

#[test]
fn model_defaults() {
    let p = pipe();
    assert_eq!(
        p.default_sampler(),
        SamplerKind::Pndm,
        "the fixture's scheduler config is PNDM"
    );
    assert_eq!(p.default_size(), (64, 64), "UNet sample_size 8 x VAE factor 8");
    assert_eq!(p.dtype(), DType::F32, "f32 on the CPU by default");
    assert_eq!(p.model_name(), "model");
    let hash = p.model_hash().unwrap();
    assert_eq!(hash.len(), 10);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn batch_image_i_is_the_single_image_of_seed_plus_i() {
    let batch = pipe()
        .txt2img(
            &Request {
                batch: 2,
                ..quick("a red fox")
            },
            &mut NoProgress,
        )
        .unwrap();
    let single = pipe()
        .txt2img(
            &Request {
                seed: 11,
                ..quick("a red fox")
            },
            &mut NoProgress,
        )
        .unwrap();
    assert_eq!(batch.images.len(), 2);
    assert_eq!(batch.images[1].image, single.images[0].image);
    assert_ne!(batch.images[0].image, batch.images[1].image);
    assert_eq!((batch.images[0].info.seed, batch.images[1].info.seed), (10, 11));
}

#[test]
fn progress_sees_every_call_and_stop_cancels() {
    let mut rec = Recorder::new(None);
    let out = pipe()
        .txt2img(
            &Request {
                batch: 2,
                ..quick("a fox")
            },
            &mut rec,
        )
        .unwrap();
    assert_eq!(out.timings.steps.len(), 6);
    let want: Vec<_> = (0..2)
        .flat_map(|i| (0..3).map(move |c| (i, 2, c, 3, 4 * 8 * 8)))
        .collect();
    assert_eq!(rec.steps, want);
    assert_eq!(
        rec.stages,
        [
            Stage::EncodingPrompt,
            Stage::Sampling { image: 0 },
            Stage::Decoding { image: 0 },
            Stage::Sampling { image: 1 },
            Stage::Decoding { image: 1 }
        ]
    );

    let mut stop = Recorder::new(Some(2));
    let e = pipe().txt2img(&quick("a fox"), &mut stop).err().unwrap();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(stop.steps.len(), 2, "stopped right after the call that asked");

    let flag = Arc::new(AtomicBool::new(true));
    let e = pipe().txt2img(&quick("a fox"), &mut flag.clone()).err().unwrap();
    assert!(matches!(e, Error::Cancelled));
    flag.store(false, Ordering::Relaxed);
    assert!(pipe().txt2img(&quick("a fox"), &mut flag.clone()).is_ok());

    let mut calls = 0;
    let mut closure = |_: &Step| {
        calls += 1;
        Control::Continue
    };
    pipe().txt2img(&quick("a fox"), &mut closure).unwrap();
    assert_eq!(calls, 3);
}

fn test_image(width: usize, height: usize) -> RgbImage {
    let data = (0..width * height * 3).map(|i| (i % 7) as f32 / 7.0).collect();
    RgbImage { width, height, data }
}

#[test]
fn img2img_sizes_and_strength() {
    let base = Request {
        sampler: Some(SamplerKind::Ddim),
        steps: 10,
        strength: 0.5,
        ..quick("a fox")
    };
    // Size kept, rounded down to a multiple of 8.
    let out = pipe()
        .img2img(&base, &test_image(70, 50), &mut NoProgress)
        .unwrap();
    let img = &out.images[0];
    assert_eq!((img.image.width, img.image.height), (64, 48));
    assert_eq!(img.info.denoising_strength, Some(0.5));
    assert_eq!(out.timings.steps.len(), 5, "int(10 x 0.5) steps run");
    assert!(out.warnings.is_empty());
    // Resized when asked.
    let req = Request {
        width: Some(32),
        height: Some(40),
        ..base.clone()
    };
    let out = pipe()
        .img2img(&req, &test_image(70, 50), &mut NoProgress)
        .unwrap();
    assert_eq!((out.images[0].image.width, out.images[0].image.height), (32, 40));
    // A strength that keeps no step runs one, and says so.
    let req = Request {
        strength: 0.05,
        ..base.clone()
    };
    let mut rec = Recorder::new(None);
    let out = pipe().img2img(&req, &test_image(64, 64), &mut rec).unwrap();
    assert_eq!(rec.steps.len(), 1);
    assert!(out.warnings[0].contains("--strength 0.05") && out.warnings[0].contains("1 step"));
    assert!(rec.stages.contains(&Stage::EncodingImage));
    // PNDM's call list is one longer than its steps: diffusers' slice keeps its last call there,
    // and so do we, with nothing to warn about.
    let req = Request {
        sampler: Some(SamplerKind::Pndm),
        ..req
    };
    let mut rec = Recorder::new(None);
    let out = pipe().img2img(&req, &test_image(64, 64), &mut rec).unwrap();
    assert_eq!(rec.steps.len(), 1);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let e = pipe()
        .img2img(
            &Request {
                strength: -0.1,
                ..base
            },
            &test_image(64, 64),
            &mut NoProgress,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--strength"), "{e}");
}

#[test]
fn guidance_one_encodes_the_prompt_only() {
    let guided = pipe().condition(&quick("a fox")).unwrap();
    assert!(guided.guided);
    assert_eq!(guided.context.shape(), &[2, 77, 32]);
    let plain = pipe()
        .condition(&Request {
            cfg_scale: 1.0,
            ..quick("a fox")
        })
        .unwrap();
    assert!(!plain.guided);
    assert_eq!(plain.context.shape(), &[1, 77, 32]);
    // The conditional half is the same either way.
    let g = guided.context.to_vec_f32().unwrap();
    assert_eq!(g[77 * 32..], plain.context.to_vec_f32().unwrap()[..]);
}

#[test]
fn long_prompts_pad_the_negative_prompt() {
    let long = vec!["fox"; 100].join(" ");
    let c = pipe()
        .condition(&Request {
            negative_prompt: "blurry".into(),
            ..quick(&long)
        })
        .unwrap();
    assert_eq!(c.context.shape(), &[2, 154, 32]);
    let v = c.context.to_vec_f32().unwrap();
    // The negative prompt's second chunk is the encoding of "".
    let empty = pipe()
        .condition(&quick(""))
        .unwrap()
        .context
        .to_vec_f32()
        .unwrap();
    let d = 32;
    assert_eq!(v[77 * d..154 * d], empty[77 * d..154 * d]);
}

#[test]
fn emphasis_weights_the_states() {
    let states = |p: &str| pipe().condition(&quick(p)).unwrap().context.to_vec_f32().unwrap();
    assert_eq!(states("a (fox:1.0) in snow"), states("a fox in snow"));
    assert_ne!(states("a (fox:1.5) in snow"), states("a fox in snow"));
    let e = pipe()
        .condition(&quick("a (fox:1.2.3)"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("1.2.3"), "{e}");
}

/// The token embedding rows of `ids`, read from the fixture's text encoder.
fn token_rows(ids: &[usize]) -> Vec<f32> {
    let st = SafetensorsFile::open(model_dir().join("text_encoder/model.safetensors")).unwrap();
    let name = st
        .names()
        .into_iter()
        .find(|n| n.ends_with("token_embedding.weight"))
        .unwrap();
    let table = st.read(&name, DType::F32).unwrap().to_f32().into_owned(); // [V, 32]
    ids.iter()
        .flat_map(|&i| table[i * 32..(i + 1) * 32].to_vec())
        .collect()
}

#[test]
fn textual_inversion_vectors_replace_their_trigger() {
    let tok = pipe().tokenizer();
    let red_fox: Vec<usize> = tok.encode("red fox").into_iter().map(|i| i as usize).collect();
    let ti = TextualInversion {
        embedding: Embedding {
            trigger: "<red-fox>".into(),
            n: 2,
            width: 32,
            vectors: token_rows(&red_fox),
        },
        hash: "0123456789ab".into(),
        path: None,
    };
    let with = Request {
        embeddings: vec![ti.clone()],
        ..quick("a <red-fox> in the snow")
    };
    let a = pipe().condition(&with).unwrap().context.to_vec_f32().unwrap();
    let b = pipe()
        .condition(&quick("a red fox in the snow"))
        .unwrap()
        .context
        .to_vec_f32()
        .unwrap();
    assert_eq!(
        a, b,
        "the embedding's vectors are those of the words it stands for"
    );
    let out = pipe().txt2img(&with, &mut NoProgress).unwrap();
    assert_eq!(
        out.images[0].info.embeddings,
        vec![("<red-fox>".to_string(), "0123456789ab".to_string())]
    );

    let mut wide = ti;
    wide.embedding.width = 768;
    wide.embedding.n = 1;
    wide.embedding.vectors = vec![0.0; 768];
    let e = pipe()
        .condition(&Request {
            embeddings: vec![wide],
            ..quick("a <red-fox>")
        })
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("<red-fox>") && e.contains("768") && e.contains("32"),
        "{e}"
    );
}

#[test]
fn model_limits_are_checked_before_work() {
    let mut rec = Recorder::new(None);
    for (req, flag) in [
        (
            Request {
                width: Some(100),
                ..quick("x")
            },
            "--width",
        ),
        (
            Request {
                clip_skip: 3,
                ..quick("x")
            },
            "--clip-skip",
        ),
        (
            Request {
                steps: 1001,
                ..quick("x")
            },
            "--steps",
        ),
        (
            Request {
                batch: 0,
                ..quick("x")
            },
            "--batch",
        ),
    ] {
        let e = pipe().txt2img(&req, &mut rec).err().unwrap().to_string();
        assert!(e.contains(flag), "{e}");
    }
    assert!(rec.stages.is_empty(), "nothing ran");
    let ok = Request {
        clip_skip: 2,
        ..quick("x")
    };
    assert!(pipe().txt2img(&ok, &mut NoProgress).is_ok());
}

#[test]
fn non_finite_latents_stop_the_run() {
    // An emphasis weight past f32's range makes the text states infinite, and the UNet's output
    // with them. (A guidance scale that large is refused by Request::check, before any work.)
    let req = Request {
        sampler: Some(SamplerKind::Ddim),
        ..quick(&format!("a (fox:1{})", "0".repeat(39)))
    };
    match pipe().txt2img(&req, &mut NoProgress) {
        Err(Error::NonFinite(what)) => {
            assert!(what.contains("model call") && what.contains("seed 10"), "{what}")
        }
        Err(e) => panic!("expected a non-finite error, got {e}"),
        Ok(_) => panic!("expected a non-finite error, got images"),
    }
}
