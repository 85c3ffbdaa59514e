//! API keys and scopes, and the refusal to serve a public address unguarded.

use crate::server::TestServer;
use std::process::Command;

/// Runs `tally keys new` and returns (token, config snippet).
pub(crate) fn new_key(name: &str, scopes: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["keys", "new", "--name", name, "--scopes", scopes])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("# token: "))
        .unwrap()
        .to_string();
    let snippet: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !snippet.contains(&token),
        "the config must hold only the hash"
    );
    (token, snippet)
}

async fn status(method: &str, url: &str, token: Option<&str>) -> u16 {
    let c = reqwest::Client::new();
    let mut req = match method {
        "GET" => c.get(url),
        _ => c
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"v":1}"#),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn scopes_are_enforced() {
    let (ingest, a) = new_key("writer", "ingest");
    let (read, b) = new_key("reader", "read");
    let (admin, c) = new_key("ops", "admin");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(&config, format!("{a}{b}{c}")).unwrap();
    let s = TestServer::builder()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--web-site",
            "example.com",
        ])
        .start()
        .await;
    let ev = s.url("/v1/events/sec");
    let streams = s.url("/v1/streams");
    let flush = s.url("/v1/admin/flush");

    assert_eq!(status("POST", &ev, None).await, 401);
    assert_eq!(status("POST", &ev, Some("tly_0000")).await, 401);
    assert_eq!(status("POST", &ev, Some(&read)).await, 403);
    assert_eq!(status("POST", &ev, Some(&ingest)).await, 200);
    assert_eq!(status("POST", &ev, Some(&admin)).await, 200);
    assert_eq!(status("POST", &s.url("/app"), None).await, 401);

    assert_eq!(status("GET", &streams, None).await, 401);
    assert_eq!(status("GET", &streams, Some(&ingest)).await, 403);
    assert_eq!(status("GET", &streams, Some(&read)).await, 200);

    assert_eq!(status("POST", &flush, Some(&read)).await, 403);
    assert_eq!(status("POST", &flush, Some(&admin)).await, 200);

    // Plausible's Stats API takes a read key as its Bearer token; the
    // backfill of past tracker events needs an admin key.
    let stats = s.url("/api/v1/stats/aggregate?site_id=example.com&period=day");
    assert_eq!(status("GET", &stats, None).await, 401);
    assert_eq!(status("GET", &stats, Some(&ingest)).await, 403);
    assert_eq!(status("GET", &stats, Some(&read)).await, 200);
    let backfill = s.url("/v1/web/backfill");
    assert_eq!(status("POST", &backfill, None).await, 401);
    assert_eq!(status("POST", &backfill, Some(&read)).await, 403);

    // Health and metrics stay open for probes and scrapers.
    assert_eq!(status("GET", &s.url("/healthz"), None).await, 200);
    assert_eq!(status("GET", &s.url("/readyz"), None).await, 200);
    // The token never appears in the server's log.
    assert!(!s.stderr_log().contains(&ingest));
}

#[tokio::test]
async fn public_address_without_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without API keys"),
        "{err}"
    );
    assert!(
        !dir.path().join("wal").exists(),
        "nothing may be opened before the refusal"
    );

    // Explicitly allowed: it starts.
    let s = TestServer::builder()
        .args(["--listen", "0.0.0.0:0", "--allow-unauthenticated"])
        .start()
        .await;
    assert!(s.base.contains("0.0.0.0:"));
    // With keys: it starts.
    let (_, snippet) = new_key("k", "ingest");
    let config = dir.path().join("k.toml");
    std::fs::write(&config, snippet).unwrap();
    let s2 = TestServer::builder()
        .args([
            "--listen",
            "0.0.0.0:0",
            "--config",
            config.to_str().unwrap(),
        ])
        .start()
        .await;
    assert!(s2.base.contains("0.0.0.0:"));
}
