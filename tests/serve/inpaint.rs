//! Inpainting through the native jobs API and A1111's img2img with `mask`: the CLI's PNG bytes
//! for the same settings (`sd-wgpu inpaint`), and the refusals of what the server cannot do.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use super::common::{bin, small_job, temp_dir, Server};

/// `sd-wgpu inpaint` with the same settings (the demo model), its file's bytes.
fn cli_png(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let status = Command::new(bin())
        .arg("inpaint")
        .args(args)
        .args(["--backend", "cpu", "--quiet", "--overwrite", "--output"])
        .arg(&out)
        .env("SD_WGPU_CACHE", dir.join("cache"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
    std::fs::read(out).unwrap()
}

#[test]
fn inpainting_is_the_clis_png() {
    let server = Server::start(&[]);
    let dir = temp_dir("inpaint");
    let image = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
    image.save(dir.join("in.png")).unwrap();
    // White (repaint) disc on black, as RGBA without transparency: its luminance is the mask.
    let mask = image::RgbaImage::from_fn(64, 64, |x, y| {
        let d = (x as i32 - 30).pow(2) + (y as i32 - 34).pow(2);
        let v = if d < 18 * 18 { 255 } else { 0 };
        image::Rgba([v, v, v, 255])
    });
    mask.save(dir.join("mask.png")).unwrap();
    let b64 = |f: &str| STANDARD.encode(std::fs::read(dir.join(f)).unwrap());
    let (img_path, mask_path) = (dir.join("in.png"), dir.join("mask.png"));
    let cli_args = |strength: &str, blur: &str, extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--image",
            img_path.to_str().unwrap(),
            "--mask",
            mask_path.to_str().unwrap(),
            "--prompt",
            "a red circle",
            "--seed",
            "5",
            "--steps",
            "6",
            "--sampler",
            "euler",
            "--cfg-scale",
            "7",
            "--strength",
            strength,
            "--mask-blur",
            blur,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Native: the default strength is inpainting's (1), the default blur A1111's (4).
    let mut job = small_job("a red circle", 5, 6);
    job["init_image"] = json!(b64("in.png"));
    job["mask"] = json!(format!("data:image/png;base64,{}", b64("mask.png")));
    job["invert_mask"] = json!(true);
    let id = server.post("/api/jobs", &job).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = server.wait_job(&id);
    assert_eq!(snap["state"], "done", "{snap}");
    let served = server.get(&format!("/outputs/{id}/0.png")).body;
    let args = cli_args("1", "4", &["--invert-mask"]);
    let cli = cli_png(
        &dir,
        "n.png",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(served == cli, "native inpainting PNG differs from the CLI's");

    // A1111: whole picture, "original" fill, one blur radius.
    let reply = server.post(
        "/sdapi/v1/img2img",
        &json!({
            "init_images": [b64("in.png")], "mask": b64("mask.png"), "mask_blur": 2,
            "inpaint_full_res": false, "inpainting_fill": 1, "denoising_strength": 0.7,
            "prompt": "a red circle", "seed": 5, "steps": 6, "sampler_name": "Euler",
            "cfg_scale": 7, "width": 64, "height": 64,
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let got = STANDARD
        .decode(reply.json()["images"][0].as_str().unwrap())
        .unwrap();
    let args = cli_args("0.7", "2", &[]);
    let cli = cli_png(
        &dir,
        "a.png",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(got == cli, "A1111 inpainting PNG differs from the CLI's");
    let info: serde_json::Value = serde_json::from_str(reply.json()["info"].as_str().unwrap()).unwrap();
    assert!(
        info["infotexts"][0].as_str().unwrap().contains("Mask blur: 2"),
        "{info}"
    );

    // Refusals name the field.
    let wide = image::RgbImage::new(72, 64);
    wide.save(dir.join("wide.png")).unwrap();
    for (body, field, needle) in [
        (json!({"mask": b64("mask.png")}), "mask", "init_image"),
        (json!({"mask_blur": 3}), "mask_blur", "inpainting only"),
        (
            json!({"init_image": b64("in.png"), "mask": b64("wide.png")}),
            "mask",
            "72x64",
        ),
        (
            json!({"init_image": b64("in.png"), "mask": b64("mask.png"), "mask_blur": 999}),
            "mask_blur",
            "999",
        ),
    ] {
        let mut job = small_job("a red circle", 5, 2);
        for (k, v) in body.as_object().unwrap() {
            job[k] = v.clone();
        }
        let reply = server.post("/api/jobs", &job);
        assert_eq!(reply.status, 422, "{}", reply.text());
        let error = &reply.json()["error"];
        assert_eq!(error["field"], field, "{error}");
        assert!(error["message"].as_str().unwrap().contains(needle), "{error}");
    }
    let base = json!({"init_images": [b64("in.png")], "mask": b64("mask.png"), "prompt": "x"});
    for (extra, field) in [
        (json!({}), "inpaint_full_res"),
        (
            json!({"inpaint_full_res": false, "denoising_strength": 0.5}),
            "inpainting_fill",
        ),
        (
            json!({"inpaint_full_res": false, "denoising_strength": 1.0, "mask_round": false}),
            "mask_round",
        ),
        (
            json!({"inpaint_full_res": false, "inpainting_fill": 1, "mask_blur_x": 2, "mask_blur_y": 5}),
            "mask_blur_y",
        ),
    ] {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let reply = server.post("/sdapi/v1/img2img", &body);
        assert_eq!(reply.status, 422, "{}", reply.text());
        assert_eq!(reply.json()["error"]["field"], field, "{}", reply.text());
    }
    let _ = std::fs::remove_dir_all(dir);
}
