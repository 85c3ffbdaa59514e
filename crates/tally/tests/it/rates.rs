//! The rates service against DuckDB: the real data set (shipped as
//! examples/rates/rates.sql.gz) loaded into tally by examples/rates/load.py
//! and into DuckDB; 600 random questions
//! (ports, regions, mixed, ranges inside, across and outside the data)
//! answered by both must be identical. Then the errors and the cache.

use crate::server::{get_json, metric, metrics_text, post, python, TestServer};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The dump: $TALLY_RATES_DUMP, else the data set shipped with the
/// example (examples/rates/rates.sql.gz).
fn dump() -> PathBuf {
    if let Some(p) = std::env::var_os("TALLY_RATES_DUMP") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/rates/rates.sql.gz")
}

/// DuckDB's answers to `n` random questions, as
/// `[{"q": {...}, "days": [{"day", "average_price"}]}]`.
const REFERENCE: &str = r#"
import json, random, sys
sys.path.insert(0, sys.argv[4])
import rates_reference
dump, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = rates_reference.load(dump)
lo, hi = db.execute("SELECT min(day), max(day) FROM prices").fetchone()
ports = [r[0] for r in db.execute("SELECT code FROM ports ORDER BY 1").fetchall()]
regions = [r[0] for r in db.execute("SELECT slug FROM regions ORDER BY 1").fetchall()]
pairs = db.execute("SELECT DISTINCT orig_code, dest_code FROM prices ORDER BY 1, 2").fetchall()
parent = dict(db.execute("SELECT code, parent_slug FROM ports").fetchall())
rng = random.Random(seed)
import datetime
def places():
    k = rng.random()
    if k < 0.3:  # a pair with prices, as ports
        return rng.choice(pairs)
    if k < 0.5:  # a pair with prices, as the ports' regions
        o, d = rng.choice(pairs)
        return parent.get(o) or o, parent.get(d) or d
    pick = lambda: rng.choice(regions) if rng.random() < 0.5 else rng.choice(ports)
    return pick(), pick()
out = []
for i in range(n):
    start = lo + datetime.timedelta(days=rng.randint(-10, (hi - lo).days + 5))
    length = rng.choice([1, 1, 2, 7, 10, 31, rng.randint(1, 60)])
    end = start + datetime.timedelta(days=length - 1)
    o, d = places()
    if i % 50 == 0:
        d = o  # within one place
    q = {"date_from": str(start), "date_to": str(end), "origin": o, "destination": d}
    rows = rates_reference.answer(db, q)
    out.append({"q": q, "days": [{"day": r[0], "average_price": r[1]} for r in rows]})
print(json.dumps(out))
"#;

async fn rates(server: &TestServer, q: &Value) -> (u16, Value) {
    let mut url = reqwest::Url::parse(&server.url("/rates")).expect("url");
    for (k, v) in q.as_object().expect("question") {
        url.query_pairs_mut()
            .append_pair(k, v.as_str().expect("text"));
    }
    get_json(url.as_str()).await
}

fn load(server: &TestServer) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/rates/load.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&server.base)
        .arg(dump())
        .output()
        .expect("run load.py");
    assert!(
        out.status.success(),
        "load.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("load.py summary")
}

#[tokio::test]
async fn rates_equal_duckdb_on_the_real_data_set() {
    let server = TestServer::start().await;
    let loaded = load(&server);
    assert!(loaded["prices"].as_u64().unwrap() > 50_000, "{loaded}");
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it");
    let reference: Vec<Value> = serde_json::from_str(&python(
        REFERENCE,
        &[dump().to_str().unwrap(), "600", "7", here],
    ))
    .expect("reference JSON");
    assert_eq!(reference.len(), 600);
    let (mut priced, mut empty) = (0, 0);
    for case in &reference {
        let (status, answer) = rates(&server, &case["q"]).await;
        assert_eq!(status, 200, "{}: {answer}", case["q"]);
        assert_eq!(answer, case["days"], "question {}", case["q"]);
        let days = answer.as_array().unwrap();
        priced += days
            .iter()
            .filter(|d| !d["average_price"].is_null())
            .count();
        empty += days.iter().filter(|d| d["average_price"].is_null()).count();
    }
    // The questions exercise both kinds of day.
    assert!(
        priced > 1_000 && empty > 1_000,
        "priced {priced}, null {empty}"
    );
}

/// The shipped dump as PostgreSQL holds it after running all of it (its
/// statements after the COPY blocks leave Jan 3 without prices and Jan 4
/// with one): tally, loaded by examples/rates/load.py, holds the same
/// prices on those days and answers `/rates` as PostgreSQL's SQL does for
/// every question touching them.
#[tokio::test]
async fn rates_equal_postgresql_on_the_days_the_dump_edits() {
    let server = TestServer::start().await;
    load(&server);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/rates_postgres.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dump())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "rates_postgres.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pg: Value = serde_json::from_slice(&out.stdout).expect("PostgreSQL's answers");
    // The prices of each day around the edits, as PostgreSQL counts them.
    let daily = crate::server::sql(
        &server,
        "SELECT to_char(ts, '%Y-%m-%d') AS day, count(*) AS n, CAST(sum(price) AS BIGINT) AS sum FROM prices \
         WHERE ts >= '2016-01-01' AND ts < '2016-01-07' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(Value::Array(daily), pg["daily"]);
    let questions = pg["questions"].as_array().expect("questions");
    assert!(questions.len() >= 40, "{}", questions.len());
    for case in questions {
        let (status, answer) = rates(&server, &case["q"]).await;
        assert_eq!(status, 200, "{}: {answer}", case["q"]);
        assert_eq!(answer, case["days"], "question {}", case["q"]);
    }
}

