//! Batch imports in cluster mode: staged through one node, the files go to
//! the shared archive and every node adopts them; a retry through another
//! node imports nothing more; a node killed mid-import leaves nothing, and
//! the batch retried elsewhere is there exactly once on every node.

use crate::cluster::{small_cluster, start_node_with, wait_applied};
use crate::cluster_archive::segments;
use crate::server::sql;
use serde_json::Value;
use std::time::{Duration, Instant};

/// NDJSON rows `prefix-0 …`, over three hours of 2023-11-14.
fn rows(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            let ts = 1_699_920_000_000i64 + (i as i64 % 3) * 3_600_000 + i as i64;
            format!(
                "{{\"ts\":{ts},\"id\":\"{prefix}-{i}\",\"v\":{}}}\n",
                i % 100
            )
        })
        .collect()
}

async fn import(client: &reqwest::Client, base: &str, batch: &str, body: String) -> Value {
    let r = client
        .post(format!("{base}/v1/import/imp?batch_id={batch}"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_through_one_node_is_on_every_node_once_even_when_its_node_dies() {
    let (nats, archive, mut nodes) = small_cluster(&["a", "b", "c"], &[]).await;
    let flags = ["--cluster-replicas", "1"];
    let client = reqwest::Client::new();
    let count = "select count(*) as n, count(distinct id) as ids from imp";

    // Through a, seen on every node.
    let v = import(&client, &nodes[0].base, "one", rows("one", 6000)).await;
    assert_eq!(
        (v["outcome"].as_str(), v["rows"].as_u64()),
        (Some("committed"), Some(6000)),
        "{v}"
    );
    let seq = v["seq"].as_u64().unwrap();
    for n in &nodes {
        wait_applied(n, seq).await;
        let r = sql(n, count).await;
        assert_eq!(
            (r[0]["n"].as_u64(), r[0]["ids"].as_u64()),
            (Some(6000), Some(6000)),
            "{}",
            n.base
        );
    }
    // Retried through b: recognised, nothing more stored.
    let v = import(&client, &nodes[1].base, "one", rows("one", 6000)).await;
    assert_eq!(v["outcome"], "already_imported", "{v}");
    assert_eq!(v["rows"].as_u64(), Some(6000));

    // Through c, which dies halfway through the upload.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let url = nodes[2].url("/v1/import/imp?batch_id=two");
    let cut = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
    });
    let two = rows("two", 200_000);
    let half: Vec<&str> = two.lines().take(100_000).collect();
    for chunk in half.chunks(5000) {
        let mut piece = chunk.join("\n");
        piece.push('\n');
        tx.send(Ok(piece.into_bytes())).await.unwrap();
    }
    // Once it has staged a part, it dies.
    let staged = nodes[2].data_dir.join("imports/two");
    let t = Instant::now();
    while !staged.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "c staged nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (data, tmp) = nodes[2].kill9_keeping_data();
    drop(tx);
    assert!(cut.await.unwrap().is_err(), "the cut upload got an answer");

    // Retried through a: imported once, on every node (c too, restarted).
    let v = import(&client, &nodes[0].base, "two", two).await;
    assert_eq!(
        (v["outcome"].as_str(), v["rows"].as_u64()),
        (Some("committed"), Some(200_000)),
        "{v}"
    );
    let seq = v["seq"].as_u64().unwrap();
    nodes[2] = start_node_with(&nats, "c", archive.path(), Some(&data), &flags).await;
    assert!(!staged.exists(), "c's own staged part is gone");
    for n in &nodes {
        wait_applied(n, seq).await;
        let r = sql(n, count).await;
        assert_eq!(
            (r[0]["n"].as_u64(), r[0]["ids"].as_u64()),
            (Some(206_000), Some(206_000)),
            "{}",
            n.base
        );
    }
    // The same segments, under the same ids, on every node.
    let imp = |d: &std::path::Path| {
        segments(d)
            .into_iter()
            .filter(|(_, (path, _))| path.starts_with("segments/imp/"))
            .collect::<Vec<_>>()
    };
    let t = Instant::now();
    loop {
        let all: Vec<_> = nodes.iter().map(|n| imp(&n.data_dir)).collect();
        if !all[0].is_empty() && all.iter().all(|s| *s == all[0]) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tmp);
}
