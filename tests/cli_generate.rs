//! `sd-wgpu txt2img` / `img2img` through the built binary, on the small
//! fixture model (and the built-in demo model) and the CPU backend: files,
//! metadata, the no-overwrite rule, and one-line errors for bad input
//! (non-zero exit, no panic).

use std::path::Path;

#[path = "support/cli.rs"]
mod cli;
use cli::{model, one_line_error, parameters, sd, tmp, with};

#[test]
fn txt2img_writes_png_with_parameters_and_never_clobbers() {
    let d = tmp("txt2img");
    let m = model();
    let m = m.to_str().unwrap();
    let defaults = [
        ("--prompt", "a red fox"),
        ("--negative-prompt", "blurry"),
        ("--model", m),
        ("--backend", "cpu"),
        ("--steps", "3"),
        ("--seed", "42"),
        ("--sampler", "euler-a"),
    ];
    let t = |extra: &[&str]| sd(&d, &with("txt2img", &defaults, extra));
    let r = t(&["--output", "fox.png"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "fox.png\n");
    assert!(r.stderr.contains("device: CPU"), "{}", r.stderr);
    let params = parameters(&d.join("fox.png"));
    assert!(
        params.starts_with("a red fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model hash: "),
        "{params}"
    );
    assert!(params.contains("Model: model"), "{params}");
    let before = std::fs::read(d.join("fox.png")).unwrap();

    // An existing output stops the run before any work.
    let r = t(&["--output", "fox.png", "--seed", "1"]);
    one_line_error(&r, &["fox.png", "already exists", "--overwrite"]);
    assert!(
        !r.stderr.contains("device:"),
        "checked before loading: {}",
        r.stderr
    );
    assert_eq!(std::fs::read(d.join("fox.png")).unwrap(), before);
    let r = t(&["--output", "fox.png", "--seed", "1", "--overwrite", "--quiet"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("fox.png\n", ""));
    assert_ne!(std::fs::read(d.join("fox.png")).unwrap(), before);

    // Batches are numbered; no --output means sd-wgpu-<seed>.png.
    let r = t(&["--batch", "2", "--output", "b.png", "--quiet"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "b-0.png\nb-1.png\n");
    assert!(parameters(&d.join("b-1.png")).contains("Seed: 43"));
    let r = t(&["--quiet"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "sd-wgpu-42.png\n");
    let leftovers: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn random_seed_is_printed_and_verbose_times_the_run() {
    let d = tmp("verbose");
    let m = model();
    let r = sd(
        &d,
        &[
            "txt2img",
            "--prompt",
            "a fox",
            "--model",
            m.to_str().unwrap(),
            "--backend",
            "cpu",
            "--steps",
            "2",
            "--output",
            "v.png",
            "--verbose",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let seed_line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("seed "))
        .expect("seed printed");
    let seed: u64 = seed_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(parameters(&d.join("v.png")).contains(&format!("Seed: {seed}")));
    for what in [
        "load",
        "text encode",
        "sampling",
        "call   1",
        "decode",
        "write",
        "default sampler pndm",
    ] {
        assert!(r.stderr.contains(what), "{what:?} missing from {}", r.stderr);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn img2img_writes_the_strength() {
    let d = tmp("img2img");
    let m = model();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/input_wide.png");
    let r = sd(
        &d,
        &[
            "img2img",
            "--image",
            input.to_str().unwrap(),
            "--strength",
            "0.5",
            "--prompt",
            "a fox",
            "--model",
            m.to_str().unwrap(),
            "--backend",
            "cpu",
            "--steps",
            "4",
            "--seed",
            "3",
            "--output",
            "i.png",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let params = parameters(&d.join("i.png"));
    assert!(
        params.contains("Size: 80x48") && params.contains("Denoising strength: 0.5"),
        "{params}"
    );
    let r = sd(
        &d,
        &[
            "img2img",
            "--image",
            input.to_str().unwrap(),
            "--strength",
            "0.01",
            "--prompt",
            "a fox",
            "--model",
            m.to_str().unwrap(),
            "--backend",
            "cpu",
            "--steps",
            "4",
            // The fixture's default, PNDM, keeps its last call there, as diffusers does.
            "--sampler",
            "ddim",
            "--output",
            "j.png",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("warning: --strength 0.01 keeps no step"),
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let d = tmp("errors");
    let m = model();
    let m = m.to_str().unwrap();
    let defaults = [
        ("--prompt", "x"),
        ("--model", m),
        ("--backend", "cpu"),
        ("--steps", "2"),
    ];
    let t = |extra: &[&str]| sd(&d, &with("txt2img", &defaults, extra));
    one_line_error(&t(&["--width", "100"]), &["--width", "multiple of 8", "100"]);
    one_line_error(&t(&["--height", "0"]), &["--height"]);
    one_line_error(&t(&["--width", "8192"]), &["--width", "4096"]);
    one_line_error(&t(&["--steps", "0"]), &["--steps"]);
    one_line_error(&t(&["--steps", "5000"]), &["--steps", "1000"]);
    one_line_error(&t(&["--cfg-scale", "-1"]), &["--cfg-scale"]);
    one_line_error(&t(&["--batch", "0"]), &["--batch"]);
    one_line_error(&t(&["--clip-skip", "9"]), &["--clip-skip", "2 layers"]);
    one_line_error(&t(&["--sampler", "dpm3"]), &["--sampler", "euler-a"]);
    one_line_error(&t(&["--steps", "many"]), &["--steps"]);
    one_line_error(&t(&["--backend", "tpu"]), &["--backend"]);
    one_line_error(&t(&["--dtype", "bf16"]), &["--dtype"]);
    one_line_error(&t(&["--output", "x.jpg"]), &["--output", ".png"]);
    one_line_error(&t(&["--output", "nodir/x.png"]), &["--output", "nodir"]);
    one_line_error(&t(&["--embedding", "missing.pt"]), &["--embedding", "missing.pt"]);
    one_line_error(&t(&["--prompt", "(x:1.2.3)"]), &["--prompt", "1.2.3"]);
    std::fs::write(d.join("junk.pt"), b"not an embedding").unwrap();
    one_line_error(&t(&["--embedding", "junk.pt"]), &["junk.pt"]);

    let r = sd(&d, &["txt2img", "--prompt", "x", "--model", "no-such-model"]);
    one_line_error(&r, &["--model", "no-such-model", "does not exist"]);
    std::fs::write(d.join("empty.safetensors"), b"").unwrap();
    let r = sd(
        &d,
        &[
            "txt2img",
            "--prompt",
            "x",
            "--model",
            "empty.safetensors",
            "--backend",
            "cpu",
        ],
    );
    one_line_error(&r, &["empty.safetensors"]);
    let r = sd(
        &d,
        &[
            "txt2img",
            "--prompt",
            "x",
            "--model",
            d.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
    );
    one_line_error(&r, &["not a diffusers Stable Diffusion folder"]);

    let i = |extra: &[&str]| sd(&d, &with("img2img", &defaults, extra));
    one_line_error(
        &i(&["--image", "nope.png", "--strength", "0.5"]),
        &["--image", "nope.png"],
    );
    std::fs::write(d.join("bad.png"), b"not a png").unwrap();
    one_line_error(
        &i(&["--image", "bad.png", "--strength", "0.5"]),
        &["bad.png", "decode"],
    );
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/input.png");
    one_line_error(
        &i(&["--image", input.to_str().unwrap(), "--strength", "1.5"]),
        &["--strength", "1.5"],
    );
    one_line_error(
        &i(&["--image", input.to_str().unwrap(), "--strength", "-0.2"]),
        &["--strength", "-0.2"],
    );
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png") && n != "bad.png")
        .collect();
    assert!(
        leftovers.is_empty(),
        "no image written by a failed run: {leftovers:?}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn without_model_the_built_in_demo_model_runs() {
    let d = tmp("demo");
    let r = sd(
        &d,
        &[
            "txt2img",
            "--prompt",
            "a red circle on a blue background",
            "--seed",
            "3",
            "--backend",
            "cpu",
            "--output",
            "circle.png",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let img = image::open(d.join("circle.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64), "the demo model's native size");
    let p = parameters(&d.join("circle.png"));
    assert!(p.contains("Model: sd-wgpu-demo"), "{p}");
    let cached: Vec<_> = std::fs::read_dir(d.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached.len(), 1, "one cached copy of the demo model: {cached:?}");

    // `info` without --model describes the same model.
    let r = sd(&d, &["info"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Stable Diffusion 1.x"), "{}", r.stdout);
}
