//! `sd-wgpu tokenize "PROMPT"`.

#[derive(clap::Args)]
pub struct Args {
    /// The prompt to tokenize.
    pub prompt: String,
    /// Also print each token's string.
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!("tokenize {:?} is not implemented yet", args.prompt)
}
