//! Inpainting against diffusers 0.42's `StableDiffusionInpaintPipeline` (tests/fixtures/inpaint/,
//! written by tools/make_inpaint_goldens.py): a 9-channel inpainting UNet of the pipeline
//! fixture's tiny SD 1.x architecture, paired with that fixture's text encoder, tokenizer and
//! VAE, and the pipeline fixture's own 4-channel model (diffusers' blend outside the mask);
//! strength 1 and below, several samplers, guidance off, a wide size, a soft-edged RGB mask and a
//! mask blurred by diffusers' `mask_processor.blur`. 64x64 and 80x48 images, 10 steps.
//!
//! Bounds as tests/pipeline_e2e.rs, for the same reasons (read its header): f32 PSNR >= 90 dB and
//! 8-bit difference <= 1, f16 >= 45 dB and <= 8. Besides: the mask's luminance and PIL's
//! Gaussian blur value for value, and the refusals and warnings. The GPU runs [`GPU_CASES`];
//! GPU tests fail (never skip) when no adapter is found.
//!
//! Measured (CPU twins and llvmpipe alike): f32 117..131 dB, 8-bit difference <= 1; f16
//! 52..75 dB, 8-bit difference <= 4.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sd_wgpu::checkpoint::{open, Family, SafetensorsFile};
use sd_wgpu::pipeline::mask::gaussian_blur;
use sd_wgpu::pipeline::{LoadOptions, Mask, NoProgress, Pipeline, Request, RgbImage};
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{DType, Device};
use serde_json::Value;

#[path = "support/gpu.rs"]
mod support_gpu;
use support_gpu::gpu;
#[path = "support/e2e.rs"]
mod e2e;
use e2e::{compare, request, F16_MAX_U8, F16_PSNR, F32_MAX_U8, F32_PSNR};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join("inpaint").join(name)
}

/// The 4-channel model: the pipeline fixture.
fn model4() -> PathBuf {
    fixtures().join("pipeline/model")
}

/// The 9-channel model as a diffusers inpainting folder: the fixture's UNet and model index
/// with the pipeline fixture's other components (copied once per test binary).
fn model9() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inpaint-model9");
        let _ = std::fs::remove_dir_all(&dir);
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        };
        for c in ["text_encoder", "tokenizer", "vae", "scheduler"] {
            copy(&model4().join(c), &dir.join(c));
        }
        copy(&fixture("unet9"), &dir.join("unet"));
        std::fs::copy(fixture("model_index.json"), dir.join("model_index.json")).unwrap();
        dir
    })
    .clone()
}

fn cases() -> (Value, SafetensorsFile) {
    let text = std::fs::read_to_string(fixture("cases.json")).unwrap();
    let goldens = SafetensorsFile::open(fixture("goldens.safetensors")).unwrap();
    (serde_json::from_str(&text).unwrap(), goldens)
}

fn golden(goldens: &SafetensorsFile, name: &str) -> Vec<f32> {
    goldens.read(name, DType::F32).unwrap().to_f32().into_owned()
}

fn load(model: &Path, device: Device, dtype: DType) -> Pipeline {
    let opts = LoadOptions {
        device,
        dtype: Some(dtype),
        ..LoadOptions::default()
    };
    Pipeline::load(model, &opts).unwrap()
}

/// The cases the GPU runs: both UNets, strength 1 and below, a soft mask and the wide size. The
/// rest of the pipeline is host code the CPU runs already, and llvmpipe (CI's adapter) takes
/// ~5 s per case.
const GPU_CASES: &[&str] = &[
    "inpaint9_ddim",
    "inpaint9_dpmpp_2m_karras_strength",
    "inpaint9_euler_a_wide",
    "inpaint4_euler_a_soft",
];

