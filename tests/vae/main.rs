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
//!
//! Files: `conformance` (the goldens, the forms' weights), `refusals`,
//! `metadata` (the PNG's parameters, the CLI, `serve`).

mod conformance;
mod metadata;
mod refusals;

use std::path::{Path, PathBuf};

use sd_wgpu::pipeline::{LoadOptions, Pipeline};
use sd_wgpu::{DType, Device};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[path = "../support/gpu.rs"]
mod support_gpu;

#[path = "../support/e2e.rs"]
mod e2e;

#[path = "../loaders/common.rs"]
#[allow(dead_code)]
mod common;

#[path = "../support/cli.rs"]
#[allow(dead_code)]
mod cli;

#[path = "../serve/common.rs"]
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

fn sha256_10(path: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
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
