//! A nats-server of the test's own, worker processes, and the job records in its KV bucket.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{bin, temp_dir, TIMEOUT};

/// `nats-server -js` on loopback, file storage in a directory of its own; killed on drop.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nats {
    pub fn start(name: &str) -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = Nats {
            child: None,
            port,
            dir: temp_dir(&format!("nats-{name}")),
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and store) and waits for its port.
    pub fn restart(&mut self) {
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server; .ci/run does it)");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < TIMEOUT, "nats-server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM: file storage flushed) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while child.try_wait().unwrap().is_none() {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "nats-server did not stop"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every job record in the bucket, by job id.
    pub fn records(&self) -> Vec<(String, Value)> {
        runtime().block_on(async {
            use futures_util::StreamExt;
            let client = async_nats::connect(self.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let kv = js.get_key_value("sd_jobs").await.unwrap();
            let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
            let mut out = Vec::new();
            for key in keys {
                if let Some(v) = kv.get(&key).await.unwrap() {
                    out.push((key, serde_json::from_slice(&v).unwrap()));
                }
            }
            out
        })
    }

    pub fn record(&self, id: &str) -> Value {
        self.records()
            .into_iter()
            .find(|(k, _)| k == id)
            .unwrap_or_else(|| panic!("no record {id}"))
            .1
    }

    /// Messages left in the job stream.
    pub fn pending(&self) -> u64 {
        runtime().block_on(async {
            let client = async_nats::connect(self.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream("SD_JOBS").await.unwrap();
            stream.info().await.unwrap().state.messages
        })
    }

    /// Publishes a job message as a gateway would, bypassing the gateway's checks.
    pub fn publish_job(&self, id: &str, job: &Value) {
        runtime().block_on(async {
            let client = async_nats::connect(self.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let envelope = serde_json::json!({ "id": id, "job": job });
            js.publish("sd.jobs.sd-wgpu-demo", envelope.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `sd-wgpu worker --backend cpu` (demo model); killed (-9) on drop.
pub struct Worker {
    child: Child,
}

impl Worker {
    pub fn start(nats: &Nats, ack_wait: &str) -> Worker {
        let mut child = Command::new(bin())
            .args([
                "worker",
                "--backend",
                "cpu",
                "--nats",
                &nats.url(),
                "--ack-wait",
                ack_wait,
            ])
            // The first process to make the stream sets its size: room for the 30 jobs.
            .args(["--queue", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sd-wgpu worker");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(TIMEOUT).expect("worker ready within the timeout");
        assert!(line.starts_with("worker ready"), "{line}");
        Worker { child }
    }

    /// kill -9: no chance to ack, nack or write anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` on the PATH, else where Debian's package puts it: /usr/sbin, which is not on
/// an ordinary user's PATH.
fn nats_server() -> &'static str {
    const DEBIAN: &str = "/usr/sbin/nats-server";
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()));
    if !on_path && std::path::Path::new(DEBIAN).is_file() {
        DEBIAN
    } else {
        "nats-server"
    }
}
