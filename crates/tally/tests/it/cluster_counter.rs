//! The global counter in cluster mode: one user's increments racing
//! through every node at once are accepted exactly once per window (a
//! short one), also while a NATS server is killed; accounts and sessions work on every
//! node; login limits count across nodes; a viewer of any node sees an
//! increment made on any other within a second.

use crate::cluster::{applied, start_node_with, wait_applied};
use crate::counter::Tab;
use crate::nats::NatsCluster;
use crate::server::{get_json, TestServer};
use serde_json::Value;
use std::time::{Duration, Instant};

const WINDOW: &str = "2s";
const ROUNDS: usize = 6;
/// The round before which a NATS server is killed (restarted two later).
const KILL_ROUND: usize = 2;
const CLIENTS_PER_NODE: usize = 6;
/// How long a reservation outlives its window: twice the publish timeout
/// (4 s here) and 5 s.
const HOLD: Duration = Duration::from_secs(13);

/// The stream's end as the nodes know it (what any applied, or saw the
/// stream hold).
async fn stream_end(nodes: &[TestServer]) -> u64 {
    let mut seq = 0;
    for n in nodes {
        let (_, v) = get_json(&n.url("/v1/cluster")).await;
        seq = seq
            .max(v["applied_seq"].as_u64().unwrap_or(0))
            .max(v["stream_last_seq"].as_u64().unwrap_or(0));
    }
    seq
}

async fn value(n: &TestServer) -> u64 {
    let (st, v) = get_json(&n.url("/counter/main/value")).await;
    assert_eq!(st, 200, "{v}");
    v["value"].as_u64().unwrap()
}

