//! `sd-wgpu txt2img`, `sd-wgpu img2img` and `sd-wgpu inpaint`: flags, checks, and the run
//! (inpaint's own flags in inpaint.rs).
//!
//! Order of work, so that mistakes cost nothing: every flag is checked, the
//! prompts read, the output files planned (the folder takes files, the
//! no-overwrite rule) and the inputs (embeddings, image, mask) read before
//! the model is loaded. The model is loaded once for all prompts; each image
//! is written as soon as it is decoded, so Ctrl-C or a crash loses at most
//! the image in progress.
//!
//! `--prompt-file`: each prompt is a request of `--batch` images, and seeds
//! go on across them as in one long batch (A1111's batch count): image `n`
//! of the run, counting over all prompts, has seed `--seed + n`, so any
//! image is reproduced by its own prompt and the seed in its metadata.
//! `--output NAME.png` then names the images `NAME-<n>.png` (unless the run
//! has a single image), which never collide across prompts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use sd_wgpu::lora::{specs_for_prompt, LoraDir};
use sd_wgpu::models::{memory_summary, Tiling};
use sd_wgpu::pipeline::image_io::default_size;
use sd_wgpu::pipeline::output::{encode_png, Naming, Outputs};
use sd_wgpu::pipeline::{
    Generated, LoadOptions, LoraSpec, ModelSource, Pipeline, Request, RgbImage, TextualInversion, Timings,
};
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::Error;

use super::flags::{self, must_exist, DeviceArgs, Seed};
use super::inpaint::InpaintFlags;
use super::interrupt::{self, Interrupted};
use super::progress_bar::Bar;
use super::stdout::Stdout;

/// The flags txt2img, img2img and inpaint share.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// What to draw (or --prompt-file). A1111 syntax: (word:1.2), [word], BREAK; any length.
    #[arg(long, value_name = "TEXT", required_unless_present = "prompt_file")]
    pub prompt: Option<String>,
    /// One prompt per line, each generating --batch images with seeds going on across
    /// them (blank lines and lines starting with # are skipped; - reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
    /// What to avoid (default: none, the encoding of the empty text).
    #[arg(long, value_name = "TEXT", default_value = "", hide_default_value = true)]
    pub negative_prompt: String,
    /// Checkpoint: a diffusers folder or a single .safetensors / .ckpt file (default: the
    /// built-in demo model, 64x64 coloured shapes).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A VAE to use instead of the model's: a diffusers vae/ folder, a standalone VAE
    /// file (.safetensors, .ckpt, .pt; e.g. vae-ft-mse-840000-ema-pruned) or a full
    /// checkpoint whose VAE is taken. Recorded in the PNG as A1111's `VAE` / `VAE hash`.
    #[arg(long, value_name = "PATH")]
    pub vae: Option<PathBuf>,
    /// Sampling steps.
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub steps: usize,
    /// Classifier-free guidance scale, 0 to 100 (A1111's slider stops at 30); 1 disables
    /// guidance and halves the work.
    #[arg(long, value_name = "F", default_value_t = 7.5, allow_hyphen_values = true)]
    pub cfg_scale: f32,
    /// ddim, pndm, euler, euler-a, dpm++2m, dpm++2m-karras, lms or heun, or A1111's names
    /// ("Euler a", "DPM++ 2M Karras"...) in any case; `sd-wgpu samplers` lists them all
    /// (default: the one the model's scheduler config names; PNDM for SD 1.5).
    #[arg(long, value_name = "NAME", value_parser = flags::sampler)]
    pub sampler: Option<SamplerKind>,
    /// Seed of the noise; -1 or none: random, printed. Image i of a batch uses seed + i.
    #[arg(long, value_name = "N", value_parser = flags::seed, allow_negative_numbers = true)]
    pub seed: Option<Seed>,
    /// Image width in pixels, a multiple of 8 (default: the model's native size;
    /// img2img, inpaint: the input's width rounded down to a multiple of 8).
    #[arg(long, value_name = "N")]
    pub width: Option<usize>,
    /// Image height in pixels, a multiple of 8 (defaults as --width).
    #[arg(long, value_name = "N")]
    pub height: Option<usize>,
    /// Number of images, generated one after the other with seeds seed, seed + 1, ...
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: usize,
    /// Textual-inversion embedding file (.pt, .bin, .safetensors); repeat for several.
    #[arg(long = "embedding", value_name = "FILE")]
    pub embeddings: Vec<PathBuf>,
    /// LoRA file (kohya/A1111 or diffusers/PEFT; .safetensors, .pt, .ckpt) merged into the
    /// model at WEIGHT (default 1, negative allowed); repeat for several.
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]", value_parser = flags::lora)]
    pub loras: Vec<LoraSpec>,
    /// Folder of LoRA files that prompt tags <lora:NAME:WEIGHT> name (NAME: file name
    /// without extension, subfolders searched).
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// A1111's "Clip skip": 1 = the text encoder's last layer, 2 = the one before.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub clip_skip: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// VAE tiling: auto (above 768x768 pixels), on or off. The VAE always runs in f32.
    #[arg(long, value_name = "auto|on|off", default_value = "auto", value_parser = flags::tiling)]
    pub vae_tiling: Tiling,
    /// Output PNG (default sd-wgpu-<seed>.png); with several images (--batch, --prompt-file)
    /// NAME-0.png, NAME-1.png, ... counted over the whole run.
    #[arg(long, value_name = "FILE.png")]
    pub output: Option<PathBuf>,
    /// Write the images to DIR as A1111 does: 00001-<seed>.png, numbered on from the
    /// highest NNNNN-*.png there (never replacing a file).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "overwrite"])]
    pub output_dir: Option<PathBuf>,
    /// Replace existing output files (otherwise the run stops before generating).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the device, the model, and a timing breakdown with peak GPU memory.
    #[arg(long)]
    pub verbose: bool,
    /// Print only errors and the written file names.
    #[arg(long, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct Txt2ImgArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args)]