#[tokio::test]
async fn rates_errors_and_cache() {
    let server = TestServer::start().await;
    load(&server);
    let ok = json!({"date_from": "2016-01-01", "date_to": "2016-01-10",
                    "origin": "CNSGH", "destination": "north_europe_main"});
    let with = |k: &str, v: &str| {
        let mut q = ok.clone();
        q[k] = json!(v);
        q
    };
    for (q, parameter) in [
        (with("date_from", "2016-1-01"), "date_from"),
        (with("date_from", "2016-02-30"), "date_from"),
        (with("date_to", "yesterday"), "date_to"),
        (with("date_from", "2016-01-11"), "date_from"),
        (with("date_to", "2018-01-10"), "date_to"),
        (with("origin", "atlantis"), "origin"),
        (with("destination", "XXXXX"), "destination"),
    ] {
        let (status, v) = rates(&server, &q).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert_eq!(v["parameter"], parameter, "{q}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("destination");
    let (status, v) = rates(&server, &missing).await;
    assert_eq!(
        (status, v["parameter"].as_str()),
        (400, Some("destination")),
        "{v}"
    );

    // Cached: the second answer is a hit and the same.
    let hits = || async {
        metric(
            &metrics_text(&server).await,
            r#"tally_rates_cache_lookups_total{result="hit"}"#,
        )
        .unwrap_or(0)
    };
    let (_, first) = rates(&server, &ok).await;
    let h = hits().await;
    let (_, again) = rates(&server, &ok).await;
    assert_eq!(first, again);
    assert_eq!(hits().await, h + 1);
    let day5 = first[4]["average_price"]
        .as_i64()
        .expect("2016-01-05 has prices");

    // A batch on one of its days: the answer is recomputed and moves.
    let (status, v) = post(
        &server.url("/v1/events/prices"),
        Some("text/csv"),
        "orig_code,dest_code,ts,price\n\
         CNSGH,NLRTM,2016-01-05T00:00:00Z,10000000\n\
         CNSGH,NLRTM,2016-01-05T00:00:00Z,10000000\n\
         CNSGH,NLRTM,2016-01-05T00:00:00Z,10000000\n",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let h = hits().await;
    let (_, after) = rates(&server, &ok).await;
    assert_eq!(
        hits().await,
        h,
        "a batch on 2016-01-05 must invalidate the answer"
    );
    assert!(
        after[4]["average_price"].as_i64().unwrap() > day5,
        "{after}"
    );
    assert_eq!(after[3], first[3]);

    // A batch import on another of its days: the same.
    let (_, cached) = rates(&server, &ok).await;
    assert_eq!(cached, after);
    let (status, v) = post(
        &server.url("/v1/import/prices?batch_id=day4"),
        Some("text/csv"),
        "orig_code,dest_code,ts,price\n\
         CNSGH,NLRTM,2016-01-04T00:00:00Z,10000000\n\
         CNSGH,NLRTM,2016-01-04T00:00:00Z,10000000\n\
         CNSGH,NLRTM,2016-01-04T00:00:00Z,10000000\n",
    )
    .await;
    assert_eq!(
        (status, v["outcome"].as_str()),
        (200, Some("committed")),
        "{v}"
    );
    let h = hits().await;
    let (_, imported) = rates(&server, &ok).await;
    assert_eq!(
        hits().await,
        h,
        "an import on 2016-01-04 must invalidate the answer"
    );
    assert!(
        imported[3]["average_price"].as_i64().unwrap()
            > after[3]["average_price"].as_i64().unwrap_or(0),
        "{imported}"
    );
    assert_eq!(imported[4], after[4]);
}

/// The dump reader applies what a dump does after its COPY blocks
/// (UPDATE, INSERT with named columns, DELETE) as PostgreSQL would, and
/// refuses a statement it does not understand, naming it and its line.
#[test]
fn the_dump_reader_applies_edits_and_refuses_what_it_does_not_understand() {
    let dir = tempfile::tempdir().unwrap();
    let base = "COPY prices (orig_code, dest_code, day, price) FROM stdin;\nA\tB\t2016-01-01\t10\nA\tC\t2016-01-02\t20\n\\.\n";
    let edited = dir.path().join("edited.sql");
    std::fs::write(
        &edited,
        format!("{base}UPDATE prices SET price = 7 WHERE day = date'2016-01-01';\nINSERT INTO prices (day, price, orig_code, dest_code) VALUES ('2016-01-03', 5, 'O''K', 'X');\nDELETE FROM prices WHERE dest_code = 'C';\n"),
    )
    .unwrap();
    let refused = dir.path().join("refused.sql");
    std::fs::write(&refused, format!("{base}-- a comment\nTRUNCATE prices;\n")).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/rates");
    let out = crate::server::python(
        r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import dump
rows = dump.read(sys.argv[2])["prices"][1]
try:
    dump.read(sys.argv[3])
    refusal = None
except dump.DumpError as e:
    refusal = str(e)
print(json.dumps({"rows": rows, "refusal": refusal}))
"#,
        &[
            examples,
            edited.to_str().unwrap(),
            refused.to_str().unwrap(),
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["rows"],
        json!([
            ["A", "B", "2016-01-01", "7"],
            ["O'K", "X", "2016-01-03", "5"]
        ])
    );
    let refusal = v["refusal"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("line 6") && refusal.contains("TRUNCATE prices"),
        "{refusal}"
    );
}
