//! The plain JetStream publisher: the ceiling tally's cluster ingest is
//! measured against. It publishes the very messages a tally cluster wrote
//! (records read back from `--source-stream`) to a new stream made with
//! the source's settings, each with its own `Nats-Msg-Id` as tally's
//! appends have, `--connections` of them awaiting acknowledgement at once.

use super::{summary, BenchArgs, Errors, Statuses};
use anyhow::Context;
use async_nats::jetstream;
use std::time::{Duration, Instant};

pub async fn run(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let servers: Vec<async_nats::ServerAddr> = args
        .url
        .split(',')
        .map(|u| u.parse().with_context(|| format!("NATS URL {u:?}")))
        .collect::<anyhow::Result<_>>()?;
    let client = async_nats::connect(servers).await?;
    let js = jetstream::new(client);
    let mut source = js
        .get_stream(&args.source_stream)
        .await
        .with_context(|| format!("stream {}", args.source_stream))?;
    let info = source.info().await?.clone();
    let first = info.state.first_sequence;
    let count = (args.bodies as u64).min(info.state.messages);
    anyhow::ensure!(count > 0, "stream {} holds no records", args.source_stream);
    let mut payloads = Vec::new();
    for seq in first..first + count {
        payloads.push(source.get_raw_message(seq).await?.payload);
    }

    let subject = format!("bench.{}", args.stream);
    let mut config = info.config.clone();
    config.name = args.stream.clone();
    config.subjects = vec![subject.clone()];
    let _ = js.delete_stream(&args.stream).await;
    js.create_stream(config).await?;

    let payloads = std::sync::Arc::new(payloads);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (js, subject, payloads) = (js.clone(), subject.clone(), payloads.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat_us, mut statuses, mut errors) =
                (Vec::new(), Statuses::new(), Errors::new());
            let mut i = c;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("bench-{c}-{i}").as_str(),
                );
                let acked = match js
                    .publish_with_headers(
                        subject.clone(),
                        headers,
                        payloads[i % payloads.len()].clone(),
                    )
                    .await
                {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                lat_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match acked {
                    Ok(()) => *statuses.entry(200).or_default() += 1,
                    Err(e) => {
                        *statuses.entry(0).or_default() += 1;
                        *errors.entry(e).or_default() += 1;
                    }
                }
                i += 1;
            }
            (lat_us, statuses, errors)
        }));
    }
    let (mut lat, mut statuses, mut errors) = (Vec::new(), Statuses::new(), Errors::new());
    for t in tasks {
        let (l, s, e) = t.await?;
        lat.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes: usize = payloads.iter().map(|p| p.len()).sum::<usize>() / payloads.len();
    let _ = js.delete_stream(&args.stream).await;
    let mut out = summary(args, secs, lat, &statuses, &errors);
    out["mean_message_bytes"] = bytes.into();
    Ok(out)
}
