//! The differential test: a million generated events (two streams, late
//! and out-of-order, part in segments and part in the in-memory tail), the
//! same rows in DuckDB, and hundreds of random SQL queries and time-series
//! requests answered by both. The reference side (`reference.py`) is an
//! independent implementation of the time-series semantics in DuckDB SQL.

use super::{post_lines, put_table, sql, ts_query};
use crate::server::{get_json, post, python, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;

const DAY_US: i64 = 86_400_000_000;
/// 2024-03-25T00:00:00Z: the data spans Europe's DST change on 2024-03-31.
const START_US: i64 = 1_711_324_800_000_000;
const DAYS: i64 = 10;

const COUNTRIES: [&str; 10] = ["NO", "SE", "DK", "FI", "DE", "FR", "US", "CA", "JP", "IN"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const SERVICES: [&str; 5] = ["auth", "search", "cart", "pay", "feed"];
const STATUSES: [&str; 4] = ["200", "404", "500", "302"];

/// The region tree: continents and sub-regions above the country codes.
const GEO: &str = "key,parent\nworld,\neurope,world\nnordics,europe\nscandinavia,nordics\nwest,europe\namericas,world\nnorth_america,americas\nasia,world\nNO,scandinavia\nSE,scandinavia\nDK,scandinavia\nFI,nordics\nDE,west\nFR,west\nUS,north_america\nCA,north_america\nJP,asia\nIN,asia\n";
const COUNTRY_TABLE: &str = "code,continent,name\nNO,europe,Norway\nSE,europe,Sweden\nDK,europe,Denmark\nFI,europe,Finland\nDE,europe,Germany\nFR,europe,France\nUS,america,United States\nCA,america,Canada\nJP,asia,Japan\nIN,asia,India\n";

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn ts(&mut self, late: bool) -> i64 {
        // Late events land in the first two days, whose partitions are
        // already in segments when they arrive.
        let span = if late { 2 * DAY_US } else { DAYS * DAY_US };
        START_US + self.rng.random_range(0..span)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        // Skewed, so top-N rankings are stable.
        let i = (self.rng.random_range(0.0f64..1.0).powi(2) * xs.len() as f64) as usize;
        xs[i.min(xs.len() - 1)]
    }
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One event of `web` as (NDJSON line, CSV line).
fn web_event(g: &mut Gen, late: bool) -> (String, String) {
    let ts = g.ts(late);
    let country = if g.rng.random_range(0..50) == 0 {
        None
    } else {
        Some(g.pick(&COUNTRIES))
    };
    let device = g.pick(&DEVICES);
    let path = format!("/p/{}", g.rng.random_range(0..60));
    let user = format!("u{}", g.rng.random_range(0..30_000));
    // Quarters: sums are exact in any order.
    let dur = if g.rng.random_range(0..10) == 0 {
        None
    } else {
        Some(g.rng.random_range(0..40_000) as f64 / 4.0)
    };
    let bytes = g.rng.random_range(100..5_000) as f64;
    let mut j = format!("{{\"ts\":\"{}\"", rfc3339(ts));
    if let Some(c) = country {
        write!(j, ",\"country\":\"{c}\"").unwrap();
    }
    write!(
        j,
        ",\"device\":\"{device}\",\"path\":\"{path}\",\"user\":\"{user}\""
    )
    .unwrap();
    if let Some(d) = dur {
        write!(j, ",\"dur\":{d}").unwrap();
    }
    write!(j, ",\"bytes\":{bytes}}}").unwrap();
    let csv = format!(
        "{ts},{},{device},{path},{user},{},{bytes}",
        country.unwrap_or(""),
        dur.map(|d| d.to_string()).unwrap_or_default()
    );
    (j, csv)
}

fn api_event(g: &mut Gen, late: bool) -> (String, String) {
    let ts = g.ts(late);
    let service = g.pick(&SERVICES);
    let status = g.pick(&STATUSES);
    let rtt = g.rng.random_range(1..20_000) as f64 / 8.0;
    let j = format!(
        "{{\"ts\":\"{}\",\"service\":\"{service}\",\"status\":\"{status}\",\"rtt\":{rtt}}}",
        rfc3339(ts)
    );
    (j, format!("{ts},{service},{status},{rtt}"))
}

fn random_sql(rng: &mut StdRng) -> (String, String) {
    let web = rng.random_range(0..3) != 0;
    let mut conds: Vec<String> = Vec::new();
    if rng.random_bool(0.6) {
        let a = START_US + rng.random_range(0..DAYS * 24) * 3_600_000_000;
        let b = a + rng.random_range(1..72) * 3_600_000_000;
        conds.push(format!(
            "ts >= TIMESTAMP '{}' AND ts < TIMESTAMP '{}'",
            naive(a),
            naive(b)
        ));
    }
    let (dims, aggs): (&[&str], Vec<&str>) = if web {
        (
            &["country", "device", "path"],
            vec![
                "count(*)",
                "count(dur)",
                "sum(dur)",
                "avg(dur)",
                "min(dur)",
                "max(dur)",
                "sum(bytes)",
                "count(DISTINCT \"user\")",
                "max(path)",
            ],
        )
    } else {
        (
            &["service", "status"],
            vec![
                "count(*)",
                "sum(rtt)",
                "avg(rtt)",
                "min(rtt)",
                "max(rtt)",
                "count(DISTINCT status)",
            ],
        )
    };
    for _ in 0..rng.random_range(0..3) {
        let c = if web {
            match rng.random_range(0..7) {
                0 => format!("country = '{}'", COUNTRIES[rng.random_range(0..10)]),
                1 => format!(
                    "device IN ('{}', '{}')",
                    DEVICES[rng.random_range(0..3)],
                    DEVICES[rng.random_range(0..3)]
                ),
                2 => format!("path LIKE '/p/{}%'", rng.random_range(1..6)),
                3 => format!("dur > {}", rng.random_range(0..10_000)),
                4 => format!(
                    "bytes BETWEEN {} AND {}",
                    rng.random_range(0..2000),
                    rng.random_range(2000..5000)
                ),
                5 => "country IS NULL".to_string(),
                _ => format!(
                    "(country <> '{}' OR dur < 100)",
                    COUNTRIES[rng.random_range(0..10)]
                ),
            }
        } else {
            match rng.random_range(0..3) {
                0 => format!("service = '{}'", SERVICES[rng.random_range(0..5)]),
                1 => format!("status <> '{}'", STATUSES[rng.random_range(0..4)]),
                _ => format!("rtt >= {}", rng.random_range(0..2000)),
            }
        };
        conds.push(c);
    }
    let mut groups: Vec<(String, String)> = Vec::new();
    for d in dims {
        if rng.random_bool(0.35) {
            groups.push((d.to_string(), d.to_string()));
        }
    }
    if rng.random_bool(0.4) {
        let unit = ["hour", "day"][rng.random_range(0..2)];
        groups.push((
            format!("CAST(date_trunc('{unit}', ts) AS BIGINT)"),
            format!("epoch_us(date_trunc('{unit}', ts))"),
        ));
    }
    let n = rng.random_range(1..4);
    let mut chosen: Vec<&str> = (0..n)
        .map(|_| aggs[rng.random_range(0..aggs.len())])
        .collect();
    chosen.sort();
    chosen.dedup();
    let table = if web { "web" } else { "api" };
    let build = |dialect: usize| {
        let g: Vec<&str> = groups
            .iter()
            .map(|(t, d)| if dialect == 0 { t.as_str() } else { d.as_str() })
            .collect();
        let mut sel: Vec<String> = g.iter().map(|s| s.to_string()).collect();
        sel.extend(chosen.iter().map(|s| s.to_string()));
        let mut q = format!("SELECT {} FROM {table}", sel.join(", "));
        if !conds.is_empty() {
            write!(q, " WHERE {}", conds.join(" AND ")).unwrap();
        }
        if !g.is_empty() {
            write!(q, " GROUP BY {}", g.join(", ")).unwrap();
        }
        q
    };
    (build(0), build(1))
}

fn naive(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A random time-series request (tally's form; the reference gets the same
/// with `from_us`/`to_us` resolved).
fn random_request(rng: &mut StdRng) -> Value {
    let web = rng.random_range(0..3) != 0;
    let (stream, dims, nums): (&str, &[&str], &[&str]) = if web {
        ("web", &["country", "device", "path"], &["dur", "bytes"])
    } else {
        ("api", &["service", "status"], &["rtt"])
    };
    let (interval, tz) = match rng.random_range(0..8) {
        0 => (None, None),
        1 => (Some("1d"), Some("Europe/Berlin")),
        2 => (Some("1h"), Some("Asia/Kolkata")),
        3 => (Some("1w"), Some("America/New_York")),
        4 => (Some("15m"), None),
        5 => (Some("6h"), None),
        6 => (Some("1mo"), Some("Europe/Berlin")),
        _ => (Some("1h"), None),
    };
    let minutes = match interval {
        Some("15m") => rng.random_range(30..600),
        Some("1h") => rng.random_range(60..3 * 24 * 60),
        _ => rng.random_range(60..DAYS * 24 * 60 + 600),
    };
    let from = START_US - 120 * 60_000_000 + rng.random_range(0..DAYS * 24 * 60) * 60_000_000;
    let to = from + minutes * 60_000_000;
    let num = |rng: &mut StdRng| nums[rng.random_range(0..nums.len())];
    let mut aggregates = vec![];
    let exact_rank = match rng.random_range(0..2) {
        0 => "count".to_string(),
        _ => format!("sum({})", num(rng)),
    };
    aggregates.push(exact_rank.clone());
    for _ in 0..rng.random_range(0..3) {
        let a = match rng.random_range(0..9) {
            0 => format!("avg({})", num(rng)),
            1 => format!("min({})", num(rng)),
            2 => format!("max({})", num(rng)),
            3 => format!("uniq({})", if web { "user" } else { "status" }),
            4 => format!("p50({})", num(rng)),
            5 => format!("p90({})", num(rng)),
            6 => format!("p95({})", num(rng)),
            7 => format!("p99({})", num(rng)),
            _ => format!("count({})", num(rng)),
        };
        if !aggregates.contains(&a) {
            aggregates.push(a);
        }
    }
    let mut filters = vec![];
    for _ in 0..rng.random_range(0..3) {
        let f = if web {
            match rng.random_range(0..9) {
                0 => {
                    json!({"field": "country", "op": "=", "value": COUNTRIES[rng.random_range(0..10)]})
                }
                1 => {
                    json!({"field": "country", "op": "!=", "value": COUNTRIES[rng.random_range(0..10)]})
                }
                2 => {
                    json!({"field": "device", "op": "in", "value": [DEVICES[rng.random_range(0..3)], DEVICES[rng.random_range(0..3)]]})
                }
                3 => {
                    json!({"field": "path", "op": "prefix", "value": format!("/p/{}", rng.random_range(1..6))})
                }
                4 => {
                    json!({"field": "path", "op": "contains", "value": format!("{}", rng.random_range(0..10))})
                }
                5 => {
                    json!({"field": "dur", "op": ([">", ">=", "<", "<="][rng.random_range(0..4)]), "value": rng.random_range(0..10_000)})
                }
                6 => {
                    json!({"field": "country", "op": "under", "table": "geo", "value": (["europe", "nordics", "asia", "americas", "scandinavia", "DE"][rng.random_range(0..6)])})
                }
                7 => {
                    json!({"field": "country", "op": "not_in", "value": [COUNTRIES[rng.random_range(0..10)]]})
                }
                _ => json!({"field": "dur", "op": (["exists", "missing"][rng.random_range(0..2)])}),
            }
        } else {
            match rng.random_range(0..3) {
                0 => {
                    json!({"field": "service", "op": "=", "value": SERVICES[rng.random_range(0..5)]})
                }
                1 => {
                    json!({"field": "status", "op": "!=", "value": STATUSES[rng.random_range(0..4)]})
                }
                _ => json!({"field": "rtt", "op": ">", "value": rng.random_range(0..2000)}),
            }
        };
        filters.push(f);
    }
    let mut group_by = vec![];
    if rng.random_bool(0.5) {
        group_by.push(dims[rng.random_range(0..dims.len())]);
        if rng.random_bool(0.3) {
            let d = dims[rng.random_range(0..dims.len())];
            if !group_by.contains(&d) {
                group_by.push(d);
            }
        }
    }
    let mut r = json!({
        "stream": stream,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "aggregates": aggregates,
        "filters": filters,
        "group_by": group_by,
        "limit": rng.random_range(1..8),
        "order_by": exact_rank,
        "other": rng.random_bool(0.7),
        "fill": (["null", "zero", "none"][rng.random_range(0..3)]),
        "from_us": from,
        "to_us": to,
    });
    if let Some(i) = interval {
        r["interval"] = json!(i);
    }
    if let Some(t) = tz {
        r["timezone"] = json!(t);
    }
    r
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Compares one aggregate value of tally's answer with the reference's.
fn same_value(kind: &str, got: &Value, want: &Value) -> Result<(), String> {
    match (kind, got, want) {
        (_, Value::Null, Value::Null) => Ok(()),
        ("quantile", g, Value::Array(r)) => {
            // Documented bound (docs/query.md): rank error at most 0.02 for
            // 200 or more values, 0.1 for 10 or more, and within the values'
            // range below that.
            let v = g.as_f64().ok_or("quantile is not a number")?;
            let r: Vec<f64> = r.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
            let n = r[6];
            let (lo, hi, band) = if n >= 200.0 {
                (r[0], r[1], "q±0.02")
            } else if n >= 10.0 {
                (r[2], r[3], "q±0.1")
            } else {
                (r[4], r[5], "min..max")
            };
            if v >= lo - 1e-9 && v <= hi + 1e-9 {
                Ok(())
            } else {
                Err(format!(
                    "{v} outside the exact quantiles [{lo}, {hi}] at {band} (n = {n})"
                ))
            }
        }
        ("uniq", g, w) => {
            let (g, w) = (g.as_f64().unwrap_or(-1.0), w.as_f64().unwrap_or(-2.0));
            // Documented bound: 2% relative error (HyperLogLog, 16384
            // registers: standard error 0.81%) plus 1 for tiny sets.
            if (g - w).abs() <= 0.02 * w + 1.0 {
                Ok(())
            } else {
                Err(format!("uniq {g} vs exact {w}"))
            }
        }
        (_, g, w) => match (g.as_f64(), w.as_f64()) {
            (Some(a), Some(b)) if close(a, b) => Ok(()),
            _ => Err(format!("{g} vs {w}")),
        },
    }
}

fn compare_timeseries(got: &Value, want: &Value) -> Result<(), String> {
    let kinds = &want["kinds"];
    let cmp_obj = |g: &Value, w: &Value, at: &str| -> Result<(), String> {
        for (name, wv) in w.as_object().unwrap() {
            if name == "t" {
                let t = chrono::DateTime::parse_from_rfc3339(g["t"].as_str().unwrap_or(""))
                    .map_err(|e| format!("{at}: bad t: {e}"))?
                    .timestamp_micros();
                if Some(t) != wv.as_i64() {
                    return Err(format!("{at}: bucket {t} vs {wv}"));
                }
                continue;
            }
            let kind = kinds[name].as_str().unwrap_or("exact");
            same_value(kind, &g[name], wv).map_err(|e| format!("{at} {name}: {e}"))?;
        }
        Ok(())
    };
    cmp_obj(&got["totals"], &want["totals"], "grand totals")?;
    let (gs, ws) = (
        got["series"].as_array().unwrap(),
        want["series"].as_array().unwrap(),
    );
    if gs.len() != ws.len() {
        return Err(format!("{} series vs {}", gs.len(), ws.len()));
    }
    for (i, (g, w)) in gs.iter().zip(ws).enumerate() {
        if g.get("group") != w.get("group") || g.get("other") != w.get("other") {
            return Err(format!(
                "series {i}: group {:?} vs {:?}",
                g.get("group"),
                w.get("group")
            ));
        }
        cmp_obj(&g["totals"], &w["totals"], &format!("series {i} totals"))?;
        if let Some(wp) = w.get("points") {
            let gp = g["points"].as_array().ok_or("no points")?;
            let wp = wp.as_array().unwrap();
            if gp.len() != wp.len() {
                return Err(format!("series {i}: {} points vs {}", gp.len(), wp.len()));
            }
            for (j, (a, b)) in gp.iter().zip(wp).enumerate() {
                cmp_obj(a, b, &format!("series {i} point {j}"))?;
            }
        }
    }
    Ok(())
}

/// Rows of a `/v1/sql` answer as arrays in column order.
fn sql_rows(v: &Value) -> Vec<Vec<Value>> {
    let cols: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| cols.iter().map(|c| r[*c].clone()).collect())
        .collect()
}

fn sort_rows(rows: &mut [Vec<Value>]) {
    rows.sort_by_key(|r| {
        r.iter()
            .map(|v| match v {
                Value::Number(n) => format!("{:030.6}", n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
    });
}

fn same_rows(got: &[Vec<Value>], want: &[Vec<Value>]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} rows vs {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            let ok = match (a, b) {
                (Value::Number(_), Value::Number(_)) => {
                    close(a.as_f64().unwrap(), b.as_f64().unwrap())
                }
                _ => a == b,
            };
            if !ok {
                return Err(format!("row {i} column {j}: {a} vs {b}"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_and_timeseries_answers_equal_duckdb_on_a_million_events() {
    let s = TestServer::builder()
        .args([
            "--flush-bytes",
            "4000000000",
            "--flush-interval-secs",
            "86400",
            "--memory-limit-bytes",
            "4000000000",
            "--query-max-rows",
            "1000000",
        ])
        .start()
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let mut g = Gen {
        rng: StdRng::seed_from_u64(20261122),
    };
    let mut streams = vec![];
    for (name, n, header) in [
        (
            "web",
            700_000usize,
            "ts_us,country,device,path,user,dur,bytes",
        ),
        ("api", 300_000, "ts_us,service,status,rtt"),
    ] {
        let mut ndjson = Vec::with_capacity(n);
        let path = tmp.path().join(format!("{name}.csv"));
        let mut csv = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(csv, "{header}").unwrap();
        for i in 0..n {
            // The last fifth arrives after the flush, most of it late.
            let late = i >= n * 4 / 5 && i % 4 != 0;
            let (j, c) = if name == "web" {
                web_event(&mut g, late)
            } else {
                api_event(&mut g, late)
            };
            ndjson.push(j);
            writeln!(csv, "{c}").unwrap();
        }
        csv.flush().unwrap();
        streams.push((name, ndjson, path));
    }
    for (name, lines, _) in &streams {
        post_lines(&s, name, &lines[..lines.len() * 4 / 5]).await;
    }
    assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
    for (name, lines, _) in &streams {
        post_lines(&s, name, &lines[lines.len() * 4 / 5..]).await;
    }
    // The tail really is in memory and the rest in segments.
    let (_, web) = get_json(&s.url("/v1/streams/web")).await;
    assert!(web["memory_rows"].as_u64().unwrap() >= 100_000, "{web}");
    assert!(web["segments"].as_u64().unwrap() >= 1, "{web}");

    // Dimension tables, in tally and in DuckDB.
    assert_eq!(
        put_table(&s, "geo", "?key=key&parent=parent", GEO).await.0,
        200
    );
    assert_eq!(put_table(&s, "countries", "", COUNTRY_TABLE).await.0, 200);
    let geo_csv = tmp.path().join("geo.csv");
    std::fs::write(&geo_csv, GEO).unwrap();
    let countries_csv = tmp.path().join("countries.csv");
    std::fs::write(&countries_csv, COUNTRY_TABLE).unwrap();

    let db = tmp.path().join("ref.duckdb");
    let script = include_str!("reference.py");
    let load: Vec<String> = vec![
        format!(
            "web={}=country:dim,device:dim,path:dim,user:dim,dur:value,bytes:value",
            streams[0].2.display()
        ),
        format!(
            "api={}=service:dim,status:dim,rtt:value",
            streams[1].2.display()
        ),
    ];
    let mut args: Vec<&str> = vec![db.to_str().unwrap(), "load"];
    args.extend(load.iter().map(String::as_str));
    python(script, &args);

    // Random queries, plus joins and tree filters written by hand.
    let mut rng = StdRng::seed_from_u64(7);
    let mut sqls: Vec<(String, String)> = (0..150).map(|_| random_sql(&mut rng)).collect();
    sqls.push((
        "SELECT c.continent, count(*), sum(w.dur) FROM web w JOIN countries c ON w.country = c.code GROUP BY c.continent".into(),
        "SELECT c.continent, count(*), sum(w.dur) FROM web w JOIN countries c ON w.country = c.code GROUP BY c.continent".into(),
    ));
    for node in ["europe", "nordics", "north_america", "world", "FI"] {
        sqls.push((
            format!("SELECT device, count(*), avg(dur) FROM web WHERE country IN (SELECT key FROM tree_descendants('geo', '{node}')) GROUP BY device"),
            format!("SELECT device, count(*), avg(dur) FROM web WHERE country IN (WITH RECURSIVE d(k) AS (SELECT '{node}' UNION SELECT g.key FROM geo g JOIN d ON g.parent = d.k) SELECT k FROM d) GROUP BY device"),
        ));
    }
    let requests: Vec<Value> = (0..130).map(|_| random_request(&mut rng)).collect();
    let spec = json!({
        "sql": sqls.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        "ts": requests,
        "tables": {"geo": geo_csv, "countries": countries_csv},
        "trees": {"geo": ["key", "parent"]},
    });
    let spec_path = tmp.path().join("queries.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let reference: Value = serde_json::from_str(&python(
        script,
        &[db.to_str().unwrap(), "run", spec_path.to_str().unwrap()],
    ))
    .unwrap();

    let mut failures = vec![];
    for (i, (tq, _)) in sqls.iter().enumerate() {
        let (st, v) = sql(&s, tq).await;
        if st != 200 {
            failures.push(format!("sql {i} {tq}: status {st}: {v}"));
            continue;
        }
        let mut got = sql_rows(&v);
        let mut want: Vec<Vec<Value>> =
            serde_json::from_value(reference["sql"][i].clone()).unwrap();
        sort_rows(&mut got);
        sort_rows(&mut want);
        if let Err(e) = same_rows(&got, &want) {
            failures.push(format!("sql {i} {tq}: {e}"));
        }
    }
    for (i, r) in requests.iter().enumerate() {
        let mut req = r.clone();
        req.as_object_mut().unwrap().remove("from_us");
        req.as_object_mut().unwrap().remove("to_us");
        let (st, v) = ts_query(&s, &req).await;
        if st != 200 {
            failures.push(format!("query {i} {req}: status {st}: {v}"));
            continue;
        }
        if let Err(e) = compare_timeseries(&v, &reference["ts"][i]) {
            failures.push(format!("query {i} {req}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries differ from DuckDB:\n{}",
        failures.len(),
        sqls.len() + requests.len(),
        failures.join("\n")
    );
}
