//! Pages in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser, installed by scripts/test.sh). Screenshots are kept as
//! artifacts under target/tmp/artifacts/.

use crate::server::TestServer;
use std::path::PathBuf;
use std::process::Command;

/// Runs a browser script against `server`; returns its last stdout line.
fn run_script(script: &str, server: &TestServer, screenshot: &str) -> (String, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (or npm ci --prefix {})",
        dir.display()
    );
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join(screenshot);
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(dir.join(script))
        .arg(&server.base)
        .arg(&shot)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout: {stdout}\nstderr: {}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr_log()
    );
    let last = stdout.lines().last().unwrap_or_default().to_string();
    (last, shot)
}

#[tokio::test]
async fn counter_page_registers_clicks_refuses_and_updates_other_viewers() {
    let server = TestServer::start().await;
    // The server is another process: blocking this thread while the browser
    // runs is fine.
    let (summary, shot) = run_script("counter.mjs", &server, "counter-page.png");
    let v: serde_json::Value = serde_json::from_str(&summary).expect("summary JSON");
    assert_eq!(
        v["after"].as_u64(),
        v["before"].as_u64().map(|b| b + 1),
        "{v}"
    );
    assert!(v["live_ms"].as_u64().expect("live_ms") < 1000, "{v}");
    assert!(v["refusal"].as_str().unwrap().starts_with("Not yet"), "{v}");
    // The server agrees with what the page showed.
    let (_, value) = crate::server::get_json(&server.url("/getvalue")).await;
    assert_eq!(value["value"], v["after"]);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "{}",
        shot.display()
    );
}
