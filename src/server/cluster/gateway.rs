//! The gateway's side: publishing jobs ([`Gateway::submit`]), cancelling them, and the
//! mirror that lets the HTTP layer read cluster jobs as it reads local ones.
//!
//! The mirror is a [`Jobs`] registry fed by two tasks: a watch of the whole KV bucket
//! (every job's state and images, whichever gateway submitted it) and a subscription to
//! every job's progress subject. The handlers (native, A1111, OpenAI) therefore run
//! unchanged; a gateway restarted from nothing rebuilds the mirror from the bucket.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::super::error::ApiError;
use super::super::jobs::{new_id, JobId, JobImage, JobSpec, Jobs, Mirrored};
use super::super::metrics::Metrics;
use super::wire::{time, Envelope, JobRecord, WireJob, WireStep};
use super::{cancel_subject, image_object, job_subject, json_bytes, progress_subject, Cluster};

/// A gateway: its connection and the subject its model's jobs go to.
pub struct Gateway {
    cluster: Cluster,
    subject: String,
    jobs: Jobs,
}

impl Gateway {
    /// The gateway and its mirror; the mirror's tasks run on the current runtime until
    /// the process ends.
    pub fn start(
        cluster: Cluster,
        model: &str,
        capacity: usize,
        retention: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Gateway> {
        let canceller = cluster.clone();
        let runtime = tokio::runtime::Handle::current();
        let jobs = Jobs::mirror_of(
            capacity,
            retention,
            metrics,
            Box::new(move |id: &str| {
                let (cluster, id) = (canceller.clone(), id.to_string());
                runtime.spawn(async move { cancel(&cluster, &id).await });
            }),
        );
        let gateway = Arc::new(Gateway {
            cluster,
            subject: job_subject(model),
            jobs,
        });
        tokio::spawn(watch_records(gateway.clone()));
        tokio::spawn(watch_progress(gateway.clone()));
        gateway
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Publishes a checked job: its record first (so that a worker always finds one), then
    /// the message, with the job id as message id. A full stream is a 429.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobId, ApiError> {
        let id = new_id()?;
        let mut record = JobRecord::queued(spec.request.batch);
        self.cluster.put_record(&id, &record).await.map_err(unavailable)?;
        let job = WireJob::new(&id, &spec);
        let mut envelope = Envelope {
            id: id.clone(),
            job: Some(job),
        };
        let mut payload = json_bytes(&envelope);
        // Input images can exceed a message (1 MB by default): they go to the object store.
        if payload.len() + 1024 > self.cluster.client.server_info().max_payload {
            let name = super::spec_object(&id);
            let mut bytes = payload.as_ref();
            self.cluster
                .images
                .put(name.as_str(), &mut bytes)
                .await
                .map_err(|e| ApiError::unavailable(format!("the cluster could not store the job: {e}")))?;
            envelope.job = None;
            payload = json_bytes(&envelope);
        }
        let publish = PublishMessage::build().payload(payload).message_id(&id);
        let sent = match self.cluster.js.send_publish(self.subject.clone(), publish).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            let error = if e.contains("maximum messages") {
                ApiError::too_many(
                    5,
                    format!(
                        "the cluster's queue is full ({} jobs, the --queue of the process that made the stream); retry in a few seconds",
                        self.cluster.stream.cached_info().config.max_messages
                    ),
                )
            } else {
                ApiError::unavailable(format!("the cluster did not take the job: {e}"))
            };
            if error.status.as_u16() == 429 {
                self.jobs.metrics().rejected();
            }
            // Other gateways mirror the record: it ends failed rather than queued forever.
            record.state = "failed".into();
            record.error = Some((&error).into());
            let _ = self.cluster.put_record(&id, &record).await;
            return Err(error);
        }
        self.jobs.mirror(&id, mirrored(&record, 0, Vec::new()));
        Ok(id)
    }
}

