//! Ingest over HTTP: every body format, the timestamp recorder, schema
//! widening, and every bad-input case with nothing written.

use crate::server::{get_json, post, rows, TestServer};
use serde_json::json;

fn columns(v: &serde_json::Value) -> Vec<(String, String)> {
    v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_body_format_is_accepted() {
    let s = TestServer::start().await;
    let url = s.url("/v1/events/fmt");
    let cases: &[(Option<&str>, &str, u64)] = &[
        (
            Some("application/json"),
            r#"{"path":"/a","ms":12,"ok":true}"#,
            1,
        ),
        (
            Some("application/json"),
            r#"[{"path":"/b","ms":1},{"path":"/c"}]"#,
            2,
        ),
        (
            Some("application/x-ndjson"),
            "{\"path\":\"/d\"}\n\n{\"ms\":3.5}\n",
            2,
        ),
        (
            Some("text/csv"),
            "path,ms,ts\n/e,7,2024-05-01T10:00:00Z\n/f,,1714557600000\n",
            2,
        ),
        // Charset parameters, and no content type at all.
        (
            Some("application/json; charset=utf-8"),
            r#"{"path":"/g"}"#,
            1,
        ),
        (None, r#"{"path":"/h"}"#, 1),
    ];
    for (ct, body, n) in cases {
        let (st, v) = post(&url, *ct, body.to_string()).await;
        assert_eq!((st, v), (200, json!({ "accepted": n })), "{ct:?} {body}");
    }
    assert_eq!(rows(&s, "fmt").await, 9);
    let (_, v) = get_json(&s.url("/v1/streams/fmt")).await;
    assert_eq!(
        columns(&v),
        vec![
            ("path".into(), "string".into()),
            ("ms".into(), "number".into()),
            ("ok".into(), "string".into())
        ]
    );
    // The CSV timestamps were taken from the file, not the arrival time.
    assert_eq!(v["min_ts"], json!("2024-05-01T10:00:00.000000Z"));
}

#[tokio::test]
async fn empty_post_records_one_timestamp_s0() {
    let s = TestServer::start().await;
    let before = chrono::Utc::now();
    let resp = reqwest::Client::new()
        .post(s.url("/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"accepted": 1})
    );
    let (st, v) = post(&s.url("/app"), None, "").await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    let after = chrono::Utc::now();
    let (_, v) = get_json(&s.url("/v1/streams/app")).await;
    assert_eq!(v["rows"], json!(2));
    assert!(
        columns(&v).is_empty(),
        "an empty POST stores only the timestamp"
    );
    let min: chrono::DateTime<chrono::Utc> = v["min_ts"].as_str().unwrap().parse().unwrap();
    let max: chrono::DateTime<chrono::Utc> = v["max_ts"].as_str().unwrap().parse().unwrap();
    assert!(
        before <= min && max <= after,
        "{before} <= {min} .. {max} <= {after}"
    );
}

#[tokio::test]
async fn schema_is_inferred_and_widened() {
    let s = TestServer::start().await;
    let url = s.url("/v1/events/wide");
    assert_eq!(post(&url, None, r#"{"a":"x"}"#).await.0, 200);
    assert_eq!(
        post(&url, None, r#"{"a":"y","b":2,"n":{"deep":{"c":"z"}}}"#)
            .await
            .0,
        200
    );
    let (_, v) = get_json(&s.url("/v1/streams/wide")).await;
    assert_eq!(
        columns(&v),
        vec![
            ("a".into(), "string".into()),
            ("b".into(), "number".into()),
            ("n.deep.c".into(), "string".into())
        ]
    );
    // A CSV cell that looks like a number stays a string in a string column.
    assert_eq!(post(&url, Some("text/csv"), "a,b\n123,4\n").await.0, 200);
    assert_eq!(rows(&s, "wide").await, 3);
}

/// Sends a bad request and checks status, named line/field, and that the
/// stream is unchanged (rows and schema).
async fn refused(
    s: &TestServer,
    stream: &str,
    ct: Option<&str>,
    body: &str,
    status: u16,
    line: Option<u64>,
    field: Option<&str>,
) {
    let before_rows = rows(s, stream).await;
    let (_, before) = get_json(&s.url(&format!("/v1/streams/{stream}"))).await;
    let (st, v) = post(
        &s.url(&format!("/v1/events/{stream}")),
        ct,
        body.to_string(),
    )
    .await;
    assert_eq!(st, status, "body {body:?} -> {v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    if let Some(l) = line {
        assert_eq!(v["line"], json!(l), "{v}");
    }
    if let Some(f) = field {
        assert_eq!(v["field"], json!(f), "{v}");
        assert!(v["error"].as_str().unwrap().contains(f), "{v}");
    }
    assert_eq!(
        rows(s, stream).await,
        before_rows,
        "a refused batch must write nothing"
    );
    let (_, after) = get_json(&s.url(&format!("/v1/streams/{stream}"))).await;
    assert_eq!(
        before["columns"], after["columns"],
        "a refused batch must not widen the schema"
    );
}

#[tokio::test]
async fn bad_input_is_refused_whole_with_line_and_field() {
    let s = TestServer::builder()
        .args(["--max-body-bytes", "4096"])
        .start()
        .await;
    let nd = Some("application/x-ndjson");
    assert_eq!(
        post(&s.url("/v1/events/bad"), nd, "{\"v\":1,\"d\":\"x\"}\n")
            .await
            .0,
        200
    );

    // Type conflict with the stream's schema, on line 3; lines 1-2 are fine
    // and must not be written either.
    let body = "{\"v\":2,\"new\":\"n\"}\n{\"v\":3}\n{\"v\":\"three\"}\n";
    refused(&s, "bad", nd, body, 400, Some(3), Some("v")).await;
    let (_, v) = post(&s.url("/v1/events/bad"), nd, body.to_string()).await;
    assert_eq!(v["expected_type"], json!("number"));
    assert_eq!(v["found_type"], json!("string"));
    assert_eq!(v["stream"], json!("bad"));
    // Number arriving as an object.
    refused(
        &s,
        "bad",
        nd,
        "{\"v\":1}\n{\"v\":{\"x\":1}}\n",
        400,
        Some(2),
        Some("v"),
    )
    .await;
    // Conflict inside one batch.
    refused(
        &s,
        "bad",
        nd,
        "{\"w\":1}\n{\"w\":\"s\"}\n",
        400,
        Some(2),
        Some("w"),
    )
    .await;
    // Syntax error on line 2.
    refused(&s, "bad", nd, "{\"v\":1}\n{\"v\":\n", 400, Some(2), None).await;
    // Timestamp.
    refused(
        &s,
        "bad",
        nd,
        "{\"v\":1}\n{\"ts\":\"not a time\"}\n",
        400,
        Some(2),
        Some("ts"),
    )
    .await;
    // Arrays and non-objects.
    refused(
        &s,
        "bad",
        Some("application/json"),
        r#"[{"v":1},{"d":[1,2]}]"#,
        400,
        Some(2),
        Some("d"),
    )
    .await;
    refused(
        &s,
        "bad",
        Some("application/json"),
        "[1]",
        400,
        Some(1),
        None,
    )
    .await;
    // CSV: ragged row, and a non-number in a number column.
    refused(
        &s,
        "bad",
        Some("text/csv"),
        "v,d\n1,a\n2\n",
        400,
        Some(3),
        None,
    )
    .await;
    refused(
        &s,
        "bad",
        Some("text/csv"),
        "v,d\n1,a\nx,b\n",
        400,
        Some(3),
        Some("v"),
    )
    .await;
    // Reserved and invalid field names.
    refused(&s, "bad", nd, "{\"\":1}\n", 400, Some(1), Some("")).await;
    // Too large: declared and streamed without a length.
    let big = format!("{{\"d\":\"{}\"}}", "x".repeat(5000));
    refused(&s, "bad", nd, &big, 413, None, None).await;
    let stream_body = reqwest::Body::wrap_stream(futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    ));
    let resp = reqwest::Client::new()
        .post(s.url("/v1/events/bad"))
        .header("content-type", "application/json")
        .body(stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Unsupported content type and encoding.
    refused(
        &s,
        "bad",
        Some("application/xml"),
        "<v>1</v>",
        415,
        None,
        None,
    )
    .await;
    let resp = reqwest::Client::new()
        .post(s.url("/v1/events/bad"))
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // Stream names.
    for name in ["9lives", "a.b", "x%20y", &"s".repeat(65)] {
        let (st, v) = post(&s.url(&format!("/v1/events/{name}")), nd, "{\"v\":1}").await;
        assert_eq!(st, 400, "{name}: {v}");
    }
    assert_eq!(rows(&s, "bad").await, 1);
}

#[tokio::test]
async fn overload_is_refused_with_503_and_retry_after() {
    // A budget that fits one large body at a time: concurrent ones are refused.
    let s = TestServer::builder()
        .args(["--ingest-budget-bytes", "1000000"])
        .start()
        .await;
    let body: String = (0..8000)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "p".repeat(40)))
        .collect();
    let client = reqwest::Client::new();
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..20 {
        let reqs = (0..12).map(|_| {
            client
                .post(s.url("/v1/events/over"))
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
        });
        for r in futures::future::join_all(reqs).await {
            let r = r.expect("a refused request still gets a clean HTTP answer");
            match r.status().as_u16() {
                200 => accepted += 8000,
                503 => {
                    assert_eq!(r.headers()["retry-after"], "1");
                    let v: serde_json::Value = r.json().await.unwrap();
                    assert!(
                        v["error"].as_str().unwrap().contains("memory budget"),
                        "{v}"
                    );
                    assert_eq!(v["retry_after"], json!(1));
                    refused += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        refused > 0,
        "12 concurrent bodies never exceeded a one-body budget"
    );
    assert_eq!(
        rows(&s, "over").await,
        accepted,
        "refused batches must write nothing"
    );

    // The in-memory tail limit, with no wait: refused until a flush frees
    // it. (Waiting for a flush is the engine's test.)
    let s = TestServer::builder()
        .args([
            "--memory-limit-bytes",
            "1",
            "--memory-wait-ms",
            "0",
            "--flush-interval-secs",
            "3600",
        ])
        .start()
        .await;
    assert_eq!(
        post(&s.url("/v1/events/mem"), None, r#"{"v":1}"#).await.0,
        200
    );
    let r = client
        .post(s.url("/v1/events/mem"))
        .body(r#"{"v":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
    assert_eq!(
        post(&s.url("/v1/events/mem"), None, r#"{"v":3}"#).await.0,
        200
    );
    assert_eq!(rows(&s, "mem").await, 2);
}

#[tokio::test]
async fn a_trickling_body_times_out_with_408() {
    let s = TestServer::builder()
        .args(["--body-read-timeout-secs", "1"])
        .start()
        .await;
    // A body that sends one line, then nothing for longer than the timeout.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    tx.send(Ok(bytes::Bytes::from_static(b"{\"v\":1}\n")))
        .await
        .unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let resp = reqwest::Client::new()
        .post(s.url("/v1/events/slow"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 408);
    drop(tx);
    assert_eq!(rows(&s, "slow").await, 0);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
