//! A real HAProxy (Debian's package) in front of tally nodes, configured
//! from the shipped `deploy/haproxy/haproxy.cfg` with loopback addresses,
//! and its servers' states read from its admin socket.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Haproxy {
    child: Child,
    socket: PathBuf,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy on `port`, balancing over `servers` (name, port) on
    /// 127.0.0.1, health-checked every `inter`.
    pub async fn start(port: u16, servers: &[(&str, u16)], inter: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/haproxy/haproxy.cfg"
        ))
        .unwrap();
        let mut config = String::new();
        for line in shipped.lines() {
            let t = line.trim_start();
            if t.starts_with("server ") || t.starts_with("log ") {
                continue;
            }
            if t.starts_with("bind ") {
                config.push_str(&format!("    bind 127.0.0.1:{port}\n"));
                continue;
            }
            // A test process may not raise its descriptor limit far.
            let line = line
                .replace("inter 1s", &format!("inter {inter}"))
                .replace("maxconn 20000", "maxconn 2000");
            config.push_str(&line);
            config.push('\n');
            if t == "global" {
                config.push_str(&format!(
                    "    stats socket {} mode 600 level admin\n",
                    socket.display()
                ));
            }
        }
        assert!(config.contains("option httpchk GET /readyz"), "{config}");
        for (name, p) in servers {
            config.push_str(&format!("    server {name} 127.0.0.1:{p}\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy (scripts/test.sh installs Debian's package)");
        let h = Haproxy {
            child,
            socket,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Up once it listens and its admin socket answers (HAProxy may
        // make one a moment after the other).
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::os::unix::net::UnixStream::connect(&h.socket).is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "haproxy did not listen: {}",
                h.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Each server's state (`UP`, `DOWN`, `UP 1/2` ...) and the requests
    /// it was sent, from `show stat`.
    pub fn servers(&self) -> Vec<(String, String, u64)> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.write_all(b"show stat\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
        let (sv, status, total) = (col("svname"), col("status"), col("stot"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status && !["FRONTEND", "BACKEND"].contains(&f[sv]))
            .map(|f| {
                (
                    f[sv].to_string(),
                    f[status].to_string(),
                    f[total].parse().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until HAProxy reports `name` in state `state` (`UP`, `DOWN`).
    pub async fn wait_state(&self, name: &str, state: &str) {
        let t = Instant::now();
        loop {
            let all = self.servers();
            if all.iter().any(|(n, s, _)| n == name && s == state) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{name} never {state}: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
