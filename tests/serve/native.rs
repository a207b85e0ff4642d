//! The native jobs API: results equal the CLI's files byte for byte, SSE progress, cancel,
//! outputs, info and the token counter.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::common::{agent, bin, small_job, temp_dir, Server, TIMEOUT};

/// `sd-wgpu txt2img`/`img2img` with the same settings, its file's bytes.
fn cli_png(dir: &std::path::Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let status = Command::new(bin())
        .args(args)
        .args(["--backend", "cpu", "--quiet", "--overwrite", "--output"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
    std::fs::read(out).unwrap()
}

#[test]
fn results_are_the_clis_bytes_txt2img_and_img2img() {
    let server = Server::start(&[]);
    let dir = temp_dir("bytes");
    // txt2img, the shipped concept used by its trigger.
    let prompt = "a <hazard> on the left";
    let reply = server.post("/api/jobs", &small_job(prompt, 42, 4));
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/jobs/{}", reply.json()["id"].as_str().unwrap()).as_str())
    );
    let snap = server.wait_job(reply.json()["id"].as_str().unwrap());
    assert_eq!(snap["state"], "done", "{snap}");
    let result = &snap["results"][0];
    assert_eq!(result["seed"], 42);
    assert!(
        result["parameters"].as_str().unwrap().contains("TI hashes"),
        "{result}"
    );
    let served = server.get(result["url"].as_str().unwrap());
    assert_eq!(
        (served.status, served.header("content-type")),
        (200, Some("image/png"))
    );
    let concept = "assets/hazard-concept/learned_embeds.bin";
    let args = [
        "txt2img",
        "--prompt",
        prompt,
        "--seed",
        "42",
        "--steps",
        "4",
        "--width",
        "64",
        "--height",
        "64",
        "--sampler",
        "euler",
        "--cfg-scale",
        "7",
    ];
    let cli = cli_png(&dir, "t.png", &args);
    let cli_with = cli_png(&dir, "t2.png", &[&args[..], &["--embedding", concept]].concat());
    assert_ne!(
        served.body, cli,
        "without the concept the CLI draws something else"
    );
    assert!(served.body == cli_with, "server PNG differs from the CLI's");

    // img2img from that image, as base64 and as a data URL.
    let b64 = STANDARD.encode(&served.body);
    for init in [b64.clone(), format!("data:image/png;base64,{b64}")] {
        let mut job = small_job("a blue square", 7, 8);
        job["init_image"] = json!(init);
        job["strength"] = json!(0.5);
        let id = server.post("/api/jobs", &job).json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let snap = server.wait_job(&id);
        assert_eq!(snap["state"], "done", "{snap}");
        let png = server.get(&format!("/outputs/{id}/0.png")).body;
        std::fs::write(dir.join("init.png"), &served.body).unwrap();
        let init_path = dir.join("init.png");
        let cli = cli_png(
            &dir,
            "i.png",
            &[
                "img2img",
                "--image",
                init_path.to_str().unwrap(),
                "--strength",
                "0.5",
                "--prompt",
                "a blue square",
                "--seed",
                "7",
                "--steps",
                "8",
                "--width",
                "64",
                "--height",
                "64",
                "--sampler",
                "euler",
                "--cfg-scale",
                "7",
            ],
        );
        assert!(png == cli, "img2img PNG differs from the CLI's");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Parses an SSE body into (event, data) pairs.
fn read_events(server: &Server, id: &str) -> Vec<(String, Value)> {
    let mut response = agent()
        .get(format!("{}/api/jobs/{id}/events", server.url))
        .call()
        .unwrap();
    assert_eq!(
        response.headers().get("content-type").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
    let reader = BufReader::new(response.body_mut().as_reader());
    let (mut events, mut name) = (Vec::new(), String::new());
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    events
}

#[test]
fn events_arrive_in_order_and_end_with_the_result() {
    let server = Server::start(&[]);
    let mut job = small_job("a red circle", 3, 6);
    job["batch"] = json!(2);
    let id = server.post("/api/jobs", &job).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    let events = read_events(&server, &id);
    assert!(start.elapsed() < TIMEOUT);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    // Subscribed right after submitting: queued or already started, never later.
    assert!(matches!(names[0], "queued" | "started"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert!(names.contains(&"started"), "{names:?}");
    // Steps increase within each image, images in order, each image event after its steps.
    let mut last = (0u64, 0u64);
    let mut images_seen = 0;
    let mut progress = 0.0;
    for (name, data) in &events {
        match name.as_str() {
            "step" => {
                let at = (data["image"].as_u64().unwrap(), data["step"].as_u64().unwrap());
                assert!(at > last, "{at:?} after {last:?}");
                assert_eq!(data["steps"], 6);
                assert_eq!(data["images"], 2);
                let p = data["progress"].as_f64().unwrap();
                assert!(p > progress && p <= 1.0, "{p} after {progress}");
                progress = p;
                let preview = STANDARD.decode(data["preview"].as_str().unwrap()).unwrap();
                assert_eq!(&preview[1..4], b"PNG");
                last = at;
            }
            "image" => {
                assert_eq!(data["index"], images_seen);
                assert_eq!(last, (images_seen, 6), "image {images_seen} before its last step");
                assert_eq!(data["seed"], 3 + images_seen);
                images_seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(images_seen, 2);
    let done = &events.last().unwrap().1;
    assert_eq!(done["state"], "done");
    assert_eq!(done["results"].as_array().unwrap().len(), 2);
    // A late subscriber gets the end at once.
    let late = read_events(&server, &id);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].0, "done");
}

#[test]
fn cancel_mid_job_and_lookups() {
    let server = Server::start(&[]);
    // 150 steps take seconds on the demo model; cancelled after the first.
    let id = server
        .post("/api/jobs", &small_job("a green star", 1, 150))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = server.wait_state(&id, "running");
    assert!(snap["steps"].as_u64().unwrap() <= 150);
    let reply = server.delete(&format!("/api/jobs/{id}"));
    assert!([200, 202].contains(&reply.status), "{}", reply.text());
    let start = Instant::now();
    let snap = server.wait_job(&id);
    assert_eq!(snap["state"], "cancelled", "{snap}");
    assert!(
        start.elapsed().as_secs_f64() < 5.0,
        "cancel took {:?}",
        start.elapsed()
    );
    assert!(snap["step"].as_u64().unwrap() < 150, "{snap}");
    assert_eq!(snap["results"], json!([]));
    assert_eq!(server.get(&format!("/outputs/{id}/0.png")).status, 404);
    // Cancelling again leaves it cancelled.
    assert_eq!(
        server.delete(&format!("/api/jobs/{id}")).json()["state"],
        "cancelled"
    );
    // Unknown ids.
    for path in [
        "/api/jobs/0123456789abcdef",
        "/outputs/0123456789abcdef/0.png",
        "/api/jobs/x/events",
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.message().is_empty());
    }
    assert_eq!(server.delete("/api/jobs/0123456789abcdef").status, 404);
}

#[test]
fn info_and_token_counter() {
    let server = Server::start(&[]);
    let info = server.get("/api/info").json();
    assert_eq!(info["model"], "sd-wgpu-demo");
    assert_eq!(
        info["concepts"],
        json!([{"trigger": "<hazard>", "vectors": 1, "hash": info["concepts"][0]["hash"]}])
    );
    assert_eq!(info["defaults"]["width"], 64);
    let names: Vec<&str> = info["samplers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["a1111_name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Euler a") && names.contains(&"DPM++ 2M Karras"),
        "{names:?}"
    );
    assert_eq!(info["limits"]["queue"], 16);

    let count = |text: &str| server.post("/api/tokenize", &json!({ "text": text })).json();
    let t = count("a red circle");
    assert_eq!(
        (t["tokens"].clone(), t["chunks"].clone()),
        (json!(3), json!([{"tokens_used": 3, "limit": 75}]))
    );
    // The concept's trigger is one vector, as generation counts it.
    assert_eq!(count("a <hazard>")["tokens"], 2);
    let long = "red ".repeat(80);
    let t = count(&long);
    assert_eq!(t["tokens"], 80);
    assert_eq!(t["chunks"].as_array().unwrap().len(), 2);
    let bad = server.post("/api/tokenize", &json!({ "text": "(a:1.2.3)" }));
    assert_eq!((bad.status, bad.field().as_deref()), (422, Some("text")));
}

#[test]
fn ended_jobs_expire_after_the_retention_time() {
    let server = Server::start(&["--retention", "1s"]);
    let snap = server
        .post("/api/jobs?wait=true", &small_job("a red circle", 4, 4))
        .json();
    let id = snap["id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/outputs/{id}/0.png")).status, 200);
    let start = Instant::now();
    // Swept within a second or two of the retention time.
    while server.get(&format!("/api/jobs/{id}")).status == 200 {
        assert!(start.elapsed().as_secs_f64() < 5.0, "job kept past its retention");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        start.elapsed().as_secs_f64() >= 0.5,
        "dropped before its retention"
    );
    assert_eq!(server.get(&format!("/outputs/{id}/0.png")).status, 404);
}
