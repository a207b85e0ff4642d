//! Headless Chromium driven over the Chrome DevTools Protocol: JSON commands
//! over one websocket (tungstenite), one page target attached in flattened
//! mode. Test support for tests/browser.rs. Every wait has a deadline, and
//! the browser is closed (then killed) on drop, so no test can hang or leak it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The browser binary: Debian's `chromium` (`.ci/run` installs it), or the
/// one `SD_WGPU_CHROMIUM` names.
fn chromium() -> String {
    std::env::var("SD_WGPU_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Longest wait for one CDP answer (a screenshot of a large page is the slowest).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Uncaught exceptions and `console.error` calls of the page, as text.
    page_errors: Vec<String>,
    /// The last lines chromium wrote to stderr, for failure messages.
    stderr: Arc<Mutex<VecDeque<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless chromium with a fresh profile and opens a blank page.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("a temporary chromium profile directory");
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-port=0",
                "--hide-scrollbars",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {:?} ({e}): the browser test needs Chromium; install Debian's \
                     `chromium` (apt-get install chromium, as .ci/run does) or set SD_WGPU_CHROMIUM \
                     to a Chromium binary",
                    chromium()
                )
            });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("chromium's stderr is piped");
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap();
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let (port, path) = devtools_address(profile.path(), &mut child, &stderr);
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connecting to chromium's DevTools port {port}: {e}"));
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CALL_TIMEOUT)).unwrap();
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("websocket handshake with {url}: {e}"));
        // Short reads from here on, so that waits can check their deadlines.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            page_errors: Vec::new(),
            stderr,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .expect("Target.createTarget: a targetId");
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("Target.attachToTarget: a sessionId")
            .to_string();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends a command (to the page once attached) and returns its result,
    /// keeping the page's errors from the events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        if let Err(e) = self.ws.send(Message::text(msg.to_string())) {
            panic!("sending {method} to chromium: {e}{}", self.stderr_tail());
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    assert!(
                        Instant::now() < deadline,
                        "chromium did not answer {method} within {CALL_TIMEOUT:?}{}",
                        self.stderr_tail()
                    );
                    continue;
                }
                Err(e) => panic!("reading chromium's answer to {method}: {e}{}", self.stderr_tail()),
            };
            let reply: Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("chromium sent malformed JSON ({e}): {text}"));
            if reply["id"].as_u64() == Some(id) {
                if let Some(err) = reply.get("error") {
                    panic!(
                        "chromium refused {method} {params}: {err}",
                        params = msg["params"]
                    );
                }
                return reply["result"].clone();
            }
            self.note_event(&reply);
        }
    }

    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &params["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or(d["text"].as_str());
                self.page_errors.push(format!(
                    "uncaught: {} (line {})",
                    text.unwrap_or("?"),
                    d["lineNumber"]
                ));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .or(a["description"].as_str())
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect();
                self.page_errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            _ => {}
        }
    }

    /// The page's uncaught exceptions and console errors so far.
    pub fn page_errors(&self) -> &[String] {
        &self.page_errors
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and
    /// returns its value as JSON; a thrown exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"].as_str().or(ex["text"].as_str());
            panic!("evaluating `{expression}` threw: {}", text.unwrap_or("?"));
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy and returns its value; fails
    /// after `timeout`, showing `what` was awaited and the last value seen.
    pub fn wait_for(&mut self, what: &str, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}: `{expression}` is still {v}; page errors: {:?}",
                self.page_errors
            );
            thread::sleep(Duration::from_millis(30));
        }
    }

    /// Loads `url` and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(err) = r.get("errorText") {
            panic!("loading {url}: {err}");
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        );
    }

    /// Sets the viewport size in CSS pixels (`mobile` makes it a phone's).
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Clicks the middle of the element `selector` with the mouse, as a user
    /// does: it must be visible and not covered by something else.
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const el = document.querySelector({sel}); if (!el) return null; \
             el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect(); \
             const x = r.left + r.width / 2, y = r.top + r.height / 2; \
             const top = document.elementFromPoint(x, y); \
             return {{x, y, hit: !!top && (top === el || el.contains(top))}}; }})()",
            sel = json!(selector)
        );
        let at = self.wait_for(&format!("{selector} to exist"), &js, Duration::from_secs(10));
        assert_eq!(
            at["hit"], true,
            "{selector} is covered by another element at its centre"
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Focuses `selector`, empties it when `replace`, and types `text` into it
    /// (input events fire as for a keyboard).
    pub fn type_text(&mut self, selector: &str, text: &str, replace: bool) {
        let js = format!(
            "(() => {{ const el = document.querySelector({sel}); if (!el) return false; \
             el.focus(); if ({replace}) {{ el.value = ''; }} \
             else if (el.setSelectionRange) {{ el.setSelectionRange(el.value.length, el.value.length); }} \
             return document.activeElement === el; }})()",
            sel = json!(selector)
        );
        self.wait_for(
            &format!("{selector} to take the focus"),
            &js,
            Duration::from_secs(10),
        );
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Gives the file input `selector` the file at `path`, as a user's pick.
    pub fn set_file(&mut self, selector: &str, path: &Path) {
        let doc = self.call("DOM.getDocument", json!({}));
        let node = self.call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": selector}),
        );
        self.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": node["nodeId"], "files": [path.display().to_string()]}),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("Page.captureScreenshot: data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("Page.captureScreenshot: base64")
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap();
        format!(
            "\nchromium's stderr (last lines):\n{}",
            Vec::from(tail.clone()).join("\n")
        )
    }
}

/// Waits for chromium to write its DevTools port and browser websocket path
/// into `DevToolsActivePort` in the profile (the port it chose for `=0`).
fn devtools_address(profile: &Path, child: &mut Child, stderr: &Mutex<VecDeque<String>>) -> (u16, String) {
    let file: PathBuf = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse() {
                    return (port, path.trim().to_string());
                }
            }
        }
        let tail = || Vec::from(stderr.lock().unwrap().clone()).join("\n");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "chromium exited ({status}) before opening its DevTools port:\n{}",
                tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port within 30 s:\n{}",
            tail()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close lets chromium take its renderer and GPU processes
        // down with it; the kill is for a browser that no longer answers.
        self.session.clear();
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.ws.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
