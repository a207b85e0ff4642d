//! The demo model (assets/demo-model: an SD 1.x-architecture model for 64x64
//! images trained by tools/demo/train.py on the synthetic scenes of
//! tools/demo/data.py) through our own pipeline, judged by the pixel
//! evaluator (tests/support/demo/evaluate.rs, the port of tools/demo/evaluate.py).
//!
//! - The 240 held-out captions of tools/demo/eval_spec.json, each with its
//!   seed, DDIM from the model's scheduler config, the spec's steps and
//!   guidance (7.5, SD's default), on the CPU backend: every attribute reaches
//!   the spec's target, and at cfg 2 too.
//! - The first [`GPU_CAPTIONS`] of them on the GPU backend (f16 UNet and text
//!   encoder there, as users get by default): every attribute reaches the
//!   spec's target, and each caption's image shows what the CPU's shows (see
//!   [`GPU_AGREEMENT`]). On llvmpipe one caption takes ~9-12 s against ~1.2 s
//!   on the CPU, so the GPU cannot run all 240 in CI.
//! - img2img (tools/demo/img2img_check.py, cfg 2): a red square, prompted as a
//!   blue square in the same place, turns blue at strength 0.8 and stays red at
//!   0.2.
//!
//! - Guidance: at cfg 7.5 (SD's default) clearly more of the 240 captions come
//!   out with all five attributes right than at cfg 1 (no guidance).
//!
//! - Textual inversion (tools/demo/train_ti.py's `check` on our pipeline):
//!   with the `<hazard>` concept loaded (assets/hazard-concept), prompts with
//!   the token give a yellow triangle on black, an object no training image
//!   shows, of the size and at the position the prompt says; with "shape" in
//!   the token's place, no image shows one.
//!
//! The accuracy tables are printed (`--nocapture`). GPU tests fail (never skip)
//! when no adapter is found.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use sd_wgpu::pipeline::{LoadOptions, NoProgress, Pipeline, Request, RgbImage, TextualInversion};
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::Device;

/// The shipped demo model.
const MODEL: &str = "assets/demo-model";
/// The textual-inversion concept learned against it (tools/demo/train_ti.py).
const CONCEPT: &str = "assets/hazard-concept/learned_embeds.bin";
/// Its trigger and what it stands for: (colour, shape, background), one of the
/// spec's held-out triples, so no training scene has it (docs/demo-model.md says how
/// few free-colour images come near it).
const HAZARD: (&str, [(&str, &str); 3]) = (
    "<hazard>",
    [
        ("colour", "yellow"),
        ("shape", "triangle"),
        ("background", "black"),
    ],
);
/// How many of the spec's captions the GPU runs.
const GPU_CAPTIONS: usize = 36;
/// Share of those captions whose five attributes must measure exactly as on
/// the CPU. The GPU runs the UNet and text encoder in f16, the CPU in f32: a
/// shape whose fill ratio or apex share sits at a class boundary can read
/// differently. At 90% that is 3 of 36 captions.
const GPU_AGREEMENT: f64 = 0.9;
/// The guided scale of the spec (tools/demo/eval_spec.json) and of the
/// guidance test: SD's and the CLI's default.
const GUIDED_CFG: f32 = 7.5;
/// A lower guidance at which the CPU must reach the targets too (and at which
/// the img2img test runs, see there).
const LOW_CFG: f32 = 2.0;
/// The least gain, at [`GUIDED_CFG`] over cfg 1, in the share of the spec's
/// captions with all five attributes right. The gain must also be
/// significant: the captions right only with guidance must outnumber those
/// right only without it by [`GUIDANCE_Z`] standard errors (McNemar's test on
/// the paired images: same captions, same seeds).
const GUIDANCE_MIN_GAIN: f64 = 0.05;
/// One-sided p < 0.005.
const GUIDANCE_Z: f64 = 2.58;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::load(Spec::default_path()).unwrap())
}

// Shared with tests/demo_evaluator.rs, which uses `Spec::with_colour`.
#[allow(dead_code)]
#[path = "support/demo/mod.rs"]
mod demo;
#[path = "support/gpu.rs"]
mod support_gpu;
use demo::{measure, Accuracy, Attributes, Caption, Measured, Spec, ATTRIBUTES};
use support_gpu::gpu;

