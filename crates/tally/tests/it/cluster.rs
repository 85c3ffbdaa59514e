//! Cluster mode against real `nats-server` processes: three NATS servers
//! clustered on loopback (JetStream, `sync_interval: always`, an R3
//! stream) and tally nodes on them. Writers on every node while a NATS
//! server is killed, another paused, and a tally node killed; afterwards
//! every acknowledged event is on every node exactly once, and the nodes'
//! answers agree with each other and with DuckDB's over the acknowledged
//! events.

use crate::nats::NatsCluster;
use crate::server::{get_json, python, sql, TestServer};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn start_node(
    nats: &NatsCluster,
    id: &str,
    archive: &Path,
    data: Option<&Path>,
) -> TestServer {
    start_node_with(nats, id, archive, data, &[]).await
}

/// A tally node on `nats`, with its archive at `archive`, more flags after.
pub(crate) async fn start_node_with(
    nats: &NatsCluster,
    id: &str,
    archive: &Path,
    data: Option<&Path>,
    more: &[&str],
) -> TestServer {
    let mut b = TestServer::builder().args([
        "--cluster".to_string(),
        nats.urls(),
        "--node-id".into(),
        id.into(),
        "--archive".into(),
        archive.display().to_string(),
        "--cluster-max-bytes".into(),
        "256MiB".into(),
        "--cluster-lease-ttl".into(),
        "3s".into(),
    ]);
    b = b.args(more.iter().map(|s| s.to_string()));
    if let Some(d) = data {
        b = b.data_dir(d);
    }
    b.start().await
}

/// One NATS server and a node for each of `ids` on it (single-replica
/// stream), sharing one archive: the small cluster most tests need.
pub(crate) async fn small_cluster(
    ids: &[&str],
    more: &[&str],
) -> (NatsCluster, tempfile::TempDir, Vec<TestServer>) {
    let nats = NatsCluster::start_n(1).await;
    let archive = tempfile::tempdir().unwrap();
    let mut flags = vec!["--cluster-replicas", "1"];
    flags.extend_from_slice(more);
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start_node_with(&nats, id, archive.path(), None, &flags).await);
    }
    (nats, archive, nodes)
}

