//! What every handler gets: [`AppState`], the job queue plus what the server knows about
//! its model and limits, and the checks every API's requests go through before they are
//! queued ([`AppState::submit`]).

use std::sync::Arc;
use std::time::Duration;

use crate::pipeline::TextualInversion;
use crate::schedulers::SamplerKind;
use crate::text::{ClipTokenizer, Triggers};

use super::cluster::gateway::Gateway;
use super::error::ApiError;
use super::jobs::{JobId, JobSnapshot, JobSpec, Jobs};
use super::loras::ServerLoras;

#[derive(Clone)]
pub struct AppState {
    pub jobs: Jobs,
    pub model: Arc<ModelInfo>,
    pub limits: Arc<Limits>,
    /// `--api-key`: `None` when requests need none.
    pub api_key: Option<Arc<str>>,
    /// `serve --nats`: jobs go to the cluster; `jobs` is then its mirror (cluster/gateway.rs).
    pub cluster: Option<Arc<Gateway>>,
}

/// The loaded model, as the APIs describe it. Built by the worker once the model loaded.
pub struct ModelInfo {
    /// The checkpoint's folder or file name (`sd-wgpu-demo` for the built-in model).
    pub name: String,
    /// A1111's model hash (first 10 hex digits of the weights' SHA-256).
    pub hash: Option<String>,
    /// The VAE replacing the model's (`--vae`): its name and A1111 hash.
    pub vae: Option<(String, Option<String>)>,
    pub default_sampler: SamplerKind,
    /// The model's native size (512x512 for SD 1.5, 64x64 for the demo model).
    pub default_size: (usize, usize),
    /// Sides must be multiples of it (8).
    pub vae_scale: usize,
    /// Text encoder layers: the largest clip skip.
    pub clip_layers: usize,
    /// The textual-inversion concepts loaded (`--embeddings DIR`, or the shipped `<hazard>`
    /// with the demo model).
    pub concepts: Vec<Concept>,
    pub tokenizer: ClipTokenizer,
    /// The concepts' triggers, for token counts that match generation's.
    pub triggers: Triggers,
    /// The device, as `sd-wgpu txt2img` prints it.
    pub device: String,
    /// `--lora` / `--lora-dir`: what prompt tags resolve against.
    pub loras: Arc<ServerLoras>,
}

pub struct Concept {
    pub trigger: String,
    /// Token vectors the trigger stands for.
    pub vectors: usize,
    pub embedding: Arc<TextualInversion>,
}

/// What one request may ask for; chosen at startup.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Width x height of one image (`--max-pixels`).
    pub max_pixels: usize,
    pub max_steps: usize,
    /// Images per request.
    pub max_batch: usize,
    /// Jobs waiting (`--queue`); the running one is not counted.
    pub queue: usize,
    /// Request bodies (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// How long ended jobs and their images are kept (`--retention`).
    pub retention: Duration,
}

/// The defaults: 1 megapixel (1024x1024, four times SD 1.5's native pixels; larger images
/// repeat their subject anyway), A1111's slider maxima for steps (150) and batch size (8).
pub const DEFAULT_MAX_PIXELS: usize = 1024 * 1024;
pub const MAX_STEPS: usize = 150;
pub const MAX_BATCH: usize = 8;

impl ModelInfo {
    /// The concepts a request names; `None`: those whose trigger occurs in `texts` (the
    /// prompts), so that any loaded trigger works as in A1111, and a concept the prompts
    /// do not mention adds no "unused embedding" warning. An unknown name is a 422 on
    /// `field` (`concepts[1]`).
    pub fn concepts(
        &self,
        names: Option<&[String]>,
        field: &str,
        texts: &[&str],
    ) -> Result<Vec<TextualInversion>, ApiError> {
        let Some(names) = names else {
            return Ok(self
                .concepts
                .iter()
                .filter(|c| texts.iter().any(|t| t.contains(&c.trigger)))
                .map(|c| (*c.embedding).clone())
                .collect());
        };
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                self.concepts
                    .iter()
                    .find(|c| &c.trigger == name)
                    .map(|c| (*c.embedding).clone())
                    .ok_or_else(|| {
                        let known: Vec<&str> = self.concepts.iter().map(|c| c.trigger.as_str()).collect();
                        ApiError::field(
                            format!("{field}[{i}]"),
                            format!(
                                "expected one of the loaded concepts ({}), found {name:?}",
                                if known.is_empty() {
                                    "none loaded".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        )
                    })
            })
            .collect()
    }
}

impl AppState {
    /// Checks a request against the model and the server's limits, then queues it.
    /// Errors name our fields (`steps`, `cfg_scale`, `width`...); other APIs rename them.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobId, ApiError> {
        self.check(&spec)?;
        match &self.cluster {
            Some(gateway) => gateway.submit(spec).await,
            None => self.jobs.submit(spec),
        }
    }

    /// A synchronous call (A1111, OpenAI, `POST /api/jobs?wait=true`): queues the job and
    /// waits for its end. Dropping the returned future (the client went away) cancels it.
    pub async fn run(&self, spec: JobSpec) -> Result<JobSnapshot, ApiError> {
        let id = self.submit(spec).await?;
        self.jobs
            .wait_or_cancel_on_drop(&id)
            .finish()
            .await
            .ok_or_else(|| ApiError::internal(format!("job {id} ended and was dropped before its answer")))
    }

    /// Every check that needs no model call, so that a bad request is a 4xx now rather
    /// than a failed job later.
    pub fn check(&self, spec: &JobSpec) -> Result<(), ApiError> {
        let req = &spec.request;
        let limits = &self.limits;
        match &spec.init_image {
            Some(image) => {
                req.check_img2img().map(drop)?;
                if let Some(mask) = &spec.mask {
                    mask.check("mask", (image.width, image.height), "init_image")?;
                }
            }
            None => req.check()?,
        }
        if req.steps > limits.max_steps {
            return Err(ApiError::field(
                "steps",
                format!(
                    "must be at most {} on this server, found {}",
                    limits.max_steps, req.steps
                ),
            ));
        }
        if req.batch > limits.max_batch {
            return Err(ApiError::field(
                "batch",
                format!(
                    "must be at most {} on this server, found {}",
                    limits.max_batch, req.batch
                ),
            ));
        }
        if req.clip_skip > self.model.clip_layers {
            return Err(ApiError::field(
                "clip_skip",
                format!(
                    "the text encoder has {0} layers, so at most {0}; found {1}",
                    self.model.clip_layers, req.clip_skip
                ),
            ));
        }
        self.model.loras.for_request(req)?;
        let (width, height) = self.size_of(spec)?;
        if width * height > limits.max_pixels {
            let field = if req.width.is_some() || req.height.is_none() {
                "width"
            } else {
                "height"
            };
            return Err(ApiError::field(
                field,
                format!(
                    "{width}x{height} is {} pixels, more than this server's limit of {} (--max-pixels)",
                    width * height,
                    limits.max_pixels
                ),
            ));
        }
        Ok(())
    }

    /// The size a job will generate at: the request's, else the input image's (rounded
    /// down to a multiple of 8) or the model's native size.
    fn size_of(&self, spec: &JobSpec) -> Result<(usize, usize), ApiError> {
        let m = &self.model;
        let r = match &spec.init_image {
            Some(img) => {
                let size = crate::pipeline::image_io::default_size(img.width, img.height, m.vae_scale);
                let from = format!("the input image ({}x{} px)", img.width, img.height);
                spec.request.size(size, &from, m.vae_scale)
            }
            None => spec
                .request
                .size(m.default_size, "the model's native size", m.vae_scale),
        };
        Ok(r?)
    }
}
