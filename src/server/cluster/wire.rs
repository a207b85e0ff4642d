//! What travels through NATS, as JSON: the job a gateway publishes ([`WireJob`]), the
//! job's record in the KV bucket ([`JobRecord`]), and a step on the progress subject
//! ([`WireStep`]). Everything the library types hold is spelled out here so that a
//! gateway and a worker of the same version agree byte for byte.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::pipeline::{GenerationInfo, Mask, Request, RgbImage};
use crate::schedulers::SamplerKind;

use super::super::error::ApiError;
use super::super::job::{JobSpec, JobState, StepUpdate};
use super::super::state::ModelInfo;

/// A job message: the job itself, or (when it would not fit a message) only its id, the
/// job being in the object store under [`super::spec_object`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub job: Option<WireJob>,
}

/// A checked job. Concepts travel by trigger word (every worker loads the same ones);
/// the input image as its f32 pixels (base64 of little-endian bytes) so that the worker
/// sees exactly what the gateway decoded.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireJob {
    pub id: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub cfg_scale: f32,
    pub sampler: Option<String>,
    pub seed: u64,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub batch: usize,
    pub clip_skip: usize,
    pub strength: f64,
    pub concepts: Vec<String>,
    pub init_image: Option<WireImage>,
    pub mask: Option<WireMask>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireImage {
    pub width: usize,
    pub height: usize,
    /// `[H, W, 3]` f32, little-endian, base64.
    pub data: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireMask {
    pub width: usize,
    pub height: usize,
    /// `[H, W]` u8, base64.
    pub luma: String,
    pub blur: usize,
}

impl WireJob {
    pub fn new(id: &str, spec: &JobSpec) -> WireJob {
        let r = &spec.request;
        WireJob {
            id: id.to_string(),
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            steps: r.steps,
            cfg_scale: r.cfg_scale,
            sampler: r.sampler.map(|s| s.name().to_string()),
            seed: r.seed,
            width: r.width,
            height: r.height,
            batch: r.batch,
            clip_skip: r.clip_skip,
            strength: r.strength,
            concepts: r.embeddings.iter().map(|e| e.embedding.trigger.clone()).collect(),
            init_image: spec.init_image.as_ref().map(|i| WireImage {
                width: i.width,
                height: i.height,
                data: STANDARD.encode(i.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()),
            }),
            mask: spec.mask.as_ref().map(|m| WireMask {
                width: m.width,
                height: m.height,
                luma: STANDARD.encode(&m.luma),
                blur: m.blur,
            }),
        }
    }

    /// The job again, its concepts resolved against this worker's model. An error here
    /// means gateway and worker disagree (other concepts, another version): the job fails.
    pub fn to_spec(&self, model: &ModelInfo) -> Result<JobSpec, ApiError> {
        let sampler = self
            .sampler
            .as_deref()
            .map(|s| s.parse::<SamplerKind>())
            .transpose()
            .map_err(|e| ApiError::from(e).rename_field("--sampler", "sampler"))?;
        let init_image = match &self.init_image {
            Some(i) => {
                let bytes = decode("init_image", &i.data)?;
                if bytes.len() != i.width * i.height * 3 * 4 {
                    return Err(ApiError::field(
                        "init_image",
                        "pixel data does not match its size",
                    ));
                }
                let data = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Some(RgbImage {
                    width: i.width,
                    height: i.height,
                    data,
                })
            }
            None => None,
        };
        let mask = match &self.mask {
            Some(m) => Some(Mask {
                width: m.width,
                height: m.height,
                luma: decode("mask", &m.luma)?,
                blur: m.blur,
            }),
            None => None,
        };
        let request = Request {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            sampler,
            seed: self.seed,
            width: self.width,
            height: self.height,
            batch: self.batch,
            clip_skip: self.clip_skip,
            strength: self.strength,
            embeddings: model.concepts(Some(self.concepts.as_slice()), "concepts", &[])?,
        };
        Ok(JobSpec {
            request,
            init_image,
            mask,
        })
    }
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD
        .decode(text)
        .map_err(|e| ApiError::field(field, format!("not base64: {e}")))
}

/// A job's state in the KV bucket, written by the gateway (queued, cancelled while queued)
/// and by the worker that runs it (everything else).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub images: usize,
    /// Unix seconds.
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    /// The worker running (or that ran) it.
    pub worker: Option<String>,
    /// Deliveries so far: more than 1 means a worker died with it (or lost its lease).
    pub attempts: u64,
    pub error: Option<WireError>,
    pub warnings: Vec<String>,
    /// Images stored so far, in order; the PNG of image `n` is object `{id}/{n}.png`.
    pub results: Vec<WireResult>,
}

impl JobRecord {
    pub fn queued(images: usize) -> JobRecord {
        JobRecord {
            state: "queued".into(),
            images,
            created: secs(SystemTime::now()),
            started: None,
            finished: None,
            worker: None,
            attempts: 0,
            error: None,
            warnings: Vec::new(),
            results: Vec::new(),
        }
    }

    pub fn job_state(&self) -> JobState {
        match self.state.as_str() {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Queued { position: 0 },
        }
    }

    pub fn is_finished(&self) -> bool {
        self.job_state().is_finished()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub status: u16,
    pub field: Option<String>,
    pub message: String,
}

impl From<&ApiError> for WireError {
    fn from(e: &ApiError) -> WireError {
        WireError {
            status: e.status.as_u16(),
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

impl From<&WireError> for ApiError {
    fn from(e: &WireError) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            field: e.field.clone(),
            message: e.message.clone(),
            retry_after: None,
        }
    }
}

/// One stored image's description: its seed, infotext and parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireResult {
    pub seed: u64,
    pub infotext: String,
    pub info: GenerationInfo,
}

impl WireResult {
    pub fn new(info: &GenerationInfo, infotext: &str) -> WireResult {
        WireResult {
            seed: info.seed,
            infotext: infotext.to_string(),
            info: info.clone(),
        }
    }
}

/// A step, on the job's progress subject.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireStep {
    pub image: usize,
    pub images: usize,
    pub step: usize,
    pub steps: usize,
    pub progress: f64,
    pub eta: Option<f64>,
    /// PNG, base64.
    pub preview: Option<String>,
    pub seconds: f64,
}

impl WireStep {
    pub fn new(s: &StepUpdate) -> WireStep {
        WireStep {
            image: s.image,
            images: s.images,
            step: s.step,
            steps: s.steps,
            progress: s.progress,
            eta: s.eta,
            preview: s.preview.as_ref().map(|p| STANDARD.encode(p.as_slice())),
            seconds: s.seconds,
        }
    }

    pub fn update(self) -> StepUpdate {
        StepUpdate {
            image: self.image,
            images: self.images,
            step: self.step,
            steps: self.steps,
            progress: self.progress,
            eta: self.eta,
            preview: self
                .preview
                .and_then(|p| STANDARD.decode(p).ok())
                .map(std::sync::Arc::new),
            seconds: self.seconds,
        }
    }
}

pub fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn time(s: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0))
}
