//! Rollups through the real server: answers from rollups against answers
//! from the raw events for random definitions and requests (late events
//! included), kill -9 with rollups, and reprocessing while writers run.

use crate::query::{post_lines, ts_query};
use crate::server::{get_json, post, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// 2026-11-01T00:00:00Z in ms.
const T0_MS: i64 = 1_793_491_200_000;
const DAY_MS: i64 = 86_400_000;

fn event(rng: &mut StdRng) -> String {
    let countries = ["NO", "SE", "DE", "BR", "IN", "US", "FR", "JP"];
    let devices = ["phone", "desktop", "tablet"];
    let ts = T0_MS + rng.random_range(0..3 * DAY_MS);
    let mut e = json!({ "ts": ts });
    if rng.random_range(0..12) > 0 {
        // Skewed, so group ranks are rarely tied.
        let i = (rng.random_range(0..64u32) as f64).sqrt() as usize;
        e["country"] = json!(countries[i]);
    }
    if rng.random_range(0..10) > 0 {
        e["device"] = json!(devices[rng.random_range(0..devices.len())]);
    }
    if rng.random_range(0..8) > 0 {
        e["dur"] = json!(rng.random_range(0..50_000) as f64 / 8.0);
    }
    e["user"] = json!(format!("u{}", rng.random_range(0..2_000)));
    e.to_string()
}

async fn define(s: &TestServer, def: &Value) {
    let (st, v) = post(
        &s.url("/v1/rollups"),
        Some("application/json"),
        def.to_string(),
    )
    .await;
    assert_eq!(st, 202, "{v}");
}

async fn wait_ready(s: &TestServer) {
    let t = Instant::now();
    loop {
        let (st, v) = get_json(&s.url("/v1/rollups")).await;
        assert_eq!(st, 200, "{v}");
        let all = v["rollups"].as_array().unwrap();
        if all.iter().all(|r| r["status"] == "ready") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "rollups not ready: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn random_def(rng: &mut StdRng, i: usize) -> Value {
    let mut group_by = vec![];
    for d in ["country", "device"] {
        if rng.random_range(0..3) > 0 {
            group_by.push(d);
        }
    }
    let filter = match rng.random_range(0..4) {
        0 => json!([{"field": "device", "op": "=", "value": "phone"}]),
        1 => json!([{"field": "dur", "op": ">=", "value": 1000}]),
        _ => json!([]),
    };
    let intervals = match rng.random_range(0..3) {
        0 => json!(["minute", "hour", "day"]),
        1 => json!(["minute", "hour"]),
        _ => json!(["minute"]),
    };
    json!({
        "name": format!("r{i}"),
        "stream": "web",
        "intervals": intervals,
        "group_by": group_by,
        "filter": filter,
        "aggregates": ["count", "count(dur)", "sum(dur)", "avg(dur)", "min(dur)", "max(dur)",
                        "uniq(user)", "quantiles(dur)"],
    })
}

/// A request the rollup `def` covers.
fn random_request(rng: &mut StdRng, def: &Value) -> Value {
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // Aligned to the minute or not (the ends then come from raw events).
    let mut from = T0_MS + rng.random_range(0..2 * DAY_MS);
    if rng.random_range(0..2) == 0 {
        from -= from % 60_000;
    }
    let to = from + rng.random_range(60_000..DAY_MS);
    let (interval, tz) = match rng.random_range(0..5) {
        0 => (Value::Null, "UTC"),
        1 => (json!("1h"), "UTC"),
        2 => (json!("15m"), "UTC"),
        3 => (json!("1h"), "Europe/Berlin"),
        _ => (json!("1d"), "America/New_York"),
    };
    let mut aggregates = vec![json!("count")];
    for a in [
        "count(dur)",
        "sum(dur)",
        "avg(dur)",
        "min(dur)",
        "max(dur)",
        "uniq(user)",
        "p50(dur)",
        "p95(dur)",
    ] {
        if rng.random_range(0..2) == 0 {
            aggregates.push(json!(a));
        }
    }
    // Percentiles are checked against the bucket's value count and range.
    if aggregates
        .iter()
        .any(|a| a.as_str().unwrap().starts_with('p'))
    {
        for a in ["count(dur)", "min(dur)", "max(dur)"] {
            if !aggregates.contains(&json!(a)) {
                aggregates.push(json!(a));
            }
        }
    }
    let groups: Vec<Value> = def["group_by"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|_| rng.random_range(0..3) > 0)
        .cloned()
        .collect();
    let mut filters: Vec<Value> = def["filter"].as_array().unwrap().clone();
    if let Some(g) = def["group_by"].as_array().unwrap().first() {
        if rng.random_range(0..3) == 0 {
            let f = match g.as_str().unwrap() {
                "country" => json!({"field": "country", "op": "in", "value": ["NO", "SE", "DE"]}),
                _ => json!({"field": "device", "op": "!=", "value": "tablet"}),
            };
            filters.push(f);
        }
    }
    json!({
        "stream": "web",
        "from": iso(from),
        "to": iso(to),
        "interval": interval,
        "timezone": tz,
        "aggregates": aggregates,
        "group_by": groups,
        "filters": filters,
        "limit": rng.random_range(1..6),
        "order_by": "count",
    })
}

/// The rollup answer `got` matches the raw answer `want`: exactly for
/// counts, to rounding for sums, averages, minima and maxima, within the
/// sketches' error for distinct counts and percentiles.
fn compare(got: &Value, want: &Value, ctx: &str) {
    let series_g = got["series"].as_array().unwrap();
    let series_w = want["series"].as_array().unwrap();
    let groups = |s: &[Value]| {
        s.iter()
            .map(|x| (x["group"].clone(), x["other"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(groups(series_g), groups(series_w), "{ctx}: groups");
    let mut pairs: Vec<(&Value, &Value, String)> =
        vec![(&got["totals"], &want["totals"], "totals".into())];
    for (g, w) in series_g.iter().zip(series_w) {
        pairs.push((&g["totals"], &w["totals"], format!("{} totals", g["group"])));
        let (pg, pw) = (g["points"].as_array(), w["points"].as_array());
        if let (Some(pg), Some(pw)) = (pg, pw) {
            assert_eq!(pg.len(), pw.len(), "{ctx}: points");
            for (a, b) in pg.iter().zip(pw) {
                assert_eq!(a["t"], b["t"], "{ctx}");
                pairs.push((a, b, format!("{} {}", g["group"], a["t"])));
            }
        }
    }
    for (a, b, at) in pairs {
        for (k, wv) in b.as_object().unwrap() {
            if k == "t" {
                continue;
            }
            let gv = &a[k];
            let what = format!("{ctx}: {at} {k}: rollup {gv} raw {wv}");
            if k.starts_with("count") {
                assert_eq!(gv, wv, "{what}");
                continue;
            }
            let (Some(x), Some(y)) = (gv.as_f64(), wv.as_f64()) else {
                assert_eq!(gv.is_null(), wv.is_null(), "{what}");
                continue;
            };
            let scale = x.abs().max(y.abs()).max(1.0);
            let ok = if k.starts_with("uniq") {
                // Two HyperLogLogs (2^12 and 2^14 registers) of the same set.
                (x - y).abs() <= 0.05 * scale + 2.0
            } else if k.starts_with('p') {
                // Two t-digests of the same values (uniform over 0..6250):
                // close for many values; for few, the two interpolate
                // differently, and the answer must lie within the values.
                let n = b["count(dur)"].as_u64().unwrap();
                let (lo, hi) = (
                    b["min(dur)"].as_f64().unwrap(),
                    b["max(dur)"].as_f64().unwrap(),
                );
                if n >= 200 {
                    (x - y).abs() <= 0.04 * 6250.0
                } else {
                    lo <= x && x <= hi
                }
            } else {
                (x - y).abs() <= 1e-9 * scale
            };
            assert!(ok, "{what}");
        }
    }
}

async fn both(s: &TestServer, req: &Value) -> (Value, Value) {
    let mut r = req.clone();
    r["source"] = json!("rollup");
    let (st, got) = ts_query(s, &r).await;
    assert_eq!(st, 200, "{req}: {got}");
    r["source"] = json!("raw");
    let (st, want) = ts_query(s, &r).await;
    assert_eq!(st, 200, "{req}: {want}");
    assert_eq!(want["source"], "raw");
    (got, want)
}

#[tokio::test]
async fn rollup_answers_equal_raw_answers_for_random_definitions_and_requests() {
    let s = TestServer::start().await;
    let mut rng = StdRng::seed_from_u64(4242);
    // History before any rollup exists (built from segments and tail).
    let lines: Vec<String> = (0..60_000).map(|_| event(&mut rng)).collect();
    post_lines(&s, "web", &lines[..40_000]).await;
    assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
    post_lines(&s, "web", &lines[40_000..]).await;
    let defs: Vec<Value> = (0..6).map(|i| random_def(&mut rng, i)).collect();
    for d in &defs {
        define(&s, d).await;
    }
    wait_ready(&s).await;
    // Live maintenance, with late events landing in past buckets.
    let late: Vec<String> = (0..20_000).map(|_| event(&mut rng)).collect();
    post_lines(&s, "web", &late).await;

    let mut checked = 0;
    for round in 0..120 {
        let def = &defs[round % defs.len()];
        let req = random_request(&mut rng, def);
        let (got, want) = both(&s, &req).await;
        assert!(
            got["source"].as_str().unwrap().starts_with("rollup:"),
            "{req}: {}",
            got["source"]
        );
        compare(&got, &want, &req.to_string());
        checked += 1;
    }
    assert_eq!(checked, 120);

    // `auto` takes a rollup when one covers the request, raw otherwise.
    let (_, v) = ts_query(
        &s,
        &json!({"stream": "web", "from": "2026-11-01T00:00:00Z",
        "to": "2026-11-02T00:00:00Z", "aggregates": ["count"]}),
    )
    .await;
    assert!(v["source"].as_str().unwrap().starts_with("rollup:"), "{v}");
    let (_, v) = ts_query(
        &s,
        &json!({"stream": "web", "from": "2026-11-01T00:00:00Z",
        "to": "2026-11-02T00:00:00Z", "aggregates": ["count"], "group_by": ["user"]}),
    )
    .await;
    assert_eq!(v["source"], "raw", "{v}");
    let (st, v) = ts_query(
        &s,
        &json!({"stream": "web", "from": "2026-11-01T00:00:00Z",
        "to": "2026-11-02T00:00:00Z", "group_by": ["user"], "source": "rollup"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not grouped by user"),
        "{v}"
    );

    // Retention: minutes kept for an hour are gone after a flush (the data
    // is weeks old), so a 15-minute series cannot come from the rollup; its
    // hours still answer.
    // (count(user) is in no other rollup, so only this one covers.)
    define(
        &s,
        &json!({"name": "kept", "stream": "web", "intervals": ["minute", "hour"],
        "group_by": ["device"], "aggregates": ["count(user)"], "retention": {"minute": "1h"}}),
    )
    .await;
    wait_ready(&s).await;
    assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
    let (_, v) = get_json(&s.url("/v1/rollups/kept")).await;
    assert_eq!(v["buckets"]["minute"], json!(0), "{v}");
    let day = json!({"stream": "web", "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z",
        "group_by": ["device"], "aggregates": ["count(user)"], "source": "rollup"});
    let mut q = day.clone();
    q["interval"] = json!("15m");
    let (st, v) = ts_query(&s, &q).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("retention"), "{v}");
    q["interval"] = json!("1h");
    let (got, want) = both(&s, &q).await;
    assert_eq!(got["source"], "rollup:kept");
    compare(&got, &want, "hours after minute retention");
}

#[tokio::test]
async fn rollups_survive_kill9_and_reprocess_while_writers_run() {
    let mut rng = StdRng::seed_from_u64(77);
    let def = json!({"name": "by_country", "stream": "web", "intervals": ["minute", "hour"],
        "group_by": ["country"], "aggregates": ["count", "sum(dur)"]});
    let mut s = TestServer::builder()
        .args(["--flush-interval-secs", "3600"])
        .start()
        .await;
    define(&s, &def).await;
    wait_ready(&s).await;
    for round in 0..4 {
        let lines: Vec<String> = (0..5_000).map(|_| event(&mut rng)).collect();
        post_lines(&s, "web", &lines).await;
        if round == 1 {
            assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
        }
    }
    s.kill9();
    let (dir, _keep) = s.into_data_dir();
    let s = TestServer::builder()
        .data_dir(&dir)
        .args(["--flush-interval-secs", "3600"])
        .start()
        .await;
    wait_ready(&s).await;
    let req = json!({"stream": "web", "from": "2026-10-31T00:00:00Z", "to": "2026-11-05T00:00:00Z",
        "interval": "1h", "aggregates": ["count", "sum(dur)"], "group_by": ["country"], "limit": 20});
    let (got, want) = both(&s, &req).await;
    assert_eq!(want["totals"]["count"], json!(20_000));
    compare(&got, &want, "after kill -9");

    // Reprocess with a changed definition while writers keep writing.
    let changed = json!({"name": "by_country", "stream": "web", "intervals": ["minute", "hour"],
        "group_by": ["country", "device"], "aggregates": ["count", "sum(dur)", "max(dur)"]});
    let writer = async {
        let mut rng = StdRng::seed_from_u64(78);
        for _ in 0..10 {
            let lines: Vec<String> = (0..1_000).map(|_| event(&mut rng)).collect();
            post_lines(&s, "web", &lines).await;
        }
    };
    let reprocess = async {
        define(&s, &changed).await;
        // The old state answers until the new one is complete.
        let (st, v) = get_json(&s.url("/v1/rollups/by_country")).await;
        assert_eq!(st, 200);
        assert!(v["status"] == "rebuilding" || v["status"] == "ready", "{v}");
    };
    tokio::join!(writer, reprocess);
    wait_ready(&s).await;
    let mut req = req.clone();
    req["aggregates"] = json!(["count", "sum(dur)", "max(dur)"]);
    req["group_by"] = json!(["country", "device"]);
    req["limit"] = json!(40);
    let (got, want) = both(&s, &req).await;
    assert_eq!(want["totals"]["count"], json!(30_000));
    compare(&got, &want, "after reprocessing");
    // The CLI: a whole and a partial rebuild, with the answers unchanged.
    for extra in [
        vec![],
        vec![
            "--from",
            "2026-11-01T00:00:00Z",
            "--to",
            "2026-11-02T00:00:00Z",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["reprocess", "--rollup", "by_country", "--url", &s.base])
            .args(&extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("rollup by_country rebuilt"), "{stdout}");
        let (got, want) = both(&s, &req).await;
        compare(&got, &want, &format!("after tally reprocess {extra:?}"));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["reprocess", "--rollup", "by_country", "--url", &s.base])
        .args([
            "--from",
            "2026-11-01T00:30:00Z",
            "--to",
            "2026-11-02T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("whole hour"),
        "{out:?}"
    );
    let (st, _) = get_json(&s.url("/v1/rollups/nope")).await;
    assert_eq!(st, 404);
    let (st, v) = post(
        &s.url("/v1/rollups"),
        Some("application/json"),
        "{\"name\":\"x\"}",
    )
    .await;
    assert_eq!(st, 400, "{v}");
}

/// Rows of a SQL answer keyed by their first `key` columns.
fn keyed(v: &Value, key: usize) -> std::collections::BTreeMap<String, Vec<Value>> {
    v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|r| {
            let cols: Vec<Value> = r.as_object().unwrap().values().cloned().collect();
            let k = cols[..key]
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("|");
            (k, cols[key..].to_vec())
        })
        .collect()
}

#[tokio::test]
async fn a_rollup_is_a_sql_table_that_agrees_with_raw_sql() {
    use crate::query::sql;
    let s = TestServer::start().await;
    let mut rng = StdRng::seed_from_u64(31);
    let lines: Vec<String> = (0..30_000).map(|_| event(&mut rng)).collect();
    post_lines(&s, "web", &lines).await;
    define(
        &s,
        &json!({"name": "by_country", "stream": "web", "intervals": ["hour", "day"],
        "group_by": ["country"],
        "aggregates": ["count", "count(dur)", "sum(dur)", "min(dur)", "max(dur)", "avg(dur)",
                       "uniq(user)", "quantiles(dur)"]}),
    )
    .await;
    wait_ready(&s).await;
    // Columns aliased c00, c01, …: JSON rows are objects, read in key order.
    let from_rollup =
        "SELECT bucket AS c00, country AS c01, \"count\" AS c02, \"count(dur)\" AS c03, \
        \"sum(dur)\" AS c04, \"min(dur)\" AS c05, \"max(dur)\" AS c06, \"avg(dur)\" AS c07, \
        \"uniq(user)\" AS c08, \"p50(dur)\" AS c09, \"p99(dur)\" AS c10 \
        FROM rollups.by_country WHERE grain = 'hour' ORDER BY 1, 2";
    let from_raw = "SELECT date_trunc('hour', ts) AS c00, country AS c01, count(*) AS c02, \
        count(dur) AS c03, sum(dur) AS c04, min(dur) AS c05, max(dur) AS c06, avg(dur) AS c07, \
        count(DISTINCT \"user\") AS c08, approx_percentile_cont(dur, 0.5) AS c09, \
        approx_percentile_cont(dur, 0.99) AS c10 FROM web GROUP BY 1, 2 ORDER BY 1, 2";
    let check = |got: &Value, want: &Value| {
        let (got, want) = (keyed(got, 2), keyed(want, 2));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (k, g) in &got {
            let w = &want[k];
            // count, count(dur), min, max: exact.
            for i in [0, 1, 3, 4] {
                assert_eq!(g[i].as_f64(), w[i].as_f64(), "{k} column {i}");
            }
            // sum and avg: the same numbers added in another order.
            for i in [2, 5] {
                let (a, b) = (g[i].as_f64(), w[i].as_f64());
                match (a, b) {
                    (Some(a), Some(b)) => {
                        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{k} {a} {b}")
                    }
                    _ => assert_eq!(a, b, "{k} column {i}"),
                }
            }
            // uniq: HyperLogLog with 2^12 registers, well within 5 %.
            let (u, d) = (g[6].as_f64().unwrap(), w[6].as_f64().unwrap());
            assert!((u - d).abs() <= 0.05 * d + 1.0, "{k} uniq {u} vs {d}");
            // Quantiles: t-digest within the value range of the cell.
            if let (Some(p), Some(lo), Some(hi)) = (g[7].as_f64(), w[3].as_f64(), w[4].as_f64()) {
                assert!(p >= lo && p <= hi, "{k} p50 {p} outside [{lo}, {hi}]");
            }
        }
    };
    let (st, got) = sql(&s, from_rollup).await;
    assert_eq!(st, 200, "{got}");
    let (st, want) = sql(&s, from_raw).await;
    assert_eq!(st, 200, "{want}");
    check(&got, &want);
    // Counts add up across rows; the daily rows hold every event once.
    let (_, v) = sql(
        &s,
        "SELECT sum(\"count\") AS n FROM rollups.by_country WHERE grain = 'day'",
    )
    .await;
    assert_eq!(v["rows"][0]["n"].as_u64(), Some(30_000), "{v}");
    // New events: the table (and the cached answer) follows at once.
    let more: Vec<String> = (0..5_000).map(|_| event(&mut rng)).collect();
    post_lines(&s, "web", &more).await;
    let (_, got) = sql(&s, from_rollup).await;
    let (_, want) = sql(&s, from_raw).await;
    check(&got, &want);
    let (_, v) = sql(
        &s,
        "SELECT sum(\"count\") AS n FROM rollups.by_country WHERE grain = 'day'",
    )
    .await;
    assert_eq!(v["rows"][0]["n"].as_u64(), Some(35_000), "{v}");
    let (st, v) = sql(&s, "SELECT * FROM rollups.nope").await;
    assert_eq!(st, 400, "{v}");
}
