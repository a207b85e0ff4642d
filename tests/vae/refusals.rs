//! Every refusal: VAEs that do not fit the model, and what is not a VAE.

use std::path::PathBuf;

use sd_wgpu::checkpoint::SafetensorsFile;
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{DType, Device, Error};

use super::{common, edited_folder, load, model, scratch, vae};

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

/// Corrupted VAE files (truncated, bytes changed in the header and the
/// data) give an error or a VAE, never a panic; the loaders' own fuzzing is
/// tests/fuzz_loaders.rs, this covers what `--vae` adds on top (key sniffing,
/// the LDM map with a prefix, the fit check, reading every weight).
#[test]
fn corrupted_files_never_panic() {
    let d = scratch("fuzz");
    let model_vae = sd_wgpu::checkpoint::open(model()).unwrap().vae.config;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let (mut opened, mut refused) = (0, 0);
    for name in ["tiny-vae.safetensors", "tiny-vae.ckpt", "tiny-full.safetensors"] {
        let base = std::fs::read(vae(name)).unwrap();
        for i in 0..40 {
            let mut bytes = base.clone();
            if i % 4 == 0 {
                bytes.truncate(next(base.len()));
            } else {
                // Mostly the first kilobytes: headers, pickles, zip directories.
                let span = if i % 2 == 0 {
                    4096.min(bytes.len())
                } else {
                    bytes.len()
                };
                for _ in 0..1 + next(8) {
                    let at = next(span);
                    bytes[at] = next(256) as u8;
                }
            }
            let f = d.join(format!("{i}-{name}"));
            std::fs::write(&f, &bytes).unwrap();
            let result = sd_wgpu::checkpoint::open_vae(&f, &model_vae, None).and_then(|v| {
                v.fit(&model_vae, &model())?;
                for n in v.weights.names() {
                    v.weights.read(&n, DType::F32)?;
                }
                Ok(())
            });
            match result {
                Ok(()) => opened += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    refused += 1;
                }
            }
        }
    }
    eprintln!("corrupted VAE files: {opened} opened, {refused} refused");
    assert!(
        refused > 0,
        "no corruption was noticed: the variants change nothing"
    );
}
