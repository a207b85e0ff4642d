//! The SD 1.5 key sets: a single file with every LDM key (real shapes, data
//! left as a sparse hole) maps to exactly the diffusers names and shapes that
//! diffusers / transformers give their models (tests/fixtures/loaders/sd15_keys.json,
//! written by tools/dump_sd15_keys.py); diffusers folders in their variants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sd_wgpu::checkpoint::{open, open_with, Checkpoint, Family, Layout, OpenOptions};
use sd_wgpu::weights::TensorSource;
use serde_json::Value;

use crate::common::*;

type Shapes = BTreeMap<String, Vec<usize>>;

fn keys() -> Value {
    let text = std::fs::read_to_string(fixture("sd15_keys.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn shapes(v: &Value) -> Shapes {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let name = row[0].as_str().unwrap().to_string();
            let shape = row[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize);
            (name, shape.collect())
        })
        .collect()
}

fn of(src: &dyn TensorSource) -> Shapes {
    src.names()
        .into_iter()
        .map(|n| {
            let s = src.info(&n).unwrap().shape;
            (n, s)
        })
        .collect()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sdw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tensors(s: &Shapes, dtype: &'static str, prefix: &str) -> Vec<(String, &'static str, Vec<usize>)> {
    s.iter()
        .map(|(n, v)| (format!("{prefix}{n}"), dtype, v.clone()))
        .collect()
}

fn check_components(ck: &Checkpoint, k: &Value) {
    for (what, src) in [
        ("unet", &ck.unet.weights),
        ("vae", &ck.vae.weights),
        ("text_encoder", &ck.text_encoder.weights),
    ] {
        let want = shapes(&k[what]["diffusers"]);
        let got = of(&**src);
        let missing: Vec<_> = want.keys().filter(|n| !got.contains_key(*n)).collect();
        let extra: Vec<_> = got.keys().filter(|n| !want.contains_key(*n)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{what}: missing {missing:?}, extra {extra:?}"
        );
        assert_eq!(got, want, "{what} shapes");
    }
}

/// The LDM file: every key of the three models plus what real files carry besides.
fn ldm_file(k: &Value, unet_dtype: &'static str) -> Vec<(String, &'static str, Vec<usize>)> {
    let mut t = tensors(&shapes(&k["unet"]["ldm"]), unet_dtype, "");
    t.extend(tensors(&shapes(&k["vae"]["ldm"]), "F16", ""));
    t.extend(tensors(&shapes(&k["text_encoder"]["ldm"]), "F32", ""));
    t.push((
        "cond_stage_model.transformer.text_model.embeddings.position_ids".into(),
        "I64",
        vec![1, 77],
    ));
    t.push(("alphas_cumprod".into(), "F32", vec![1000]));
    t
}

#[test]
fn sd15_single_file_maps_to_the_diffusers_key_set() {
    let k = keys();
    let dir = tmp("sd15-single");
    let path = dir.join("v1-5-pruned-emaonly.safetensors");
    write_sparse(&path, &ldm_file(&k, "F16"));
    let ck = open(&path).unwrap();
    assert_eq!(ck.layout, Layout::SingleFile);
    assert_eq!(ck.detection.family, Family::Sd1);
    check_components(&ck, &k);
    assert_eq!(ck.unet.param_count(), 859_520_964);
    assert_eq!(ck.vae.param_count(), 83_653_863);
    assert_eq!(ck.text_encoder.param_count(), 123_060_480);
    assert_eq!(ck.unet.dtype_counts().keys().collect::<Vec<_>>(), vec![&"f16"]);
    assert!(
        ck.warnings.iter().any(|w| w.contains("no separate EMA")),
        "{:?}",
        ck.warnings
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An SD 1.5 inpainting file (`sd-v1-5-inpainting.ckpt` as safetensors): SD 1.5's key set with a
/// UNet `conv_in` of 9 input channels (latents, mask, masked image). Opened as SD 1.x inpainting,
/// its UNet config says 9 and every shape checks out.
#[test]
fn sd15_inpainting_single_file_is_accepted() {
    let k = keys();
    let dir = tmp("sd15-inpaint");
    let path = dir.join("sd-v1-5-inpainting.safetensors");
    let conv_in = "model.diffusion_model.input_blocks.0.0.weight";
    let mut t = ldm_file(&k, "F16");
    let entry = t.iter_mut().find(|(n, _, _)| n == conv_in).unwrap();
    entry.2 = vec![320, 9, 3, 3];
    write_sparse(&path, &t);
    let ck = open(&path).unwrap();
    assert_eq!(ck.detection.family, Family::Sd1Inpainting);
    assert_eq!(ck.unet.config.in_channels, 9);
    assert_eq!(
        ck.unet.weights.info("conv_in.weight").unwrap().shape,
        vec![320, 9, 3, 3]
    );
    sd_wgpu::pipeline::check(&ck).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sd15_single_file_prefers_ema_weights() {
    let k = keys();
    let dir = tmp("sd15-ema");
    let path = dir.join("v1-5-pruned.safetensors");
    let mut t = ldm_file(&k, "F16");
    // LitEma's names: `model_ema.` + the parameter path without its dots, stored in f32
    // here so the test can tell which copy was read.
    for (n, s) in shapes(&k["unet"]["ldm"]) {
        let flat = n.strip_prefix("model.").unwrap().replace('.', "");
        t.push((format!("model_ema.{flat}"), "F32", s));
    }
    t.push(("model_ema.decay".into(), "F32", vec![]));
    t.push(("model_ema.num_updates".into(), "I32", vec![]));
    write_sparse(&path, &t);
    let ck = open(&path).unwrap();
    check_components(&ck, &k);
    assert_eq!(ck.unet.dtype_counts().keys().collect::<Vec<_>>(), vec![&"f32"]);
    assert!(
        ck.warnings.iter().any(|w| w.contains("EMA weights")),
        "{:?}",
        ck.warnings
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// A diffusers folder with SD 1.5 configs; the text encoder saved by
/// transformers 5 (names without `text_model.`).
fn folder(dir: &Path, k: &Value, unet_file: &str) {
    let c = &k["configs"];
    write_json(&dir.join("model_index.json"), &c["model_index"]);
    write_json(&dir.join("scheduler/scheduler_config.json"), &c["scheduler"]);
    for (comp, file) in [
        ("unet", unet_file),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ] {
        write_json(&dir.join(comp).join("config.json"), &c[comp]);
        let mut s = shapes(&k[comp]["diffusers"]);
        if comp == "text_encoder" {
            s = s
                .into_iter()
                .map(|(n, v)| (n.strip_prefix("text_model.").unwrap().to_string(), v))
                .collect();
        }
        let dtype = if file.contains("fp16") { "F16" } else { "F32" };
        write_sparse(&dir.join(comp).join(file), &tensors(&s, dtype, ""));
    }
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
}

#[test]
fn sd15_diffusers_folder() {
    let k = keys();
    let dir = tmp("sd15-folder");
    folder(&dir, &k, "diffusion_pytorch_model.safetensors");
    let ck = open(&dir).unwrap();
    assert_eq!(ck.layout, Layout::DiffusersFolder);
    assert_eq!(ck.detection.family, Family::Sd1);
    check_components(&ck, &k);
    assert_eq!(ck.tokenizer_dir.as_deref(), Some(dir.join("tokenizer").as_path()));
    assert_eq!(
        ck.scheduler_config.as_ref().unwrap()["_class_name"],
        "PNDMScheduler"
    );
    assert_eq!(ck.unet.config.cross_attention_dim, 768);
    assert!(ck.warnings.is_empty(), "{:?}", ck.warnings);

    // A variant next to the full weights is used only when asked for.
    let fp16 = dir.join("unet/diffusion_pytorch_model.fp16.safetensors");
    write_sparse(&fp16, &tensors(&shapes(&k["unet"]["diffusers"]), "F16", ""));
    assert_eq!(
        open(&dir).unwrap().unet.files,
        vec![dir.join("unet/diffusion_pytorch_model.safetensors")]
    );
    let opts = OpenOptions {
        variant: Some("fp16".into()),
    };
    let ck = open_with(&dir, &opts).unwrap();
    assert_eq!(ck.unet.files, vec![fp16.clone()]);
    assert!(
        ck.warnings.iter().any(|w| w.contains("unet: fp16 variant")),
        "{:?}",
        ck.warnings
    );
    assert!(
        ck.warnings.iter().any(|w| w.contains("vae: no fp16 variant")),
        "{:?}",
        ck.warnings
    );
    // Only the variant: used, and said so.
    std::fs::remove_file(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let ck = open(&dir).unwrap();
    assert_eq!(ck.unet.files, vec![fp16]);
    assert!(
        ck.warnings
            .iter()
            .any(|w| w.contains("no full-precision weights")),
        "{:?}",
        ck.warnings
    );
    assert_eq!(ck.unet.dtype_counts().keys().collect::<Vec<_>>(), vec![&"f16"]);
    // A variant that does not exist.
    let opts = OpenOptions {
        variant: Some("bf16".into()),
    };
    let msg = err(open_with(&dir, &opts));
    assert_has(
        &msg,
        &[
            "unet",
            "no \"bf16\" variant",
            "diffusion_pytorch_model.fp16.safetensors",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sd15_sharded_unet() {
    let k = keys();
    let dir = tmp("sd15-shards");
    folder(&dir, &k, "diffusion_pytorch_model.safetensors");
    std::fs::remove_file(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let all = tensors(&shapes(&k["unet"]["diffusers"]), "F32", "");
    let (a, b) = all.split_at(all.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, file) in [
        (a, "diffusion_pytorch_model-00001-of-00002.safetensors"),
        (b, "diffusion_pytorch_model-00002-of-00002.safetensors"),
    ] {
        write_sparse(&dir.join("unet").join(file), part);
        for (n, _, _) in part {
            map.insert(n.clone(), Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    write_json(
        &dir.join("unet/diffusion_pytorch_model.safetensors.index.json"),
        &index,
    );
    let ck = open(&dir).unwrap();
    check_components(&ck, &k);
    assert!(ck.unet.weights.describe().contains("2 shards"));
    std::fs::remove_dir_all(&dir).unwrap();
}
