//! Live previews: the latents of the current step as a small RGB image, without the VAE.
//!
//! A fixed linear map from the 4 latent channels to RGB, A1111's "Approx cheap" preview
//! for SD 1.x (`sd_vae_approx.cheap_approximation`), then `(x + 1) / 2` clamped to [0, 1].
//! One latent pixel is one preview pixel (an eighth of the image), scaled up by an integer
//! factor (nearest) so that small latents still make a visible picture.

use png::{BitDepth, ColorType, Encoder};

/// `[channel][rgb]`: latent channel `c` adds `COEFFS[c]` times its value to the pixel.
const COEFFS: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// The preview's smallest side, in pixels (the demo model's latents are 8x8).
const MIN_SIDE: usize = 64;

/// PNG of latents `[1, 4, h, w]` (row-major); `None` for another channel count (a model
/// the map was not made for) or an empty shape.
pub fn preview_png(latents: &[f32], shape: [usize; 4]) -> Option<Vec<u8>> {
    let [n, c, h, w] = shape;
    if n != 1 || c != COEFFS.len() || h == 0 || w == 0 || latents.len() != c * h * w {
        return None;
    }
    let scale = MIN_SIDE.div_ceil(h.min(w)).max(1);
    let (out_w, out_h) = (w * scale, h * scale);
    let mut rgb = vec![0u8; out_w * out_h * 3]; // [H*s, W*s, 3]
    for y in 0..h {
        for x in 0..w {
            let mut px = [0.0f32; 3];
            for (ch, coeff) in COEFFS.iter().enumerate() {
                let v = latents[ch * h * w + y * w + x];
                for (p, k) in px.iter_mut().zip(coeff) {
                    *p += v * k;
                }
            }
            let bytes = px.map(|v| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
            for dy in 0..scale {
                let row = (y * scale + dy) * out_w;
                for dx in 0..scale {
                    let i = (row + x * scale + dx) * 3;
                    rgb[i..i + 3].copy_from_slice(&bytes);
                }
            }
        }
    }
    let mut png = Vec::new();
    let mut enc = Encoder::new(&mut png, out_w as u32, out_h as u32);
    enc.set_color(ColorType::Rgb);
    enc.set_depth(BitDepth::Eight);
    let mut writer = enc.write_header().ok()?;
    writer.write_image_data(&rgb).ok()?;
    writer.finish().ok()?;
    Some(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_channels_and_scales_up() {
        // 2x1 latents: pixel 0 all zero -> mid grey; pixel 1 channel 3 = 1 -> the 4th row.
        let latents = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let png = preview_png(&latents, [1, 4, 1, 2]).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (128, 64));
        assert_eq!(&buf[..3], &[128, 128, 128]);
        let right = 127 * 3;
        let expect = [-0.184f32, -0.271, -0.473].map(|v| (((v + 1.0) / 2.0) * 255.0).round() as u8);
        assert_eq!(&buf[right..right + 3], &expect);
        assert!(preview_png(&latents, [1, 2, 2, 2]).is_none());
    }
}
