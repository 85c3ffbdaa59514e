//! Elastic and upgradeable behind a real load balancer: HAProxy, with the
//! shipped `deploy/haproxy/haproxy.cfg`, in front of tally nodes in
//! cluster mode, with clients writing and reading through it the whole
//! time while a node is added, one removed, and every node restarted one
//! after another (a rolling upgrade). No request may fail (a client may
//! send a request again, with the same `Idempotency-Key`, when its
//! connection was closed under it), and every acknowledged event is stored
//! exactly once.

use crate::cluster::{start_node_with, wait_applied};
use crate::haproxy::Haproxy;
use crate::nats::{free_port, NatsCluster};
use crate::server::{metrics_text, sql, TestServer};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Health checks every 250 ms, two to change state: a node is out of
/// rotation within about half a second of `/readyz` turning 503, well
/// inside its drain delay.
const CHECK_INTERVAL: &str = "250ms";
const DRAIN_DELAY: &str = "1500ms";

/// What the clients saw.
#[derive(Default)]
struct Tally {
    acked_events: AtomicU64,
    max_seq: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    /// Requests sent again after their connection closed.
    resent: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

const EVENTS_PER_WRITE: u64 = 20;

/// Sends the request `make` builds; when the connection closes under it
/// (no answer), sends it again (up to 5 times), as a client may.
async fn resending(
    t: &Tally,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, String> {
    let mut sent = 0;
    loop {
        sent += 1;
        match make().timeout(Duration::from_secs(30)).send().await {
            Err(e) if !e.is_timeout() && sent < 5 => {
                t.resent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("{e:?}")),
            Ok(r) => return Ok(r),
        }
    }
}

async fn writer(w: usize, base: String, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let client = reqwest::Client::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{w}-{i}");
        let body: String = (0..EVENTS_PER_WRITE)
            .map(|k| format!("{{\"id\":\"{key}-{k}\",\"v\":{k}}}\n"))
            .collect();
        // Sent again under the same key: stored once.
        let r = resending(&t, || {
            client
                .post(format!("{base}/v1/events/ev"))
                .header("content-type", "application/x-ndjson")
                .header("idempotency-key", &key)
                .body(body.clone())
        })
        .await;
        let outcome = match r {
            Err(e) => Err(e),
            Ok(r) => {
                let status = r.status().as_u16();
                let seq = r
                    .headers()
                    .get("tally-seq")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let text = r.text().await.unwrap_or_default();
                match (status, seq) {
                    (200, Some(seq)) => Ok(seq),
                    _ => Err(format!("{status} {text}")),
                }
            }
        };
        match outcome {
            Ok(seq) => {
                // The sequence first: a reader that sees these events
                // counted also sees a sequence covering them.
                t.max_seq.fetch_max(seq, Ordering::SeqCst);
                t.acked_events.fetch_add(EVENTS_PER_WRITE, Ordering::SeqCst);
                t.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => t.failures.lock().unwrap().push(format!("write {key}: {e}")),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads through the balancer that must see every write acknowledged
/// before they were sent (`Tally-Min-Seq`), whichever node answers.
async fn reader(base: String, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let acked = t.acked_events.load(Ordering::SeqCst);
        let seq = t.max_seq.load(Ordering::SeqCst);
        let r = resending(&t, || {
            client
                .post(format!("{base}/v1/sql"))
                .header("content-type", "application/json")
                .header("tally-min-seq", seq.to_string())
                .body(r#"{"sql":"select count(*) as n from ev"}"#)
        })
        .await;
        let outcome = match r {
            Err(e) => Err(format!("read: {e}")),
            Ok(r) => {
                let status = r.status().as_u16();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                match (status, v["rows"][0]["n"].as_u64()) {
                    (200, Some(n)) if n >= acked => Ok(()),
                    _ => Err(format!(
                        "read after seq {seq} ({acked} events acknowledged): {status} {v}"
                    )),
                }
            }
        };
        match outcome {
            Ok(()) => {
                t.reads.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => t.failures.lock().unwrap().push(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node(
    nats: &NatsCluster,
    id: &str,
    archive: &Path,
    port: u16,
    data: Option<&Path>,
) -> TestServer {
    let listen = format!("127.0.0.1:{port}");
    let flags = [
        "--cluster-replicas",
        "1",
        "--listen",
        &listen,
        "--drain-delay",
        DRAIN_DELAY,
    ];
    start_node_with(nats, id, archive, data, &flags).await
}

/// SIGTERM, off the runtime (it waits for the exit), which must be clean.
async fn stop(mut n: TestServer) -> (std::path::PathBuf, Option<tempfile::TempDir>) {
    let (n, status) = tokio::task::spawn_blocking(move || {
        let s = n.terminate();
        (n, s)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}: {}", n.stderr_log());
    let mut n = n;
    n.kill9_keeping_data()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_haproxy_nodes_join_leave_and_restart_one_by_one_without_a_failed_request() {
    let nats = NatsCluster::start_n(1).await;
    let archive = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c", "d"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut nodes: Vec<Option<TestServer>> = Vec::new();
    for i in 0..3 {
        nodes.push(Some(
            node(&nats, names[i], archive.path(), ports[i], None).await,
        ));
    }
    nodes.push(None);
    let servers: Vec<(&str, u16)> = names.iter().copied().zip(ports.iter().copied()).collect();
    let lb = Haproxy::start(free_port(), &servers, CHECK_INTERVAL).await;
    // HAProxy counts a server up until its checks fail: start once it
    // has found d's slot empty.
    for n in &names[..3] {
        lb.wait_state(n, "UP").await;
    }
    lb.wait_state("d", "DOWN").await;

    let stop_flag = Arc::new(AtomicBool::new(false));
    let t = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for w in 0..3 {
        clients.push(tokio::spawn(writer(
            w,
            lb.base.clone(),
            stop_flag.clone(),
            t.clone(),
        )));
    }
    // Readers once the stream exists.
    let started = Instant::now();
    while t.writes.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no write went through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..2 {
        clients.push(tokio::spawn(reader(
            lb.base.clone(),
            stop_flag.clone(),
            t.clone(),
        )));
    }
    let progress = |what: &str| {
        eprintln!(
            "{what} at {:.1} s: {} writes, {} reads, {} resent, {} failed",
            started.elapsed().as_secs_f64(),
            t.writes.load(Ordering::Relaxed),
            t.reads.load(Ordering::Relaxed),
            t.resent.load(Ordering::Relaxed),
            t.failures.lock().unwrap().len()
        )
    };
    // Some traffic, then: a node joins on an empty disk and takes traffic
    // once ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served_before = |name: &str| {
        lb.servers()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map_or(0, |(_, _, total)| total)
    };
    nodes[3] = Some(node(&nats, "d", archive.path(), ports[3], None).await);
    lb.wait_state("d", "UP").await;
    let joined = served_before("d");
    let t0 = Instant::now();
    while served_before("d") <= joined {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "d took no traffic: {:?}",
            lb.servers()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress("d joined");

    // A node leaves: it drains, and HAProxy takes it out before it stops.
    let (_, a_tmp) = stop(nodes[0].take().unwrap()).await;
    drop(a_tmp);
    lb.wait_state("a", "DOWN").await;
    progress("a left");

    // A rolling upgrade: each node stops and starts again on its disk,
    // the next once it is back in rotation.
    for i in 1..4 {
        let (data, tmp) = stop(nodes[i].take().unwrap()).await;
        lb.wait_state(names[i], "DOWN").await;
        nodes[i] = Some(node(&nats, names[i], archive.path(), ports[i], Some(&data)).await);
        lb.wait_state(names[i], "UP").await;
        // The temporary directory lives on with the node.
        std::mem::forget(tmp);
        progress(&format!("{} restarted", names[i]));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_flag.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    progress("done");

    let failures = t.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:#?}\nhaproxy: {}",
        failures.len(),
        &failures[..failures.len().min(10)],
        lb.log()
    );
    let acked = t.acked_events.load(Ordering::SeqCst);
    let seq = t.max_seq.load(Ordering::SeqCst);
    assert!(t.reads.load(Ordering::Relaxed) > 0 && acked > 0);
    // Every write was acknowledged (none failed); each is stored once on
    // every node still running.
    for n in nodes.iter().flatten() {
        wait_applied(n, seq).await;
        let r = sql(n, "select count(*) as n, count(distinct id) as ids from ev").await;
        assert_eq!(
            (r[0]["n"].as_u64(), r[0]["ids"].as_u64()),
            (Some(acked), Some(acked)),
            "{}",
            n.base
        );
    }
    // What the cluster alert rules read, a node exports.
    let m = metrics_text(nodes[1].as_ref().unwrap()).await;
    crate::ops::rules_pass_promtool_and_name_series("tally-cluster-rules", &m);
    assert!(
        m.contains("tally_draining 0"),
        "a started node is not draining"
    );
}

/// Told to stop, a node says "not ready" at once but serves reads and
/// writes for its drain delay, then exits cleanly; a second signal cuts
/// the delay short.
#[tokio::test]
async fn a_node_told_to_stop_is_not_ready_but_serves_until_its_drain_delay_ends() {
    for second_signal in [false, true] {
        let mut s = TestServer::builder()
            .args(["--drain-delay", "3s"])
            .start()
            .await;
        let client = reqwest::Client::new();
        let write = |n: usize| {
            client
                .post(s.url("/v1/events/drain"))
                .body(format!("{{\"n\":{n}}}"))
                .send()
        };
        assert_eq!(write(0).await.unwrap().status(), 200);
        s.signal(libc::SIGTERM);
        let told = Instant::now();
        let ready = loop {
            let r = client.get(s.url("/readyz")).send().await.unwrap();
            if r.status() != 200 {
                break r;
            }
            assert!(
                told.elapsed() < Duration::from_secs(2),
                "/readyz stayed 200"
            );
        };
        assert_eq!(ready.status(), 503);
        assert!(ready.headers().contains_key("retry-after"));
        let body = ready.text().await.unwrap();
        assert!(body.contains("draining"), "{body}");
        // Still serving: a write, a read, the metrics.
        assert_eq!(write(1).await.unwrap().status(), 200);
        let r = sql(&s, "select count(*) as n from drain").await;
        assert_eq!(r[0]["n"].as_u64(), Some(2));
        assert!(metrics_text(&s).await.contains("tally_draining 1"));
        if second_signal {
            s.signal(libc::SIGTERM);
        }
        let status = tokio::task::spawn_blocking(move || {
            let status = s.wait_exit();
            (s, status)
        })
        .await
        .unwrap();
        let took = told.elapsed();
        assert!(status.1.success(), "{:?}", status.1);
        if second_signal {
            assert!(took < Duration::from_millis(2500), "cut short: {took:?}");
        } else {
            assert!(took >= Duration::from_secs(3), "drained: {took:?}");
        }
    }
}
