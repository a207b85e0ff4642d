//! txt2img and img2img: diffusers' `StableDiffusionPipeline` and
//! `StableDiffusionImg2ImgPipeline`, step for step, so that a seed gives
//! diffusers' image (tests/pipeline_e2e.rs measures how closely). Inpainting
//! runs the same loop with the additions `inpaint.rs` describes.
//!
//! Per image `i` of a batch (images are generated one after the other, each
//! with its own generator seeded `seed + i`, diffusers'
//! `generator=[Generator().manual_seed(seed + i) ...]`):
//! 1. txt2img: latents = `randn([1, C, h, w])` * the sampler's
//!    `init_noise_sigma`.
//!    img2img: the image's posterior is *sampled* with the generator
//!    (`latent_dist.sample(generator)`, diffusers' default `sample_mode`),
//!    scaled by the VAE factor; then the noise for `add_noise` is drawn from
//!    the same generator, and the clean latents are noised to the first
//!    remaining timestep (diffusers' `prepare_latents` order).
//! 2. For each model call: the sampler scales the input; with guidance the
//!    UNet sees `[uncond, cond]` as one batch of 2 and the prediction is
//!    `uncond + s * (cond - uncond)` in f32 (diffusers' arithmetic); without
//!    (scale 1) only the conditional batch of 1 runs. The sampler steps
//!    (ancestral samplers draw their noise from the image's generator).
//!    Latents that become NaN or infinite stop the run with the step named.
//! 3. The VAE decodes the latents in f32; non-finite pixels are an error,
//!    never an image. The image is handed over at once (`*_each`) or kept
//!    for the returned [`Generation`].

use std::time::{Duration, Instant};

use super::conditioning::Conditioning;
use super::image_io::{default_size, RgbImage};
use super::inpaint::{InpaintState, Inpainting, MaskInput};
use super::load::Pipeline;
use super::params::GenerationInfo;
use super::progress::{Control, Progress, Stage, Step};
use super::request::Request;
use crate::models::Posterior;
use crate::rng::BatchRng;
use crate::schedulers::{Img2ImgStart, SamplerKind};
use crate::{DType, Error, Result, Tensor};

/// Requested pixels over the model's native pixels above which a warning says
/// the composition will suffer.
const MAX_NATIVE_RATIO: f64 = 2.0;

/// One generated image and the parameters that reproduce it.
pub struct Generated {
    pub image: RgbImage,
    pub info: GenerationInfo,
}

/// Where the time went (wall clock, device synchronised at each boundary).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub text_encode: Duration,
    /// img2img: the VAE encoder.
    pub image_encode: Duration,
    /// Every model call of every image, in order.
    pub steps: Vec<Duration>,
    /// The VAE decoder, all images.
    pub decode: Duration,
}

pub struct Generation {
    pub images: Vec<Generated>,
    pub timings: Timings,
    /// Things the user should know (e.g. a strength that kept no step).
    pub warnings: Vec<String>,
}

/// What a generation that handed its images over one by one returns.
pub struct Report {
    pub timings: Timings,
    /// As [`Generation::warnings`]; each was also given to [`Progress::warning`].
    pub warnings: Vec<String>,
}

/// Receives each image as soon as it is decoded; an error stops the generation.
pub type OnImage<'a> = dyn FnMut(Generated) -> Result<()> + 'a;

/// One request's inputs, prepared once for all its images.
struct Job<'a> {
    req: &'a Request,
    plan: &'a Plan,
    cond: Conditioning,
    /// img2img: the input image's latent distribution.
    posterior: Option<Posterior>,
    inpainting: Option<Inpainting>,
}

/// The resolved settings of one request.
pub(super) struct Plan {
    sampler: SamplerKind,
    pub width: usize,
    pub height: usize,
    /// img2img: the strength and what it leaves of the schedule.
    start: Option<(f64, Img2ImgStart)>,
    /// Inpainting: the mask's blur radius (A1111's "Mask blur").
    pub mask_blur: Option<usize>,
}

impl Pipeline {
    /// Generates `req.batch` images from the prompt.
    pub fn txt2img(&self, req: &Request, progress: &mut dyn Progress) -> Result<Generation> {
        collect(|on_image| self.txt2img_each(req, progress, on_image))
    }

