//! `sd-wgpu info [--model PATH]`: what a checkpoint is, without loading it
//! (the built-in demo model without `--model`). It runs the checks loading
//! runs before it reads a weight (`pipeline::check`): a checkpoint `info`
//! accepts loads, and one it refuses gets the same error as `txt2img`.

use std::path::PathBuf;

use sd_wgpu::checkpoint::{open_with, Component, OpenOptions};
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
    let ck = open_with(&path, &opts)?;
    let checked = check(&ck);
    println!("model:   {}", ck.path.display());
    println!("layout:  {}", ck.layout);
    println!("family:  {} ({})", ck.detection.family, ck.detection.evidence);
    let u = &ck.unet.config;
    component(
        "unet",
        &ck.unet,
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
        format!(
            "blocks {:?}, {} latent channels, scaling factor {}",
            v.block_out_channels, v.latent_channels, v.scaling_factor
        ),
    );
    let c = &ck.text_encoder.config;
    component(
        "text encoder",
        &ck.text_encoder,
        format!(
            "{} layers, width {}, {} heads, {}",
            c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.hidden_act
        ),
    );
    match &ck.tokenizer_dir {
        Some(d) => println!("tokenizer: {}", d.display()),
        None => println!("tokenizer: built-in CLIP vocabulary"),
    }
    match &ck.scheduler_config {
        Some(s) => println!(
            "scheduler: {} (scheduler_config.json)",
            s.get("_class_name").and_then(|c| c.as_str()).unwrap_or("unnamed")
        ),
        None => println!("scheduler: none in the checkpoint (SD 1.x defaults)"),
    }
    let found = checked.as_ref().map_or(&[][..], |c| &c.warnings[..]);
    let warnings: Vec<&String> = ck.warnings.iter().chain(found).collect();
    if !warnings.is_empty() {
        println!("warnings:");
        for w in warnings {
            println!("  - {w}");
        }
    }
    let checked = checked?;
    println!(
        "check:   every weight matches the configs; default sampler {}",
        checked.default_sampler
    );
    Ok(())
}

fn component<C>(name: &str, c: &Component<C>, config: String) {
    let counts = c.dtype_counts();
    let dtypes: Vec<String> = counts.iter().map(|(d, n)| format!("{d} {n}")).collect();
    println!(
        "{name}: {:.2} M parameters ({})",
        c.param_count() as f64 / 1e6,
        dtypes.join(", ")
    );
    println!("  config: {config}");
    for f in &c.files {
        println!("  file:   {}", f.display());
    }
}
