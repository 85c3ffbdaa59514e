//! Batch import (`tally import`, `POST /v1/import/{stream}`): all of a file
//! or none of it, checked against DuckDB reading the same file; a bad last
//! row, a type that changes in a later chunk, retries by batch id, a kill -9
//! at random points of large imports, and a shutdown during an upload.

use crate::server::{get_json, metric, metrics_text, post, python, rows, TestServer};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PORTS: [&str; 12] = [
    "NOOSL", "CNSGH", "DEHAM", "USNYC", "NLRTM", "SGSIN", "JPTYO", "BRSSZ", "ZADUR", "AUSYD",
    "INNSA", "GBFXT",
];

/// A price file of `n` rows over 2016's first 150 days (150 partitions),
/// CSV or TSV; the last row's price replaced by `last_price` when given.
fn price_file(path: &Path, n: usize, seed: u64, tab: bool, last_price: Option<&str>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sep = if tab { "\t" } else { "," };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "ts{sep}orig_code{sep}dest_code{sep}price").unwrap();
    let start = chrono::NaiveDate::from_ymd_opt(2016, 1, 1).unwrap();
    for i in 0..n {
        let day = start + chrono::Days::new(rng.random_range(0..150));
        let o = PORTS[rng.random_range(0..PORTS.len())];
        let d = PORTS[rng.random_range(0..PORTS.len())];
        let price = match last_price {
            Some(p) if i == n - 1 => p.to_string(),
            _ => rng.random_range(100..5000).to_string(),
        };
        writeln!(f, "{day}T00:00:00Z{sep}{o}{sep}{d}{sep}{price}").unwrap();
    }
    f.flush().unwrap();
}

async fn import_http(server: &TestServer, stream: &str, batch: &str, file: &Path) -> (u16, Value) {
    let ct = match file.extension().and_then(|e| e.to_str()) {
        Some("tsv") => "text/tab-separated-values",
        Some("ndjson") => "application/x-ndjson",
        _ => "text/csv",
    };
    let body = tokio::fs::read(file).await.unwrap();
    post(
        &server.url(&format!("/v1/import/{stream}?batch_id={batch}")),
        Some(ct),
        body,
    )
    .await
}

fn cli_import(server: &TestServer, file: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["import", file.to_str().unwrap(), "--stream", "prices"])
        .args(["--url", &server.base])
        .args(extra)
        .output()
        .unwrap()
}

/// Staged imports left in the data directory (an adopted import's files
/// move to its stream's segment directory).
fn staged_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("imports")) else {
        return Vec::new();
    };
    entries.map(|e| e.unwrap().path()).collect()
}

