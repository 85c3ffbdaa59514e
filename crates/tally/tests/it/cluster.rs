//! Cluster mode against real `nats-server` processes: three NATS servers
//! clustered on loopback (JetStream, `sync_interval: always`, an R3
//! stream) and tally nodes on them. Writers on every node while a NATS
//! server is killed, another paused, and a tally node killed; afterwards
//! every acknowledged event is on every node exactly once, and the nodes'
//! answers agree with each other and with DuckDB's over the acknowledged
//! events.

use crate::server::{get_json, python, sql, TestServer};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server of the test cluster.
struct NatsServer {
    child: Option<Child>,
    config: PathBuf,
    client: u16,
    monitor: u16,
}

impl NatsServer {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.config.with_extension("log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (scripts/test.sh installs it)");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("running");
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, signal) };
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client)
    }

    /// Waits for the server's JetStream to be up and current.
    async fn wait_healthy(&self) {
        let url = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "nats-server not healthy: {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three nats-servers in one cluster, each with JetStream on its own disk.
struct NatsCluster {
    servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    async fn start() -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (client, monitor) = (free_port(), free_port());
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let store = dir.path().join(format!("js{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    r#"server_name: n{i}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: tally-test
  listen: 127.0.0.1:{route}
  routes: [{routes}]
}}
"#,
                    store = store.display(),
                    routes = others.join(", ")
                ),
            )
            .unwrap();
            let mut s = NatsServer {
                child: None,
                config,
                client,
                monitor,
            };
            s.spawn();
            servers.push(s);
        }
        for s in &servers {
            s.wait_healthy().await;
        }
        NatsCluster { servers, _dir: dir }
    }

    fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(",")
    }
}

async fn node(nats: &NatsCluster, id: &str, archive: &Path, data: Option<&Path>) -> TestServer {
    let mut b = TestServer::builder().args([
        "--cluster".to_string(),
        nats.urls(),
        "--node-id".into(),
        id.into(),
        "--archive".into(),
        archive.display().to_string(),
        "--cluster-max-bytes".into(),
        "256MiB".into(),
    ]);
    if let Some(d) = data {
        b = b.data_dir(d);
    }
    b.start().await
}

/// Posts NDJSON to `base` with an idempotency key; the sequence when 200.
async fn write(client: &reqwest::Client, base: &str, body: &str, key: &str) -> Result<u64, String> {
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

async fn applied(s: &TestServer) -> u64 {
    let (st, v) = get_json(&s.url("/v1/cluster")).await;
    assert_eq!(st, 200, "{v}");
    v["applied_seq"].as_u64().unwrap()
}

async fn wait_applied(s: &TestServer, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied(s).await < seq {
        assert!(Instant::now() < deadline, "{} did not apply {seq}", s.base);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The questions every node must answer alike.
const QUESTIONS: [&str; 3] = [
    "select count(*) as n, count(distinct id) as ids, sum(v) as v from ev",
    "select g, count(*) as n, sum(v) as v, min(v) as lo, max(v) as hi from ev group by g order by g",
    "select w, count(*) as n from ev group by w order by w",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_is_on_every_node_once_through_nats_and_node_failures() {
    let mut nats = NatsCluster::start().await;
    let archive = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&nats, &format!("t{i}"), archive.path(), None).await);
    }
    let (st, v) = get_json(&nodes[0].url("/v1/cluster")).await;
    assert_eq!(st, 200);
    assert_eq!(v["cluster"], true, "{v}");
    assert_eq!(v["connection"], "connected", "{v}");
    assert_eq!(v["replicas"], 3, "{v}");

    // Writers: one per node, each batch retried (same key) until
    // acknowledged, through whichever node answers.
    let acked: Arc<Mutex<Vec<String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let mut writers = Vec::new();
    for w in 0..3usize {
        let (acked, stop, bases) = (acked.clone(), stop.clone(), bases.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut batch = 0;
            let mut max_seq = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut body = String::new();
                let mut lines = Vec::new();
                for i in 0..rng.random_range(1..40) {
                    let line = format!(
                        "{{\"ts\":{},\"id\":\"w{w}-{batch}-{i}\",\"w\":\"w{w}\",\"g\":\"g{}\",\"v\":{}}}",
                        1_700_000_000_000i64 + rng.random_range(0..86_400_000i64),
                        rng.random_range(0..5),
                        rng.random_range(0..1000)
                    );
                    body.push_str(&line);
                    body.push('\n');
                    lines.push(line);
                }
                let key = format!("w{w}-{batch}");
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut target = w;
                loop {
                    match write(&client, &bases[target % 3], &body, &key).await {
                        Ok(seq) => {
                            max_seq = max_seq.max(seq);
                            acked.lock().unwrap().extend(lines);
                            break;
                        }
                        Err(e) => {
                            assert!(Instant::now() < deadline, "writer {w}: {e}");
                            target += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                batch += 1;
            }
            max_seq
        }));
    }

    let pause = || tokio::time::sleep(Duration::from_millis(1500));
    pause().await;
    // A NATS server dies, and comes back.
    nats.servers[0].kill9();
    pause().await;
    nats.servers[0].spawn();
    nats.servers[0].wait_healthy().await;
    pause().await;
    // Another stops answering for a few seconds.
    nats.servers[1].signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.servers[1].signal(libc::SIGCONT);
    pause().await;
    // A tally node dies, and restarts on its disk.
    let data = nodes[2].data_dir.clone();
    let (_, keep) = nodes.remove(2).into_data_dir();
    pause().await;
    nodes.push(node(&nats, "t2", archive.path(), Some(&data)).await);
    pause().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut last = 0;
    for w in writers {
        last = last.max(w.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} events acknowledged",
        acked.len()
    );

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
    let mut acked = acked;
    acked.push(body.trim().to_string());
    last = last.max(first);

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

    // A fourth node, on an empty disk, joins late and catches up.
    nodes.push(node(&nats, "t3", archive.path(), None).await);

    // DuckDB's answers over the acknowledged events.
    let file = archive.path().join("acked.ndjson");
    std::fs::write(&file, acked.join("\n") + "\n").unwrap();
    let script = r#"
import duckdb, json, sys
con = duckdb.connect()
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
            let got: Vec<serde_json::Value> = sql(n, q)
                .await
                .into_iter()
                .map(|row| {
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
                })
                .collect();
            assert_eq!(&got, want, "{}: {q}", n.base);
        }
    }
    drop(keep);
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
