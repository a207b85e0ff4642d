//! `serve --lora-dir`: prompts with A1111's `<lora:NAME:WEIGHT>` tags in the A1111 and the
//! native APIs; the worker switches LoRA sets between jobs and back exactly; a tag that
//! names nothing is a 422 on `prompt`.

use std::path::PathBuf;

use serde_json::json;

use super::a1111::{images, info};
use super::common::{small_job, Server};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn prompt_tags_pick_each_jobs_loras() {
    let model = root().join("pipeline/model");
    let loras = root().join("lora/loras");
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--lora-dir",
        loras.to_str().unwrap(),
    ]);
    let t2i = |prompt: &str| {
        server.post(
            "/sdapi/v1/txt2img",
            &json!({"prompt": prompt, "seed": 3, "steps": 3, "width": 64, "height": 64}),
        )
    };
    let tagged = "a fox <lora:lora_a:0.8>";
    let first = t2i(tagged);
    let with_lora = images(&first);
    let infotext = info(&first)["infotexts"][0].as_str().unwrap().to_string();
    assert!(infotext.starts_with(tagged), "{infotext}");
    assert!(
        infotext.contains("Lora hashes: \"lora_a: a79ba973f188\""),
        "{infotext}"
    );

    let plain = t2i("a fox ");
    assert!(!info(&plain)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Lora hashes"));
    assert_ne!(images(&plain), with_lora, "the LoRA changes the image");
    assert_eq!(images(&t2i(tagged)), with_lora, "switching back is exact");

    // The native API, two LoRAs with separate text-encoder / UNet weights.
    let reply = server.post(
        "/api/jobs",
        &small_job("a fox <lora:lora_a:0.5:1> <lora:lora_b:-1>", 1, 2),
    );
    assert_eq!(reply.status, 202, "{}", reply.text());
    let snap = server.wait_job(reply.json()["id"].as_str().unwrap());
    assert_eq!(snap["state"], "done", "{snap}");
    let params = snap["results"][0]["parameters"].as_str().unwrap();
    assert!(
        params.contains("Lora hashes: \"lora_a: a79ba973f188, lora_b: b961f5cf5637\""),
        "{params}"
    );

    // A1111's list, as clients read it to offer the tags.
    let list = server.get("/sdapi/v1/loras").json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lora_a", "lora_a_peft", "lora_b"]);
    assert!(list[2]["path"].as_str().unwrap().ends_with("lora_b.pt"), "{list}");

    let bad = t2i("a fox <lora:nope:1>");
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert_eq!(bad.field().as_deref(), Some("prompt"));
    assert!(
        bad.message().contains("lora_a, lora_a_peft, lora_b"),
        "{}",
        bad.message()
    );
}