fn load(device: Device) -> Pipeline {
    let path = repo(MODEL);
    let opts = LoadOptions {
        device,
        ..LoadOptions::default()
    };
    let pipe = Pipeline::load(path.as_path(), &opts)
        .unwrap_or_else(|e| panic!("loading the demo model {}: {e}", path.display()));
    assert_eq!(
        pipe.default_sampler(),
        SamplerKind::Ddim,
        "the demo model's scheduler config is DDIM"
    );
    pipe
}

/// One CPU pipeline for every CPU test of this file.
fn cpu() -> &'static Pipeline {
    static PIPE: OnceLock<Pipeline> = OnceLock::new();
    PIPE.get_or_init(|| load(Device::Cpu))
}

/// A request for a 64x64 image with the spec's steps, the model's sampler.
fn request(prompt: &str, seed: u64, cfg_scale: f32, batch: usize) -> Request {
    let side = spec().image_side;
    Request {
        seed,
        cfg_scale,
        batch,
        steps: spec().generation.steps,
        width: Some(side),
        height: Some(side),
        ..Request::new(prompt)
    }
}

/// The evaluator's answer for each image of a generation.
fn measured(images: &[RgbImage], spec: &Spec) -> Vec<Measured> {
    images
        .iter()
        .map(|img| measure(&img.to_rgb8(), img.width, spec))
        .collect()
}

/// The spec's captions `captions` with their seeds at guidance `cfg`:
/// (truth, measured) pairs. The pipeline takes one prompt per request, so
/// captions run one by one.
fn run_captions(pipe: &Pipeline, captions: &[Caption], cfg: f32) -> Vec<(Attributes, Measured)> {
    captions
        .iter()
        .map(|c| {
            let out = pipe
                .txt2img(&request(&c.caption, c.seed, cfg, 1), &mut NoProgress)
                .unwrap_or_else(|e| panic!("{:?}: {e}", c.caption));
            let image = &out.images[0].image;
            (c.truth.clone(), measure(&image.to_rgb8(), image.width, spec()))
        })
        .collect()
}

/// The CPU's results on every spec caption at the spec's guidance, shared by
/// the CPU, GPU and guidance tests.
fn cpu_results() -> &'static [(Attributes, Measured)] {
    static RUN: OnceLock<Vec<(Attributes, Measured)>> = OnceLock::new();
    RUN.get_or_init(|| {
        let t = Instant::now();
        let cfg = spec().generation.guidance_scale;
        let results = run_captions(cpu(), &spec().captions, cfg);
        report(
            &format!("cpu, cfg {cfg}"),
            &spec().captions,
            &results,
            t.elapsed().as_secs_f64(),
        );
        results
    })
}

/// Prints the table row and the misses of one run.
fn report(label: &str, captions: &[Caption], results: &[(Attributes, Measured)], seconds: f64) -> Accuracy {
    let acc = Accuracy::of(results);
    println!("{}\n{}", Accuracy::header("run"), acc.row(label));
    println!("{label}: {} captions in {seconds:.1} s", results.len());
    for (caption, (truth, m)) in captions.iter().zip(results) {
        let wrong: Vec<String> = ATTRIBUTES
            .iter()
            .filter(|a| m.get(a) != Some(truth.get(a)))
            .map(|a| format!("{a} {} -> {}", truth.get(a), m.get(a).unwrap_or("none")))
            .collect();
        if !wrong.is_empty() {
            println!("  {:?}: {}", caption.caption, wrong.join(", "));
        }
    }
    acc
}

fn assert_targets(label: &str, acc: &Accuracy) {
    let misses = acc.misses(spec());
    assert!(misses.is_empty(), "{label}: below target: {}", misses.join(", "));
}

/// Every attribute reaches its target over the 240 captions on the CPU, at the
/// spec's guidance (SD's default 7.5) and at [`LOW_CFG`].
#[test]
fn captions_reach_the_targets_cpu() {
    assert_targets("cpu", &Accuracy::of(cpu_results()));
    let t = Instant::now();
    let results = run_captions(cpu(), &spec().captions, LOW_CFG);
    let label = format!("cpu, cfg {LOW_CFG}");
    let acc = report(&label, &spec().captions, &results, t.elapsed().as_secs_f64());
    assert_targets(&label, &acc);
}

