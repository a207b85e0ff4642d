//! Inpainting masks: white = repaint, black = keep, as diffusers and A1111.
//!
//! A [`Mask`] is one 8-bit channel (`[H, W]` row-major), read from any image:
//! - an image with a transparent area (an alpha channel not all opaque) is a mask painted on a
//!   layer: its alpha is the mask, as A1111 reads such uploads;
//! - otherwise its luminance, computed as PIL's `convert("L")` does (ITU-R 601-2, integer
//!   arithmetic), which is what diffusers' mask processor works on.
//!
//! Before use ([`Mask::prepare`]): the blur (PIL's `GaussianBlur(radius)`, exactly: diffusers'
//! `mask_processor.blur`, and A1111's "Mask blur" of the same radius in pixels), a resize to the
//! output size like the image's (Lanczos), then diffusers' binarisation (`>= 0.5` repaints).

use std::path::Path;

use image::ImageReader;

use super::image_io::check_input_size;
use crate::{Error, Result};

/// A1111's default "Mask blur" (its UI's and API's), in pixels.
pub const DEFAULT_MASK_BLUR: usize = 4;

/// The largest blur radius accepted: far more than any mask needs (A1111's slider stops at 64).
pub const MAX_MASK_BLUR: usize = 256;

/// An inpainting mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    /// `[H, W]` values 0 (keep) to 255 (repaint).
    pub luma: Vec<u8>,
    /// Gaussian blur radius in pixels applied before the mask is binarised (0: none).
    pub blur: usize,
}

/// The mask at the output size, binarised: what the pipeline uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedMask {
    pub width: usize,
    pub height: usize,
    /// `[H, W]`, 1.0 where the image is repainted, else 0.0.
    pub repaint: Vec<f32>,
}

impl Mask {
    /// A mask from `[H, W]` 8-bit values, with [`DEFAULT_MASK_BLUR`].
    pub fn from_luma(width: usize, height: usize, luma: Vec<u8>) -> Result<Mask> {
        let mask = Mask {
            width,
            height,
            luma,
            blur: DEFAULT_MASK_BLUR,
        };
        mask.check_data()?;
        Ok(mask)
    }

    /// The values fill `width` x `height`, at least 8 pixels a side.
    fn check_data(&self) -> Result<()> {
        if self.luma.len() != self.width * self.height || self.width.min(self.height) < 8 {
            return Err(Error::invalid(
                "mask",
                format!(
                    "expected at least 8x8 pixels and one value per pixel, found {}x{} pixels \
                     with {} values",
                    self.width,
                    self.height,
                    self.luma.len()
                ),
            ));
        }
        Ok(())
    }

    /// Reads a mask image (any format the `image` crate decodes), with [`DEFAULT_MASK_BLUR`].
    /// Its size is read from the header and checked as an input image's before decoding.
    pub fn load(path: &Path) -> Result<Mask> {
        let reader = || {
            ImageReader::open(path)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| Error::io(path.display().to_string(), e))
        };
        Mask::decode(reader()?, reader()?, path)
    }

    /// [`Mask::load`] for an image held in memory (an upload); `name` stands for it in messages.
    pub fn from_bytes(bytes: &[u8], name: &Path) -> Result<Mask> {
        let reader = || {
            ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| Error::io(name.display().to_string(), e))
        };
        Mask::decode(reader()?, reader()?, name)
    }

    /// Decodes with `reader` after checking the size `header` gives (two readers of the same
    /// bytes: reading the dimensions consumes one).
    fn decode<R: std::io::BufRead + std::io::Seek>(
        header: ImageReader<R>,
        mut reader: ImageReader<R>,
        path: &Path,
    ) -> Result<Mask> {
        let cannot = |e: image::ImageError| Error::bad_file(path, format!("cannot decode mask image: {e}"));
        let (width, height) = header.into_dimensions().map_err(cannot)?;
        check_input_size(path, width as usize, height as usize)?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(width);
        limits.max_image_height = Some(height);
        reader.limits(limits);
        let img = reader.decode().map_err(cannot)?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let rgba = img.to_rgba8();
        let transparent = img.color().has_alpha() && rgba.pixels().any(|p| p.0[3] != 255);
        let luma = rgba
            .pixels()
            .map(|p| {
                if transparent {
                    p.0[3]
                } else {
                    pil_luma(p.0[0], p.0[1], p.0[2])
                }
            })
            .collect();
        Mask::from_luma(width, height, luma)
    }

    /// The mask with `blur` as its blur radius.
    pub fn with_blur(self, blur: usize) -> Mask {
        Mask { blur, ..self }
    }

    /// A1111's "inpainting_mask_invert": black repaints, white keeps.
    pub fn inverted(self) -> Mask {
        Mask {
            luma: self.luma.iter().map(|v| 255 - v).collect(),
            ..self
        }
    }

    /// Refuses a mask whose size is not the image's (`image` describes it) or whose blur is out
    /// of range; `what` names the mask in the message (a file, a flag, an API field).
    pub fn check(&self, what: &str, image: (usize, usize), image_what: &str) -> Result<()> {
        self.check_data()?;
        if (self.width, self.height) != image {
            return Err(Error::invalid(
                what,
                format!(
                    "the mask is {}x{} pixels but {image_what} is {}x{}: they must be the same size \
                     (the mask is resized with the image)",
                    self.width, self.height, image.0, image.1
                ),
            ));
        }
        if self.blur > MAX_MASK_BLUR {
            return Err(Error::invalid(
                "--mask-blur",
                format!("must be from 0 to {MAX_MASK_BLUR} pixels, found {}", self.blur),
            ));
        }
        Ok(())
    }

    /// Blurred, resized to `width` x `height` (Lanczos, as the image) and binarised at 0.5.
    pub fn prepare(&self, width: usize, height: usize) -> PreparedMask {
        let blurred = gaussian_blur(&self.luma, self.width, self.height, self.blur as f32);
        let values: Vec<f32> = blurred.iter().map(|&v| v as f32 / 255.0).collect();
        let values = if (width, height) == (self.width, self.height) {
            values
        } else {
            let buf = image::ImageBuffer::<image::Luma<f32>, _>::from_raw(
                self.width as u32,
                self.height as u32,
                values,
            )
            .expect("size matches data");
            image::imageops::resize(
                &buf,
                width as u32,
                height as u32,
                image::imageops::FilterType::Lanczos3,
            )
            .into_raw()
        };
        PreparedMask {
            width,
            height,
            repaint: values.iter().map(|&v| if v >= 0.5 { 1.0 } else { 0.0 }).collect(),
        }
    }
}

