//! Full-size SD 1.5 comparison, our side. Loads the random-weight model
//! written by `tools/compare_full_size.py` through the pipeline's loading path
//! (`sd_wgpu::checkpoint::open`: the diffusers folder, or with `--checkpoint`
//! the single file under LDM names) and compares each component with the
//! reference's goldens: max abs error, relative error (max abs error over
//! max |reference|, the metric of tests/models.rs, judged against the same
//! tolerances), NMSE and time. Exits with an error when a row fails.
//!
//!     cargo run --release --example compare_full_size -- /tmp/sd15-random --backend cpu --sizes 256
//!     cargo run --release --example compare_full_size -- /tmp/sd15-random \
//!         --checkpoint /tmp/sd15-random/sd15-random-ldm.safetensors
//!     cargo run --release --example compare_full_size -- /tmp/sd15-random \
//!         --lora /tmp/sd15-random/sd15-random-lora.safetensors:0.7
//!
//! With `--lora`, the text encoder and UNet load with the LoRA merged (as
//! `Pipeline::load` merges it) and are compared with `golden_lora_<size>`,
//! the reference's outputs after diffusers' `fuse_lora`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use sd_wgpu::checkpoint::{self, SafetensorsFile};
use sd_wgpu::lora::{LoraSet, Part};
use sd_wgpu::models::{memory_summary, ClipTextModel, Tiling, UNet, Vae};
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{Backend, DType, Device, Tensor};

/// Relative-error tolerances, those of tests/models.rs: f32 on both sides
/// differs only in summation order; f16 storage rounds every activation.
const F32_TOL: f64 = 1e-4;
const F16_TOL: f64 = 2e-2;

#[derive(Parser)]
struct Args {
    /// Folder written by tools/compare_full_size.py (goldens, diffusers layout).
    dir: PathBuf,
    /// Load the model from this file or folder instead of `dir` (e.g. the
    /// script's `sd15-random-ldm.safetensors`, written with `--single-file`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A LoRA to merge, FILE[:WEIGHT] (the script's `--lora` file, at its weight 0.7).
    #[arg(long, value_parser = sd_wgpu::lora::parse_lora_arg)]
    lora: Option<sd_wgpu::lora::LoraSpec>,
    /// cpu, gpu or auto.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Storage type of the text encoder and UNet (the VAE always runs in f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Image sizes whose goldens to check.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    sizes: Vec<usize>,
    /// Components: clip, unet, vae-decode, vae-encode (vae: both).
    #[arg(long, value_delimiter = ',', default_value = "clip,unet,vae")]
    components: Vec<String>,
}

struct Golden(SafetensorsFile);

impl Golden {
    fn values(&self, key: &str) -> anyhow::Result<Vec<f32>> {
        Ok(self.0.read(key, DType::F32)?.to_f32().into_owned())
    }

    fn shape(&self, key: &str) -> anyhow::Result<Vec<usize>> {
        Ok(self
            .0
            .info(key)
            .with_context(|| format!("golden has no {key}"))?
            .shape)
    }

    fn tensor(&self, key: &str, device: &Device) -> anyhow::Result<Tensor> {
        Ok(Tensor::from_vec(self.values(key)?, &self.shape(key)?, device)?)
    }

