//! Web analytics in cluster mode: a day's salt is the same on every node
//! (the first to need it puts it in a shared key-value bucket), so one
//! visitor's page views through different nodes are one visitor.

use crate::cluster::{applied, small_cluster, wait_applied};
use crate::server::get_json;

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_through_two_nodes_is_one_visitor() {
    let (_nats, _archive, nodes) = small_cluster(&["a", "b"], &["--web-site", "example.com"]).await;
    // The same browser and address, through a then b (and both at once),
    // and a second visitor on b.
    let client = reqwest::Client::new();
    let send = |base: String, ip: &'static str, page: usize| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("{base}/api/event"))
                .header("user-agent", CHROME)
                .header("x-forwarded-for", ip)
                .header("content-type", "text/plain")
                .body(format!(
                    r#"{{"n":"pageview","u":"https://example.com/p{page}","d":"example.com"}}"#
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    let (a, b) = (nodes[0].base.clone(), nodes[1].base.clone());
    tokio::join!(
        send(a.clone(), "203.0.113.7", 1),
        send(b.clone(), "203.0.113.7", 2)
    );
    send(a, "203.0.113.7", 3).await;
    send(b.clone(), "203.0.113.7", 4).await;
    send(b, "198.51.100.9", 5).await;
    let seq = applied(&nodes[0]).await.max(applied(&nodes[1]).await);
    for n in &nodes {
        wait_applied(n, seq).await;
        let (st, v) = get_json(&n.url(
            "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=visitors,pageviews",
        ))
        .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["results"]["pageviews"]["value"], 5, "{}: {v}", n.base);
        assert_eq!(v["results"]["visitors"]["value"], 2, "{}: {v}", n.base);
    }
}