/// Connects a gateway for `state`'s model, limits and metrics.
pub async fn connect(url: &str, state: &super::super::state::AppState) -> crate::Result<Arc<Gateway>> {
    let setup = super::Setup {
        queue: state.limits.queue,
        retention: state.limits.retention,
    };
    let name = format!("sd-wgpu gateway {}", std::process::id());
    let cluster = Cluster::setup(url, &name, &setup, Duration::from_secs(30)).await?;
    let metrics = Arc::new(Metrics::new(crate::Device::Cpu));
    Ok(Gateway::start(
        cluster,
        &state.model.name,
        state.limits.queue,
        state.limits.retention,
        metrics,
    ))
}

fn unavailable(e: crate::Error) -> ApiError {
    ApiError::unavailable(format!("the cluster is unavailable: {e}"))
}

/// Cancels a queued job in its record (the worker then skips it) and tells the worker
/// running it, if any. The record's revision makes the first of gateway and worker win.
async fn cancel(cluster: &Cluster, id: &str) {
    if let Ok(Some((mut record, revision))) = cluster.record(id).await {
        if record.state == "queued" {
            record.state = "cancelled".into();
            record.finished = Some(super::wire::secs(std::time::SystemTime::now()));
            if cluster.kv.update(id, json_bytes(&record), revision).await.is_ok() {
                return;
            }
        }
    }
    let _ = cluster.client.publish(cancel_subject(id), "".into()).await;
}

/// Follows every record in the bucket, from its start (what exists now) on. A watch that
/// ends (the server restarted) is resumed after the last revision seen.
async fn watch_records(gateway: Arc<Gateway>) {
    let kv = &gateway.cluster.kv;
    let mut last = 0;
    loop {
        let watch = if last == 0 {
            kv.watch_with_history(">").await
        } else {
            kv.watch_all_from_revision(last + 1).await
        };
        if let Ok(mut watch) = watch {
            while let Some(Ok(entry)) = watch.next().await {
                last = entry.revision;
                if entry.operation == kv::Operation::Put {
                    if let Ok(record) = serde_json::from_slice::<JobRecord>(&entry.value) {
                        apply(&gateway, &entry.key, &record).await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Mirrors one record, fetching the PNGs of images not mirrored yet (workers store an
/// image before the record that names it).
async fn apply(gateway: &Gateway, id: &str, record: &JobRecord) {
    let have = gateway.jobs.snapshot(id).map_or(0, |s| s.images_done.len());
    let mut images = Vec::new();
    for (index, result) in record.results.iter().enumerate().skip(have) {
        match fetch(&gateway.cluster, &image_object(id, index)).await {
            Some(png) => images.push(JobImage {
                png: Arc::new(png),
                seed: result.seed,
                infotext: result.infotext.clone(),
                info: result.info.clone(),
            }),
            None => {
                eprintln!(
                    "job {id}: image {index} is not in the object store; retrying with the next update"
                );
                break;
            }
        }
    }
    let mut m = mirrored(record, have, images);
    // A job cannot end before all its images are mirrored.
    if m.state.is_finished() && have + m.images_from.len() < record.results.len() {
        m.state = super::super::job::JobState::Running;
    }
    gateway.jobs.mirror(id, m);
}

async fn fetch(cluster: &Cluster, name: &str) -> Option<Vec<u8>> {
    let mut object = cluster.images.get(name).await.ok()?;
    let mut png = Vec::new();
    object.read_to_end(&mut png).await.ok()?;
    Some(png)
}

fn mirrored(record: &JobRecord, first: usize, images: Vec<JobImage>) -> Mirrored {
    Mirrored {
        state: record.job_state(),
        images: record.images,
        created: time(record.created),
        started: record.started.map(time),
        error: record.error.as_ref().map(ApiError::from),
        warnings: record.warnings.clone(),
        first,
        images_from: images,
    }
}

/// Steps and previews of every job, for the SSE streams and snapshots.
async fn watch_progress(gateway: Arc<Gateway>) {
    let Ok(mut steps) = gateway.cluster.client.subscribe(progress_subject("*")).await else {
        eprintln!("cannot subscribe to job progress: steps will not be reported");
        return;
    };
    while let Some(message) = steps.next().await {
        let Some(id) = message.subject.as_str().rsplit('.').next() else {
            continue;
        };
        if let Ok(step) = serde_json::from_slice::<WireStep>(&message.payload) {
            gateway.jobs.step(id, step.update());
        }
    }
}