/// The GPU's images of the first [`GPU_CAPTIONS`] captions reach the targets
/// and show what the CPU's show: all five attributes equal in at least
/// [`GPU_AGREEMENT`] of them. Margins are thin on so few captions (the CPU
/// reads shape 75.0% on these 36 against 80.4% over all 240; at cfg 2 their
/// background reads 88.9%, under its 90% target, against 95.8% over all 240),
/// so a failure of a target alone on another adapter says more about the
/// subset than about the backend: read the agreement line first.
#[test]
fn gpu_reaches_the_targets_and_shows_what_the_cpu_shows() {
    let captions = &spec().captions[..GPU_CAPTIONS];
    let cfg = spec().generation.guidance_scale;
    let pipe = load(gpu());
    let t = Instant::now();
    let results = run_captions(&pipe, captions, cfg);
    let gpu_acc = report(
        &format!("gpu, cfg {cfg}"),
        captions,
        &results,
        t.elapsed().as_secs_f64(),
    );
    let cpu = &cpu_results()[..GPU_CAPTIONS];
    let cpu_acc = Accuracy::of(cpu);
    println!("{}", cpu_acc.row(&format!("cpu, same {GPU_CAPTIONS} captions")));
    let differ: Vec<String> = captions
        .iter()
        .zip(cpu.iter().zip(&results))
        .filter(|(_, ((_, c), (_, g)))| ATTRIBUTES.iter().any(|a| c.get(a) != g.get(a)))
        .map(|(caption, ((_, c), (_, g)))| {
            let what: Vec<String> = ATTRIBUTES
                .iter()
                .filter(|a| c.get(a) != g.get(a))
                .map(|a| {
                    format!(
                        "{a} cpu {} gpu {}",
                        c.get(a).unwrap_or("none"),
                        g.get(a).unwrap_or("none")
                    )
                })
                .collect();
            format!("{:?}: {}", caption.caption, what.join(", "))
        })
        .collect();
    println!(
        "captions measured differently on the GPU: {}/{GPU_CAPTIONS}",
        differ.len()
    );
    for d in &differ {
        println!("  {d}");
    }
    let same = GPU_CAPTIONS - differ.len();
    assert_targets("gpu", &gpu_acc);
    assert!(
        same as f64 >= GPU_AGREEMENT * GPU_CAPTIONS as f64,
        "only {same}/{GPU_CAPTIONS} captions measure the same on the GPU as on the CPU:\n{}",
        differ.join("\n")
    );
}

/// Guidance makes the model follow the caption: at [`GUIDED_CFG`] clearly
/// more captions come out right (all five attributes) than at cfg 1, on the
/// same seeds (bar: [`GUIDANCE_MIN_GAIN`] and [`GUIDANCE_Z`]).
#[test]
fn guidance_makes_captions_followed() {
    let captions = &spec().captions;
    assert_eq!(
        spec().generation.guidance_scale,
        GUIDED_CFG,
        "the spec's guidance (tools/demo/eval_spec.json)"
    );
    let guided = cpu_results();
    let t = Instant::now();
    let unguided = &run_captions(cpu(), captions, 1.0);
    report("cpu, cfg 1", captions, unguided, t.elapsed().as_secs_f64());
    let right = |(truth, m): &(Attributes, Measured)| m.matches(truth);
    let only_guided = guided
        .iter()
        .zip(unguided)
        .filter(|(g, u)| right(g) && !right(u))
        .count();
    let only_unguided = guided
        .iter()
        .zip(unguided)
        .filter(|(g, u)| !right(g) && right(u))
        .count();
    let n = captions.len() as f64;
    let gain = (only_guided as f64 - only_unguided as f64) / n;
    let z =
        (only_guided as f64 - only_unguided as f64) / ((only_guided + only_unguided) as f64).sqrt().max(1.0);
    println!(
        "all five right: cfg {GUIDED_CFG} {:.1}%, cfg 1 {:.1}% ({} captions right only with guidance, {} only without; z = {z:.2})",
        100.0 * Accuracy::of(guided).get("all"),
        100.0 * Accuracy::of(unguided).get("all"),
        only_guided,
        only_unguided
    );
    assert!(
        gain >= GUIDANCE_MIN_GAIN && z >= GUIDANCE_Z,
        "guidance gains {:.1} points (z = {z:.2}); expected at least {:.0} points and z >= {GUIDANCE_Z}",
        100.0 * gain,
        100.0 * GUIDANCE_MIN_GAIN
    );
}

