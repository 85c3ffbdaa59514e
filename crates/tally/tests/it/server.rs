//! `TestServer`: the real `tally` binary on port 0 with a temporary data
//! directory. It waits for `/readyz` and kills the process on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub struct Builder {
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Builder {
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn data_dir(mut self, d: &Path) -> Self {
        self.data_dir = Some(d.to_path_buf());
        self
    }
    pub async fn start(self) -> TestServer {
        let (tmp, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                // The data directory inside the temporary one, so the
                // stderr log beside it goes with it.
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.arg("serve").arg("--data-dir").arg(&data_dir);
        if !self.args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(&self.args);
        cmd.env("TALLY_LOG", "warn");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("stderr.log"))
            .expect("stderr log");
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("spawn tally");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.with_extension("stderr.log"))
                    .unwrap_or_default();
                panic!("tally did not print its address; stderr:\n{log}")
            });
        let addr = first
            .strip_prefix("tally listening on ")
            .expect("address line")
            .to_string();
        let server = TestServer {
            child: Some(child),
            base: addr,
            data_dir,
            _tmp: tmp,
        };
        server.wait_ready().await;
        server
    }
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            args: Vec::new(),
            data_dir: None,
            env: Vec::new(),
        }
    }

    pub async fn start() -> TestServer {
        Self::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
                last = r.text().await.unwrap_or_default();
            }
            if Instant::now() >= deadline {
                let log = self.stderr_log();
                // Its own lines, not the frames of a backtrace.
                let lines = log.lines().filter(|l| !l.starts_with("  "));
                let tail: Vec<&str> = lines.rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "tally not ready within 60 s: {last}\nits log ends:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` to the process, which keeps running (as far as the
    /// test knows).
    pub fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, signal) };
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits up to 60 s for the process to exit (after a signal).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tally did not exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Keeps the data directory alive after the server is gone.
    pub fn into_data_dir(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.kill9_keeping_data()
    }

    /// SIGKILL, handing over the data directory (and its temporary owner)
    /// for a restart.
    pub fn kill9_keeping_data(&mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.kill9();
        (self.data_dir.clone(), self._tmp.take())
    }

    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("stderr.log")).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// POSTs `body` with `content_type`; returns status and JSON body.
pub async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The rows of a SQL query's answer.
pub async fn sql(server: &TestServer, q: &str) -> Vec<serde_json::Value> {
    let (st, v) = post(
        &server.url("/v1/sql"),
        Some("application/json"),
        serde_json::json!({ "sql": q }).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{q}: {v}");
    v["rows"].as_array().unwrap().clone()
}

/// Rows of `stream` as the server reports them (0 if it does not exist).
pub async fn rows(server: &TestServer, stream: &str) -> u64 {
    let (status, v) = get_json(&server.url(&format!("/v1/streams/{stream}"))).await;
    if status == 404 {
        return 0;
    }
    assert_eq!(status, 200, "{v}");
    v["rows"].as_u64().expect("rows")
}

/// Runs a Python snippet (with DuckDB available) and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The server's /metrics text.
pub async fn metrics_text(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one series (`name{labels}` as written) in a /metrics text.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Starts `tally serve` with `config` as its config file, expects it to
/// refuse to start, and returns what it printed on stderr.
pub fn refused_config(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, config).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--config",
            path.to_str().expect("utf-8 path"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("tally");
    assert!(!out.status.success(), "tally started with {config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
