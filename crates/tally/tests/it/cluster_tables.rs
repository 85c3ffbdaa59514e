//! Dimension tables in cluster mode: a table loaded through one node is
//! on every node (through the log), a bad body is refused before anything
//! is logged, a drop through another node drops it everywhere, and a
//! restarted node holds the newest version.

use crate::cluster::{settle, small_cluster, start_node_with};
use crate::server::{sql, TestServer};
use serde_json::Value;

async fn put(n: &TestServer, name: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(n.url(&format!("/v1/tables/{name}")))
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_loaded_through_one_node_is_on_every_node() {
    let (nats, archive, mut nodes) = small_cluster(&["a", "b", "c"], &[]).await;
    let flags = ["--cluster-replicas", "1"];
    let (st, v) = put(&nodes[0], "ports", "code,name\nNOOSL,Oslo\nDEHAM,Hamburg\n").await;
    assert_eq!(st, 200, "{v}");
    // A bad body: refused, nothing logged, the table as it was.
    let (st, v) = put(&nodes[1], "ports", "code,name\n\"unterminated\n").await;
    assert_eq!(st, 400, "{v}");
    // A newer version through b.
    let (st, v) = put(
        &nodes[1],
        "ports",
        "code,name\nNOOSL,Oslo\nDEHAM,Hamburg\nNLRTM,Rotterdam\n",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = put(&nodes[2], "regions", "code,name\nEU,Europe\n").await;
    assert_eq!(st, 200, "{v}");
    settle(&nodes).await;
    let q = "SELECT code, name FROM tables.ports ORDER BY code";
    let want = sql(&nodes[0], q).await;
    assert_eq!(want.len(), 3, "{want:?}");
    for n in &nodes {
        assert_eq!(sql(n, q).await, want, "{}", n.base);
        assert_eq!(
            sql(n, "SELECT count(*) AS n FROM tables.regions").await[0]["n"],
            1
        );
    }
    // Dropped through c: gone everywhere.
    let r = reqwest::Client::new()
        .delete(nodes[2].url("/v1/tables/regions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    settle(&nodes).await;
    for n in &nodes {
        let (st, _) = crate::server::get_json(&n.url("/v1/tables/regions")).await;
        assert_eq!(st, 404, "{}", n.base);
    }
    // A node restarted on its disk holds the newest version.
    let (data, _keep) = nodes[0].kill9_keeping_data();
    nodes[0] = start_node_with(&nats, "a", archive.path(), Some(&data), &flags).await;
    settle(&nodes).await;
    assert_eq!(sql(&nodes[0], q).await, want);
}
