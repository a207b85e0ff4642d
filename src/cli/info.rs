//! `sd-wgpu info [--model PATH] [--vae PATH]`: what a checkpoint is, without loading it
//! (the built-in demo model without `--model`). It runs the checks loading
//! runs before it reads a weight (`pipeline::check`): a checkpoint `info`
//! accepts loads, and one it refuses gets the same error as `txt2img`.

use std::path::PathBuf;

use super::stdout::Stdout;
use sd_wgpu::checkpoint::{open_vae, open_with, Component, OpenOptions};
use sd_wgpu::pipeline::check;
use sd_wgpu::pipeline::embedded::{default_cache_dir, demo_model_dir};

use super::flags::must_exist;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint: a diffusers folder, or a single .safetensors / .ckpt file (default:
    /// the built-in demo model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// diffusers weights variant to inspect (e.g. fp16).
    #[arg(long)]
    pub variant: Option<String>,
    /// A VAE replacing the model's (as txt2img --vae): shown and checked in its place.
    #[arg(long, value_name = "PATH")]
    pub vae: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = OpenOptions {
        variant: args.variant,
    };
    let path = match args.model {
        Some(p) => {
            must_exist("--model", &p)?;
            p
        }
        None => demo_model_dir(&default_cache_dir())?,
    };
    let mut ck = open_with(&path, &opts)?;
    if let Some(vae) = &args.vae {
        must_exist("--vae", vae)?;
        ck.replace_vae(open_vae(vae, &ck.vae.config, opts.variant.as_deref())?)?;
    }
    let checked = check(&ck);
    let mut out = Stdout::new();
    out.line(format_args!("model:   {}", ck.path.display()));
    out.line(format_args!("layout:  {}", ck.layout));
    out.line(format_args!(
        "family:  {} ({})",
        ck.detection.family, ck.detection.evidence
    ));
    let u = &ck.unet.config;
    component(
        "unet",
        &ck.unet,
        &mut out,
        format!(
            "{} -> {} channels, blocks {:?}, {} layers per block, {} heads, cross-attention {}",
            u.in_channels,
            u.out_channels,
            u.block_out_channels,
            u.layers_per_block,
            u.heads(0),
            u.cross_attention_dim
        ),
    );
    let v = &ck.vae.config;
    component(
        "vae",
        &ck.vae,
        &mut out,
        format!(
            "blocks {:?}, {} latent channels, scaling factor {}",
            v.block_out_channels, v.latent_channels, v.scaling_factor
        ),
    );
    let c = &ck.text_encoder.config;
    component(
        "text encoder",
        &ck.text_encoder,
        &mut out,
        format!(
            "{} layers, width {}, {} heads, {}",
            c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.hidden_act
        ),
    );
    match &ck.tokenizer_dir {
        Some(d) => out.line(format_args!("tokenizer: {}", d.display())),
        None => out.line("tokenizer: built-in CLIP vocabulary"),
    }
    match &ck.scheduler_config {
        Some(s) => out.line(format_args!(
            "scheduler: {} (scheduler_config.json)",
            s.get("_class_name").and_then(|c| c.as_str()).unwrap_or("unnamed")
        )),
        None => out.line("scheduler: none in the checkpoint (SD 1.x defaults)"),
    }
    let found = checked.as_ref().map_or(&[][..], |c| &c.warnings[..]);
    let warnings: Vec<&String> = ck.warnings.iter().chain(found).collect();
    if !warnings.is_empty() {
        out.line("warnings:");
        for w in warnings {
            out.line(format_args!("  - {w}"));
        }
    }
    let checked = checked?;
    out.line(format_args!(
        "check:   every weight matches the configs; default sampler {}",
        checked.default_sampler
    ));
    out.finish()
}

fn component<C>(name: &str, c: &Component<C>, out: &mut Stdout, config: String) {
    let counts = c.dtype_counts();
    let dtypes: Vec<String> = counts.iter().map(|(d, n)| format!("{d} {n}")).collect();
    out.line(format_args!(
        "{name}: {:.2} M parameters ({})",
        c.param_count() as f64 / 1e6,
        dtypes.join(", ")
    ));
    out.line(format_args!("  config: {config}"));
    for f in &c.files {
        out.line(format_args!("  file:   {}", f.display()));
    }
}
