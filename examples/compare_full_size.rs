//! Full-size SD 1.5 comparison, our side. Loads the random-weight diffusers
//! folder and the goldens written by `tools/compare_full_size.py` and prints,
//! per component, the max abs error, the relative error (max abs error over
//! max |reference|), the NMSE and the time.
//!
//!     cargo run --release --example compare_full_size -- /tmp/sd15-random --backend cpu --sizes 256

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use sd_wgpu::checkpoint::SafetensorsFile;
use sd_wgpu::models::config::{read_config, ClipConfig, UNetConfig, VaeConfig};
use sd_wgpu::models::{memory_summary, ClipTextModel, Tiling, UNet, Vae};
use sd_wgpu::weights::TensorSource;
use sd_wgpu::{Backend, DType, Device, Tensor};

#[derive(Parser)]
struct Args {
    /// Folder written by tools/compare_full_size.py.
    dir: PathBuf,
    /// cpu, gpu or auto.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Storage type of the text encoder and UNet (the VAE always runs in f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Image sizes whose goldens to check.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    sizes: Vec<usize>,
    /// Components: clip, unet, vae.
    #[arg(long, value_delimiter = ',', default_value = "clip,unet,vae")]
    components: Vec<String>,
}

struct Golden(SafetensorsFile);

impl Golden {
    fn values(&self, key: &str) -> anyhow::Result<Vec<f32>> {
        Ok(self.0.read(key, DType::F32)?.to_f32().into_owned())
    }

    fn tensor(&self, key: &str, device: &Device) -> anyhow::Result<Tensor> {
        let shape = self
            .0
            .info(key)
            .with_context(|| format!("golden has no {key}"))?
            .shape;
        Ok(Tensor::from_vec(self.values(key)?, &shape, device)?)
    }

    /// Prints the errors of `ours` against the golden `key`.
    fn compare(&self, what: &str, ours: &Tensor, key: &str, secs: f64) -> anyhow::Result<()> {
        let a = ours.to_vec_f32()?;
        let r = self.values(key)?;
        anyhow::ensure!(
            a.len() == r.len(),
            "{what}: {} values, reference {}",
            a.len(),
            r.len()
        );
        let max_ref = r.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let max_err = a
            .iter()
            .zip(&r)
            .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
        let (num, den) = a.iter().zip(&r).fold((0.0, 0.0), |(n, d): (f64, f64), (&x, &y)| {
            (n + (x as f64 - y as f64).powi(2), d + (y as f64).powi(2))
        });
        println!(
            "  {what:<22} max abs err {max_err:.3e}  max |ref| {max_ref:8.3}  rel {:.3e}  nmse {:.3e}  ({secs:.1} s)",
            max_err / max_ref,
            num / den
        );
        Ok(())
    }
}

fn source(dir: &Path, component: &str, file: &str) -> anyhow::Result<Arc<dyn TensorSource>> {
    Ok(Arc::new(SafetensorsFile::open(dir.join(component).join(file))?))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = args.backend.parse::<Backend>()?.open()?;
    let dtype: DType = args.dtype.parse()?;
    let dir = &args.dir;
    let wants = |c: &str| args.components.iter().any(|x| x == c);
    println!(
        "device: {}; text encoder and UNet in {dtype}, VAE in f32",
        device.describe()
    );

    let clip = if wants("clip") {
        let path = dir.join("text_encoder/config.json");
        let cfg: ClipConfig = read_config(&path)?;
        cfg.validate(&path)?;
        Some(ClipTextModel::load(
            source(dir, "text_encoder", "model.safetensors")?,
            &cfg,
            &device,
            dtype,
        )?)
    } else {
        None
    };
    let unet = if wants("unet") {
        let path = dir.join("unet/config.json");
        let cfg: UNetConfig = read_config(&path)?;
        cfg.validate(&path)?;
        let src = source(dir, "unet", "diffusion_pytorch_model.safetensors")?;
        Some(UNet::load(src, &cfg, &device, dtype)?)
    } else {
        None
    };
    let vae = if wants("vae") {
        let path = dir.join("vae/config.json");
        let cfg: VaeConfig = read_config(&path)?;
        cfg.validate(&path)?;
        let src = source(dir, "vae", "diffusion_pytorch_model.safetensors")?;
        Some(Vae::load(src, &cfg, &device, DType::F32)?)
    } else {
        None
    };

    for &size in &args.sizes {
        let g = Golden(SafetensorsFile::open(
            dir.join(format!("golden_{size}.safetensors")),
        )?);
        println!("{size}x{size}:");
        if let Some(clip) = &clip {
            let ids: Vec<u32> = g.values("ids")?.iter().map(|&x| x as u32).collect();
            let t = Instant::now();
            let last: Vec<Tensor> = ids
                .chunks(77)
                .map(|c| clip.forward(c, &[], 1))
                .collect::<Result<_, _>>()?;
            let last = Tensor::cat(&last.iter().collect::<Vec<_>>(), 0);
            let secs = t.elapsed().as_secs_f64();
            g.compare("text encoder", &last, "clip_last", secs)?;
            let skip: Vec<Tensor> = ids
                .chunks(77)
                .map(|c| clip.forward(c, &[], 2))
                .collect::<Result<_, _>>()?;
            g.compare(
                "text encoder skip 2",
                &Tensor::cat(&skip.iter().collect::<Vec<_>>(), 0),
                "clip_skip2",
                0.0,
            )?;
        }
        if let Some(unet) = &unet {
            let latents = g.tensor("unet_latents", &device)?;
            let context = g.tensor("unet_context", &device)?;
            let t = Instant::now();
            let noise = unet.forward(&latents, &g.values("unet_timestep")?, &context)?;
            device.sync()?;
            g.compare("UNet (batch 2)", &noise, "unet_noise", t.elapsed().as_secs_f64())?;
        }
        if let Some(vae) = &vae {
            let t = Instant::now();
            let image = vae.decode(&g.tensor("vae_latents", &device)?, Tiling::Off)?;
            g.compare("VAE decode", &image, "vae_decoded", t.elapsed().as_secs_f64())?;
            let t = Instant::now();
            let post = vae.encode(&g.tensor("vae_image", &device)?, Tiling::Off)?;
            device.sync()?;
            let secs = t.elapsed().as_secs_f64();
            g.compare("VAE encode mean", &post.mean, "vae_mean", secs)?;
            g.compare("VAE encode logvar", &post.logvar, "vae_logvar", 0.0)?;
        }
        if let Some(m) = memory_summary(&device) {
            println!("  memory: {m}");
        }
    }
    Ok(())
}
