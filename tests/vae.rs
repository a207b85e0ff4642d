//! `--vae` / `LoadOptions::vae`: the small pipeline model of
//! tests/fixtures/pipeline with its VAE replaced by a second random one
//! (tests/fixtures/vae, written by tools/make_vae_goldens.py), against
//! diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline given
//! that VAE (`vae=`). The VAE comes in the four forms users have: a diffusers
//! folder, a standalone LDM-named safetensors, the same as a torch `.ckpt`,
//! and a full checkpoint's `first_stage_model.*` (the script checks each
//! file with diffusers' `from_single_file`).
//!
//! Bounds as tests/pipeline_e2e.rs (its documentation gives the reasoning):
//! f32 PSNR >= 90 dB, f16 (UNet and text encoder; the VAE stays f32) >= 45 dB,
//! CPU and GPU. GPU tests fail, never skip, without an adapter. Also here:
//! every form reads to the same weights, the A1111 metadata, every refusal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sd_wgpu::checkpoint::{open, open_vae, SafetensorsFile, VaeLayout};
use sd_wgpu::pipeline::{LoadOptions, NoProgress, Pipeline, RgbImage};
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{DType, Device, Error};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[path = "support/gpu.rs"]
mod support_gpu;
use support_gpu::gpu;

#[path = "support/e2e.rs"]
mod e2e;
use e2e::{compare, request, F16_MAX_U8, F16_PSNR, F32_MAX_U8, F32_PSNR};

#[path = "loaders/common.rs"]
#[allow(dead_code)]
mod common;

#[path = "support/cli.rs"]
#[allow(dead_code)]
mod cli;

#[path = "serve/common.rs"]
#[allow(dead_code)]
mod serve;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model() -> PathBuf {
    root().join("pipeline/model")
}

fn vae(name: &str) -> PathBuf {
    root().join("vae").join(name)
}

/// The four forms of the same VAE.
const FORMS: [&str; 4] = [
    "vae_diffusers",
    "tiny-vae.safetensors",
    "tiny-vae.ckpt",
    "tiny-full.safetensors",
];

fn load(vae_path: Option<PathBuf>, device: Device, dtype: DType) -> sd_wgpu::Result<Pipeline> {
    let opts = LoadOptions {
        device,
        dtype: Some(dtype),
        vae: vae_path,
        ..LoadOptions::default()
    };
    Pipeline::load(model(), &opts)
}