    /// Prints the errors of `ours` against the golden `key` and whether the
    /// relative error is within `tol`; returns that verdict.
    fn compare(&self, what: &str, ours: &Tensor, key: &str, tol: f64, secs: f64) -> anyhow::Result<bool> {
        let shape = self.shape(key)?;
        anyhow::ensure!(
            ours.shape() == &shape[..],
            "{what}: shape {:?}, reference {shape:?}",
            ours.shape()
        );
        let a = ours.to_vec_f32()?;
        let r = self.values(key)?;
        let max_ref = r.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let max_err = a
            .iter()
            .zip(&r)
            .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
        let (num, den) = a.iter().zip(&r).fold((0.0, 0.0), |(n, d): (f64, f64), (&x, &y)| {
            (n + (x as f64 - y as f64).powi(2), d + (y as f64).powi(2))
        });
        // NaN compares false, so a non-finite output fails.
        let pass = max_err / max_ref <= tol;
        println!(
            "  {what:<20} max abs err {max_err:.3e}  max |ref| {max_ref:8.3}  rel {:.3e}  nmse {:.3e}  \
             tol {tol:.0e} {}  ({secs:.1} s)",
            max_err / max_ref,
            num / den,
            if pass { "pass" } else { "FAIL" }
        );
        Ok(pass)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = args.backend.parse::<Backend>()?.open()?;
    let dtype: DType = args.dtype.parse()?;
    let tol = if dtype == DType::F16 { F16_TOL } else { F32_TOL };
    let known = ["clip", "unet", "vae", "vae-decode", "vae-encode"];
    if let Some(c) = args.components.iter().find(|c| !known.contains(&c.as_str())) {
        anyhow::bail!(
            "--components: unknown {c:?}, expected some of {}",
            known.join(", ")
        );
    }
    let wants = |c: &str| {
        args.components
            .iter()
            .any(|x| x == c || (x == "vae" && c.starts_with("vae-")))
    };
    let model_path = args.checkpoint.as_ref().unwrap_or(&args.dir);
    let ck = checkpoint::open(model_path)?;
    println!(
        "model: {} ({}, {}); device: {}; text encoder and UNet in {dtype}, VAE in f32",
        model_path.display(),
        ck.layout,
        ck.detection.family,
        device.describe()
    );
    for w in &ck.warnings {
        println!("  note: {w}");
    }
    let specs: Vec<_> = args.lora.iter().cloned().collect();
    let loras = LoraSet::open(ck.unet.weights.clone(), ck.text_encoder.weights.clone(), &specs)?;
    let golden = if specs.is_empty() { "golden" } else { "golden_lora" };

    let clip = if wants("clip") {
        let c = &ck.text_encoder;
        Some(ClipTextModel::load(
            loras.source(Part::TextEncoder),
            &c.config,
            &device,
            dtype,
        )?)
    } else {
        None
    };
    let unet = if wants("unet") {
        Some(UNet::load(
            loras.source(Part::Unet),
            &ck.unet.config,
            &device,
            dtype,
        )?)
    } else {
        None
    };
    let vae = if wants("vae-decode") || wants("vae-encode") {
        Some(Vae::load(
            ck.vae.weights.clone(),
            &ck.vae.config,
            &device,
            DType::F32,
        )?)
    } else {
        None
    };
    device.sync()?;

    let mut failed = Vec::new();
    for &size in &args.sizes {
        let g = Golden(SafetensorsFile::open(
            args.dir.join(format!("{golden}_{size}.safetensors")),
        )?);
        println!("{size}x{size}:");
        let mut row = |what: &str, ours: &Tensor, key: &str, tol: f64, secs: f64| -> anyhow::Result<()> {
            if !g.compare(what, ours, key, tol, secs)? {
                failed.push(format!("{what} at {size}x{size}"));
            }
            Ok(())
        };
        if let Some(clip) = &clip {
            let ids: Vec<u32> = g.values("ids")?.iter().map(|&x| x as u32).collect();
            let encode = |skip: usize| -> anyhow::Result<Tensor> {
                // One 77-token chunk at a time, as the pipeline encodes: [1, 77, 768] each.
                let chunks: Vec<Tensor> = ids
                    .chunks(77)
                    .map(|c| clip.forward(c, &[], skip))
                    .collect::<Result<_, _>>()?;
                Ok(Tensor::cat(&chunks.iter().collect::<Vec<_>>(), 0)) // [2, 77, 768]
            };
            let t = Instant::now();
            let last = encode(1)?;
            device.sync()?;
            let secs = t.elapsed().as_secs_f64();
            row("text encoder", &last, "clip_last", tol, secs)?;
            row("text encoder skip 2", &encode(2)?, "clip_skip2", tol, 0.0)?;
        }
        if let Some(unet) = &unet {
            let latents = g.tensor("unet_latents", &device)?; // [2, 4, s/8, s/8]
            let context = g.tensor("unet_context", &device)?; // [2, 77, 768]
            let t = Instant::now();
            let noise = unet.forward(&latents, &g.values("unet_timestep")?, &context)?;
            device.sync()?;
            row(
                "UNet (batch 2)",
                &noise,
                "unet_noise",
                tol,
                t.elapsed().as_secs_f64(),
            )?;
        }
        if let Some(vae) = vae.as_ref().filter(|_| wants("vae-decode")) {
            let latents = g.tensor("vae_latents", &device)?; // [1, 4, s/8, s/8]
            let t = Instant::now();
            let image = vae.decode(&latents, Tiling::Off)?; // [1, 3, s, s]
            device.sync()?;
            row(
                "VAE decode",
                &image,
                "vae_decoded",
                F32_TOL,
                t.elapsed().as_secs_f64(),
            )?;
        }
        if let Some(vae) = vae.as_ref().filter(|_| wants("vae-encode")) {
            let image = g.tensor("vae_image", &device)?; // [1, 3, s, s]
            let t = Instant::now();
            let post = vae.encode(&image, Tiling::Off)?; // mean, logvar: [1, 4, s/8, s/8]
            device.sync()?;
            let secs = t.elapsed().as_secs_f64();
            row("VAE encode mean", &post.mean, "vae_mean", F32_TOL, secs)?;
            row("VAE encode logvar", &post.logvar, "vae_logvar", F32_TOL, 0.0)?;
        }
        if let Some(m) = memory_summary(&device) {
            println!("  memory: {m}");
        }
    }
    anyhow::ensure!(failed.is_empty(), "outside tolerance: {}", failed.join(", "));
    Ok(())
}