pub struct Img2ImgArgs {
    /// The input image (PNG, JPEG, WebP, BMP, GIF, TIFF); alpha is composited on white.
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// How much to change it: 0 keeps it, 1 redraws it from noise (runs steps x strength
    /// steps). The default is A1111's.
    #[arg(long, value_name = "F", default_value_t = 0.75, allow_hyphen_values = true)]
    pub strength: f64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What a run starts from besides the prompt.
pub(super) enum Input {
    Txt2img,
    Img2img { image: PathBuf, strength: f64 },
    Inpaint(InpaintFlags),
}

impl Input {
    /// The input image and the strength, for img2img and inpainting.
    fn image(&self) -> Option<(&PathBuf, f64)> {
        match self {
            Input::Txt2img => None,
            Input::Img2img { image, strength } => Some((image, *strength)),
            Input::Inpaint(a) => Some((&a.image, a.strength)),
        }
    }
}

pub fn run_txt2img(args: Txt2ImgArgs) -> anyhow::Result<()> {
    run(args.common, Input::Txt2img)
}

pub fn run_img2img(args: Img2ImgArgs) -> anyhow::Result<()> {
    let input = Input::Img2img {
        image: args.image,
        strength: args.strength,
    };
    run(args.common, input)
}

pub(super) fn run(args: CommonArgs, input: Input) -> anyhow::Result<()> {
    let say = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    // 1. Flags, before anything is loaded.
    let (seed, random_seed) = match args.seed {
        Some(Seed::Fixed(s)) => (s, false),
        Some(Seed::Random) | None => (random_seed_u32(), true),
    };
    let mut req = Request {
        prompt: args.prompt.clone().unwrap_or_default(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        cfg_scale: args.cfg_scale,
        sampler: args.sampler,
        seed,
        width: args.width,
        height: args.height,
        batch: args.batch,
        clip_skip: args.clip_skip,
        strength: input.image().map_or(0.75, |(_, s)| s),
        embeddings: Vec::new(),
    };
    match input.image() {
        Some(_) => {
            req.check_img2img()?;
        }
        None => req.check()?,
    }
    let backend = args.device.backend()?;
    let dtype = args.device.dtype;
    let vae_tiling = args.vae_tiling;
    let source = model_source(args.model.as_ref())?;
    if let Some(path) = &args.vae {
        must_exist("--vae", path)?;
    }
    if let Some((path, _)) = input.image() {
        must_exist("--image", path)?;
        check_image_size(&req, path)?;
    }
    if let Input::Inpaint(a) = &input {
        must_exist("--mask", &a.mask)?;
    }
    for path in &args.embeddings {
        must_exist("--embedding", path)?;
    }
    for spec in &args.loras {
        must_exist("--lora", &spec.path)?;
    }
    let lora_dir = match &args.lora_dir {
        Some(dir) => Some(LoraDir::scan(dir, "--lora-dir")?),
        None => None,
    };

    // 2. Outputs and inputs.
    let prompts = match &args.prompt_file {
        Some(path) => read_prompts(path)?,
        None => vec![req.prompt.clone()],
    };
    // Each prompt's LoRAs: --lora, then its <lora:NAME:W> tags found in --lora-dir.
    let lora_sets = prompts
        .iter()
        .map(|p| specs_for_prompt(p, &req.negative_prompt, &args.loras, lora_dir.as_ref()))
        .collect::<sd_wgpu::Result<Vec<_>>>()?;
    let total = prompts.len() * req.batch;
    let seeds: Vec<u64> = (0..total).map(|n| req.seed_of(n)).collect();
    let naming = match (&args.output, &args.output_dir) {
        (Some(file), _) => Naming::File(file.clone()),
        (None, Some(dir)) => Naming::Numbered(dir.clone()),
        (None, None) => Naming::Seed,
    };
    let mut outputs = Outputs::plan(naming, &seeds, args.overwrite)?;
    for path in &args.embeddings {
        req.embeddings.push(TextualInversion::load(path)?);
    }
    let image = match input.image() {
        Some((path, _)) => Some(RgbImage::load(path)?),
        None => None,
    };
    let mask = match (&input, &image) {
        (Input::Inpaint(a), Some(img)) => Some(a.load_mask(img)?),
        _ => None,
    };
    if random_seed {
        say(format!("seed {} (random; pass --seed to repeat)", req.seed));
    }

    // 3. Device and model. Ctrl-C from here on stops at the next step
    // boundary (right after loading when pressed during it).
    let stop = interrupt::install()?;
    let choice = backend.choose()?;
    say(format!("device: {}", choice.describe()));
    let device = choice.device;
    let t = Instant::now();
    let mut pipe = Pipeline::load(
        source,
        &LoadOptions {
            device: device.clone(),
            dtype,
            vae_tiling,
            variant: None,
            loras: lora_sets[0].clone(),
            vae: args.vae.clone(),
        },
    )?;
    let load_secs = t.elapsed().as_secs_f64();
    if args.verbose {
        eprintln!(
            "model: {} ({} {}, default sampler {}, native size {}x{})",
            pipe.model_name(),
            pipe.dtype(),
            if device.is_gpu() {
                "on the GPU"
            } else {
                "on the CPU"
            },
            pipe.default_sampler(),
            pipe.default_size().0,
            pipe.default_size().1
        );
        for w in pipe.notes() {
            eprintln!("note: {w}");
        }
        for ((name, hash), spec) in pipe.lora_hashes().iter().zip(pipe.loras()) {
            eprintln!(
                "lora: {name} ({}, hash {hash}, UNet weight {}, text encoder weight {})",
                spec.path.display(),
                spec.unet_weight,
                spec.text_encoder_weight
            );
        }
    }
    for w in pipe.warnings() {
        say(format!("warning: {w}"));
    }

    // 4. Generation: each image written as soon as it is decoded.
    let mut bar = Bar::new(args.quiet, total, stop);
    let mut stdout = Stdout::new();
    let mut timings = Timings::default();
    let mut written = 0;
    let mut write_time = Duration::ZERO;
    let base_seed = req.seed;
    for (prompt, loras) in prompts.into_iter().zip(&lora_sets) {
        req.prompt = prompt;
        pipe.set_loras(loras)?;
        req.seed = base_seed.wrapping_add(written as u64);
        bar.request_starts_at(written);
        let mut on_image = |out: Generated| -> sd_wgpu::Result<()> {
            let t = Instant::now();
            let png = encode_png(&out.image, &out.info.to_a1111())?;
            let path = outputs.write(written, out.info.seed, &png)?;
            stdout.line(path.display());
            written += 1;
            write_time += t.elapsed();
            Ok(())
        };
        let report = match (&image, &mask) {
            (Some(img), Some(mask)) => pipe.inpaint_each(&req, img, mask, &mut bar, &mut on_image),
            (Some(img), None) => pipe.img2img_each(&req, img, &mut bar, &mut on_image),
            _ => pipe.txt2img_each(&req, &mut bar, &mut on_image),
        };
        match report {
            Ok(r) => add_timings(&mut timings, r.timings),
            Err(Error::Cancelled) => {
                bar.finish();
                return Err(Interrupted { written, total }.into());
            }
            Err(e) => {
                bar.finish();
                return Err(e.into());
            }
        }
    }
    bar.finish();
    stdout
        .finish()
        .map_err(|e| anyhow!("{e} (all {total} images were written)"))?;
    if args.verbose {
        print_timings(load_secs, &timings, write_time.as_secs_f64());
        if let Some(mem) = memory_summary(&device) {
            eprintln!("GPU memory: {mem}");
        }
    }
    Ok(())
}

/// The prompts of `--prompt-file` (`-`: stdin), each checked as `--prompt` is.
fn read_prompts(path: &Path) -> anyhow::Result<Vec<String>> {
    let name = path.display();
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| anyhow!("invalid argument --prompt-file: cannot read {name}: {e}"))?;
    let mut prompts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let prompt = line.trim();
        if prompt.is_empty() || prompt.starts_with('#') {
            continue;
        }
        Request::new(prompt).check().map_err(|e| match e {
            Error::InvalidArgument { msg, .. } => {
                anyhow!("invalid argument --prompt-file: {name} line {}: {msg}", n + 1)
            }
            e => e.into(),
        })?;
        prompts.push(prompt.to_string());
    }
    if prompts.is_empty() {
        return Err(anyhow!(
            "invalid argument --prompt-file: {name} has no prompt (blank lines and lines \
             starting with # are skipped)"
        ));
    }
    Ok(prompts)
}

