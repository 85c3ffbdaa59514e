//! DuckDB reads tally's Parquet segments as they are, and finds what was
//! ingested.

use crate::server::{post, python, TestServer};
use rand::Rng;

#[tokio::test]
async fn duckdb_reads_segments_with_the_ingested_counts_and_sums() {
    let s = TestServer::start().await;
    let mut rng = rand::rng();
    let base_ms: i64 = 1_700_000_000_000;
    let (mut n, mut sum_v, mut min_ts, mut max_ts) = (0u64, 0f64, i64::MAX, i64::MIN);
    let mut per_country = std::collections::BTreeMap::<String, u64>::new();
    for req in 0..30 {
        let mut body = String::new();
        let rows = rng.random_range(1..400);
        for _ in 0..rows {
            // Spread over ~30 hours so several partitions exist.
            let ts = base_ms + rng.random_range(0..30 * 3_600_000i64);
            let v = rng.random_range(0..10_000) as f64 / 4.0;
            let country = ["NO", "SE", "DK", "FI"][rng.random_range(0..4)];
            body.push_str(&format!(
                "{{\"ts\":{ts},\"country\":\"{country}\",\"v\":{v},\"id\":\"{req}-{n}\"}}\n"
            ));
            n += 1;
            sum_v += v;
            min_ts = min_ts.min(ts);
            max_ts = max_ts.max(ts);
            *per_country.entry(country.to_string()).or_default() += 1;
        }
        let (st, v) = post(&s.url("/v1/events/pv"), Some("application/x-ndjson"), body).await;
        assert_eq!(st, 200, "{v}");
        // Flush now and then so there are several segments per partition.
        if req % 10 == 9 {
            assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
        }
    }
    let glob = format!("{}/segments/pv/**/*.parquet", s.data_dir.display());
    let out = python(
        r#"
import duckdb, json, sys
g = sys.argv[1]
con = duckdb.connect()
r = con.execute(f"select count(*), sum(v), count(distinct id), epoch_ms(min(ts)), epoch_ms(max(ts)) from read_parquet('{g}')").fetchone()
c = dict(con.execute(f"select country, count(*) from read_parquet('{g}') group by 1").fetchall())
meta = con.execute(f"select distinct path_in_schema, compression, encodings from parquet_metadata('{g}')").fetchall()
print(json.dumps({"count": r[0], "sum": r[1], "ids": r[2], "min": r[3], "max": r[4], "countries": c,
                  "meta": [[m[0], m[1], m[2]] for m in meta]}))
"#,
        &[&glob],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["count"].as_u64(), Some(n));
    assert_eq!(v["ids"].as_u64(), Some(n));
    assert!(
        (v["sum"].as_f64().unwrap() - sum_v).abs() < 1e-6,
        "{} vs {sum_v}",
        v["sum"]
    );
    assert_eq!(v["min"].as_i64(), Some(min_ts));
    assert_eq!(v["max"].as_i64(), Some(max_ts));
    for (c, k) in per_country {
        assert_eq!(v["countries"][&c].as_u64(), Some(k), "{c}");
    }
    for m in v["meta"].as_array().unwrap() {
        assert_eq!(m[1], "ZSTD", "{m}");
        if m[0] == "country" {
            assert!(
                m[2].as_str().unwrap().contains("DICTIONARY"),
                "dimension not dictionary-encoded: {m}"
            );
        }
    }
}

/// Every stored event of a stream is under the stream's directory, in the
/// data directory and in the archive, whatever way it came in: after batch
/// imports, live ingest, flushes (which compact) and an archive pass, the
/// documented globs read with DuckDB hold the count and sum `/v1/sql`
/// answers.
#[tokio::test]
async fn the_stream_globs_hold_imported_and_ingested_events() {
    let s = TestServer::start().await;
    // Old hours, so the archive takes them at once (their hour is sealed).
    let base_ms: i64 = 1_600_000_000_000;
    let mut rng = rand::rng();
    let mut body = |rows: usize, tag: &str| {
        (0..rows)
            .map(|i| {
                let ts = base_ms + rng.random_range(0..5 * 3_600_000i64);
                format!(
                    "{{\"ts\":{ts},\"v\":{},\"src\":\"{tag}-{i}\"}}\n",
                    rng.random_range(0..1000)
                )
            })
            .collect::<String>()
    };
    for round in 0..4 {
        let batch = body(300, &format!("import{round}"));
        let url = s.url(&format!("/v1/import/pv?batch_id=b{round}"));
        let (st, v) = post(&url, Some("application/x-ndjson"), batch).await;
        assert_eq!(st, 200, "{v}");
        let live = body(200, &format!("live{round}"));
        let (st, v) = post(&s.url("/v1/events/pv"), Some("application/x-ndjson"), live).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(post(&s.url("/v1/admin/flush"), None, "").await.0, 200);
    }
    let (st, v) = post(&s.url("/v1/admin/maintain"), None, "").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["archive"]["pending_segments"], 0, "{v}");
    let want = crate::server::sql(&s, "SELECT count(*) AS n, sum(v) AS s FROM pv").await;
    assert_eq!(want[0]["n"], 2_000, "{want:?}");
    for root in [s.data_dir.clone(), s.data_dir.join("archive")] {
        let glob = format!("{}/segments/pv/**/*.parquet", root.display());
        let got: serde_json::Value = serde_json::from_str(&python(
            r#"
import duckdb, json, sys
n, s = duckdb.connect().execute(f"select count(*), sum(v) from read_parquet('{sys.argv[1]}')").fetchone()
print(json.dumps({"n": n, "s": s}))
"#,
            &[&glob],
        ))
        .unwrap();
        assert_eq!(got["n"], want[0]["n"], "{glob}");
        assert_eq!(got["s"].as_f64(), want[0]["s"].as_f64(), "{glob}");
    }
    // Nothing is left where imports are staged.
    let staged = std::fs::read_dir(s.data_dir.join("imports"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0);
}
