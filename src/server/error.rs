//! The one error type of the server, [`ApiError`], and [`ApiJson`], the JSON body
//! extractor every route uses so that a bad body is answered like any other bad input.
//!
//! Every error is JSON: `{"error": {"field": "steps", "message": "..."}, "detail": "..."}`.
//! `field` names the request field at fault (absent when none is); `detail` repeats the
//! message because A1111 clients read that key.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answer: status, the field at fault, what was expected and found.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub field: Option<String>,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 422: a field's value is out of range or unusable.
    pub fn field(name: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(name.into()),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
    }

    /// 400: the request cannot be read at all (malformed JSON...).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 429: the queue is full; try again in `retry_after` seconds.
    pub fn too_many(retry_after: u64, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// 503: the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit of {limit} bytes (--max-body-bytes)"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The same error under another API's spelling of the field (`cfg_scale` ->
    /// `cfg_scale`, `init_image` -> `init_images`...); other fields are kept.
    pub fn rename_field(mut self, from: &str, to: &str) -> ApiError {
        if self.field.as_deref() == Some(from) {
            self.field = Some(to.to_string());
        }
        self
    }

    /// The JSON body (without status), also stored in failed jobs' snapshots.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": { "field": self.field, "message": self.message },
            "detail": self.message,
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The library's errors: a bad argument names its field (the CLI flag the library names,
/// in our request's spelling), a bad input file is the client's fault, a cancel is 409,
/// anything else (device lost, out of memory...) is the server's.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        use crate::Error;
        match e {
            Error::InvalidArgument { name, msg } => match field_of(&name) {
                Some(field) => ApiError::field(field, msg),
                None => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{name}: {msg}")),
            },
            Error::BadFile { msg, .. } => ApiError::field("init_image", msg),
            Error::Cancelled => ApiError::new(StatusCode::CONFLICT, "the job was cancelled"),
            e => ApiError::internal(e.to_string()),
        }
    }
}

/// The request field of a name the library gives an argument: `--cfg-scale` ->
/// `cfg_scale`, `--embedding FILE` -> `concepts`, an input image -> `init_image`.
fn field_of(name: &str) -> Option<String> {
    if let Some(flag) = name.strip_prefix("--") {
        let flag = flag.split_whitespace().next().unwrap_or(flag);
        return Some(match flag {
            "embedding" => "concepts".to_string(),
            "image" => "init_image".to_string(),
            f => f.replace('-', "_"),
        });
    }
    if name.contains("input image") {
        return Some("init_image".into());
    }
    if name.starts_with("embedding ") {
        return Some("concepts".into());
    }
    match name {
        "sampler" | "steps" | "prompt" | "negative_prompt" | "mask" => Some(name.to_string()),
        _ => None,
    }
}

/// A JSON request body. Unlike axum's `Json`, every rejection is an [`ApiError`]:
/// 415 without `Content-Type: application/json` (so that another site's page cannot post
/// to a loopback server without a CORS preflight), 413 over the body limit, 400 for
/// malformed JSON, 422 naming the field for a wrong type, a missing or an unknown field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a JSON body with the header Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            field: None,
            message: format!(
                "the request body is larger than the server's limit (--max-body-bytes): {}",
                e.body_text()
            ),
            retry_after: None,
        }
    } else {
        ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
    }
}

/// Parses `bytes` as `T`, naming the field of a data error by its path (`steps`,
/// `concepts[2]`, `init_images[0]`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(value) => Ok(value),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_position(&inner.to_string());
            if !inner.is_data() {
                return Err(ApiError::bad_request(format!("malformed JSON: {inner}")));
            }
            // serde reports a missing field at its parent's path, naming it only in the message
            // (`missing field `prompt``); an unknown one's path already ends in its name.
            let named = ["missing field `", "unknown field `"]
                .iter()
                .find_map(|p| message.strip_prefix(p))
                .and_then(|rest| rest.split('`').next());
            let field = match (named, path.as_str()) {
                (Some(name), ".") => name.to_string(),
                (Some(name), p) if !p.ends_with(name) => format!("{p}.{name}"),
                (_, p) => p.to_string(),
            };
            Err(ApiError::field(field, message))
        }
    }
}

/// serde_json's data errors end in ` at line 1 column 12`: the field already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        prompt: String,
        steps: Option<usize>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<T>(br#"{"prompt": "a", "steps": "x"}"#).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("steps"))
        );
        assert!(e.message.contains("expected usize"), "{}", e.message);
        let e = parse_json::<T>(br#"{"steps": 3}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("prompt"));
        let e = parse_json::<T>(br#"{"prompt": "a", "stepz": 3}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("stepz"));
        let e = parse_json::<T>(br#"{"prompt": "a""#).unwrap_err();
        assert_eq!((e.status, e.field), (StatusCode::BAD_REQUEST, None));
    }

    #[test]
    fn library_errors_name_our_fields() {
        let e: ApiError = crate::Error::invalid("--cfg-scale", "must be ...").into();
        assert_eq!(e.field.as_deref(), Some("cfg_scale"));
        let e: ApiError = crate::Error::invalid("--embedding x.pt", "bad").into();
        assert_eq!(e.field.as_deref(), Some("concepts"));
        let e = e.rename_field("concepts", "embeddings");
        assert_eq!(e.field.as_deref(), Some("embeddings"));
    }
}