/// `more`'s times added to `all`'s (a --prompt-file run's requests).
fn add_timings(all: &mut Timings, more: Timings) {
    all.text_encode += more.text_encode;
    all.image_encode += more.image_encode;
    all.steps.extend(more.steps);
    all.decode += more.decode;
}

/// Where the model comes from: `--model`, else the built-in demo model.
fn model_source(model: Option<&PathBuf>) -> anyhow::Result<ModelSource> {
    match model {
        Some(p) => {
            must_exist("--model", p)?;
            Ok(ModelSource::Path(p.clone()))
        }
        None => Ok(ModelSource::demo()),
    }
}

/// img2img without `--width`/`--height` takes the image's size: checked now, from the file's
/// header, so that an unusable size is refused naming the file before the image is decoded or
/// the model loaded (SD 1.x sizes are multiples of 8).
fn check_image_size(req: &Request, path: &Path) -> anyhow::Result<()> {
    let (w, h) = RgbImage::input_dimensions(path)?;
    let from = format!("--image {} ({w}x{h} px)", path.display());
    req.size(default_size(w, h, 8), &from, 8)?;
    Ok(())
}

/// A seed in 0..2^32 from the OS's randomness (A1111's range; torch's
/// generator uses the low 32 bits of any seed anyway).
fn random_seed_u32() -> u64 {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    state.hash_one(std::time::SystemTime::now()) & 0xFFFF_FFFF
}

fn print_timings(load: f64, t: &Timings, write: f64) {
    eprintln!("timings:");
    eprintln!("  load          {load:>8.3} s");
    eprintln!("  text encode   {:>8.3} s", t.text_encode.as_secs_f64());
    if !t.image_encode.is_zero() {
        eprintln!("  image encode  {:>8.3} s", t.image_encode.as_secs_f64());
    }
    let total: f64 = t.steps.iter().map(|d| d.as_secs_f64()).sum();
    eprintln!(
        "  sampling      {total:>8.3} s ({} model calls, {:.3} s each on average)",
        t.steps.len(),
        total / t.steps.len().max(1) as f64
    );
    for (i, d) in t.steps.iter().enumerate() {
        eprintln!("    call {:>3}    {:>8.3} s", i + 1, d.as_secs_f64());
    }
    eprintln!("  decode        {:>8.3} s", t.decode.as_secs_f64());
    eprintln!("  write         {write:>8.3} s");
}
