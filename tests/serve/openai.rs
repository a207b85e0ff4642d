//! OpenAI's images API: the response shape for `b64_json` and `url` (the URL fetched),
//! `/v1/models`, and errors in OpenAI's `{"error": {message, type, param, code}}` shape.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{Reply, Server};

/// A PNG's size and its `parameters` text chunk.
fn png_facts(png: &[u8]) -> ((u32, u32), String) {
    let reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters");
    (
        (info.width, info.height),
        text.expect("a parameters chunk").text.clone(),
    )
}

fn openai_error(r: &Reply, status: u16, param: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json()["error"].clone();
    assert_eq!(e["param"], param, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["type"].is_string() && e.get("code").is_some(), "{e}");
    e
}

#[test]
fn generations_as_b64_json_and_url() {
    let server = Server::start(&[]);
    let model = server.get("/v1/models").json();
    assert_eq!(model["object"], "list");
    let name = model["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(model["data"][0]["object"], "model");

    let reply = server.post(
        "/v1/images/generations",
        &json!({"prompt": "a red circle", "n": 2, "size": "64x64", "response_format": "b64_json",
                "model": name, "user": "someone", "quality": "standard"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let mut seeds = Vec::new();
    for item in data {
        assert!(item.get("url").is_none());
        let png = STANDARD.decode(item["b64_json"].as_str().unwrap()).unwrap();
        let (size, text) = png_facts(&png);
        assert_eq!(size, (64, 64));
        assert!(text.starts_with("a red circle\n"), "{text}");
        seeds.push(
            text.split("Seed: ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(
        seeds[1],
        seeds[0] + 1,
        "one request is one batch: consecutive seeds"
    );

    // `url` (OpenAI's default format): our own /outputs URL, on the host the client used.
    let reply = server.post(
        "/v1/images/generations",
        &json!({"prompt": "a blue square", "size": "64x64"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let url = reply.json()["data"][0]["url"].as_str().unwrap().to_string();
    let path = url
        .strip_prefix(&server.url)
        .unwrap_or_else(|| panic!("{url} is not on {}", server.url));
    assert!(
        path.starts_with("/outputs/") && path.ends_with("/0.png"),
        "{path}"
    );
    let fetched = server.get(path);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.header("content-type"), Some("image/png"));
    let (size, text) = png_facts(&fetched.body);
    assert_eq!(size, (64, 64));
    assert!(text.starts_with("a blue square\n"), "{text}");
}

#[test]
fn errors_in_openais_shape() {
    let server = Server::start(&[]);
    let post = |body: Value| server.post("/v1/images/generations", &body);
    let e = openai_error(&post(json!({"n": 1})), 400, "prompt");
    assert_eq!(e["type"], "invalid_request_error");
    openai_error(&post(json!({"prompt": "x", "n": 11})), 400, "n");
    openai_error(&post(json!({"prompt": "x", "n": "two"})), 400, "n");
    openai_error(&post(json!({"prompt": "x", "size": "big"})), 400, "size");
    openai_error(&post(json!({"prompt": "x", "size": "60x64"})), 400, "size");
    openai_error(
        &post(json!({"prompt": "x", "response_format": "jpeg"})),
        400,
        "response_format",
    );
    openai_error(&post(json!({"prompt": "x", "style": "natural"})), 400, "style");
    let e = openai_error(&post(json!({"prompt": "x", "model": "dall-e-3"})), 404, "model");
    assert!(e["message"].as_str().unwrap().contains("dall-e-3"), "{e}");
    let r = server.request(
        "POST",
        "/v1/images/generations",
        &[("Content-Type", "application/json")],
        Some(b"{".to_vec()),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}