/// A large red square at a grid position on `background` (64 px), drawn as
/// data.py draws scenes: pixel centres at i + 0.5, |dx|, |dy| <= extent / 2,
/// grid centres pulled inwards so the square stays inside.
fn red_square(position: &str, background: &str) -> RgbImage {
    let side = spec().image_side;
    let colour = |name: &str| spec().palette.iter().find(|(n, _)| n == name).unwrap().1;
    let (red, bg) = (colour("red"), colour(background));
    let [col, row] = spec().positions.iter().find(|(n, _)| n == position).unwrap().1;
    let extent: f64 = 31.0 / 64.0; // data.SIZE_RANGE["large"] is 28..34 px
    let edge = (extent / 2.0 + 1.0 / 64.0).max(0.25);
    let centres = [edge, 0.5, 1.0 - edge];
    let (cx, cy) = (centres[col], centres[row]);
    let inside = |i: usize, c: f64| ((i as f64 + 0.5) / side as f64 - c).abs() <= extent / 2.0;
    let data = (0..side * side)
        .flat_map(|i| {
            if inside(i % side, cx) && inside(i / side, cy) {
                red
            } else {
                bg
            }
        })
        .map(|v| v as f32 / 255.0)
        .collect();
    RgbImage {
        width: side,
        height: side,
        data,
    }
}

