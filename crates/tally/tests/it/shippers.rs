//! Log shippers' bodies as Fluent Bit's `http` output, Vector's `http` sink
//! and Fluentd's `out_http` send them: each names and writes the event time
//! its own way, read per stream (`[time]` in the config file) or per
//! request (`ts_field`, `ts_format`).

use crate::server::{post, sql, TestServer};
use serde_json::{json, Value};

/// 2024-05-01T10:00:00.123456Z
const T0: i64 = 1_714_557_600_123_456;

async fn times(s: &TestServer, stream: &str) -> Vec<Value> {
    sql(
        s,
        &format!("SELECT CAST(ts AS BIGINT) AS t, msg FROM {stream} ORDER BY ts"),
    )
    .await
}

#[tokio::test]
async fn shippers_time_fields_are_read_per_stream_or_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        "[time]\nfluentbit = { field = \"date\", format = \"epoch_s\" }\n\
         vector = { field = \"timestamp\", format = \"rfc3339\" }\n\
         fluentd = { field = \"time\", format = \"epoch_s\" }\n",
    )
    .unwrap();
    let s = TestServer::builder()
        .args(["--config", config.to_str().unwrap()])
        .start()
        .await;

    // Fluent Bit, `format json_lines`, `json_date_key date`,
    // `json_date_format double`.
    let body =
        "{\"date\":1714557600.123456,\"msg\":\"a\"}\n{\"date\":1714557601.000001,\"msg\":\"b\"}\n";
    let (st, v) = post(
        &s.url("/v1/events/fluentbit"),
        Some("application/x-ndjson"),
        body,
    )
    .await;
    assert_eq!((st, v), (200, json!({"accepted": 2})));
    // Fluent Bit, `format json`: one JSON array per request.
    let body = "[{\"date\":1714557602.5,\"msg\":\"c\"}]";
    let (st, v) = post(
        &s.url("/v1/events/fluentbit"),
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    assert_eq!(
        times(&s, "fluentbit").await,
        vec![
            json!({"t": T0, "msg": "a"}),
            json!({"t": 1_714_557_601_000_001i64, "msg": "b"}),
            json!({"t": 1_714_557_602_500_000i64, "msg": "c"}),
        ]
    );

    // Vector, `encoding.codec = "json"`, `framing.method =
    // "newline_delimited"`: RFC 3339 with nanoseconds.
    let body = "{\"timestamp\":\"2024-05-01T10:00:00.123456789Z\",\"msg\":\"v\",\"host\":\"h1\"}\n";
    let (st, v) = post(
        &s.url("/v1/events/vector"),
        Some("application/x-ndjson"),
        body,
    )
    .await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    assert_eq!(
        times(&s, "vector").await,
        vec![json!({"t": T0, "msg": "v"})]
    );

    // Fluentd, `<format> @type json`, `<inject> time_key time, time_type
    // unixtime`: whole seconds.
    let body = "{\"time\":1714557600,\"msg\":\"f\"}\n";
    let (st, v) = post(
        &s.url("/v1/events/fluentd"),
        Some("application/x-ndjson"),
        body,
    )
    .await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    assert_eq!(
        times(&s, "fluentd").await,
        vec![json!({"t": T0 - 123_456, "msg": "f"})]
    );

    // Per request, for a stream with no entry; the import reads the same
    // parameters.
    let body = "{\"at\":1714557600123456789,\"msg\":\"r\"}\n";
    let url = s.url("/v1/events/adhoc?ts_field=at&ts_format=epoch_ns");
    let (st, v) = post(&url, Some("application/x-ndjson"), body).await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    let url = s.url("/v1/import/adhoc?batch_id=i1&ts_field=at&ts_format=epoch_ms");
    let (st, v) = post(
        &url,
        Some("application/x-ndjson"),
        "{\"at\":1714557600124,\"msg\":\"i\"}\n",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        times(&s, "adhoc").await,
        vec![
            json!({"t": T0, "msg": "r"}),
            json!({"t": 1_714_557_600_124_000i64, "msg": "i"})
        ]
    );

    // A time in another format names the line and the field; nothing of
    // the request is written.
    let body = "{\"date\":1714557600.5,\"msg\":\"ok\"}\n{\"date\":\"2024-05-01T10:00:00Z\",\"msg\":\"bad\"}\n";
    let (st, v) = post(
        &s.url("/v1/events/fluentbit"),
        Some("application/x-ndjson"),
        body,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        (v["line"].clone(), v["field"].clone()),
        (json!(2), json!("date")),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("expected epoch seconds"),
        "{v}"
    );
    assert_eq!(times(&s, "fluentbit").await.len(), 3);
    let (st, v) = post(
        &s.url("/v1/events/x?ts_format=weeks"),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("epoch_s"), "{v}");
}

#[tokio::test]
async fn a_bad_time_entry_in_the_config_is_refused_at_start() {
    let err = crate::server::refused_config(
        "[time]\nlogs = { field = \"date\", format = \"fortnights\" }\n",
    );
    assert!(err.contains("[time] logs: format \"fortnights\""), "{err}");
}

/// examples/logs: access logs shipped as Fluent Bit sends them, into a
/// server run with the example's config; the script checks the rollup's
/// and the hourly job's average RTT per service per hour against its own
/// from the lines sent.
#[tokio::test]
async fn the_access_logs_example_answers_rtt_per_service_per_hour() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/logs");
    let s = TestServer::builder()
        .args(["--config", &format!("{root}/tally.toml")])
        .start()
        .await;
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/ship.py"))
        .arg(&s.base)
        .args(["--lines", "20000", "--hours", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(summary["lines"], 20000);
    assert_eq!(summary["mismatches"], json!([]));
    // Four services over three (or, early in an hour, fewer) hours.
    assert!(
        summary["hour_service_rows"].as_u64().unwrap() >= 8,
        "{summary}"
    );
    // The hourly job over the two complete hours: four services each.
    assert_eq!(summary["job_rows"], 8, "{summary}");
}
