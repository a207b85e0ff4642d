//! The `sd-wgpu` command line. Each subcommand lives in `src/cli/<name>.rs`
//! and drives the library API; errors print as one line and exit non-zero.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sd-wgpu",
    version,
    about = "Stable Diffusion 1.x on hand-written WGSL kernels (wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a checkpoint's layout, family, dtypes and parameter counts.
    Info(cli::info::Args),
    /// Time the SD 1.5 UNet, text encoder and VAE decode (random weights).
    Bench(cli::bench::Args),
    /// Print the CLIP token ids of a prompt (like A1111's token counter).
    Tokenize(cli::tokenize::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => cli::info::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
