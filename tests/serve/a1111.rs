//! A1111's API (`/sdapi/v1/*`) as its clients use it: the images are the CLI's PNG bytes
//! for the same settings, `info` carries A1111's fields, A1111's sampler names work, what we
//! cannot honour is a 422 naming it, unknown fields are ignored, progress and interrupt act
//! on the running job, and png-info reads our PNGs back.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{temp_dir, Reply, Server, TIMEOUT};

const PROMPT: &str = "a red circle on a blue background";

/// Runs `sd-wgpu args` on the CPU in `dir` (its own model cache); panics on failure.
fn cli(dir: &Path, args: &[&str]) {
    let out = Command::new(crate::common::bin())
        .current_dir(dir)
        .env("SD_WGPU_CACHE", dir.join("cache"))
        .args(args)
        .args(["--backend", "cpu", "--quiet", "--overwrite"])
        .output()
        .expect("run sd-wgpu");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn images(reply: &Reply) -> Vec<Vec<u8>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|b| STANDARD.decode(b.as_str().unwrap()).unwrap())
        .collect()
}

fn info(reply: &Reply) -> Value {
    serde_json::from_str(reply.json()["info"].as_str().expect("info is a string")).unwrap()
}

/// The `parameters` text chunk of a PNG.
fn png_parameters(png: &[u8]) -> String {
    let reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let info = reader.info();
    let chunk = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters");
    chunk.expect("a parameters chunk").text.clone()
}

#[test]
fn txt2img_is_the_clis_png_with_a1111s_info() {
    let server = Server::start(&[]);
    let reply = server.post(
        "/sdapi/v1/txt2img",
        &json!({
            "prompt": PROMPT, "negative_prompt": "green", "seed": 7, "steps": 4,
            "sampler_name": "Euler a", "cfg_scale": 7, "width": 64, "height": 64,
            "batch_size": 1, "n_iter": 2,
            // Ignored as A1111 ignores them: unknown, and img2img's own fields.
            "no_such_field": {"x": 1}, "mask": "not read by txt2img", "save_images": true,
        }),
    );
    let got = images(&reply);
    assert_eq!(got.len(), 2);

    let dir = temp_dir("a1111-txt2img");
    cli(
        &dir,
        &[
            "txt2img",
            "--prompt",
            PROMPT,
            "--negative-prompt",
            "green",
            "--seed",
            "7",
            "--steps",
            "4",
            "--sampler",
            "Euler a",
            "--cfg-scale",
            "7",
            "--width",
            "64",
            "--height",
            "64",
            "--batch",
            "2",
            "--output",
            "cli.png",
        ],
    );
    for (i, png) in got.iter().enumerate() {
        let expected = std::fs::read(dir.join(format!("cli-{i}.png"))).unwrap();
        assert!(png == &expected, "image {i} differs from the CLI's cli-{i}.png");
    }

    let info = info(&reply);
    assert_eq!(info["seed"], 7);
    assert_eq!(info["all_seeds"], json!([7, 8]));
    assert_eq!(info["all_prompts"], json!([PROMPT, PROMPT]));
    assert_eq!(info["negative_prompt"], "green");
    assert_eq!(info["all_negative_prompts"], json!(["green", "green"]));
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(
        (info["steps"].as_u64(), info["cfg_scale"].as_f64()),
        (Some(4), Some(7.0))
    );
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(info["batch_size"], 1);
    assert_eq!(info["subseed_strength"], 0.0);
    assert_eq!(info["clip_skip"], 1);
    let infotexts: Vec<&str> = info["infotexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let in_pngs: Vec<String> = got.iter().map(|p| png_parameters(p)).collect();
    assert_eq!(infotexts, in_pngs);
    assert!(infotexts[1].contains("Seed: 8") && infotexts[0].contains("Sampler: Euler a"));
    let stamp = info["job_timestamp"].as_str().unwrap();
    assert!(
        stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{stamp}"
    );
    let models = server.get("/sdapi/v1/sd-models").json();
    assert_eq!(info["sd_model_name"], models[0]["model_name"]);
    assert_eq!(info["sd_model_hash"], models[0]["hash"]);

    // `parameters` echoes the request as A1111 does: txt2img's fields with defaults filled in.
    let params = &reply.json()["parameters"];
    assert_eq!(
        (params["prompt"].as_str(), params["seed"].as_i64()),
        (Some(PROMPT), Some(7))
    );
    assert_eq!(
        (params["n_iter"].as_u64(), params["enable_hr"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(params["sampler_index"], "Euler");
    assert!(params.get("no_such_field").is_none() && params.get("mask").is_none());

    // png-info reads the first image's parameters back, parsed as A1111 parses them.
    let read = server.post("/sdapi/v1/png-info", &json!({"image": STANDARD.encode(&got[0])}));
    assert_eq!(read.status, 200, "{}", read.text());
    let read = read.json();
    assert_eq!(read["info"], in_pngs[0]);
    let p = &read["parameters"];
    assert_eq!(
        (p["Prompt"].as_str(), p["Negative prompt"].as_str()),
        (Some(PROMPT), Some("green"))
    );
    assert_eq!((p["Seed"].as_str(), p["Steps"].as_str()), (Some("7"), Some("4")));
    assert_eq!(
        (p["Size-1"].as_str(), p["Size-2"].as_str()),
        (Some("64"), Some("64"))
    );
    assert_eq!(p["Sampler"], "Euler a");
    assert_eq!(read["items"], json!({}));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a1111_sampler_names_and_schedulers() {
    let server = Server::start(&[]);
    let list = server.get("/sdapi/v1/samplers").json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in [
        "Euler a",
        "Euler",
        "DPM++ 2M",
        "DPM++ 2M Karras",
        "DDIM",
        "PLMS",
        "LMS",
        "Heun",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let karras = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "DPM++ 2M Karras")
        .unwrap();
    assert!(karras["aliases"]
        .as_array()
        .unwrap()
        .contains(&json!("dpm++2m-karras")));
    assert_eq!(karras["options"]["scheduler"], "karras");

    // The old name, A1111 1.9's name + scheduler, and ours: one sampler, the same image.
    let base = json!({"prompt": PROMPT, "seed": 3, "steps": 4, "width": 64, "height": 64});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let reply = server.post("/sdapi/v1/txt2img", &body);
        (images(&reply), info(&reply)["sampler_name"].clone())
    };
    let (old, name) = with(json!({"sampler_name": "DPM++ 2M Karras"}));
    assert_eq!(name, "DPM++ 2M Karras");
    assert_eq!(
        with(json!({"sampler_name": "DPM++ 2M", "scheduler": "Karras"})).0,
        old
    );
    assert_eq!(with(json!({"sampler_index": "dpm++2m-karras"})).0, old);
    assert_ne!(
        with(json!({"sampler_name": "DPM++ 2M", "scheduler": "Automatic"})).0,
        old
    );

    let r = server.post(
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "sampler_name": "UniPC"}),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (422, Some("sampler_name")),
        "{}",
        r.text()
    );
    assert!(r.message().contains("Euler a"), "{}", r.message());
    let r = server.post(
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "sampler_index": "nope"}),
    );
    assert_eq!(r.field().as_deref(), Some("sampler_index"), "{}", r.text());
    let r = server.post(
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "scheduler": "Exponential"}),
    );
    assert_eq!(r.field().as_deref(), Some("scheduler"), "{}", r.text());
}

