//! Device choice: `auto` prefers the CPU backend over a software Vulkan
//! adapter (and says so), `gpu` still takes one, and a run without a desktop
//! session (no `XDG_RUNTIME_DIR`) prints no driver noise. GPU cases fail,
//! never skip, without an adapter.

use std::path::{Path, PathBuf};
use std::process::Command;

use sd_wgpu::gpu::{is_software, list_adapters};
use sd_wgpu::{Backend, Device};

/// (software adapter names, whether a hardware adapter exists) on this machine.
fn adapters() -> (Vec<String>, bool) {
    let infos: Vec<_> = list_adapters().iter().map(|a| a.get_info()).collect();
    assert!(
        !infos.is_empty(),
        "these tests need a wgpu adapter and none was found \
         (Debian: apt-get install mesa-vulkan-drivers)"
    );
    let software = infos
        .iter()
        .filter(|i| is_software(i))
        .map(|i| i.name.clone())
        .collect();
    let hardware = infos.iter().any(|i| !is_software(i));
    (software, hardware)
}

#[test]
fn auto_prefers_the_cpu_over_a_software_adapter() {
    let (software, hardware) = adapters();
    let choice = Backend::Auto.choose().expect("auto always opens something");
    let line = choice.describe();
    if hardware {
        let ctx = choice.device.gpu().expect("auto takes a hardware GPU");
        assert!(!ctx.caps().software, "{line}");
        assert!(choice.skipped.is_empty(), "{line}");
    } else {
        assert!(matches!(choice.device, Device::Cpu), "{line}");
        assert_eq!(choice.skipped, software);
        assert!(line.starts_with("CPU (rayon, "), "{line}");
        assert!(line.contains("auto skipped the software adapter"), "{line}");
        assert!(line.contains(&software[0]), "{line}");
        assert!(line.contains("--backend gpu to use it"), "{line}");
    }
}

#[test]
fn backend_gpu_takes_a_software_adapter_when_it_is_the_only_one() {
    let (_, hardware) = adapters();
    let choice = Backend::Gpu.choose().expect("an adapter exists");
    let ctx = choice.device.gpu().expect("--backend gpu opens a GPU context");
    assert_eq!(ctx.caps().software, !hardware, "{}", ctx.describe());
    assert!(choice.skipped.is_empty());
    assert_eq!(choice.describe(), ctx.describe());
}

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model")
}

/// `sd-wgpu txt2img` on the fixture model with `extra` flags, in a fresh
/// folder, with no desktop session: `XDG_RUNTIME_DIR` (which `.ci/run`
/// exports) and the switches of Mesa's device-select layer removed.
/// Returns (success, stderr).
fn txt2img_without_session(tag: &str, extra: &[&str]) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("sdw-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = model();
    let out = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .current_dir(&dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .env_remove("SD_WGPU_BACKEND")
        .args(["txt2img", "--prompt", "a red fox", "--steps", "2", "--seed", "1"])
        .args(["--model", model.to_str().unwrap(), "--output", "fox.png"])
        .args(extra)
        .output()
        .expect("runs the sd-wgpu binary");
    let written = dir.join("fox.png").is_file();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success() && written,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gpu_run_without_runtime_dir_prints_no_driver_noise() {
    adapters();
    let (ok, stderr) = txt2img_without_session("xdg-gpu", &["--backend", "gpu", "--quiet"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    assert_eq!(stderr, "", "--quiet prints nothing on success");
}

#[test]
fn auto_run_without_runtime_dir_says_why_and_prints_no_driver_noise() {
    let (software, hardware) = adapters();
    let (ok, stderr) = txt2img_without_session("xdg-auto", &["--backend", "auto"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    let device = stderr
        .lines()
        .find(|l| l.starts_with("device: "))
        .unwrap_or_else(|| panic!("a device line: {stderr}"));
    if !hardware {
        assert!(device.starts_with("device: CPU (rayon, "), "{device}");
        assert!(device.contains("auto skipped the software adapter"), "{device}");
        assert!(device.contains(&software[0]), "{device}");
    }
}
