//! What the end-to-end conformance tests share (tests/pipeline_e2e.rs and
//! the tests of features on top of it, such as tests/vae/): a case of a
//! goldens `cases.json` as a [`Request`], the image comparison, and the
//! bounds, whose derivation and measured figures tests/pipeline_e2e.rs
//! documents.

use sd_wgpu::pipeline::{Request, RgbImage};
use sd_wgpu::schedulers::SamplerKind;
use serde_json::Value;

pub const F32_PSNR: f64 = 90.0;
pub const F32_MAX_U8: u8 = 1;
pub const F16_PSNR: f64 = 45.0;
pub const F16_MAX_U8: u8 = 8;

pub fn request(case: &Value) -> Request {
    let num = |k: &str| case[k].as_f64().unwrap_or_else(|| panic!("case field {k}"));
    Request {
        prompt: case["prompt"].as_str().unwrap().into(),
        negative_prompt: case["negative_prompt"].as_str().unwrap().into(),
        steps: num("steps") as usize,
        cfg_scale: num("cfg_scale") as f32,
        sampler: Some(SamplerKind::from_name(case["sampler"].as_str().unwrap()).unwrap()),
        seed: num("seed") as u64,
        width: Some(num("width") as usize),
        height: Some(num("height") as usize),
        batch: num("batch") as usize,
        clip_skip: num("clip_skip") as usize,
        strength: case["strength"].as_f64().unwrap_or(0.75),
        embeddings: Vec::new(),
    }
}

/// PSNR (dB, peak 1), max |diff| of the floats, max |diff| of the 8-bit pixels.
pub fn compare(ours: &RgbImage, reference: &[f32]) -> (f64, f64, u8) {
    assert_eq!(ours.data.len(), reference.len());
    let mse = ours
        .data
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / reference.len() as f64;
    let max = ours
        .data
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    // diffusers' numpy_to_pil: (x * 255).round(), halves to even.
    let ref8 = reference.iter().map(|&v| (v * 255.0).round_ties_even() as u8);
    let max8 = ours
        .to_rgb8()
        .into_iter()
        .zip(ref8)
        .map(|(a, b)| a.abs_diff(b))
        .max()
        .unwrap();
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    };
    (psnr, max, max8)
}
