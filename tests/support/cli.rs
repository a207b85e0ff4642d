//! Running the `sd-wgpu` binary in tests, for the test files that include this one
//! (`#[path = "support/cli.rs"] mod cli;`): a scratch folder, a run with its output, the PNG
//! `parameters` chunk, and the one-line error rule.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The small fixture model (a diffusers folder, 64x64, width-32 text encoder).
pub fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model")
}

/// A fresh, empty scratch folder for `tag` in this test process.
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sdw-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sd-wgpu args` in `dir`, with its own model cache and no `SD_WGPU_BACKEND`.
pub fn sd(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("SD_WGPU_BACKEND")
        // The built-in model is written out here, not in the user's ~/.cache.
        .env("SD_WGPU_CACHE", dir.join("cache"))
        .args(args)
        .output()
        .expect("runs the sd-wgpu binary");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `defaults` (flag, value pairs) with the flags of `extra` replacing them, then `extra`.
pub fn with<'a>(command: &'a str, defaults: &[(&'a str, &'a str)], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command];
    for &(flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

/// The `parameters` text chunk of a PNG.
pub fn parameters(path: &Path) -> String {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = dec.read_info().unwrap();
    let info = reader.info();
    let chunk = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .expect("a parameters chunk");
    chunk.text.clone()
}

/// Asserts a failed run printed exactly one `error:` line naming `needle`.
pub fn one_line_error(r: &Run, needles: &[&str]) {
    assert!(!r.ok, "expected a failure, stdout: {}", r.stdout);
    assert!(matches!(r.code, Some(1) | Some(2)), "exit code {:?}", r.code);
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("backtrace"),
        "{}",
        r.stderr
    );
    let errors: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {:?}", errors[0]);
    }
}
