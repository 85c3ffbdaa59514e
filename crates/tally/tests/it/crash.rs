//! Crash safety: SIGKILL the real server under concurrent writers, restart it
//! on the same data directory, and check with DuckDB that every acknowledged
//! event is present exactly once. Also a torn log tail.

use crate::server::{post, python, rows, TestServer};
use rand::Rng;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_concurrent_writers_loses_and_duplicates_nothing() {
    let cycles: usize = std::env::var("TALLY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    // Small flush thresholds so kills also land inside flushes, log
    // truncation and compaction.
    let args = ["--flush-bytes", "32768", "--flush-interval-secs", "1"];
    for cycle in 0..cycles {
        let mut server = TestServer::builder()
            .data_dir(&dir)
            .args(args)
            .start()
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (url, stop, acked, sent) = (
                server.url("/v1/events/crash"),
                stop.clone(),
                acked.clone(),
                sent.clone(),
            );
            writers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = rand::rng().random_range(1..40);
                    let ids: Vec<String> =
                        (0..n).map(|i| format!("c{cycle}-w{w}-{seq}-{i}")).collect();
                    seq += 1;
                    let body: String = ids
                        .iter()
                        .map(|id| format!("{{\"id\":\"{id}\",\"v\":1}}\n"))
                        .collect();
                    sent.lock().unwrap().extend(ids.iter().cloned());
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status() == 200 => acked.lock().unwrap().extend(ids),
                        Ok(resp) if resp.status() == 503 => {}
                        Ok(resp) => panic!("unexpected status {}", resp.status()),
                        Err(_) => {}
                    }
                }
            }));
        }
        let wait = rand::rng().random_range(30..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
    }

    // Restart, flush everything to segments, stop cleanly.
    let mut server = TestServer::builder().data_dir(&dir).start().await;
    let acked = acked.lock().unwrap().clone();
    let n_rows = rows(&server, "crash").await;
    assert!(
        n_rows as usize >= acked.len(),
        "{n_rows} rows but {} acknowledged",
        acked.len()
    );
    assert_eq!(post(&server.url("/v1/admin/flush"), None, "").await.0, 200);
    assert!(server.terminate().success());

    let acked_file = tmp.path().join("acked.txt");
    std::fs::write(&acked_file, acked.join("\n")).unwrap();
    let sent_file = tmp.path().join("sent.txt");
    std::fs::write(&sent_file, sent.lock().unwrap().join("\n")).unwrap();
    let glob = format!("{}/segments/crash/**/*.parquet", dir.display());
    let out = python(
        r#"
import duckdb, json, sys
g, acked_path, sent_path = sys.argv[1:4]
con = duckdb.connect()
rows = con.execute(f"select id, count(*) from read_parquet('{g}') group by id").fetchall()
present = {r[0]: r[1] for r in rows}
acked = [l for l in open(acked_path).read().split("\n") if l]
sent = set(l for l in open(sent_path).read().split("\n") if l)
print(json.dumps({
  "present": len(present),
  "acked": len(acked),
  "missing": [a for a in acked if a not in present][:10],
  "duplicated": [k for k, c in present.items() if c > 1][:10],
  "unknown": [k for k in present if k not in sent][:10],
}))
"#,
        &[
            &glob,
            acked_file.to_str().unwrap(),
            sent_file.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["acked"].as_u64().unwrap() > 100,
        "too few acknowledged writes to mean anything: {v}"
    );
    assert_eq!(
        v["missing"],
        serde_json::json!([]),
        "acknowledged events lost: {v}"
    );
    assert_eq!(
        v["duplicated"],
        serde_json::json!([]),
        "events stored twice: {v}"
    );
    assert_eq!(
        v["unknown"],
        serde_json::json!([]),
        "events nobody sent: {v}"
    );
    assert_eq!(v["present"].as_u64(), Some(n_rows));
    println!(
        "crash test: {cycles} kill -9 cycles, {} events acknowledged, {} present, 0 missing, 0 duplicated",
        v["acked"], v["present"]
    );
}

#[tokio::test]
async fn torn_log_tail_is_truncated_and_reported() {
    let mut s = TestServer::builder()
        .args(["--flush-interval-secs", "3600"])
        .start()
        .await;
    for i in 0..50 {
        assert_eq!(
            post(&s.url("/v1/events/torn"), None, format!("{{\"i\":{i}}}"))
                .await
                .0,
            200
        );
    }
    s.kill9();
    let (dir, _keep) = s.into_data_dir();
    // A crash mid-write leaves a partial record: a frame header promising
    // more bytes than exist, then garbage.
    let mut wal: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    wal.sort();
    let last = wal.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&4000u32.to_le_bytes()).unwrap();
    f.write_all(&[0xA5; 93]).unwrap();
    drop(f);

    let mut s = TestServer::builder().data_dir(&dir).start().await;
    assert_eq!(rows(&s, "torn").await, 50);
    let metrics = crate::server::metrics_text(&s).await;
    assert!(
        metrics.contains("tally_log_torn_tail_truncations_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_log_torn_tail_bytes_total 97"),
        "{metrics}"
    );
    assert!(s.stderr_log().contains("truncating torn log tail"));
    // The log goes on from the cut.
    assert_eq!(
        post(&s.url("/v1/events/torn"), None, "{\"i\":50}").await.0,
        200
    );
    s.kill9();
    let s = TestServer::builder().data_dir(&dir).start().await;
    assert_eq!(rows(&s, "torn").await, 51);
}
