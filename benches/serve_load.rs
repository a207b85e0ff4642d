//! Load benchmark of `sd-wgpu serve` (not a test): N client threads, each sending
//! `POST /api/jobs?wait=true` back to back for M seconds against a `serve --port 0` child on
//! the demo model, then throughput, latency percentiles and the server's resident memory
//! (VmRSS from /proc/PID/status) at the start and at the end. The reference, in the same
//! run and on the same server: one client alone sending [`ALONE_JOBS`] jobs one after the
//! other, so the load figures read against the plain job time (what concurrency costs or
//! gains: with one worker, throughput should stay at the single-client rate).
//!
//! `cargo bench --bench serve_load -- [--clients N] [--seconds M] [--steps S] [--backend B]`;
//! `--short` (CI): 4 clients for 8 s. Latency is the client's: queueing included, so with
//! one worker it grows with the clients while throughput stays the worker's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Jobs the lone client sends before the load (after one warm-up job).
const ALONE_JOBS: usize = 5;

struct Options {
    clients: usize,
    seconds: u64,
    steps: usize,
    backend: String,
}

fn options() -> Options {
    let mut o = Options {
        clients: 8,
        seconds: 30,
        steps: 8,
        backend: "cpu".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().unwrap_or_default();
        let number = |flag: &str| -> u64 {
            value()
                .parse()
                .unwrap_or_else(|_| panic!("{flag} expects a number, found {:?}", value()))
        };
        match args[i].as_str() {
            "--short" => {
                (o.clients, o.seconds) = (4, 8);
                i += 1;
                continue;
            }
            "--clients" => o.clients = number("--clients") as usize,
            "--seconds" => o.seconds = number("--seconds"),
            "--steps" => o.steps = number("--steps") as usize,
            "--backend" => o.backend = value(),
            // cargo bench passes --bench.
            "--bench" => {
                i += 1;
                continue;
            }
            other => {
                panic!("unknown argument {other:?} (--clients N --seconds M --steps S --backend B --short)")
            }
        }
        i += 2;
    }
    o
}

/// The server's resident memory in MiB (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn start_server(o: &Options) -> (Child, String) {
    let queue = (o.clients * 2).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args([
            "serve",
            "--port",
            "0",
            "--backend",
            &o.backend,
            "--queue",
            &queue,
            "--retention",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sd-wgpu serve");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the server printed no URL within 120 s");
    let url = line
        .strip_prefix("serving on ")
        .expect("serving on URL")
        .trim_end_matches('/')
        .to_string();
    (child, url)
}

/// What one client saw: latencies of completed jobs, refusals, failures.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    refused: usize,
    failed: usize,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// One `POST /api/jobs?wait=true` of client `index`'s `n`-th job: its HTTP status.
fn job(agent: &ureq::Agent, url: &str, index: usize, n: u64, steps: usize) -> Result<u16, ureq::Error> {
    let body = serde_json::json!({
        "prompt": format!("a red circle on a blue background, client {index}"),
        "seed": index as u64 * 1_000_000 + n,
        "steps": steps,
        "width": 64,
        "height": 64,
    });
    agent
        .post(format!("{url}/api/jobs?wait=true"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map(|r| r.status().as_u16())
}

/// The reference: one client, [`ALONE_JOBS`] jobs back to back after a warm-up; the mean
/// job time.
fn alone(url: &str, steps: usize) -> Duration {
    let agent = agent();
    let index = usize::MAX / 2_000_000;
    assert_eq!(
        job(&agent, url, index, 0, steps).ok(),
        Some(200),
        "warm-up job failed"
    );
    let t = Instant::now();
    for n in 1..=ALONE_JOBS as u64 {
        assert_eq!(
            job(&agent, url, index, n, steps).ok(),
            Some(200),
            "lone job failed"
        );
    }
    t.elapsed() / ALONE_JOBS as u32
}

fn client(url: String, index: usize, steps: usize, until: Instant) -> Tally {
    let agent = agent();
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        let reply = job(&agent, &url, index, n, steps);
        n += 1;
        match reply {
            Ok(200) => tally.latencies.push(t.elapsed()),
            Ok(429) => {
                tally.refused += 1;
                thread::sleep(Duration::from_millis(100));
            }
            _ => tally.failed += 1,
        }
    }
    tally
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let o = options();
    let (mut child, url) = start_server(&o);
    let pid = child.id();
    let rss_start = rss_mib(pid);
    println!(
        "serve load: {} clients for {} s, 64x64, {} steps, demo model, --backend {}",
        o.clients, o.seconds, o.steps, o.backend
    );
    let single = alone(&url, o.steps);
    println!(
        "  alone       1 client, {ALONE_JOBS} jobs: {:.0} ms a job, {:.2} jobs/s (the reference)",
        single.as_secs_f64() * 1000.0,
        1.0 / single.as_secs_f64()
    );
    let start = Instant::now();
    let until = start + Duration::from_secs(o.seconds);
    let handles: Vec<_> = (0..o.clients)
        .map(|i| {
            let url = url.clone();
            let steps = o.steps;
            thread::spawn(move || client(url, i, steps, until))
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h.join().expect("client thread");
        all.latencies.extend(t.latencies);
        all.refused += t.refused;
        all.failed += t.failed;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rss_end = rss_mib(pid);
    let _ = child.kill();
    let _ = child.wait();

    all.latencies.sort();
    let done = all.latencies.len();
    let mib = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.1} MiB"));
    let rate = done as f64 / elapsed;
    println!(
        "  completed   {done} jobs in {elapsed:.1} s: {rate:.2} jobs/s, {:.2}x the lone client's rate",
        rate * single.as_secs_f64()
    );
    println!(
        "  latency     p50 {:.0} ms ({:.1} lone job times), p99 {:.0} ms, max {:.0} ms (queueing included)",
        percentile(&all.latencies, 0.5),
        percentile(&all.latencies, 0.5) / (single.as_secs_f64() * 1000.0),
        percentile(&all.latencies, 0.99),
        percentile(&all.latencies, 1.0)
    );
    println!("  refused     {} (429), failed {}", all.refused, all.failed);
    println!(
        "  server RSS  {} at start, {} at end",
        mib(rss_start),
        mib(rss_end)
    );
    assert_eq!(all.failed, 0, "requests failed");
}
