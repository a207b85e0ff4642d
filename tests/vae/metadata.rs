//! A1111's `VAE hash` / `VAE` in the PNG, from the library, the CLI and `serve`.

use sd_wgpu::pipeline::NoProgress;
use sd_wgpu::{DType, Device};
use serde_json::Value;

use super::{cli, edited_folder, load, model, serve, sha256_10, vae};

/// A1111's `VAE hash` (the file's SHA-256, 10 hex digits) and `VAE` (the
/// file name) after `Model`; nothing without `--vae`.
#[test]
fn metadata_names_the_vae_as_a1111() {
    let req = sd_wgpu::pipeline::Request {
        steps: 2,
        width: Some(64),
        height: Some(64),
        ..sd_wgpu::pipeline::Request::new("a fox")
    };
    let file = vae("tiny-vae.safetensors");
    let pipe = load(Some(file.clone()), Device::Cpu, DType::F32).unwrap();
    let info = &pipe.txt2img(&req, &mut NoProgress).unwrap().images[0].info;
    let hash = sha256_10(&file);
    assert_eq!(info.vae_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(info.vae_name.as_deref(), Some("tiny-vae.safetensors"));
    let text = info.to_a1111();
    assert!(
        text.contains(&format!(
            "Model: model, VAE hash: {hash}, VAE: tiny-vae.safetensors, "
        )),
        "{text}"
    );

    let pipe = load(Some(vae("vae_diffusers")), Device::Cpu, DType::F32).unwrap();
    assert_eq!(pipe.vae_name(), Some("vae_diffusers"));
    let weights = vae("vae_diffusers/diffusion_pytorch_model.safetensors");
    assert_eq!(pipe.vae_hash(), Some(sha256_10(&weights)));
    // A pipeline folder's vae/ is named with its folder.
    let pipe = load(Some(model()), Device::Cpu, DType::F32).unwrap();
    assert_eq!(pipe.vae_name(), Some("model/vae"));

    let pipe = load(None, Device::Cpu, DType::F32).unwrap();
    let info = &pipe.txt2img(&req, &mut NoProgress).unwrap().images[0].info;
    assert_eq!((info.vae_name.as_ref(), info.vae_hash.as_ref()), (None, None));
    assert!(!info.to_a1111().contains("VAE"));
}

/// `txt2img --vae` writes the VAE into the PNG; `serve --vae` generates with
/// it, says so in `/api/info` and in A1111's `info`; a bad `--vae` is one line.
#[test]
fn cli_and_server_take_vae() {
    let file = vae("tiny-vae.safetensors");
    let hash = sha256_10(&file);
    let d = cli::tmp("vae");
    let (model, file_arg) = (model().display().to_string(), file.display().to_string());
    let args = [
        "txt2img",
        "--model",
        &model,
        "--vae",
        &file_arg,
        "--prompt",
        "a fox",
        "--steps",
        "2",
        "--seed",
        "5",
        "--backend",
        "cpu",
        "--output",
        "v.png",
    ];
    let run = cli::sd(&d, &args);
    assert!(run.ok, "{}", run.stderr);
    let params = cli::parameters(&d.join("v.png"));
    assert!(
        params.contains(&format!(", VAE hash: {hash}, VAE: tiny-vae.safetensors, ")),
        "{params}"
    );

    let mut bad = args;
    bad[14] = "w.png";
    bad[4] = "no-such-vae.safetensors";
    cli::one_line_error(
        &cli::sd(&d, &bad),
        &["--vae", "no-such-vae.safetensors", "does not exist"],
    );
    // A VAE that does not fit: the library's refusal, on one line too.
    let levels = edited_folder("cli-levels", |c| {
        c["block_out_channels"] = serde_json::json!([8, 16, 16, 32])
    });
    let levels = levels.display().to_string();
    bad[4] = &levels;
    cli::one_line_error(&cli::sd(&d, &bad), &["--vae", "do not match"]);

    // `info --vae`: the VAE shown and checked in place of the model's.
    let run = cli::sd(&d, &["info", "--model", &model, "--vae", &file_arg]);
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("  file:   {file_arg}\n")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("VAE replaced by") && run.stdout.contains("check:   every weight matches"));
    cli::one_line_error(
        &cli::sd(&d, &["info", "--model", &model, "--vae", &levels]),
        &["do not match"],
    );

    let server = serve::Server::start(&["--model", &model, "--vae", &file_arg]);
    let vaes = server.get("/sdapi/v1/sd-vae").json();
    assert_eq!(
        vaes,
        serde_json::json!([{"model_name": "tiny-vae.safetensors", "filename": "tiny-vae.safetensors"}])
    );
    let reply = server.post(
        "/sdapi/v1/options",
        &serde_json::json!({"sd_vae": "tiny-vae.safetensors"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = server.post(
        "/sdapi/v1/options",
        &serde_json::json!({"sd_vae": "other.safetensors"}),
    );
    assert_eq!(reply.status, 422, "{}", reply.text());
    let info = server.get("/api/info").json();
    assert_eq!(
        info["vae"],
        serde_json::json!({"name": "tiny-vae.safetensors", "hash": hash})
    );
    let reply = server.post(
        "/sdapi/v1/txt2img",
        &serde_json::json!({"prompt": "a fox", "seed": 5, "steps": 2, "width": 64, "height": 64,
                            "override_settings": {"sd_vae": "tiny-vae.safetensors"}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let a1111: Value = serde_json::from_str(reply.json()["info"].as_str().unwrap()).unwrap();
    assert_eq!(a1111["sd_vae_name"], "tiny-vae.safetensors");
    assert_eq!(a1111["sd_vae_hash"], hash.as_str());
    let text = a1111["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains(&format!("VAE hash: {hash}, VAE: tiny-vae.safetensors")),
        "{text}"
    );
}
