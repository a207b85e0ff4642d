//! Inpainting: diffusers' `StableDiffusionInpaintPipeline`, step for step, for both kinds of
//! model (tests/inpaint.rs measures how closely).
//!
//! Per image, with the image's own generator (the draw order is diffusers' `prepare_latents`
//! then `prepare_mask_latents`):
//! 1. The image's latents are sampled from its VAE posterior when the model has 4 input
//!    channels or the strength is below 1 (diffusers skips the draw otherwise).
//! 2. The noise: latents = noise x `init_noise_sigma` at strength 1, else the image's latents
//!    noised to the first remaining timestep (img2img's start).
//! 3. The masked image's latents (`image * (mask < 0.5)`, the repainted area mid grey) are
//!    sampled from its posterior. A 4-channel model does not use them, so only the draw is made
//!    (the generator must advance as diffusers' does: Euler a keeps drawing from it).
//! 4. Each model call: a 9-channel UNet sees `[latents, mask, masked-image latents]` along the
//!    channels (4 + 1 + 4), the mask taken at latent size by nearest sampling. A 4-channel UNet
//!    sees the latents only, and after each step the latents outside the mask are replaced by
//!    the image's latents noised to the next call's level (clean after the last call).
//!
//! Letters: Z latent channels, h x w latent size, H x W pixels.

use super::generate::{collect, Generation, OnImage, Report};
use super::image_io::{default_size, RgbImage};
use super::load::Pipeline;
use super::mask::{Mask, PreparedMask};
use super::progress::Progress;
use super::request::Request;
use crate::models::Posterior;
use crate::rng::BatchRng;
use crate::schedulers::Sampler;
use crate::{Device, Error, Result, Tensor};

/// The mask of one request at the output size, and the blur it was made with (for the PNG).
pub(super) struct MaskInput {
    pub prepared: PreparedMask,
    pub blur: usize,
}

/// What the VAE encoder made of one inpainting request's inputs, shared by its images.
pub(super) struct Inpainting {
    /// `[h * w]`: 1 where the image is repainted.
    mask: Vec<f32>,
    /// 9-channel models: the masked image's latent distribution.
    masked: Option<Posterior>,
}

/// One image's inpainting state through its sampling loop.
pub(super) struct InpaintState<'a> {
    mask: &'a [f32],
    /// 9-channel models: `[1, Z, h, w]` sampled latents of the masked image.
    masked_latents: Option<Vec<f32>>,
    /// 4-channel models: the image's clean latents and the noise they are re-noised with.
    blend: Option<(Vec<f32>, Vec<f32>)>,
}

impl Pipeline {
    /// Repaints the white area of `mask` in `image` (diffusers' `StableDiffusionInpaintPipeline`).
    /// The size is `req.width` x `req.height` when given (image and mask resized), else the
    /// image's own rounded down to a multiple of 8; the mask must be the image's size.
    /// `req.strength` as diffusers' `strength`: 1 (its default, and `sd-wgpu inpaint`'s) starts
    /// the repainted area from pure noise; [`Request::default`] has img2img's 0.75.
    pub fn inpaint(
        &self,
        req: &Request,
        image: &RgbImage,
        mask: &Mask,
        progress: &mut dyn Progress,
    ) -> Result<Generation> {
        collect(|on_image| self.inpaint_each(req, image, mask, progress, on_image))
    }

    /// [`Pipeline::inpaint`], handing each image over as [`Pipeline::txt2img_each`] does.
    pub fn inpaint_each(
        &self,
        req: &Request,
        image: &RgbImage,
        mask: &Mask,
        progress: &mut dyn Progress,
        on_image: &mut OnImage,
    ) -> Result<Report> {
        mask.check("mask", (image.width, image.height), "the image")?;
        let size = default_size(image.width, image.height, self.vae_scale());
        let from = format!("the input image ({}x{} px)", image.width, image.height);
        let mut plan = self.plan(req, size, &from, true)?;
        plan.mask_blur = Some(mask.blur);
        let image = image.resized(plan.width, plan.height);
        let mask = MaskInput {
            prepared: mask.prepare(plan.width, plan.height),
            blur: mask.blur,
        };
        self.generate(req, &plan, Some(&image), Some(&mask), progress, on_image)
    }

    /// Whether the UNet is an inpainting UNet (9 input channels: latents, mask, masked image).
    pub fn is_inpainting_model(&self) -> bool {
        self.unet.config().in_channels != self.vae.config().latent_channels
    }

    /// Refuses txt2img and img2img on an inpainting model (its UNet needs a mask and a masked
    /// image, which diffusers' txt2img and img2img pipelines do not give it).
    pub(super) fn check_mode(&self, inpainting: bool) -> Result<()> {
        if self.is_inpainting_model() && !inpainting {
            return Err(Error::Unsupported(format!(
                "{} is an inpainting model (its UNet takes {} input channels: latents, mask and \
                 masked image): it needs an image and a mask (sd-wgpu inpaint --image IMG --mask MASK)",
                self.model_name(),
                self.unet.config().in_channels
            )));
        }
        Ok(())
    }

