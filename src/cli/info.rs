//! `sd-wgpu info --model PATH`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint: a diffusers folder, or a single .safetensors / .ckpt file.
    #[arg(long)]
    pub model: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!("info for {} is not implemented yet", args.model.display())
}
