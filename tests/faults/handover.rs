//! The library hands each image over as soon as it is decoded
//! (`Pipeline::txt2img_each`): the same images as `txt2img`, in order, and
//! the ones handed over before a cancel stay with the caller.

use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

use sd_wgpu::pipeline::{Control, Generated, LoadOptions, NoProgress, Pipeline, Request, Step};
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::Error;

fn pipe() -> &'static Pipeline {
    static PIPE: OnceLock<Pipeline> = OnceLock::new();
    PIPE.get_or_init(|| {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/model");
        Pipeline::load(model, &LoadOptions::default()).unwrap()
    })
}

fn batch_of_3() -> Request {
    Request {
        steps: 2,
        sampler: Some(SamplerKind::EulerAncestral),
        seed: 20,
        batch: 3,
        ..Request::new("a fox")
    }
}

#[test]
fn images_are_handed_over_one_by_one_and_kept_on_cancel() {
    let req = batch_of_3();
    let all = pipe().txt2img(&req, &mut NoProgress).unwrap();

    // Each image arrives before the next one is sampled.
    let calls = Cell::new(0);
    let mut count = |_: &Step| {
        calls.set(calls.get() + 1);
        Control::Continue
    };
    let mut calls_at_handover = Vec::new();
    let mut handed: Vec<Generated> = Vec::new();
    let report = pipe()
        .txt2img_each(&req, &mut count, &mut |g| {
            calls_at_handover.push(calls.get());
            handed.push(g);
            Ok(())
        })
        .unwrap();
    assert_eq!(report.timings.steps.len(), 6);
    assert_eq!(calls_at_handover, [2, 4, 6]);
    let seeds: Vec<u64> = handed.iter().map(|g| g.info.seed).collect();
    assert_eq!(seeds, [20, 21, 22]);
    for (h, a) in handed.iter().zip(&all.images) {
        assert_eq!(h.image, a.image, "same image as txt2img");
    }

    // Cancelled during image 1 (0-based): image 0 is the caller's, nothing after it.
    let mut kept = Vec::new();
    let mut stop_at_third_call = {
        let mut n = 0;
        move |_: &Step| {
            n += 1;
            if n == 3 {
                Control::Stop
            } else {
                Control::Continue
            }
        }
    };
    let e = pipe()
        .txt2img_each(&req, &mut stop_at_third_call, &mut |g| {
            kept.push(g);
            Ok(())
        })
        .err()
        .unwrap();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].image, all.images[0].image);

    // An error from the receiver stops the generation and is returned.
    let mut received = 0;
    let e = pipe()
        .txt2img_each(&req, &mut NoProgress, &mut |_| {
            received += 1;
            Err(Error::invalid("--output", "disk full (test)"))
        })
        .err()
        .unwrap();
    assert!(e.to_string().contains("disk full (test)"), "{e}");
    assert_eq!(received, 1);
}
