//! `/openapi.json`: an OpenAPI 3.1 description of every route, written by hand (the
//! routes are few, and their schemas are the APIs' documentation). tests/serve/ops.rs
//! checks that every route is described.

use serde_json::{json, Value};

/// An operation: summary, optional JSON request body (a schema), responses by status.
fn op(summary: &str, body: Option<Value>, responses: &[(&str, &str, Value)]) -> Value {
    let mut o = json!({ "summary": summary, "responses": {} });
    if let Some(schema) = body {
        o["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": schema } },
        });
    }
    for (status, description, schema) in responses {
        let content = if schema.is_null() {
            json!({})
        } else if schema.get("format").and_then(Value::as_str) == Some("binary") {
            json!({ "image/png": { "schema": schema } })
        } else if schema.get("x-content-type").is_some() {
            json!({ schema["x-content-type"].as_str().unwrap_or("text/plain"): { "schema": { "type": "string" } } })
        } else {
            json!({ "application/json": { "schema": schema } })
        };
        o["responses"][*status] = json!({ "description": description, "content": content });
    }
    o
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The error responses every generating route can give.
fn errors() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("400", "Malformed JSON", r("Error")),
        ("401", "Missing or wrong API key (--api-key)", r("Error")),
        ("413", "Body over --max-body-bytes", r("Error")),
        ("415", "Content-Type is not application/json", r("Error")),
        (
            "422",
            "A field is out of range, of the wrong type, or unknown; `error.field` names it",
            r("Error"),
        ),
        ("429", "Queue full; see the Retry-After header", r("Error")),
        ("503", "Shutting down", r("Error")),
    ]
}

fn with(
    mut first: Vec<(&'static str, &'static str, Value)>,
    more: Vec<(&'static str, &'static str, Value)>,
) -> Vec<(&'static str, &'static str, Value)> {
    first.extend(more);
    first
}

