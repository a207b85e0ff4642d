//! `sd-wgpu worker --nats URL`: one loop per device, each taking one job at a time from
//! the stream and running it on the single-process server's worker thread (a private
//! [`Jobs`] queue of one feeds it), so that a cluster image is the same PNG as `serve`'s
//! and the CLI's.
//!
//! Per job: skip it if its record already ended (a redelivery after a crash or a cancel);
//! mark it running; store each image, then the record naming it; keep the message alive
//! with in-progress acks; at the end ack (done, cancelled) or terminate (failed: a bad
//! request is not retried).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use crate::pipeline::{LoadOptions, ModelSource, TextualInversion};
use crate::{Device, Error, Result};

use super::super::error::ApiError;
use super::super::jobs::{JobEvent, Jobs};
use super::super::loras::ServerLoras;
use super::super::metrics::Metrics;
use super::super::state::ModelInfo;
use super::wire::{secs, Envelope, JobRecord, WireError, WireJob, WireResult, WireStep};
use super::{
    cancel_subject, image_object, job_subject, json_bytes, model_key, progress_subject, spec_object,
};
use super::{Cluster, Setup};

/// Everything `sd-wgpu worker` was asked for.
pub struct WorkerConfig {
    pub nats: String,
    pub model: ModelSource,
    pub vae: Option<std::path::PathBuf>,
    pub concepts: Vec<TextualInversion>,
    /// `--lora` and `--lora-dir`, as `serve` takes them (gateways must be given the same).
    pub loras: ServerLoras,
    /// One worker per device.
    pub devices: Vec<Device>,
    pub dtype: Option<crate::DType>,
    /// How long a job may go without an ack before JetStream redelivers it.
    pub ack_wait: Duration,
    pub setup: Setup,
}

