//! A1111's web API (`/sdapi/v1/*`), so that its clients (SillyTavern, Krita and Photoshop
//! plugins, SwarmUI, scripts) drive sd-wgpu unchanged.
//!
//! Files: `schema` (the JSON, field for field as A1111's `modules/api/models.py`),
//! `convert` (A1111's request to our `Request`, the `info` it answers with, the fields we
//! refuse), `pnginfo` (reading `parameters` back from a PNG). Here: the routes.
//!
//! txt2img and img2img are jobs like any other: they queue behind the native API's jobs,
//! show in `/sdapi/v1/progress`, and a client that disconnects cancels its job. The images
//! are the CLI's PNG bytes for the same settings.

mod convert;
mod pnginfo;
mod schema;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::pipeline::{RgbImage, TextualInversion};
use crate::schedulers::SamplerKind;

use super::error::{ApiError, ApiJson};
use super::input::{self, decode_base64, decode_image};
use super::jobs::{JobSnapshot, JobSpec, JobState};
use super::state::AppState;
use convert::Model;
use schema::{
    EmbeddingItem, EmbeddingsResponse, GenerationRequest, GenerationResponse, Kind, LoraItem, PngInfoRequest,
    PngInfoResponse, ProgressQuery, ProgressResponse, ProgressState, SamplerItem, SchedulerItem, SdModelItem,
    SdVaeItem,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/samplers", get(samplers))
        .route("/sdapi/v1/schedulers", get(schedulers))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/sd-vae", get(sd_vae))
        .route("/sdapi/v1/options", get(options).post(set_options))
        .route("/sdapi/v1/embeddings", get(embeddings))
        .route("/sdapi/v1/loras", get(loras))
        .route("/sdapi/v1/png-info", post(png_info))
}

async fn txt2img(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GenerationRequest>,
) -> Result<Json<GenerationResponse>, ApiError> {
    generate(state, req, Kind::Txt2Img).await
}

async fn img2img(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GenerationRequest>,
) -> Result<Json<GenerationResponse>, ApiError> {
    generate(state, req, Kind::Img2Img).await
}

/// Converts, queues, waits (cancelling the job if the client goes away) and answers with
/// the images made. An interrupted job (`/sdapi/v1/interrupt`) answers with the images
/// finished before the interrupt, as A1111 answers with what it has.
async fn generate(
    state: AppState,
    mut req: GenerationRequest,
    kind: Kind,
) -> Result<Json<GenerationResponse>, ApiError> {
    let texts = [req.prompt.as_str(), req.negative_prompt.as_str()];
    let embeddings = state.model.concepts(None, "prompt", &texts)?;
    let model = model(&state, embeddings);
    let request = convert::to_request(&req, kind, &model)?;
    let init_image = match kind {
        Kind::Txt2Img => None,
        Kind::Img2Img => Some(init_image(&req)?),
    };
    let mask = match (kind, req.mask.as_deref()) {
        (Kind::Img2Img, Some(m)) if !m.is_empty() && m != "None" => {
            let mask = input::decode_mask("mask", m, convert::mask_blur(&req)?)?;
            match req.inpainting_mask_invert {
                0 => Some(mask),
                _ => Some(mask.inverted()),
            }
        }
        _ => None,
    };
    // The echo shows the size used, as A1111's shows its default 512.
    req.width = request.width.map(|w| w as u32);
    req.height = request.height.map(|h| h as u32);
    let spec = JobSpec {
        request: request.clone(),
        init_image,
        mask,
    };
    let snap = state.run(spec).await.map_err(convert::rename)?;
    match snap.state {
        JobState::Done | JobState::Cancelled => {}
        _ => {
            let e = snap
                .error
                .unwrap_or_else(|| ApiError::internal("the job failed without a reason"));
            return Err(convert::rename(e));
        }
    }
    let made: Vec<_> = snap
        .images_done
        .iter()
        .map(|i| (&i.info, i.infotext.as_str()))
        .collect();
    let started = snap.started.unwrap_or(snap.created);
    let info = convert::info(&req, &request, &model, &made, convert::job_timestamp(started));
    let images = if req.send_images {
        snap.images_done.iter().map(|i| input::base64(&i.png)).collect()
    } else {
        Vec::new()
    };
    Ok(Json(GenerationResponse {
        images,
        parameters: req.parameters(kind),
        info: serde_json::to_string(&info).map_err(|e| ApiError::internal(e.to_string()))?,
    }))
}

