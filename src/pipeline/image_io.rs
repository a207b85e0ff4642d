//! Images in and out of the pipeline.
//!
//! Input (img2img): anything the `image` crate decodes, at least 8 pixels on a
//! side and at most 50 megapixels (checked from the header before decoding). 16-bit, grayscale
//! and palette images are converted to RGB; an alpha channel is composited
//! on white (what a user sees in a viewer), never silently dropped.
//! Output: the decoder's [-1, 1] values mapped as diffusers does,
//! `round(clamp(x / 2 + 0.5, 0, 1) * 255)`.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::path::Path;

use image::ImageReader;

use crate::{Error, Result};

/// The smallest input side: one latent pixel is 8 image pixels (the VAE's scale).
pub const MIN_INPUT_SIDE: usize = 8;

/// The largest input, in pixels: more than any camera photo a user would redraw
/// (it is scaled to the output size anyway), while a 10000 x 10000 image, which
/// would take 1.6 GB once decoded to f32, is refused before decoding.
pub const MAX_INPUT_PIXELS: usize = 50_000_000;

/// Refuses an input image (named by `path`) smaller than [`MIN_INPUT_SIDE`] on a
/// side or larger than [`MAX_INPUT_PIXELS`]: an img2img image is never silently
/// scaled up from a few pixels, and never decoded when it would cost gigabytes.
pub fn check_input_size(path: &Path, width: usize, height: usize) -> Result<()> {
    let side = width.min(height);
    if side < MIN_INPUT_SIDE {
        return Err(Error::bad_file(
            path,
            format!(
                "image is {width}x{height} pixels; img2img needs at least {MIN_INPUT_SIDE} on each \
                 side (one latent pixel is {MIN_INPUT_SIDE} image pixels)"
            ),
        ));
    }
    if width.saturating_mul(height) > MAX_INPUT_PIXELS {
        return Err(Error::bad_file(
            path,
            format!(
                "image is {width}x{height} pixels, more than the {} megapixel input limit: \
                 scale it down first",
                MAX_INPUT_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

/// An RGB image, values in [0, 1], row-major `[H, W, 3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl RgbImage {
    /// The size of an img2img input image, read from the file's header and
    /// checked (see [`check_input_size`]); no pixel is decoded.
    pub fn input_dimensions(path: &Path) -> Result<(usize, usize)> {
        let (width, height) = open_reader(path)?
            .into_dimensions()
            .map_err(|e| cannot_decode(path, e))?;
        check_input_size(path, width as usize, height as usize)?;
        Ok((width as usize, height as usize))
    }

    /// Decodes an img2img input image; alpha is composited on white. The size is
    /// read from the file's header and checked (see [`check_input_size`]) before
    /// any pixel is decoded, and the decoder is held to that size.
    pub fn load(path: &Path) -> Result<RgbImage> {
        let (width, height) = RgbImage::input_dimensions(path)?;
        decode_limited(open_reader(path)?, path, width, height)
    }

    /// [`RgbImage::load`] for an image held in memory (an upload); `name` stands for
    /// the file in messages.
    pub fn from_bytes(bytes: &[u8], name: &Path) -> Result<RgbImage> {
        let reader = || {
            ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| Error::io(name.display().to_string(), e))
        };
        let (width, height) = reader()?.into_dimensions().map_err(|e| cannot_decode(name, e))?;
        check_input_size(name, width as usize, height as usize)?;
        decode_limited(reader()?, name, width as usize, height as usize)
    }

    /// Resized with a Lanczos3 filter (diffusers resizes with PIL's Lanczos).
    pub fn resized(&self, width: usize, height: usize) -> RgbImage {
        if width == self.width && height == self.height {
            return self.clone();
        }
        let buf = image::Rgb32FImage::from_raw(self.width as u32, self.height as u32, self.data.clone())
            .expect("size matches data");
        let out = image::imageops::resize(
            &buf,
            width as u32,
            height as u32,
            image::imageops::FilterType::Lanczos3,
        );
        RgbImage {
            width,
            height,
            data: out.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect(),
        }
    }

    /// `[3, H, W]` values in [-1, 1], the VAE encoder's input.
    pub fn to_chw_signed(&self) -> Vec<f32> {
        let hw = self.width * self.height;
        let mut out = vec![0.0; 3 * hw];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * hw + i] = px[c] * 2.0 - 1.0;
            }
        }
        out
    }

    /// From the decoder's `[3, H, W]` output in [-1, 1].
    pub fn from_chw_signed(chw: &[f32], width: usize, height: usize) -> RgbImage {
        let hw = width * height;
        assert_eq!(chw.len(), 3 * hw);
        let data = (0..hw)
            .flat_map(|i| (0..3).map(move |c| (chw[c * hw + i] / 2.0 + 0.5).clamp(0.0, 1.0)))
            .collect();
        RgbImage { width, height, data }
    }

    /// 8-bit RGB bytes, rounded as diffusers' `numpy_to_pil` (numpy rounds
    /// halves to even).
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)
            .collect()
    }
}

