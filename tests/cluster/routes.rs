//! The gateway's HTTP side: two gateways answer for the same jobs; bad input and a full
//! queue are answered as the single-process server answers them.

use std::io::{BufRead, BufReader};

use serde_json::json;

use super::common::{small_job, Server};
use super::nats::{Nats, Worker};

#[test]
fn a_job_submitted_on_one_gateway_is_followed_and_fetched_on_another() {
    let nats = Nats::start("two-gateways");
    let _worker = Worker::start(&nats, "30s");
    let first = Server::start(&["--nats", &nats.url()]);
    let second = Server::start(&["--nats", &nats.url()]);
    let r = first.post("/api/jobs", &small_job("a windmill", 3, 30));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The second gateway learns of the job from the KV bucket's watch, milliseconds later.
    let start = std::time::Instant::now();
    while second.get(&format!("/api/jobs/{id}")).status == 404 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the second gateway never saw {id}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Server-sent events on the second gateway, to the end.
    let response = ureq::get(format!("{}/api/jobs/{id}/events", second.url))
        .call()
        .unwrap();
    let reader = BufReader::new(response.into_body().into_reader());
    let events: Vec<String> = reader
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("event: ").map(str::to_string))
        .take_while(|e| e != "done" && e != "failed")
        .collect();
    assert!(events.iter().any(|e| e == "image"), "{events:?}");
    let snap = second.wait_job(&id);
    assert_eq!(snap["state"], "done");
    let url = snap["results"][0]["url"].as_str().unwrap();
    let a = first.get(url);
    let b = second.get(url);
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
}

#[test]
fn bad_input_and_a_full_queue_are_answered_as_by_the_single_process_server() {
    let nats = Nats::start("bad-input");
    // No worker: jobs stay queued, so that the queue fills.
    let gateway = Server::start(&["--nats", &nats.url(), "--queue", "2"]);
    let single = Server::start(&["--queue", "2"]);
    let bad = [
        json!({ "prompt": "x", "steps": 0 }),
        json!({ "prompt": "x", "width": 65 }),
        json!({ "prompt": "x", "stepz": 3 }),
        json!({ "steps": 3 }),
        json!({ "prompt": "x", "sampler": "nope" }),
        json!({ "prompt": "x", "concepts": ["<nope>"] }),
        json!({ "prompt": "x", "strength": 0.5 }),
        json!({ "prompt": "x", "init_image": "not base64!" }),
    ];
    for body in &bad {
        let (g, s) = (gateway.post("/api/jobs", body), single.post("/api/jobs", body));
        assert_eq!((g.status, g.text()), (s.status, s.text()), "{body}");
        assert!(g.field().is_some(), "{body}: {}", g.text());
    }
    let malformed = gateway.request(
        "POST",
        "/api/jobs",
        &[("Content-Type", "application/json")],
        Some(b"{".to_vec()),
    );
    assert_eq!(malformed.status, 400);
    for seed in 0..2 {
        assert_eq!(gateway.post("/api/jobs", &small_job("q", seed, 4)).status, 202);
    }
    let full = gateway.post("/api/jobs", &small_job("q", 9, 4));
    assert_eq!(full.status, 429, "{}", full.text());
    assert!(full.header("retry-after").is_some());
}
