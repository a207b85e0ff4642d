//! The model with the VAE swapped against diffusers' goldens, and every form
//! of the VAE read to the same weights.

use std::collections::HashMap;

use sd_wgpu::checkpoint::{open, open_vae, SafetensorsFile, VaeLayout};
use sd_wgpu::pipeline::{NoProgress, RgbImage};
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{DType, Device};
use serde_json::Value;

use super::e2e::{compare, request, F16_MAX_U8, F16_PSNR, F32_MAX_U8, F32_PSNR};
use super::support_gpu::gpu;
use super::{load, model, root, vae, FORMS};

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
