//! `sd-wgpu inpaint`: its flags and its mask; the run is generate.rs's, as txt2img's and
//! img2img's.

use std::path::PathBuf;

use sd_wgpu::pipeline::{Mask, RgbImage, DEFAULT_MASK_BLUR};

use super::generate::{run, CommonArgs, Input};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inpaint: InpaintFlags,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `sd-wgpu inpaint` adds to the common flags.
#[derive(clap::Args)]
pub struct InpaintFlags {
    /// The image to repaint (formats as img2img's).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// The mask, the image's size: white repaints, black keeps (any image: its luminance, or
    /// its alpha where it has transparent pixels, as A1111 reads a painted layer).
    #[arg(long, value_name = "FILE")]
    pub mask: PathBuf,
    /// How much of the schedule runs: 1 repaints the masked area from noise (diffusers'
    /// default); below 1 starts from the image there, as img2img.
    #[arg(long, value_name = "F", default_value_t = 1.0, allow_hyphen_values = true)]
    pub strength: f64,
    /// Gaussian blur radius of the mask in pixels before it is cut at 50% grey (A1111's "Mask
    /// blur", default as A1111's); 0 uses the mask as drawn, as diffusers.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MASK_BLUR)]
    pub mask_blur: usize,
    /// Repaint the black area instead (A1111's "Inpaint not masked").
    #[arg(long)]
    pub invert_mask: bool,
}

pub fn run_inpaint(args: Args) -> anyhow::Result<()> {
    run(args.common, Input::Inpaint(args.inpaint))
}

impl InpaintFlags {
    /// The `--mask` file, blurred and inverted as asked, checked against the `--image` it masks.
    pub fn load_mask(&self, image: &RgbImage) -> anyhow::Result<Mask> {
        let mut mask = Mask::load(&self.mask)?.with_blur(self.mask_blur);
        if self.invert_mask {
            mask = mask.inverted();
        }
        let what = format!("--mask {}", self.mask.display());
        let image_what = format!("--image {}", self.image.display());
        mask.check(&what, (image.width, image.height), &image_what)?;
        Ok(mask)
    }
}
