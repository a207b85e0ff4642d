//! Our own API, the one the page uses: jobs with ids, per-job progress over server-sent
//! events, images by URL, the model's description and a token counter.
//!
//! - `POST /api/jobs` (a [`JobRequest`]: the CLI's flags in snake_case) -> 202 + snapshot;
//!   `?wait=true` answers when the job ends (a disconnect cancels it)
//! - `GET /api/jobs/{id}`, `DELETE /api/jobs/{id}` (cancel)
//! - `GET /api/jobs/{id}/events`: `queued`, `started`, `step`, `image`, then one of
//!   `done`, `failed`, `cancelled` carrying the final snapshot; then the stream ends
//! - `GET /outputs/{id}/{n}.png`: image `n` of a job, the CLI's PNG bytes
//! - `GET /api/info`, `POST /api/tokenize`

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::pipeline::{Mask, Request, DEFAULT_MASK_BLUR};
use crate::schedulers::SamplerKind;
use crate::text::{chunk_prompt, CHUNK_TOKENS};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ApiJson};
use super::input::{base64, decode_image, decode_mask, seed};
use super::jobs::{JobEvent, JobSnapshot, JobSpec, JobState, StepUpdate};
use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", post(create))
        .route("/api/jobs/{id}", get(show).delete(cancel))
        .route("/api/jobs/{id}/events", get(events))
        .route("/outputs/{id}/{file}", get(output))
        .route("/api/info", get(info))
        .route("/api/tokenize", post(tokenize))
}

/// A generation request: the flags of `sd-wgpu txt2img` / `img2img`, snake_case. Absent
/// fields take the CLI's defaults; unknown fields are refused (a typo is not ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    pub steps: Option<usize>,
    pub cfg_scale: Option<f32>,
    /// Ours or A1111's name (`euler-a`, `Euler a`); absent: the model's default.
    pub sampler: Option<String>,
    /// -1 or absent: random (the snapshot's images say which).
    pub seed: Option<i128>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub batch: Option<usize>,
    pub clip_skip: Option<usize>,
    /// img2img and inpainting only (inpainting's default: 1).
    pub strength: Option<f64>,
    /// Base64 or a data URL; present means img2img (inpainting with `mask`).
    pub init_image: Option<String>,
    /// Inpainting: the mask, base64 or a data URL, the image's size; white repaints.
    pub mask: Option<String>,
    /// Inpainting: the mask's Gaussian blur in pixels (default 4, A1111's).
    pub mask_blur: Option<usize>,
    /// Inpainting: repaint the black area instead.
    pub invert_mask: Option<bool>,
    /// Trigger words of loaded concepts the prompts may use; absent: the loaded concepts
    /// whose trigger occurs in the prompts.
    pub concepts: Option<Vec<String>>,
}

impl JobRequest {
    /// The job, every field checked; errors name our fields.
    pub fn to_spec(&self, state: &AppState) -> Result<JobSpec, ApiError> {
        let defaults = Request::default();
        let sampler = self
            .sampler
            .as_deref()
            .map(|s| s.parse::<SamplerKind>())
            .transpose()
            .map_err(|e| ApiError::from(e).rename_field("--sampler", "sampler"))?;
        if self.strength.is_some() && self.init_image.is_none() {
            return Err(ApiError::field(
                "strength",
                "applies to img2img only: send init_image too, or leave strength out",
            ));
        }
        let init_image = self
            .init_image
            .as_deref()
            .map(|s| decode_image("init_image", s))
            .transpose()?;
        let mask = self.mask()?;
        let request = Request {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps.unwrap_or(defaults.steps),
            cfg_scale: self.cfg_scale.unwrap_or(defaults.cfg_scale),
            sampler,
            seed: seed("seed", self.seed)?,
            width: self.width,
            height: self.height,
            batch: self.batch.unwrap_or(defaults.batch),
            clip_skip: self.clip_skip.unwrap_or(defaults.clip_skip),
            // Inpainting's default is the CLI's (diffusers'): 1.
            strength: self
                .strength
                .unwrap_or(if mask.is_some() { 1.0 } else { defaults.strength }),
            embeddings: state.model.concepts(
                self.concepts.as_deref(),
                "concepts",
                &[&self.prompt, &self.negative_prompt],
            )?,
        };
        Ok(JobSpec {
            request,
            init_image,
            mask,
        })
    }