impl PreparedMask {
    /// Whether no pixel is repainted.
    pub fn is_empty(&self) -> bool {
        self.repaint.iter().all(|&v| v == 0.0)
    }

    /// `[h, w]` at latent resolution, `f` pixels per latent: torch's `interpolate` default
    /// (nearest, the top-left pixel of each `f` x `f` block), as diffusers.
    pub fn to_latent(&self, f: usize) -> Vec<f32> {
        let (h, w) = (self.height / f, self.width / f);
        (0..h)
            .flat_map(|y| (0..w).map(move |x| self.repaint[y * f * self.width + x * f]))
            .collect()
    }

    /// `[3, H, W]` signed pixels with the repainted area set to 0 (mid grey): diffusers'
    /// `masked_image = image * (mask < 0.5)`.
    pub fn mask_out(&self, chw: &[f32]) -> Vec<f32> {
        let hw = self.width * self.height;
        assert_eq!(chw.len(), 3 * hw, "image size");
        chw.iter()
            .enumerate()
            .map(|(i, &v)| if self.repaint[i % hw] >= 0.5 { 0.0 } else { v })
            .collect()
    }
}

/// PIL's RGB -> L: `(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`.
pub fn pil_luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// PIL's `ImageFilter.GaussianBlur(radius)` on an 8-bit channel, value for value: three box
/// blurs with a fractional radius per direction (Pillow's `libImaging/BoxBlur.c`, after
/// Gwosdek et al. 2011), horizontal passes first, then vertical.
pub fn gaussian_blur(src: &[u8], width: usize, height: usize, radius: f32) -> Vec<u8> {
    const PASSES: usize = 3;
    if radius <= 0.0 || width == 0 || height == 0 {
        return src.to_vec();
    }
    let r = box_radius(radius, PASSES);
    let mut img = src.to_vec(); // [H, W]
    for _ in 0..PASSES {
        for row in img.chunks_exact_mut(width) {
            let line = row.to_vec();
            box_blur_line(&line, row, r);
        }
    }
    let mut t = transpose(&img, width, height); // [W, H]
    for _ in 0..PASSES {
        for col in t.chunks_exact_mut(height) {
            let line = col.to_vec();
            box_blur_line(&line, col, r);
        }
    }
    transpose(&t, height, width)
}

/// Pillow's `_gaussian_blur_radius`: the fractional box radius whose `passes` box blurs have
/// the variance of a Gaussian of standard deviation `radius` (f32 as Pillow, `sqrt` in f64).
fn box_radius(radius: f32, passes: usize) -> f32 {
    let sigma2 = radius * radius / passes as f32;
    let big_l = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    let a = a / (6.0 * (sigma2 - (l + 1.0) * (l + 1.0)));
    l + a
}

