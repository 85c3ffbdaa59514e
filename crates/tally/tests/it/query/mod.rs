//! Queries: SQL and the time-series API, checked against DuckDB on the same
//! events ([`differential`]), and read-your-writes, tree filters, the result
//! cache, limits, formats and errors here.

mod differential;

use crate::server::{get_json, post, python, TestServer};
use serde_json::{json, Value};
use std::fmt::Write as _;

pub async fn post_lines(s: &TestServer, stream: &str, lines: &[String]) {
    for chunk in lines.chunks(20_000) {
        let body = chunk.join("\n");
        let (st, v) = post(
            &s.url(&format!("/v1/events/{stream}")),
            Some("application/x-ndjson"),
            body,
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
}

pub async fn put_table(s: &TestServer, name: &str, query: &str, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .put(s.url(&format!("/v1/tables/{name}{query}")))
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

pub async fn sql(s: &TestServer, q: &str) -> (u16, Value) {
    post(
        &s.url("/v1/sql"),
        Some("application/json"),
        json!({ "sql": q }).to_string(),
    )
    .await
}

pub async fn ts_query(s: &TestServer, req: &Value) -> (u16, Value) {
    post(
        &s.url("/v1/query"),
        Some("application/json"),
        req.to_string(),
    )
    .await
}

/// A random SQL query in the dialect both engines speak, as (tally, DuckDB).
#[tokio::test]
async fn an_acknowledged_event_is_in_the_next_query() {
    let s = TestServer::start().await;
    for i in 1..=20 {
        let body = format!("{{\"kind\":\"click\",\"v\":{i}}}");
        let (st, _) = post(&s.url("/v1/events/rw"), Some("application/json"), body).await;
        assert_eq!(st, 200);
        let (st, v) = sql(&s, "SELECT count(*) AS n, sum(v) AS s FROM rw").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["rows"][0]["n"], json!(i), "{v}");
        assert_eq!(v["rows"][0]["s"].as_f64(), Some((i * (i + 1) / 2) as f64));
        let (st, q) = ts_query(
            &s,
            &json!({"stream": "rw", "from": "now-1h", "to": "now+1m"}),
        )
        .await;
        assert_eq!(st, 200, "{q}");
        assert_eq!(q["totals"]["count"], json!(i), "{q}");
        // Across a flush too.
        if i == 10 {
            assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
        }
    }
}

#[tokio::test]
async fn tree_filters_reach_every_depth() {
    let s = TestServer::start().await;
    // a > b > c > d > e, and a > x; events carry a node each.
    let tree = "slug,parent,name\na,,A\nb,a,B\nc,b,C\nd,c,D\ne,d,E\nx,a,X\n";
    assert_eq!(
        put_table(&s, "tree", "?key=slug&parent=parent", tree)
            .await
            .0,
        200
    );
    let mut body = String::new();
    let counts = [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
        ("e", 5),
        ("x", 6),
        ("zz", 7),
    ];
    for (node, n) in counts {
        for _ in 0..n {
            writeln!(body, "{{\"node\":\"{node}\"}}").unwrap();
        }
    }
    let (st, _) = post(&s.url("/v1/events/ev"), Some("application/x-ndjson"), body).await;
    assert_eq!(st, 200);
    let expect = |root: &str| -> i64 {
        let below: &[&str] = match root {
            "a" => &["a", "b", "c", "d", "e", "x"],
            "b" => &["b", "c", "d", "e"],
            "c" => &["c", "d", "e"],
            "d" => &["d", "e"],
            "e" => &["e"],
            _ => &["x"],
        };
        counts
            .iter()
            .filter(|(n, _)| below.contains(n))
            .map(|(_, c)| *c as i64)
            .sum()
    };
    for root in ["a", "b", "c", "d", "e", "x"] {
        let (st, v) = sql(
            &s,
            &format!("SELECT count(*) AS n FROM ev WHERE node IN (SELECT key FROM tree_descendants('tree', '{root}'))"),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["rows"][0]["n"].as_i64(), Some(expect(root)), "sql {root}");
        let (st, q) = ts_query(
            &s,
            &json!({"stream": "ev", "from": "now-1h", "to": "now+1m",
                    "filters": [{"field": "node", "op": "under", "table": "tree", "value": root}]}),
        )
        .await;
        assert_eq!(st, 200, "{q}");
        assert_eq!(
            q["totals"]["count"].as_i64(),
            Some(expect(root)),
            "query {root}"
        );
    }
    let (_, d) = sql(
        &s,
        "SELECT key, depth FROM tree_descendants('tree', 'a') ORDER BY depth, key",
    )
    .await;
    assert_eq!(d["rows"][5], json!({"key": "e", "depth": 4}), "{d}");
    // Unknown node and a table that is not a tree are errors that say so.
    let (st, v) = ts_query(
        &s,
        &json!({"stream": "ev", "filters": [{"field": "node", "op": "under", "table": "tree", "value": "nope"}]}),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    // Replacing the table changes the answer (and the cache key).
    let tree2 = "slug,parent,name\na,,A\nb,a,B\nc,,C\nd,c,D\ne,d,E\nx,a,X\n";
    assert_eq!(
        put_table(&s, "tree", "?key=slug&parent=parent", tree2)
            .await
            .0,
        200
    );
    let (_, v) = sql(&s, "SELECT count(*) AS n FROM ev WHERE node IN (SELECT key FROM tree_descendants('tree', 'a'))").await;
    assert_eq!(v["rows"][0]["n"].as_i64(), Some(1 + 2 + 6));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(s: &TestServer) -> String {
    reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_cache_serves_repeats_and_an_ingest_in_range_invalidates() {
    let s = TestServer::start().await;
    let old =
        "{\"ts\":\"2024-01-01T10:00:00Z\",\"v\":1}\n{\"ts\":\"2024-01-01T11:00:00Z\",\"v\":2}\n";
    assert_eq!(
        post(&s.url("/v1/events/c"), Some("application/x-ndjson"), old)
            .await
            .0,
        200
    );
    let req = json!({"stream": "c", "from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z",
                     "interval": "1h", "aggregates": ["count", "sum(v)"]});
    let hits = |m: &str| {
        metric(
            m,
            "tally_query_cache_lookups_total{api=\"timeseries\",result=\"hit\"}",
        )
    };
    let misses = |m: &str| {
        metric(
            m,
            "tally_query_cache_lookups_total{api=\"timeseries\",result=\"miss\"}",
        )
    };
    let (_, first) = ts_query(&s, &req).await;
    let m0 = metrics(&s).await;
    let (_, second) = ts_query(&s, &req).await;
    let m1 = metrics(&s).await;
    assert_eq!(first, second);
    assert_eq!(hits(&m1) - hits(&m0), 1.0, "a repeat is a hit");
    assert_eq!(misses(&m1), misses(&m0));
    // An ingest outside the range leaves the entry valid...
    let far = "{\"ts\":\"2024-06-01T00:00:00Z\",\"v\":100}";
    assert_eq!(
        post(&s.url("/v1/events/c"), Some("application/json"), far)
            .await
            .0,
        200
    );
    let (_, third) = ts_query(&s, &req).await;
    let m2 = metrics(&s).await;
    assert_eq!(third, first);
    assert_eq!(hits(&m2) - hits(&m1), 1.0);
    // ...one inside it is a miss, and the new answer has the new event.
    let inside = "{\"ts\":\"2024-01-01T10:30:00Z\",\"v\":40}";
    assert_eq!(
        post(&s.url("/v1/events/c"), Some("application/json"), inside)
            .await
            .0,
        200
    );
    let (_, fourth) = ts_query(&s, &req).await;
    let m3 = metrics(&s).await;
    assert_eq!(
        misses(&m3) - misses(&m2),
        1.0,
        "an ingest in range is a miss"
    );
    assert_eq!(fourth["totals"]["count"], json!(3));
    assert_eq!(fourth["totals"]["sum(v)"].as_f64(), Some(43.0));
    assert_eq!(fourth["series"][0]["points"][10]["count"], json!(2));

    // SQL answers are cached per statement and stream version.
    let sql_hits = |m: &str| {
        metric(
            m,
            "tally_query_cache_lookups_total{api=\"sql\",result=\"hit\"}",
        )
    };
    let q = "SELECT count(*) AS n FROM c";
    let (_, a) = sql(&s, q).await;
    let m4 = metrics(&s).await;
    let (_, b) = sql(&s, "select   count(*) as n\n  FROM c").await;
    let m5 = metrics(&s).await;
    assert_eq!(a, b);
    assert_eq!(sql_hits(&m5) - sql_hits(&m4), 1.0, "normalized text hits");
    assert_eq!(
        post(
            &s.url("/v1/events/c"),
            Some("application/json"),
            "{\"v\":1}"
        )
        .await
        .0,
        200
    );
    let (_, c) = sql(&s, q).await;
    assert_eq!(c["rows"][0]["n"], json!(5));
}

#[tokio::test]
async fn errors_name_the_problem_and_no_input_is_a_500() {
    let s = TestServer::builder()
        .args([
            "--query-max-rows",
            "1000",
            "--query-memory-limit-bytes",
            "200000",
        ])
        .start()
        .await;
    let body: String = (0..5000)
        .map(|i| format!("{{\"k\":\"key{i}\",\"v\":{i}}}\n"))
        .collect();
    assert_eq!(
        post(&s.url("/v1/events/e"), Some("application/x-ndjson"), body)
            .await
            .0,
        200
    );

    let (st, v) = sql(&s, "SELECT count(* FROM e").await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["line"], json!(1), "{v}");
    assert!(v["column"].as_u64().is_some(), "{v}");
    let (st, v) = sql(&s, "SELECT * FROM nope").await;
    assert_eq!((st, v["table"].as_str()), (400, Some("nope")), "{v}");
    let (st, v) = sql(&s, "SELECT missing_col FROM e").await;
    assert_eq!(
        (st, v["column"].as_str()),
        (400, Some("missing_col")),
        "{v}"
    );
    let (st, v) = sql(&s, "SELECT k FROM e").await;
    assert_eq!((st, v["limit"].as_str()), (422, Some("rows")), "{v}");
    let (st, v) = sql(&s, "SELECT k, count(*) FROM e GROUP BY k ORDER BY k").await;
    assert_eq!((st, v["limit"].as_str()), (422, Some("memory")), "{v}");
    for bad in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO e VALUES (1)",
        "DROP TABLE e",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SELECT 1; SELECT 2",
        "",
        "SELECT 1/0",
        "SELECT CAST('x' AS INT)",
        "SELECT * FROM tree_descendants('nope', 'x')",
        "SELECT * FROM tree_descendants(1)",
        "SELECT tally_bucket(ts, '7m', 'UTC') FROM e",
        "SELECT tally_bucket(ts, '1h', 'Mars/Base') FROM e",
        "SELECT sum(k) FROM e",
        "SELECT unknown_fn(1)",
    ] {
        let (st, v) = sql(&s, bad).await;
        assert!((400..500).contains(&st), "{bad:?} -> {st} {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad:?} -> {v}"
        );
    }
    let bad_queries = [
        (json!({"stream": "nope"}), 404, "nope"),
        (
            json!({"stream": "e", "aggregates": ["sum(k)"]}),
            400,
            "dimension",
        ),
        (json!({"stream": "e", "aggregates": ["sum(zz)"]}), 400, "zz"),
        (json!({"stream": "e", "interval": "7m"}), 400, "interval"),
        (
            json!({"stream": "e", "from": "yesterday"}),
            400,
            "yesterday",
        ),
        (
            json!({"stream": "e", "from": "now", "to": "now-1h"}),
            400,
            "before",
        ),
        (json!({"stream": "e", "timezone": "Mars/Base"}), 400, "Mars"),
        (
            json!({"stream": "e", "filters": [{"field": "v", "op": "=", "value": "x"}]}),
            400,
            "filters[0]",
        ),
        (
            json!({"stream": "e", "filters": [{"field": "k", "op": "~", "value": "x"}]}),
            400,
            "operator",
        ),
        (
            json!({"stream": "e", "from": "2000-01-01", "to": "2030-01-01", "interval": "1m"}),
            422,
            "buckets",
        ),
        (json!({"stream": "e", "bogus": 1}), 400, "bogus"),
    ];
    for (req, status, word) in bad_queries {
        let (st, v) = ts_query(&s, &req).await;
        assert_eq!(st, status, "{req} -> {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(word),
            "{req} -> {v}"
        );
    }
    let (st, v) =
        get_json(&s.url("/v1/query?stream=e&aggregates=count,max(v)&from=now-1h&to=now%2B1m"))
            .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["totals"]["count"], json!(5000));
    assert_eq!(v["totals"]["max(v)"].as_f64(), Some(4999.0));
    let (st, v) = get_json(&s.url("/v1/query?stream=e&nonsense=1")).await;
    assert_eq!(st, 400, "{v}");
}

#[tokio::test]
async fn sql_answers_as_json_csv_and_arrow_and_the_cli_prints_a_table() {
    let s = TestServer::start().await;
    let body = "{\"ts\":\"2024-01-01T00:00:00Z\",\"a\":\"x\",\"v\":1.5}\n{\"ts\":\"2024-01-01T00:00:01Z\",\"a\":\"y\"}\n";
    assert_eq!(
        post(&s.url("/v1/events/f"), Some("application/x-ndjson"), body)
            .await
            .0,
        200
    );
    let q = json!({"sql": "SELECT a, v FROM f ORDER BY a"}).to_string();
    let client = reqwest::Client::new();
    let csv = client
        .post(s.url("/v1/sql"))
        .header("accept", "text/csv")
        .body(q.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.text().await.unwrap(), "a,v\nx,1.5\ny,\n");
    let arrow = client
        .post(s.url("/v1/sql"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .body(q.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(arrow.status(), 200);
    let bytes = arrow.bytes().await.unwrap();
    // Read back by an independent Arrow implementation (pyarrow, which the
    // test command installs).
    let path = std::env::temp_dir().join(format!("tally-ipc-{}.arrow", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let out = python(
        "import sys, pyarrow.ipc as ipc\nt = ipc.open_stream(open(sys.argv[1], 'rb')).read_all()\nprint(t.num_rows, t.column_names, t.column('v').to_pylist())\n",
        &[path.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.trim(), "2 ['a', 'v'] [1.5, None]");
    let (st, v) = sql(&s, "SELECT a, v FROM f ORDER BY a").await;
    assert_eq!(st, 200);
    assert_eq!(
        v["columns"],
        json!([{"name": "a", "type": "string"}, {"name": "v", "type": "double"}])
    );
    assert_eq!(
        v["rows"],
        json!([{"a": "x", "v": 1.5}, {"a": "y", "v": null}])
    );
    let r = client
        .post(s.url("/v1/sql"))
        .header("accept", "image/png")
        .body(q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "sql",
            "--url",
            &s.base,
            "SELECT a, count(*) AS n FROM f GROUP BY a ORDER BY a",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("| a | n |") && text.contains("| x | 1 |") && text.contains("(2 rows)"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["sql", "--url", &s.base, "SELEC 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("400"),
        "{out:?}"
    );
}

#[tokio::test]
async fn concurrency_and_time_limits_answer_429_and_422() {
    let s = TestServer::builder()
        .args(["--query-max-concurrent", "1", "--query-timeout-secs", "0.5"])
        .start()
        .await;
    let body: String = (0..3000).map(|i| format!("{{\"k\":\"{i}\"}}\n")).collect();
    assert_eq!(
        post(&s.url("/v1/events/l"), Some("application/x-ndjson"), body)
            .await
            .0,
        200
    );
    // A cross join large enough to outlast the timeout.
    let slow = "SELECT count(*) FROM l a, l b, l c WHERE a.k < b.k AND b.k < c.k";
    let first = tokio::spawn({
        let url = s.url("/v1/sql");
        async move {
            post(
                &url,
                Some("application/json"),
                json!({"sql": slow}).to_string(),
            )
            .await
        }
    });
    // Once it runs, another query is refused with Retry-After.
    for _ in 0..500 {
        if metric(&metrics(&s).await, "tally_queries_running") >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut saw_busy = false;
    for _ in 0..200 {
        let resp = reqwest::Client::new()
            .post(s.url("/v1/sql"))
            .body(json!({"sql": "SELECT count(*) FROM l WHERE k > '5'"}).to_string())
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            assert!(resp.headers().get("retry-after").is_some());
            saw_busy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (st, v) = first.await.unwrap();
    assert_eq!((st, v["limit"].as_str()), (422, Some("timeout")), "{v}");
    assert!(saw_busy, "no 429 while the only query slot was taken");
    // The slot is free again once the cancelled query has stopped.
    let mut st = 0;
    for _ in 0..1000 {
        st = sql(&s, "SELECT 1").await.0;
        if st != 429 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(st, 200);
    let m = metrics(&s).await;
    assert!(metric(&m, "tally_query_rejected_total{limit=\"busy\"}") >= 1.0);
    assert!(metric(&m, "tally_query_rejected_total{limit=\"timeout\"}") >= 1.0);
    assert!(metric(&m, "tally_query_seconds_count") >= 2.0);
}

#[tokio::test]
async fn tables_are_listed_replaced_and_deleted_and_survive_restart() {
    let s = TestServer::start().await;
    let (st, v) = put_table(
        &s,
        "ports",
        "?text=true",
        "code,name,zip\nNOOSL,Oslo,0150\nSEGOT,Gothenburg,41101\n",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], json!(2));
    let (_, v) = sql(&s, "SELECT zip FROM ports WHERE code = 'NOOSL'").await;
    assert_eq!(
        v["rows"][0]["zip"],
        json!("0150"),
        "text=true keeps leading zeros"
    );
    let (st, v) = put_table(&s, "ports", "", "code,name\n\"broken,x\n").await;
    assert_eq!(st, 400, "{v}");
    let (_, v) = get_json(&s.url("/v1/tables/ports")).await;
    assert_eq!(v["rows"], json!(2), "a failed replace keeps the old table");
    // A name taken by a stream is refused.
    assert_eq!(
        post(&s.url("/v1/events/clicks"), Some("application/json"), "{}")
            .await
            .0,
        200
    );
    assert_eq!(put_table(&s, "clicks", "", "a\n1\n").await.0, 409);
    let (_, list) = get_json(&s.url("/v1/tables")).await;
    assert_eq!(list["tables"].as_array().unwrap().len(), 1);

    let (dir, _keep) = s.into_data_dir();
    let s = TestServer::builder().data_dir(&dir).start().await;
    let (_, v) = sql(&s, "SELECT count(*) AS n FROM tables.ports").await;
    assert_eq!(v["rows"][0]["n"], json!(2), "{v}");
    let resp = reqwest::Client::new()
        .delete(s.url("/v1/tables/ports"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (st, _) = sql(&s, "SELECT * FROM ports").await;
    assert_eq!(st, 400);
}
