//! LoRA conformance: LoRA files merged by sd-wgpu against diffusers 0.42's
//! `load_lora_weights` + `fuse_lora` (tests/fixtures/lora/, LoRA files in loras/, written by
//! tools/make_lora_goldens.py on the tiny model of tests/fixtures/pipeline):
//! a kohya LoRA (linears and LoCon convs, text encoder and UNet, ranks 4 and
//! 2, alpha 3), the same LoRA as diffusers/PEFT saves it, two LoRAs at once
//! (the second a torch `.pt`, rank 8, no alpha, weight -0.5), and separate
//! text-encoder / UNet weights (A1111's `<lora:NAME:TE:UNET>`).
//!
//! - The merge, weight for weight: every weight a LoRA changes against the
//!   weight diffusers holds after `fuse_lora` (both f32 from the same f16
//!   tensors; only the summation order of `up @ down` differs), and every
//!   other weight unchanged. The PEFT file renamed to diffusers' older names
//!   (`processor.to_q_lora`, `lora_linear_layer`, `.lora.down`) merges the same.
//! - End to end, through the prompt tags and `--lora-dir` lookup: the images
//!   against diffusers' with the bounds of tests/pipeline_e2e.rs (f32 PSNR >=
//!   90 dB, f16 >= 45 dB), on the CPU and the GPU; then the LoRAs removed
//!   again (`set_loras(&[])`) against the plain model's golden of
//!   tests/fixtures/pipeline: going back is exact.
//! - The infotext keeps the prompt's tags and records `Lora hashes` as A1111
//!   computes them (the script records A1111's hash of each file).
//!
//! tests/lora/refusals.rs: every refusal; tests/lora/cli.rs: the flags.
//! GPU tests fail (never skip) when no adapter is found.

use std::path::{Path, PathBuf};

use sd_wgpu::checkpoint::SafetensorsFile;
use sd_wgpu::lora::{specs_for_prompt, LoraDir, LoraSet, LoraSpec, Part};
use sd_wgpu::pipeline::{LoadOptions, NoProgress, Pipeline, Request, RgbImage};
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{DType, Device};
use serde_json::Value;

#[path = "support/gpu.rs"]
mod support_gpu;
use support_gpu::gpu;

#[path = "support/cli.rs"]
mod cli;
#[path = "lora/cli.rs"]
mod cli_flags;
#[path = "lora/refusals.rs"]
mod refusals;
#[path = "lora/write.rs"]
mod write;

const F32_PSNR: f64 = 90.0;
const F32_MAX_U8: u8 = 1;
const F16_PSNR: f64 = 45.0;
const F16_MAX_U8: u8 = 8;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora")
}

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap()
}

/// The LoRAs of a case as the prompt tags name them in the fixture folder.
fn specs(case: &Value) -> Vec<LoraSpec> {
    let dir = LoraDir::scan(&fixture().join("loras"), "--lora-dir").unwrap();
    specs_for_prompt(case["tagged_prompt"].as_str().unwrap(), "", &[], Some(&dir)).unwrap()
}

#[test]
fn merged_weights_match_diffusers_fuse_lora() {
    let ck = sd_wgpu::checkpoint::open(model()).unwrap();
    let fused = SafetensorsFile::open(fixture().join("fused.safetensors")).unwrap();
    let mut worst: f32 = 0.0;
    for case in cases()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let set = LoraSet::open(
            ck.unet.weights.clone(),
            ck.text_encoder.weights.clone(),
            &specs(case),
        )
        .unwrap();
        let mut changed = 0;
        for (part, key, base) in [
            (Part::Unet, "unet", &ck.unet.weights),
            (Part::TextEncoder, "text_encoder", &ck.text_encoder.weights),
        ] {
            let merged = set.source(part);
            for w in base.names() {
                let ours = merged.read(&w, DType::F32).unwrap().to_f32().into_owned();
                let want = match fused.read(&format!("{name}/{key}/{w}"), DType::F32) {
                    Ok(d) => {
                        changed += 1;
                        d.to_f32().into_owned()
                    }
                    // Not changed by diffusers: must be the base weight, bit for bit.
                    Err(_) => base.read(&w, DType::F32).unwrap().to_f32().into_owned(),
                };
                let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = ours
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff <= 1e-6 * peak.max(1.0),
                    "{name} {key} {w}: max diff {diff:e} (peak {peak})"
                );
                worst = worst.max(diff / peak.max(1.0));
            }
        }
        assert_eq!(
            changed,
            case["fused_weights"].as_u64().unwrap() as usize,
            "{name}"
        );
    }
    eprintln!("largest difference from diffusers' fused weights: {worst:e} (relative to the weight's peak)");
}

