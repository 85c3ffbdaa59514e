//! Operations: metrics checked by promtool, graceful shutdown, the OpenAPI
//! document.

use crate::server::{get_json, post, rows, TestServer};
use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test]
async fn metrics_pass_promtool() {
    let s = TestServer::start().await;
    assert_eq!(
        post(&s.url("/v1/events/m"), None, r#"{"v":1}"#).await.0,
        200
    );
    assert_eq!(
        post(&s.url("/v1/events/m"), None, r#"{"v":"x"}"#).await.0,
        400
    );
    let text = crate::server::metrics_text(&s).await;
    for name in [
        "tally_ingest_events_accepted_total",
        "tally_ingest_events_rejected_total",
        "tally_ingest_batch_events",
        "tally_log_append_bytes_total",
        "tally_log_fsync_seconds",
        "tally_log_queue_depth",
        "tally_store_segments",
        "tally_store_compactions_total",
        "tally_http_requests_total",
        "tally_log_torn_tail_truncations_total",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    assert!(
        text.contains("tally_ingest_events_accepted_total 1"),
        "{text}"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by the test command");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_finishes_flushes_and_exits_zero() {
    let mut s = TestServer::builder()
        .args(["--flush-interval-secs", "3600"])
        .start()
        .await;
    for i in 0..20 {
        assert_eq!(
            post(&s.url("/v1/events/g"), None, format!("{{\"i\":{i}}}"))
                .await
                .0,
            200
        );
    }
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    let (dir, _keep) = s.into_data_dir();
    // Everything was flushed: the restart replays nothing and has every row.
    let s2 = TestServer::builder().data_dir(&dir).start().await;
    let (_, ready) = get_json(&s2.url("/readyz")).await;
    assert_eq!(ready["replayed_records"], 0, "{ready}");
    assert_eq!(rows(&s2, "g").await, 20);
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let s = TestServer::start().await;
    let (st, doc) = get_json(&s.url("/v1/openapi.json")).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/v1/events/{stream}",
        "/v1/import/{stream}",
        "/write",
        "/api/v2/write",
        "/ping",
        "/{stream}",
        "/v1/streams",
        "/v1/streams/{stream}",
        "/v1/admin/flush",
        "/v1/admin/backup",
        "/v1/jobs",
        "/v1/jobs/{name}",
        "/v1/jobs/{name}/run",
        "/v1/jobs/{name}/pause",
        "/v1/jobs/{name}/resume",
        "/healthz",
        "/readyz",
        "/metrics",
        "/counter/{name}",
        "/counter/{name}/value",
        "/counter/{name}/events",
        "/counter/{name}/inc",
        "/getvalue",
        "/account",
        "/account/register",
        "/account/login",
        "/account/logout",
        "/v1/counters",
        "/rates",
        "/api/event",
        "/js/script.js",
        "/v1/sites",
        "/v1/sites/{domain}",
        "/v1/web/backfill",
        "/api/v1/stats/realtime/visitors",
        "/api/v1/stats/aggregate",
        "/api/v1/stats/timeseries",
        "/api/v1/stats/breakdown",
        "/dashboard",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_every_accepted_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut s = TestServer::start().await;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (url, acked, stop) = (s.url("/v1/events/term"), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body: String = (0..50).map(|i| format!("{{\"i\":{i}}}\n")).collect();
            while !stop.load(Ordering::Relaxed) {
                match client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        acked.fetch_add(50, Ordering::Relaxed);
                    }
                    // Once shutdown starts, new requests are refused (503 or
                    // a closed connection); nothing they sent is stored.
                    _ => break,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < 2_000 {
        assert!(
            !writers.iter().all(|w| w.is_finished()),
            "every writer stopped before shutdown began"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "writers made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let st = s.terminate();
        (st, s)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(status.0.success(), "{:?}", status.0);
    let (dir, _keep) = status.1.into_data_dir();
    let s2 = TestServer::builder().data_dir(&dir).start().await;
    let (_, ready) = get_json(&s2.url("/readyz")).await;
    assert_eq!(
        ready["replayed_records"], 0,
        "shutdown flushed everything: {ready}"
    );
    assert_eq!(
        rows(&s2, "term").await,
        acked.load(Ordering::Relaxed),
        "every answered batch, and nothing else"
    );
}

/// The Prometheus alert rules shipped in deploy/prometheus pass promtool's
/// checks and its unit tests (alerts fire when lag or refusals last), and
/// name metrics and labels a running server exports.
#[tokio::test]
async fn prometheus_rules_pass_promtool_and_name_real_series() {
    // A server with a rollup, and a memory limit so small that the second
    // write is refused: every series the rules read then exists.
    // A job that fails at each run: its lag, window and run series exist.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tally.toml");
    std::fs::write(
        &config,
        "[[job]]\nname = \"j\"\nevery = \"1s\"\nsql = \"SELECT sum(nope) AS s FROM logs\"\n",
    )
    .unwrap();
    let s = TestServer::builder()
        .args(["--memory-limit-bytes", "1", "--memory-wait-ms", "0"])
        .args(["--config", config.to_str().unwrap()])
        .start()
        .await;
    let def = serde_json::json!({"name": "rtt", "stream": "logs", "intervals": ["minute"],
        "group_by": ["service"], "aggregates": ["count", "avg(rtt_ms)"]});
    let (st, v) = post(
        &s.url("/v1/rollups"),
        Some("application/json"),
        def.to_string(),
    )
    .await;
    assert!(st == 201 || st == 202, "{st} {v}");
    let url = s.url("/v1/events/logs");
    let (st, v) = post(
        &url,
        Some("application/json"),
        r#"{"service":"api","rtt_ms":3}"#,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        &url,
        Some("application/json"),
        r#"{"service":"api","rtt_ms":4}"#,
    )
    .await;
    assert_eq!(st, 503, "{v}");
    let t = std::time::Instant::now();
    let metrics = loop {
        let m = crate::server::metrics_text(&s).await;
        if m.contains("tally_job_runs_total{job_name=\"j\",outcome=\"error\"}") {
            break m;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "job j never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        rules_pass_promtool_and_name_series("tally-rules", &metrics),
        6
    );
}

/// `deploy/prometheus/<name>.yml` passes `promtool check rules` and the unit
/// tests of `<name>.test.yml`, and every rule's expression names a series
/// (with its grouping label) that `metrics` holds. Returns the rules checked.
pub(crate) fn rules_pass_promtool_and_name_series(name: &str, metrics: &str) -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    let (rules, tests) = (format!("{name}.yml"), format!("{name}.test.yml"));
    for args in [["check", "rules", &rules], ["test", "rules", &tests]] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool is installed by the test command");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(format!("{dir}/{rules}")).unwrap();
    let mut checked = 0;
    for expr in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
    {
        // `... by (instance, label) (... metric ...)`: the metric, with the
        // label when the rule groups by one.
        let metric = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("tally_"))
            .unwrap();
        let label = expr
            .split_once("by (instance, ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(l, _)| l.to_string());
        let series = match &label {
            Some(l) => format!("{metric}{{{l}=\""),
            None => format!("{metric} "),
        };
        assert!(metrics.contains(&series), "{expr}: no {series} in /metrics");
        checked += 1;
    }
    checked
}