    /// [`Pipeline::txt2img`], handing each image to `on_image` as soon as it
    /// is decoded and keeping none: memory stays flat for any batch, and
    /// the images handed over before a cancel or an error are the caller's.
    pub fn txt2img_each(
        &self,
        req: &Request,
        progress: &mut dyn Progress,
        on_image: &mut OnImage,
    ) -> Result<Report> {
        let plan = self.plan(req, self.default_size(), "the model's native size", false)?;
        self.generate(req, &plan, None, None, progress, on_image)
    }

    /// Transforms `image`: resized to `req.width` x `req.height` when given
    /// (Lanczos), else its own size rounded down to a multiple of 8.
    pub fn img2img(
        &self,
        req: &Request,
        image: &RgbImage,
        progress: &mut dyn Progress,
    ) -> Result<Generation> {
        collect(|on_image| self.img2img_each(req, image, progress, on_image))
    }

    /// [`Pipeline::img2img`], handing each image over as [`Pipeline::txt2img_each`] does.
    pub fn img2img_each(
        &self,
        req: &Request,
        image: &RgbImage,
        progress: &mut dyn Progress,
        on_image: &mut OnImage,
    ) -> Result<Report> {
        let size = default_size(image.width, image.height, self.vae_scale());
        let from = format!("the input image ({}x{} px)", image.width, image.height);
        let plan = self.plan(req, size, &from, true)?;
        let image = image.resized(plan.width, plan.height);
        self.generate(req, &plan, Some(&image), None, progress, on_image)
    }

    /// Every check that needs the model, before any work. The image size is `req`'s, else
    /// `default_size`, described by `default_from` in errors.
    pub(super) fn plan(
        &self,
        req: &Request,
        default_size: (usize, usize),
        default_from: &str,
        img2img: bool,
    ) -> Result<Plan> {
        let strength = if img2img {
            req.check_img2img()?;
            Some(req.strength)
        } else {
            req.check()?;
            None
        };
        let (width, height) = req.size(default_size, default_from, self.vae_scale())?;
        self.check_lora_tags(req)?;
        for ti in &req.embeddings {
            ti.check_width(self.text_encoder.config().hidden_size)?;
        }
        let layers = self.text_encoder.config().num_hidden_layers;
        if req.clip_skip > layers {
            return Err(Error::invalid(
                "--clip-skip",
                format!(
                    "the text encoder has {layers} layers, so at most {layers}; found {}",
                    req.clip_skip
                ),
            ));
        }
        let sampler = req.sampler.unwrap_or(self.default_sampler);
        // Builds once to check the step count against the schedule, and to learn what the strength
        // leaves of this sampler's calls (PNDM's last call survives a strength that keeps no step).
        let mut built = sampler.build(&self.scheduler, req.steps).map_err(|e| match e {
            Error::InvalidArgument { name, msg } if name == "steps" => Error::invalid("--steps", msg),
            e => e,
        })?;
        let start = strength
            .map(|s| built.start_at_strength(s).map(|start| (s, start)))
            .transpose()?;
        Ok(Plan {
            sampler,
            width,
            height,
            start,
            mask_blur: None,
        })
    }

