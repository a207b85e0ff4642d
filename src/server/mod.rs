//! `sd-wgpu serve`: the HTTP server. One worker thread owns the model and runs jobs from a
//! bounded FIFO queue; every API (ours, A1111's, OpenAI's, the page's) turns requests into
//! jobs; tokio and axum answer HTTP.
//!
//! Files: `router` (THE router and its layers), `state` (what handlers share, request
//! checks), `error` (the one error response, the JSON extractor), `jobs` (queue and
//! registry), `worker` (the model's thread), `preview` (latents to a small picture),
//! `input` (base64 images, seeds), `native` (our jobs API), `ops` and `openapi` (health,
//! metrics, API description), `metrics`, `auth` (API key, bind rule), `a1111`, `openai`,
//! `page` (the web page).
//!
//! Shutdown (Ctrl-C or SIGTERM): no new jobs, queued jobs fail with 503, the running one
//! is cancelled at its next step, open requests are answered, and [`serve`] returns `Ok`.

pub mod a1111;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod input;
pub mod job;
pub mod jobs;
pub mod loras;
pub mod metrics;
pub mod native;
pub mod openai;
pub mod openapi;
pub mod ops;
pub mod page;
pub mod preview;
pub mod router;
pub mod state;
pub mod worker;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::pipeline::{LoadOptions, ModelSource, TextualInversion};
use crate::{Backend, DType, Error, Result};

use self::jobs::Jobs;
use self::loras::ServerLoras;
use self::metrics::Metrics;
use self::state::{AppState, Limits};

/// How long open connections get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `sd-wgpu serve` was asked for.
pub struct Config {
    pub model: ModelSource,
    /// A VAE replacing the model's (`--vae`).
    pub vae: Option<PathBuf>,
    /// Concepts every request may use by trigger word.
    pub concepts: Vec<TextualInversion>,
    /// `--lora` and `--lora-dir` (see [`loras`]).
    pub loras: ServerLoras,
    pub host: String,
    /// 0: any free port (the printed URL says which).
    pub port: u16,
    pub backend: Backend,
    pub dtype: Option<DType>,
    pub api_key: Option<String>,
    pub insecure_no_auth: bool,
    pub limits: Limits,
    /// `--nats URL`: a stateless gateway of a cluster (cluster/gateway.rs).
    pub nats: Option<String>,
}

/// Loads the model, listens, and serves until Ctrl-C or SIGTERM. Prints
/// `serving on http://ADDR/` on stdout once connections are accepted.
pub fn serve(config: Config) -> Result<()> {
    let addrs: Vec<SocketAddr> = (config.host.as_str(), config.port)
        .to_socket_addrs()
        .map_err(|e| Error::invalid("--host", format!("cannot resolve {:?}: {e}", config.host)))?
        .collect();
    auth::check_bind(&addrs, config.api_key.as_deref(), config.insecure_no_auth)?;

    let choice = config.backend.choose()?;
    eprintln!("device: {}", choice.describe());
    let metrics = Arc::new(Metrics::new(choice.device.clone()));
    let jobs = Jobs::new(config.limits.queue, config.limits.retention, metrics);
    let options = LoadOptions {
        device: choice.device,
        dtype: config.dtype,
        loras: config.loras.fixed.clone(),
        vae: config.vae,
        ..LoadOptions::default()
    };
    let loras = Arc::new(config.loras);
    let (model, worker) = worker::start(config.model, options, config.concepts, loras, jobs.clone())?;
    eprintln!(
        "model: {} ({} concept{})",
        model.name,
        model.concepts.len(),
        if model.concepts.len() == 1 { "" } else { "s" }
    );
    let mut state = AppState {
        jobs: jobs.clone(),
        model: Arc::new(model),
        limits: Arc::new(config.limits),
        api_key: config.api_key.map(Arc::from),
        cluster: None,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    if let Some(url) = &config.nats {
        // The model loaded above only describes and checks requests; workers run them.
        let gateway = runtime.block_on(cluster::gateway::connect(url, &state))?;
        eprintln!("gateway of the cluster at {url}");
        state.jobs = gateway.jobs().clone();
        state.cluster = Some(gateway);
    }
    let served = runtime.block_on(listen(&addrs, state));
    // The worker stops after the running job's next step; a stuck device must not keep a
    // stopping server alive for long.
    jobs.close();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = worker.join();
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(SHUTDOWN_GRACE).is_err() {
        eprintln!("the running job did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    // Serving has ended; what may be left (the sweeper, a signal listener) needs no waiting for.
    runtime.shutdown_background();
    served
}

async fn listen(addrs: &[SocketAddr], state: AppState) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addrs)
        .await
        .map_err(|e| Error::io(format!("listening on {addrs:?}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let jobs = state.jobs.clone();
    let retention = state.limits.retention;
    tokio::spawn(sweep(jobs.clone(), retention));
    let app = router::build(state);

    let mut out = std::io::stdout();
    let _ = writeln!(out, "serving on http://{local}/");
    let _ = out.flush();

    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let signal = shutdown_signal().await;
        eprintln!("{signal}: stopping (queued jobs fail, the running one is cancelled)");
        jobs.close();
        let _ = stopping_tx.send(true);
    });
    let grace = async move {
        let _ = stopping_rx.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r.map_err(|e| Error::io("serving", e)),
        () = grace => {
            eprintln!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            Ok(())
        }
    }
}

/// Drops ended jobs past the retention time, checking a few times per retention period.
async fn sweep(jobs: Jobs, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        jobs.sweep();
    }
}

/// Resolves on Ctrl-C or SIGTERM, naming it.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "Ctrl-C",
        () = term => "SIGTERM",
    }
}