/// Posts NDJSON to `base` with an idempotency key; the sequence when 200.
pub(crate) async fn write(
    client: &reqwest::Client,
    base: &str,
    body: &str,
    key: &str,
) -> Result<u64, String> {
    let r = client
        .post(format!("{base}/v1/events/ev"))
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", key)
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let seq = r
        .headers()
        .get("tally-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = r.text().await.unwrap_or_default();
    match (status, seq) {
        (200, Some(seq)) => Ok(seq),
        _ => Err(format!("{status} {text}")),
    }
}

pub(crate) async fn applied(s: &TestServer) -> u64 {
    let (st, v) = get_json(&s.url("/v1/cluster")).await;
    assert_eq!(st, 200, "{v}");
    v["applied_seq"].as_u64().unwrap()
}

pub(crate) async fn wait_applied(s: &TestServer, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied(s).await < seq {
        if Instant::now() >= deadline {
            let (_, status) = get_json(&s.url("/v1/cluster")).await;
            let log = s.stderr_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "{} did not apply {seq} within 60 s: {status}\nits log ends:\n{}",
                s.base,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node has applied the highest sequence any of them
/// has applied.
pub(crate) async fn settle(nodes: &[TestServer]) {
    let mut seq = 0;
    for n in nodes {
        seq = seq.max(applied(n).await);
    }
    for n in nodes {
        wait_applied(n, seq).await;
    }
}

/// The questions every node must answer alike.
const QUESTIONS: [&str; 3] = [
    "select count(*) as n, count(distinct id) as ids, sum(v) as v from ev",
    "select g, count(*) as n, sum(v) as v, min(v) as lo, max(v) as hi from ev group by g order by g",
    "select w, count(*) as n from ev group by w order by w",
];

/// One writer per node for one fault cycle: each batch (events tagged with
/// the cycle) is retried under its key until acknowledged, through
/// whichever node answers. Returns the acknowledged lines and the highest
/// sequence answered, and when each acknowledgement came.
fn spawn_writers(
    bases: &[String],
    cycle: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, u64, Vec<Instant>)>> {
    (0..bases.len())
        .map(|w| {
            let (stop, bases) = (stop.clone(), bases.to_vec());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut rng = rand::rngs::StdRng::seed_from_u64((cycle * 31 + w) as u64);
                let (mut acked, mut max_seq, mut batch) = (Vec::new(), 0, 0);
                let mut times = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut body = String::new();
                    let mut lines = Vec::new();
                    for i in 0..rng.random_range(1..40) {
                        let line = format!(
                            "{{\"ts\":{},\"id\":\"c{cycle}-w{w}-{batch}-{i}\",\"c\":{cycle},\"w\":\"w{w}\",\"g\":\"g{}\",\"v\":{}}}",
                            1_700_000_000_000i64 + rng.random_range(0..86_400_000i64),
                            rng.random_range(0..5),
                            rng.random_range(0..1000)
                        );
                        body.push_str(&line);
                        body.push('\n');
                        lines.push(line);
                    }
                    let key = format!("c{cycle}-w{w}-{batch}");
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut target = w;
                    // The last refusal from each node, for the failure message.
                    let mut last_errors = vec![String::new(); bases.len()];
                    loop {
                        let node = target % bases.len();
                        match write(&client, &bases[node], &body, &key).await {
                            Ok(seq) => {
                                max_seq = max_seq.max(seq);
                                acked.extend(lines);
                                times.push(Instant::now());
                                break;
                            }
                            Err(e) => {
                                last_errors[node] = e;
                                assert!(
                                    Instant::now() < deadline,
                                    "writer {w}: no node acknowledged batch {key} within 60 s; last answers: {:?}",
                                    bases.iter().zip(&last_errors).collect::<Vec<_>>()
                                );
                                target += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    batch += 1;
                }
                (acked, max_seq, times)
            })
        })
        .collect()
}

/// One fault cycle under writers on every node: a NATS server killed and
/// restarted, another paused for 3 s, a tally node killed and restarted on
/// its disk; which ones turns with the cycle. Returns the acknowledged
/// lines, the highest sequence answered and the longest time in which no
/// node acknowledged a write.
async fn fault_cycle(
    nats: &mut NatsCluster,
    nodes: &mut [TestServer],
    archive: &Path,
    cycle: usize,
    keep: &mut Vec<tempfile::TempDir>,
) -> (Vec<String>, u64, Duration) {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let writers = spawn_writers(&bases, cycle, &stop);
    let (killed, paused, node) = (cycle % 3, (cycle + 1) % 3, cycle % nodes.len());
    let pause = || tokio::time::sleep(Duration::from_millis(1500));
    pause().await;
    // A NATS server dies, and comes back.
    nats.servers[killed].kill9();
    pause().await;
    nats.servers[killed].spawn();
    nats.servers[killed].wait_current().await;
    pause().await;
    // Another stops answering for a few seconds.
    nats.servers[paused].signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.servers[paused].signal(libc::SIGCONT);
    pause().await;
    // A tally node dies, and restarts on its disk.
    let id = format!("t{node}");
    let (data, tmp) = nodes[node].kill9_keeping_data();
    keep.extend(tmp);
    pause().await;
    nodes[node] = start_node(nats, &id, archive, Some(&data)).await;
    pause().await;
    stop.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    let (mut acked, mut last, mut times) = (Vec::new(), 0, vec![started, ended]);
    for w in writers {
        let (lines, seq, t) = w.await.unwrap();
        acked.extend(lines);
        last = last.max(seq);
        times.extend(t);
    }
    times.sort();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    (acked, last, gap)
}

/// Per node, the cycle's acknowledged events it lacks, and the copies
/// beyond one it holds of them, and the events it holds that were never
/// acknowledged.
async fn check_cycle(
    nodes: &[TestServer],
    cycle: usize,
    acked: &[String],
    last: u64,
) -> (usize, usize, usize) {
    let ids: std::collections::HashSet<String> = acked
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let (mut lost, mut duplicated, mut extra) = (0, 0, 0);
    for n in nodes {
        wait_applied(n, last).await;
        // In pages: an answer holds at most 100,000 rows.
        let mut held: std::collections::HashMap<String, u64> = Default::default();
        loop {
            let rows = sql(
                n,
                &format!(
                    "select id, count(*) as n from ev where c = {cycle} group by id order by id limit 50000 offset {}",
                    held.len()
                ),
            )
            .await;
            let page = rows.len();
            held.extend(rows.iter().map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["n"].as_u64().unwrap(),
                )
            }));
            if page < 50000 {
                break;
            }
        }
        lost += ids.iter().filter(|id| !held.contains_key(*id)).count();
        duplicated += held.values().map(|n| (*n - 1) as usize).sum::<usize>();
        extra += held.keys().filter(|id| !ids.contains(*id)).count();
    }
    (lost, duplicated, extra)
}

/// The suite runs one fault cycle; `TALLY_CLUSTER_CYCLES=N` (see
/// `bench/cluster-soak.sh`) runs N on the same cluster, each checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_is_on_every_node_once_through_nats_and_node_failures() {
    let cycles: usize = std::env::var("TALLY_CLUSTER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut nats = NatsCluster::start().await;
    let archive = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start_node(&nats, &format!("t{i}"), archive.path(), None).await);
    }
    let (st, v) = get_json(&nodes[0].url("/v1/cluster")).await;
    assert_eq!(st, 200);
    assert_eq!(v["cluster"], true, "{v}");
    assert_eq!(v["connection"], "connected", "{v}");
    assert_eq!(v["replicas"], 3, "{v}");

    let mut keep = Vec::new();
    let (mut acked, mut last) = (Vec::new(), 0);
    let (mut total_lost, mut total_duplicated, mut total_extra) = (0, 0, 0);
    let started = Instant::now();
    let mut longest_gap = Duration::ZERO;
    for cycle in 0..cycles {
        let (lines, seq, gap) =
            fault_cycle(&mut nats, &mut nodes, archive.path(), cycle, &mut keep).await;
        longest_gap = longest_gap.max(gap);
        assert!(
            lines.len() > 50,
            "cycle {cycle}: only {} events acknowledged",
            lines.len()
        );
        let (lost, duplicated, extra) = check_cycle(&nodes, cycle, &lines, seq).await;
        eprintln!(
            "cluster cycle {}/{cycles}: acknowledged {}, lost {lost}, duplicated {duplicated}, unacknowledged stored {extra} (on {} nodes); longest time without an acknowledgement {:.1} s; stream readers made again so far {}; {:.0} s so far",
            cycle + 1,
            lines.len(),
            nodes.len(),
            gap.as_secs_f64(),
            nodes
                .iter()
                .map(|n| n.stderr_log().matches("making it again").count())
                .sum::<usize>(),
            started.elapsed().as_secs_f64()
        );
        (total_lost, total_duplicated, total_extra) = (
            total_lost + lost,
            total_duplicated + duplicated,
            total_extra + extra,
        );
        acked.extend(lines);
        last = last.max(seq);
    }
    eprintln!(
        "cluster: {cycles} cycles, {} events acknowledged, lost {total_lost}, duplicated {total_duplicated}, unacknowledged stored {total_extra}; longest time without an acknowledgement {:.1} s",
        acked.len(),
        longest_gap.as_secs_f64()
    );
    assert_eq!((total_lost, total_duplicated, total_extra), (0, 0, 0));

    // A retried write with the same key is stored once.
    let client = reqwest::Client::new();
    let body = "{\"ts\":1700000000000,\"id\":\"again\",\"w\":\"x\",\"g\":\"g0\",\"v\":1}\n";
    let first = write(&client, &nodes[0].base, body, "the-same-key")
        .await
        .unwrap();
    let second = write(&client, &nodes[1].base, body, "the-same-key")
        .await
        .unwrap();
    assert_eq!(
        first, second,
        "a retry is answered with the first write's sequence"
    );
    acked.push(body.trim().to_string());
    last = last.max(first);

    // A batch larger than one NATS message (1 MiB on these servers) is
    // one record all the same: put in the shared archive, a pointer on
    // the stream, applied by every node.
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let big: Vec<String> = (0..40_000)
        .map(|i| {
            format!(
                "{{\"ts\":{},\"id\":\"big-{i}-{:016x}\",\"w\":\"big\",\"g\":\"g{}\",\"v\":{}}}",
                1_700_000_000_000i64 + rng.random_range(0..86_400_000i64),
                rng.random::<u64>(),
                rng.random_range(0..5),
                rng.random_range(0..1000)
            )
        })
        .collect();
    let seq = write(&client, &nodes[2].base, &(big.join("\n") + "\n"), "big")
        .await
        .unwrap();
    let claims = metric(&nodes[2], "tally_cluster_claim_records_total").await;
    assert!(claims >= 1.0, "the big batch went as a claim ({claims})");
    acked.extend(big);
    last = last.max(seq);

    // Read-your-writes on another node, with min_seq.
    let one = "{\"ts\":1700000000001,\"id\":\"ryw\",\"w\":\"y\",\"g\":\"g1\",\"v\":2}\n";
    let seq = write(&client, &nodes[0].base, one, "ryw").await.unwrap();
    acked.push(one.trim().to_string());
    last = last.max(seq);
    let r = client
        .post(nodes[1].url("/v1/sql"))
        .header("tally-min-seq", seq.to_string())
        .json(&serde_json::json!({"sql": "select count(*) as n from ev where id = 'ryw'"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["rows"][0]["n"], 1, "{v}");

    // The maintenance lease: one node holds it, and uploads a bootstrap
    // checkpoint; killed, another node takes the lease over within seconds.
    let holder = lease_holder(&nodes, Duration::from_secs(15)).await;
    let r = client
        .post(nodes[holder].url("/v1/admin/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let checkpoint_seq = v["uploaded"]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"));
    let (data, tmp) = nodes[holder].kill9_keeping_data();
    keep.extend(tmp);
    let killed = Instant::now();
    let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != holder).collect();
    let next = lease_holder_among(&nodes, &others, Duration::from_secs(15)).await;
    let takeover = killed.elapsed();
    eprintln!("cluster: the maintenance lease passed from t{holder} to t{next} in {takeover:?} (lease time 3 s)");
    assert!(
        next != holder && takeover < Duration::from_secs(10),
        "{takeover:?}"
    );
    nodes[holder] = start_node(&nats, &format!("t{holder}"), archive.path(), Some(&data)).await;

    // A fourth node, on an empty disk, joins late: it starts from the
    // checkpoint, applies the stream from there, and catches up.
    let late = start_node(&nats, "t3", archive.path(), None).await;
    assert_eq!(metric(&late, "tally_cluster_bootstraps_total").await, 1.0);
    let (_, ready) = get_json(&late.url("/readyz")).await;
    let replayed = ready["replayed_records"].as_u64().unwrap();
    assert!(
        replayed <= last.saturating_sub(checkpoint_seq) + 5,
        "the late node replayed {replayed} records, more than the stream holds past the checkpoint at {checkpoint_seq}: {ready}"
    );
    nodes.push(late);

    // DuckDB's answers over the acknowledged events.
    let file = archive.path().join("acked.ndjson");
    std::fs::write(&file, acked.join("\n") + "\n").unwrap();
    let script = r#"
import duckdb, json, sys
con = duckdb.connect()
# No progress bar: over millions of events it would print into the answer.
con.execute("SET enable_progress_bar = false")
con.execute(f"create table ev as select * from read_json_auto('{sys.argv[1]}', format='newline_delimited')")
out = []
for q in sys.argv[2:]:
    cur = con.execute(q)
    cols = [d[0] for d in cur.description]
    out.append([dict(zip(cols, [int(x) if isinstance(x, (int, float)) else x for x in r])) for r in cur.fetchall()])
print(json.dumps(out))
"#;
    let mut args = vec![file.to_str().unwrap()];
    args.extend(QUESTIONS);
    args.push(HOURLY_DUCKDB);
    let expected: Vec<Vec<serde_json::Value>> =
        serde_json::from_str(&python(script, &args)).unwrap();
    assert_eq!(expected[0][0]["ids"].as_u64(), Some(acked.len() as u64));

    eprintln!(
        "cluster: {} events acknowledged, last sequence {last}",
        acked.len()
    );
    for n in &nodes {
        wait_applied(n, last).await;
        for (q, want) in QUESTIONS.iter().zip(&expected) {
            let got: Vec<serde_json::Value> = sql(n, q).await.into_iter().map(integral).collect();
            assert_eq!(&got, want, "{}: {q}", n.base);
        }
        assert_eq!(
            &hourly(n).await,
            &expected[QUESTIONS.len()],
            "{}: {HOURLY}",
            n.base
        );
    }
    drop(keep);
}

