//! Operations: `/healthz` (the process answers), `/readyz` (model loaded and the queue
//! takes jobs), `/metrics` (Prometheus), `/openapi.json` (every route, openapi.rs).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::openapi;
use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while a job would be queued; 503 when the queue is full or the server is stopping
/// (the model is loaded before the server listens, so that is always true here).
async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.jobs.accepting();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let (counts, queued) = state.jobs.counts();
    let running = counts.iter().any(|(s, n)| *s == "running" && *n > 0);
    let body = json!({
        "ready": ready,
        "model": state.model.name,
        "queue": { "waiting": queued, "capacity": state.jobs.capacity(), "running": running },
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let (counts, queued) = state.jobs.counts();
    let text = state
        .jobs
        .metrics()
        .render(&counts, queued, state.jobs.capacity());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi_json() -> Json<Value> {
    Json(openapi::document())
}