/// img2img's one `init_images` entry (base64 or a data URL), decoded.
fn init_image(req: &GenerationRequest) -> Result<RgbImage, ApiError> {
    let first = req.init_images.as_ref().and_then(|v| v.first()).ok_or_else(|| {
        ApiError::field(
            "init_images",
            "img2img needs one image: a list with one base64 PNG/JPEG/WebP or data URL",
        )
    })?;
    decode_image("init_images[0]", first)
}

/// The loaded model as a conversion sees it, with the embeddings a request uses.
fn model(state: &AppState, embeddings: Vec<TextualInversion>) -> Model<'_> {
    let m = &state.model;
    Model {
        name: &m.name,
        hash: m.hash.as_deref(),
        default_size: m.default_size,
        embeddings,
        vae: m.vae.as_ref().map(|(name, _)| name.as_str()),
    }
}

/// A1111's global progress: the running job, whichever API submitted it.
async fn progress(
    State(state): State<AppState>,
    query: Result<Query<ProgressQuery>, QueryRejection>,
) -> Result<Json<ProgressResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::field("skip_current_image", e.body_text()))?;
    let Some(snap) = state.jobs.current() else {
        return Ok(Json(idle()));
    };
    let current_image = match (&snap.preview, query.skip_current_image) {
        (Some(png), false) => Some(input::base64(png)),
        _ => None,
    };
    Ok(Json(ProgressResponse {
        progress: snap.progress,
        eta_relative: snap.eta.unwrap_or(0.0),
        current_image,
        textinfo: Some(format!(
            "image {} of {}, step {} of {}",
            snap.image + 1,
            snap.images,
            snap.step,
            snap.steps
        )),
        state: running_state(&snap),
    }))
}

fn idle() -> ProgressResponse {
    ProgressResponse {
        progress: 0.0,
        eta_relative: 0.0,
        state: ProgressState {
            skipped: false,
            interrupted: false,
            stopping_generation: false,
            job: String::new(),
            job_count: 0,
            job_timestamp: "0".into(),
            job_no: 0,
            sampling_step: 0,
            sampling_steps: 0,
        },
        current_image: None,
        textinfo: None,
    }
}

fn running_state(snap: &JobSnapshot) -> ProgressState {
    ProgressState {
        skipped: false,
        interrupted: false,
        stopping_generation: false,
        job: snap.id.clone(),
        job_count: snap.images,
        job_timestamp: convert::job_timestamp(snap.started.unwrap_or(snap.created)),
        job_no: snap.image,
        sampling_step: snap.step,
        sampling_steps: snap.steps,
    }
}

/// Stops the running job at its next step; its request answers with the images finished.
async fn interrupt(State(state): State<AppState>) -> Json<Map<String, Value>> {
    state.jobs.interrupt_current();
    Json(Map::new())
}

async fn samplers() -> Json<Vec<SamplerItem>> {
    let items = SamplerKind::ALL
        .into_iter()
        .map(|k| {
            let mut options = Map::new();
            if let (_, Some(schedule)) = k.a1111_parameters() {
                options.insert("scheduler".into(), schedule.to_lowercase().into());
            }
            SamplerItem {
                name: k.a1111_name(),
                aliases: std::iter::once(k.name())
                    .chain(k.aliases().iter().copied())
                    .collect(),
                options,
            }
        })
        .collect();
    Json(items)
}

/// The `scheduler` values requests may name (A1111 1.9+).
async fn schedulers() -> Json<Vec<SchedulerItem>> {
    let item = |name, label| SchedulerItem {
        name,
        label,
        aliases: None,
        default_rho: -1.0,
        need_inner_model: false,
    };
    Json(vec![item("automatic", "Automatic"), item("karras", "Karras")])
}

/// The VAE `serve --vae` loaded, if any; `filename` is its name, never a server path.
async fn sd_vae(State(state): State<AppState>) -> Json<Vec<SdVaeItem>> {
    let name = state.model.vae.as_ref().map(|(name, _)| name.clone());
    Json(
        name.into_iter()
            .map(|n| SdVaeItem {
                model_name: n.clone(),
                filename: n,
            })
            .collect(),
    )
}

