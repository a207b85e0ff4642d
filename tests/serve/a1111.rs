//! A1111's generation routes as its clients use them: the images are the CLI's PNG bytes
//! for the same settings, `info` and `parameters` carry A1111's fields, A1111's sampler
//! names work, unknown fields are ignored, and png-info reads our PNGs back.
//! (`a1111_routes`: refusals, progress and interrupt, models, options, embeddings.)

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{temp_dir, Reply, Server};

pub const PROMPT: &str = "a red circle on a blue background";

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

pub fn images(reply: &Reply) -> Vec<Vec<u8>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|b| STANDARD.decode(b.as_str().unwrap()).unwrap())
        .collect()
}

pub fn info(reply: &Reply) -> Value {
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
