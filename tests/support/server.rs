//! `sd-wgpu serve` as a child process for tests/browser.rs: the built-in demo
//! model on the CPU backend, a free loopback port (`--port 0`), its URL read
//! from the line it prints once it accepts connections, killed on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Loading the demo model is quick; this leaves room for a busy CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT/`
    pub url: String,
}

impl Server {
    pub fn start(extra_args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
            .args(["serve", "--port", "0", "--backend", "cpu"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting sd-wgpu serve");
        let stderr = drain(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.strip_prefix("serving on ") {
                        sent = tx.send(url.trim().to_string()).is_ok();
                    }
                }
            }
        });
        let url = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sd-wgpu serve printed no `serving on URL` line within {START_TIMEOUT:?}; stderr:\n{}",
                Vec::from(stderr.lock().unwrap().clone()).join("\n")
            )
        });
        assert!(url.starts_with("http://127.0.0.1:"), "serving on {url}");
        Server { child, url }
    }
}

/// Reads a pipe to its end on a thread (a full pipe would block the server),
/// keeping the last lines for failure messages.
fn drain(pipe: impl Read + Send + 'static) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let keep = Arc::clone(&tail);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut keep = keep.lock().unwrap();
            if keep.len() == 40 {
                keep.pop_front();
            }
            keep.push_back(line);
        }
    });
    tail
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