/// Pillow's `ImagingLineBoxBlur8` with `ImagingHorizontalBoxBlur`'s weights: a box of
/// `2 * int(r) + 1` pixels at weight `ww` plus the two next pixels at weight `fw` (the fractional
/// part), in 8.24 fixed point; edges repeat the first and last pixel.
fn box_blur_line(input: &[u8], out: &mut [u8], float_radius: f32) {
    let n = input.len();
    let radius = float_radius as usize;
    let ww = ((1u32 << 24) as f32 / (float_radius * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (radius as u32 * 2 + 1) * ww) / 2;
    let last = n - 1;
    let edge_a = (radius + 1).min(n);
    let edge_b = n.saturating_sub(radius + 1);
    let px = |i: usize| input[i] as u32;
    // Wrapping u32 arithmetic as Pillow's UINT32 accumulators.
    let mut acc = px(0) * (radius as u32 + 1);
    for x in 0..edge_a.saturating_sub(1) {
        acc = acc.wrapping_add(px(x));
    }
    acc = acc.wrapping_add(px(last).wrapping_mul((radius + 1 - edge_a) as u32));
    let mut emit = |x: usize, acc: &mut u32, sub: usize, add: usize, left: usize, right: usize| {
        *acc = acc.wrapping_add(px(add)).wrapping_sub(px(sub));
        let bulk = acc
            .wrapping_mul(ww)
            .wrapping_add((px(left) + px(right)).wrapping_mul(fw));
        out[x] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
    };
    if edge_a <= edge_b {
        for x in 0..edge_a {
            emit(x, &mut acc, 0, x + radius, 0, x + radius + 1);
        }
        for x in edge_a..edge_b {
            emit(
                x,
                &mut acc,
                x - radius - 1,
                x + radius,
                x - radius - 1,
                x + radius + 1,
            );
        }
        for x in edge_b..=last {
            emit(x, &mut acc, x - radius - 1, last, x - radius - 1, last);
        }
    } else {
        for x in 0..edge_b {
            emit(x, &mut acc, 0, x + radius, 0, x + radius + 1);
        }
        for x in edge_b..edge_a {
            emit(x, &mut acc, 0, last, 0, last);
        }
        for x in edge_a..=last {
            emit(x, &mut acc, x - radius - 1, last, x - radius - 1, last);
        }
    }
}

/// `[rows, cols]` -> `[cols, rows]`.
fn transpose(src: &[u8], cols: usize, rows: usize) -> Vec<u8> {
    let mut out = vec![0; src.len()];
    for y in 0..rows {
        for x in 0..cols {
            out[x * rows + y] = src[y * cols + x];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_as_pil() {
        assert_eq!(pil_luma(255, 255, 255), 255);
        assert_eq!(pil_luma(0, 0, 0), 0);
        // 0.299 * 255 = 76.245; PIL's fixed point gives 76.
        assert_eq!(pil_luma(255, 0, 0), 76);
        assert_eq!(pil_luma(0, 255, 0), 150);
        assert_eq!(pil_luma(0, 0, 255), 29);
    }

    #[test]
    fn binarised_at_half_and_downsampled_nearest() {
        // 16x8: columns 0..8 at 127 (kept), 8..16 at 128 (repainted).
        let luma: Vec<u8> = (0..8 * 16).map(|i| if i % 16 < 8 { 127 } else { 128 }).collect();
        let m = Mask::from_luma(16, 8, luma).unwrap().with_blur(0).prepare(16, 8);
        assert!(!m.is_empty());
        assert_eq!(m.repaint[7], 0.0);
        assert_eq!(m.repaint[8], 1.0);
        assert_eq!(m.to_latent(8), vec![0.0, 1.0]);
        let chw = vec![0.5; 3 * 16 * 8];
        let masked = m.mask_out(&chw);
        assert_eq!((masked[7], masked[8], masked[128 + 8]), (0.5, 0.0, 0.0));
    }

    #[test]
    fn size_and_blur_checked() {
        let m = Mask::from_luma(8, 8, vec![0; 64]).unwrap();
        m.check("--mask", (8, 8), "the image").unwrap();
        let e = Mask::from_luma(8, 8, vec![0; 63]).unwrap_err().to_string();
        assert!(e.contains("8x8") && e.contains("63 values"), "{e}");
        let e = m
            .check("--mask m.png", (16, 8), "--image a.png")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--mask m.png") && e.contains("8x8") && e.contains("16x8"),
            "{e}"
        );
        let e = m
            .with_blur(1000)
            .check("--mask", (8, 8), "the image")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--mask-blur") && e.contains("1000"), "{e}");
    }

    #[test]
    fn inverted_and_empty() {
        let m = Mask::from_luma(8, 8, vec![0; 64]).unwrap().with_blur(0);
        assert!(m.prepare(8, 8).is_empty());
        assert!(!m.inverted().prepare(8, 8).is_empty());
    }
}
