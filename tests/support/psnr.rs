//! Image comparison for the end-to-end conformance tests (`#[path = "support/psnr.rs"] mod psnr;`).

use sd_wgpu::pipeline::RgbImage;

/// PSNR (dB, peak 1), max |diff| of the floats, max |diff| of the 8-bit pixels, of our image
/// against diffusers' float output in [0, 1] (before its 8-bit conversion).
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