/// Loads the model on every device, then takes jobs until Ctrl-C or SIGTERM (the jobs
/// running then finish first). Prints `worker ready` on stdout once every device takes
/// jobs.
pub fn run(config: WorkerConfig) -> Result<()> {
    let loras = Arc::new(config.loras);
    let mut devices = Vec::new();
    for (n, device) in config.devices.iter().enumerate() {
        eprintln!("device {n}: {}", device.describe());
        let jobs = Jobs::new(1, Duration::from_secs(1), Arc::new(Metrics::new(device.clone())));
        let options = LoadOptions {
            device: device.clone(),
            dtype: config.dtype,
            vae: config.vae.clone(),
            loras: loras.fixed.clone(),
            ..LoadOptions::default()
        };
        let (info, thread) = super::super::worker::start(
            config.model.clone(),
            options,
            config.concepts.clone(),
            loras.clone(),
            jobs.clone(),
        )?;
        devices.push((jobs, Arc::new(info), thread));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let result = runtime.block_on(async {
        let name = format!("sd-wgpu worker {}", std::process::id());
        let cluster = Cluster::setup(&config.nats, &name, &config.setup, Duration::from_secs(30)).await?;
        let mut loops = Vec::new();
        for (n, (jobs, info, _)) in devices.iter().enumerate() {
            let device = DeviceLoop {
                cluster: cluster.clone(),
                jobs: jobs.clone(),
                model: info.clone(),
                name: format!("{name} device {n}"),
                ack_wait: config.ack_wait,
                stopping: stopping.clone(),
            };
            loops.push(tokio::spawn(device.run()));
        }
        println!(
            "worker ready: {} device(s), model {}",
            loops.len(),
            devices[0].1.name
        );
        let signal = tokio::signal::ctrl_c();
        let stop = stopping.clone();
        tokio::spawn(async move {
            let _ = signal.await;
            eprintln!("stopping after the running jobs");
            stop.store(true, Ordering::Relaxed);
        });
        for l in loops {
            let _ = l.await;
        }
        Ok::<(), Error>(())
    });
    for (jobs, _, thread) in devices {
        jobs.close();
        let _ = thread.join();
    }
    runtime.shutdown_background();
    result
}

struct DeviceLoop {
    cluster: Cluster,
    jobs: Jobs,
    model: Arc<ModelInfo>,
    name: String,
    ack_wait: Duration,
    stopping: Arc<AtomicBool>,
}

impl DeviceLoop {
    async fn run(self) {
        let consumer = loop {
            let config = pull::Config {
                durable_name: Some(format!("workers-{}", model_key(&self.model.name))),
                filter_subject: job_subject(&self.model.name),
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                ..Default::default()
            };
            let name = config.durable_name.clone().unwrap_or_default();
            match self.cluster.stream.get_or_create_consumer(&name, config).await {
                Ok(c) => break c,
                Err(e) => {
                    eprintln!("{}: cannot make the consumer ({e}); retrying", self.name);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while !self.stopping.load(Ordering::Relaxed) {
            // One message at a time: a worker must not hold jobs another device could run.
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{}: cannot fetch jobs ({e}); retrying", self.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(message) = batch.next().await {
                match message {
                    Ok(m) => self.handle(m).await,
                    Err(e) => eprintln!("{}: {e}", self.name),
                }
            }
        }
    }

    async fn handle(&self, message: Message) {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.payload) else {
            eprintln!("{}: a message that is not a job; terminated", self.name);
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        let id = envelope.id.clone();
        match self.run_job(&message, envelope, delivered).await {
            Ok(Ending::Ack) => {
                let _ = message.double_ack().await;
            }
            Ok(Ending::Term) => {
                let _ = message.ack_with(AckKind::Term).await;
            }
            // NATS went away mid-job: the record may be stale; let the message come back.
            Err(e) => {
                eprintln!("{}: job {id}: {e}; leaving it for redelivery", self.name);
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
        self.jobs.sweep();
    }

    async fn run_job(&self, message: &Message, envelope: Envelope, delivered: u64) -> Result<Ending> {
        let id = envelope.id;
        let client = &self.cluster.client;
        // Subscribed before the record says running, so that a gateway's cancel that
        // loses the race for the record still reaches us.
        let mut cancels = client
            .subscribe(cancel_subject(&id))
            .await
            .map_err(|e| super::nats_error("subscribing to cancels", e))?;
        let (mut record, revision) = match self.cluster.record(&id).await? {
            Some(r) => r,
            None => (JobRecord::queued(0), 0),
        };
        if record.is_finished() {
            // Done before a crash lost the ack, or cancelled while queued.
            return Ok(Ending::Ack);
        }
        record.state = "running".into();
        record.started = Some(secs(SystemTime::now()));
        record.worker = Some(self.name.clone());
        record.attempts = delivered;
        record.results.clear();
        let claimed = if revision > 0 {
            self.cluster
                .kv
                .update(&id, json_bytes(&record), revision)
                .await
                .is_ok()
        } else {
            self.cluster.kv.create(&id, json_bytes(&record)).await.is_ok()
        };
        if !claimed {
            // The gateway cancelled it in between (or the record changed otherwise).
            match self.cluster.record(&id).await? {
                Some((r, _)) if r.is_finished() => return Ok(Ending::Ack),
                _ => {
                    self.cluster.put_record(&id, &record).await?;
                }
            }
        }
        let spec = match self
            .job(envelope.job, &id)
            .await
            .and_then(|job| job.to_spec(&self.model))
        {
            Ok(spec) => spec,
            Err(e) => return self.fail(&id, record, &e).await,
        };
        record.images = spec.request.batch;
        let local = match self.jobs.submit(spec) {
            Ok(local) => local,
            Err(e) => return self.fail(&id, record, &e).await,
        };
        let Some((_, mut events)) = self.jobs.subscribe(&local) else {
            return self
                .fail(&id, record, &ApiError::internal("the job vanished"))
                .await;
        };
        let mut keepalive = tokio::time::interval(self.ack_wait / 3);
        let progress = progress_subject(&id);
        let end = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(JobEvent::Step(step)) => {
                        let _ = client.publish(progress.clone(), json_bytes(&WireStep::new(&step))).await;
                    }
                    Ok(JobEvent::Image { .. }) => self.store_images(&id, &local, &mut record).await?,
                    Ok(JobEvent::Finished(snap)) => break snap,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Err(Error::Gpu("the worker thread stopped".into())),
                },
                _ = keepalive.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                Some(_) = cancels.next() => {
                    self.jobs.cancel(&local);
                }
            }
        };
        self.store_images(&id, &local, &mut record).await?;
        record.state = end.state.name().to_string();
        record.finished = Some(secs(SystemTime::now()));
        record.warnings = end.warnings.clone();
        record.error = end.error.as_ref().map(WireError::from);
        self.cluster.put_record(&id, &record).await?;
        Ok(if record.state == "failed" {
            Ending::Term
        } else {
            Ending::Ack
        })
    }

    /// The job, from the message or (a large one) from the object store.
    async fn job(&self, job: Option<WireJob>, id: &str) -> std::result::Result<WireJob, ApiError> {
        if let Some(job) = job {
            return Ok(job);
        }
        let mut object = self
            .cluster
            .images
            .get(spec_object(id))
            .await
            .map_err(|e| ApiError::internal(format!("the job is not in the object store: {e}")))?;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
            .await
            .map_err(|e| ApiError::internal(format!("cannot read the job: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("the stored job is not valid: {e}")))
    }

    /// Stores the images the local job has made since the last call: PNG first, then the
    /// record that names it (a gateway that reads the record finds the PNG).
    async fn store_images(&self, id: &str, local: &str, record: &mut JobRecord) -> Result<()> {
        let Some(snap) = self.jobs.snapshot(local) else {
            return Ok(());
        };
        let stored = record.results.len();
        for (index, image) in snap.images_done.iter().enumerate().skip(stored) {
            let mut png = image.png.as_slice();
            self.cluster
                .images
                .put(image_object(id, index).as_str(), &mut png)
                .await
                .map_err(|e| super::nats_error("storing an image", e))?;
            record.results.push(WireResult::new(&image.info, &image.infotext));
        }
        if record.results.len() > stored {
            record.warnings = snap.warnings.clone();
            self.cluster.put_record(id, record).await?;
        }
        Ok(())
    }

    /// A job that cannot run: its record says why, and the message is terminated.
    async fn fail(&self, id: &str, mut record: JobRecord, error: &ApiError) -> Result<Ending> {
        eprintln!("{}: job {id} failed: {error}", self.name);
        record.state = "failed".into();
        record.finished = Some(secs(SystemTime::now()));
        record.error = Some(error.into());
        self.cluster.put_record(id, &record).await?;
        Ok(Ending::Term)
    }
}

enum Ending {
    Ack,
    Term,
}
