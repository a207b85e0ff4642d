//! `sd-wgpu bench`: times the SD 1.5 networks (full architecture, random
//! weights generated here, no download) on the chosen backend: one UNet
//! evaluation (CFG batch of 2, 64x64 latent, 77 tokens), one text-encoder
//! pass, one VAE decode at 512x512. Prints the adapter, seconds per pass
//! (wall clock, GPU synced), achieved TFLOP/s (2 x multiply-adds counted
//! from the config, see `models::flops`) and peak GPU memory.
//!
//! On the CPU and software adapters the default latent is 32x32 (256x256
//! pixels) so that a default run takes minutes rather than a quarter hour.

use std::time::Instant;

use super::stdout::Stdout;
use anyhow::{bail, Context};
use sd_wgpu::cpu::{gemm, profile};
use sd_wgpu::models::config::{ClipConfig, UNetConfig, VaeConfig};
use sd_wgpu::models::{default_dtype, flops, memory_summary, ClipTextModel, Component, Tiling, UNet, Vae};
use sd_wgpu::weights::VarBuilder;
use sd_wgpu::{DType, Device, Tensor};

use super::flags::{self, DeviceArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Storage type of the VAE: f16 or f32.
    #[arg(long, value_name = "f16|f32", default_value = "f32", value_parser = flags::dtype)]
    pub vae_dtype: DType,
    /// Components to time, comma-separated: unet, clip, vae.
    #[arg(long, value_delimiter = ',', default_value = "unet,clip,vae")]
    pub components: Vec<String>,
    /// Timed passes per component (default 3 on a hardware GPU, else 1).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Untimed passes first, to compile pipelines (default 1 on GPU, 0 on CPU).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Latent size, `N` or `HxW`; the VAE decodes 8x that in pixels (default
    /// 64, SD 1.5's 512x512, on a hardware GPU; 32 on the CPU and software
    /// adapters, where the full-size UNet takes minutes).
    #[arg(long)]
    pub size: Option<String>,
    /// UNet batch (2 = one classifier-free-guidance step).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// SplitMix64 step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values uniform in [-scale, scale), from `seed`.
fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = mix(s);
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// Weights with the variance of PyTorch's default init (norm scales 1), seeded
/// by name so every run builds the same model.
fn random_weights(seed: u64, device: &Device, dtype: DType) -> VarBuilder {
    VarBuilder::from_fn(
        move |name, shape| {
            let n: usize = shape.iter().product();
            let s = name.bytes().fold(mix(seed), |h, b| mix(h ^ b as u64));
            if shape.len() == 1 && name.ends_with("weight") {
                vec![1.0; n]
            } else if shape.len() == 1 {
                uniform(s, n, 0.02)
            } else {
                let fan_in: usize = shape[1..].iter().product();
                uniform(s, n, (1.0 / fan_in as f32).sqrt())
            }
        },
        device,
        dtype,
    )
}

struct Timing {
    secs: Vec<f64>,
}

impl Timing {
    fn run(
        device: &Device,
        warmup: usize,
        iters: usize,
        mut f: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Timing> {
        for _ in 0..warmup {
            f()?;
            device.sync()?;
        }
        // The CPU breakdown counts the timed passes only.
        profile::reset();
        let mut secs = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            f()?;
            device.sync()?;
            secs.push(t.elapsed().as_secs_f64());
        }
        Ok(Timing { secs })
    }

    fn report(&self, what: &str, macs: f64, device: &Device, out: &mut Stdout) {
        let mean = self.secs.iter().sum::<f64>() / self.secs.len() as f64;
        let best = self.secs.iter().cloned().fold(f64::INFINITY, f64::min);
        let rate = 2.0 * macs / best;
        let rate = if rate >= 1e12 {
            format!("{:.2} TFLOP/s", rate / 1e12)
        } else {
            format!("{:.1} GFLOP/s", rate / 1e9)
        };
        out.line(format_args!(
            "{what}: {mean:.3} s mean, {best:.3} s best of {}; {:.3} TMAC -> {rate} (best)",
            self.secs.len(),
            macs / 1e12,
        ));
        if let Some(m) = memory_summary(device) {
            out.line(format_args!("  memory: {m}"));
        }
        if !device.is_gpu() {
            cpu_breakdown(self.secs.len(), out);
        }
    }
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    let hw = match s.split_once(['x', 'X']) {
        Some((h, w)) => parse(h).zip(parse(w)),
        None => parse(s).map(|n| (n, n)),
    };
    hw.with_context(|| format!("--size: expected a latent size N or HxW (e.g. 64 or 64x96), found {s:?}"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let choice = args.device.backend()?.choose()?;
    let device = choice.device.clone();
    let dtype = args
        .device
        .dtype
        .unwrap_or_else(|| default_dtype(&device, Component::UNet));
    let vae_dtype = args.vae_dtype;
    let hardware = device.gpu().is_some_and(|c| !c.caps().software);
    let (h, w) = match &args.size {
        Some(s) => parse_size(s)?,
        None if hardware => (64, 64),
        None => (32, 32),
    };
    if args.batch == 0 {
        bail!("--batch: expected at least 1");
    }
    let iters = args.iters.unwrap_or(if hardware { 3 } else { 1 }).max(1);
    let warmup = args.warmup.unwrap_or(if device.is_gpu() { 1 } else { 0 });
    for c in &args.components {
        if !matches!(c.as_str(), "unet" | "clip" | "vae") {
            bail!("--components: expected unet, clip or vae, found {c:?}");
        }
    }
    let mut out = Stdout::new();
    out.line(format_args!("device: {}", choice.describe()));
    out.line(format_args!(
        "SD 1.5 architecture, random weights (seed {}); {iters} timed, {warmup} warm-up passes",
        args.seed
    ));
    let wants = |c: &str| args.components.iter().any(|x| x == c);

    if wants("unet") {
        let cfg = UNetConfig::default();
        let vb = random_weights(args.seed, &device, dtype);
        let unet = UNet::new(&vb, &cfg);
        vb.finish("UNet", &[])?;
        let b = args.batch;
        let latents = Tensor::from_f32(
            uniform(args.seed ^ 1, b * 4 * h * w, 1.0),
            &[b, 4, h, w],
            dtype,
            &device,
        )?;
        let context = Tensor::from_f32(
            uniform(args.seed ^ 2, b * 77 * 768, 1.0),
            &[b, 77, 768],
            dtype,
            &device,
        )?;
        reset_peak(&device);
        let t = Timing::run(&device, warmup, iters, || {
            unet.forward(&latents, &[500.0], &context)?;
            Ok(())
        })?;
        let what = format!("UNet {dtype} batch {b} latent {h}x{w}, 77 tokens");
        t.report(&what, flops::unet_macs(&cfg, b, h, w, 77), &device, &mut out);
    }
    if wants("clip") {
        let cfg = ClipConfig::default();
        let vb = random_weights(args.seed, &device, dtype);
        let clip = ClipTextModel::new(&vb.pp("text_model"), &cfg);
        vb.finish("text encoder", &[])?;
        let ids: Vec<u32> = (0..77u32)
            .map(|i| if i == 0 { 49406 } else { 49407 - (i % 3) * 1000 })
            .collect();
        reset_peak(&device);
        let t = Timing::run(&device, warmup, iters, || {
            clip.forward(&ids, &[], 1)?;
            Ok(())
        })?;
        t.report(
            &format!("text encoder {dtype}, 77 tokens"),
            flops::clip_macs(&cfg, 77),
            &device,
            &mut out,
        );
    }
    if wants("vae") {
        let cfg = VaeConfig::default();
        let vb = random_weights(args.seed, &device, vae_dtype);
        let vae = Vae::new(&vb, &cfg);
        vb.finish("VAE", &[])?;
        let z = Tensor::from_vec(uniform(args.seed ^ 3, 4 * h * w, 1.0), &[1, 4, h, w], &device)?;
        reset_peak(&device);
        let t = Timing::run(&device, warmup, iters, || {
            vae.decode(&z, Tiling::Off)?;
            Ok(())
        })?;
        let what = format!("VAE decode {vae_dtype} {}x{} px", 8 * h, 8 * w);
        t.report(&what, flops::vae_decode_macs(&cfg, 1, h, w), &device, &mut out);
    }
    out.finish()
}

fn reset_peak(device: &Device) {
    if let Some(c) = device.gpu() {
        c.trim_pool();
        c.reset_peak_memory();
    } else {
        profile::reset();
        profile::reset_peak_rss();
    }
}

/// Per op family of the CPU backend: seconds per pass, share, GFLOP/s, then
/// the process's peak RSS (weights included).
fn cpu_breakdown(passes: usize, out: &mut Stdout) {
    let totals = profile::totals();
    out.line(format_args!(
        "  GEMM micro-kernel {}: {:.1} GFLOP/s with its operands in L1 (the ceiling)",
        gemm::kernel_name(),
        gemm::kernel_peak_gflops()
    ));
    let all: f64 = totals.iter().map(|t| t.secs).sum();
    for t in &totals {
        let rate = if t.flops > 0.0 {
            format!("{:7.1} GFLOP/s", t.flops / t.secs / 1e9)
        } else {
            String::new()
        };
        out.line(format_args!(
            "  {:<11} {:8.3} s/pass {:5.1}% {:6} calls {rate}",
            t.family.name(),
            t.secs / passes as f64,
            100.0 * t.secs / all,
            t.calls / passes as u64,
        ));
    }
    if let Some(b) = profile::peak_rss() {
        out.line(format_args!(
            "  peak RSS: {:.2} GiB",
            b as f64 / (1u64 << 30) as f64
        ));
    }
    profile::reset();
}