/// PSNR (dB, peak 1) and the largest 8-bit difference, as tests/pipeline_e2e.rs.
fn compare(ours: &RgbImage, reference: &[f32]) -> (f64, u8) {
    assert_eq!(ours.data.len(), reference.len());
    let mse = ours
        .data
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / reference.len() as f64;
    let ref8 = reference.iter().map(|&v| (v * 255.0).round_ties_even() as u8);
    let max8 = ours
        .to_rgb8()
        .into_iter()
        .zip(ref8)
        .map(|(a, b)| a.abs_diff(b))
        .max()
        .unwrap();
    (-10.0 * mse.log10(), max8)
}

fn request(case: &Value, prompt: &str) -> Request {
    let num = |k: &str| case[k].as_f64().unwrap();
    Request {
        prompt: prompt.into(),
        negative_prompt: case["negative_prompt"].as_str().unwrap().into(),
        steps: num("steps") as usize,
        cfg_scale: num("cfg_scale") as f32,
        sampler: Some(SamplerKind::from_name(case["sampler"].as_str().unwrap()).unwrap()),
        seed: num("seed") as u64,
        width: Some(num("width") as usize),
        height: Some(num("height") as usize),
        ..Request::default()
    }
}

fn conformance(device: Device, dtype: DType, min_psnr: f64, max_u8: u8) {
    let opts = LoadOptions {
        device,
        dtype: Some(dtype),
        ..LoadOptions::default()
    };
    let mut pipe = Pipeline::load(model(), &opts).unwrap();
    let json = cases();
    let goldens = SafetensorsFile::open(fixture().join("goldens.safetensors")).unwrap();
    let hashes = &json["a1111_hashes"];
    let mut failures = Vec::new();
    for case in json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let tagged = case["tagged_prompt"].as_str().unwrap();
        pipe.set_loras(&specs(case)).unwrap();
        let out = pipe.txt2img(&request(case, tagged), &mut NoProgress).unwrap();
        let golden = goldens.read(name, DType::F32).unwrap().to_f32().into_owned();
        let (psnr, max8) = compare(&out.images[0].image, &golden);
        eprintln!("{name:<16} {psnr:>8.2} dB  max u8 {max8}");
        if psnr < min_psnr || max8 > max_u8 {
            failures.push(format!("{name}: PSNR {psnr:.2} dB, max 8-bit difference {max8}"));
        }
        // The infotext: the prompt with its tags, each LoRA's A1111 hash under its tag name.
        let info = out.images[0].info.to_a1111();
        assert!(info.starts_with(tagged), "{info}");
        let recorded: Vec<String> = case["loras"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let file = l["file"].as_str().unwrap();
                let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
                format!("{stem}: {}", hashes[file].as_str().unwrap())
            })
            .collect();
        assert!(
            info.contains(&format!("Lora hashes: \"{}\"", recorded.join(", "))),
            "{info}"
        );
    }
    // Back to no LoRA: the plain model's golden (tests/fixtures/pipeline, case txt2img_ddim).
    pipe.set_loras(&[]).unwrap();
    let case = &json["cases"][0];
    let out = pipe
        .txt2img(&request(case, case["prompt"].as_str().unwrap()), &mut NoProgress)
        .unwrap();
    let plain = SafetensorsFile::open(model().join("../goldens.safetensors")).unwrap();
    let golden = plain
        .read("txt2img_ddim", DType::F32)
        .unwrap()
        .to_f32()
        .into_owned();
    let (psnr, max8) = compare(&out.images[0].image, &golden);
    eprintln!("{:<16} {psnr:>8.2} dB  max u8 {max8}", "no LoRA again");
    if psnr < min_psnr || max8 > max_u8 {
        failures.push(format!(
            "LoRAs removed: PSNR {psnr:.2} dB, max 8-bit difference {max8}"
        ));
    }
    assert!(!out.images[0].info.to_a1111().contains("Lora hashes"));
    assert!(
        failures.is_empty(),
        "{dtype} outside the bounds (PSNR >= {min_psnr} dB, 8-bit difference <= {max_u8}):\n{}",
        failures.join("\n")
    );
}

#[test]
fn cpu_f32_matches_diffusers() {
    conformance(Device::Cpu, DType::F32, F32_PSNR, F32_MAX_U8);
}

#[test]
fn cpu_f16_matches_diffusers() {
    conformance(Device::Cpu, DType::F16, F16_PSNR, F16_MAX_U8);
}

