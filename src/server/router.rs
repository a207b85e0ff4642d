//! THE router: every API's routes merged in one place, with the layers all of them share
//! (API key, body limit, panics as 500 JSON, JSON 404/405).

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
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
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
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
