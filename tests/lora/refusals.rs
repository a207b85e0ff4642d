//! Every LoRA refusal names the file, the format and what did not fit; and
//! kohya's per-layer alpha is applied as kohya and A1111 apply it.

use std::path::{Path, PathBuf};

use sd_wgpu::checkpoint::{open, Checkpoint};
use sd_wgpu::lora::{Bases, LoraFile, LoraSet, LoraSpec, Part};
use sd_wgpu::tensor::DType;

use super::cli::tmp;
use super::write::{safetensors, tensor, T};

const Q: &str = "text_model.encoder.layers.0.self_attn.q_proj"; // [32, 32]
const PROJ_IN: &str = "down_blocks.0.attentions.0.proj_in"; // [16, 16, 1, 1]
const CONV1: &str = "down_blocks.0.resnets.0.conv1"; // [16, 16, 3, 3]

/// File name, tensors, metadata, what the error must say.
type Case<'a> = (&'a str, Vec<T>, Vec<(&'a str, &'a str)>, Vec<&'a str>);

fn kohya(part: &str, module: &str) -> String {
    format!("lora_{part}_{}", module.replace('.', "_"))
}

fn model() -> Checkpoint {
    open(super::model()).unwrap()
}

fn refuse(ck: &Checkpoint, dir: &Path, file: &str, tensors: &[T], meta: &[(&str, &str)], needles: &[&str]) {
    let path = dir.join(file);
    safetensors(&path, tensors, meta);
    let bases = Bases {
        unet: &*ck.unet.weights,
        text_encoder: &*ck.text_encoder.weights,
    };
    let e = match LoraFile::open(&path, bases) {
        Ok(_) => panic!("{file} was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&path.display().to_string()),
        "{file}: the message names no file: {e}"
    );
    for n in needles {
        assert!(e.contains(n), "{file}: {n:?} not in {e}");
    }
}

#[test]
fn other_formats_and_models_are_refused() {
    let ck = model();
    let dir = tmp("lora-refusals");
    let te = kohya("te", Q);
    let pair = |stem: &str, down: &[usize], up: &[usize]| {
        vec![
            tensor(&format!("{stem}.lora_down.weight"), down, 0.1),
            tensor(&format!("{stem}.lora_up.weight"), up, 0.1),
        ]
    };
    let cases: Vec<Case> = vec![
        (
            "loha.safetensors",
            vec![tensor(&format!("{te}.hada_w1_a"), &[32, 4], 0.1)],
            vec![],
            vec!["LoHa"],
        ),
        (
            "lokr.safetensors",
            vec![tensor(&format!("{te}.lokr_w1"), &[4, 4], 0.1)],
            vec![],
            vec!["LoKr"],
        ),
        (
            "diff.safetensors",
            vec![tensor(&format!("{te}.diff"), &[32, 32], 0.1)],
            vec![],
            vec!["full-weight difference"],
        ),
        (
            "sdxl.safetensors",
            pair(&format!("lora_te1_{}", Q.replace('.', "_")), &[4, 32], &[32, 4]),
            vec![],
            vec!["SDXL", "lora_te1_"],
        ),
        (
            "sdxl_meta.safetensors",
            pair(&te, &[4, 32], &[32, 4]),
            vec![("ss_base_model_version", "sdxl_base_v1-0")],
            vec!["SDXL"],
        ),
        (
            "dora.safetensors",
            [
                pair(&te, &[4, 32], &[32, 4]),
                vec![tensor(&format!("{te}.dora_scale"), &[32, 1], 1.0)],
            ]
            .concat(),
            vec![],
            vec!["DoRA"],
        ),
        (
            "plain.safetensors",
            vec![tensor("conv.weight", &[2, 2], 1.0)],
            vec![],
            vec!["no LoRA keys", "conv.weight"],
        ),
        (
            "ldm_names.safetensors",
            pair(
                "lora_unet_input_blocks_1_1_proj_in",
                &[4, 16, 1, 1],
                &[16, 4, 1, 1],
            ),
            vec![],
            vec![
                "kohya/A1111 LoRA",
                "no layer matches",
                "lora_unet_input_blocks_1_1_proj_in.lora_down.weight",
            ],
        ),
        (
            "partial.safetensors",
            [
                pair(&te, &[4, 32], &[32, 4]),
                pair(&kohya("unet", PROJ_IN), &[4, 16, 1, 1], &[16, 4, 1, 1]),
                pair("lora_unet_not_a_layer", &[4, 16], &[16, 4]),
            ]
            .concat(),
            vec![],
            vec![
                "only 2 of 3 layers match",
                "2 keys match no layer",
                "lora_unet_not_a_layer.lora_down.weight",
            ],
        ),
        (
            "extra_keys.safetensors",
            [
                pair(&te, &[4, 32], &[32, 4]),
                vec![tensor(&format!("{te}.scale_weight"), &[1], 1.0)],
            ]
            .concat(),
            vec![],
            vec!["its 1 layers match", "not LoRA tensors", "scale_weight"],
        ),
        (
            "sd2_width.safetensors",
            pair(&te, &[4, 1024], &[1024, 4]),
            vec![],
            vec![
                "do not fit the model's weight [32, 32]",
                "[4, 1024]",
                "another model",
            ],
        ),
        (
            "no_up.safetensors",
            vec![tensor(&format!("{te}.lora_down.weight"), &[4, 32], 0.1)],
            vec![],
            vec!["no up (lora_up / lora_B) tensor"],
        ),
        (
            "vector_alpha.safetensors",
            [
                pair(&te, &[4, 32], &[32, 4]),
                vec![tensor(&format!("{te}.alpha"), &[2], 1.0)],
            ]
            .concat(),
            vec![],
            vec!["alpha has shape [2], expected a single value"],
        ),
        (
            "peft_unmatched.safetensors",
            vec![
                tensor(
                    "unet.down_blocks.9.attentions.0.proj_in.lora_A.weight",
                    &[4, 16],
                    0.1,
                ),
                tensor(
                    "unet.down_blocks.9.attentions.0.proj_in.lora_B.weight",
                    &[16, 4],
                    0.1,
                ),
            ],
            vec![],
            vec!["diffusers/PEFT LoRA", "no layer matches", "unet.down_blocks.9"],
        ),
        (
            "peft_dora_meta.safetensors",
            vec![
                tensor(&format!("text_encoder.{Q}.lora_A.weight"), &[4, 32], 0.1),
                tensor(&format!("text_encoder.{Q}.lora_B.weight"), &[32, 4], 0.1),
            ],
            vec![("lora_adapter_metadata", r#"{"text_encoder.use_dora": true}"#)],
            vec!["DoRA"],
        ),
    ];
    for (file, tensors, meta, needles) in &cases {
        refuse(&ck, &dir, file, tensors, meta, needles);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// W' = W + weight * alpha / rank * up @ down per layer, each with its own
/// alpha (or scale 1 without one), for linears and a 3x3 LoCon conv.
#[test]
fn each_layer_has_its_own_alpha() {
    let ck = model();
    let dir = tmp("lora-alpha");
    let te = kohya("te", Q);
    let conv = kohya("unet", CONV1);
    let proj = kohya("unet", PROJ_IN);
    let tensors = vec![
        tensor(&format!("{te}.lora_down.weight"), &[4, 32], 0.05),
        tensor(&format!("{te}.lora_up.weight"), &[32, 4], -0.07),
        tensor(&format!("{te}.alpha"), &[], 8.0),
        tensor(&format!("{conv}.lora_down.weight"), &[2, 16, 3, 3], 0.03),
        tensor(&format!("{conv}.lora_up.weight"), &[16, 2, 1, 1], 0.02),
        tensor(&format!("{conv}.alpha"), &[], 1.0),
        // A linear-shaped down on a 1x1 conv, no alpha: scale 1.
        tensor(&format!("{proj}.lora_down.weight"), &[3, 16], 0.04),
        tensor(&format!("{proj}.lora_up.weight"), &[16, 3], 0.06),
    ];
    let path: PathBuf = dir.join("alphas.safetensors");
    safetensors(&path, &tensors, &[]);
    let spec = LoraSpec {
        unet_weight: 0.5,
        text_encoder_weight: -2.0,
        ..LoraSpec::file(&path, 1.0)
    };
    let set = LoraSet::open(ck.unet.weights.clone(), ck.text_encoder.weights.clone(), &[spec]).unwrap();
    let by_name = |n: &str| tensors.iter().find(|t| t.0 == n).unwrap();
    for (part, module, stem, factor) in [
        (Part::TextEncoder, Q, &te, -2.0 * 8.0 / 4.0),
        (Part::Unet, CONV1, &conv, 0.5 * 1.0 / 2.0),
        (Part::Unet, PROJ_IN, &proj, 0.5),
    ] {
        let base = match part {
            Part::Unet => &ck.unet.weights,
            Part::TextEncoder => &ck.text_encoder.weights,
        };
        let name = format!("{module}.weight");
        let w0 = base.read(&name, DType::F32).unwrap().to_f32().into_owned();
        let got = set
            .source(part)
            .read(&name, DType::F32)
            .unwrap()
            .to_f32()
            .into_owned();
        let (_, dshape, down) = by_name(&format!("{stem}.lora_down.weight"));
        let (_, _, up) = by_name(&format!("{stem}.lora_up.weight"));
        let (r, k) = (dshape[0], down.len() / dshape[0]);
        for (i, (g, w)) in got.iter().zip(&w0).enumerate() {
            let (o, j) = (i / k, i % k);
            let delta: f64 = (0..r)
                .map(|x| up[o * r + x] as f64 * down[x * k + j] as f64)
                .sum();
            let want = *w as f64 + factor * delta;
            assert!((*g as f64 - want).abs() < 1e-5, "{module}[{i}]: {g} vs {want}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