    /// Runs a planned request: txt2img without `image`, img2img with it, inpainting with
    /// `image` and `mask` (both at the planned size).
    pub(super) fn generate(
        &self,
        req: &Request,
        plan: &Plan,
        image: Option<&RgbImage>,
        mask: Option<&MaskInput>,
        progress: &mut dyn Progress,
        on_image: &mut OnImage,
    ) -> Result<Report> {
        self.check_mode(mask.is_some())?;
        let mut timings = Timings::default();
        let mut warnings = self.warnings_for(req, plan);
        warnings.extend(mask.map(Pipeline::mask_warnings).unwrap_or_default());
        warnings.extend(self.unused_embedding_warnings(req)?);
        for w in &warnings {
            progress.warning(w);
        }

        check_cancel(progress)?;
        progress.stage(Stage::EncodingPrompt);
        let t = Instant::now();
        let cond = self.condition(req)?;
        self.device().sync()?;
        timings.text_encode = t.elapsed();

        let (posterior, inpainting) = match image {
            Some(img) => {
                check_cancel(progress)?;
                progress.stage(Stage::EncodingImage);
                let t = Instant::now();
                let encoded = match (mask, plan.start) {
                    (Some(mask), Some((strength, _))) => {
                        let (p, inpainting) = self.encode_inpainting(img, &mask.prepared, strength)?;
                        (p, Some(inpainting))
                    }
                    _ => {
                        let shape = [1, 3, img.height, img.width];
                        let pixels = Tensor::from_vec(img.to_chw_signed(), &shape, self.device())?;
                        (Some(self.vae.encode(&pixels, self.vae_tiling)?), None)
                        // [1, Z, h, w] each
                    }
                };
                timings.image_encode = t.elapsed();
                encoded
            }
            None => (None, None),
        };

        let job = Job {
            req,
            plan,
            cond,
            posterior,
            inpainting,
        };
        let model_hash = self.model_hash();
        let vae_hash = self.vae_hash();
        for i in 0..req.batch {
            check_cancel(progress)?;
            progress.stage(Stage::Sampling { image: i });
            let latents = self.sample(&job, i, progress, &mut timings)?;
            check_cancel(progress)?;
            progress.stage(Stage::Decoding { image: i });
            let t = Instant::now();
            let image = self.decode(&latents, plan).map_err(|e| match e {
                Error::NonFinite(what) => {
                    Error::NonFinite(format!("{what} (image {i}, seed {})", req.seed_of(i)))
                }
                e => e,
            })?;
            timings.decode += t.elapsed();
            on_image(Generated {
                image,
                info: self.info(req, plan, i, model_hash.clone(), vae_hash.clone()),
            })?;
        }
        Ok(Report { timings, warnings })
    }