    /// The inpainting mask, blurred and inverted as asked; the mask fields need `mask`, which
    /// needs `init_image`.
    fn mask(&self) -> Result<Option<Mask>, ApiError> {
        let Some(text) = self.mask.as_deref() else {
            for (field, given) in [
                ("mask_blur", self.mask_blur.is_some()),
                ("invert_mask", self.invert_mask.is_some()),
            ] {
                if given {
                    return Err(ApiError::field(
                        field,
                        "applies to inpainting only: send mask (and init_image) too, or leave it out",
                    ));
                }
            }
            return Ok(None);
        };
        if self.init_image.is_none() {
            return Err(ApiError::field(
                "mask",
                "inpainting needs the image the mask applies to: send init_image too",
            ));
        }
        let mask = decode_mask("mask", text, self.mask_blur.unwrap_or(DEFAULT_MASK_BLUR))?;
        Ok(Some(match self.invert_mask {
            Some(true) => mask.inverted(),
            _ => mask,
        }))
    }
}

/// Queues a job: 202 with its snapshot at once, or with `?wait=true` the final snapshot once
/// it ends (200 done, 409 cancelled, the error's status when failed); a client that
/// disconnects while waiting cancels the job.
async fn create(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ApiJson(body): ApiJson<JobRequest>,
) -> Result<Response, ApiError> {
    let wait = wants_wait(query.as_deref())?;
    let spec = body.to_spec(&state)?;
    if wait {
        let snap = state.run(spec).await?;
        let status = match (&snap.state, &snap.error) {
            (JobState::Done, _) => StatusCode::OK,
            (JobState::Failed, Some(e)) => e.status,
            (JobState::Cancelled, _) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return Ok((status, Json(snapshot_json(&snap))).into_response());
    }
    let id = state.submit(spec).await?;
    let snap = state.jobs.snapshot(&id).ok_or_else(|| gone(&id))?;
    let location = format!("/api/jobs/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(snapshot_json(&snap)),
    )
        .into_response())
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let snap = state.jobs.snapshot(&id).ok_or_else(|| gone(&id))?;
    Ok(Json(snapshot_json(&snap)))
}

/// Cancels: a queued job ends at once, the running one at its next step (its snapshot
/// says `running` until then). An ended job is left as it ended.
async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !state.jobs.cancel(&id) {
        return Err(gone(&id));
    }
    let snap = state.jobs.snapshot(&id).ok_or_else(|| gone(&id))?;
    let status = if snap.state.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(snapshot_json(&snap))).into_response())
}

/// `?wait=true` (or `1`); absent or `false`/`0`: answer at once.
fn wants_wait(query: Option<&str>) -> Result<bool, ApiError> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="));
    match value {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(v) => Err(ApiError::field(
            "wait",
            format!("expected true or false, found {v:?}"),
        )),
    }
}

fn gone(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no job {id:?}: unknown id, or it ended longer ago than the retention time"
    ))
}

/// The job's events as server-sent events, from its present state to its end.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (snap, rx) = state.jobs.subscribe(&id).ok_or_else(|| gone(&id))?;
    // Where the job is now, so that a late subscriber starts from the right place.
    let mut first = VecDeque::new();
    match snap.state {
        JobState::Queued { position } => first.push_back(queued_event(position)),
        JobState::Running => {
            first.push_back(Event::default().event("started").data("{}"));
            for (index, img) in snap.images_done.iter().enumerate() {
                first.push_back(image_event(&snap.id, index, img.seed));
            }
        }
        _ => first.push_back(final_event(&snap)),
    }
    let ended = snap.state.is_finished();
    let stream = stream::unfold(
        (first, rx, ended, snap.id),
        |(mut first, mut rx, ended, id)| async move {
            if let Some(event) = first.pop_front() {
                return Some((Ok(event), (first, rx, ended, id)));
            }
            if ended {
                return None;
            }
            loop {
                let event = match rx.recv().await {
                    Ok(JobEvent::Queued { position }) => queued_event(position),
                    Ok(JobEvent::Started) => Event::default().event("started").data("{}"),
                    Ok(JobEvent::Step(step)) => step_event(&step),
                    Ok(JobEvent::Image { index, seed }) => image_event(&id, index, seed),
                    Ok(JobEvent::Finished(snap)) => {
                        return Some((Ok(final_event(&snap)), (first, rx, true, id)));
                    }
                    // A slow reader missed some steps; the later ones and the end still come.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (first, rx, false, id)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn queued_event(position: usize) -> Event {
    Event::default()
        .event("queued")
        .data(json!({ "position": position }).to_string())
}

fn step_event(s: &StepUpdate) -> Event {
    let data = json!({
        "image": s.image,
        "images": s.images,
        "step": s.step,
        "steps": s.steps,
        "progress": s.progress,
        "eta": s.eta,
        "preview": s.preview.as_ref().map(|p| base64(p)),
    });
    Event::default().event("step").data(data.to_string())
}

fn image_event(id: &str, index: usize, seed: u64) -> Event {
    let data = json!({ "index": index, "seed": seed, "url": output_url(id, index) });
    Event::default().event("image").data(data.to_string())
}

fn final_event(snap: &JobSnapshot) -> Event {
    Event::default()
        .event(snap.state.name())
        .data(snapshot_json(snap).to_string())
}

pub fn output_url(id: &str, index: usize) -> String {
    format!("/outputs/{id}/{index}.png")
}

/// The JSON of a snapshot (GET /api/jobs/{id}, the SSE end event).
pub fn snapshot_json(s: &JobSnapshot) -> Value {
    let secs = |t: Option<SystemTime>| {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    };
    let images: Vec<Value> = s
        .images_done
        .iter()
        .enumerate()
        .map(|(index, img)| {
            json!({
                "index": index,
                "url": output_url(&s.id, index),
                "seed": img.seed,
                "width": img.info.width,
                "height": img.info.height,
                "sampler": img.info.sampler,
                "parameters": img.infotext,
            })
        })
        .collect();
    let mut v = json!({
        "id": s.id,
        "state": s.state.name(),
        "image": s.image,
        "images": s.images,
        "step": s.step,
        "steps": s.steps,
        "progress": s.progress,
        "eta": s.eta,
        "results": images,
        "error": s.error.as_ref().map(|e| json!({ "field": e.field, "message": e.message })),
        "warnings": s.warnings,
        "created": secs(Some(s.created)),
        "started": secs(s.started),
        "finished": secs(s.finished),
    });
    if let JobState::Queued { position } = s.state {
        v["position"] = json!(position);
    }
    if s.state == JobState::Running {
        v["preview"] = json!(s.preview.as_ref().map(|p| base64(p)));
    }
    v
}

/// Image `n` of a job: `/outputs/{id}/{n}.png`.
async fn output(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index: usize = file
        .strip_suffix(".png")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("expected /outputs/{id}/N.png, found {file:?}")))?;
    let img = state
        .jobs
        .image(&id, index)
        .ok_or_else(|| ApiError::not_found(format!("job {id:?} has no image {index} (yet, or any more)")))?;
    let disposition = format!("inline; filename=\"sd-wgpu-{}.png\"", img.seed);
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::CACHE_CONTROL,
                "private, max-age=3600, immutable".to_string(),
            ),
        ],
        img.png.as_ref().clone(),
    )
        .into_response())
}

