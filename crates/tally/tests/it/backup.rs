//! `tally backup` of a server under concurrent ingest, `tally restore` into
//! a new data directory, and the restored server compared query-for-query
//! with the source at the snapshot point: the same events (a prefix of each
//! writer's batches, none cut in half), the same aggregates, rollups that
//! agree with those events, the same dimension table, the same accounts.

use crate::counter::{counter_server, Tab};
use crate::query::put_table;
use crate::server::{post, sql};
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WRITERS: u64 = 4;
const BATCH: u64 = 50;

fn tally(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .expect("tally")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_ingest_restores_to_the_same_answers_at_its_snapshot_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = counter_server("", None).await;
    let (st, v) = post(
        &s.url("/v1/rollups"),
        Some("application/json"),
        json!({"name": "per_writer", "stream": "ev", "intervals": ["minute"],
               "group_by": ["writer"], "aggregates": ["count", "sum(v)"]})
        .to_string(),
    )
    .await;
    assert!(st == 201 || st == 202, "{st} {v}");
    let (st, v) = put_table(&s, "ports", "", "code,name\nAAA,Alpha\nBBB,Beta\n").await;
    assert_eq!(st, 200, "{v}");
    let mut ada = Tab::open(&s).await;
    assert_eq!(ada.register("ada", "correct horse").await.status, 200);
    // Events in segments and events only in the log.
    let pre: String = (0..2000)
        .map(|i| format!("{{\"writer\":\"pre\",\"seq\":{},\"v\":{i}}}\n", i / 100))
        .collect();
    let (st, v) = post(&s.url("/v1/events/ev"), Some("application/x-ndjson"), pre).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(&s.url("/v1/admin/flush"), None, "").await;
    assert_eq!(st, 200, "{v}");

    // Writers: batches of 50 events, each batch one request, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (stop, acked, url) = (stop.clone(), acked.clone(), s.url("/v1/events/ev"));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body: String = (0..BATCH)
                    .map(|i| {
                        format!(
                            "{{\"writer\":\"w{w}\",\"seq\":{seq},\"v\":{}}}\n",
                            seq * BATCH + i
                        )
                    })
                    .collect();
                let r = client.post(&url).body(body).send().await.expect("write");
                match r.status().as_u16() {
                    200 => {
                        seq += 1;
                        acked[w as usize].store(seq, Ordering::Relaxed);
                    }
                    503 => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("write answered {other}"),
                }
            }
        }));
    }
    let wait_acked = |n: u64| {
        let acked = acked.clone();
        async move {
            while acked
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .min()
                .unwrap()
                < n
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_acked(20).await;
    let backup = dir.path().join("backup");
    let before = acked
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect::<Vec<_>>();
    let out = tally(&["backup", "--to", backup.to_str().unwrap(), "--url", &s.base]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_backup = acked
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect::<Vec<_>>();
    assert!(
        after_backup.iter().sum::<u64>() > before.iter().sum::<u64>(),
        "no write was acknowledged while the backup ran: {before:?} {after_backup:?}"
    );
    // Ingest went on during the backup and after it.
    wait_acked(after_backup.iter().max().unwrap() + 10).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // A second backup may not overwrite the first.
    let out = tally(&["backup", "--to", backup.to_str().unwrap(), "--url", &s.base]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    let restored_dir = dir.path().join("restored");
    let out = tally(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not over a data directory in use, nor from something not a backup.
    for (from, to) in [
        (&backup, &restored_dir),
        (&restored_dir, &dir.path().join("x")),
    ] {
        let out = tally(&[
            "restore",
            "--from",
            from.to_str().unwrap(),
            "--data-dir",
            to.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{from:?} -> {to:?}");
    }
    let r = counter_server("", Some(&restored_dir)).await;

    // The snapshot point: each writer's batches 0..k, whole.
    let per_writer = sql(
        &r,
        "SELECT writer, count(*) AS n, count(DISTINCT seq) AS batches, max(seq) AS last \
         FROM ev WHERE writer <> 'pre' GROUP BY writer ORDER BY writer",
    )
    .await;
    assert_eq!(per_writer.len(), WRITERS as usize, "{per_writer:?}");
    let mut point = vec!["writer = 'pre'".to_string()];
    for (w, row) in per_writer.iter().enumerate() {
        let batches = row["batches"].as_u64().unwrap();
        assert_eq!(row["n"].as_u64().unwrap(), batches * BATCH, "{row}");
        assert_eq!(row["last"].as_f64().unwrap() as u64 + 1, batches, "{row}");
        // At least what was acknowledged before the backup began, at most
        // what was by the time it ended plus the writer's one request in
        // flight then (stored and in the snapshot, its answer not yet read).
        assert!(
            batches >= before[w] && batches <= after_backup[w] + 1,
            "{row}: {before:?} {after_backup:?}"
        );
        point.push(format!("(writer = 'w{w}' AND seq < {batches})"));
    }
    let point = point.join(" OR ");
    for q in [
        "SELECT writer, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, count(DISTINCT seq) AS d \
         FROM ev WHERE {P} GROUP BY writer ORDER BY writer",
        "SELECT date_trunc('minute', ts) AS m, count(*) AS n, sum(v) AS s FROM ev WHERE {P} GROUP BY 1 ORDER BY 1",
        "SELECT CAST(ts AS BIGINT) AS t, writer, seq, v FROM ev WHERE {P} ORDER BY writer, v",
    ] {
        let q = q.replace("{P}", &point);
        assert_eq!(sql(&r, &q).await, sql(&s, &q).await, "{q}");
    }
    let all = sql(&r, "SELECT count(*) AS n FROM ev").await;
    let at_point = sql(&s, &format!("SELECT count(*) AS n FROM ev WHERE {point}")).await;
    assert_eq!(all, at_point);
    // The rollup holds exactly the restored events.
    let rollup = sql(
        &r,
        "SELECT CAST(bucket AS BIGINT) AS b, writer, \"count\" AS n, \"sum(v)\" AS s FROM rollups.per_writer \
         WHERE grain = 'minute' ORDER BY b, writer",
    )
    .await;
    let raw = sql(
        &r,
        "SELECT CAST(date_trunc('minute', ts) AS BIGINT) AS b, writer, count(*) AS n, sum(v) AS s \
         FROM ev GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await;
    assert_eq!(rollup, raw);
    let q = "SELECT * FROM tables.ports ORDER BY code";
    assert_eq!(sql(&r, q).await, sql(&s, q).await);
    // Accounts came along.
    let mut fresh = Tab::open(&r).await;
    assert_eq!(fresh.login("ada", "correct horse").await.status, 200);
    assert_eq!(fresh.login("ada", "wrong horse!").await.status, 401);
    // And the restored server takes writes.
    let (st, v) = post(
        &r.url("/v1/events/ev"),
        Some("application/json"),
        r#"{"writer":"new","v":1}"#,
    )
    .await;
    assert_eq!(st, 200, "{v}");
}
