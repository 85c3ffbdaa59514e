//! The raw archive and retention, against a real S3-compatible server
//! (`s3s-fs`, installed by the test command) and the default local
//! directory: old partitions leave the data directory but answers over
//! them stay whole (read from the archive), DuckDB reads the archive on its
//! own, and a rollup built after retention is built from the archive.

use crate::query::{post_lines, sql};
use crate::server::{get_json, post, python, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Per day: (events, sum of `v`), computed by the test from what it sent.
type Expected = BTreeMap<i64, (u64, i64)>;

/// `n` events over the 5 days before the last full hour: the expected
/// answer is this test's own count, not tally's.
fn events(rng: &mut StdRng, n: usize, now_ms: i64, expected: &mut Expected) -> Vec<String> {
    let end = now_ms - now_ms.rem_euclid(HOUR_MS) - HOUR_MS;
    (0..n)
        .map(|_| {
            let ts = end - rng.random_range(1..5 * DAY_MS);
            let v: i64 = rng.random_range(0..1000);
            let country = ["NO", "SE", "DK", "FI"][rng.random_range(0..4)];
            let e = expected.entry(ts.div_euclid(DAY_MS)).or_default();
            e.0 += 1;
            e.1 += v;
            json!({
                "ts": ts,
                "country": country,
                "v": v,
            })
            .to_string()
        })
        .collect()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// tally's answer per day.
async fn per_day(s: &TestServer) -> Expected {
    let (st, v) = sql(
        s,
        "SELECT CAST(floor(CAST(to_unixtime(ts) AS DOUBLE) / 86400) AS BIGINT) AS d, \
         count(*) AS n, CAST(sum(v) AS BIGINT) AS s FROM ev GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["d"].as_i64().unwrap(),
                (r["n"].as_u64().unwrap(), r["s"].as_i64().unwrap()),
            )
        })
        .collect()
}

/// DuckDB's answer per day over archived Parquet files.
fn duckdb_per_day(files: &[String]) -> Expected {
    let out = python(
        r#"
import duckdb, json, sys
files = json.loads(sys.argv[1])
rows = duckdb.sql(f"""
    SELECT CAST(floor(epoch(ts) / 86400) AS BIGINT) AS d, count(*), CAST(sum(v) AS BIGINT)
    FROM read_parquet({files!r}, union_by_name = true) GROUP BY 1 ORDER BY 1
""").fetchall()
print(json.dumps(rows))
"#,
        &[&serde_json::to_string(files).unwrap()],
    );
    let rows: Vec<(i64, u64, i64)> = serde_json::from_str(out.trim()).unwrap();
    rows.into_iter().map(|(d, n, s)| (d, (n, s))).collect()
}

async fn maintain(s: &TestServer) -> Value {
    let (st, v) = post(&s.url("/v1/admin/maintain"), None, "").await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn flush(s: &TestServer) {
    let (st, v) = post(&s.url("/v1/admin/flush"), None, "").await;
    assert_eq!(st, 200, "{v}");
}

/// The partitions (hour starts, ms) the data directory's catalog names.
fn local_partitions(data_dir: &Path) -> Vec<i64> {
    let cat: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("catalog.json")).unwrap()).unwrap();
    cat["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["partition"].as_i64().unwrap() / 1000)
        .collect()
}