/// The model, its samplers and concepts, the request defaults and the server's limits.
async fn info(State(state): State<AppState>) -> Json<Value> {
    let m = &state.model;
    let l = &state.limits;
    let d = Request::default();
    let samplers: Vec<Value> = SamplerKind::ALL
        .iter()
        .map(|k| json!({ "name": k.name(), "a1111_name": k.a1111_name(), "aliases": k.aliases(), "description": k.description() }))
        .collect();
    let concepts: Vec<Value> = m
        .concepts
        .iter()
        .map(|c| json!({ "trigger": c.trigger, "vectors": c.vectors, "hash": c.embedding.hash }))
        .collect();
    Json(json!({
        "model": m.name,
        "hash": m.hash,
        "vae": m.vae.as_ref().map(|(name, hash)| json!({ "name": name, "hash": hash })),
        "device": m.device,
        "version": env!("CARGO_PKG_VERSION"),
        "samplers": samplers,
        "concepts": concepts,
        "defaults": {
            "steps": d.steps,
            "cfg_scale": d.cfg_scale,
            "width": m.default_size.0,
            "height": m.default_size.1,
            "sampler": m.default_sampler.name(),
            "batch": d.batch,
            "clip_skip": d.clip_skip,
            "strength": d.strength,
        },
        "limits": {
            "max_pixels": l.max_pixels,
            "max_steps": l.max_steps,
            "max_batch": l.max_batch,
            "max_clip_skip": m.clip_layers,
            "size_multiple": m.vae_scale,
            "queue": l.queue,
            "max_body_bytes": l.max_body_bytes,
            "retention_seconds": l.retention.as_secs(),
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    text: String,
}

/// A1111's token counter: tokens in the prompt (loaded concepts' triggers count as their
/// vectors, `<lora:...>` tags none: they are cut out before encoding) and per 75-token chunk.
async fn tokenize(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let m = &state.model;
    let chunks = chunk_prompt(&m.tokenizer, &m.triggers, &crate::lora::strip_tags(&body.text)).map_err(
        |e| match e {
            crate::Error::InvalidArgument { msg, .. } => ApiError::field("text", msg),
            e => ApiError::from(e),
        },
    )?;
    let per_chunk: Vec<Value> = chunks
        .chunks
        .iter()
        .map(|c| json!({ "tokens_used": c.tokens, "limit": CHUNK_TOKENS }))
        .collect();
    Ok(Json(json!({
        "tokens": chunks.token_count,
        "capacity": chunks.token_capacity(),
        "chunks": per_chunk,
    })))
}
