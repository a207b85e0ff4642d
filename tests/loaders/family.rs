//! Family detection on synthetic checkpoints: the distinguishing keys with
//! their real shapes (data left as sparse holes). Everything but SD 1.x is
//! refused with what was detected.

use std::path::Path;

use sd_wgpu::checkpoint::open;
use serde_json::json;

use crate::common::*;
use crate::sd15::tmp;

type Keys = Vec<(String, &'static str, Vec<usize>)>;

fn k(name: &str, shape: &[usize]) -> (String, &'static str, Vec<usize>) {
    (name.to_string(), "F16", shape.to_vec())
}

fn unet(in_channels: usize, context: usize) -> Keys {
    vec![
        k(
            "model.diffusion_model.input_blocks.0.0.weight",
            &[320, in_channels, 3, 3],
        ),
        k(
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            &[320, context],
        ),
    ]
}

fn refused(name: &str, keys: Keys, parts: &[&str]) {
    let dir = tmp(&format!("family-{name}"));
    let path = dir.join(format!("{name}.safetensors"));
    write_sparse(&path, &keys);
    let msg = err(open(&path));
    assert_has(&msg, &[&format!("{name}.safetensors"), "detected"]);
    assert_has(&msg, parts);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_other_families_by_name() {
    let mut sd2 = unet(4, 1024);
    sd2.push(k("cond_stage_model.model.token_embedding.weight", &[49408, 1024]));
    refused(
        "sd2",
        sd2,
        &[
            "Stable Diffusion 2.x",
            "cross-attention width 1024",
            "OpenCLIP",
            "not supported yet",
        ],
    );
    refused("sd2-inpaint", unet(9, 1024), &["2.x inpainting"]);
    refused("ip2p", unet(8, 768), &["InstructPix2Pix"]);
    let mut xl = unet(4, 2048);
    xl.push(k(
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        &[768],
    ));
    xl.push(k(
        "conditioner.embedders.1.model.positional_embedding",
        &[77, 1280],
    ));
    refused("sdxl", xl, &["XL base", "conditioner.embedders.1"]);
    refused(
        "refiner",
        vec![k("conditioner.embedders.0.model.text_projection", &[1280, 1280])],
        &["XL refiner"],
    );
    refused(
        "sd3",
        vec![k(
            "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias",
            &[9216],
        )],
        &["SD3"],
    );
    refused(
        "flux",
        vec![k("double_blocks.0.img_attn.norm.key_norm.scale", &[128])],
        &["Flux"],
    );
    refused(
        "vae",
        vec![
            k("encoder.conv_in.weight", &[128, 3, 3, 3]),
            k("decoder.conv_in.weight", &[512, 4, 3, 3]),
        ],
        &["standalone VAE"],
    );
    refused(
        "lora",
        vec![k(
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
            &[4, 320, 1, 1],
        )],
        &["LoRA"],
    );
    refused(
        "random",
        vec![k("foo.bar", &[3])],
        &["no Stable Diffusion UNet", "foo.bar"],
    );
}

#[test]
fn sd1_file_without_a_component_is_refused() {
    let mut keys = unet(4, 768);
    keys.push(k(
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        &[768],
    ));
    let dir = tmp("family-novae");
    let path = dir.join("novae.safetensors");
    write_sparse(&path, &keys);
    let msg = err(open(&path));
    assert_has(
        &msg,
        &["novae.safetensors", "no VAE weights (first_stage_model.*)"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn config_folder(dir: &Path, unet: serde_json::Value, extra: &[&str]) {
    let write = |p: &str, v: &serde_json::Value| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, v.to_string()).unwrap();
    };
    write(
        "model_index.json",
        &json!({"_class_name": "StableDiffusionPipeline"}),
    );
    write("unet/config.json", &unet);
    write("text_encoder/config.json", &json!({"hidden_size": 768}));
    write("vae/config.json", &json!({}));
    for e in extra {
        std::fs::create_dir_all(dir.join(e)).unwrap();
    }
}

#[test]
fn diffusers_folders_are_detected_from_configs() {
    for (name, unet, extra, parts) in [
        (
            "sd2",
            json!({"cross_attention_dim": 1024}),
            &[][..],
            &["2.x", "cross_attention_dim 1024"][..],
        ),
        ("xl", json!({}), &["text_encoder_2"], &["XL base"]),
    ] {
        let dir = tmp(&format!("folder-{name}"));
        config_folder(&dir, unet, extra);
        let msg = err(open(&dir));
        assert_has(&msg, &[dir.to_str().unwrap(), "detected"]);
        assert_has(&msg, parts);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let dir = tmp("folder-dit");
    std::fs::create_dir_all(dir.join("transformer")).unwrap();
    assert_has(&err(open(&dir)), &["transformer/", "SD3, Flux"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An inpainting folder's UNet config (`in_channels: 9`, 768-wide cross-attention) is SD 1.x
/// inpainting, which opens.
#[test]
fn sd1_inpainting_folders_are_accepted() {
    let dir = tmp("folder-inpaint");
    config_folder(&dir, json!({"in_channels": 9}), &[]);
    // The configs pass; the empty folder then lacks weights, which is the next thing checked.
    assert_has(&err(open(&dir)), &["unet", "no weights"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diffusers_folder_problems_name_the_file() {
    let dir = tmp("folder-bad");
    config_folder(
        &dir,
        json!({"down_block_types": ["SimpleCrossAttnDownBlock2D"]}),
        &[],
    );
    assert_has(&err(open(&dir)), &["unet/config.json", "down_block_types"]);
    config_folder(&dir, json!({}), &[]);
    std::fs::write(dir.join("unet/config.json"), "{ nope").unwrap();
    assert_has(&err(open(&dir)), &["unet/config.json", "invalid config.json"]);
    config_folder(&dir, json!({}), &[]);
    assert_has(
        &err(open(&dir)),
        &["unet", "no weights", "diffusion_pytorch_model.safetensors"],
    );
    std::fs::write(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        b"version https://git-lfs.github.com/spec/v1\n",
    )
    .unwrap();
    assert_has(
        &err(open(&dir)),
        &["diffusion_pytorch_model.safetensors", "git lfs pull"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sd1_ckpt_through_the_pickle_reader() {
    let dir = tmp("family-ckpt");
    let path = dir.join("sd1.ckpt");
    let bytes = ckpt_zip(&[
        ("model.diffusion_model.input_blocks.0.0.weight", &[320, 4, 3, 3]),
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            &[320, 768],
        ),
        ("first_stage_model.decoder.mid.attn_1.q.weight", &[512, 512, 1, 1]),
        (
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
            &[768],
        ),
    ]);
    std::fs::write(&path, bytes).unwrap();
    let ck = open(&path).unwrap();
    assert_eq!(ck.detection.family, sd_wgpu::checkpoint::Family::Sd1);
    let q = ck
        .vae
        .weights
        .info("decoder.mid_block.attentions.0.to_q.weight")
        .unwrap();
    assert_eq!(q.shape, vec![512, 512]);
    let names = ck.unet.weights.names();
    assert_eq!(
        names,
        [
            "conv_in.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        ]
    );
    assert!(ck
        .text_encoder
        .weights
        .info("text_model.final_layer_norm.weight")
        .is_some());
    let q = ck
        .vae
        .weights
        .read("decoder.mid_block.attentions.0.to_q.weight", sd_wgpu::DType::F32)
        .unwrap();
    assert_eq!(q.len(), 512 * 512);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diffusers_folder_with_bin_weights() {
    let dir = tmp("folder-bin");
    config_folder(&dir, json!({}), &[]);
    let state_dict = std::fs::read(fixture("state_dict.bin")).unwrap();
    for f in [
        "unet/diffusion_pytorch_model.bin",
        "vae/diffusion_pytorch_model.bin",
        "text_encoder/pytorch_model.bin",
    ] {
        std::fs::write(dir.join(f), &state_dict).unwrap();
    }
    let ck = open(&dir).unwrap();
    assert_eq!(
        ck.unet.weights.names(),
        ["0.bias", "0.weight", "1.bias", "1.weight"]
    );
    assert!(
        ck.warnings
            .iter()
            .any(|w| w.contains("unet: weights from a torch pickle")),
        "{:?}",
        ck.warnings
    );
    assert_eq!(ck.unet.files, vec![dir.join("unet/diffusion_pytorch_model.bin")]);
    std::fs::remove_dir_all(&dir).unwrap();
}