    /// Encodes what an inpainting request needs: the image's posterior when the latents start
    /// from the image or are blended with it (4 channels, or strength < 1), the masked image's
    /// for a 9-channel model. `image [H, W, 3]` is at the output size.
    pub(super) fn encode_inpainting(
        &self,
        image: &RgbImage,
        mask: &PreparedMask,
        strength: f64,
    ) -> Result<(Option<Posterior>, Inpainting)> {
        let pixels = image.to_chw_signed(); // [3, H, W]
        let shape = [1, 3, image.height, image.width];
        let encode = |chw: Vec<f32>| -> Result<Posterior> {
            let x = Tensor::from_vec(chw, &shape, self.vae.device())?;
            self.vae.encode(&x, self.vae_tiling)
        };
        let concat = self.is_inpainting_model();
        let masked = if concat {
            Some(encode(mask.mask_out(&pixels))?)
        } else {
            None
        };
        let posterior = if !concat || strength < 1.0 {
            Some(encode(pixels)?)
        } else {
            None
        };
        let inpainting = Inpainting {
            mask: mask.to_latent(self.vae_scale()),
            masked,
        };
        Ok((posterior, inpainting))
    }

    /// The warnings an inpainting mask calls for.
    pub(super) fn mask_warnings(mask: &MaskInput) -> Vec<String> {
        if !mask.prepared.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "the mask marks nothing to repaint (white = repaint; all of it is below 50% grey{}): \
             the image will not change{}",
            if mask.blur > 0 {
                format!(" after --mask-blur {}", mask.blur)
            } else {
                String::new()
            },
            if mask.blur > 0 {
                " (a smaller --mask-blur keeps thin strokes)"
            } else {
                ""
            }
        )]
    }
}

impl Inpainting {
    /// The starting latents `[1, Z, h, w]` of one image and its loop state, drawing from `rng` in
    /// diffusers' order (module documentation). `sampler` has already been started at `strength`.
    pub(super) fn start(
        &self,
        sampler: &dyn Sampler,
        posterior: Option<&Posterior>,
        strength: f64,
        shape: &[usize; 4],
        rng: &mut BatchRng,
        device: &Device,
    ) -> Result<(Vec<f32>, InpaintState<'_>)> {
        let n: usize = shape.iter().product();
        let sample = |post: &Posterior, rng: &mut BatchRng| -> Result<Vec<f32>> {
            let noise = Tensor::from_vec(rng.randn(n), shape, device)?;
            post.sample(&noise).to_vec_f32() // [1, Z, h, w]
        };
        let image_latents = match posterior {
            Some(post) => Some(sample(post, rng)?),
            None => None,
        };
        let noise = rng.randn(n);
        let latents = match &image_latents {
            Some(clean) if strength < 1.0 => sampler.add_noise(clean, &noise, 0),
            _ => {
                let sigma = sampler.init_noise_sigma() as f32;
                noise.iter().map(|v| v * sigma).collect()
            }
        };
        let masked_latents = match &self.masked {
            Some(post) => Some(sample(post, rng)?),
            None => {
                rng.randn(n);
                None
            }
        };
        let blend = match masked_latents {
            Some(_) => None,
            None => Some((image_latents.expect("4-channel models encode the image"), noise)),
        };
        let state = InpaintState {
            mask: &self.mask,
            masked_latents,
            blend,
        };
        Ok((latents, state))
    }
}

impl InpaintState<'_> {
    /// The UNet's input `[1, C, h, w]` from the scaled latents `[1, Z, h, w]`: a 9-channel UNet
    /// gets the mask `[1, 1, h, w]` and the masked image's latents appended.
    pub(super) fn model_input(&self, scaled: Vec<f32>) -> Vec<f32> {
        match &self.masked_latents {
            Some(masked) => [scaled.as_slice(), self.mask, masked].concat(),
            None => scaled,
        }
    }

    /// After call `call` of `calls`: a 4-channel model's latents outside the mask become the
    /// image's, noised to the next call's level (clean after the last), diffusers'
    /// `(1 - mask) * init_latents_proper + mask * latents`.
    pub(super) fn blend(
        &self,
        latents: Vec<f32>,
        sampler: &dyn Sampler,
        call: usize,
        calls: usize,
    ) -> Vec<f32> {
        let Some((clean, noise)) = &self.blend else {
            return latents;
        };
        let proper = if call + 1 < calls {
            sampler.add_noise(clean, noise, call + 1)
        } else {
            clean.clone()
        };
        let hw = self.mask.len();
        latents
            .iter()
            .zip(&proper)
            .enumerate()
            .map(|(i, (&x, &p))| {
                let m = self.mask[i % hw];
                (1.0 - m) * p + m * x
            })
            .collect()
    }
}
