//! `--lora FILE[:WEIGHT]`, `--lora-dir` with prompt tags, and their errors.

use super::cli::{model, one_line_error, parameters, sd, tmp, with};

const DEFAULTS: [(&str, &str); 6] = [
    ("--backend", "cpu"),
    ("--steps", "2"),
    ("--width", "64"),
    ("--height", "64"),
    ("--seed", "5"),
    ("--output", "out.png"),
];

#[test]
fn flags_and_tags_reach_the_image_metadata() {
    let dir = tmp("lora-cli");
    let m = model();
    let fixture = super::fixture().join("loras");
    let lora_a = fixture.join("lora_a.safetensors");
    let flag = format!("{}:0.5", lora_a.display());
    let (model, loras) = (m.to_str().unwrap(), fixture.to_str().unwrap());
    let r = sd(
        &dir,
        &with(
            "txt2img",
            &DEFAULTS,
            &[
                "--model",
                model,
                "--lora",
                &flag,
                "--lora-dir",
                loras,
                "--prompt",
                "a fox <lora:lora_b:-0.5>",
            ],
        ),
    );
    assert!(r.ok, "{}", r.stderr);
    let p = parameters(&dir.join("out.png"));
    assert!(p.starts_with("a fox <lora:lora_b:-0.5>\n"), "{p}");
    assert!(
        p.contains("Lora hashes: \"lora_a: a79ba973f188, lora_b: b961f5cf5637\""),
        "{p}"
    );

    // A prompt file: each prompt its own LoRAs (the pipeline switches between them).
    std::fs::write(dir.join("prompts.txt"), "a fox <lora:lora_a:1>\na fox\n").unwrap();
    let r = sd(
        &dir,
        &with(
            "txt2img",
            &DEFAULTS,
            &[
                "--model",
                model,
                "--lora-dir",
                loras,
                "--prompt-file",
                "prompts.txt",
                "--output",
                "p.png",
            ],
        ),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(parameters(&dir.join("p-0.png")).contains("Lora hashes: \"lora_a: a79ba973f188\""));
    assert!(!parameters(&dir.join("p-1.png")).contains("Lora hashes"));

    // The token counter counts what the text encoder sees: no tag.
    let r = sd(&dir, &["tokenize", "a fox <lora:lora_a:1>"]);
    assert!(
        r.ok && r.stdout.trim_end().ends_with("2/75"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_lora_flags_are_one_line_errors() {
    let dir = tmp("lora-cli-bad");
    let m = model();
    let fixture = super::fixture().join("loras");
    let (model, loras) = (m.to_str().unwrap(), fixture.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args = vec!["--model", model];
        if !extra.contains(&"--prompt") {
            args.extend(["--prompt", "a fox"]);
        }
        args.extend_from_slice(extra);
        sd(&dir, &with("txt2img", &DEFAULTS, &args))
    };
    one_line_error(
        &run(&["--lora", "missing.safetensors:0.5"]),
        &["--lora", "missing.safetensors"],
    );
    one_line_error(&run(&["--lora", "x.pt:inf"]), &["--lora", "finite"]);
    one_line_error(
        &run(&["--lora-dir", loras, "--prompt", "a <lora:nope:1>"]),
        &[
            "--lora-dir",
            "no LoRA named \"nope\"",
            "lora_a, lora_a_peft, lora_b",
        ],
    );
    one_line_error(&run(&["--prompt", "a <lora:lora_a:1>"]), &["needs --lora-dir"]);
    one_line_error(&run(&["--lora-dir", "nowhere"]), &["--lora-dir", "not a folder"]);
    // A model file that is no LoRA: refused naming it.
    let unet = m.join("unet/diffusion_pytorch_model.safetensors");
    let flag = unet.display().to_string();
    one_line_error(
        &run(&["--lora", &flag]),
        &["diffusion_pytorch_model.safetensors", "no LoRA keys"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