pub fn document() -> Value {
    let text = |ct: &str| json!({ "x-content-type": ct });
    let png = json!({ "type": "string", "format": "binary" });
    let obj = json!({ "type": "object" });
    let mut paths = serde_json::Map::new();
    paths.insert("/api/jobs".into(), json!({ "post": op(
                "Queue a generation (txt2img, or img2img with init_image); ?wait=true answers when it ends, and a disconnect then cancels it",
                Some(r("JobRequest")),
                &with(vec![
                    ("202", "Queued; Location: /api/jobs/{id}", r("Job")),
                    ("200", "?wait=true: done", r("Job")),
                    ("409", "?wait=true: cancelled", r("Job")),
                ], errors()),
            )}));
    paths.insert("/api/jobs/{id}".into(), json!({
                "get": op("A job's state, progress and results", None, &[("200", "The job", r("Job")), ("404", "Unknown or expired id", r("Error"))]),
                "delete": op("Cancel: a queued job at once, the running one at its next step", None, &[
                    ("200", "Already ended", r("Job")), ("202", "Cancel requested", r("Job")), ("404", "Unknown or expired id", r("Error")),
                ]),
            }));
    paths.insert("/api/jobs/{id}/events".into(), json!({ "get": op(
                "Server-sent events: queued {position}, started, step {image, images, step, steps, progress, eta, preview (base64 PNG)}, \
                 image {index, seed, url}, then done/failed/cancelled with the Job; then the stream ends",
                None,
                &[("200", "text/event-stream", text("text/event-stream")), ("404", "Unknown or expired id", r("Error"))],
            )}));
    paths.insert("/outputs/{id}/{index}.png".into(), json!({ "get": op(
                "Image `index` of a job: the PNG the CLI writes for the same settings (A1111 `parameters` chunk); no API key needed (the id is the capability)",
                None,
                &[("200", "PNG", png.clone()), ("404", "No such image (yet, or any more)", r("Error"))],
            )}));
    paths.insert("/api/info".into(), json!({ "get": op("The model, samplers, concepts, defaults and limits", None, &[("200", "Info", r("Info"))]) }));
    paths.insert("/api/tokenize".into(), json!({ "post": op(
                "A1111's token counter: tokens and 75-token chunks of a prompt",
                Some(json!({ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } })),
                &[("200", "Counts", json!({ "type": "object", "properties": {
                    "tokens": { "type": "integer" }, "capacity": { "type": "integer" },
                    "chunks": { "type": "array", "items": { "type": "object", "properties": {
                        "tokens_used": { "type": "integer" }, "limit": { "type": "integer" } } } } } })),
                  ("422", "Prompt syntax error (field text)", r("Error"))],
            )}));
    paths.insert(
        "/healthz".into(),
        json!({ "get": op("Alive (no API key needed)", None, &[("200", "ok", obj.clone())]) }),
    );
    paths.insert(
        "/readyz".into(),
        json!({ "get": op("Ready: model loaded and the queue takes a job (no API key needed)", None, &[
            ("200", "Ready", obj.clone()), ("503", "Queue full or shutting down", obj.clone()),
        ])}),
    );
    paths.insert("/metrics".into(), json!({ "get": op(
                "Prometheus/OpenMetrics text: sd_wgpu_jobs{state}, sd_wgpu_jobs_finished_total{state}, sd_wgpu_jobs_rejected_total, \
                 sd_wgpu_queue_depth, sd_wgpu_queue_capacity, sd_wgpu_step_duration_seconds, sd_wgpu_job_duration_seconds, \
                 sd_wgpu_process_resident_memory_bytes, and on a GPU sd_wgpu_gpu_memory_bytes / sd_wgpu_gpu_memory_peak_bytes",
                None,
                &[("200", "Metrics", text("application/openmetrics-text"))],
            )}));
    paths.insert(
        "/openapi.json".into(),
        json!({ "get": op("This document", None, &[("200", "OpenAPI 3.1", obj.clone())]) }),
    );
    paths.insert("/".into(), json!({ "get": op("The web page (no API key needed; it asks for one)", None, &[("200", "HTML", text("text/html"))]) }));
    paths.insert(
        "/sdapi/v1/txt2img".into(),
        json!({ "post": op(
            "A1111 txt2img (waits for the images; a disconnect cancels)",
            Some(r("A1111Txt2Img")),
            &with(vec![("200", "Images", r("A1111Images"))], errors()),
        )}),
    );
    paths.insert(
        "/sdapi/v1/img2img".into(),
        json!({ "post": op(
            "A1111 img2img: init_images (base64 or data URLs), denoising_strength",
            Some(r("A1111Img2Img")),
            &with(vec![("200", "Images", r("A1111Images"))], errors()),
        )}),
    );
    paths.insert("/sdapi/v1/progress".into(), json!({ "get": op(
                "A1111 progress of the running job: progress, eta_relative, state, current_image (base64 preview)",
                None,
                &[("200", "Progress", json!({ "type": "object", "properties": {
                    "progress": { "type": "number" }, "eta_relative": { "type": "number" },
                    "state": { "type": "object" }, "current_image": { "type": ["string", "null"] } } }))],
            )}));
    paths.insert("/sdapi/v1/interrupt".into(), json!({ "post": op("A1111 interrupt: cancel the running job", None, &[("200", "Done", obj.clone())]) }));
    paths.insert("/sdapi/v1/samplers".into(), json!({ "get": op("A1111 samplers: [{name, aliases, options}]", None, &[("200", "Samplers", json!({ "type": "array" }))]) }));
    paths.insert("/sdapi/v1/schedulers".into(), json!({ "get": op("A1111 1.9 schedulers: the `scheduler` values accepted (Automatic, Karras)", None, &[("200", "Schedulers", json!({ "type": "array" }))]) }));
    paths.insert("/sdapi/v1/sd-vae".into(), json!({ "get": op("A1111 VAEs: the one serve --vae loaded (empty without)", None, &[("200", "VAEs", json!({ "type": "array" }))]) }));
    paths.insert("/sdapi/v1/sd-models".into(), json!({ "get": op("A1111 models: the loaded one", None, &[("200", "Models", json!({ "type": "array" }))]) }));
    paths.insert(
        "/sdapi/v1/options".into(),
        json!({
            "get": op("A1111 options (sd_model_checkpoint...)", None, &[("200", "Options", obj.clone())]),
            "post": op("A1111 options: only values the server already has are accepted", Some(obj.clone()), &[
                ("200", "Accepted", obj.clone()), ("422", "An option that cannot be changed", r("Error")),
            ]),
        }),
    );
    paths.insert("/sdapi/v1/embeddings".into(), json!({ "get": op("A1111 embeddings: {loaded: {name: {...}}, skipped}", None, &[("200", "Embeddings", obj.clone())]) }));
    paths.insert("/sdapi/v1/png-info".into(), json!({ "post": op(
                "A1111 png-info: the parameters text of a PNG (base64)",
                Some(json!({ "type": "object", "required": ["image"], "properties": { "image": { "type": "string" } } })),
                &[("200", "Info", json!({ "type": "object", "properties": {
                    "info": { "type": "string" }, "items": { "type": "object" }, "parameters": { "type": "object" } } })),
                  ("422", "Not base64 or not a PNG", r("Error"))],
            )}));
    paths.insert("/v1/images/generations".into(), json!({ "post": op(
                "OpenAI images: prompt, n, size \"WxH\", response_format b64_json or url (our /outputs/...)",
                Some(json!({ "type": "object", "required": ["prompt"], "properties": {
                    "prompt": { "type": "string" }, "n": { "type": "integer" }, "size": { "type": "string" },
                    "response_format": { "enum": ["b64_json", "url"] }, "model": { "type": "string" } } })),
                &with(vec![("200", "Images", json!({ "type": "object", "properties": {
                    "created": { "type": "integer" },
                    "data": { "type": "array", "items": { "type": "object", "properties": {
                        "b64_json": { "type": "string" }, "url": { "type": "string" }, "revised_prompt": { "type": "string" } } } } } }))],
                    errors()),
            )}));
    paths.insert(
        "/v1/models".into(),
        json!({ "get": op("OpenAI models: the loaded one", None, &[("200", "Models", obj)]) }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sd-wgpu serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Stable Diffusion 1.x over HTTP: a native jobs API with per-job progress, \
                A1111's /sdapi/v1 and OpenAI's images API. Every error is JSON \
                {\"error\": {\"field\", \"message\"}, \"detail\"}. With --api-key, send \
                Authorization: Bearer KEY or X-API-Key: KEY.",
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            },
            "schemas": schemas(),
        },
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "paths": paths,
    })
}

