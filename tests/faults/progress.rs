//! What a run says on stderr: a warning when the size is far above the
//! model's native size (once per run, before the work), none near it, and
//! nothing at all with --quiet.

use super::common::{scratch, sd, stderr, QUICK};

#[test]
fn far_above_native_size_warns_once() {
    let d = scratch("size-warning");
    std::fs::write(d.join("prompts.txt"), "a red circle\na blue square\n").unwrap();
    let run = |extra: &[&str]| {
        let r = sd(&d)
            .args([
                "txt2img",
                "--prompt-file",
                "prompts.txt",
                "--seed",
                "1",
                "--overwrite",
            ])
            .args(QUICK)
            .args(extra)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", stderr(&r));
        stderr(&r)
    };
    let e = run(&["--width", "96", "--height", "96"]);
    let warning = "warning: 96x96 is 2.2x the pixels of the model's native 64x64: expect duplicated subjects";
    assert_eq!(e.matches(warning).count(), 1, "once for both prompts: {e}");
    let e = run(&["--width", "88", "--height", "88"]);
    assert!(!e.contains("warning"), "1.9x the pixels: {e}");
    let e = run(&["--width", "96", "--height", "96", "--quiet"]);
    assert_eq!(e, "", "--quiet");
    std::fs::remove_dir_all(&d).unwrap();
}
