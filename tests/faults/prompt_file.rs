//! `--prompt-file`: one prompt per line, each a request of `--batch` images,
//! seeds going on across them, the model loaded once; from a file or stdin.

use std::io::Write;
use std::process::Stdio;

use super::common::{no_panic, png_parameters, pngs, scratch, sd, stderr, QUICK};

const PROMPTS: &str =
    "# shapes\n\na red circle on a blue background\r\n  \n  a green square on a black background\n";

#[test]
fn each_line_is_a_request_and_seeds_go_on() {
    let d = scratch("prompt-file");
    std::fs::write(d.join("prompts.txt"), PROMPTS).unwrap();
    let r = sd(&d)
        .args([
            "txt2img",
            "--prompt-file",
            "prompts.txt",
            "--batch",
            "2",
            "--seed",
            "10",
        ])
        .args(QUICK)
        .args(["--output", "shape.png"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(stderr(&r).matches("device:").count(), 1, "one model load");
    assert_eq!(
        String::from_utf8(r.stdout).unwrap(),
        "shape-0.png\nshape-1.png\nshape-2.png\nshape-3.png\n"
    );
    for (n, prompt) in [
        (0, "a red circle on a blue background"),
        (1, "a red circle on a blue background"),
        (2, "a green square on a black background"),
        (3, "a green square on a black background"),
    ] {
        let p = png_parameters(&d.join(format!("shape-{n}.png")));
        assert!(p.starts_with(&format!("{prompt}\n")), "{p}");
        assert!(p.contains(&format!("Seed: {}", 10 + n)), "{p}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn stdin_works_and_bad_files_are_named() {
    let d = scratch("prompt-stdin");
    let mut child = sd(&d)
        .args(["txt2img", "--prompt-file", "-", "--seed", "7", "--quiet"])
        .args(QUICK)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(PROMPTS.as_bytes()).unwrap();
    let r = child.wait_with_output().unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(
        String::from_utf8(r.stdout).unwrap(),
        "sd-wgpu-7.png\nsd-wgpu-8.png\n"
    );
    assert!(png_parameters(&d.join("sd-wgpu-8.png")).starts_with("a green square"));

    let fails = |args: &[&str], code: i32, needles: &[&str]| {
        let r = sd(&d).arg("txt2img").args(QUICK).args(args).output().unwrap();
        no_panic(&r);
        assert_eq!(r.status.code(), Some(code), "{args:?}: {}", stderr(&r));
        for n in needles {
            assert!(stderr(&r).contains(n), "{n:?} not in {}", stderr(&r));
        }
        assert!(!stderr(&r).contains("device:"), "refused before loading");
    };
    std::fs::write(d.join("empty.txt"), "# nothing\n\n").unwrap();
    fails(
        &["--prompt-file", "empty.txt"],
        1,
        &["--prompt-file", "empty.txt", "no prompt"],
    );
    std::fs::write(d.join("bad.txt"), "a cat\n(x:1.2.3)\n").unwrap();
    fails(
        &["--prompt-file", "bad.txt"],
        1,
        &["--prompt-file", "bad.txt line 2", "1.2.3"],
    );
    fails(
        &["--prompt-file", "missing.txt"],
        1,
        &["--prompt-file", "missing.txt"],
    );
    fails(
        &["--prompt-file", "bad.txt", "--prompt", "x"],
        2,
        &["cannot be used with"],
    );
    fails(&[], 2, &["--prompt"]);
    assert_eq!(pngs(&d), ["sd-wgpu-7.png", "sd-wgpu-8.png"]);
    std::fs::remove_dir_all(&d).unwrap();
}
