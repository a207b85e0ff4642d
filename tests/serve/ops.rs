//! Health, readiness, metrics, the OpenAPI description, and stopping on SIGTERM.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::common::{small_job, Server};

#[test]
fn health_ready_metrics_openapi() {
    let server = Server::start(&["--queue", "1"]);
    assert_eq!(server.get("/healthz").json()["status"], "ok");
    let ready = server.get("/readyz");
    assert_eq!(
        (ready.status, ready.json()["ready"].clone()),
        (200, Value::Bool(true))
    );

    let done = server.post("/api/jobs?wait=true", &small_job("a red circle", 5, 4));
    assert_eq!(done.status, 200, "{}", done.text());
    let metrics = server.get("/metrics");
    assert!(metrics
        .header("content-type")
        .unwrap()
        .contains("openmetrics-text"));
    let text = metrics.text();
    for needle in [
        "sd_wgpu_jobs{state=\"done\"} 1",
        "sd_wgpu_jobs_finished_total{state=\"done\"} 1",
        "sd_wgpu_queue_depth 0",
        "sd_wgpu_queue_capacity 1",
        "sd_wgpu_step_duration_seconds_count 4",
        "sd_wgpu_job_duration_seconds_count 1",
        "# TYPE sd_wgpu_step_duration_seconds histogram",
        "sd_wgpu_process_resident_memory_bytes ",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    // The CPU backend reports no GPU memory: the metric says which memory it is.
    assert!(!text.contains("sd_wgpu_gpu_memory_bytes"));

    // The queue full (a long job running, one waiting): not ready.
    let long = server
        .post("/api/jobs", &small_job("a red circle", 1, 150))
        .json();
    let id = long["id"].as_str().unwrap();
    server.wait_state(id, "running");
    let waiting = server.post("/api/jobs", &small_job("a red circle", 1, 4)).json();
    let not_ready = server.get("/readyz");
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert_eq!(server.get("/healthz").status, 200);
    server.delete(&format!("/api/jobs/{}", waiting["id"].as_str().unwrap()));
    server.delete(&format!("/api/jobs/{id}"));

    let doc = server.get("/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/events",
        "/outputs/{id}/{index}.png",
        "/api/info",
        "/api/tokenize",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img",
        "/sdapi/v1/progress",
        "/sdapi/v1/interrupt",
        "/sdapi/v1/samplers",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/sd-vae",
        "/sdapi/v1/options",
        "/sdapi/v1/embeddings",
        "/sdapi/v1/png-info",
        "/v1/images/generations",
        "/v1/models",
        "/",
    ] {
        let ops = paths.get(path).unwrap_or_else(|| panic!("{path} not described"));
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            assert!(op["responses"].is_object(), "{method} {path} has no responses");
        }
    }
}

#[test]
fn sigterm_cancels_the_running_job_fails_the_queued_and_exits_0() {
    let server = Server::start(&[]);
    let url = server.url.clone();
    let post = |seed: u64| {
        let url = url.clone();
        thread::spawn(move || {
            let body = small_job("a red circle", seed, 150).to_string().into_bytes();
            let agent = super::common::agent();
            let headers = [("Content-Type", "application/json")];
            super::common::request(
                &agent,
                "POST",
                &format!("{url}/api/jobs?wait=true"),
                &headers,
                Some(body),
            )
        })
    };
    let running = post(1);
    // The first job is running before the second is sent, so the second is queued.
    let deadline = std::time::Instant::now() + super::common::TIMEOUT;
    while !server
        .get("/metrics")
        .text()
        .contains("sd_wgpu_jobs{state=\"running\"} 1")
    {
        assert!(std::time::Instant::now() < deadline, "no job started");
        thread::sleep(Duration::from_millis(10));
    }
    let queued = post(2);
    while !server.get("/metrics").text().contains("sd_wgpu_queue_depth 1") {
        assert!(std::time::Instant::now() < deadline, "second job not queued");
        thread::sleep(Duration::from_millis(10));
    }
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let running = running.join().unwrap();
    assert_eq!(running.status, 409, "{}", running.text());
    assert_eq!(running.json()["state"], "cancelled");
    let queued = queued.join().unwrap();
    assert_eq!(queued.status, 503, "{}", queued.text());
    assert_eq!(queued.json()["state"], "failed");
    assert!(queued.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shut down"));
}
