//! A stdout that fails (the reader went away, the disk is full) never panics
//! and never stops images from being written: EPIPE ends quietly (exit 0),
//! other failures are one error line (exit 1) after all the work.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::common::{no_panic, png_parameters, pngs, scratch, sd, stderr, txt2img};

const BATCH: [&str; 6] = ["--batch", "4", "--seed", "9", "--output", "p.png"];
const WRITTEN: [&str; 4] = ["p-0.png", "p-1.png", "p-2.png", "p-3.png"];

/// `cmd` with a stdout that is closed before it prints anything.
fn closed_stdout(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// `cmd` with stdout on /dev/full.
fn full_stdout(cmd: &mut Command) -> std::process::Output {
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    cmd.stdout(full).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn txt2img_writes_every_image_when_the_reader_goes_away() {
    // `| head -1`: the reader takes the first line, then closes the pipe.
    let d = scratch("epipe-head");
    let mut child = txt2img(&d, &BATCH)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "p-0.png\n");
    let r = child.wait_with_output().unwrap();
    no_panic(&r);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert_eq!(pngs(&d), WRITTEN);
    for name in WRITTEN {
        png_parameters(&d.join(name));
    }
    std::fs::remove_dir_all(&d).unwrap();

    // A reader gone before the first line.
    let d = scratch("epipe-closed");
    let r = closed_stdout(&mut txt2img(&d, &BATCH));
    no_panic(&r);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert!(!stderr(&r).contains("error"), "{}", stderr(&r));
    assert_eq!(pngs(&d), WRITTEN);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn txt2img_writes_every_image_when_stdout_is_full() {
    let d = scratch("enospc");
    let r = full_stdout(&mut txt2img(&d, &BATCH));
    no_panic(&r);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let e = stderr(&r);
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    assert!(
        errors[0].contains("stdout")
            && errors[0].contains("No space left")
            && errors[0].contains("all 4 images"),
        "{e}"
    );
    assert_eq!(pngs(&d), WRITTEN);
    for name in WRITTEN {
        png_parameters(&d.join(name));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn tokenize_and_info_survive_a_closed_or_full_stdout() {
    let d = scratch("other-commands");
    for args in [&["tokenize", "a photo of a cat"][..], &["info"]] {
        let r = closed_stdout(sd(&d).args(args));
        no_panic(&r);
        assert_eq!(r.status.code(), Some(0), "{args:?}: {}", stderr(&r));
        assert_eq!(stderr(&r), "", "{args:?}: quiet on a closed pipe");
        let r = full_stdout(sd(&d).args(args));
        no_panic(&r);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {}", stderr(&r));
        assert!(
            stderr(&r).starts_with("error: writing to stdout: "),
            "{args:?}: {}",
            stderr(&r)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}
