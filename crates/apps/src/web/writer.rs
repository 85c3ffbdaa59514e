//! Where tracker events are attributed to visits and written. Live visits
//! are split over a few shards by visitor; each shard is one task that
//! owns its visits, takes every event waiting for it at once, and writes
//! them as two records (the visits' rows and the events): concurrent
//! trackers' events share log records, and a visitor's events are handled
//! in the order they arrive. A request is answered once both records are
//! durable.

use super::visits::{self, Hit, Visit, Visits};
use super::{metrics, WebError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tally_engine::Engine;
use tally_ingest::BatchBuilder;
use tokio::sync::{mpsc, oneshot};

/// Most shards of live visits (tasks writing concurrently). There is one
/// per core (at least two): each shard's record carries every event that
/// waited for it, and fewer, larger records cost less to log and to apply
/// than many small ones (on 2 cores, 16 shards spent 61 µs of CPU per
/// event, 2 shards 41 µs, 1 shard 45 µs: BENCHMARKS.md).
const MAX_SHARDS: usize = 16;
/// Most events one shard writes in one record.
const MAX_HITS: usize = 4096;
/// Queued requests per shard before trackers are told to retry.
const QUEUE: usize = 8192;
/// How often ended visits are forgotten.
const SWEEP: Duration = Duration::from_secs(10);

/// The web streams: events and visits.
#[derive(Debug, Clone)]
pub struct Streams {
    pub events: String,
    pub visits: String,
}

struct Job {
    hits: Vec<Hit>,
    done: oneshot::Sender<Result<usize, WebError>>,
}

pub(super) struct Writer {
    shards: Vec<mpsc::Sender<Job>>,
}

/// How many shards the writer runs: one per core, at least two.
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_SHARDS)
}

fn shard_of(visitor: &str, shards: usize) -> usize {
    let h = visitor
        .get(..8)
        .and_then(|p| u32::from_str_radix(p, 16).ok())
        .unwrap_or_else(|| {
            visitor
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31) ^ u32::from(b))
        });
    h as usize % shards
}

impl Writer {
    /// Starts the shards with the visits rebuilt at start. `now` is the
    /// app's clock (µs).
    pub fn start(
        engine: Arc<Engine>,
        streams: Streams,
        live: Visits,
        now: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<Writer, WebError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| WebError::Setup(format!("no runtime for the visit writers: {e}")))?;
        let n = shard_count();
        let mut parts: Vec<Visits> = (0..n).map(|_| Visits::default()).collect();
        for v in live.iter() {
            let first = &v.first;
            parts[shard_of(&first.visitor, n)].restore(
                &first.site,
                &first.visitor,
                Some(v.clone()),
            );
        }
        metrics::LIVE_VISITS.set(live.len() as i64);
        let mut shards = Vec::with_capacity(n);
        for visits in parts {
            let (tx, rx) = mpsc::channel(QUEUE);
            handle.spawn(shard(
                engine.clone(),
                streams.clone(),
                visits,
                rx,
                now.clone(),
            ));
            shards.push(tx);
        }
        Ok(Writer { shards })
    }

    /// Writes `hits` (one request's events, for one or more sites);
    /// returns once they are durable.
    pub async fn write(&self, hits: Vec<Hit>) -> Result<usize, WebError> {
        let mut by_shard: HashMap<usize, Vec<Hit>> = HashMap::new();
        for h in hits {
            let i = shard_of(&h.visitor, self.shards.len());
            by_shard.entry(i).or_default().push(h);
        }
        let mut waits = Vec::with_capacity(by_shard.len());
        for (i, hits) in by_shard {
            let (done, wait) = oneshot::channel();
            self.shards[i]
                .try_send(Job { hits, done })
                .map_err(|_| overloaded())?;
            waits.push(wait);
        }
        let mut n = 0;
        for w in waits {
            n += w
                .await
                .map_err(|_| WebError::Engine(tally_engine::Error::Closed))??;
        }
        Ok(n)
    }
}