async fn sd_models(State(state): State<AppState>) -> Json<Vec<SdModelItem>> {
    let model = model(&state, Vec::new());
    Json(vec![SdModelItem {
        title: convert::title(&model),
        model_name: model.name.to_string(),
        hash: model.hash.map(str::to_string),
        sha256: None,
        filename: model.name.to_string(),
        config: None,
    }])
}

/// The settings that describe what we do; `POST` may set each to the value it has.
fn current_options(state: &AppState) -> Map<String, Value> {
    let model = model(state, Vec::new());
    let mut o = Map::new();
    o.insert("sd_model_checkpoint".into(), convert::title(&model).into());
    o.insert("CLIP_stop_at_last_layers".into(), 1.into());
    o.insert("sd_vae".into(), "Automatic".into());
    o.insert("eta_noise_seed_delta".into(), 0.into());
    o.insert("samples_format".into(), "png".into());
    o
}

async fn options(State(state): State<AppState>) -> Json<Map<String, Value>> {
    Json(current_options(&state))
}

/// Accepts what changes nothing: `sd_model_checkpoint` naming the loaded model, and the
/// other settings at the values `GET` shows. Anything else is a 422 naming the key.
async fn set_options(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let model = model(&state, Vec::new());
    let current = current_options(&state);
    for (key, value) in &req {
        let ok = match (key.as_str(), value) {
            ("sd_model_checkpoint", Value::String(name)) => convert::names_model(name, &model),
            ("sd_vae", Value::String(name)) => convert::names_vae(name, &model),
            (key, value) => current.get(key) == Some(value),
        };
        if !ok {
            let expected = match key.as_str() {
                "sd_model_checkpoint" => format!(
                    "the loaded model {:?} (one model per server; start another with --model)",
                    convert::title(&model)
                ),
                _ => format!(
                    "one of the settings GET /sdapi/v1/options shows, at its value ({})",
                    Value::Object(current.clone())
                ),
            };
            return Err(ApiError::field(
                key.clone(),
                format!("expected {expected}, found {value}"),
            ));
        }
    }
    Ok(Json(Value::Null))
}

/// The `--lora-dir` files, as A1111's Lora extension lists them (no metadata).
async fn loras(State(state): State<AppState>) -> Json<Vec<LoraItem>> {
    let dir = state.model.loras.dir.as_ref();
    Json(
        dir.into_iter()
            .flat_map(|d| d.files())
            .map(|(name, path)| LoraItem {
                name: name.to_string(),
                alias: name.to_string(),
                path: path.display().to_string(),
                metadata: Map::new(),
            })
            .collect(),
    )
}

async fn embeddings(State(state): State<AppState>) -> Json<EmbeddingsResponse> {
    let loaded = state
        .model
        .concepts
        .iter()
        .map(|c| {
            let e = &c.embedding.embedding;
            let item = EmbeddingItem {
                step: None,
                sd_checkpoint: None,
                sd_checkpoint_name: None,
                shape: e.width,
                vectors: e.n,
            };
            let value = serde_json::to_value(item).unwrap_or(Value::Null);
            (e.trigger.clone(), value)
        })
        .collect();
    Json(EmbeddingsResponse {
        loaded,
        skipped: Map::new(),
    })
}

/// The `parameters` text of a PNG, its other text chunks, and the text parsed as A1111
/// parses it. An image of another format has no text: `info` is empty.
async fn png_info(ApiJson(req): ApiJson<PngInfoRequest>) -> Result<Json<PngInfoResponse>, ApiError> {
    let bytes = decode_base64("image", req.image.trim())?;
    let (info, items) = match pnginfo::text_chunks(&bytes) {
        Some(found) => found,
        None => {
            image::guess_format(&bytes).map_err(|_| {
                ApiError::field(
                    "image",
                    "expected a base64 image (PNG, JPEG, WebP...), found other data",
                )
            })?;
            (String::new(), Map::new())
        }
    };
    Ok(Json(PngInfoResponse {
        parameters: pnginfo::parse_parameters(&info),
        info,
        items,
    }))
}
