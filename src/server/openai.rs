//! OpenAI's images API (`POST /v1/images/generations`, `GET /v1/models`), for chat front
//! ends that generate pictures through it.
//!
//! A request is a job like any other (queued, cancelled when the client disconnects); the
//! settings OpenAI has no field for (steps, guidance, sampler) are the server's defaults, the
//! seed is random. Errors come in OpenAI's shape, `{"error": {"message", "type", "param",
//! "code"}}`, because OpenAI's client libraries read that and nothing else.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::pipeline::Request;

use super::error::{ApiError, ApiJson};
use super::input;
use super::jobs::{JobSpec, JobState};
use super::native;
use super::state::AppState;

/// OpenAI's limit on `n`.
const MAX_N: u32 = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/models", get(models))
}

/// `POST /v1/images/generations`. Fields OpenAI defines that change nothing here (`user`,
/// `moderation`) are accepted; those that would change the picture are accepted only at
/// the value we produce (`quality`, `style`, `output_format`, `background`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GenerationsRequest {
    pub prompt: Option<String>,
    pub n: Option<u32>,
    /// `WxH`, or `auto`: the model's native size (also when absent).
    pub size: Option<String>,
    /// `url` (OpenAI's default) or `b64_json`.
    pub response_format: Option<String>,
    pub model: Option<String>,
    pub quality: Option<String>,
    pub style: Option<String>,
    pub output_format: Option<String>,
    pub background: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GenerationsResponse {
    /// Unix seconds.
    pub created: u64,
    pub data: Vec<ImageData>,
}

#[derive(Debug, Serialize)]
pub struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelItem>,
}

