//! THE router: every API's routes merged in one place, with the layers all of them share
//! (API key, body limit, panics as 500 JSON, JSON 404/405).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use tower_http::catch_panic::CatchPanicLayer;

use super::error::ApiError;
use super::state::AppState;
use super::{a1111, auth, native, openai, ops, page};

pub fn build(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .merge(native::routes())
        .merge(ops::routes())
        .merge(a1111::routes())
        .merge(openai::routes())
        .merge(page::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), refuse_large_bodies))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// How much of a refused body is read (and dropped) before the 413 goes out, and for how long.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A body announced larger than `--max-body-bytes` is refused before any handler sees it.
/// The 413 goes out after the client has sent its body (up to [`DRAIN_BYTES`]): answering
/// first and closing the connection while the client still writes makes its kernel report
/// a reset or a broken pipe instead of our answer. Bodies without a length are limited by
/// [`DefaultBodyLimit`] as they are read.
async fn refuse_large_bodies(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.limits.max_body_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match announced {
        Some(n) if n > limit as u64 => {
            let _ = tokio::time::timeout(DRAIN_TIME, drain(req.into_body())).await;
            ApiError::payload_too_large(limit).into_response()
        }
        _ => next.run(req).await,
    }
}

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > DRAIN_BYTES {
            return;
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {} (GET /openapi.json lists them)", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method} (GET /openapi.json lists the routes)",
            uri.path()
        ),
    )
}

/// A panic in a handler is a bug in sd-wgpu; the client gets JSON, the server goes on.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("internal error (a bug in sd-wgpu: please report it)").into_response()
}