/// Runs the cases (all, or those in `only`) on one backend and precision; asserts the bounds
/// and prints the figures.
fn conformance(device: Device, dtype: DType, min_psnr: f64, max_u8: u8, only: Option<&[&str]>) {
    let pipes = [
        (4, load(&model4(), device.clone(), dtype)),
        (9, load(&model9(), device, dtype)),
    ];
    let (cases, goldens) = cases();
    let mut failures = Vec::new();
    eprintln!(
        "{:<36} {:>9} {:>10} {:>6}",
        "case", "PSNR dB", "max diff", "max u8"
    );
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if only.is_some_and(|names| !names.contains(&name)) {
            continue;
        }
        let channels = case["unet_in_channels"].as_u64().unwrap();
        let pipe = &pipes.iter().find(|(c, _)| *c == channels).unwrap().1;
        assert_eq!(pipe.is_inpainting_model(), channels == 9);
        let image =
            RgbImage::load(&fixtures().join("pipeline").join(case["image"].as_str().unwrap())).unwrap();
        let mask = Mask::load(&fixture(case["mask"].as_str().unwrap()))
            .unwrap()
            .with_blur(case["mask_blur"].as_u64().unwrap() as usize);
        let req = request(case);
        let out = pipe
            .inpaint(&req, &image, &mask, &mut NoProgress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.images.len(), 1);
        assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
        let (psnr, max, max8) = compare(&out.images[0].image, &golden(&goldens, name));
        eprintln!("{name:<36} {psnr:>9.2} {max:>10.2e} {max8:>6}");
        if psnr < min_psnr || max8 > max_u8 {
            failures.push(format!("{name}: PSNR {psnr:.2} dB, max 8-bit difference {max8}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{dtype} outside the bounds (PSNR >= {min_psnr} dB, 8-bit difference <= {max_u8}):\n{}",
        failures.join("\n")
    );
}

#[test]
fn cpu_f32_matches_diffusers() {
    conformance(Device::Cpu, DType::F32, F32_PSNR, F32_MAX_U8, None);
}

#[test]
fn cpu_f16_matches_diffusers() {
    conformance(Device::Cpu, DType::F16, F16_PSNR, F16_MAX_U8, None);
}

#[test]
fn gpu_f32_matches_diffusers() {
    conformance(gpu(), DType::F32, F32_PSNR, F32_MAX_U8, Some(GPU_CASES));
}

#[test]
fn gpu_f16_matches_diffusers() {
    conformance(gpu(), DType::F16, F16_PSNR, F16_MAX_U8, Some(GPU_CASES));
}

#[test]
fn mask_luminance_and_blur_match_pil() {
    let (cases, goldens) = cases();
    let soft = Mask::load(&fixture("mask_soft.png")).unwrap();
    let luma: Vec<f32> = soft.luma.iter().map(|&v| v as f32).collect();
    assert_eq!(luma, golden(&goldens, "luma/mask_soft"), "PIL's convert(\"L\")");
    for name in ["mask_rect", "mask_soft"] {
        let m = Mask::load(&fixture(&format!("{name}.png"))).unwrap();
        for r in cases["blur_radii"].as_array().unwrap() {
            let r = r.as_u64().unwrap();
            let ours: Vec<f32> = gaussian_blur(&m.luma, m.width, m.height, r as f32)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let want = golden(&goldens, &format!("blur/{name}_{r}"));
            let differ = ours.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{name} blurred {r}: {differ} of {} values differ from PIL",
                want.len()
            );
        }
    }
}

#[test]
fn inpainting_folders_are_detected() {
    let ck = open(model9()).unwrap();
    assert_eq!(ck.detection.family, Family::Sd1Inpainting);
    assert_eq!(ck.unet.config.in_channels, 9);
}

#[test]
fn refusals_name_what_is_wrong() {
    let pipe9 = load(&model9(), Device::Cpu, DType::F32);
    let req = Request {
        steps: 1,
        width: Some(64),
        height: Some(64),
        ..Request::new("a cat")
    };
    let e = pipe9.txt2img(&req, &mut NoProgress).err().unwrap().to_string();
    assert!(
        e.contains("inpainting model") && e.contains("9 input channels") && e.contains("--mask"),
        "{e}"
    );
    let image = RgbImage::load(&fixtures().join("pipeline/input.png")).unwrap();
    let e = pipe9
        .img2img(&req, &image, &mut NoProgress)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("inpainting model"), "{e}");

    let wide = Mask::load(&fixture("mask_wide.png")).unwrap();
    let e = pipe9
        .inpaint(&req, &image, &wide, &mut NoProgress)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("mask") && e.contains("80x48") && e.contains("64x64"),
        "{e}"
    );
    let rect = Mask::load(&fixture("mask_rect.png")).unwrap();
    let e = pipe9
        .inpaint(
            &Request {
                strength: 1.5,
                ..req.clone()
            },
            &image,
            &rect,
            &mut NoProgress,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--strength") && e.contains("1.5"), "{e}");
    let e = pipe9
        .inpaint(&req, &image, &rect.clone().with_blur(10_000), &mut NoProgress)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--mask-blur") && e.contains("10000"), "{e}");
    let bad = std::env::temp_dir().join(format!("sdw-inpaint-bad-{}.png", std::process::id()));
    std::fs::write(&bad, b"not an image").unwrap();
    let e = Mask::load(&bad).unwrap_err().to_string();
    assert!(e.contains(bad.to_str().unwrap()) && e.contains("mask"), "{e}");
    std::fs::remove_file(&bad).unwrap();
}