/// Per day: count and sum of prices, from tally's rollup and from DuckDB
/// reading the files.
async fn daily_from_rollup(server: &TestServer) -> Vec<(String, u64, f64)> {
    let (st, v) = post(
        &server.url("/v1/query"),
        Some("application/json"),
        json!({"stream": "prices", "from": "2016-01-01T00:00:00Z", "to": "2016-06-01T00:00:00Z",
               "interval": "1d", "aggregates": ["count", "sum(price)"], "source": "rollup",
               "fill": "none"})
        .to_string(),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let mut out: Vec<(String, u64, f64)> = v["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["count"].as_u64().unwrap_or(0) > 0)
        .map(|p| {
            (
                p["t"].as_str().unwrap().to_string(),
                p["count"].as_u64().unwrap(),
                p["sum(price)"].as_f64().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn daily_from_duckdb(files: &[&Path]) -> Vec<(String, u64, f64)> {
    let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let out = python(
        r#"
import duckdb, json, sys
files = json.loads(sys.argv[1])
rel = " UNION ALL ".join(
    f"SELECT ts, price FROM read_csv('{f}', header=true, delim='{chr(9) if f.endswith('.tsv') else ','}', columns={{'ts':'VARCHAR','orig_code':'VARCHAR','dest_code':'VARCHAR','price':'DOUBLE'}})"
    for f in files)
rows = duckdb.sql(f"SELECT ts, count(*), sum(price) FROM ({rel}) GROUP BY ts ORDER BY ts").fetchall()
print(json.dumps(rows))
"#,
        &[&serde_json::to_string(&list).unwrap()],
    );
    let rows: Vec<(String, u64, f64)> = serde_json::from_str(&out).unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_is_all_or_nothing_and_retries_are_not_imported_twice() {
    let dir = tempfile::tempdir().unwrap();
    // A small spill budget: the imports below write many staged files per
    // partition, as a file of hundreds of millions of rows would.
    let server = TestServer::builder()
        .args(["--import-spill-bytes", "1048576"])
        .start()
        .await;
    let (st, v) = post(
        &server.url("/v1/rollups"),
        Some("application/json"),
        r#"{"name":"prices_daily","stream":"prices","intervals":["day"],"aggregates":["count","sum(price)"]}"#,
    )
    .await;
    assert_eq!(st, 202, "{v}");

    // CSV through the CLI: one line with the row count and rows/s.
    let good = dir.path().join("good.csv");
    price_file(&good, 200_000, 1, false, None);
    let out = cli_import(&server, &good, &["--batch-id", "good-1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 200000 rows into 'prices'") && stdout.contains("rows/s"),
        "{stdout}"
    );
    assert_eq!(rows(&server, "prices").await, 200_000);

    // The same command again: recognised, nothing imported twice.
    let out = cli_import(&server, &good, &["--batch-id", "good-1"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already imported (200000 rows"), "{stdout}");
    assert_eq!(rows(&server, "prices").await, 200_000);

    // A bad last row: 400 naming its line and column, nothing imported,
    // no staged file left.
    let bad = dir.path().join("bad.csv");
    price_file(&bad, 150_000, 2, false, Some("cheap"));
    let (st, v) = import_http(&server, "prices", "bad-1", &bad).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["line"], 150_001, "{v}");
    assert_eq!(v["field"], "price", "{v}");
    assert_eq!(v["outcome"], "rolled_back", "{v}");
    assert_eq!(v["batch_id"], "bad-1", "{v}");
    assert_eq!(rows(&server, "prices").await, 200_000);
    assert!(staged_dirs(&server.data_dir).is_empty());
    // The CLI says the same, with the line.
    let out = cli_import(&server, &bad, &["--batch-id", "bad-2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 150001, field 'price'")
            && err.contains("nothing of the file was imported"),
        "{err}"
    );

    // A refused batch id is not used up: the fixed file goes in under it.
    let fixed = dir.path().join("fixed.tsv");
    price_file(&fixed, 150_000, 2, true, None);
    let (st, v) = import_http(&server, "prices", "bad-1", &fixed).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outcome"], "committed", "{v}");
    assert_eq!(v["rows"], 150_000, "{v}");
    assert!(v["files"].as_u64().unwrap() > 150, "{v}");

    // NDJSON whose field changes type inside a chunk (line 90,002), and
    // from one chunk to the next (every row of the second 64 k-row chunk,
    // from line 65,538; there is a blank line at line 11): refused at that
    // line, nothing imported.
    for (name, first_text) in [("mixed", 90_000), ("later", 65_536)] {
        let nd = dir.path().join(format!("{name}.ndjson"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&nd).unwrap());
        for i in 0..100_000 {
            if i == 10 {
                writeln!(f).unwrap();
            }
            if i >= first_text {
                writeln!(f, "{{\"ts\":\"2016-02-01T00:00:00Z\",\"price\":\"n/a\"}}").unwrap();
            } else {
                writeln!(f, "{{\"ts\":\"2016-02-01T00:00:00Z\",\"price\":{i}}}").unwrap();
            }
        }
        drop(f);
        let (st, v) = import_http(&server, "prices", name, &nd).await;
        assert_eq!(st, 400, "{v}");
        let line = first_text as u64 + 2;
        assert_eq!(
            (v["line"].as_u64(), v["field"].as_str()),
            (Some(line), Some("price")),
            "{v}"
        );
    }
    assert_eq!(rows(&server, "prices").await, 350_000);
    // A type that conflicts with the stream: refused before anything is staged.
    let (st, v) = post(
        &server.url("/v1/import/prices?batch_id=conflict"),
        Some("text/csv"),
        "ts,price\n2016-01-01T00:00:00Z,1\n2016-01-01T00:00:00Z,x\n",
    )
    .await;
    assert_eq!((st, v["line"].as_u64()), (400, Some(3)), "{v}");
    let (st, v) = post(
        &server.url("/v1/import/prices?batch_id=../x"),
        Some("text/csv"),
        "price\n1\n",
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(&server.url("/v1/import/prices"), Some("text/plain"), "x").await;
    assert_eq!(st, 415, "{v}");

    // Raw rows, the rollup and DuckDB over the imported files agree.
    let want = daily_from_duckdb(&[&good, &fixed]);
    assert_eq!(want.len(), 150);
    let (st, v) = post(
        &server.url("/v1/sql"),
        Some("application/json"),
        json!({"sql": "SELECT count(*) AS n, sum(price) AS s FROM prices"}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["n"], 350_000);
    let total: f64 = want.iter().map(|r| r.2).sum();
    assert_eq!(v["rows"][0]["s"].as_f64().unwrap(), total);
    assert_eq!(daily_from_rollup(&server).await, want);
    let m = metrics_text(&server).await;
    assert_eq!(
        metric(&m, "tally_imports_total{outcome=\"committed\"}"),
        Some(2)
    );
    assert!(metric(&m, "tally_imports_total{outcome=\"rolled_back\"}").unwrap() >= 4);

    // After a restart (segments flushed or not): the same rows, the same
    // rollup, and the batch ids still remembered.
    let (data, _keep) = server.into_data_dir();
    let server = TestServer::builder().data_dir(&data).start().await;
    assert_eq!(rows(&server, "prices").await, 350_000);
    assert_eq!(daily_from_rollup(&server).await, want);
    let (st, v) = import_http(&server, "prices", "good-1", &good).await;
    assert_eq!(
        (st, v["outcome"].as_str()),
        (200, Some("already_imported")),
        "{v}"
    );
    assert_eq!(rows(&server, "prices").await, 350_000);
    let (st, v) = get_json(&server.url("/v1/streams/prices")).await;
    assert_eq!(st, 200, "{v}");
}

/// kill -9 during large imports: while uploading and staging (at points
/// spread over an import), just after one was acknowledged, and (through a
/// fail point) between its commit record becoming durable and the catalog
/// adopting its files. After each restart every batch is there whole or
/// not at all, acknowledged ones are there, no staged file is left, and
/// retrying the batch ids ends with each imported exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_imports_leaves_each_batch_whole_or_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = tmp.path().join("big.csv");
    let n: u64 = 600_000;
    price_file(&file, n as usize, 3, false, None);
    let body = std::fs::read(&file).unwrap();
    // How long one import takes here, so the kills below land inside one.
    let took = {
        let server = TestServer::builder().data_dir(&data).start().await;
        let t = std::time::Instant::now();
        let (st, v) = post(
            &server.url("/v1/import/prices?batch_id=first"),
            Some("text/csv"),
            body.clone(),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        t.elapsed()
    };
    let mut expected = n;
    for (cycle, kill) in ["0.2", "0.5", "0.8", "acknowledged", "before_adopt"]
        .into_iter()
        .enumerate()
    {
        let mut builder = TestServer::builder()
            .data_dir(&data)
            .args(["--import-spill-bytes", "4194304"]);
        if kill == "before_adopt" {
            builder = builder.env("TALLY_FAILPOINT", "import_before_adopt");
        }
        let mut server = builder.start().await;
        let before = rows(&server, "prices").await;
        assert_eq!(before, expected, "cycle {cycle}");
        let url = server.url(&format!("/v1/import/prices?batch_id=big-{cycle}"));
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(256 << 10).map(|c| Ok(c.to_vec())).collect();
        let request = tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "text/csv")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        let status = match kill.parse::<f64>() {
            Ok(at) => {
                tokio::time::sleep(took.mul_f64(at)).await;
                server.kill9();
                request.await.unwrap()
            }
            Err(_) => {
                // Answered, or (at the fail point) the process aborted.
                let status = request.await.unwrap();
                server.kill9();
                status
            }
        };
        let server = TestServer::builder().data_dir(&data).start().await;
        let after = rows(&server, "prices").await;
        eprintln!(
            "cycle {cycle}: killed at {kill}, answer {status:?}, present: {}",
            after > before
        );
        assert!(
            after == before || after == before + n,
            "cycle {cycle}: {before} rows before, {after} after (answer {status:?})"
        );
        if matches!(status, Ok(200)) || kill == "before_adopt" {
            assert_eq!(after, before + n, "cycle {cycle}: committed but absent");
        }
        assert!(staged_dirs(&data).is_empty(), "cycle {cycle}");
        // The retry imports it exactly once.
        let (st, v) = post(
            &server.url(&format!("/v1/import/prices?batch_id=big-{cycle}")),
            Some("text/csv"),
            body.clone(),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let outcome = if after == before {
            "committed"
        } else {
            "already_imported"
        };
        assert_eq!(v["outcome"], outcome, "cycle {cycle}: {v}");
        expected += n;
        assert_eq!(rows(&server, "prices").await, expected);
    }
}

/// SIGTERM while a file is still arriving: the import is rolled back, the
/// client is told so (503, outcome rolled_back, Retry-After), the server
/// exits cleanly, and nothing of the batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_during_an_upload_rolls_back_and_says_so() {
    let mut server = TestServer::start().await;
    let url = server.url("/v1/import/prices?batch_id=slow");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let request = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .expect("answer");
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").is_some();
        (status, retry, r.json::<Value>().await.unwrap_or_default())
    });
    tx.send(Ok(b"ts,price\n".to_vec())).await.unwrap();
    for i in 0..1000 {
        tx.send(Ok(format!("2016-01-01T00:00:00Z,{i}\n").into_bytes()))
            .await
            .unwrap();
    }
    // Wait until the server has staged a part (its import directory exists).
    let staged = server.data_dir.join("imports/slow");
    let t = std::time::Instant::now();
    while !staged.exists() {
        assert!(t.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = server.terminate();
        (s, server)
    });
    let (status_code, retry, v) = request.await.unwrap();
    drop(tx);
    assert_eq!(status_code, 503, "{v}");
    assert!(retry);
    assert_eq!(v["outcome"], "rolled_back", "{v}");
    assert!(v["error"].as_str().unwrap().contains("rolled back"), "{v}");
    let (exit, server) = status.await.unwrap();
    assert!(exit.success(), "{exit:?}");
    let (data, _keep) = server.into_data_dir();
    assert!(!data.join("imports/slow").exists());
    let server = TestServer::builder().data_dir(&data).start().await;
    assert_eq!(rows(&server, "prices").await, 0);
}

/// `tally import -` reads standard input; the same input piped again is
/// recognised by its default batch id (a hash of the bytes) and not
/// imported twice; without `--format` it is refused before anything is
/// sent.
#[tokio::test]
async fn import_reads_standard_input_and_imports_it_once() {
    let server = TestServer::start().await;
    let n = 5_000u64;
    let input: String = (0..n)
        .map(|i| format!("{{\"ts\":\"2024-01-01T00:00:{:02}Z\",\"v\":{i}}}\n", i % 60))
        .collect();
    let pipe = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["import", "-", "--stream", "piped", "--url", &server.base])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Refused before reading, the CLI may close its input first.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    };
    // Piped as NDJSON: it succeeds and says `says`.
    let pipe_ok = |says: String| {
        let out = pipe(&["--format", "ndjson"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&says), "{stdout}");
    };
    pipe_ok(format!("imported {n} rows into 'piped'"));
    let got = crate::server::sql(&server, "SELECT count(*) AS n, sum(v) AS s FROM piped").await;
    assert_eq!(got[0]["n"], n, "{got:?}");
    assert_eq!(
        got[0]["s"].as_f64(),
        Some((n * (n - 1) / 2) as f64),
        "{got:?}"
    );

    pipe_ok(format!("already imported ({n} rows"));
    assert_eq!(rows(&server, "piped").await, n);

    let out = pipe(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --format"), "{err}");
}
