//! Flags as users of A1111 and sd.cpp type them (issue 14): `--seed -1`, A1111's sampler
//! names, `--strength`'s default, bounded `--cfg-scale`, one spelling of `--dtype` for every
//! subcommand, and size / file messages that name what the user actually gave.

use std::path::Path;

#[path = "../support/cli.rs"]
mod cli;
use cli::{model, one_line_error, parameters, sd, tmp, with, Run};

use sd_wgpu::schedulers::SamplerKind;

/// `command` on the fixture model, CPU, 2 steps, in `dir` (img2img: on the fixture image);
/// `extra` replaces or adds flags.
fn generate(dir: &Path, command: &str, extra: &[&str]) -> Run {
    let m = model();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/input.png");
    let mut defaults = vec![
        ("--prompt", "a fox"),
        ("--model", m.to_str().unwrap()),
        ("--backend", "cpu"),
        ("--steps", "2"),
    ];
    if command == "img2img" {
        defaults.push(("--image", input.to_str().unwrap()));
    }
    sd(dir, &with(command, &defaults, extra))
}

fn txt2img(dir: &Path, extra: &[&str]) -> Run {
    generate(dir, "txt2img", extra)
}

/// A bad flag is refused on one line naming `needles`, before the model loads.
fn refused_early(r: &Run, needles: &[&str]) {
    one_line_error(r, needles);
    assert!(
        !r.stderr.contains("device:"),
        "refused before loading: {}",
        r.stderr
    );
}