fn overloaded() -> WebError {
    WebError::Engine(tally_engine::Error::Overloaded {
        reason: "the web analytics writers' queues are full".into(),
        retry_after: Duration::from_secs(1),
    })
}

async fn shard(
    engine: Arc<Engine>,
    streams: Streams,
    mut visits: Visits,
    mut rx: mpsc::Receiver<Job>,
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(j) => j,
                None => return,
            },
            _ = sweep.tick() => {
                let gone = visits.sweep(now());
                metrics::LIVE_VISITS.sub(gone as i64);
                continue;
            }
        };
        let mut jobs = vec![first];
        let mut n = jobs[0].hits.len();
        while n < MAX_HITS {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.hits.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let before = visits.len();
        // Each hit's visit as it was before the hit, to put back (latest
        // first) if the rows are not written.
        let mut undo: Vec<(&Hit, Option<Visit>)> = Vec::with_capacity(n);
        let mut events = BatchBuilder::new();
        let mut sessions = BatchBuilder::new();
        let mut line = 0;
        for job in &jobs {
            for hit in &job.hits {
                line += 1;
                undo.push((hit, visits.get(&hit.site, &hit.visitor).cloned()));
                let r = visits.record(hit);
                visits::write_recorded(&mut events, &mut sessions, line, hit, &r);
            }
        }
        let result = append(&engine, &streams, events, sessions).await;
        if let Err(e) = &result {
            // The visits' rows were not written: their state goes back.
            if !e.visits_written {
                visits.put_back(undo);
            }
        }
        metrics::LIVE_VISITS.add(visits.len() as i64 - before as i64);
        for job in jobs {
            let r = match &result {
                Ok(()) => Ok(job.hits.len()),
                Err(e) => Err(e.to_web_error()),
            };
            let _ = job.done.send(r);
        }
    }
}

/// A failed write: whether the visits' record made it before the events'
/// failed.
pub(super) struct WriteFailed {
    pub visits_written: bool,
    pub error: tally_engine::Error,
}

impl WriteFailed {
    pub fn to_web_error(&self) -> WebError {
        use tally_engine::Error as E;
        match &self.error {
            E::Overloaded {
                reason,
                retry_after,
            } => WebError::Engine(E::Overloaded {
                reason: reason.clone(),
                retry_after: *retry_after,
            }),
            E::Unavailable {
                reason,
                retry_after,
            } => WebError::Engine(E::Unavailable {
                reason: reason.clone(),
                retry_after: *retry_after,
            }),
            E::Closed => WebError::Engine(E::Closed),
            E::TooLarge { size, limit } => WebError::Engine(E::TooLarge {
                size: *size,
                limit: *limit,
            }),
            other => WebError::Write(other.to_string()),
        }
    }
}

/// Appends the visits' rows and the events, as two records written
/// together (one group commit). Whichever is lost in a crash, the visits'
/// rows stay consistent: each `-1` row cancels a `+1` row written before
/// it, so sums never go wrong; a lost record only leaves a visit an event
/// short.
pub(super) async fn append(
    engine: &Engine,
    streams: &Streams,
    events: BatchBuilder,
    sessions: BatchBuilder,
) -> Result<(), WriteFailed> {
    let (events, sessions) = (events.finish(), sessions.finish());
    let n = events.len();
    let write = |stream: &str, batch: tally_ingest::Batch| {
        let stream = stream.to_string();
        async move {
            match batch.is_empty() {
                true => Ok(()),
                false => engine.ingest(&stream, batch).await.map(|_| ()),
            }
        }
    };
    let (v, e) = tokio::join!(
        write(&streams.visits, sessions),
        write(&streams.events, events)
    );
    let visits_written = v.is_ok();
    v.and(e).map_err(|error| WriteFailed {
        visits_written,
        error,
    })?;
    metrics::STORED.inc_by(n as u64);
    Ok(())
}
