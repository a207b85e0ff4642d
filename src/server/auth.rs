//! `--api-key`: every API route asks for the key, compared in constant time; and the rule
//! that a server reachable from other machines has a key unless told otherwise.
//!
//! The key is accepted as `Authorization: Bearer KEY`, `X-API-Key: KEY`, or an `api_key`
//! query parameter (browsers' `EventSource` cannot send headers). Exempt: the page and its
//! files (it asks for the key and sends it on every API call), `/healthz` and `/readyz`
//! (probes), and `/outputs/...` (a job's id is 64 random bits: knowing it is the
//! capability; OpenAI clients fetch `url` results without our key).

use std::net::SocketAddr;

use crate::{Error, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;

/// Paths anyone may GET.
const OPEN_PATHS: [&str; 6] = [
    "/",
    "/app.js",
    "/style.css",
    "/favicon.svg",
    "/healthz",
    "/readyz",
];

pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = state.api_key.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) || path.starts_with("/outputs/") {
        return next.run(req).await;
    }
    let given = given_key(req.headers(), req.uri().query());
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.as_bytes())));
    if ok {
        return next.run(req).await;
    }
    let why = if given.is_some() {
        "the API key is wrong"
    } else {
        "this server needs an API key"
    };
    let mut response = ApiError::unauthorized(format!(
        "{why}: send it as \"Authorization: Bearer KEY\" or \"X-API-Key: KEY\""
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The key a request carries, if any.
fn given_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let in_query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("api_key=")));
    bearer.or(x_api_key).or(in_query).map(str::trim)
}

/// Refuses to listen beyond loopback without a key, unless `--insecure-no-auth`.
pub fn check_bind(addrs: &[SocketAddr], api_key: Option<&str>, insecure_no_auth: bool) -> Result<()> {
    let public: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.ip().to_string())
        .collect();
    if public.is_empty() || api_key.is_some() || insecure_no_auth {
        return Ok(());
    }
    Err(Error::invalid(
        "--host",
        format!(
            "{} is reachable from other machines: pass --api-key KEY (clients then send it), or \
             --insecure-no-auth to serve without one",
            public.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_key_others_do() {
        let local: SocketAddr = "127.0.0.1:7860".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7860".parse().unwrap();
        check_bind(&[local], None, false).unwrap();
        let e = check_bind(&[any], None, false).unwrap_err().to_string();
        assert!(e.contains("--api-key") && e.contains("0.0.0.0"), "{e}");
        check_bind(&[any], Some("k"), false).unwrap();
        check_bind(&[any], None, true).unwrap();
    }

    #[test]
    fn key_from_headers_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(given_key(&h, Some("a=1&api_key=k2")), Some("k2"));
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(given_key(&h, None), Some("k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k0"));
        assert_eq!(given_key(&h, None), Some("k0"));
    }
}
