//! `sd-wgpu worker --nats URL`: runs a cluster's jobs on this machine's devices
//! (src/server/cluster/worker.rs). With no flags but `--nats`: the demo model on one
//! device chosen as `--backend auto` does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use sd_wgpu::gpu::{is_software, list_adapters, GpuContext};
use sd_wgpu::lora::LoraSpec;
use sd_wgpu::pipeline::{ModelSource, TextualInversion};
use sd_wgpu::server::cluster::worker::{run as run_worker, WorkerConfig};
use sd_wgpu::server::cluster::Setup;
use sd_wgpu::{Backend, Device};

use super::flags::{must_exist, DeviceArgs};
use super::serve::{duration, load_concepts, server_loras, HAZARD_CONCEPT, HAZARD_NAME};

#[derive(clap::Args)]
pub struct Args {
    /// The NATS server with JetStream (nats://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// Checkpoint to serve (default: the built-in demo model, with its `<hazard>` concept).
    /// Gateways send this worker only jobs for the model they were started with.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A VAE to use instead of the model's (as serve --vae).
    #[arg(long, value_name = "PATH")]
    pub vae: Option<PathBuf>,
    /// Folder of textual-inversion embeddings (as serve --embeddings; gateways and workers
    /// must load the same ones).
    #[arg(long, value_name = "DIR")]
    pub embeddings: Option<PathBuf>,
    /// LoRA file merged into every job (as serve --lora; gateways must be given the same).
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]", value_parser = super::flags::lora)]
    pub loras: Vec<LoraSpec>,
    /// Folder of LoRA files that prompts name with <lora:NAME:WEIGHT> tags (as serve
    /// --lora-dir; gateways must be given the same).
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// Which GPU: an index into the adapters wgpu lists, or `all` for one worker per
    /// hardware adapter in this process (default: the one --backend picks).
    #[arg(long = "device", value_name = "N|all")]
    pub gpu: Option<String>,
    /// How long a job may go without news from its worker before JetStream gives it to
    /// another (workers report every third of it while they run).
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = duration)]
    pub ack_wait: Duration,
    /// Jobs the stream holds at most, if this worker is the first to create it (as serve
    /// --queue).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub queue: usize,
    /// How long ended jobs and their images are kept, if this worker creates the stores.
    #[arg(long, value_name = "TIME", default_value = "1h", value_parser = duration)]
    pub retention: Duration,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.queue == 0 {
        return Err(anyhow!("invalid argument --queue: must be at least 1, found 0"));
    }
    if args.ack_wait < Duration::from_secs(1) {
        return Err(anyhow!("invalid argument --ack-wait: must be at least 1 s"));
    }
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
    let loras = server_loras(args.loras, args.lora_dir.as_deref())?;
    let devices = devices(args.device.backend()?, args.gpu.as_deref())?;
    run_worker(WorkerConfig {
        nats: args.nats,
        model,
        vae: args.vae,
        concepts,
        loras,
        devices,
        dtype: args.device.dtype,
        ack_wait: args.ack_wait,
        setup: Setup {
            queue: args.queue,
            retention: args.retention,
        },
    })?;
    Ok(())
}

/// The devices `--device` names; without it, the one `--backend` picks.
fn devices(backend: Backend, index: Option<&str>) -> anyhow::Result<Vec<Device>> {
    let Some(index) = index else {
        return Ok(vec![backend.open()?]);
    };
    if backend == Backend::Cpu {
        return Err(anyhow!(
            "invalid argument --device: picks GPUs, and --backend is cpu (leave it out)"
        ));
    }
    let adapters = list_adapters();
    let count = adapters.len();
    let chosen: Vec<wgpu::Adapter> = if index == "all" {
        adapters
            .into_iter()
            .filter(|a| !is_software(&a.get_info()))
            .collect()
    } else {
        let n: usize = index
            .parse()
            .map_err(|_| anyhow!("invalid argument --device: expected a number or all, found {index:?}"))?;
        let adapter = adapters.into_iter().nth(n).ok_or_else(|| {
            anyhow!(
                "invalid argument --device: {count} adapter(s) (0 to {}), found {n}",
                count.max(1) - 1
            )
        })?;
        vec![adapter]
    };
    if chosen.is_empty() {
        return Err(anyhow!("invalid argument --device: all found no hardware GPU"));
    }
    chosen
        .into_iter()
        .map(|a| Ok(Device::Gpu(GpuContext::from_adapter(a)?)))
        .collect()
}
