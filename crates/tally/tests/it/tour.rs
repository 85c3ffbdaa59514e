//! The README's five-minute tour, run as written: its command blocks are
//! read from README.md itself (so the two cannot drift) and run with bash
//! against a real server, with only the address, the data directory and
//! `cargo run --release --` replaced by the test's. Where the README shows
//! an answer (`# ...` under a command), the output holds it (`...` stands
//! for any text); no other output may be an error.

use crate::server::TestServer;
use std::process::Command;

/// The tour's command blocks: runs of lines indented by four spaces.
fn blocks(readme: &str) -> Vec<String> {
    let start = readme
        .find("## Five-minute tour")
        .expect("the tour in README.md");
    let tour = &readme[start..];
    let end = tour[3..].find("\n## ").map_or(tour.len(), |i| i + 3);
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in tour[..end].lines() {
        match line.strip_prefix("    ") {
            Some(cmd) => {
                current.push_str(cmd);
                current.push('\n');
            }
            None if line.trim().is_empty() && !current.is_empty() => {}
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether `out` holds `want`, `...` standing for any text, whitespace
/// ignored.
fn shows(out: &str, want: &str) -> bool {
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    let out = squeeze(out);
    let mut at = 0;
    for piece in want.split("...").map(squeeze).filter(|p| !p.is_empty()) {
        match out[at..].find(&piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

#[tokio::test]
async fn the_readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for block in &blocks {
        // The server is the test's own, started as the tour's first block
        // says (a data directory, a loopback address).
        if block.contains(" -- serve ") {
            assert!(block.contains("--data-dir /tmp/tally"), "{block}");
            continue;
        }
        let script = block
            .replace("cargo run --release --", env!("CARGO_BIN_EXE_tally"))
            .replace("http://127.0.0.1:8080", &server.base)
            .replace("/tmp/tally", &server.data_dir.display().to_string());
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(cwd.path())
            .env("TALLY_URL", &server.base)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{block}\n{stdout}\n{stderr}");
        let shown: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("# ")).collect();
        for want in &shown {
            assert!(shows(&stdout, want), "{block}\nwant {want}\ngot {stdout}");
        }
        if !shown.iter().any(|w| w.contains("\"error\"")) {
            assert!(!stdout.contains("\"error\""), "{block}\n{stdout}");
        }
        ran += 1;
    }
    assert!(ran >= 8, "{ran} blocks ran");
}