#[test]
fn img2img_is_the_clis_png() {
    let server = Server::start(&[]);
    let dir = temp_dir("a1111-img2img");
    // 72x56, not the output size: A1111's resize_mode 0 ("Just resize") scales it to 64x64,
    // as the CLI's --width/--height do.
    let input = image::RgbImage::from_fn(72, 56, |x, y| image::Rgb([(x * 3) as u8, (y * 4) as u8, 200]));
    input.save(dir.join("in.png")).unwrap();
    let data_url = format!(
        "data:image/png;base64,{}",
        STANDARD.encode(std::fs::read(dir.join("in.png")).unwrap())
    );
    let reply = server.post(
        "/sdapi/v1/img2img",
        &json!({
            "init_images": [data_url], "denoising_strength": 0.6, "prompt": PROMPT, "seed": 11,
            "steps": 5, "sampler_name": "Euler", "cfg_scale": 6.5, "width": 64, "height": 64,
            "resize_mode": 0, "enable_hr": true, // txt2img's field: ignored here, as A1111 does
        }),
    );
    let got = images(&reply);
    cli(
        &dir,
        &[
            "img2img",
            "--image",
            "in.png",
            "--strength",
            "0.6",
            "--prompt",
            PROMPT,
            "--seed",
            "11",
            "--steps",
            "5",
            "--sampler",
            "euler",
            "--cfg-scale",
            "6.5",
            "--width",
            "64",
            "--height",
            "64",
            "--output",
            "cli.png",
        ],
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0] == std::fs::read(dir.join("cli.png")).unwrap(),
        "img2img differs from the CLI's"
    );
    let info = info(&reply);
    assert_eq!(info["denoising_strength"], 0.6);
    assert!(info["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Denoising strength: 0.6"));
    let params = &reply.json()["parameters"];
    assert_eq!(
        params["init_images"],
        Value::Null,
        "init images are not echoed by default"
    );
    assert!(params.get("enable_hr").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

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
        (json!({"init_images": [good], "mask": good}), "mask", "inpainting"),
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

    // 8 images of 60 steps: seconds of work, interrupted early.
    let url = server.url.clone();
    let long = thread::spawn(move || {
        let body =
            json!({"prompt": PROMPT, "seed": 1, "steps": 60, "batch_size": 8, "width": 64, "height": 64});
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
    assert_eq!(running["state"]["sampling_steps"], 60);
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
