//! A1111's other routes and its refusals: every field we cannot honour and every bad input
//! is a 422 naming it; progress and interrupt act on the running job; models, options and
//! embeddings describe what the server loaded (names, never paths).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::a1111::{images, info, PROMPT};
use crate::common::{Server, TIMEOUT};

#[test]
fn refuses_what_it_cannot_honour_and_bad_input() {
    let server = Server::start(&[]);
    let t2i = |body: Value| server.post("/sdapi/v1/txt2img", &body);
    let r = t2i(json!({"prompt": "x", "enable_hr": true, "restore_faces": true, "hr_scale": 2}));
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("restore_faces")),
        "{}",
        r.text()
    );
    assert!(
        r.message().contains("enable_hr") && r.message().contains("restore_faces"),
        "{}",
        r.message()
    );
    assert_eq!(r.json()["detail"], r.message(), "A1111 clients read `detail`");
    for (body, field) in [
        (json!({"subseed_strength": 0.5}), "subseed_strength"),
        (json!({"tiling": true}), "tiling"),
        (
            json!({"alwayson_scripts": {"controlnet": {"args": []}}}),
            "alwayson_scripts",
        ),
        (json!({"script_name": "x/y/z plot"}), "script_name"),
        (json!({"seed_resize_from_w": 128}), "seed_resize_from_w"),
        (
            json!({"refiner_checkpoint": "sdxl_refiner"}),
            "refiner_checkpoint",
        ),
        (json!({"styles": ["my style"]}), "styles"),
        (json!({"sampler_name": "Euler a", "eta": 0.5}), "eta"),
        (
            json!({"override_settings": {"sd_vae": "kl-f8.vae.pt"}}),
            "override_settings.sd_vae",
        ),
        (
            json!({"override_settings": {"sd_model_checkpoint": "other.safetensors"}}),
            "override_settings.sd_model_checkpoint",
        ),
        (json!({"steps": 0}), "steps"),
        (json!({"steps": "many"}), "steps"),
        (json!({"batch_size": 5, "n_iter": 2}), "batch_size"),
        (json!({"width": 60}), "width"),
        (json!({"seed": -2}), "seed"),
        (
            json!({"override_settings": {"CLIP_stop_at_last_layers": 99}}),
            "override_settings.CLIP_stop_at_last_layers",
        ),
    ] {
        let mut body = body;
        body["prompt"] = json!("x");
        let r = t2i(body.clone());
        assert_eq!(
            (r.status, r.field().as_deref()),
            (422, Some(field)),
            "{body}: {}",
            r.text()
        );
    }
    // Defaults and the loaded model are accepted where they change nothing (no generation:
    // the steps are refused after them).
    let r = t2i(json!({
        "prompt": "x", "steps": 0, "enable_hr": false, "restore_faces": false, "styles": [],
        "subseed_strength": 0, "seed_resize_from_w": -1, "alwayson_scripts": {}, "script_name": "",
        "override_settings": {"sd_model_checkpoint": server.get("/sdapi/v1/sd-models").json()[0]["title"]},
    }));
    assert_eq!(r.field().as_deref(), Some("steps"), "{}", r.text());

    let i2i = |body: Value| server.post("/sdapi/v1/img2img", &body);
    let png = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/readme/circle.png")).unwrap();
    let good = STANDARD.encode(&png);
    for (body, field, needle) in [
        (
            json!({"init_images": ["not base64 at all!"]}),
            "init_images[0]",
            "base64",
        ),
        (
            json!({"init_images": [STANDARD.encode(b"hello, not an image")]}),
            "init_images[0]",
            "decode",
        ),
        (json!({"init_images": []}), "init_images", "one image"),
        (json!({}), "init_images", "one image"),
        (
            json!({"init_images": [good, good]}),
            "init_images",
            "one init image",
        ),
        (
            json!({"init_images": [good], "mask": good}),
            "inpaint_full_res",
            "Only masked",
        ),
        (
            json!({"init_images": [good], "resize_mode": 1}),
            "resize_mode",
            "Just resize",
        ),
        (
            json!({"init_images": [good], "denoising_strength": 1.5}),
            "denoising_strength",
            "1.5",
        ),
    ] {
        let mut body = body;
        body["prompt"] = json!("x");
        let r = i2i(body.clone());
        assert_eq!(
            (r.status, r.field().as_deref()),
            (422, Some(field)),
            "{body}: {}",
            r.text()
        );
        assert!(r.message().contains(needle), "{needle:?} not in {}", r.message());
    }
    let r = server.post("/sdapi/v1/png-info", &json!({"image": "%%%"}));
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("image")),
        "{}",
        r.text()
    );
    let r = server.post(
        "/sdapi/v1/png-info",
        &json!({"image": STANDARD.encode(b"plain text")}),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("image")),
        "{}",
        r.text()
    );
}

