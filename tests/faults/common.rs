//! Shared by the fault tests: running the built binary on the built-in demo
//! model and the CPU backend, in a scratch folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A finished run of the binary and its peak resident memory.
pub struct Measured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident set of the child (`VmHWM`), MB.
    pub peak_mb: u64,
    pub elapsed: Duration,
}

impl Measured {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// The child's peak resident set so far (`VmHWM`), kB; `None` once it has exited.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` and measures its peak memory.
///
/// `ru_maxrss` from `wait4` would not do: a child spawned with vfork or fork starts
/// from the test process's memory high-water mark (the harness may hold hundreds of
/// MB while building inputs), and Linux carries it across `exec`. The child's own
/// `VmHWM` starts at its `exec`; it only grows, so polling it every millisecond
/// misses at most the last millisecond before exit.
pub fn measured(mut cmd: Command) -> Measured {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs the sd-wgpu binary");
    // The pipes are drained by threads so a chatty child cannot block on them.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stdout = std::thread::spawn(move || std::io::read_to_string(&mut out).unwrap());
    let stderr = std::thread::spawn(move || std::io::read_to_string(&mut err).unwrap());
    let mut peak_kb = 0;
    let status = loop {
        if let Some(kb) = vm_hwm_kb(child.id()) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait().expect("waits for the child") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Measured {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        peak_mb: peak_kb / 1024,
        elapsed: t.elapsed(),
    }
}
