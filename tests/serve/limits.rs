//! Every class of bad input gets a 4xx JSON error naming the field and saying what was
//! expected and what was found; the body limit is a 413 JSON error.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::common::{small_job, Server};

/// `(change to a valid job, status, field, words the message must contain)`.
fn cases() -> Vec<(Value, u16, &'static str, Vec<&'static str>)> {
    let b64 = |bytes: &[u8]| json!(STANDARD.encode(bytes));
    vec![
        (
            json!({"steps": "ten"}),
            422,
            "steps",
            vec!["invalid type", "string", "usize"],
        ),
        (json!({"steps": -1}), 422, "steps", vec!["-1"]),
        (json!({"steps": 0}), 422, "steps", vec!["at least 1", "0"]),
        (json!({"steps": 151}), 422, "steps", vec!["at most 150", "151"]),
        (
            json!({"cfg_scale": 101}),
            422,
            "cfg_scale",
            vec!["0 to 100", "101"],
        ),
        (json!({"cfg_scale": true}), 422, "cfg_scale", vec!["invalid type"]),
        (json!({"width": 65}), 422, "width", vec!["multiple of 8", "65"]),
        (json!({"height": 0}), 422, "height", vec!["0"]),
        (
            json!({"width": 128, "height": 128}),
            422,
            "width",
            vec!["128x128", "16384", "8192", "--max-pixels"],
        ),
        (json!({"batch": 9}), 422, "batch", vec!["at most 8", "9"]),
        (json!({"clip_skip": 4}), 422, "clip_skip", vec!["3 layers", "4"]),
        (
            json!({"seed": -2}),
            422,
            "seed",
            vec!["-1 for a random one", "-2"],
        ),
        (json!({"sampler": "dpm3"}), 422, "sampler", vec!["dpm3", "euler"]),
        (
            json!({"concepts": ["<cat>"]}),
            422,
            "concepts[0]",
            vec!["<hazard>", "<cat>"],
        ),
        (json!({"prompt": "(a:1.2.3)"}), 422, "prompt", vec!["1.2.3"]),
        (json!({"prompt": null}), 422, "prompt", vec!["invalid type"]),
        (json!({"stepz": 3}), 422, "stepz", vec!["unknown field", "steps"]),
        (json!({"strength": 0.5}), 422, "strength", vec!["init_image"]),
        (
            json!({"init_image": "not base64!"}),
            422,
            "init_image",
            vec!["base64"],
        ),
        (
            json!({"init_image": "data:image/png,abc"}),
            422,
            "init_image",
            vec!["base64"],
        ),
        (
            json!({"init_image": b64(b"hello, not an image")}),
            422,
            "init_image",
            vec!["decode"],
        ),
        (
            json!({"init_image": "/etc/passwd"}),
            422,
            "init_image",
            vec!["base64"],
        ),
    ]
}

#[test]
fn bad_fields_are_named() {
    let server = Server::start(&["--max-pixels", "8192", "--max-body-bytes", "200000"]);
    for (change, status, field, words) in cases() {
        let mut job = small_job("a red circle", 1, 4);
        for (k, v) in change.as_object().unwrap() {
            job[k] = v.clone();
        }
        let reply = server.post("/api/jobs", &job);
        assert_eq!(reply.status, status, "{change}: {}", reply.text());
        assert_eq!(
            reply.field().as_deref(),
            Some(field),
            "{change}: {}",
            reply.text()
        );
        let message = reply.message();
        for w in words {
            assert!(message.contains(w), "{change}: {w:?} not in {message:?}");
        }
        // A1111 clients read `detail`.
        assert_eq!(reply.json()["detail"], json!(message));
    }
    // A missing required field, malformed JSON, no JSON content type, too large a body.
    let reply = server.post("/api/jobs", &json!({"steps": 4}));
    assert_eq!((reply.status, reply.field().as_deref()), (422, Some("prompt")));
    assert!(reply.message().contains("missing field"));
    let reply = server.request(
        "POST",
        "/api/jobs",
        &[("Content-Type", "application/json")],
        Some(b"{\"prompt\": ".to_vec()),
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.message().contains("malformed JSON"), "{}", reply.text());
    let reply = server.request("POST", "/api/jobs", &[], Some(br#"{"prompt": "a"}"#.to_vec()));
    assert_eq!(reply.status, 415, "{}", reply.text());
    assert!(reply.message().contains("application/json"));
    let mut big = small_job("a red circle", 1, 4);
    big["init_image"] = json!("A".repeat(300_000));
    let reply = server.post("/api/jobs", &big);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.message().contains("--max-body-bytes"), "{}", reply.text());
    // A tiny image is refused by its size, read from its header.
    let mut png = Vec::new();
    image::RgbImage::new(4, 4)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut job = small_job("a red circle", 1, 4);
    job["init_image"] = json!(STANDARD.encode(&png));
    let reply = server.post("/api/jobs", &job);
    assert_eq!(
        (reply.status, reply.field().as_deref()),
        (422, Some("init_image")),
        "{}",
        reply.text()
    );
    assert!(reply.message().contains("4x4"), "{}", reply.text());
    // Unknown routes and methods are JSON too.
    let reply = server.get("/api/nothing");
    assert_eq!(reply.status, 404);
    assert!(reply.message().contains("/api/nothing"));
    let reply = server.request("PUT", "/api/jobs", &[], None);
    assert_eq!(reply.status, 405, "{}", reply.text());
    // Nothing above was queued.
    let metrics = server.get("/metrics").text();
    for state in ["queued", "running", "done", "failed", "cancelled"] {
        let line = format!("sd_wgpu_jobs{{state=\"{state}\"}} 0\n");
        assert!(metrics.contains(&line), "{line:?} not in {metrics}");
    }
}