/// An S3-compatible server on a free port, its objects under `root`.
struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    fn start(root: &Path) -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = ["s3s-fs"]
            .into_iter()
            .map(String::from)
            .chain(std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/s3s-fs")))
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("s3s-fs is not installed (scripts/test.sh installs it)");
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                "tally-test",
                "--secret-key",
                "tally-test-secret",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn s3s-fs");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "s3s-fs did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        S3 { child, port }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_old_partitions_to_s3_and_answers_stay_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    std::fs::create_dir_all(root.join("tally")).unwrap(); // the bucket
    let s3 = S3::start(&root);
    let config = tmp.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[archive]
url = "s3://tally/archive"
endpoint = "http://127.0.0.1:{}"
region = "us-east-1"
access_key_id = "tally-test"
secret_access_key = "tally-test-secret"
allow_http = true
settle_secs = 0
interval_secs = 3600

[retention]
ev = "72h"
"#,
            s3.port
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let start = || {
        TestServer::builder()
            .data_dir(&data)
            .args(["--config", config.to_str().unwrap()])
            .start()
    };
    let mut s = start().await;
    let mut rng = StdRng::seed_from_u64(4);
    let mut expected = Expected::new();
    let now = now_ms();
    // Two flushes: two segments per hour; the archive holds each event once.
    for _ in 0..2 {
        post_lines(&s, "ev", &events(&mut rng, 20_000, now, &mut expected)).await;
        flush(&s).await;
    }
    assert_eq!(per_day(&s).await, expected);

    let m = maintain(&s).await;
    assert!(
        m["archive"]["uploaded_segments"].as_u64().unwrap() > 0,
        "{m}"
    );
    let dropped = m["retention"]["dropped_rows"].as_u64().unwrap();
    assert!(dropped > 10_000, "{m}");
    // Nothing older than the retention (whole hours) is local any more...
    let cutoff = now_ms() - 72 * HOUR_MS;
    let local = local_partitions(&data);
    assert!(!local.is_empty());
    assert!(local.iter().all(|p| p + HOUR_MS > cutoff), "{local:?}");
    // ... yet the answers are whole: the rest is read from S3.
    assert_eq!(per_day(&s).await, expected);
    let (st, a) = get_json(&s.url("/v1/archive")).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["archive_only_rows"].as_u64(), Some(dropped), "{a}");
    assert_eq!(a["rows"].as_u64(), Some(40_000), "{a}");
    let (_, st) = get_json(&s.url("/v1/streams/ev")).await;
    assert_eq!(st["rows"].as_u64(), Some(40_000), "{st}");
    assert_eq!(st["archive_only_rows"].as_u64(), Some(dropped), "{st}");

    // DuckDB reads the archive's Parquet as the S3 server stored it, both
    // by the manifest and by a glob.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("tally/archive/manifest.json")).unwrap())
            .unwrap();
    let files: Vec<String> = manifest["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = root.join("tally/archive").join(e["path"].as_str().unwrap());
            p.to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(duckdb_per_day(&files), expected);
    let glob = root.join("tally/archive/segments/ev/**/*.parquet");
    assert_eq!(
        duckdb_per_day(&[glob.to_string_lossy().into_owned()]),
        expected
    );

    // A late event for a partition only the archive holds, and a restart
    // after kill -9: the manifest comes back from S3.
    let late = now - 4 * DAY_MS;
    post_lines(&s, "ev", &[json!({"ts": late, "v": 5}).to_string()]).await;
    let e = expected.entry(late.div_euclid(DAY_MS)).or_default();
    e.0 += 1;
    e.1 += 5;
    s.kill9();
    drop(s);
    let s = start().await;
    assert_eq!(per_day(&s).await, expected);
    flush(&s).await;
    maintain(&s).await;
    assert!(local_partitions(&data)
        .iter()
        .all(|p| p + HOUR_MS > now_ms() - 72 * HOUR_MS));
    assert_eq!(per_day(&s).await, expected);

    // A rollup defined now is built from the archive and the local rest.
    let (st, v) = post(
        &s.url("/v1/rollups"),
        Some("application/json"),
        json!({"name": "daily", "stream": "ev", "intervals": ["day"],
               "aggregates": ["count", "sum(v)"]})
        .to_string(),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let t = Instant::now();
    loop {
        let (_, v) = get_json(&s.url("/v1/rollups/daily")).await;
        if v["status"] == "ready" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_day = *expected.keys().next().unwrap();
    let (st, q) = post(
        &s.url("/v1/query"),
        Some("application/json"),
        json!({"stream": "ev", "from": rfc3339(first_day * DAY_MS), "to": rfc3339(now_ms() + DAY_MS),
               "interval": "1d", "aggregates": ["count", "sum(v)"], "source": "rollup"})
        .to_string(),
    )
    .await;
    assert_eq!(st, 200, "{q}");
    assert_eq!(q["source"], "rollup:daily", "{q}");
    let got: Expected = q["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["count"].as_u64().unwrap_or(0) > 0)
        .map(|p| {
            let t = chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap();
            (
                t.timestamp_millis().div_euclid(DAY_MS),
                (
                    p["count"].as_u64().unwrap(),
                    p["sum(v)"].as_f64().unwrap() as i64,
                ),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_archive_is_a_local_directory_duckdb_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tally.toml");
    std::fs::write(&config, "[archive]\nsettle_secs = 0\n").unwrap();
    let data = tmp.path().join("data");
    let s = TestServer::builder()
        .data_dir(&data)
        .args(["--config", config.to_str().unwrap()])
        .start()
        .await;
    let mut rng = StdRng::seed_from_u64(5);
    let mut expected = Expected::new();
    post_lines(&s, "ev", &events(&mut rng, 5_000, now_ms(), &mut expected)).await;
    flush(&s).await;
    let m = maintain(&s).await;
    assert!(
        m["archive"]["uploaded_segments"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert_eq!(m["retention"]["dropped_rows"], 0, "{m}");
    let glob = data.join("archive/segments/ev/**/*.parquet");
    assert_eq!(
        duckdb_per_day(&[glob.to_string_lossy().into_owned()]),
        expected
    );
    // Without an archive, retention deletes: the answer shrinks to what
    // the data directory keeps, and says so nowhere else.
    drop(s);
    std::fs::write(&config, "[retention]\nev = \"72h\"\n").unwrap();
    let s = TestServer::builder()
        .data_dir(&data)
        .args(["--config", config.to_str().unwrap(), "--archive", "none"])
        .start()
        .await;
    let (st, _) = get_json(&s.url("/v1/archive")).await;
    assert_eq!(st, 404);
    // (The maintenance thread's first pass, at start, may have done it.)
    let m = maintain(&s).await;
    assert!(m["archive"].is_null(), "{m}");
    let local = local_partitions(&data);
    assert!(!local.is_empty());
    assert!(
        local.iter().all(|p| p + HOUR_MS > now_ms() - 72 * HOUR_MS),
        "{local:?}"
    );
    let cutoff_day = (now_ms() - 72 * HOUR_MS).div_euclid(DAY_MS);
    let got = per_day(&s).await;
    assert!(got.keys().all(|d| *d >= cutoff_day), "{got:?}");
    for (d, want) in &expected {
        if *d > cutoff_day {
            assert_eq!(got.get(d), Some(want), "day {d}");
        }
    }
}

/// An archive location that cannot be used stops the server at start, with
/// the flag and the accepted forms named, and nothing made anywhere.
#[test]
fn an_unusable_archive_location_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    for (url, reason) in [
        ("ftp://x/y", "the scheme \"ftp\" is not supported"),
        ("gs://bucket/p", "the scheme \"gs\" is not supported"),
        ("relative/dir", "\"relative/dir\" is a relative directory"),
        ("s3://", "no bucket"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .current_dir(cwd.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--archive",
                url,
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--archive {url:?}")), "{url}: {err}");
        assert!(err.contains(reason), "{url}: {err}");
        assert!(
            err.contains("s3://BUCKET[/PREFIX], file:///ABSOLUTE/DIR"),
            "{url}: {err}"
        );
        assert!(!err.contains("listening"), "{url}: {err}");
        assert_eq!(
            std::fs::read_dir(cwd.path()).unwrap().count(),
            0,
            "{url}: something was made in the working directory"
        );
    }
}
