//! The `sd-wgpu` command line. Each subcommand lives in `src/cli/<name>.rs`
//! and drives the library API; errors print as one line and exit 1 (2 for
//! clap's usage errors), a generation stopped by Ctrl-C exits 130.

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
    /// Generate images from a prompt.
    Txt2img(cli::generate::Txt2ImgArgs),
    /// Transform an image guided by a prompt.
    Img2img(cli::generate::Img2ImgArgs),
    /// Repaint the masked part of an image guided by a prompt.
    Inpaint(cli::inpaint::Args),
    /// List the samplers and the names `--sampler` accepts for each (ours, A1111's, others).
    Samplers,
    /// Serve the web page and the HTTP APIs (native jobs, A1111, OpenAI images).
    Serve(cli::serve::Args),
    /// Run a cluster's jobs, taken from NATS JetStream (gateways: serve --nats).
    Worker(cli::worker::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => cli::info::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Txt2img(a) => cli::generate::run_txt2img(a),
        Command::Img2img(a) => cli::generate::run_img2img(a),
        Command::Inpaint(a) => cli::inpaint::run_inpaint(a),
        Command::Samplers => cli::samplers::run(),
        Command::Serve(a) => cli::serve::run(a),
        Command::Worker(a) => cli::worker::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<cli::interrupt::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(cli::interrupt::EXIT_STATUS)
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause only once (library
/// errors already include their source's text).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