#[test]
fn models_options_and_embeddings() {
    let server = Server::start(&[]);
    let models = server.get("/sdapi/v1/sd-models").json();
    let model = &models[0];
    let (title, name) = (
        model["title"].as_str().unwrap(),
        model["model_name"].as_str().unwrap(),
    );
    assert!(title.starts_with(name), "{title}");
    assert_eq!(model["filename"], name, "no server path");
    assert!(!title.contains('/'));
    let options = server.get("/sdapi/v1/options").json();
    assert_eq!(options["sd_model_checkpoint"], title);
    for same in [title, name, &format!("{name}.safetensors")] {
        let r = server.post("/sdapi/v1/options", &json!({"sd_model_checkpoint": same}));
        assert_eq!(r.status, 200, "{same}: {}", r.text());
    }
    let r = server.post(
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"}),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("sd_model_checkpoint")),
        "{}",
        r.text()
    );
    let r = server.post("/sdapi/v1/options", &json!({"samples_format": "jpg"}));
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("samples_format")),
        "{}",
        r.text()
    );

    let emb = server.get("/sdapi/v1/embeddings").json();
    let hazard = &emb["loaded"]["<hazard>"];
    assert!(
        hazard["vectors"].as_u64().unwrap() >= 1 && hazard["shape"].as_u64().unwrap() >= 1,
        "{emb}"
    );
    assert_eq!(emb["skipped"], json!({}));
}

#[test]
fn progress_and_interrupt_act_on_the_running_job() {
    let server = Server::start(&[]);
    let idle = server.get("/sdapi/v1/progress").json();
    assert_eq!(
        (idle["progress"].as_f64(), idle["state"]["job_count"].as_u64()),
        (Some(0.0), Some(0))
    );
    assert_eq!(idle["current_image"], Value::Null);

    // 8 images of 150 steps (the most a request may ask): seconds of work even on a fast
    // CPU; interrupted at its second step.
    let url = server.url.clone();
    let long = thread::spawn(move || {
        let body =
            json!({"prompt": PROMPT, "seed": 1, "steps": 150, "batch_size": 8, "width": 64, "height": 64});
        crate::common::request(
            &crate::common::agent(),
            "POST",
            &format!("{url}/sdapi/v1/txt2img"),
            &[("Content-Type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
    });
    let start = Instant::now();
    let running = loop {
        let p = server.get("/sdapi/v1/progress").json();
        if p["state"]["sampling_step"].as_u64().unwrap_or(0) >= 2 && !p["current_image"].is_null() {
            break p;
        }
        assert!(start.elapsed() < TIMEOUT, "no progress seen: {p}");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(running["state"]["job_count"], 8);
    assert_eq!(running["state"]["sampling_steps"], 150);
    let progress = running["progress"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 1.0, "{running}");
    let preview = STANDARD
        .decode(running["current_image"].as_str().unwrap())
        .unwrap();
    assert!(
        image::load_from_memory(&preview).is_ok(),
        "the preview is an image"
    );
    let skipped = server.get("/sdapi/v1/progress?skip_current_image=true").json();
    assert_eq!(skipped["current_image"], Value::Null);

    let r = server.post("/sdapi/v1/interrupt", &json!({}));
    assert_eq!((r.status, r.json()), (200, json!({})));
    let reply = long.join().unwrap();
    let made = images(&reply);
    assert!(made.len() < 8, "interrupted, yet all {} images made", made.len());
    assert_eq!(info(&reply)["all_seeds"].as_array().unwrap().len(), 8);
    let after = server.get("/sdapi/v1/progress").json();
    assert_eq!(after["state"]["job_count"], 0, "{after}");
}
