//! Hostile input against the real binary: each class of request that could
//! exhaust or crash a server (deep and long SQL, huge IN lists, deep JSON,
//! empty bodies with a declared format, oversized names and points, too
//! many filters) gets its documented status, names the limit, writes
//! nothing, and leaves the server healthy for the next request.

use crate::server::{get_json, post, rows, sql, TestServer};
use serde_json::{json, Value};

async fn post_sql(s: &TestServer, q: &str) -> (u16, Value) {
    post(
        &s.url("/v1/sql"),
        Some("application/json"),
        json!({ "sql": q }).to_string(),
    )
    .await
}

/// The server still answers, and has not restarted (its stderr holds no
/// panic or abort).
async fn assert_healthy(s: &TestServer) {
    let (st, v) = get_json(&s.url("/readyz")).await;
    assert_eq!(st, 200, "{v}");
    let log = s.stderr_log();
    assert!(
        !log.contains("overflowed its stack") && !log.contains("panicked"),
        "{log}"
    );
}

/// `SELECT 1+1+...+1` with `n` additions, padded with spaces to `len`
/// bytes when given.
fn chain(n: usize) -> String {
    format!("SELECT {}", vec!["1"; n + 1].join("+"))
}

#[tokio::test]
async fn sql_past_each_limit_is_refused_by_name_and_the_server_stays_up() {
    let s = TestServer::start().await;
    const MAX_BYTES: usize = 256 << 10;
    // The deepest tree a statement within the size limit can make: one
    // addition per two bytes. It used to overflow a query thread's stack
    // and abort the process; now it is parsed on a thread sized for it
    // and refused for its depth.
    let mut deepest = chain((MAX_BYTES - "SELECT 1".len()) / 2);
    assert!(deepest.len() <= MAX_BYTES);
    deepest.push_str(&" ".repeat(MAX_BYTES - deepest.len()));
    assert_eq!(deepest.len(), MAX_BYTES);
    let (st, v) = post_sql(&s, &deepest).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "sql_depth", "{v}");
    assert_eq!(v["max"], 256, "{v}");
    assert_healthy(&s).await;
    // One byte more is refused for its size, before it is parsed.
    deepest.push(' ');
    let (st, v) = post_sql(&s, &deepest).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["limit"], "sql_bytes", "{v}");
    assert_eq!(v["max"], MAX_BYTES, "{v}");

    // At the depth limit the statement runs, and its answer is right: a
    // chain of n additions is n+1 levels under the query's own level.
    let rows_ = sql(&s, &format!("{} AS n", chain(254))).await;
    assert_eq!(rows_[0]["n"], 255, "{rows_:?}");
    let (st, v) = post_sql(&s, &chain(255)).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "sql_depth");

    // Brackets nest only as deep as the parser's own recursion limit.
    let nested = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let (st, v) = post_sql(&s, &nested).await;
    assert_eq!(st, 400, "{v}");
    let subqueries = (0..300).fold("SELECT 1 AS x".to_string(), |q, _| {
        format!("SELECT x FROM ({q}) t")
    });
    let (st, v) = post_sql(&s, &subqueries).await;
    assert_eq!(st, 400, "{v}");

    // IN lists: 10,000 items run, one more is refused by name.
    let list = |n: usize| {
        format!(
            "SELECT count(*) AS c FROM (VALUES (1), (2)) v(x) WHERE x IN ({})",
            (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        )
    };
    let r = sql(&s, &list(10_000)).await;
    assert_eq!(r[0]["c"], 2, "{r:?}");
    let (st, v) = post_sql(&s, &list(10_001)).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "sql_in_list");
    assert_eq!(v["max"], 10_000);

    // Too many expressions in all, each shallow.
    let wide = format!("SELECT {}", vec!["1"; 50_001].join(","));
    let (st, v) = post_sql(&s, &wide).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "sql_nodes");

    // Several statements, one request.
    let (st, v) = post_sql(&s, "SELECT 1; SELECT 2").await;
    assert_eq!(st, 400, "{v}");
    assert_healthy(&s).await;
}

