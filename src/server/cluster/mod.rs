//! Scale-out on NATS JetStream: many workers (one per device, on any machine) behind
//! stateless gateways. The same binary plays every role:
//!
//! - `sd-wgpu serve --nats URL`: a gateway ([`gateway`]). It checks requests exactly as the
//!   single-process server, publishes each job to the work-queue stream, and answers from
//!   a mirror of the KV bucket, so that any gateway answers for any job.
//! - `sd-wgpu worker --nats URL`: workers ([`worker`]). Each device takes one job at a
//!   time from the stream and runs it on the server's own worker thread (server/worker.rs).
//!
//! What lives in NATS ([`Cluster::setup`] makes it, or finds it made):
//! - stream `SD_JOBS` (work queue, file storage) on `sd.jobs.<model>`: one message per
//!   job, message id = job id (a retried publish is dropped as a duplicate); its
//!   `max_messages` (the gateway's `--queue`) turns into 429 at the gateway;
//! - KV bucket `sd_jobs`: each job's [`wire::JobRecord`] under its id;
//! - object store `sd_images`: image `n` of job `id` as `id/n.png` (the CLI's bytes);
//! - core subjects `sd.progress.<id>` (steps, previews) and `sd.cancel.<id>`.
//!
//! Delivery: at least once. A worker acks a job once its record says done (images
//! stored first); a worker that dies leaves the message unacked, and JetStream hands it to
//! another worker after the ack wait. A redelivered job whose record is already done,
//! failed or cancelled is acked without running again. A job that fails is terminated
//! (never redelivered), with its error in its record.

pub mod gateway;
pub mod wire;
pub mod worker;

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};

use crate::{Error, Result};

pub const STREAM: &str = "SD_JOBS";
pub const KV_BUCKET: &str = "sd_jobs";
pub const OBJECT_BUCKET: &str = "sd_images";

/// The stream's subject for jobs of `model`.
pub fn job_subject(model: &str) -> String {
    format!("sd.jobs.{}", model_key(model))
}

pub fn progress_subject(id: &str) -> String {
    format!("sd.progress.{id}")
}

pub fn cancel_subject(id: &str) -> String {
    format!("sd.cancel.{id}")
}

/// The image's object name.
pub fn image_object(id: &str, index: usize) -> String {
    format!("{id}/{index}.png")
}

/// A job too large for a message, stored whole.
pub fn spec_object(id: &str) -> String {
    format!("{id}/job.json")
}

/// A model name as one subject token (dots and spaces would split or break subjects).
pub fn model_key(model: &str) -> String {
    model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A connection to the cluster and its stores.
#[derive(Clone)]
pub struct Cluster {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stream: stream::Stream,
    pub kv: kv::Store,
    pub images: object_store::ObjectStore,
}

/// How long jobs and images are kept, and how many jobs may wait.
pub struct Setup {
    pub queue: usize,
    pub retention: Duration,
}

impl Cluster {
    /// Connects (retrying while the server is not up yet, for at most `wait`) and makes the
    /// stream and stores, or finds them made by another process.
    pub async fn setup(url: &str, name: &str, setup: &Setup, wait: Duration) -> Result<Cluster> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|e| nats_error(&format!("connecting to {url}"), e))?;
        let js = jetstream::new(client.clone());
        let deadline = tokio::time::Instant::now() + wait;
        // JetStream answers a little after the port opens; retry until the deadline.
        loop {
            match Cluster::stores(&client, &js, setup).await {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn stores(client: &async_nats::Client, js: &jetstream::Context, setup: &Setup) -> Result<Cluster> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["sd.jobs.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                max_messages: setup.queue as i64,
                discard: stream::DiscardPolicy::New,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error("making the job stream", e))?;
        // The bucket's stream made by hand, as async-nats' create_key_value would make it:
        // that call first reads the account's limits, which nats-server 2.9 (Debian 12's)
        // answers in a form async-nats does not parse.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{KV_BUCKET}"),
            subjects: vec![format!("$KV.{KV_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_age: setup.retention,
            storage: stream::StorageType::File,
            num_replicas: 1,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("making the job bucket", e))?;
        let kv = js
            .get_key_value(KV_BUCKET)
            .await
            .map_err(|e| nats_error("opening the job bucket", e))?;
        let images = match js.get_object_store(OBJECT_BUCKET).await {
            Ok(o) => o,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: OBJECT_BUCKET.into(),
                    max_age: setup.retention,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| nats_error("making the image store", e))?,
        };
        Ok(Cluster {
            client: client.clone(),
            js: js.clone(),
            stream,
            kv,
            images,
        })
    }

    /// A job's record and its revision; `None` when there is none (yet, or any more).
    pub async fn record(&self, id: &str) -> Result<Option<(wire::JobRecord, u64)>> {
        let entry = self
            .kv
            .entry(id)
            .await
            .map_err(|e| nats_error("reading a job record", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision))))
    }

    pub async fn put_record(&self, id: &str, record: &wire::JobRecord) -> Result<u64> {
        self.kv
            .put(id, json_bytes(record))
            .await
            .map_err(|e| nats_error("writing a job record", e))
    }
}

pub fn json_bytes<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    // Our wire types are plain data: serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default().into()
}

pub fn nats_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        context: format!("NATS: {what}"),
        source: std::io::Error::other(e.to_string()),
    }
}