#[derive(Debug, Serialize)]
pub struct ModelItem {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

/// An [`ApiError`] answered in OpenAI's shape: a 422 becomes OpenAI's 400
/// `invalid_request_error` with the field as `param`.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl OpenAiError {
    /// The status and JSON body OpenAI would answer with.
    fn status_and_body(&self) -> (StatusCode, serde_json::Value) {
        let e = &self.0;
        let status = match e.status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let (kind, code) = match status {
            StatusCode::TOO_MANY_REQUESTS => ("requests", Some("rate_limit_exceeded")),
            StatusCode::UNAUTHORIZED => ("invalid_request_error", Some("invalid_api_key")),
            s if s.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        let body = json!({
            "error": { "message": e.message, "type": kind, "param": e.field, "code": code }
        });
        (status, body)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

async fn generations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<GenerationsRequest>, ApiError>,
) -> Result<Json<GenerationsResponse>, OpenAiError> {
    let ApiJson(req) = body?;
    let as_url = match req.response_format.as_deref() {
        None | Some("url") => true,
        Some("b64_json") => false,
        Some(other) => return Err(invalid("response_format", "\"url\" or \"b64_json\"", other).into()),
    };
    // Checked before the job, so that a bad Host never costs a generation.
    let base = if as_url { Some(base_url(&headers)?) } else { None };
    let prompt = prompt(&req)?;
    let embeddings = state.model.concepts(None, "prompt", &[&prompt])?;
    let mut request = Request {
        seed: input::seed("seed", None)?,
        embeddings,
        ..Request::new(prompt)
    };
    request.batch = match req.n.unwrap_or(1) {
        n @ 1..=MAX_N => n as usize,
        n => return Err(invalid("n", &format!("a number from 1 to {MAX_N}"), &n.to_string()).into()),
    };
    if let Some((w, h)) = size(req.size.as_deref())? {
        (request.width, request.height) = (Some(w), Some(h));
    }
    check_model(&state, req.model.as_deref())?;
    for (field, value, allowed) in [
        ("quality", &req.quality, &["auto", "standard"][..]),
        ("style", &req.style, &["vivid"][..]),
        ("output_format", &req.output_format, &["png"][..]),
        ("background", &req.background, &["auto", "opaque"][..]),
    ] {
        if let Some(v) = value {
            if !allowed.contains(&v.as_str()) {
                let expected = format!("{} (what sd-wgpu makes)", allowed.join(" or "));
                return Err(invalid(field, &expected, v).into());
            }
        }
    }
    request.check().map_err(|e| rename(ApiError::from(e)))?;

    let spec = JobSpec {
        request,
        init_image: None,
        mask: None,
    };
    let snap = state.run(spec).await.map_err(rename)?;
    if snap.state != JobState::Done {
        let e = snap.error.unwrap_or_else(|| {
            ApiError::new(StatusCode::CONFLICT, "the job was cancelled before it finished")
        });
        return Err(rename(e).into());
    }
    let data = snap
        .images_done
        .iter()
        .enumerate()
        .map(|(n, image)| match &base {
            Some(base) => ImageData {
                b64_json: None,
                url: Some(format!("{base}{}", native::output_url(&snap.id, n))),
            },
            None => ImageData {
                b64_json: Some(input::base64(&image.png)),
                url: None,
            },
        })
        .collect();
    Ok(Json(GenerationsResponse {
        created: unix_seconds(snap.created),
        data,
    }))
}

/// Our request fields under OpenAI's names.
fn rename(e: ApiError) -> ApiError {
    e.rename_field("batch", "n")
        .rename_field("width", "size")
        .rename_field("height", "size")
        .rename_field("concepts", "prompt")
}

fn invalid(field: &str, expected: &str, found: &str) -> ApiError {
    ApiError::field(field, format!("expected {expected}, found {found:?}"))
}

fn prompt(req: &GenerationsRequest) -> Result<String, ApiError> {
    match &req.prompt {
        Some(p) if !p.trim().is_empty() => Ok(p.clone()),
        _ => Err(ApiError::field(
            "prompt",
            "a prompt is required (a non-empty string)",
        )),
    }
}

/// `WxH` as pixels; `None` for `auto` or absent (the model's native size).
fn size(size: Option<&str>) -> Result<Option<(usize, usize)>, ApiError> {
    let Some(text) = size.filter(|s| *s != "auto") else {
        return Ok(None);
    };
    let parsed = text
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
    match parsed {
        Some(wh) => Ok(Some(wh)),
        None => Err(invalid(
            "size",
            "\"WIDTHxHEIGHT\" such as \"512x512\", or \"auto\"",
            text,
        )),
    }
}

/// `model`, when given, must name the loaded model (one model per server).
fn check_model(state: &AppState, model: Option<&str>) -> Result<(), OpenAiError> {
    match model {
        None => Ok(()),
        Some(m) if m == state.model.name => Ok(()),
        Some(m) => {
            let message = format!(
                "The model `{m}` does not exist: this server has one model, `{}` (GET /v1/models)",
                state.model.name
            );
            let body = ApiError::new(StatusCode::NOT_FOUND, message);
            Err(OpenAiError(ApiError {
                field: Some("model".into()),
                ..body
            }))
        }
    }
}

/// `http://HOST` from the request's Host header: the address the client reached us at.
fn base_url(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("response_format \"url\" needs the request's Host header, to build the URL")
        })?;
    Ok(format!("http://{host}"))
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelItem {
            id: state.model.name.clone(),
            object: "model",
            created: 0,
            owned_by: "sd-wgpu",
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(None).unwrap(), None);
        assert_eq!(size(Some("auto")).unwrap(), None);
        assert_eq!(size(Some("64x96")).unwrap(), Some((64, 96)));
        for bad in ["64", "64x", "x64", "1024X1024", "-8x8", "big"] {
            let e = size(Some(bad)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("size"), "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn errors_in_openai_shape() {
        let (status, body) = OpenAiError(ApiError::field("n", "expected 1 to 10")).status_and_body();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "OpenAI answers bad values with 400"
        );
        assert_eq!(
            body,
            json!({"error": {"message": "expected 1 to 10", "type": "invalid_request_error",
                             "param": "n", "code": null}})
        );
        let (status, body) = OpenAiError(ApiError::internal("device lost")).status_and_body();
        assert_eq!(
            (status, &body["error"]["type"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &json!("server_error"))
        );
        let r = OpenAiError(ApiError::too_many(3, "full")).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
