//! Real `nats-server` processes for the cluster tests: one alone, or
//! several clustered on loopback, each with JetStream on its own disk
//! (`sync_interval: always`), killed, paused and restarted by the tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server of the test cluster.
pub struct NatsServer {
    child: Option<Child>,
    config: PathBuf,
    client: u16,
    monitor: u16,
}

impl NatsServer {
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.config.with_extension("log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (scripts/test.sh installs it)");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("running");
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, signal) };
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client)
    }

    /// Waits for the server's JetStream to be up.
    pub async fn wait_healthy(&mut self) -> Result<(), String> {
        self.wait_health("js-enabled-only=true").await
    }

    /// Waits until the server's copies of every stream are current (a
    /// server back from a crash has caught up): one failure at a time is
    /// what an R3 stream is built to survive.
    pub async fn wait_current(&mut self) {
        if let Err(e) = self.wait_health("").await {
            panic!("{e}");
        }
    }

    /// Polls the server's health endpoint for up to 60 s; fails early,
    /// with the end of its log, when the server has exited (another
    /// process took one of its ports between `free_port` and its start).
    async fn wait_health(&mut self, query: &str) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{}/healthz?{query}", self.monitor);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "nats-server {} within 60 s ({url}); its log ends:\n{}",
                    if exited { "exited" } else { "not healthy" },
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three nats-servers in one cluster, each with JetStream on its own disk.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Three servers in one cluster.
    pub async fn start() -> NatsCluster {
        Self::start_n(3).await
    }

    /// `n` servers: one alone, or several in one cluster. A server that
    /// cannot start (a port taken by another test's process in the
    /// meantime) makes the whole cluster start again on other ports.
    pub async fn start_n(n: usize) -> NatsCluster {
        Self::start_with(n, "", "").await
    }

    /// `n` servers with `jetstream` more lines in their JetStream block
    /// (a `domain`) and `more` configuration after (leaf nodes).
    pub async fn start_with(n: usize, jetstream: &str, more: &str) -> NatsCluster {
        let mut attempt = 1;
        loop {
            match Self::try_start(n, jetstream, more).await {
                Ok(c) => return c,
                Err(e) if attempt < 3 => {
                    eprintln!("NATS cluster start {attempt} failed, again on other ports: {e}");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    async fn try_start(n: usize, jetstream: &str, more: &str) -> Result<NatsCluster, String> {
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (client, monitor) = (free_port(), free_port());
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let store = dir.path().join(format!("js{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: tally-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    others.join(", ")
                )
            } else {
                String::new()
            };
            std::fs::write(
                &config,
                format!(
                    r#"server_name: n{i}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
  {jetstream}
}}
{cluster}
{more}"#,
                    store = store.display(),
                ),
            )
            .unwrap();
            let mut s = NatsServer {
                child: None,
                config,
                client,
                monitor,
            };
            s.spawn();
            servers.push(s);
        }
        for s in &mut servers {
            s.wait_healthy().await?;
        }
        Ok(NatsCluster { servers, _dir: dir })
    }

    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(",")
    }
}