#[tokio::test]
async fn bodies_that_nest_too_deep_or_hold_nothing_are_refused_and_write_nothing() {
    let s = TestServer::start().await;
    let url = s.url("/v1/events/hostile");
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let deep_array = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
    for (ct, body) in [
        ("application/json", deep_object.clone()),
        ("application/x-ndjson", deep_object),
        ("application/json", deep_array),
    ] {
        let (st, v) = post(&url, Some(ct), body).await;
        assert_eq!(st, 400, "{ct}: {v}");
        assert_eq!(v["line"], 1, "{v}");
    }
    // A declared format with no events in it.
    for (ct, body) in [
        ("text/csv", ""),
        ("text/csv", "\n\n"),
        ("text/csv", "country,n\n"),
        ("application/x-ndjson", ""),
        ("application/x-ndjson", "\n \n"),
        ("application/json", "[]"),
        ("application/json", ""),
    ] {
        let (st, v) = post(&url, Some(ct), body).await;
        assert_eq!(st, 400, "{ct} {body:?}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("no events"),
            "{ct} {body:?}: {v}"
        );
    }
    assert_eq!(rows(&s, "hostile").await, 0);
    // The timestamp recorder's body-less POST still records one event.
    let (st, v) = post(&s.url("/hostile"), None, "").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(rows(&s, "hostile").await, 1);

    // Too many fields in one event, and names past their limits.
    let wide: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("f{i}"), json!(i))).collect();
    let (st, v) = post(
        &url,
        Some("application/json"),
        Value::Object(wide).to_string(),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let long_field = json!({ "x".repeat(129): 1 }).to_string();
    let (st, v) = post(&url, Some("application/json"), long_field).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(
        &s.url(&format!("/v1/events/{}", "s".repeat(65))),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(rows(&s, "hostile").await, 1);
    assert_healthy(&s).await;
}

#[tokio::test]
async fn line_protocol_and_time_series_requests_past_their_limits() {
    let s = TestServer::builder()
        .args(["--web-site", "example.com"])
        .start()
        .await;
    // A point longer than 1 MiB, after a good one: nothing is written.
    let body = format!("ok v=1 1\nbig s=\"{}\" 2\n", "x".repeat(1 << 20));
    let (st, v) = post(&s.url("/write?db=x"), Some("text/plain"), body).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["line"], 2, "{v}");
    assert_eq!(rows(&s, "ok").await, 0);

    let (st, v) = post(
        &s.url("/v1/events/ts"),
        Some("application/json"),
        r#"{"country": "NO", "n": 1}"#,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let query = |filters: usize, group_by: usize| {
        json!({
            "stream": "ts",
            "from": "now-1h",
            "filters": (0..filters)
                .map(|_| json!({"field": "country", "op": "=", "value": "NO"}))
                .collect::<Vec<_>>(),
            "group_by": vec!["country"; group_by],
        })
        .to_string()
    };
    let url = s.url("/v1/query");
    let (st, v) = post(&url, Some("application/json"), query(64, 1)).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(&url, Some("application/json"), query(65, 1)).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "filters");
    let (st, v) = post(&url, Some("application/json"), query(0, 9)).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "group_by");
    let big_in = json!({
        "stream": "ts",
        "filters": [{"field": "country", "op": "in",
                     "value": (0..10_001).map(|i| i.to_string()).collect::<Vec<_>>()}],
    });
    let (st, v) = post(&url, Some("application/json"), big_in.to_string()).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["limit"], "sql_in_list");

    // The Stats API's filters: conditions, values of one, property names.
    let stats = |filters: String| {
        let encoded: String = filters
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        s.url(&format!(
            "/api/v1/stats/aggregate?site_id=example.com&period=day&filters={encoded}"
        ))
    };
    let conds = |n: usize| vec!["event:page==/a"; n].join(";");
    let (st, v) = get_json(&stats(conds(64))).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = get_json(&stats(conds(65))).await;
    assert_eq!(
        (st, &v["limit"], &v["max"]),
        (400, &json!("filters"), &json!(64)),
        "{v}"
    );
    let values = format!("visit:source=={}", vec!["x"; 1_001].join("|"));
    let (st, v) = get_json(&stats(values)).await;
    assert_eq!((st, &v["limit"]), (400, &json!("filter_values")), "{v}");
    let (st, v) =
        get_json(&s.url("/api/v1/stats/aggregate?site_id=unknown.example&period=day")).await;
    assert_eq!(st, 404, "an unknown site: {v}");
    let long = format!("event:props:{}==1", "p".repeat(5_000));
    let (st, v) = get_json(&stats(long)).await;
    assert_eq!((st, &v["limit"]), (413, &json!("text_bytes")), "{v}");
    assert_healthy(&s).await;
}

/// Sends a request's head and the first bytes of its body, then nothing:
/// the answer must come (408) once the body-read deadline passes.
async fn trickle(addr: &str, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\nconnection: close\r\n\r\n{{\"sql\": \"SEL"
    );
    c.write_all(head.as_bytes()).await.expect("write");
    let mut out = String::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.read_to_string(&mut out),
    )
    .await;
    assert!(
        read.is_ok(),
        "{method} {path}: no answer while the body trickles"
    );
    out
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_on_every_route_that_reads_one() {
    let s = TestServer::builder()
        .args(["--body-read-timeout-secs", "1"])
        .start()
        .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let t = std::time::Instant::now();
    for (method, path) in [
        ("POST", "/v1/sql"),
        ("POST", "/v1/query"),
        ("POST", "/v1/rollups"),
        ("PUT", "/v1/tables/t"),
        ("POST", "/v1/sites"),
        ("POST", "/v1/events/slow"),
        ("POST", "/write?db=x"),
        ("POST", "/api/event"),
    ] {
        let resp = trickle(&addr, method, path).await;
        assert!(resp.starts_with("HTTP/1.1 408"), "{method} {path}: {resp}");
        assert!(resp.contains("\"error\""), "{method} {path}: {resp}");
    }
    // Eight deadlines of 1 s, one after another: none waited much longer.
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(rows(&s, "slow").await, 0);
    assert_healthy(&s).await;
}