/// Follows a node's live stream of `main`: each new value and when it came.
fn watch(n: &TestServer) -> tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)> {
    let url = n.url("/counter/main/events");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = reqwest::Client::new().get(url).send().await.unwrap();
        let mut seen = String::new();
        while let Ok(Some(chunk)) = events.chunk().await {
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = seen.find("\n\n") {
                let block: String = seen.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    let v: Value = serde_json::from_str(data).unwrap();
                    let _ = tx.send((v["value"].as_u64().unwrap(), Instant::now()));
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_increments_through_every_node_are_accepted_once_per_window_while_nats_fails() {
    let mut nats = NatsCluster::start().await;
    let archive = tempfile::tempdir().unwrap();
    // A short publish timeout keeps a reservation whose append may have
    // been stored (held for twice it plus 5 s) short too.
    let flags = [
        "--counter-window",
        WINDOW,
        "--cluster-publish-timeout",
        "4s",
    ];
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(start_node_with(&nats, id, archive.path(), None, &flags).await);
    }

    // Registered on a, the session works on every node once applied.
    let mut tab = Tab::open(&nodes[0]).await;
    let r = tab.register("racer", "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seq = applied(&nodes[0]).await;
    let mut tabs = Vec::new();
    for n in &nodes {
        wait_applied(n, seq).await;
        let mut t = tab.clone();
        t.reopen(n);
        let me = t.get("/account").await;
        assert_eq!(me.body["user"], "racer", "{}: {}", n.base, me.body);
        tabs.push(t);
    }
    // The name is taken cluster-wide, also through another node at once.
    let mut racers = Vec::new();
    for n in &nodes {
        let mut t = Tab::open(n).await;
        racers.push(tokio::spawn(async move {
            let r = t.register("twin", "correct horse battery").await;
            (r.status, r.body)
        }));
    }
    let mut answers = Vec::new();
    for r in racers {
        answers.push(r.await.unwrap());
    }
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409], "{answers:?}");

    let mut live = watch(&nodes[2]);
    let first = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.0, 0);

    let mut accepted = Vec::new();
    let mut live_lags = Vec::new();
    let mut last_value = 0;
    let mut maybe_stored = 0u64;
    for round in 0..ROUNDS {
        if round == KILL_ROUND {
            nats.servers[0].kill9();
        }
        if round == KILL_ROUND + 2 {
            nats.servers[0].spawn();
            nats.servers[0].wait_current().await;
        }
        // Every client of every node at once; a 503 (NATS failing over)
        // is sent again, as a client told Retry-After would.
        let mut clients = Vec::new();
        for (i, t) in tabs.iter().enumerate() {
            for _ in 0..CLIENTS_PER_NODE {
                let mut t = t.clone();
                clients.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    let (mut tries, mut logged) = (0, 0);
                    loop {
                        let r = t.inc("main").await;
                        tries += 1;
                        if r.status == 503 && r.body.to_string().contains("cluster log") {
                            logged += 1;
                        }
                        if r.status != 503 || t0.elapsed() > Duration::from_secs(30) {
                            return (i, r.status, r.body, Instant::now(), tries, logged);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }));
            }
        }
        let mut wins = Vec::new();
        let mut next_allowed = None;
        let mut won_next = None;
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        let mut outcomes_maybe = 0u64;
        for c in clients {
            let (node, status, body, at, tries, logged) = c.await.unwrap();
            outcomes_maybe += logged;
            *outcomes
                .entry(format!("{status} after {tries}"))
                .or_default() += 1;
            match status {
                200 => {
                    // The window runs from when the increment was
                    // appended: a late one's (tried again in a failover)
                    // is later than what the refusals guessed.
                    won_next = body["next_allowed_at"].as_str().map(String::from);
                    wins.push((node, body["value"].as_u64().unwrap(), at));
                }
                429 => {
                    if let Some(next) = body["next_allowed_at"].as_str() {
                        next_allowed = Some(next.to_string());
                    }
                }
                other => panic!("round {round}: {other} {body}"),
            }
        }
        assert!(
            wins.len() <= 1,
            "round {round}: {} accepted: {wins:?}",
            wins.len()
        );
        // Exactly one, also in a NATS server's failover: the winner's
        // append is tried again under its id until the log takes it.
        let failing_over = (KILL_ROUND..=KILL_ROUND + 1).contains(&round);
        assert_eq!(wins.len(), 1, "round {round}: none accepted: {outcomes:?}");
        // Every node counts every accepted increment, and no more than
        // the increments that held a reservation: those accepted, and
        // those whose append failed in a way that may have stored them
        // (503 from the cluster log; it may be applied a window later).
        // A reservation is one per window (the shared key).
        maybe_stored += outcomes_maybe;
        let seq = stream_end(&nodes).await;
        let mut now_values = Vec::new();
        for n in &nodes {
            wait_applied(n, seq).await;
            now_values.push(value(n).await);
        }
        assert!(
            now_values.iter().all(|v| *v == now_values[0]),
            "{now_values:?}"
        );
        let counted = accepted.len() as u64 + wins.len() as u64;
        assert!(
            (counted..=counted + maybe_stored).contains(&now_values[0]),
            "round {round}: the value is {} with {counted} accepted and {maybe_stored} maybe stored",
            now_values[0]
        );
        if let Some((_, v, _)) = wins.first() {
            assert!(*v <= now_values[0], "round {round}");
        }
        last_value = now_values[0];
        eprintln!("round {round}: {outcomes:?}, value {last_value}");
        if let Some((node, value, at)) = wins.first().cloned() {
            accepted.push(value);
            // Node c's viewers see it within a second, whichever node
            // took it.
            loop {
                let (v, seen) = tokio::time::timeout(Duration::from_secs(60), live.recv())
                    .await
                    .expect("a live value")
                    .unwrap();
                if v >= value {
                    if !failing_over {
                        live_lags.push((node, seen.saturating_duration_since(at)));
                    }
                    break;
                }
            }
        }
        // The next window; after a window with none accepted, the one
        // whose append may have been stored holds the user until its
        // reservation lapses.
        if wins.is_empty() {
            tokio::time::sleep(HOLD).await;
        }
        let wait = won_next
            .or(next_allowed)
            .and_then(|n| chrono::DateTime::parse_from_rfc3339(&n).ok())
            .map(|t| t.timestamp_millis() - chrono::Utc::now().timestamp_millis())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 300)).await;
    }
    eprintln!("accepted values {accepted:?}; live lags {live_lags:?}");
    assert!(accepted.windows(2).all(|w| w[0] < w[1]));
    for (_, lag) in &live_lags {
        assert!(*lag < Duration::from_secs(1), "{live_lags:?}");
    }
    // Reads say how old they may be: well under 2 s on a quiet cluster.
    for n in &nodes {
        let r = reqwest::get(n.url("/counter/main/value")).await.unwrap();
        let staleness: f64 = r.headers()["tally-staleness"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let as_of = chrono::DateTime::parse_from_rfc3339(v["as_of"].as_str().unwrap()).unwrap();
        let age = chrono::Utc::now().signed_duration_since(as_of);
        assert!(staleness < 2.0, "{}: {staleness}", n.base);
        assert!(
            age < chrono::Duration::seconds(2),
            "{}: as_of {as_of}",
            n.base
        );
    }
    // Every node counts the accepted increments, and at most those a
    // client could not be told of in the failover.
    assert!((accepted.len() as u64..=accepted.len() as u64 + maybe_stored).contains(&last_value));

    // Login limits count failures on every node together.
    let limited = start_node_with(
        &nats,
        "d",
        archive.path(),
        None,
        &["--config", write_limits(archive.path()).to_str().unwrap()],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let n = if i % 2 == 0 { &nodes[1] } else { &limited };
        let mut t = Tab::open(n).await;
        statuses.push(t.login("racer", "wrong password!").await.status);
    }
    // Three failures allowed per account (the limit of node d's config is
    // the one it checks; b's default is higher): the fourth, on d, is
    // refused even though two of the failures were on b.
    assert_eq!(statuses, [401, 401, 401, 429], "{statuses:?}");
}

/// A config with at most 3 failed logins per account.
fn write_limits(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("../limits.toml");
    std::fs::write(
        &p,
        format!("[counter]\nwindow = \"{WINDOW}\"\nlogin_failures_per_account = 3\n"),
    )
    .unwrap();
    p
}