#[test]
fn black_mask_warns_and_the_png_records_the_mask_blur() {
    let pipe = load(&model4(), Device::Cpu, DType::F32);
    let image = RgbImage::load(&fixtures().join("pipeline/input.png")).unwrap();
    let req = Request {
        steps: 2,
        strength: 1.0,
        ..Request::new("a cat")
    };
    let black = Mask::from_luma(64, 64, vec![0; 64 * 64]).unwrap();
    let out = pipe.inpaint(&req, &image, &black, &mut NoProgress).unwrap();
    assert!(
        out.warnings.iter().any(|w| w.contains("nothing to repaint")),
        "{:?}",
        out.warnings
    );
    // A thin stroke the blur spreads below 50% grey repaints nothing either.
    let mut luma = vec![0; 64 * 64];
    for y in 0..64 {
        luma[y * 64 + 30] = 255;
    }
    let thin = Mask::from_luma(64, 64, luma).unwrap();
    let out = pipe.inpaint(&req, &image, &thin, &mut NoProgress).unwrap();
    assert!(
        out.warnings.iter().any(|w| w.contains("--mask-blur 4")),
        "{:?}",
        out.warnings
    );
    let out = pipe
        .inpaint(&req, &image, &thin.with_blur(0), &mut NoProgress)
        .unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let text = out.images[0].info.to_a1111();
    assert!(text.contains("Denoising strength: 1, Mask blur: 0,"), "{text}");
    // Another output size: image and mask are resized together.
    let rect = Mask::load(&fixture("mask_rect.png")).unwrap();
    let small = Request {
        width: Some(48),
        height: Some(40),
        ..req
    };
    let out = pipe.inpaint(&small, &image, &rect, &mut NoProgress).unwrap();
    let img = &out.images[0].image;
    assert_eq!((img.width, img.height), (48, 40));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[path = "support/cli.rs"]
#[allow(dead_code)] // `model()`: this file's models are its own.
mod cli;

/// `sd-wgpu inpaint` gives diffusers' 8-bit image (case inpaint9_ddim, within one level) and
/// records the inpainting parameters; its mistakes are one-line errors naming the flag.
#[test]
fn cli_inpaint_matches_diffusers_and_refuses_bad_input() {
    let (cases, _) = cases();
    let case = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inpaint9_ddim")
        .unwrap();
    let d = cli::tmp("inpaint");
    let (model, image) = (model9(), fixtures().join("pipeline/input.png"));
    let (rect, wide) = (fixture("mask_rect.png"), fixture("mask_wide.png"));
    let arg = |v: &Value| v.to_string().trim_matches('"').to_string();
    let (steps, seed) = (arg(&case["steps"]), arg(&case["seed"]));
    let common = [
        ("--model", model.to_str().unwrap()),
        ("--image", image.to_str().unwrap()),
        ("--mask", rect.to_str().unwrap()),
        ("--prompt", case["prompt"].as_str().unwrap()),
        ("--negative-prompt", case["negative_prompt"].as_str().unwrap()),
        ("--sampler", "ddim"),
        ("--steps", &steps),
        ("--seed", &seed),
        ("--backend", "cpu"),
        ("--dtype", "f32"),
        ("--output", "out.png"),
    ];
    let r = cli::sd(&d, &cli::with("inpaint", &common, &["--mask-blur", "0"]));
    assert!(r.ok, "{}", r.stderr);
    let ours = RgbImage::load(&d.join("out.png")).unwrap().to_rgb8();
    let want = RgbImage::load(&fixture("ref/inpaint9_ddim.png"))
        .unwrap()
        .to_rgb8();
    let max = ours.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(max <= F32_MAX_U8, "8-bit difference {max} from diffusers' image");
    let params = cli::parameters(&d.join("out.png"));
    assert!(
        params.contains("Denoising strength: 1, Conditional mask weight: 1.0, Mask blur: 0,"),
        "{params}"
    );

    let wide_mask = cli::sd(
        &d,
        &cli::with(
            "inpaint",
            &common,
            &["--mask", wide.to_str().unwrap(), "--output", "x.png"],
        ),
    );
    cli::one_line_error(&wide_mask, &["--mask", "mask_wide.png", "80x48", "64x64"]);
    let blur = cli::sd(
        &d,
        &cli::with("inpaint", &common, &["--mask-blur", "300", "--output", "x.png"]),
    );
    cli::one_line_error(&blur, &["--mask-blur", "300"]);
    let strength = cli::sd(
        &d,
        &cli::with("inpaint", &common, &["--strength", "2", "--output", "x.png"]),
    );
    cli::one_line_error(&strength, &["--strength", "2"]);
    let missing = cli::sd(
        &d,
        &cli::with("inpaint", &common, &["--mask", "nope.png", "--output", "x.png"]),
    );
    cli::one_line_error(&missing, &["--mask", "nope.png", "does not exist"]);
    let txt2img = [
        ("--model", model.to_str().unwrap()),
        ("--prompt", "a fox"),
        ("--steps", "1"),
    ];
    let r = cli::sd(&d, &cli::with("txt2img", &txt2img, &["--backend", "cpu"]));
    cli::one_line_error(&r, &["inpainting model", "sd-wgpu inpaint"]);
    std::fs::remove_dir_all(&d).unwrap();
}
