//! Apply lag as clients would see it: each node's applied sequence
//! (`GET /v1/cluster`) sampled every few milliseconds while the load runs.
//! For every round, the highest sequence any node had applied is the
//! reference; a node's lag for that round is the time until it had applied
//! that sequence too (0 when it already had). The sampling interval bounds
//! the resolution.

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(5);

pub struct Sampler {
    nodes: Vec<String>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Vec<Option<u64>>)>>,
}

impl Sampler {
    pub fn start(nodes: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (urls, flag) = (nodes.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rounds = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let seqs =
                    futures::future::join_all(urls.iter().map(|u| applied(&client, u))).await;
                rounds.push((at, seqs));
                tokio::time::sleep(EVERY.saturating_sub(at.elapsed())).await;
            }
            rounds
        });
        Sampler { nodes, stop, task }
    }

    /// Stops sampling; per node, lag quantiles in milliseconds.
    pub async fn finish(self) -> serde_json::Value {
        self.stop.store(true, Ordering::Relaxed);
        let rounds = self.task.await.unwrap_or_default();
        let mut out = serde_json::Map::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let mut lags = lags(&rounds, n);
            lags.sort_unstable();
            let q = |p: f64| {
                lags.get(((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len().max(1)) - 1)
                    .map(|d| d.as_secs_f64() * 1000.0)
            };
            out.insert(
                node.clone(),
                json!({ "samples": lags.len(), "p50": q(0.5), "p99": q(0.99), "max": q(1.0) }),
            );
        }
        out.into()
    }
}

/// Node `n`'s lag behind the most advanced node, one per round that has a
/// later round where `n` caught up.
fn lags(rounds: &[(Instant, Vec<Option<u64>>)], n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for (i, (at, seqs)) in rounds.iter().enumerate() {
        let Some(target) = seqs.iter().flatten().max() else {
            continue;
        };
        let caught = rounds[i..]
            .iter()
            .find(|(_, s)| s[n].is_some_and(|s| s >= *target));
        if let Some((then, _)) = caught {
            out.push(then.duration_since(*at));
        }
    }
    out
}

async fn applied(client: &reqwest::Client, base: &str) -> Option<u64> {
    let v: serde_json::Value = client
        .get(format!("{}/v1/cluster", base.trim_end_matches('/')))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["applied_seq"].as_u64()
}
