//! `sd-wgpu tokenize` through the built binary.

use std::process::Command;

fn tokenize(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .arg("tokenize")
        .args(args)
        .output()
        .expect("runs the sd-wgpu binary");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn prints_ids_and_counter() {
    let (ok, stdout, stderr) = tokenize(&["a photo of a cat"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "chunk 1/1: 5 tokens\n  49406 320 1125 539 320 2368 49407 (+ 70 x 49407 padding)\n5/75\n"
    );
}

#[test]
fn verbose_shows_tokens_and_weights() {
    let (ok, stdout, stderr) = tokenize(&["--verbose", "a (cat:1.5)"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "chunk 1/1: 2 tokens");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "49406", "1.000", "<|startoftext|>"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["2", "2368", "1.500", "cat</w>"]
    );
    assert_eq!(*lines.last().unwrap(), "2/75");
}

#[test]
fn long_prompt_counts_like_a1111() {
    let prompt = vec!["cat"; 80].join(" ");
    let (ok, stdout, _) = tokenize(&[&prompt]);
    assert!(ok);
    assert!(stdout.starts_with("chunk 1/2: 75 tokens\n"), "{stdout}");
    assert!(
        stdout.ends_with(
            "chunk 2/2: 5 tokens\n  49406 2368 2368 2368 2368 2368 49407 (+ 70 x 49407 padding)\n80/150\n"
        ),
        "{stdout}"
    );
}

#[test]
fn bad_prompt_fails_with_a_message() {
    let (ok, stdout, stderr) = tokenize(&["(cat:1.2.3)"]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(stderr.contains("1.2.3") && stderr.contains("prompt"), "{stderr}");
}