#[test]
fn gpu_f32_matches_diffusers() {
    conformance(gpu(), DType::F32, F32_PSNR, F32_MAX_U8);
}

#[test]
fn gpu_f16_matches_diffusers() {
    conformance(gpu(), DType::F16, F16_PSNR, F16_MAX_U8);
}

#[test]
fn a_tag_the_pipeline_has_not_merged_is_refused() {
    let pipe = Pipeline::load(model(), &LoadOptions::default()).unwrap();
    let req = Request {
        steps: 1,
        ..Request::new("a fox <lora:lora_a:0.8>")
    };
    let e = pipe
        .txt2img(&req, &mut NoProgress)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("--prompt") && e.contains("<lora:lora_a>") && e.contains("not merged"),
        "{e}"
    );
    let req = Request {
        steps: 1,
        negative_prompt: "<lora:lora_a:1>".into(),
        ..Request::new("a fox")
    };
    let e = pipe
        .txt2img(&req, &mut NoProgress)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("--negative-prompt"), "{e}");
}

/// diffusers' names before PEFT (attention processors `to_q_lora`, `lora_linear_layer`,
/// `.lora.down`), made from the PEFT file by renaming only: the merge must be the one
/// diffusers fused from the PEFT file.
#[test]
fn older_diffusers_names_merge_the_same() {
    let peft = SafetensorsFile::open(fixture().join("loras/lora_a_peft.safetensors")).unwrap();
    let rename = |key: &str| -> String {
        let (path, role) = match key.strip_suffix(".lora_A.weight") {
            Some(p) => (p, "down"),
            None => (key.strip_suffix(".lora_B.weight").unwrap(), "up"),
        };
        let (parent, leaf) = path.rsplit_once('.').unwrap();
        let attn = ["to_q", "to_k", "to_v"].contains(&leaf) || path.ends_with(".to_out.0");
        if let Some(te) = path.strip_prefix("text_encoder.") {
            let te = if te.starts_with("text_model.") {
                te.to_string()
            } else {
                format!("text_model.{te}")
            };
            let (parent, leaf) = te.rsplit_once('.').unwrap();
            return match leaf
                .strip_suffix("_proj")
                .filter(|_| parent.ends_with("self_attn"))
            {
                Some(which) => format!("text_encoder.{parent}.to_{which}_lora.{role}.weight"),
                None => format!("text_encoder.{te}.lora_linear_layer.{role}.weight"),
            };
        }
        if attn {
            let (parent, which) = match path.strip_suffix(".to_out.0") {
                Some(p) => (p, "out"),
                None => (parent, leaf.strip_prefix("to_").unwrap()),
            };
            // The first diffusers files had no `unet.` prefix.
            return format!(
                "{}.processor.to_{which}_lora.{role}.weight",
                parent.strip_prefix("unet.").unwrap()
            );
        }
        format!("{path}.lora.{role}.weight")
    };
    let tensors: Vec<write::T> = peft
        .names()
        .iter()
        .map(|n| {
            let info = peft.info(n).unwrap();
            (
                rename(n),
                info.shape,
                peft.read(n, DType::F32).unwrap().to_f32().into_owned(),
            )
        })
        .collect();
    assert!(tensors.iter().any(|t| t.0.contains("processor.to_out_lora.down")));
    let dir = cli::tmp("lora-old-names");
    let path = dir.join("old.safetensors");
    let meta = peft.metadata().get("lora_adapter_metadata").unwrap().clone();
    write::safetensors(&path, &tensors, &[("lora_adapter_metadata", &meta)]);

    let ck = sd_wgpu::checkpoint::open(model()).unwrap();
    let fused = SafetensorsFile::open(fixture().join("fused.safetensors")).unwrap();
    let set = LoraSet::open(
        ck.unet.weights.clone(),
        ck.text_encoder.weights.clone(),
        &[LoraSpec::file(&path, 0.8)],
    )
    .unwrap();
    let mut checked = 0;
    for name in fused.names().iter().filter(|n| n.starts_with("peft/")) {
        let (_, rest) = name.split_once('/').unwrap();
        let (part, weight) = rest.split_once('/').unwrap();
        let part = if part == "unet" {
            Part::Unet
        } else {
            Part::TextEncoder
        };
        let ours = set
            .source(part)
            .read(weight, DType::F32)
            .unwrap()
            .to_f32()
            .into_owned();
        let want = fused.read(name, DType::F32).unwrap().to_f32().into_owned();
        let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-6 * peak.max(1.0), "{weight}: {diff:e}");
        checked += 1;
    }
    assert_eq!(checked, 25);
    std::fs::remove_dir_all(&dir).unwrap();
}
