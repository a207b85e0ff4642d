//! Output files: links planted where we write are never followed, output
//! problems are refused before the model loads, stale temporaries of ours
//! are cleaned, and `--output-dir` numbering never replaces a file.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;

use super::common::{make_old, no_panic, png_parameters, pngs, scratch, stderr, txt2img};

const PRECIOUS: &[u8] = b"the victim's file";

#[test]
fn links_planted_at_temporary_names_are_never_followed() {
    let d = scratch("links");
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let victim = d.join("victim.txt");
    std::fs::write(&victim, PRECIOUS).unwrap();
    // Names of our pattern (the real ones are random: these stand for any of
    // them), old enough for the stale-temporary cleaning to consider them.
    let planted: Vec<_> = (0..20)
        .map(|k| out.join(format!(".sd-wgpu-{k:010}.tmp")))
        .collect();
    for link in &planted {
        symlink(&victim, link).unwrap();
        make_old(link);
    }
    let child = txt2img(&out, &["--batch", "2", "--seed", "5", "--output", "fox.png"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The old predictable names, `.<name>.<pid>.tmp`: the pid is known at once,
    // long before the first image is written.
    for i in 0..2 {
        let link = out.join(format!(".fox-{i}.png.{}.tmp", child.id()));
        symlink(&victim, &link).unwrap();
    }
    let r = child.wait_with_output().unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read(&victim).unwrap(), PRECIOUS, "victim untouched");
    assert_eq!(pngs(&out), ["fox-0.png", "fox-1.png"]);
    for name in ["fox-0.png", "fox-1.png"] {
        png_parameters(&out.join(name));
    }
    for link in &planted {
        let target = std::fs::read_link(link).expect("planted link left alone");
        assert_eq!(target, victim);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Asserts `r` failed with one error line naming all of `needles`, before the
/// device was opened (so before the model loads).
fn refused_early(r: &std::process::Output, needles: &[&str]) {
    no_panic(r);
    let e = stderr(r);
    assert_eq!(r.status.code(), Some(1), "{e}");
    assert!(!e.contains("device:"), "refused before loading: {e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {:?}", errors[0]);
    }
}

#[test]
fn output_problems_are_refused_before_the_model_loads() {
    let d = scratch("refused");
    let run = |extra: &[&str]| txt2img(&d, &["--seed", "1"]).args(extra).output().unwrap();

    // A folder that takes no new file.
    refused_early(
        &run(&["--output", "/proc/x.png"]),
        &["--output", "/proc", "not writable"],
    );
    refused_early(
        &run(&["--output-dir", "/proc"]),
        &["--output-dir", "/proc", "not writable"],
    );
    let r = txt2img(Path::new("/proc"), &["--seed", "1"]).output().unwrap();
    refused_early(&r, &["/proc", "current directory", "not writable"]);
    if is_root() {
        // Root writes in any folder whatever its mode: /proc above stands for it.
    } else {
        let ro = d.join("read-only");
        std::fs::create_dir_all(&ro).unwrap();
        set_mode(&ro, 0o555);
        let path = ro.join("x.png");
        refused_early(
            &run(&["--output", path.to_str().unwrap()]),
            &["--output", "read-only", "not writable"],
        );
        set_mode(&ro, 0o755);
    }

    // A dangling link at the default name: in the way, and said so; no --output
    // named since none was passed.
    symlink(d.join("nowhere"), d.join("sd-wgpu-1.png")).unwrap();
    let r = run(&[]);
    refused_early(&r, &["sd-wgpu-1.png", "symbolic link", "does not exist"]);
    let e = stderr(&r);
    assert!(!e.contains("--output ") && !e.contains("appeared"), "{e}");
    assert!(!d.join("nowhere").exists(), "the link was not followed");

    // A name whose file (or temporary) the file system would refuse.
    let long = format!("{}.png", "n".repeat(252));
    refused_early(
        &run(&["--output", &long]),
        &["--output", "256-byte file name", "at most 255"],
    );
    // 254 bytes fit, but not with the batch's "-0".
    let fits = format!("{}.png", "n".repeat(250));
    let r = run(&["--output", &fits, "--batch", "2"]);
    refused_early(&r, &["--output", "-0.png", "256-byte"]);
    assert_eq!(pngs(&d), ["sd-wgpu-1.png"], "only the planted link");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn stale_temporaries_of_ours_are_cleaned_on_the_next_run() {
    let d = scratch("stale");
    let ours_old = [".sd-wgpu-AbCdEfGh12.tmp", ".cat.png.4242.tmp"];
    let kept = [".sd-wgpu-Fresh12345.tmp", ".notes.tmp", ".sd-wgpu-short.tmp"];
    for name in ours_old.iter().chain(&kept) {
        std::fs::write(d.join(name), b"x").unwrap();
    }
    for name in ours_old.iter().chain(&kept[1..]) {
        make_old(&d.join(name));
    }
    let r = txt2img(&d, &["--seed", "3", "--quiet"]).output().unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    for name in ours_old {
        assert!(!d.join(name).exists(), "{name} removed");
    }
    for name in kept {
        assert!(d.join(name).exists(), "{name} kept");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn output_dir_numbers_never_collide() {
    let d = scratch("numbered");
    let out = d.join("images");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("00004-77.png"), b"someone else's").unwrap();
    std::fs::write(out.join("00002-1.png"), b"someone else's").unwrap();
    let dir = out.to_str().unwrap();
    let r = txt2img(&d, &["--seed", "1", "--batch", "2", "--output-dir", dir])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    let expected = [out.join("00005-1.png"), out.join("00006-2.png")];
    let listed: Vec<String> = expected.iter().map(|p| format!("{}\n", p.display())).collect();
    assert_eq!(String::from_utf8(r.stdout).unwrap(), listed.concat());
    for p in &expected {
        assert!(png_parameters(p).contains("Seed: "));
    }

    // Two runs at once, same seeds: every image gets its own file.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            txt2img(
                &d,
                &["--seed", "1", "--batch", "3", "--output-dir", dir, "--quiet"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut written = Vec::new();
    for run in runs {
        let r = run.wait_with_output().unwrap();
        assert!(r.status.success(), "{}", stderr(&r));
        written.extend(String::from_utf8(r.stdout).unwrap().lines().map(String::from));
    }
    written.sort();
    written.dedup();
    assert_eq!(written.len(), 6, "{written:?}");
    for p in &written {
        png_parameters(Path::new(p));
    }
    assert_eq!(
        std::fs::read(out.join("00004-77.png")).unwrap(),
        b"someone else's"
    );
    assert_eq!(pngs(&out).len(), 10);

    // --output-dir goes with neither --output nor --overwrite; a missing folder is named.
    for other in [["--output", "x.png"], ["--overwrite", "--quiet"]] {
        let r = txt2img(&d, &["--output-dir", dir]).args(other).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
        assert!(stderr(&r).contains("cannot be used with"), "{}", stderr(&r));
    }
    let r = txt2img(&d, &["--output-dir", "missing"]).output().unwrap();
    refused_early(&r, &["--output-dir", "missing", "does not exist"]);
    std::fs::remove_dir_all(&d).unwrap();
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn set_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}
