//! Delivery under load and faults: every job completes exactly once, with the bytes the
//! single-process server and the CLI make.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{small_job, temp_dir, Server, TIMEOUT};
use super::nats::{Nats, Worker};

fn png(server: &Server, snap: &Value, index: usize) -> Vec<u8> {
    let url = snap["results"][index]["url"].as_str().unwrap().to_string();
    let r = server.get(&url);
    assert_eq!(r.status, 200, "{url}");
    r.body
}

fn submit(server: &Server, job: &Value) -> String {
    let r = server.post("/api/jobs", job);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn thirty_jobs_on_two_workers_run_exactly_once_with_the_single_process_bytes() {
    let nats = Nats::start("thirty");
    let _w1 = Worker::start(&nats, "30s");
    let _w2 = Worker::start(&nats, "30s");
    let gateway = Server::start(&["--nats", &nats.url(), "--queue", "64"]);
    let single = Server::start(&[]);
    let jobs: Vec<Value> = (0..30).map(|seed| small_job("a red fox", seed, 4)).collect();
    // Concurrently, as 30 clients would.
    let ids: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = jobs.iter().map(|j| s.spawn(|| submit(&gateway, j))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (seed, id) in ids.iter().enumerate() {
        let snap = gateway.wait_job(id);
        assert_eq!(snap["state"], "done", "{snap}");
        assert_eq!(snap["results"].as_array().unwrap().len(), 1);
        let expected = single.post("/api/jobs?wait=true", &jobs[seed]).json();
        assert_eq!(png(&gateway, &snap, 0), png(&single, &expected, 0), "seed {seed}");
    }
    // Exactly once: each record delivered once, the stream drained.
    let records = nats.records();
    for id in &ids {
        let record = &records.iter().find(|(k, _)| k == id).unwrap().1;
        assert_eq!(record["attempts"], 1, "{record}");
        assert_eq!(record["state"], "done");
    }
    let workers: std::collections::HashSet<&str> =
        records.iter().filter_map(|(_, r)| r["worker"].as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers took jobs: {workers:?}");
    assert_eq!(nats.pending(), 0);

    // And the CLI's bytes for seed 0.
    let dir = temp_dir("cluster-cli");
    let out = dir.join("cli.png");
    let status = std::process::Command::new(super::common::bin())
        .args([
            "txt2img",
            "--backend",
            "cpu",
            "--prompt",
            "a red fox",
            "--seed",
            "0",
            "--steps",
            "4",
        ])
        .args([
            "--width",
            "64",
            "--height",
            "64",
            "--sampler",
            "euler",
            "--cfg-scale",
            "7",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let first = gateway.get(&format!("/api/jobs/{}", ids[0])).json();
    assert_eq!(png(&gateway, &first, 0), std::fs::read(&out).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_job_whose_worker_is_killed_is_redelivered_and_completed_once() {
    let nats = Nats::start("kill");
    let doomed = Worker::start(&nats, "2s");
    let gateway = Server::start(&["--nats", &nats.url()]);
    let mut job = small_job("a lighthouse", 7, 150);
    job["batch"] = json!(4);
    let id = submit(&gateway, &job);
    let snap = gateway.wait_state(&id, "running");
    assert_eq!(snap["state"], "running");
    doomed.kill();
    let _survivor = Worker::start(&nats, "2s");
    let snap = gateway.wait_job(&id);
    assert_eq!(snap["state"], "done", "{snap}");
    let results = snap["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "nothing lost, nothing duplicated: {snap}");
    let seeds: Vec<u64> = results.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [7, 8, 9, 10]);
    let record = nats.record(&id);
    assert_eq!(record["attempts"], 2, "{record}");
    assert_eq!(nats.pending(), 0);
    let single = Server::start(&[]);
    let expected = single.post("/api/jobs?wait=true", &job).json();
    for i in 0..4 {
        assert_eq!(png(&gateway, &snap, i), png(&single, &expected, i), "image {i}");
    }
}

#[test]
fn queued_jobs_survive_a_nats_server_restart() {
    let mut nats = Nats::start("restart");
    let gateway = Server::start(&["--nats", &nats.url()]);
    let ids: Vec<String> = (0..4)
        .map(|s| submit(&gateway, &small_job("a barn", s, 4)))
        .collect();
    nats.stop();
    nats.restart();
    let _worker = Worker::start(&nats, "30s");
    for id in &ids {
        let snap = gateway.wait_job(id);
        assert_eq!(snap["state"], "done", "{snap}");
        assert!(png(&gateway, &snap, 0).starts_with(b"\x89PNG"), "{snap}");
    }
    assert_eq!(nats.pending(), 0);
}

#[test]
fn a_poison_job_fails_once_and_is_not_redelivered() {
    let nats = Nats::start("poison");
    let _worker = Worker::start(&nats, "1s");
    let gateway = Server::start(&["--nats", &nats.url()]);
    // Valid JSON the gateway would have refused: 0 steps.
    let job = json!({
        "id": "00000000000000aa", "prompt": "x", "negative_prompt": "", "steps": 0,
        "cfg_scale": 7.0, "sampler": null, "seed": 1, "width": 64, "height": 64, "batch": 1,
        "clip_skip": 1, "strength": 0.75, "concepts": [], "init_image": null, "mask": null,
    });
    nats.publish_job("00000000000000aa", &job);
    let start = Instant::now();
    let snap = loop {
        let r = gateway.get("/api/jobs/00000000000000aa");
        if r.status == 200 && r.json()["state"] == "failed" {
            break r.json();
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the poison job never failed: {}",
            r.text()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(snap["error"]["field"], "steps", "{snap}");
    // Three ack waits later it has not come back.
    thread::sleep(Duration::from_secs(3));
    let record = nats.record("00000000000000aa");
    assert_eq!(
        (record["attempts"].as_u64(), record["state"].as_str()),
        (Some(1), Some("failed"))
    );
    assert_eq!(nats.pending(), 0);
}
