//! Scheduled jobs in cluster mode: each window runs once in the cluster,
//! on the node holding the maintenance lease, and is taken over when that
//! node dies, without a window committed twice or skipped; every node
//! holds the same job table, and its rows equal what SQL counts over the
//! events.

use crate::cluster::{applied, start_node_with, wait_applied};
use crate::nats::NatsCluster;
use crate::server::{get_json, post, sql, TestServer};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Seconds of events the job's windows cover.
const SECONDS: i64 = 240;

/// The node holding the maintenance lease, as it says itself.
async fn holder(nodes: &[Option<TestServer>]) -> Option<usize> {
    for (i, n) in nodes.iter().enumerate() {
        if let Some(n) = n {
            let (_, v) = get_json(&n.url("/v1/cluster")).await;
            if v["leases"][0]["held"] == true {
                return Some(i);
            }
        }
    }
    None
}

async fn committed_windows(n: &TestServer) -> u64 {
    let (st, v) = get_json(&n.url("/v1/jobs/per_sec")).await;
    assert_eq!(st, 200, "{v}");
    v["runs_ok"].as_u64().unwrap_or(0)
}

async fn node(
    nats: &NatsCluster,
    id: &str,
    archive: &Path,
    data: Option<&Path>,
    config: Option<&Path>,
) -> TestServer {
    let mut flags = vec!["--cluster-replicas".to_string(), "1".into()];
    if let Some(c) = config {
        flags.push("--config".into());
        flags.push(c.display().to_string());
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_node_with(nats, id, archive, data, &flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_window_runs_once_in_the_cluster_while_the_node_running_jobs_is_killed() {
    let nats = NatsCluster::start_n(1).await;
    let archive = tempfile::tempdir().unwrap();
    let ids = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(Some(node(&nats, id, archive.path(), None, None).await));
    }
    // Events over SECONDS whole seconds in the past, 1 + (s % 5) a second.
    let now_s = chrono::Utc::now().timestamp();
    let t0 = now_s - SECONDS - 120;
    let mut body = String::new();
    for s in 0..SECONDS {
        for k in 0..=(s % 5) {
            let ts = (t0 + s) * 1000 + k * 100;
            body.push_str(&format!("{{\"ts\":{ts},\"v\":{}}}\n", (s * 7 + k) % 11));
        }
    }
    let a = nodes[0].as_ref().unwrap();
    let (st, v) = post(&a.url("/v1/events/ev"), Some("application/x-ndjson"), body).await;
    assert_eq!(st, 200, "{v}");

    // Every node again, now with the job (it reads a stream that exists).
    let config = archive.path().join("../jobs.toml");
    let start = chrono::DateTime::from_timestamp(t0, 0)
        .unwrap()
        .to_rfc3339();
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"per_sec\"\nevery = \"1s\"\nstart = \"{start}\"\n\
             sql = \"SELECT count(*) AS n, sum(v) AS v FROM ev WHERE ts >= $window_start AND ts < $window_end\"\n"
        ),
    )
    .unwrap();
    let mut dirs = Vec::new();
    for n in nodes.iter_mut() {
        let mut s = n.take().unwrap();
        let status = tokio::task::block_in_place(|| s.terminate());
        assert!(status.success());
        dirs.push(s.kill9_keeping_data());
    }
    for (i, id) in ids.iter().enumerate() {
        nodes[i] = Some(node(&nats, id, archive.path(), Some(&dirs[i].0), Some(&config)).await);
    }

    // Once a third of the windows are committed, the node running them dies.
    let t = Instant::now();
    while committed_windows(nodes[1].as_ref().unwrap()).await < SECONDS as u64 / 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "the job did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = holder(&nodes).await.expect("a holder");
    let at_kill = committed_windows(nodes[(killed + 1) % 3].as_ref().unwrap()).await;
    let (data, _keep) = nodes[killed].as_mut().unwrap().kill9_keeping_data();
    nodes[killed] = None;
    eprintln!("killed {} after {at_kill} windows", ids[killed]);
    assert!(at_kill < SECONDS as u64, "every window ran before the kill");

    // Another node takes over and runs the rest.
    let other = (killed + 1) % 3;
    let t = Instant::now();
    loop {
        let (_, v) = get_json(&nodes[other].as_ref().unwrap().url("/v1/jobs/per_sec")).await;
        let done = v["completed_until"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(0, |t| t.timestamp());
        if done >= t0 + SECONDS {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "stuck at {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes[killed] = Some(
        node(
            &nats,
            ids[killed],
            archive.path(),
            Some(&data),
            Some(&config),
        )
        .await,
    );
    let seq = applied(nodes[other].as_ref().unwrap()).await;

    let mut tables = Vec::new();
    for n in nodes.iter().flatten() {
        wait_applied(n, seq).await;
        // Each committed window this node applied moved the job on by
        // exactly one window: none was committed twice, none skipped.
        let (_, v) = get_json(&n.url("/v1/jobs/per_sec")).await;
        let t = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap())
                .unwrap()
                .timestamp()
        };
        assert_eq!(t("first_window"), t0, "{v}");
        let done = t("completed_until");
        assert!(done >= t0 + SECONDS, "{v}");
        assert_eq!(v["runs_ok"].as_i64(), Some(done - t0), "{}: {v}", n.base);
        // The job's table equals what SQL counts second by second.
        let in_range = |rows: Vec<Value>| -> Vec<Value> {
            rows.into_iter()
                .filter(|r| (t0..t0 + SECONDS).contains(&r["s"].as_i64().unwrap()))
                .collect()
        };
        let table = in_range(
            sql(
                n,
                "SELECT CAST(to_unixtime(window_start) AS BIGINT) AS s, n, v FROM jobs.per_sec ORDER BY s",
            )
            .await,
        );
        let counted = in_range(
            sql(
                n,
                "SELECT CAST(to_unixtime(date_trunc('second', ts)) AS BIGINT) AS s, count(*) AS n, sum(v) AS v \
                 FROM ev GROUP BY 1 ORDER BY 1",
            )
            .await,
        );
        assert_eq!(table.len(), SECONDS as usize, "{}", n.base);
        assert_eq!(table, counted, "{}", n.base);
        tables.push(table);
    }
    assert!(tables.windows(2).all(|w| w[0] == w[1]));
    let status = get_json(&nodes[other].as_ref().unwrap().url("/v1/jobs/per_sec"))
        .await
        .1;
    let runners: std::collections::BTreeSet<String> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["note"].as_str().map(str::to_string))
        .collect();
    // The newest windows were run by a node that took over.
    assert!(
        !runners.is_empty() && !runners.contains(&format!("run by node {}", ids[killed])),
        "{runners:?}"
    );
}
