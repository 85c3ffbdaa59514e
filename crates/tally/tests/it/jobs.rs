//! Scheduled SQL jobs (docs/jobs.md): each window's rows equal the same SQL
//! run by hand over that window; running a window again replaces its rows;
//! lag, last success and run durations move when a job is stopped, fails or
//! is slowed by a heavier window.

use crate::server::{get_json, metrics_text, post, sql, TestServer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000_000;
const SERVICES: [&str; 4] = ["api", "auth", "search", "web"];

fn rfc3339(us: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn job(s: &TestServer, name: &str) -> Value {
    let (st, v) = get_json(&s.url(&format!("/v1/jobs/{name}"))).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Polls job `name` until `done` holds (30 s at most).
async fn wait_job(s: &TestServer, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let v = job(s, name).await;
        if done(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "waiting for {what}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deterministic access log lines over `hours` hours from `from`.
fn access_logs(from: i64, hours: i64, per_hour: i64, seed: u64) -> Vec<Value> {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for h in 0..hours {
        for _ in 0..per_hour {
            let ts = from + h * HOUR + (next() % HOUR as u64) as i64;
            out.push(json!({
                "ts": rfc3339(ts),
                "service": SERVICES[(next() % 4) as usize],
                "path": format!("/p{}", next() % 7),
                "rtt_ms": (next() % 5000) as f64 / 10.0,
            }));
        }
    }
    out
}

async fn ship(s: &TestServer, lines: &[Value]) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (st, v) = post(
        &s.url("/v1/events/access_logs"),
        Some("application/x-ndjson"),
        body,
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

const JOB_SQL: &str =
    "SELECT service, count(*) AS requests, avg(rtt_ms) AS avg_rtt_ms, max(rtt_ms) AS max_rtt_ms \
     FROM access_logs WHERE ts >= $window_start AND ts < $window_end GROUP BY service";

/// The job's rows for one window, and the same SQL run by hand over it.
async fn window_vs_hand(s: &TestServer, w: i64) -> (Vec<Value>, Vec<Value>) {
    let job = sql(
        s,
        &format!(
            "SELECT service, requests, avg_rtt_ms, max_rtt_ms FROM jobs.rtt_hourly \
             WHERE window_start = TIMESTAMP '{}' ORDER BY service",
            rfc3339(w)
        ),
    )
    .await;
    let by_hand = JOB_SQL
        .replace("$window_start", &format!("TIMESTAMP '{}'", rfc3339(w)))
        .replace("$window_end", &format!("TIMESTAMP '{}'", rfc3339(w + HOUR)));
    let hand = sql(s, &format!("{by_hand} ORDER BY service")).await;
    (job, hand)
}

/// Requests and max RTT per (hour, service), computed from the lines sent.
fn expected(lines: &[Value]) -> BTreeMap<(i64, String), (u64, f64)> {
    let mut m: BTreeMap<(i64, String), (u64, f64)> = BTreeMap::new();
    for l in lines {
        let ts = chrono::DateTime::parse_from_rfc3339(l["ts"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        let e = m
            .entry((
                ts.div_euclid(HOUR) * HOUR,
                l["service"].as_str().unwrap().to_string(),
            ))
            .or_default();
        e.0 += 1;
        e.1 = e.1.max(l["rtt_ms"].as_f64().unwrap());
    }
    m
}

#[tokio::test]
async fn job_windows_equal_the_sql_run_by_hand_and_reruns_replace_them() {
    // The test takes seconds: not across the turn of an hour, which would
    // add a window.
    let to_next_hour = HOUR - now_us().rem_euclid(HOUR);
    if to_next_hour < 60_000_000 {
        tokio::time::sleep(Duration::from_micros(to_next_hour as u64 + 1_000_000)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The three hours before the current one.
    let first = (now_us().div_euclid(HOUR) - 3) * HOUR;
    let mut lines = access_logs(first, 3, 400, 7);
    // Events are in before the job first runs: start without it.
    {
        let mut s = TestServer::builder().data_dir(&data).start().await;
        ship(&s, &lines).await;
        s.terminate();
    }
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"rtt_hourly\"\nevery = \"1h\"\nstart = \"{}\"\nsql = \"\"\"\n{JOB_SQL}\n\"\"\"\n",
            rfc3339(first)
        ),
    )
    .unwrap();
    let start = || {
        TestServer::builder()
            .data_dir(&data)
            .args(["--config", config.to_str().unwrap()])
            .start()
    };
    let s = start().await;
    let current = first + 3 * HOUR;
    let v = wait_job(&s, "rtt_hourly", "three windows", |v| {
        v["completed_until"] == json!(rfc3339(current))
    })
    .await;
    assert_eq!(v["runs_ok"], 3, "{v:#}");
    assert_eq!(v["runs_failed"], 0, "{v:#}");
    assert_eq!(v["windows"], 3, "{v:#}");
    assert_eq!(v["rows"], 12, "{v:#}");
    assert_eq!(v["table"], "jobs.rtt_hourly");
    let lag = v["lag_seconds"].as_f64().unwrap();
    let into_hour = (now_us() - current) as f64 / 1e6;
    assert!(
        (lag - into_hour).abs() < 5.0,
        "lag {lag} s, {into_hour} s into the hour"
    );

    let want = expected(&lines);
    for h in 0..3 {
        let w = first + h * HOUR;
        let (job, hand) = window_vs_hand(&s, w).await;
        assert_eq!(job, hand, "window {}", rfc3339(w));
        assert_eq!(job.len(), 4);
        for row in &job {
            let (n, max) = want[&(w, row["service"].as_str().unwrap().to_string())];
            assert_eq!(row["requests"], n, "{row}");
            assert_eq!(row["max_rtt_ms"].as_f64().unwrap(), max, "{row}");
        }
    }

    // Late events for the middle hour, then that window again: its rows
    // are replaced, the other windows' are untouched.
    let middle = first + HOUR;
    let late = access_logs(middle, 1, 150, 99);
    ship(&s, &late).await;
    lines.extend(late);
    let before_other = window_vs_hand(&s, first).await.0;
    for _ in 0..2 {
        let (st, v) = post(
            &s.url(&format!("/v1/jobs/rtt_hourly/run?from={}", rfc3339(middle))),
            None,
            "",
        )
        .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["runs"][0]["rows"], 4, "{v}");
    }
    let want = expected(&lines);
    let (job_rows, hand) = window_vs_hand(&s, middle).await;
    assert_eq!(job_rows, hand);
    for row in &job_rows {
        let (n, _) = want[&(middle, row["service"].as_str().unwrap().to_string())];
        assert_eq!(row["requests"], n, "{row}");
    }
    let total: u64 = job_rows
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 550);
    assert_eq!(window_vs_hand(&s, first).await.0, before_other);
    let counts = sql(
        &s,
        "SELECT count(*) AS n, count(DISTINCT window_start) AS w, sum(requests) AS r FROM jobs.rtt_hourly",
    )
    .await;
    assert_eq!(counts, vec![json!({"n": 12, "w": 3, "r": 1350})]);
    let v = job(&s, "rtt_hourly").await;
    assert_eq!(v["runs_ok"], 5);
    assert_eq!(v["history"][0]["trigger"], "manual");
    assert_eq!(v["completed_until"], json!(rfc3339(current)));

    // Windows that cannot run: not ended, not a boundary, beyond the next
    // in order; an unknown job.
    for (from, status, words) in [
        (rfc3339(current), 400, "has not ended"),
        (rfc3339(first + 60_000_000), 400, "not a window start"),
        (rfc3339(current - 4 * HOUR + HOUR), 200, ""),
    ] {
        let (st, v) = post(
            &s.url(&format!("/v1/jobs/rtt_hourly/run?from={from}")),
            None,
            "",
        )
        .await;
        assert_eq!(st, status, "{from}: {v}");
        assert!(v.to_string().contains(words), "{v}");
    }
    let (st, _) = post(
        &s.url(&format!("/v1/jobs/nope/run?from={}", rfc3339(first))),
        None,
        "",
    )
    .await;
    assert_eq!(st, 404);
    let (st, v) = post(&s.url("/v1/jobs/rtt_hourly/run?from=yesterday"), None, "").await;
    assert_eq!(st, 400, "{v}");

    // The table and the progress survive a restart (kill -9 included).
    let before = sql(
        &s,
        "SELECT * FROM jobs.rtt_hourly ORDER BY window_start, service",
    )
    .await;
    let mut s = s;
    s.kill9();
    drop(s);
    let s = start().await;
    let after = sql(
        &s,
        "SELECT * FROM jobs.rtt_hourly ORDER BY window_start, service",
    )
    .await;
    assert_eq!(before, after);
    let v = job(&s, "rtt_hourly").await;
    assert_eq!(v["completed_until"], json!(rfc3339(current)));
    assert_eq!(v["runs_ok"], 6);
}

#[tokio::test]
async fn job_lag_and_durations_move_when_a_job_is_stopped_fails_or_slows() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        "[[job]]\nname = \"ticks\"\nevery = \"1s\"\n\
         sql = \"SELECT count(*) AS events, count(DISTINCT id) AS ids FROM load WHERE ts >= $window_start AND ts < $window_end\"\n\
         [[job]]\nname = \"broken\"\nevery = \"1s\"\n\
         sql = \"SELECT sum(nope) AS s FROM load WHERE ts >= $window_start AND ts < $window_end\"\n",
    )
    .unwrap();
    let s = TestServer::builder()
        .args(["--config", config.to_str().unwrap()])
        .start()
        .await;
    let (st, v) = post(
        &s.url("/v1/events/load"),
        Some("application/json"),
        r#"{"id":"x"}"#,
    )
    .await;
    assert_eq!(st, 200, "{v}");

    // Keeping up: a window a second, the lag under two seconds.
    let v = wait_job(&s, "ticks", "three runs", |v| {
        v["runs_ok"].as_u64() >= Some(3)
    })
    .await;
    assert!(v["lag_seconds"].as_f64().unwrap() < 2.5, "{v:#}");
    let metrics = metrics_text(&s).await;
    let gauge = |m: &str, series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(gauge(&metrics, "tally_job_lag_seconds{job_name=\"ticks\"}") < 2.5);
    assert_eq!(
        gauge(&metrics, "tally_job_window_seconds{job_name=\"ticks\"}"),
        1.0
    );
    let success = gauge(
        &metrics,
        "tally_job_last_success_timestamp_seconds{job_name=\"ticks\"}",
    );
    assert!((now_us() as f64 / 1e6 - success).abs() < 3.0, "{success}");

    // A failing job: retried, never past its first window over events,
    // so its lag grows; its error names the column. (Windows before the
    // stream's first event had nothing to read: those succeed, each with
    // a note, and are the only successes.)
    let b = wait_job(&s, "broken", "two failures", |v| {
        v["runs_failed"].as_u64() >= Some(2)
    })
    .await;
    for run in b["history"].as_array().unwrap() {
        assert!(run["ok"] == false || run["note"].is_string(), "{run:#}");
    }
    assert!(
        b["last_run"]["error"].as_str().unwrap().contains("nope"),
        "{b:#}"
    );
    let lag0 = b["lag_seconds"].as_f64().unwrap();
    let later = wait_job(&s, "broken", "its lag to grow", |v| {
        v["lag_seconds"].as_f64().unwrap() > lag0 + 1.0
    })
    .await;
    for key in ["runs_ok", "last_success_at", "completed_until"] {
        assert_eq!(later[key], b[key], "{key} moved: {later:#}");
    }
    let metrics = metrics_text(&s).await;
    assert!(
        gauge(
            &metrics,
            "tally_job_runs_total{job_name=\"broken\",outcome=\"error\"}"
        ) >= 2.0
    );

    // Stopped: paused, no run, the lag grows past 3 s, last success stays.
    let (st, v) = post(&s.url("/v1/jobs/ticks/pause"), None, "").await;
    assert_eq!(st, 200, "{v}");
    // A run under way when the pause came finishes; then nothing runs.
    let paused = wait_job(&s, "ticks", "the run under way to end", |v| {
        v["running"].is_null()
    })
    .await;
    let stopped = wait_job(&s, "ticks", "lag past 3 s", |v| {
        v["lag_seconds"].as_f64().unwrap() > 3.0
    })
    .await;
    assert_eq!(stopped["runs_ok"], paused["runs_ok"]);
    assert_eq!(stopped["last_success_at"], paused["last_success_at"]);
    assert_eq!(stopped["paused"], true);
    let metrics = metrics_text(&s).await;
    assert!(gauge(&metrics, "tally_job_lag_seconds{job_name=\"ticks\"}") > 3.0);
    assert_eq!(gauge(&metrics, "tally_job_paused{job_name=\"ticks\"}"), 1.0);

    // Slowed: a heavy window among the ones waiting, 300,000 events in it.
    let heavy = chrono::DateTime::parse_from_rfc3339(
        stopped["next_window"]["window_start"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp_micros()
        + 1_000_000;
    assert!(heavy + 1_000_000 <= now_us());
    for part in 0..3 {
        let body: String = (0..100_000)
            .map(|i| {
                format!(
                    "{{\"ts\":\"{}\",\"id\":\"u{}\"}}\n",
                    rfc3339(heavy + i % 1_000_000),
                    part * 100_000 + i
                )
            })
            .collect();
        let (st, v) = post(
            &s.url("/v1/events/load"),
            Some("application/x-ndjson"),
            body,
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    // Resumed: every missed window runs, in order, and the lag falls back.
    let (st, v) = post(&s.url("/v1/jobs/ticks/resume"), None, "").await;
    assert_eq!(st, 200, "{v}");
    let caught_up = wait_job(&s, "ticks", "catching up", |v| {
        v["lag_seconds"].as_f64().unwrap() < 2.5
            && v["runs_ok"].as_u64().unwrap() >= stopped["runs_ok"].as_u64().unwrap() + 3
    })
    .await;
    assert_eq!(caught_up["paused"], false);
    let runs: Vec<&Value> = caught_up["history"].as_array().unwrap().iter().collect();
    let heavy_run = runs
        .iter()
        .find(|r| r["window_start"] == json!(rfc3339(heavy)))
        .unwrap_or_else(|| panic!("no run of the heavy window: {caught_up:#}"));
    let mut quick: Vec<f64> = runs
        .iter()
        .filter(|r| r["window_start"] != json!(rfc3339(heavy)))
        .map(|r| r["duration_ms"].as_f64().unwrap())
        .collect();
    quick.sort_by(f64::total_cmp);
    let median = quick[quick.len() / 2];
    let slow = heavy_run["duration_ms"].as_f64().unwrap();
    assert!(
        slow > 3.0 * median,
        "heavy window {slow} ms, median of the others {median} ms"
    );
    // The windows are contiguous: one row each, none twice, none missing.
    let rows = sql(
        &s,
        "SELECT count(*) AS n, count(DISTINCT window_start) AS w FROM jobs.ticks",
    )
    .await;
    let n = rows[0]["n"].as_i64().unwrap();
    assert_eq!(rows[0]["w"].as_i64().unwrap(), n);
    let span = sql(
        &s,
        "SELECT CAST(date_part('epoch', max(window_end)) - date_part('epoch', min(window_start)) AS BIGINT) AS secs FROM jobs.ticks",
    )
    .await;
    assert_eq!(span[0]["secs"].as_i64().unwrap(), n, "{rows:?}");
    let heavy_row = sql(
        &s,
        &format!(
            "SELECT events, ids FROM jobs.ticks WHERE window_start = TIMESTAMP '{}'",
            rfc3339(heavy)
        ),
    )
    .await;
    assert_eq!(heavy_row, vec![json!({"events": 300_000, "ids": 300_000})]);
    let metrics = metrics_text(&s).await;
    assert_eq!(gauge(&metrics, "tally_job_paused{job_name=\"ticks\"}"), 0.0);
    // Every run is in the duration histogram.
    let (st, v) = post(&s.url("/v1/jobs/ticks/pause"), None, "").await;
    assert_eq!(st, 200, "{v}");
    let done = wait_job(&s, "ticks", "the last run to end", |v| {
        v["running"].is_null()
    })
    .await;
    let metrics = metrics_text(&s).await;
    let count = gauge(&metrics, "tally_job_run_seconds_count{job_name=\"ticks\"}");
    assert_eq!(
        count as u64,
        done["runs_ok"].as_u64().unwrap() + done["runs_failed"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn a_bad_job_in_the_config_is_refused_at_start() {
    for (job, words) in [
        (
            "every = \"1h\"\nstart = \"2026-01-01T00:30:00Z\"\nsql = \"SELECT 1 AS one\"",
            "not a window boundary",
        ),
        (
            "every = \"500ms\"\nsql = \"SELECT 1 AS one\"",
            "whole seconds",
        ),
        ("every = \"1h\"\nsql = \"SELEC 1\"", "sql: SQL syntax error"),
    ] {
        let err = crate::server::refused_config(&format!("[[job]]\nname = \"j\"\n{job}\n"));
        assert!(
            err.contains("job \"j\"") && err.contains(words),
            "{job}: {err}"
        );
    }
}

/// Running a job that does not exist is a JSON 404, with or without its
/// parameters.
#[tokio::test]
async fn running_an_unknown_job_is_a_json_404() {
    let s = TestServer::start().await;
    for path in [
        "/v1/jobs/nope/run",
        "/v1/jobs/nope/run?from=2024-01-01T00:00:00Z",
    ] {
        let (st, v) = post(&s.url(path), None, "").await;
        assert_eq!(st, 404, "{path}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains("nope"),
            "{path}: {v}"
        );
    }
}

/// A job over a stream with no events yet (a new deployment) does not fail
/// its windows: each run succeeds, writes nothing and says why; once the
/// stream's first event arrives, the window holding it counts it.
#[tokio::test]
async fn a_job_waits_without_failing_for_its_stream_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        "[[job]]\nname = \"early\"\nevery = \"1s\"\n\
         sql = \"SELECT count(*) AS events FROM later WHERE ts >= $window_start AND ts < $window_end\"\n",
    )
    .unwrap();
    let s = TestServer::builder()
        .args(["--config", config.to_str().unwrap()])
        .start()
        .await;
    let v = wait_job(&s, "early", "two runs", |v| {
        v["runs_ok"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(v["runs_failed"], 0, "{v:#}");
    let note = v["last_run"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("later"), "{v:#}");
    assert_eq!(v["last_run"]["rows"], 0, "{v:#}");

    let (st, b) = post(
        &s.url("/v1/events/later"),
        Some("application/json"),
        r#"{"x":1}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, v) = post(
            &s.url("/v1/sql"),
            Some("application/json"),
            json!({"sql": "SELECT coalesce(sum(events), 0) AS n FROM jobs.early"}).to_string(),
        )
        .await;
        if st == 200 && v["rows"][0]["n"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the event never reached the job: {st} {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let v = job(&s, "early").await;
    assert_eq!(v["runs_failed"], 0, "{v:#}");
}
