//! A replica region: a NATS server with its own JetStream domain, joined
//! to the home region's as a leaf node, holding a mirror of the home
//! stream, and a tally node there reading it. While the home region takes
//! writes, the replica's staleness stays within 2 s (p99); its SQL answers
//! and counter value catch up with the home's; a write through the
//! replica is forwarded to the home stream, and the counter's
//! once-per-window rule holds across regions. Then the home region is
//! lost (its NATS server and node killed) and the region is promoted:
//! it keeps every record it held and takes writes itself.

use crate::cluster::{applied, start_node_with, wait_applied, write};
use crate::counter::Tab;
use crate::nats::{free_port, NatsCluster};
use crate::server::{sql, TestServer};
use std::process::Command;
use std::time::{Duration, Instant};

const COUNT: &str = "select count(*) as n, count(distinct id) as ids from ev";

async fn staleness_ms(n: &TestServer) -> u64 {
    let (st, v) = crate::server::get_json(&n.url("/v1/cluster")).await;
    assert_eq!(st, 200, "{v}");
    v["staleness_ms"].as_u64().unwrap()
}

/// `tally cluster promote` on `nats`: its exit status and what it printed.
fn promote(nats: &NatsCluster, more: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["cluster", "promote", "--cluster", &nats.urls()])
        .args(more)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn batch(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| format!("{{\"id\":{i},\"v\":{}}}\n", i % 7))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_region_reads_within_two_seconds_forwards_writes_and_is_promoted_when_home_is_lost(
) {
    let leaf = free_port();
    let mut home_nats = NatsCluster::start_with(
        1,
        "domain: home",
        &format!("leafnodes {{ listen: 127.0.0.1:{leaf} }}"),
    )
    .await;
    let region_nats = NatsCluster::start_with(
        1,
        "domain: eu",
        &format!("leafnodes {{ remotes: [ {{ url: \"nats://127.0.0.1:{leaf}\" }} ] }}"),
    )
    .await;
    let archive = tempfile::tempdir().unwrap();
    let common = [
        "--cluster-replicas",
        "1",
        "--cluster-publish-timeout",
        "4s",
        "--web-site",
        "region.example",
    ];
    let mut home = start_node_with(&home_nats, "home-a", archive.path(), None, &common).await;
    // Events and a bootstrap checkpoint before the region exists: its
    // first node starts from the checkpoint, ahead of the mirror it makes
    // (which copies from the first record), and waits for the mirror.
    let client = reqwest::Client::new();
    let early = write(&client, &home.base, &batch(1_000_000, 100), "early")
        .await
        .expect("a write at home");
    crate::cluster::lease_holder_among(std::slice::from_ref(&home), &[0], Duration::from_secs(15))
        .await;
    let r = client
        .post(home.url("/v1/admin/checkpoint"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["uploaded"]["seq"].as_u64() >= Some(early), "{v}");
    let mut region_flags = common.to_vec();
    region_flags.extend(["--cluster-home-domain", "home"]);
    let mut replica =
        start_node_with(&region_nats, "eu-a", archive.path(), None, &region_flags).await;
    let (_, status) = crate::server::get_json(&replica.url("/v1/cluster")).await;
    assert_eq!(status["home_domain"], "home", "{status}");
    assert_eq!(status["leases"][0]["held"], false, "{status}");

    // A user registered at home increments once; the replica's value and
    // session catch up.
    let mut tab = Tab::open(&home).await;
    let r = tab.register("traveller", "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = tab.inc("main").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Writes at home for 8 s; the replica's staleness sampled meanwhile.
    let writer = {
        let (client, base) = (client.clone(), home.base.clone());
        tokio::spawn(async move {
            let (mut next, mut acked, mut last_seq) = (0u64, 0u64, 0u64);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(8) {
                let body = batch(next, 200);
                let seq = write(&client, &base, &body, &format!("home-{next}"))
                    .await
                    .expect("a write at home");
                next += 200;
                acked += 200;
                last_seq = seq;
            }
            (next, acked, last_seq)
        })
    };
    let mut samples = Vec::new();
    let mut header_seen = false;
    while !writer.is_finished() {
        samples.push(staleness_ms(&replica).await);
        if !header_seen {
            let r = client
                .post(replica.url("/v1/sql"))
                .json(&serde_json::json!({ "sql": COUNT }))
                .send()
                .await
                .unwrap();
            header_seen = r.headers().contains_key("tally-staleness");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut next, acked, last_seq) = writer.await.unwrap();
    samples.sort_unstable();
    let p99 = samples[(samples.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "replica staleness over {} samples: p50 {} ms, p99 {p99} ms, max {} ms; {acked} events acknowledged at home",
        samples.len(),
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    assert!(samples.len() >= 40, "{} samples", samples.len());
    assert!(
        p99 <= 2000,
        "replica staleness p99 {p99} ms over 2 s: {samples:?}"
    );
    assert!(header_seen, "a replica's read carries Tally-Staleness");

    // Caught up: the same answers as home.
    wait_applied(&replica, last_seq).await;
    let acked = acked + 100;
    let want = sql(&home, COUNT).await;
    assert_eq!(want[0]["n"], acked, "{want:?}");
    assert_eq!(want[0]["ids"], acked, "{want:?}");
    assert_eq!(sql(&replica, COUNT).await, want);
    let value = |n: &TestServer| {
        let url = n.url("/getvalue");
        async move {
            let (st, v) = crate::server::get_json(&url).await;
            assert_eq!(st, 200, "{v}");
            v
        }
    };
    assert_eq!(value(&replica).await["value"], 1);
    assert_eq!(value(&home).await["value"], 1);

    // A write through the replica is forwarded to the home stream, and
    // answered once the replica has applied it from its mirror.
    let seq = write(&client, &replica.base, &batch(next, 50), "eu-1")
        .await
        .expect("a write through the replica");
    next += 50;
    wait_applied(&home, seq).await;
    assert_eq!(sql(&home, COUNT).await[0]["n"], acked + 50);
    assert_eq!(sql(&replica, COUNT).await[0]["n"], acked + 50);
    // A tracker event through the replica goes to the home region's visit
    // writer, through the leaf node.
    let r = client
        .post(replica.url("/api/event"))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        )
        .header("x-forwarded-for", "203.0.113.50")
        .header("content-type", "text/plain")
        .body(r#"{"n":"pageview","u":"https://region.example/","d":"region.example"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_applied(&home, applied(&replica).await).await;
    let (st, v) =
        crate::server::get_json(&home.url(
            "/api/v1/stats/aggregate?site_id=region.example&period=day&metrics=pageviews,visits",
        ))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"]["pageviews"]["value"], 1, "{v}");
    // The counter's rule is the home region's: another user's first
    // click through the replica counts, a second one through home in the
    // same window does not, nor does the first user's through the replica.
    let mut eu_tab = Tab::open(&replica).await;
    let r = eu_tab.register("local", "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = eu_tab.inc("main").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at_home = applied(&replica).await;
    wait_applied(&home, at_home).await;
    let mut again = eu_tab.clone();
    again.reopen(&home);
    let r = again.inc("main").await;
    assert_ne!(r.status, 200, "a second click in the window: {}", r.body);
    let mut first = tab.clone();
    first.reopen(&replica);
    let r = first.inc("main").await;
    assert_ne!(r.status, 200, "a second click in the window: {}", r.body);
    assert_eq!(value(&replica).await["value"], 2);

    // Promotion is refused while the home region still answers.
    let (ok, text) = promote(&region_nats, &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("still answers"), "{text}");

    // The home region is lost.
    let held = applied(&home).await;
    wait_applied(&replica, held).await;
    drop(home.kill9_keeping_data());
    home_nats.servers[0].kill9();
    // The replica still answers reads, says how stale it is, and refuses
    // writes with where they go.
    assert_eq!(sql(&replica, COUNT).await[0]["n"], acked + 50);
    let r = client
        .post(replica.url("/v1/events/ev"))
        .header("content-type", "application/x-ndjson")
        .body(batch(next, 10))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("home region"), "{text}");
    assert!(staleness_ms(&replica).await >= 2000);

    // Promoted: the region keeps every record under its sequence and
    // takes writes; its node restarts as a home node.
    let (ok, text) = promote(&region_nats, &[]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("sequence {held}")), "{text}");
    let (data, _keep) = replica.kill9_keeping_data();
    // Still a replica by its flags: refused, naming what to do.
    let refused = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--cluster", &region_nats.urls(), "--node-id", "eu-a"])
        .args(["--archive", &archive.path().display().to_string()])
        .args(&region_flags)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("without --cluster-home-domain"), "{said}");
    replica = start_node_with(&region_nats, "eu-a", archive.path(), Some(&data), &common).await;
    // It carries on from the records it held (as the home node now, it
    // may already have appended a seal of its own).
    assert!(applied(&replica).await >= held);
    let seq = write(&client, &replica.base, &batch(next, 25), "eu-2")
        .await
        .expect("a write after promotion");
    assert!(seq > held, "{seq} after {held}");
    let rows = sql(&replica, COUNT).await;
    assert_eq!(rows[0]["n"], acked + 75, "{rows:?}");
    assert_eq!(rows[0]["ids"], acked + 75, "{rows:?}");
    // Accounts carried over; the counter takes new windows' clicks.
    let mut tab = Tab::open(&replica).await;
    let r = tab.login("traveller", "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(value(&replica).await["value"], 2);
    let (_, status) = crate::server::get_json(&replica.url("/v1/cluster")).await;
    assert!(status.get("home_domain").is_none(), "{status}");
}

/// The NATS configurations `deploy/nats/` ships parse, the home region's
/// with its region lines (domain, leaf node port) turned on too.
#[test]
fn the_shipped_nats_configurations_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let home = std::fs::read_to_string(root.join("deploy/nats/nats-server.conf")).unwrap();
    let mut in_leafnodes = false;
    let with_region: String = home
        .lines()
        .map(|l| {
            in_leafnodes |= l == "# leafnodes {";
            let on = in_leafnodes || l.trim_start() == "# domain: home";
            if l == "# }" {
                in_leafnodes = false;
            }
            match on {
                true => l.replacen("# ", "", 1),
                false => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(with_region.contains("\n  domain: home") && with_region.contains("\nleafnodes {"));
    let home_region = dir.path().join("home-region.conf");
    std::fs::write(&home_region, with_region).unwrap();
    for conf in [
        root.join("deploy/nats/nats-server.conf"),
        home_region,
        root.join("deploy/nats/region.conf"),
    ] {
        let out = Command::new("nats-server")
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("nats-server (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{}: {}",
            conf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
