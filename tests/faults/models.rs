//! Crafted diffusers folders (issue 14): copies of the small fixture model with
//! one `config.json` value changed. Each must be refused by `txt2img` with one
//! error line naming the file and the key, with no panic and a small peak
//! memory (the child's `VmHWM`), and `info` must refuse it with the same
//! message. A scheduler class sd-wgpu lacks is a warning shown by default.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{measured, Measured};

/// Peak resident memory allowed to a refused run (the fixture model itself is
/// 6 MB; a placeholder sized by a crafted config was 160 GB).
const MAX_RSS_MB: u64 = 500;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the fixture model in a fresh temporary folder, with `edits`
/// (file inside the model, key, new value) applied to its JSON files.
fn crafted(tag: &str, edits: &[(&str, &str, Value)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdw-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = dir.join("model");
    copy_dir(&fixture(), &model);
    for (file, key, value) in edits {
        let path = model.join(file);
        let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json[*key] = value.clone();
        std::fs::write(&path, json.to_string()).unwrap();
    }
    dir
}

/// Runs the sd-wgpu binary in `dir`, measuring its peak memory.
fn sd(dir: &Path, args: &[&str]) -> Measured {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"));
    c.current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("SD_WGPU_BACKEND")
        .env("SD_WGPU_CACHE", dir.join("cache"))
        .args(args);
    measured(c)
}

fn txt2img(dir: &Path, extra: &[&str]) -> Measured {
    let mut args = vec![
        "txt2img",
        "--model",
        "model",
        "--prompt",
        "a red fox",
        "--backend",
        "cpu",
        "--steps",
        "2",
        "--output",
        "out.png",
    ];
    args.extend_from_slice(extra);
    sd(dir, &args)
}

/// Asserts a clean refusal (exit 1, one `error:` line, no panic, small peak
/// memory) whose message holds every needle; returns the error line.
fn refused(r: &Measured, needles: &[&str]) -> String {
    assert_eq!(r.code, Some(1), "exit code; stderr: {}", r.stderr);
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("memory allocation"),
        "{}",
        r.stderr
    );
    assert!(
        r.peak_mb < MAX_RSS_MB,
        "peak RSS {} MB; stderr: {}",
        r.peak_mb,
        r.stderr
    );
    let errors: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    for needle in needles {
        assert!(r.stderr.contains(needle), "{needle:?} not in: {}", r.stderr);
    }
    r.stderr[r.stderr.find("error:").unwrap()..].to_string()
}

/// `txt2img` and `info` both refuse the folder, with the same message.
fn both_refuse(tag: &str, edits: &[(&str, &str, Value)], needles: &[&str]) {
    let dir = crafted(tag, edits);
    let generate = refused(&txt2img(&dir, &[]), needles);
    assert!(!dir.join("out.png").exists());
    let info = refused(&sd(&dir, &["info", "--model", "model"]), needles);
    assert_eq!(generate, info, "txt2img and info disagree");
    std::fs::remove_dir_all(&dir).unwrap();
}

const UNET: &str = "unet/config.json";
const VAE: &str = "vae/config.json";
const TEXT: &str = "text_encoder/config.json";

/// One changed key per case: (tag, file, key, value, what the error says).
type Case<'a> = (&'a str, &'a str, &'a str, Value, &'a [&'a str]);

fn each_refused(cases: &[Case]) {
    for (tag, file, key, value, needles) in cases {
        let mut all = vec![*file];
        all.extend_from_slice(needles);
        both_refuse(tag, &[(file, key, value.clone())], &all);
    }
}

#[test]
fn zero_sizes_are_refused_not_divided_by() {
    each_refused(&[
        (
            "heads0",
            UNET,
            "attention_head_dim",
            json!(0),
            &["`attention_head_dim` must be 1 to 16384, found 0"],
        ),
        (
            "textheads0",
            TEXT,
            "num_attention_heads",
            json!(0),
            &["`num_attention_heads` must be 1 to 16384, found 0"],
        ),
        (
            "groups0",
            VAE,
            "norm_num_groups",
            json!(0),
            &["`norm_num_groups` must be 1 to 16384, found 0"],
        ),
        (
            "eps",
            TEXT,
            "layer_norm_eps",
            json!(0.0),
            &["`layer_norm_eps` must be positive and at most 1, found 0"],
        ),
    ]);
}