/// img2img_check.py on our pipeline: from a rendered red square, the prompt
/// asks for a blue square in the same place. At strength 0.8 the shape must
/// turn blue and stay in place, at 0.2 it must stay red, each in at least the
/// spec's colour / position target share of the images (3 placements x 4 seeds).
/// At [`LOW_CFG`], as since the test landed: at 7.5 the prompt's "blue" tints
/// the square even at strength 0.2 (`img2img_check.py --cfg 7.5`: red in 6 of
/// 12, the rest purple or magenta), a weakness docs/demo-model.md lists.
#[test]
fn img2img_repaints_the_square_in_place() {
    const CASES: [(&str, &str, &str); 3] = [
        ("centre", "white", "in the centre"),
        ("top left", "black", "in the top left corner"),
        ("bottom right", "yellow", "in the bottom right corner"),
    ];
    const SEEDS: usize = 4;
    let spec = spec();
    let t = Instant::now();
    let mut lines = vec![
        "| init (red square) | strength | shape colour measured | same position |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut failures = Vec::new();
    for strength in [0.8, 0.2] {
        let want = if strength > 0.5 { "blue" } else { "red" };
        let (mut colour_hits, mut place_hits, mut n) = (0, 0, 0);
        for (position, background, words) in CASES {
            let init = red_square(position, background);
            let m = &measure(&init.to_rgb8(), init.width, spec);
            assert_eq!(m.get("colour"), Some("red"), "the init image of {position}");
            assert_eq!(m.get("position"), Some(position), "the init image of {position}");
            let prompt = format!("a large blue square {words} on a {background} background");
            let req = Request {
                strength,
                ..request(&prompt, 0, LOW_CFG, SEEDS)
            };
            let out = cpu().img2img(&req, &init, &mut NoProgress).unwrap();
            let images: Vec<RgbImage> = out.images.into_iter().map(|g| g.image).collect();
            let found = measured(&images, spec);
            colour_hits += found.iter().filter(|m| m.get("colour") == Some(want)).count();
            place_hits += found
                .iter()
                .filter(|m| m.get("position") == Some(position))
                .count();
            n += found.len();
            let colours: Vec<&str> = found.iter().map(|m| m.get("colour").unwrap_or("none")).collect();
            let same = found
                .iter()
                .filter(|m| m.get("position") == Some(position))
                .count();
            lines.push(format!(
                "| {position}, {background} | {strength} | {} | {same}/{SEEDS} |",
                colours.join(", ")
            ));
        }
        for (what, hits, target) in [
            (
                format!("shape colour {want}"),
                colour_hits,
                spec.target("colour").unwrap(),
            ),
            (
                "position kept".to_string(),
                place_hits,
                spec.target("position").unwrap(),
            ),
        ] {
            if (hits as f64) < target * n as f64 {
                failures.push(format!(
                    "strength {strength}: {what} in {hits}/{n} < {:.0}%",
                    100.0 * target
                ));
            }
        }
    }
    println!(
        "{}\nimg2img: {:.1} s",
        lines.join("\n"),
        t.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// train_ti.py's `check` on our pipeline at the spec's guidance: with the
/// `<hazard>` concept loaded, its prompts give a yellow triangle on black,
/// each of those attributes (and the position, where the prompt says one)
/// reaching the spec's target as a caption's must; the same prompts with
/// "shape" in the token's place give no yellow triangle on black at all.
#[test]
fn textual_inversion_draws_the_hazard() {
    // (template with {c} for the token, size, position); None = not said.
    // The list of train_ti.py's CHECK_PROMPTS.
    const PROMPTS: [(&str, Option<&str>, Option<&str>); 8] = [
        ("a {c}", None, None),
        (
            "a large {c} in the top left corner",
            Some("large"),
            Some("top left"),
        ),
        ("a small {c} at the bottom", Some("small"), Some("bottom")),
        ("one big {c} on the right", Some("large"), Some("right")),
        ("a tiny {c} in the centre", Some("small"), Some("centre")),
        ("{c} in the bottom right corner", None, Some("bottom right")),
        ("a little {c} at the top", Some("small"), Some("top")),
        ("a big {c} on the left side", Some("large"), Some("left")),
    ];
    const SEEDS: usize = 4;
    const CONTROL: &str = "shape";
    let path = repo(CONCEPT);
    let concept = TextualInversion::load(&path)
        .unwrap_or_else(|e| panic!("the hazard concept (tools/demo/train_ti.py): {e}"));
    assert_eq!(concept.embedding.trigger, HAZARD.0, "{}: trigger", path.display());
    let spec = spec();
    let shows_hazard = |m: &Measured| HAZARD.1.iter().all(|&(a, v)| m.get(a) == Some(v));
    // The spec's captions all use held-out triples: the concept must be one.
    assert!(
        spec.captions
            .iter()
            .any(|c| HAZARD.1.iter().all(|&(a, v)| c.truth.get(a) == v)),
        "{:?} is not a held-out triple of the spec",
        HAZARD.1
    );
    let t = Instant::now();
    // attribute -> (right, asked)
    let mut right: Vec<(&str, usize, usize)> = ATTRIBUTES.iter().map(|&a| (a, 0, 0)).collect();
    let mut control_hits = 0;
    let mut lines = vec![
        format!(
            "| prompt | {}: yellow triangle on black | control ({CONTROL}): one too |",
            HAZARD.0
        ),
        "|---|---|---|".to_string(),
    ];
    for (template, size, position) in PROMPTS {
        let mut found = Vec::new();
        for word in [HAZARD.0, CONTROL] {
            let req = Request {
                embeddings: vec![concept.clone()],
                ..request(
                    &template.replace("{c}", word),
                    0,
                    spec.generation.guidance_scale,
                    SEEDS,
                )
            };
            let out = cpu().txt2img(&req, &mut NoProgress).unwrap();
            let images: Vec<RgbImage> = out.images.into_iter().map(|g| g.image).collect();
            found.push(measured(&images, spec));
        }
        let expected: Vec<(&str, &str)> = HAZARD
            .1
            .iter()
            .copied()
            .chain(size.map(|v| ("size", v)))
            .chain(position.map(|v| ("position", v)))
            .collect();
        for m in &found[0] {
            for &(a, v) in &expected {
                let entry = right.iter_mut().find(|e| e.0 == a).unwrap();
                entry.1 += usize::from(m.get(a) == Some(v));
                entry.2 += 1;
            }
        }
        let hits = found[0].iter().filter(|m| shows_hazard(m)).count();
        let control = found[1].iter().filter(|m| shows_hazard(m)).count();
        control_hits += control;
        lines.push(format!(
            "| {} | {hits}/{SEEDS} | {control}/{SEEDS} |",
            template.replace("{c}", HAZARD.0)
        ));
    }
    lines.push(String::new());
    let mut failures = Vec::new();
    for (a, ok, asked) in right {
        let share = ok as f64 / asked as f64;
        let target = spec.target(a);
        lines.push(format!(
            "{a}: {ok}/{asked} ({:.1}%), target {}",
            100.0 * share,
            target.map_or("none".to_string(), |t| format!("{:.0}%", 100.0 * t))
        ));
        if target.is_some_and(|t| share < t) {
            failures.push(format!("{a}: {ok}/{asked} below the target"));
        }
    }
    println!(
        "{}\ntextual inversion: {:.1} s",
        lines.join("\n"),
        t.elapsed().as_secs_f64()
    );
    if control_hits > 0 {
        failures.push(format!(
            "prompts with {CONTROL:?} gave a yellow triangle on black in {control_hits}/{} images",
            PROMPTS.len() * SEEDS
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