/// The size img2img works at when none is given: the input's size rounded
/// down to a multiple of `multiple` (8 for SD), as diffusers does.
pub fn default_size(width: usize, height: usize, multiple: usize) -> (usize, usize) {
    (
        (width / multiple * multiple).max(multiple),
        (height / multiple * multiple).max(multiple),
    )
}

/// The image file's reader, its format guessed from the content.
fn open_reader(path: &Path) -> Result<ImageReader<BufReader<File>>> {
    ImageReader::open(path)
        .map_err(|e| Error::io(path.display().to_string(), e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path.display().to_string(), e))
}

/// Decodes an image whose header said `width` x `height`, holding the decoder to that size;
/// alpha is composited on white.
fn decode_limited<R: BufRead + Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
    width: usize,
    height: usize,
) -> Result<RgbImage> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width as u32);
    limits.max_image_height = Some(height as u32);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| cannot_decode(path, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let rgba = img.to_rgba32f();
    let data = rgba
        .pixels()
        .flat_map(|p| {
            let a = p.0[3].clamp(0.0, 1.0);
            (0..3).map(move |c| p.0[c].clamp(0.0, 1.0) * a + (1.0 - a))
        })
        .collect();
    Ok(RgbImage { width, height, data })
}

fn cannot_decode(path: &Path, e: image::ImageError) -> Error {
    Error::bad_file(path, format!("cannot decode image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_round_trip_and_rounding() {
        let img = RgbImage {
            width: 2,
            height: 1,
            data: vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.0625],
        };
        let chw = img.to_chw_signed();
        assert_eq!(chw, vec![-1.0, -0.5, 0.0, 0.5, 1.0, -0.875]);
        let back = RgbImage::from_chw_signed(&chw, 2, 1);
        for (a, b) in back.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-6);
        }
        // 127.5 -> 128 (half to even), 63.75 -> 64, 191.25 -> 191, 15.9375 -> 16.
        assert_eq!(back.to_rgb8(), vec![0, 128, 255, 64, 191, 16]);
    }

    #[test]
    fn rounds_size_down_to_multiple() {
        assert_eq!(default_size(517, 300, 8), (512, 296));
        assert_eq!(default_size(5, 5, 8), (8, 8));
    }

    #[test]
    fn alpha_composited_on_white() {
        let dir = std::env::temp_dir().join(format!("sdw-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.png");
        // 8x8: an opaque red pixel, then fully transparent black ones.
        let mut rgba = vec![0u8; 8 * 8 * 4];
        rgba[..4].copy_from_slice(&[255, 0, 0, 255]);
        image::RgbaImage::from_raw(8, 8, rgba).unwrap().save(&p).unwrap();
        let img = RgbImage::load(&p).unwrap();
        assert_eq!((img.width, img.height), (8, 8));
        assert_eq!(img.data[..6], [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let gray16 = dir.join("g.png");
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(8, 8, vec![65535u16; 64])
            .unwrap()
            .save(&gray16)
            .unwrap();
        assert_eq!(RgbImage::load(&gray16).unwrap().data, vec![1.0; 8 * 8 * 3]);
        let bad = dir.join("bad.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let e = RgbImage::load(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.png") && e.contains("decode"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_sizes_it_cannot_use() {
        let dir = std::env::temp_dir().join(format!("sdw-img-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (w, h) in [(1, 1), (7, 7), (512, 7)] {
            let p = dir.join(format!("small-{w}x{h}.png"));
            image::RgbImage::new(w, h).save(&p).unwrap();
            let e = RgbImage::load(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("small-{w}x{h}.png")) && e.contains(&format!("{w}x{h} pixels")),
                "{e}"
            );
            assert!(e.contains("at least 8"), "{e}");
        }
        let e = check_input_size(Path::new("big.png"), 10_000, 5_001)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.png") && e.contains("10000x5001") && e.contains("50 megapixel"),
            "{e}"
        );
        assert!(check_input_size(Path::new("ok.png"), 10_000, 5_000).is_ok());
        assert!(check_input_size(Path::new("ok.png"), 8, 8).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
