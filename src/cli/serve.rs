//! `sd-wgpu serve`: the web page and the HTTP APIs (src/server). With no flags: the
//! built-in demo model and the shipped `<hazard>` concept on http://127.0.0.1:7860/.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use sd_wgpu::lora::{LoraDir, LoraSpec};
use sd_wgpu::pipeline::{ModelSource, TextualInversion};
use sd_wgpu::server::loras::ServerLoras;
use sd_wgpu::server::state::{Limits, DEFAULT_MAX_PIXELS, MAX_BATCH, MAX_STEPS};
use sd_wgpu::server::{serve, Config};

use super::flags::{must_exist, DeviceArgs};

/// The concept shipped with the demo model (sd-concepts-library layout; trigger `<hazard>`).
pub const HAZARD_CONCEPT: &[u8] = include_bytes!("../../assets/hazard-concept/learned_embeds.bin");
pub const HAZARD_NAME: &str = "assets/hazard-concept/learned_embeds.bin";

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint: a diffusers folder or a single .safetensors / .ckpt file (default: the
    /// built-in demo model, with its `<hazard>` concept).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A VAE to use instead of the model's: a diffusers vae/ folder, a standalone VAE file
    /// or a full checkpoint whose VAE is taken (as txt2img --vae).
    #[arg(long, value_name = "PATH")]
    pub vae: Option<PathBuf>,
    /// Folder of textual-inversion embeddings (.pt, .bin, .safetensors): requests use them
    /// by trigger word.
    #[arg(long, value_name = "DIR")]
    pub embeddings: Option<PathBuf>,
    /// LoRA file merged into every job at WEIGHT (default 1); repeat for several.
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]", value_parser = super::flags::lora)]
    pub loras: Vec<LoraSpec>,
    /// Folder of LoRA files that prompts name with A1111's <lora:NAME:WEIGHT> tags (in every
    /// API); listed at startup.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// Address to listen on. Anything but loopback needs --api-key (or --insecure-no-auth).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: String,
    /// Port; 0 picks a free one (the printed URL says which).
    #[arg(long, value_name = "N", default_value_t = 7860)]
    pub port: u16,
    /// Jobs that may wait behind the running one; more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub queue: usize,
    /// Key every API request must send (Authorization: Bearer KEY or X-API-Key: KEY);
    /// default: $SD_WGPU_API_KEY when set (keeps the key out of the process list).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Listen beyond loopback without an API key (anyone who reaches the port can generate).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Largest request body in bytes (base64 images included).
    #[arg(long, value_name = "N", default_value_t = 20 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest image a request may ask for, in pixels (width x height).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: usize,
    /// How long ended jobs and their images are kept: seconds, or with s, m, h or d.
    #[arg(long, value_name = "TIME", default_value = "1h", value_parser = duration)]
    pub retention: Duration,
    /// Be a stateless gateway of a cluster: jobs go to the NATS JetStream server at URL
    /// (nats://HOST:PORT) and `sd-wgpu worker`s run them (docs/cluster.md).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.queue == 0 {
        return Err(anyhow!("invalid argument --queue: must be at least 1, found 0"));
    }
    let backend = args.device.backend()?;
    let model = match &args.model {
        Some(p) => {
            must_exist("--model", p)?;
            ModelSource::Path(p.clone())
        }
        None => ModelSource::demo(),
    };
    if let Some(path) = &args.vae {
        must_exist("--vae", path)?;
    }
    let concepts = match (&args.embeddings, &args.model) {
        (Some(dir), _) => load_concepts(dir)?,
        (None, None) => vec![TextualInversion::from_bytes(
            Path::new(HAZARD_NAME),
            HAZARD_CONCEPT.to_vec(),
        )?],
        (None, Some(_)) => Vec::new(),
    };
    let api_key = args
        .api_key
        .or_else(|| std::env::var("SD_WGPU_API_KEY").ok().filter(|k| !k.is_empty()));
    if api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(anyhow!("invalid argument --api-key: must not be blank"));
    }
    let loras = server_loras(args.loras, args.lora_dir.as_deref())?;
    serve(Config {
        model,
        vae: args.vae,
        concepts,
        loras,
        host: args.host,
        port: args.port,
        backend,
        dtype: args.device.dtype,
        api_key,
        insecure_no_auth: args.insecure_no_auth,
        limits: Limits {
            max_pixels: args.max_pixels,
            max_steps: MAX_STEPS,
            max_batch: MAX_BATCH,
            queue: args.queue,
            max_body_bytes: args.max_body_bytes,
            retention: args.retention,
        },
        nats: args.nats,
    })?;
    Ok(())
}

/// Every embedding file in `dir` (by extension), in name order.
pub fn load_concepts(dir: &Path) -> anyhow::Result<Vec<TextualInversion>> {
    must_exist("--embeddings", dir)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("invalid argument --embeddings: cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["pt", "bin", "safetensors"].contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| TextualInversion::load(p).map_err(|e| anyhow!("invalid argument --embeddings: {e}")))
        .collect()
}

/// `--retention`: `3600`, `90s`, `30m`, `1h`, `2d`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| {
        format!("expected a number of seconds, or one with s, m, h or d (30m, 1h); found {s:?}")
    })?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "expected a unit s, m, h or d after the number, found {unit:?}"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

/// `--lora` and `--lora-dir` of `serve` and `worker`: the files checked to exist, the
/// folder listed.
pub fn server_loras(fixed: Vec<LoraSpec>, dir: Option<&Path>) -> anyhow::Result<ServerLoras> {
    for spec in &fixed {
        must_exist("--lora", &spec.path)?;
    }
    let dir = match dir {
        Some(dir) => Some(LoraDir::scan(dir, "--lora-dir")?),
        None => None,
    };
    Ok(ServerLoras { fixed, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("1w").unwrap_err().contains("unit"));
        assert!(duration("h").unwrap_err().contains("number"));
    }
}