fn schemas() -> Value {
    let int = |d: &str| json!({ "type": "integer", "description": d });
    let num = |d: &str| json!({ "type": "number", "description": d });
    let string = |d: &str| json!({ "type": "string", "description": d });
    json!({
        "Error": { "type": "object", "properties": {
            "error": { "type": "object", "properties": {
                "field": { "type": ["string", "null"], "description": "The request field at fault (steps, init_images[0]...)" },
                "message": { "type": "string", "description": "What was expected and what was found" } } },
            "detail": { "type": "string", "description": "The message again (A1111 clients read detail)" } } },
        "JobRequest": { "type": "object", "required": ["prompt"], "additionalProperties": false, "properties": {
            "prompt": string("A1111 syntax: (word:1.2), [word], BREAK; any length"),
            "negative_prompt": string("Default empty"),
            "steps": int("1 to 150; default 25"),
            "cfg_scale": num("0 to 100; default 7.5"),
            "sampler": string("Ours or A1111's name (euler-a, \"Euler a\", \"DPM++ 2M Karras\"); default: the model's"),
            "seed": int("0 to 2^64-1; -1 or absent: random"),
            "width": int("Multiple of 8; default: the model's native size (img2img: the input's)"),
            "height": int("As width; width x height at most --max-pixels"),
            "batch": int("Images, seeds seed, seed+1, ...; 1 to 8"),
            "clip_skip": int("1 = the text encoder's last layer"),
            "strength": num("img2img: 0 to 1; default 0.75 (inpainting: 1)"),
            "init_image": string("img2img input: base64 or a data URL"),
            "mask": string("Inpainting (with init_image): base64 or a data URL, the image's size; white repaints"),
            "mask_blur": int("Inpainting: Gaussian blur of the mask in pixels, 0 to 256; default 4"),
            "invert_mask": { "type": "boolean", "description": "Inpainting: repaint the black area instead" },
            "concepts": { "type": "array", "items": { "type": "string" },
                "description": "Trigger words of loaded concepts; absent: those the prompts mention" } } },
        "Job": { "type": "object", "properties": {
            "id": string("16 hex digits"),
            "state": { "enum": ["queued", "running", "done", "failed", "cancelled"] },
            "position": int("Queued: jobs ahead of it"),
            "image": int("Image being sampled (0-based)"), "images": int("Batch size"),
            "step": int("Model calls done for this image"), "steps": int("Model calls per image"),
            "progress": num("0 to 1 over the whole job"), "eta": num("Seconds left (estimate)"),
            "preview": string("Running: base64 PNG of the latest latents"),
            "results": { "type": "array", "items": { "type": "object", "properties": {
                "index": { "type": "integer" }, "url": { "type": "string" }, "seed": { "type": "integer" },
                "width": { "type": "integer" }, "height": { "type": "integer" }, "sampler": { "type": "string" },
                "parameters": string("A1111 infotext, as in the PNG") } } },
            "error": { "type": ["object", "null"], "properties": { "field": { "type": ["string", "null"] }, "message": { "type": "string" } } },
            "warnings": { "type": "array", "items": { "type": "string" } },
            "created": num("Unix time"), "started": num("Unix time"), "finished": num("Unix time") } },
        "Info": { "type": "object", "properties": {
            "model": { "type": "string" }, "hash": { "type": ["string", "null"] }, "device": { "type": "string" },
            "vae": { "type": ["object", "null"], "description": "the VAE replacing the model's (serve --vae): name, hash" },
            "samplers": { "type": "array" }, "concepts": { "type": "array" },
            "defaults": { "type": "object" }, "limits": { "type": "object" } } },
        "A1111Txt2Img": { "type": "object", "description": "StableDiffusionTxt2ImgProcessingAPI (modules/api/models.py): \
            prompt, negative_prompt, steps, cfg_scale, sampler_name, scheduler, seed, width, height, batch_size, n_iter, \
            clip_skip (override_settings.CLIP_stop_at_last_layers). Unknown fields are ignored; fields that cannot be \
            honoured when set (enable_hr, restore_faces, tiling, subseed_strength > 0, script_name, alwayson_scripts...) are a 422." },
        "A1111Img2Img": { "type": "object", "description": "StableDiffusionImg2ImgProcessingAPI: as txt2img plus \
            init_images (base64 or data URLs) and denoising_strength; inpainting with mask (mask_blur or \
            mask_blur_x = mask_blur_y, inpainting_mask_invert) of the whole picture only: inpaint_full_res must be \
            false, inpainting_fill 1 (original) below denoising_strength 1, mask_round true; latent_mask is a 422." },
        "A1111Images": { "type": "object", "properties": {
            "images": { "type": "array", "items": { "type": "string" }, "description": "Base64 PNGs" },
            "parameters": { "type": "object", "description": "The request as understood" },
            "info": string("JSON text: seed, all_seeds, all_prompts, infotexts, sampler_name, sd_model_hash...") } },
    })
}
