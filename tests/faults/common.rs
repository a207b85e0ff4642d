//! Shared by the fault tests: running the built binary on the built-in demo
//! model and the CPU backend, in a scratch folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Quick generation flags: the demo model (no --model), the CPU, 2 steps.
pub const QUICK: &[&str] = &["--backend", "cpu", "--steps", "2"];

/// A fresh, empty folder for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sdw-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary, run in `dir`, with the demo model cached once for the whole
/// test run (not in the user's ~/.cache).
pub fn sd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"));
    c.current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("SD_WGPU_BACKEND")
        .env(
            "SD_WGPU_CACHE",
            std::env::temp_dir().join(format!("sdw-faults-cache-{}", std::process::id())),
        );
    c
}

/// `sd-wgpu txt2img --prompt PROMPT` with `extra` and [`QUICK`] (but the
/// steps of `extra` when it has `--steps`).
pub fn txt2img(dir: &Path, extra: &[&str]) -> Command {
    let mut c = sd(dir);
    c.args(["txt2img", "--prompt", "a red circle on a blue background"]);
    if extra.contains(&"--steps") {
        c.args(&QUICK[..2]);
    } else {
        c.args(QUICK);
    }
    c.args(extra);
    c
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No panic, no backtrace.
pub fn no_panic(out: &Output) {
    let e = stderr(out);
    assert!(!e.contains("panicked") && !e.contains("backtrace"), "{e}");
}

/// The visible PNG files of `dir`, sorted by name.
pub fn pngs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Asserts `path` is a complete PNG of the demo model's size, and returns
/// its `parameters` text.
pub fn png_parameters(path: &Path) -> String {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "{} is a plain file", path.display());
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (64, 64), "{}", path.display());
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .expect("a parameters chunk")
        .text
        .clone()
}

/// Sets the modification time of `path` itself (a link is not followed)
/// to two hours ago.
pub fn make_old(path: &Path) {
    let ok = Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "touch -h {}", path.display());
}
