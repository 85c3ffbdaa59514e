//! Cluster mode's work done once: the node holding the maintenance lease
//! cuts the tail with seal records (so every node holds the same segments
//! under the same ids), writes the one shared archive and decides
//! retention; when it dies another node takes over from the archive's
//! manifest. Checked against the archive's own files with DuckDB.

use crate::cluster::{applied, lease_holder_among, start_node_with, wait_applied, write};
use crate::nats::NatsCluster;
use crate::server::{python, sql, TestServer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node's segments as its catalog names them: id to (path, rows).
pub(crate) fn segments(data: &Path) -> BTreeMap<u64, (String, u64)> {
    let text = std::fs::read_to_string(data.join("catalog.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let id = s["id"].as_u64().unwrap();
            (
                id,
                (
                    s["path"].as_str().unwrap().to_string(),
                    s["rows"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The archive's manifest: (checkpoint, rows named, segment paths).
fn manifest(archive: &Path) -> (u64, u64, Vec<String>) {
    let text = std::fs::read_to_string(archive.join("manifest.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let segs = v["segments"].as_array().cloned().unwrap_or_default();
    (
        v["checkpoint_lsn"].as_u64().unwrap_or(0),
        segs.iter().map(|s| s["rows"].as_u64().unwrap()).sum(),
        segs.iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect(),
    )
}

/// Waits until `f` holds, or fails saying what it last saw and how the
/// nodes' logs end.
async fn until<T: std::fmt::Debug>(
    what: &str,
    nodes: &[TestServer],
    within: Duration,
    mut f: impl FnMut() -> (bool, T),
) {
    let deadline = Instant::now() + within;
    loop {
        let (ok, seen) = f();
        if ok {
            return;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let log = n.stderr_log();
                    let tail: Vec<&str> = log.lines().rev().take(25).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- {}\n{}", n.base, tail.join("\n"))
                })
                .collect();
            panic!(
                "{what} within {within:?}; last seen: {seen:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node's catalog names the same segments (holding
/// `rows` rows in all, when given).
async fn same_segments(nodes: &[TestServer], rows: Option<u64>) {
    let datas: Vec<_> = nodes.iter().map(|n| n.data_dir.clone()).collect();
    until(
        "every node holds the same segments",
        nodes,
        Duration::from_secs(30),
        || {
            let all: Vec<_> = datas.iter().map(|d| segments(d)).collect();
            let counts: Vec<u64> = all.iter().map(|s| s.values().map(|s| s.1).sum()).collect();
            let same = !all[0].is_empty() && all.iter().all(|s| *s == all[0]);
            (
                same && rows.is_none_or(|r| counts.iter().all(|&c| c == r)),
                counts,
            )
        },
    )
    .await;
}

/// Waits until the archive's manifest names `acked` events.
async fn archive_holds(nodes: &[TestServer], dir: &Path, acked: u64) {
    until(
        "the archive holds every event",
        nodes,
        Duration::from_secs(60),
        || {
            let m = manifest(dir);
            (m.1 == acked, m.1)
        },
    )
    .await;
}

/// Every node's SQL counts each acknowledged event once.
async fn every_node_counts(nodes: &[TestServer], acked: u64) {
    for n in nodes {
        let rows = sql(n, "select count(*) as n, count(distinct id) as ids from ev").await;
        assert_eq!(rows[0]["n"].as_u64(), Some(acked), "{}: {rows:?}", n.base);
        assert_eq!(rows[0]["ids"].as_u64(), Some(acked), "{}", n.base);
    }
}

/// Events with unique ids: half five days old (past the 72 h retention),
/// half two hours old.
fn body(batch: usize, n: usize) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (0..n)
        .map(|i| {
            let age_h = if i % 2 == 0 { 120 } else { 2 };
            let ts = now_ms - age_h * 3_600_000 - (i as i64 % 7) * 60_000;
            format!("{{\"ts\":{ts},\"id\":\"{batch}-{i}\",\"v\":{i}}}\n")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_archive_is_written_once_under_the_lease_and_taken_over() {
    let nats = NatsCluster::start_n(1).await;
    let archive = tempfile::tempdir().unwrap();
    let config = archive.path().with_extension("toml");
    std::fs::write(
        &config,
        "[archive]\nsettle_secs = 0\ninterval_secs = 1\n\n[retention]\nev = \"72h\"\n",
    )
    .unwrap();
    let flags = [
        "--cluster-replicas",
        "1",
        "--flush-interval",
        "1s",
        "--config",
        config.to_str().unwrap(),
    ];
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(start_node_with(&nats, id, archive.path(), None, &flags).await);
    }
    let client = reqwest::Client::new();
    let mut acked = 0u64;
    let mut last = 0;
    for batch in 0..12 {
        let base = &nodes[batch % 3].base;
        last = write(&client, base, &body(batch, 40), &format!("a{batch}"))
            .await
            .unwrap();
        acked += 40;
    }
    let holder = lease_holder_among(&nodes, &[0, 1, 2], Duration::from_secs(15)).await;

    // The archive holds every event once; every node holds the same
    // segments under the same ids, the old ones retired on all of them.
    let dir = archive.path().to_path_buf();
    archive_holds(&nodes, &dir, acked).await;
    for n in &nodes {
        wait_applied(n, last).await;
    }
    // Retention removes the five-day-old half, the same segments on every
    // node; the two-hour-old half stays.
    same_segments(&nodes, Some(acked / 2)).await;
    every_node_counts(&nodes, acked).await;
    let before = manifest(&dir).0;

    // The holder dies; another takes the lease and carries the archive on.
    let (data, tmp) = nodes[holder].kill9_keeping_data();
    let alive: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
    for batch in 12..24 {
        let base = &nodes[alive[batch % 2]].base;
        last = write(&client, base, &body(batch, 40), &format!("a{batch}"))
            .await
            .unwrap();
        acked += 40;
    }
    let t = Instant::now();
    let next = lease_holder_among(&nodes, &alive, Duration::from_secs(15)).await;
    println!("lease taken over in {:.1} s", t.elapsed().as_secs_f64());
    archive_holds(&nodes, &dir, acked).await;
    let (checkpoint, _, files) = manifest(&dir);
    assert!(
        checkpoint > before && checkpoint <= applied(&nodes[next]).await,
        "the new holder wrote the manifest: checkpoint {checkpoint}, {before} before"
    );
    // DuckDB over the files the manifest names: each event exactly once.
    let list: Vec<String> = files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let out = python(
        "import duckdb, json, sys\n\
         files = json.loads(sys.argv[1])\n\
         print(json.dumps(duckdb.connect().execute(\"select count(*), count(distinct id) from read_parquet(?, union_by_name = true)\", [files]).fetchone()))",
        &[&serde_json::to_string(&list).unwrap()],
    );
    let (n, ids): (u64, u64) = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((n, ids), (acked, acked), "the archive per DuckDB");

    // The dead node comes back and converges on the same segments.
    // `_tmp` holds the data directory until the end.
    let _tmp = tmp;
    nodes[holder] = start_node_with(
        &nats,
        ["a", "b", "c"][holder],
        archive.path(),
        Some(&data),
        &flags,
    )
    .await;
    for n in &nodes {
        wait_applied(n, last).await;
    }
    same_segments(&nodes, None).await;
    every_node_counts(&nodes, acked).await;
}