#[test]
fn seed_minus_one_is_random_and_other_negatives_are_refused() {
    let d = tmp("flags-seed");
    let r = txt2img(&d, &["--seed", "-1", "--output", "r.png"]);
    assert!(r.ok, "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("seed ") && l.contains("random"))
        .unwrap_or_else(|| panic!("random seed printed: {}", r.stderr));
    let seed: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(seed < 1 << 32, "A1111's range: {seed}");
    assert!(parameters(&d.join("r.png")).contains(&format!("Seed: {seed}, ")));

    for bad in ["-2", "-1.5", "18446744073709551616"] {
        let r = txt2img(&d, &["--seed", bad]);
        one_line_error(&r, &["--seed", bad, "-1 for a random one"]);
        assert_eq!(r.code, Some(2), "a usage error");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Every A1111 name (in another case) and a few sd.cpp / ComfyUI spellings give the same PNG,
/// byte for byte, as our name, and the PNG records A1111's name.
#[test]
fn a1111_sampler_names_draw_what_ours_draw() {
    let d = tmp("flags-samplers");
    let demo = |sampler: &str, out: &str| {
        let args = [
            "txt2img",
            "--prompt",
            "a red circle",
            "--backend",
            "cpu",
            "--steps",
            "2",
            "--seed",
            "7",
            "--quiet",
            "--sampler",
            sampler,
            "--output",
            out,
        ];
        let r = sd(&d, &args);
        assert!(r.ok, "--sampler {sampler:?}: {}", r.stderr);
        std::fs::read(d.join(out)).unwrap()
    };
    let mut spellings: Vec<(SamplerKind, String)> = Vec::new();
    for (i, kind) in SamplerKind::ALL.into_iter().enumerate() {
        let a1111 = kind.a1111_name();
        let cased = if i % 2 == 0 {
            a1111.to_lowercase()
        } else {
            a1111.to_uppercase()
        };
        spellings.push((kind, cased));
    }
    spellings.push((SamplerKind::EulerAncestral, "euler_a".into()));
    spellings.push((SamplerKind::DpmPp2mKarras, "dpm++2m karras".into()));
    spellings.push((SamplerKind::DpmPp2m, "dpmpp_2m".into()));
    for kind in SamplerKind::ALL {
        let ours = demo(kind.name(), &format!("{}.png", kind.name()));
        let params = parameters(&d.join(format!("{}.png", kind.name())));
        let (a1111, schedule) = kind.a1111_parameters();
        assert!(params.contains(&format!("Sampler: {a1111}, ")), "{params}");
        assert_eq!(
            params.contains("Schedule type: Karras"),
            schedule.is_some(),
            "{params}"
        );
        for (n, (_, name)) in spellings.iter().filter(|(k, _)| *k == kind).enumerate() {
            let theirs = demo(name, &format!("{}-{n}.png", kind.name()));
            assert!(ours == theirs, "--sampler {name:?} differs from {}", kind.name());
        }
    }
    let r = sd(&d, &["txt2img", "--prompt", "x", "--sampler", "DPM++ 2M SDE"]);
    one_line_error(&r, &["--sampler", "DPM++ 2M SDE", "sd-wgpu samplers"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn samplers_lists_every_name() {
    let d = tmp("flags-list");
    let r = sd(&d, &["samplers"]);
    assert!(r.ok, "{}", r.stderr);
    for kind in SamplerKind::ALL {
        let line = r
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(kind.name()))
            .unwrap_or_else(|| panic!("{} missing: {}", kind.name(), r.stdout));
        assert!(
            line.contains(kind.a1111_name()) && line.contains(kind.description()),
            "{line}"
        );
        for alias in kind.aliases() {
            assert!(r.stdout.contains(alias), "{alias} missing: {}", r.stdout);
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn strength_defaults_to_a1111s() {
    let d = tmp("flags-strength");
    let r = generate(&d, "img2img", &["--output", "s.png"]);
    assert!(r.ok, "{}", r.stderr);
    let params = parameters(&d.join("s.png"));
    assert!(params.contains("Denoising strength: 0.75"), "{params}");
    let help = sd(&d, &["img2img", "--help"]);
    assert!(help.ok && help.stdout.contains("0.75"), "{}", help.stdout);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn float_flags_must_be_finite_and_bounded() {
    let d = tmp("flags-floats");
    for bad in ["nan", "inf", "-inf", "1e30", "100.5", "-1"] {
        let r = txt2img(&d, &["--cfg-scale", bad]);
        refused_early(&r, &["--cfg-scale", "0 to 100"]);
    }
    let r = txt2img(&d, &["--cfg-scale", "100", "--quiet", "--output", "c.png"]);
    assert!(r.ok, "{}", r.stderr);
    let help = sd(&d, &["txt2img", "--help"]);
    assert!(help.stdout.contains("0 to 100"), "{}", help.stdout);

    for bad in ["nan", "inf", "1.5", "-0.1"] {
        let r = generate(&d, "img2img", &["--strength", bad]);
        refused_early(&r, &["--strength", "between 0 and 1"]);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--dtype` and `--backend` are spelled the same for txt2img and bench.
#[test]
fn device_flags_parse_alike_in_every_subcommand() {
    let d = tmp("flags-dtype");
    let r = txt2img(
        &d,
        &[
            "--dtype",
            "half",
            "--backend",
            "CPU",
            "--quiet",
            "--output",
            "h.png",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let r = txt2img(
        &d,
        &[
            "--dtype",
            "FP32",
            "--vae-tiling",
            "On",
            "--quiet",
            "--output",
            "f.png",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    // bench parses its flags, opens the CPU, then refuses the size: no full run.
    for dtype in ["half", "F16", "fp32"] {
        let r = sd(
            &d,
            &["bench", "--backend", "cpu", "--dtype", dtype, "--size", "0"],
        );
        one_line_error(&r, &["--size"]);
    }
    for command in [&["txt2img", "--prompt", "x"][..], &["bench"]] {
        let r = sd(&d, &[command, &["--dtype", "bf16"]].concat());
        one_line_error(&r, &["--dtype", "bf16", "f16"]);
        let r = sd(&d, &[command, &["--backend", "tpu"]].concat());
        one_line_error(&r, &["--backend", "tpu", "auto, gpu or cpu"]);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A safetensors embedding file: `{trigger: [width]}`.
fn write_embedding(path: &Path, trigger: &str, width: usize) {
    let header = format!(
        r#"{{"{trigger}":{{"dtype":"F32","shape":[{width}],"data_offsets":[0,{}]}}}}"#,
        4 * width
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, 4 * width));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn size_and_file_messages_name_what_the_user_gave() {
    let d = tmp("flags-messages");
    let r = txt2img(&d, &["--width", "7"]);
    one_line_error(&r, &["--width", "(try 8)"]);
    assert!(!r.stderr.contains("8 or 8"), "{}", r.stderr);
    one_line_error(&txt2img(&d, &["--height", "4095"]), &["--height", "4088 or 4096"]);

    // img2img's default size is the image's: an unusable one names the image, not --width,
    // and is refused before the model loads.
    image::RgbImage::new(4104, 16).save(d.join("wide.png")).unwrap();
    let r = generate(&d, "img2img", &["--image", "wide.png"]);
    refused_early(&r, &["wide.png", "4104x16", "4096", "pass --width"]);
    assert!(!r.stderr.contains("argument --width"), "{}", r.stderr);

    // An embedding of another width names its file (the fixture's text encoder is 32 wide).
    write_embedding(&d.join("sd15-wide.safetensors"), "<wide>", 768);
    let r = txt2img(
        &d,
        &["--prompt", "a <wide>", "--embedding", "sd15-wide.safetensors"],
    );
    one_line_error(&r, &["--embedding sd15-wide.safetensors", "768", "32"]);

    let r = sd(&d, &["info", "--model", "no-such-model"]);
    one_line_error(&r, &["--model", "no-such-model", "does not exist"]);
    std::fs::remove_dir_all(&d).unwrap();
}