#[test]
fn huge_sizes_are_refused_before_anything_is_allocated() {
    each_refused(&[
        (
            "huge",
            UNET,
            "block_out_channels",
            json!([1u64 << 30, 32, 32, 32]),
            &["`block_out_channels` must be widths of 1 to 16384"],
        ),
        (
            "hugevae",
            VAE,
            "latent_channels",
            json!(1u64 << 40),
            &["`latent_channels` must be 1 to 16384"],
        ),
        (
            "hugesample",
            UNET,
            "sample_size",
            json!(100_000),
            &["`sample_size` must be 1 to 256, found 100000"],
        ),
    ]);
}

#[test]
fn negative_and_mistyped_values_name_the_key() {
    each_refused(&[
        (
            "negative",
            UNET,
            "layers_per_block",
            json!(-1),
            &["`layers_per_block` is -1", "expected usize"],
        ),
        (
            "heads-neg",
            UNET,
            "attention_head_dim",
            json!([-4, 4, 4, 4]),
            &["`attention_head_dim` is [-4,4,4,4]", "a list of integers"],
        ),
    ]);
}

#[test]
fn inconsistent_values_are_refused() {
    each_refused(&[
        (
            "lists",
            UNET,
            "attention_head_dim",
            json!([4, 4]),
            &["`attention_head_dim` must be one value or a list of 4 (one per block level), found a list of 2"],
        ),
        (
            "types",
            UNET,
            "down_block_types",
            json!(["CrossAttnDownBlock2D", "DownBlock2D"]),
            &["`down_block_types` must be a list of 4 (one per block_out_channels width), found a list of 2"],
        ),
        (
            "heads-divide",
            UNET,
            "attention_head_dim",
            json!(3),
            &["`attention_head_dim` must be a divisor", "3 heads for width 16"],
        ),
        (
            "tiles",
            VAE,
            "sample_size",
            json!(60),
            &["`sample_size` must be a multiple of the VAE's scale factor 8, found 60"],
        ),
        (
            "scale-shift",
            UNET,
            "resnet_time_scale_shift",
            json!("scale_shift"),
            &["`resnet_time_scale_shift` is \"scale_shift\"", "\"default\""],
        ),
    ]);
    // Each file is valid on its own; together they disagree.
    both_refuse(
        "latents",
        &[(VAE, "latent_channels", json!(8))],
        &["latent_channels", "the UNet maps 4 to 4 latent channels", "has 8"],
    );
}

#[test]
fn widths_within_bounds_that_the_weights_lack_cost_no_memory() {
    // Valid on its own (8 groups and 4 heads divide 16384), so only the
    // weights can refuse it: every UNet weight then mismatches, and each
    // placeholder would be gigabytes if it held data.
    both_refuse(
        "wide",
        &[(UNET, "block_out_channels", json!([16384, 16384, 16384, 16384]))],
        &[
            "UNet weights from",
            "wrong shape",
            "conv_in.weight expected [16384, 4, 3, 3] found [16, 4, 3, 3]",
            "component config.json files",
        ],
    );
}

/// An unknown scheduler class is a warning without `--verbose`; the same
/// folder sets `upcast_attention`, which loads and runs (attention scores
/// are computed in f32 whatever the storage type).
#[test]
fn unknown_scheduler_class_warns_by_default() {
    let dir = crafted(
        "scheduler",
        &[
            (
                "scheduler/scheduler_config.json",
                "_class_name",
                json!("MyFancyScheduler"),
            ),
            (UNET, "upcast_attention", json!(true)),
        ],
    );
    let r = txt2img(&dir, &["--width", "64", "--height", "64"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let warning = r
        .stderr
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains("\"MyFancyScheduler\""))
        .unwrap_or_else(|| panic!("no warning in: {}", r.stderr));
    assert!(warning.contains("default sampler is pndm"), "{warning}");
    assert!(dir.join("out.png").is_file());
    let info = sd(&dir, &["info", "--model", "model"]);
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert!(
        info.stdout
            .contains("\"MyFancyScheduler\" has no sd-wgpu equivalent"),
        "{}",
        info.stdout
    );
    assert!(
        info.stdout.contains("every weight matches the configs"),
        "{}",
        info.stdout
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