    /// What the user should know about a request before it runs.
    fn warnings_for(&self, req: &Request, plan: &Plan) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some((strength, _)) = plan.start.filter(|(_, s)| s.raised_to_one) {
            warnings.push(format!(
                "--strength {strength} keeps no step of {} (int({} x {strength}) = 0): running 1 step \
                 (diffusers would run no model call)",
                req.steps, req.steps
            ));
        }
        // SD 1.x learned its compositions at its native size; far above it the
        // subject repeats (two heads, a crowd of the same figure).
        let (nw, nh) = self.default_size();
        let ratio = (plan.width * plan.height) as f64 / (nw * nh) as f64;
        if ratio > MAX_NATIVE_RATIO {
            warnings.push(format!(
                "{}x{} is {ratio:.1}x the pixels of the model's native {nw}x{nh}: expect duplicated \
                 subjects; generate near {nw}x{nh} and upscale (e.g. img2img on a resized image)",
                plan.width, plan.height
            ));
        }
        warnings
    }

    /// The denoised latents `[1, Z, h, w]` of image `i`.
    fn sample(
        &self,
        job: &Job,
        i: usize,
        progress: &mut dyn Progress,
        timings: &mut Timings,
    ) -> Result<Vec<f32>> {
        let (req, plan) = (job.req, job.plan);
        let f = self.vae_scale();
        let z = self.vae.config().latent_channels;
        let shape = [1, z, plan.height / f, plan.width / f];
        // The UNet's input: the latents, and for an inpainting UNet the mask and masked image.
        let unet_shape = [1, self.unet.config().in_channels, shape[2], shape[3]];
        let n: usize = shape.iter().product();
        let mut sampler = plan.sampler.build(&self.scheduler, req.steps)?;
        let mut rng = BatchRng::new(req.seed_of(i), 1);
        let mut inpaint: Option<InpaintState> = None;
        let mut latents = match (&job.inpainting, &job.posterior, plan.start) {
            (Some(inpainting), post, Some((strength, _))) => {
                sampler.start_at_strength(strength)?;
                let device = self.vae.device();
                let (latents, state) =
                    inpainting.start(&*sampler, post.as_ref(), strength, &shape, &mut rng, device)?;
                inpaint = Some(state);
                latents
            }
            (None, Some(post), Some((strength, _))) => {
                sampler.start_at_strength(strength)?;
                let sample_noise = Tensor::from_vec(rng.randn(n), &shape, self.vae.device())?;
                let clean = post.sample(&sample_noise).to_vec_f32()?; // [1, Z, h, w]
                let noise = rng.randn(n);
                sampler.add_noise(&clean, &noise, 0)
            }
            _ => {
                let sigma = sampler.init_noise_sigma() as f32;
                rng.randn(n).into_iter().map(|v| v * sigma).collect()
            }
        };

        let calls = sampler.timesteps().len();
        for call in 0..calls {
            let t = Instant::now();
            let timestep = sampler.timesteps()[call];
            let mut input = sampler.scale_model_input(&latents, call);
            if let Some(state) = &inpaint {
                input = state.model_input(input);
            }
            let eps = self.predict_noise(&input, &unet_shape, timestep, &job.cond, req.cfg_scale)?;
            latents = sampler.step(&eps, call, &latents, &mut rng);
            if let Some(state) = &inpaint {
                latents = state.blend(latents, &*sampler, call, calls);
            }
            if let Some(bad) = latents.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "latents after model call {} of {calls} (image {i}, seed {}; first at {bad}){}",
                    call + 1,
                    req.seed_of(i),
                    if self.dtype() == DType::F16 {
                        ": the UNet may have overflowed f16, try --dtype f32"
                    } else {
                        ""
                    }
                )));
            }
            let elapsed = t.elapsed();
            timings.steps.push(elapsed);
            let step = Step {
                image: i,
                images: req.batch,
                call,
                calls,
                timestep,
                latents: &latents,
                latent_shape: shape,
                elapsed,
            };
            if progress.step(&step) == Control::Stop {
                return Err(Error::Cancelled);
            }
        }
        Ok(latents)
    }

    /// The guided noise prediction `[1, Z, h, w]` for `input [1, C, h, w]` at `timestep` (C = Z,
    /// or an inpainting UNet's 2 Z + 1).
    fn predict_noise(
        &self,
        input: &[f32],
        shape: &[usize; 4],
        timestep: f64,
        cond: &Conditioning,
        cfg_scale: f32,
    ) -> Result<Vec<f32>> {
        let t = [timestep as f32];
        if !cond.guided {
            let x = Tensor::from_vec(input.to_vec(), shape, self.device())?;
            return self.unet.forward(&x, &t, &cond.context)?.to_vec_f32();
        }
        let [_, c, h, w] = *shape;
        let mut both = Vec::with_capacity(2 * input.len());
        both.extend_from_slice(input);
        both.extend_from_slice(input);
        let x = Tensor::from_vec(both, &[2, c, h, w], self.device())?; // [2, C, h, w]
        let out = self.unet.forward(&x, &t, &cond.context)?.to_vec_f32()?; // [2, Z, h, w]
        let (uncond, text) = out.split_at(out.len() / 2);
        Ok(uncond
            .iter()
            .zip(text)
            .map(|(&u, &c)| u + cfg_scale * (c - u))
            .collect())
    }

    /// Latents `[1, Z, h, w]` -> the image, through the f32 VAE.
    fn decode(&self, latents: &[f32], plan: &Plan) -> Result<RgbImage> {
        let f = self.vae_scale();
        let z = self.vae.config().latent_channels;
        let shape = [1, z, plan.height / f, plan.width / f];
        let x = Tensor::from_vec(latents.to_vec(), &shape, self.vae.device())?;
        let pixels = self.vae.decode(&x, self.vae_tiling)?; // [1, 3, H, W] on the host
        Ok(RgbImage::from_chw_signed(
            &pixels.to_vec_f32()?,
            plan.width,
            plan.height,
        ))
    }

    fn info(
        &self,
        req: &Request,
        plan: &Plan,
        i: usize,
        model_hash: Option<String>,
        vae_hash: Option<String>,
    ) -> GenerationInfo {
        GenerationInfo {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            sampler: plan.sampler.name().to_string(),
            cfg_scale: req.cfg_scale,
            seed: req.seed_of(i),
            width: plan.width,
            height: plan.height,
            model_hash,
            model_name: self.model_name().to_string(),
            vae_name: self.vae_name().map(str::to_string),
            vae_hash,
            clip_skip: req.clip_skip,
            denoising_strength: plan.start.map(|(s, _)| s as f32),
            mask_blur: plan.mask_blur,
            inpainting_conditioning: self.is_inpainting_model(),
            embeddings: self.used_embedding_hashes(req),
            loras: self.lora_hashes(),
        }
    }
}

/// Runs a generation that hands images over, keeping them all.
pub(super) fn collect(run: impl FnOnce(&mut OnImage) -> Result<Report>) -> Result<Generation> {
    let mut images = Vec::new();
    let report = run(&mut |g| {
        images.push(g);
        Ok(())
    })?;
    Ok(Generation {
        images,
        timings: report.timings,
        warnings: report.warnings,
    })
}

fn check_cancel(progress: &dyn Progress) -> Result<()> {
    if progress.cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}
