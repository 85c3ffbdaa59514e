//! `tally bench`: the load generator behind `bench/`.
//!
//! It sends the same synthetic page-view events either to tally (NDJSON to
//! `/v1/events/{stream}`) or to InfluxDB (line protocol to `/write`), over a
//! fixed number of keep-alive connections, closed-loop (as fast as answers
//! come back) or open-loop at a fixed rate, and prints throughput and latency
//! percentiles as one JSON line so scripts can compare peers in one run.
//! Several `--url`s share the connections (a cluster's nodes).
//!
//! `--target jetstream` is the plain publisher of `bench/cluster.sh`: it
//! copies records a tally cluster wrote (`--source-stream`) and publishes
//! those same messages straight to a new JetStream stream with the source
//! stream's settings, as many in flight as `--connections`.
//!
//! `--lag-nodes` samples each listed node's applied sequence while the load
//! runs and reports how long each node took to apply what the first node
//! to apply it had applied (its apply lag).

mod jetstream;
mod lag;

use crate::sample::PageView;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the server under test; several, comma-separated, share
    /// the connections in turn. For `--target jetstream`: NATS URLs.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Which wire format and endpoint to use.
    #[arg(long, value_enum, default_value = "tally")]
    pub target: Target,
    /// Stream (tally) or measurement (InfluxDB) name.
    #[arg(long, default_value = "bench")]
    pub stream: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Total requests per second to offer (open loop); 0 sends as fast as
    /// answers come back.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop after sending this many events (0: run for --duration).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
    /// Event times are spread over this many hours before now.
    #[arg(long, default_value_t = 1.0)]
    pub span_hours: f64,
    /// Distinct pre-built request bodies (more: more distinct events).
    #[arg(long, default_value_t = 64)]
    pub bodies: usize,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    pub label: String,
    /// API key for tally.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// `--target jetstream`: the stream whose messages are published again.
    #[arg(long, default_value = "TALLY")]
    pub source_stream: String,
    /// tally nodes (comma-separated base URLs) whose apply lag is sampled
    /// while the load runs.
    #[arg(long)]
    pub lag_nodes: Option<String>,
    /// Send each request with its own `Idempotency-Key`, so a load
    /// balancer or the node may send it again without storing it twice.
    #[arg(long)]
    pub idempotency_keys: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Tally,
    Influx,
    /// Straight to a JetStream stream, no tally in between.
    Jetstream,
}

/// Pre-built request bodies, so the generator spends its CPU on sending.
fn bodies(
    target: Target,
    stream: &str,
    batch: usize,
    count: usize,
    span_ms: i64,
) -> Vec<bytes::Bytes> {
    let mut rng = rand::rng();
    let base = chrono::Utc::now().timestamp_millis() - span_ms;
    (0..count)
        .map(|_| {
            let mut s = String::with_capacity(batch * 120);
            for _ in 0..batch {
                let pv = PageView::random(&mut rng, base, span_ms);
                match target {
                    Target::Influx => pv.push_line_protocol(stream, &mut s),
                    Target::Tally | Target::Jetstream => pv.push_ndjson(&mut s),
                }
            }
            bytes::Bytes::from(s)
        })
        .collect()
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let lag = args
        .lag_nodes
        .as_deref()
        .map(|nodes| lag::Sampler::start(nodes.split(',').map(str::to_string).collect()));
    let mut out = match args.target {
        Target::Jetstream => jetstream::run(&args).await?,
        Target::Tally | Target::Influx => http(&args).await?,
    };
    if let Some(lag) = lag {
        out["apply_lag_ms"] = lag.finish().await;
    }
    println!("{out}");
    Ok(())
}

async fn http(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let span_ms = (args.span_hours * 3_600_000.0).max(1.0) as i64;
    let bodies = std::sync::Arc::new(bodies(
        args.target,
        &args.stream,
        args.batch,
        args.bodies.max(1),
        span_ms,
    ));
    // Requests left to send when --events is given.
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(if args.events > 0 {
        args.events.div_ceil(args.batch.max(1) as u64) as i64
    } else {
        i64::MAX
    }));
    let urls: Vec<String> = args
        .url
        .split(',')
        .map(|base| match args.target {
            Target::Influx => format!("{}/write?db=bench&precision=ms", base.trim_end_matches('/')),
            _ => format!("{}/v1/events/{}", base.trim_end_matches('/'), args.stream),
        })
        .collect();
    let ct = match args.target {
        Target::Influx => "text/plain",
        _ => "application/x-ndjson",
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let per_conn_interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    let by_count = args.events > 0;
    let run_id: u64 = rand::random();
    let keyed = args.idempotency_keys;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (client, url, bodies, key, budget) = (
            client.clone(),
            urls[c % urls.len()].clone(),
            bodies.clone(),
            args.api_key.clone(),
            budget.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat_us: Vec<u32> = Vec::new();
            let mut statuses = Statuses::new();
            let mut errors = Errors::new();
            let mut i = c;
            let mut next = Instant::now();
            while (by_count || Instant::now() < deadline)
                && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0
            {
                if per_conn_interval.is_some() {
                    // Open loop: latency is measured from the scheduled send
                    // time, so a stalled server cannot hide its queueing.
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                }
                let scheduled = if per_conn_interval.is_some() {
                    next
                } else {
                    Instant::now()
                };
                let mut req = client
                    .post(&url)
                    .header("content-type", ct)
                    .body(bodies[i % bodies.len()].clone());
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                if keyed {
                    req = req.header("idempotency-key", format!("bench-{run_id:x}-{c}-{i}"));
                }
                let status = match req.send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(e) => {
                        let mut msg = e.to_string();
                        let mut src = std::error::Error::source(&e);
                        while let Some(s) = src {
                            msg = format!("{msg}: {s}");
                            src = s.source();
                        }
                        *errors.entry(msg).or_default() += 1;
                        0
                    }
                };
                lat_us.push(scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32);
                *statuses.entry(status).or_default() += 1;
                i += 1;
                if let Some(every) = per_conn_interval {
                    next += every;
                }
            }
            (lat_us, statuses, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut statuses = Statuses::new();
    let mut errors = Errors::new();
    for t in tasks {
        let (l, s, e) = t.await?;
        lat.extend(l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    Ok(summary(
        args,
        started.elapsed().as_secs_f64(),
        lat,
        &statuses,
        &errors,
    ))
}

/// Requests counted by status (0: a transport error).
type Statuses = std::collections::BTreeMap<u16, u64>;
/// Transport errors counted by message.
type Errors = std::collections::BTreeMap<String, u64>;

/// One run's figures as the JSON line the scripts read.
fn summary(
    args: &BenchArgs,
    secs: f64,
    mut lat: Vec<u32>,
    statuses: &Statuses,
    errors: &Errors,
) -> serde_json::Value {
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1] as f64 / 1000.0
    };
    let ok: u64 = statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let total: u64 = statuses.values().sum();
    json!({
        "label": args.label,
        "target": format!("{:?}", args.target).to_lowercase(),
        "connections": args.connections,
        "batch": args.batch,
        "offered_rate": args.rate,
        "seconds": secs,
        "requests": total,
        "ok_requests": ok,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "transport_errors": errors.iter().take(5).map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "events_per_sec": (ok as f64 * args.batch as f64) / secs,
        "requests_per_sec": ok as f64 / secs,
        "latency_ms": { "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0) },
    })
}
