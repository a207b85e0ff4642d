//! `sd-wgpu info`: a summary for good checkpoints, one error line and exit 1
//! for bad ones.

use std::process::Command;

use crate::common::*;
use crate::sd15::tmp;

fn info(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["info", "--model"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn info_summarises_a_checkpoint() {
    let dir = tmp("cli-info");
    let path = dir.join("tiny-sd1.safetensors");
    let keys = vec![
        (
            "model.diffusion_model.input_blocks.0.0.weight".to_string(),
            "F16",
            vec![320, 4, 3, 3],
        ),
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight".into(),
            "F16",
            vec![320, 768],
        ),
        (
            "first_stage_model.decoder.mid.attn_1.q.weight".into(),
            "F32",
            vec![512, 512, 1, 1],
        ),
        (
            "cond_stage_model.transformer.text_model.final_layer_norm.weight".into(),
            "BF16",
            vec![768],
        ),
    ];
    write_sparse(&path, &keys);
    let out = info(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The summary comes first; the file then fails the checks loading runs
    // (it holds 4 of the ~1100 weights): an error listing them, exit 1.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert_has(
        &stderr,
        &[
            "error: text encoder weights from",
            "missing (",
            "UNet weights from",
        ],
    );
    assert_has(
        &stdout,
        &[
            "layout:  single-file checkpoint",
            "family:  Stable Diffusion 1.x",
            "unet: 0.26 M parameters (f16 257280)",
            "vae: 0.26 M parameters (f32 262144)",
            "text encoder: 0.00 M parameters (bf16 768)",
            "cross-attention 768",
            "no separate EMA",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn info_refuses_bad_files_in_one_line() {
    let out = info(&fixture("legacy.pt"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_has(&stderr, &["error:", "legacy.pt", "legacy"]);
}