/// The index of the node that holds the maintenance lease, waiting for one.
async fn lease_holder(nodes: &[TestServer], within: Duration) -> usize {
    let all: Vec<usize> = (0..nodes.len()).collect();
    lease_holder_among(nodes, &all, within).await
}

pub(crate) async fn lease_holder_among(
    nodes: &[TestServer],
    among: &[usize],
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for &i in among {
            if let Ok(r) = reqwest::get(nodes[i].url("/v1/cluster")).await {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if v["leases"][0]["held"] == true {
                    return i;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node took the maintenance lease within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A metric's value on a node (0 when it has none yet).
pub(crate) async fn metric(n: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(n.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The time-series question: per group and hour, the count and sum.
const HOURLY: &str = "/v1/query?stream=ev&from=2023-11-14T00:00:00Z&to=2023-11-17T00:00:00Z&interval=1h&aggregates=count,sum(v)&group_by=g&limit=10&other=false&fill=none";
/// DuckDB's answer to it (`ts` is in milliseconds).
const HOURLY_DUCKDB: &str = "select g, (ts // 3600000) * 3600 as t, count(*) as n, sum(v) as v from ev group by g, t order by g, t";

/// A node's answer to [`HOURLY`] as rows like [`HOURLY_DUCKDB`]'s.
async fn hourly(n: &TestServer) -> Vec<serde_json::Value> {
    let (st, v) = get_json(&n.url(HOURLY)).await;
    assert_eq!(st, 200, "{v}");
    let mut rows = Vec::new();
    for s in v["series"].as_array().unwrap() {
        let g = &s["group"]["g"];
        for p in s["points"].as_array().unwrap() {
            let t = chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap()).unwrap();
            rows.push(integral(serde_json::json!({
                "g": g, "t": t.timestamp(), "n": p["count"], "v": p["sum(v)"]
            })));
        }
    }
    rows.sort_by_key(|r| {
        (
            r["g"].as_str().unwrap_or("").to_string(),
            r["t"].as_i64().unwrap(),
        )
    });
    rows
}

/// A row with its numbers as integers, as DuckDB's are printed.
fn integral(row: serde_json::Value) -> serde_json::Value {
    let o = row.as_object().unwrap();
    serde_json::Value::Object(
        o.iter()
            .map(|(k, v)| {
                let v = match v.as_f64() {
                    Some(f) if !v.is_string() => serde_json::json!(f as i64),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// A node whose data ends before the stream's first record (the records
/// between aged out while it was down) says so, replaces its data with the
/// archive's newest checkpoint and applies the stream from there: it
/// serves no answer with a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_stream_bootstraps_from_the_checkpoint_again() {
    let nats = NatsCluster::start_n(1).await;
    let archive = tempfile::tempdir().unwrap();
    // A stream that keeps records for 4 s.
    let flags = [
        "--cluster-replicas",
        "1",
        "--cluster-max-age",
        "4s",
        "--cluster-dedup-window",
        "1s",
    ];
    let a = start_node_with(&nats, "a", archive.path(), None, &flags).await;
    let mut b = start_node_with(&nats, "b", archive.path(), None, &flags).await;
    let client = reqwest::Client::new();
    let mut acked = 0;
    let mut send = |n: usize| {
        let body: String = (0..n)
            .map(|i| format!("{{\"ts\":{},\"v\":{i}}}\n", 1_700_000_000_000i64 + i as i64))
            .collect();
        acked += n;
        let (client, base) = (client.clone(), a.base.clone());
        async move {
            write(
                &client,
                &base,
                &body,
                &format!("k{}", rand::random::<u64>()),
            )
            .await
            .unwrap()
        }
    };
    let seq = send(10).await;
    wait_applied(&b, seq).await;
    let (data, tmp) = b.kill9_keeping_data();
    for _ in 0..5 {
        send(7).await;
    }
    // The checkpoint (a holds the only lease it contends for with b gone).
    lease_holder(std::slice::from_ref(&a), Duration::from_secs(15)).await;
    let r = client
        .post(a.url("/v1/admin/checkpoint"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let at = v["uploaded"]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"));
    // Every record ages out of the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = get_json(&a.url("/v1/cluster")).await;
        if v["stream_messages"] == 0 && v["stream_first_seq"].as_u64() > Some(seq + 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the records did not age out: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b = start_node_with(&nats, "b", archive.path(), Some(&data), &flags).await;
    assert!(
        b.stderr_log()
            .contains("replacing it with the shared archive's newest checkpoint"),
        "{}",
        b.stderr_log()
    );
    assert_eq!(metric(&b, "tally_cluster_bootstraps_total").await, 1.0);
    assert!(applied(&b).await >= at);
    for n in [&a, &b] {
        let rows = sql(n, "select count(*) as n from ev").await;
        assert_eq!(rows[0]["n"].as_u64(), Some(acked as u64), "{}", n.base);
    }
    drop(tmp);
}

#[tokio::test]
async fn a_read_waits_for_its_min_seq_and_refuses_rather_than_answer_without_it() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let seq = write(&client, &s.base, "{\"ts\":1,\"id\":\"a\",\"v\":1}\n", "k1")
        .await
        .unwrap();
    let (st, v) = get_json(&s.url("/v1/cluster")).await;
    assert_eq!((st, v["cluster"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(v["applied_seq"].as_u64(), Some(seq));
    // The parameter is taken out before the handler reads the query.
    let (st, v) = get_json(&s.url(&format!(
        "/v1/query?stream=ev&aggregates=count&min_seq={seq}"
    )))
    .await;
    assert_eq!(st, 200, "{v}");
    let r = client
        .get(s.url("/v1/streams/ev"))
        .header("tally-min-seq", (seq + 1000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let (st, v) = get_json(&s.url("/v1/streams/ev?min_seq=soon")).await;
    assert_eq!(st, 400, "{v}");
}

/// Cluster mode without a shared archive would leave claim-checked records
/// and bootstrap checkpoints nowhere every node can read: tally says so
/// and does not start (before it even reaches for NATS).
#[test]
fn cluster_mode_refuses_to_start_without_a_shared_archive() {
    let dir = tempfile::tempdir().unwrap();
    for archive in [None, Some("none")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--cluster", "nats://127.0.0.1:1", "--node-id", "n1"]);
        if let Some(a) = archive {
            cmd.args(["--archive", a]);
        }
        let out = cmd.output().expect("tally");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "started without an archive ({archive:?})"
        );
        assert!(
            stderr.contains("cluster mode needs a shared archive"),
            "{archive:?}: {stderr}"
        );
    }
}