/// Runs every golden case with the VAE in each of `forms`; asserts the bounds.
fn conformance(forms: &[&str], device: Device, dtype: DType, min_psnr: f64, max_u8: u8) {
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(vae("cases.json")).unwrap()).unwrap();
    let goldens = SafetensorsFile::open(vae("goldens.safetensors")).unwrap();
    let mut inputs: HashMap<String, RgbImage> = HashMap::new();
    let mut failures = Vec::new();
    eprintln!(
        "{:<48} {:>9} {:>10} {:>6}",
        "form / case", "PSNR dB", "max diff", "max u8"
    );
    for form in forms {
        let pipe = load(Some(vae(form)), device.clone(), dtype).unwrap_or_else(|e| panic!("{form}: {e}"));
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let req = request(case);
            let out = match case["mode"].as_str().unwrap() {
                "txt2img" => pipe.txt2img(&req, &mut NoProgress),
                _ => {
                    let file = case["image"].as_str().unwrap();
                    let image = inputs
                        .entry(file.into())
                        .or_insert_with(|| RgbImage::load(&root().join("pipeline").join(file)).unwrap());
                    pipe.img2img(&req, image, &mut NoProgress)
                }
            }
            .unwrap_or_else(|e| panic!("{form} {name}: {e}"));
            let golden = goldens.read(name, DType::F32).unwrap().to_f32().into_owned(); // [1, H, W, 3]
            assert_eq!(out.images.len(), 1);
            let (psnr, max, max8) = compare(&out.images[0].image, &golden);
            eprintln!(
                "{:<48} {psnr:>9.2} {max:>10.2e} {max8:>6}",
                format!("{form} {name}")
            );
            if psnr < min_psnr || max8 > max_u8 {
                failures.push(format!(
                    "{form} {name}: PSNR {psnr:.2} dB, max 8-bit difference {max8}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{dtype} outside the bounds (PSNR >= {min_psnr} dB, 8-bit difference <= {max_u8}):\n{}",
        failures.join("\n")
    );
}

#[test]
fn cpu_f32_matches_diffusers_in_every_form() {
    conformance(&FORMS, Device::Cpu, DType::F32, F32_PSNR, F32_MAX_U8);
}

#[test]
fn cpu_f16_matches_diffusers() {
    conformance(&FORMS[1..2], Device::Cpu, DType::F16, F16_PSNR, F16_MAX_U8);
}

#[test]
fn gpu_f32_matches_diffusers() {
    conformance(&FORMS[1..2], gpu(), DType::F32, F32_PSNR, F32_MAX_U8);
}

#[test]
fn gpu_f16_matches_diffusers() {
    conformance(&FORMS[1..2], gpu(), DType::F16, F16_PSNR, F16_MAX_U8);
}

/// Every form reads to exactly the diffusers folder's weights, name for name
/// (the LDM key map, the 1x1 attention convolutions seen as linears).
#[test]
fn every_form_reads_to_the_same_weights() {
    let model_vae = open(model()).unwrap().vae.config;
    let reference = open_vae(&vae("vae_diffusers"), &model_vae, None).unwrap();
    assert_eq!(reference.layout, VaeLayout::DiffusersFolder);
    let want = reference.weights.names();
    assert_eq!(want.len(), 180);
    for (form, layout) in [
        ("tiny-vae.safetensors", VaeLayout::StandaloneFile),
        ("tiny-vae.ckpt", VaeLayout::StandaloneFile),
        ("tiny-full.safetensors", VaeLayout::CheckpointFile),
    ] {
        let other = open_vae(&vae(form), &model_vae, None).unwrap();
        assert_eq!(other.layout, layout, "{form}");
        assert_eq!(
            other.weights.names(),
            want,
            "{form}: the names (loss.logvar skipped)"
        );
        for name in &want {
            let (a, b) = (
                reference.weights.info(name).unwrap(),
                other.weights.info(name).unwrap(),
            );
            assert_eq!(a.shape, b.shape, "{form} {name}");
            let a = reference.weights.read(name, DType::F32).unwrap();
            let b = other.weights.read(name, DType::F32).unwrap();
            assert_eq!(a.to_f32(), b.to_f32(), "{form} {name}");
        }
    }
}

fn sha256_10(path: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// A1111's `VAE hash` (the file's SHA-256, 10 hex digits) and `VAE` (the
/// file name) after `Model`; nothing without `--vae`.
#[test]
fn metadata_names_the_vae_as_a1111() {
    let req = sd_wgpu::pipeline::Request {
        steps: 2,
        width: Some(64),
        height: Some(64),
        ..sd_wgpu::pipeline::Request::new("a fox")
    };
    let file = vae("tiny-vae.safetensors");
    let pipe = load(Some(file.clone()), Device::Cpu, DType::F32).unwrap();
    let info = &pipe.txt2img(&req, &mut NoProgress).unwrap().images[0].info;
    let hash = sha256_10(&file);
    assert_eq!(info.vae_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(info.vae_name.as_deref(), Some("tiny-vae.safetensors"));
    let text = info.to_a1111();
    assert!(
        text.contains(&format!(
            "Model: model, VAE hash: {hash}, VAE: tiny-vae.safetensors, "
        )),
        "{text}"
    );

    let pipe = load(Some(vae("vae_diffusers")), Device::Cpu, DType::F32).unwrap();
    assert_eq!(pipe.vae_name(), Some("vae_diffusers"));
    let weights = vae("vae_diffusers/diffusion_pytorch_model.safetensors");
    assert_eq!(pipe.vae_hash(), Some(sha256_10(&weights)));
    // A pipeline folder's vae/ is named with its folder.
    let pipe = load(Some(model()), Device::Cpu, DType::F32).unwrap();
    assert_eq!(pipe.vae_name(), Some("model/vae"));

    let pipe = load(None, Device::Cpu, DType::F32).unwrap();
    let info = &pipe.txt2img(&req, &mut NoProgress).unwrap().images[0].info;
    assert_eq!((info.vae_name.as_ref(), info.vae_hash.as_ref()), (None, None));
    assert!(!info.to_a1111().contains("VAE"));
}

/// A scratch folder for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sdw-vae-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the diffusers VAE folder with `edit` applied to its config.
fn edited_folder(tag: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let d = scratch(tag);
    let src = vae("vae_diffusers");
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        d.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    d
}

/// The tensors of tiny-vae.safetensors whose names pass `keep`, renamed by
/// `rename`, as f32 zeros, plus `extra`.
fn ldm_file(keep: impl Fn(&str) -> bool, rename: impl Fn(&str) -> String, extra: Vec<common::T>) -> Vec<u8> {
    let st = SafetensorsFile::open(vae("tiny-vae.safetensors")).unwrap();
    let mut tensors: Vec<common::T> = st
        .names()
        .into_iter()
        .filter(|n| keep(n))
        .map(|n| common::zeros(&rename(&n), "F32", 4, &st.info(&n).unwrap().shape))
        .collect();
    tensors.extend(extra);
    common::safetensors(&tensors)
}

fn refusal(vae_path: PathBuf) -> String {
    match load(Some(vae_path), Device::Cpu, DType::F32) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} not in: {msg}");
    }
}

#[test]
fn refuses_a_vae_that_does_not_fit() {
    let d = edited_folder("latent", |c| c["latent_channels"] = 16.into());
    assert_has(
        &refusal(d),
        &[
            "diffusers VAE folder",
            "latent channels: 16",
            "(config: its ",
            "config.json)",
            "needs 4",
        ],
    );

    let d = edited_folder("sdxl", |c| c["scaling_factor"] = 0.13025.into());
    assert_has(
        &refusal(d),
        &[
            "scaling_factor 0.13025",
            "needs 0.18215",
            "SDXL's VAE uses 0.13025",
        ],
    );

    let d = edited_folder("levels", |c| {
        c["block_out_channels"] = serde_json::json!([8, 16, 16]);
        c["down_block_types"] =
            serde_json::json!(["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"]);
        c["up_block_types"] = serde_json::json!(["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]);
    });
    assert_has(&refusal(d), &["pixels per latent: 4", "needs 8"]);

    // Same levels, other widths: the shapes do not match the weights.
    let d = edited_folder("widths", |c| {
        c["block_out_channels"] = serde_json::json!([8, 16, 16, 32])
    });
    let msg = refusal(d.clone());
    assert_has(
        &msg,
        &[
            "VAE weights",
            "do not match",
            "block_out_channels [8, 16, 16, 32]",
        ],
    );
    assert!(matches!(
        load(Some(d), Device::Cpu, DType::F32),
        Err(Error::Weights(_))
    ));

    // A standalone file is read with the model's architecture: half of one is missing.
    let d = scratch("half");
    let f = d.join("encoder-only.safetensors");
    std::fs::write(
        &f,
        ldm_file(|n| n.starts_with("encoder."), str::to_string, vec![]),
    )
    .unwrap();
    assert_has(
        &refusal(f),
        &[
            "standalone VAE file",
            "missing (108)",
            "decoder.up_blocks.0.resnets.0.norm1.weight",
            "the model's VAE config (a weights file carries none)",
        ],
    );

    // An SDXL checkpoint's VAE: SDXL's scaling factor.
    let f = d.join("sdxl.safetensors");
    let extra = vec![
        common::zeros(
            "model.diffusion_model.input_blocks.0.0.weight",
            "F32",
            4,
            &[32, 4, 3, 3],
        ),
        common::zeros("conditioner.embedders.1.model.ln_final.weight", "F32", 4, &[4]),
    ];
    std::fs::write(
        &f,
        ldm_file(|_| true, |n| format!("first_stage_model.{n}"), extra),
    )
    .unwrap();
    assert_has(
        &refusal(f),
        &[
            "full checkpoint's VAE",
            "scaling_factor 0.13025",
            "Stable Diffusion XL base",
        ],
    );
}

#[test]
fn refuses_what_is_not_a_vae() {
    let d = scratch("not");
    // A UNet's weights file and folder.
    assert_has(
        &refusal(model().join("unet/diffusion_pytorch_model.safetensors")),
        &[
            "no VAE weights",
            "expected encoder.* and decoder.*",
            "first keys: conv_in.bias",
        ],
    );
    assert_has(
        &refusal(model().join("unet")),
        &["a UNet2DConditionModel, not a VAE"],
    );
    // A LoRA.
    let f = d.join("lora.safetensors");
    let lora = [common::f32s(
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
        &[4, 8],
    )];
    std::fs::write(&f, common::safetensors(&lora)).unwrap();
    assert_has(&refusal(f), &["lora.safetensors", "a LoRA, not a VAE"]);
    // A checkpoint with no first_stage_model.
    let f = d.join("unet-only.safetensors");
    let unet = [common::f32s(
        "model.diffusion_model.input_blocks.0.0.weight",
        &[32, 4, 3, 3],
    )];
    std::fs::write(&f, common::safetensors(&unet)).unwrap();
    assert_has(&refusal(f), &["a checkpoint without VAE weights"]);
    // A folder without config.json, a path that does not exist, a file that is no weights file.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_has(&refusal(empty), &["not a VAE folder", "config.json"]);
    assert_has(
        &refusal(d.join("missing.safetensors")),
        &["--vae", "missing.safetensors"],
    );
    let f = d.join("text.ckpt");
    std::fs::write(&f, b"not a checkpoint at all").unwrap();
    assert_has(&refusal(f), &["text.ckpt"]);
}

/// `txt2img --vae` writes the VAE into the PNG; `serve --vae` generates with
/// it, says so in `/api/info` and in A1111's `info`; a bad `--vae` is one line.
#[test]
fn cli_and_server_take_vae() {
    let file = vae("tiny-vae.safetensors");
    let hash = sha256_10(&file);
    let d = cli::tmp("vae");
    let (model, file_arg) = (model().display().to_string(), file.display().to_string());
    let args = [
        "txt2img",
        "--model",
        &model,
        "--vae",
        &file_arg,
        "--prompt",
        "a fox",
        "--steps",
        "2",
        "--seed",
        "5",
        "--backend",
        "cpu",
        "--output",
        "v.png",
    ];
    let run = cli::sd(&d, &args);
    assert!(run.ok, "{}", run.stderr);
    let params = cli::parameters(&d.join("v.png"));
    assert!(
        params.contains(&format!(", VAE hash: {hash}, VAE: tiny-vae.safetensors, ")),
        "{params}"
    );

    let mut bad = args;
    bad[14] = "w.png";
    bad[4] = "no-such-vae.safetensors";
    cli::one_line_error(
        &cli::sd(&d, &bad),
        &["--vae", "no-such-vae.safetensors", "does not exist"],
    );
    // A VAE that does not fit: the library's refusal, on one line too.
    let levels = edited_folder("cli-levels", |c| {
        c["block_out_channels"] = serde_json::json!([8, 16, 16, 32])
    });
    let levels = levels.display().to_string();
    bad[4] = &levels;
    cli::one_line_error(&cli::sd(&d, &bad), &["--vae", "do not match"]);

    // `info --vae`: the VAE shown and checked in place of the model's.
    let run = cli::sd(&d, &["info", "--model", &model, "--vae", &file_arg]);
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("  file:   {file_arg}\n")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("VAE replaced by") && run.stdout.contains("check:   every weight matches"));
    cli::one_line_error(
        &cli::sd(&d, &["info", "--model", &model, "--vae", &levels]),
        &["do not match"],
    );

    let server = serve::Server::start(&["--model", &model, "--vae", &file_arg]);
    let vaes = server.get("/sdapi/v1/sd-vae").json();
    assert_eq!(
        vaes,
        serde_json::json!([{"model_name": "tiny-vae.safetensors", "filename": "tiny-vae.safetensors"}])
    );
    let reply = server.post(
        "/sdapi/v1/options",
        &serde_json::json!({"sd_vae": "tiny-vae.safetensors"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = server.post(
        "/sdapi/v1/options",
        &serde_json::json!({"sd_vae": "other.safetensors"}),
    );
    assert_eq!(reply.status, 422, "{}", reply.text());
    let info = server.get("/api/info").json();
    assert_eq!(
        info["vae"],
        serde_json::json!({"name": "tiny-vae.safetensors", "hash": hash})
    );
    let reply = server.post(
        "/sdapi/v1/txt2img",
        &serde_json::json!({"prompt": "a fox", "seed": 5, "steps": 2, "width": 64, "height": 64,
                            "override_settings": {"sd_vae": "tiny-vae.safetensors"}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let a1111: Value = serde_json::from_str(reply.json()["info"].as_str().unwrap()).unwrap();
    assert_eq!(a1111["sd_vae_name"], "tiny-vae.safetensors");
    assert_eq!(a1111["sd_vae_hash"], hash.as_str());
    let text = a1111["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains(&format!("VAE hash: {hash}, VAE: tiny-vae.safetensors")),
        "{text}"
    );
}
