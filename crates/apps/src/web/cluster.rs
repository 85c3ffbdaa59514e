//! Web analytics in cluster mode: one node attributes every tracker event
//! to its visit, so a visitor's page views reaching several nodes at once
//! make the same visits as if one node had taken them all.
//!
//! A visit is a state that each event moves on (its last page, its
//! length, whether it bounced), written to the log as the collapsing rows
//! of the visits stream. Two nodes moving one visitor's visit from their
//! own memory would each start a visit, or each write a `-1` row for the
//! same state. So in a cluster the node holding the maintenance lease
//! keeps the live visits, and every node sends the events it takes there
//! (a NATS request on `tally.work.<stream>.web`, which also crosses to a
//! replica region): the holder's visit writer attributes them in the
//! order they come and appends the visits' rows and the events, as a
//! single node does, and every node applies those records. The Stats API
//! reads only what the log holds, so it answers alike on every node that
//! has applied the same sequence.
//!
//! A node that takes the lease over first waits out the longest time an
//! append of the former holder may still land (the publish timeout), then
//! applies the stream to its end and reads the live visits back from the
//! visits stream, as a restarting node does, before it listens. Meanwhile
//! tracker events are answered 503 with Retry-After.

use super::visits::{self, Hit};
use super::writer::{Streams, Writer};
use super::{metrics, WebError};
use std::sync::Arc;
use std::time::Duration;
use tally_engine::{CallError, Channel, Engine, Error as EngineError};

/// The work's name in the channel's subject.
pub(super) const WORK: &str = "web";

/// How often the holder checks that it still holds the lease, and a node
/// without it looks again.
const LEASE_LOOK: Duration = Duration::from_millis(250);

/// How long a tracker request waits for a holder to listen (a node taking
/// over) before it is answered 503.
const NO_HOLDER_WAIT: Duration = Duration::from_secs(2);

/// The holder's answer to a request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Answer {
    Stored(usize),
    /// This node no longer holds the lease: nothing was written.
    NotHolder,
    Failed {
        /// `overloaded`, `unavailable` or `write`.
        kind: String,
        reason: String,
        retry_after_ms: u64,
    },
}

/// Sends a node's tracker events to the holder's visit writer.
pub(super) struct RemoteWriter {
    channel: Channel,
    timeout: Duration,
}

fn unavailable(reason: String) -> WebError {
    WebError::Engine(EngineError::Unavailable {
        reason,
        retry_after: Duration::from_secs(1),
    })
}

impl RemoteWriter {
    /// `publish_timeout` is the cluster's: the holder's append takes at
    /// most twice it (publish, then apply).
    pub(super) fn new(channel: Channel, publish_timeout: Duration) -> RemoteWriter {
        RemoteWriter {
            channel,
            timeout: publish_timeout * 2 + Duration::from_secs(5),
        }
    }

    pub(super) async fn write(&self, hits: Vec<Hit>) -> Result<usize, WebError> {
        let body = serde_json::to_vec(&hits).map_err(|e| WebError::Write(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + NO_HOLDER_WAIT;
        loop {
            let answer = match self.channel.call(body.clone(), self.timeout).await {
                Ok(bytes) => serde_json::from_slice::<Answer>(&bytes)
                    .map_err(|e| WebError::Write(format!("the visit writer's answer: {e}")))?,
                // Nobody listens: nothing was written, try again shortly.
                Err(CallError::NoListener(_)) => Answer::NotHolder,
                Err(e @ CallError::TimedOut { .. }) => {
                    return Err(unavailable(format!("{e}; the events may have been stored")))
                }
                Err(e) => return Err(unavailable(e.to_string())),
            };
            match answer {
                Answer::Stored(n) => return Ok(n),
                Answer::NotHolder if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Answer::NotHolder => {
                    return Err(unavailable(
                        "no node writes web analytics' visits at the moment (one is taking over); retry".into(),
                    ))
                }
                Answer::Failed {
                    kind,
                    reason,
                    retry_after_ms,
                } => {
                    let retry_after = Duration::from_millis(retry_after_ms);
                    return Err(match kind.as_str() {
                        "overloaded" => WebError::Engine(EngineError::Overloaded {
                            reason,
                            retry_after,
                        }),
                        "unavailable" => WebError::Engine(EngineError::Unavailable {
                            reason,
                            retry_after,
                        }),
                        _ => WebError::Write(reason),
                    });
                }
            }
        }
    }
}

fn failed(e: WebError) -> Answer {
    let (kind, reason, retry_after) = match e {
        WebError::Engine(EngineError::Overloaded {
            reason,
            retry_after,
        }) => ("overloaded", reason, retry_after),
        WebError::Engine(EngineError::Unavailable {
            reason,
            retry_after,
        }) => ("unavailable", reason, retry_after),
        other => ("write", other.to_string(), Duration::ZERO),
    };
    Answer::Failed {
        kind: kind.into(),
        reason,
        retry_after_ms: retry_after.as_millis() as u64,
    }
}

/// Runs the visit writer whenever this node holds the maintenance lease,
/// for the app's lifetime.
pub(super) fn spawn_holder(
    engine: Arc<Engine>,
    streams: Streams,
    channel: Channel,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    publish_timeout: Duration,
) -> Result<(), WebError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| WebError::Setup(format!("no runtime for the visit writer: {e}")))?;
    handle.spawn(async move {
        loop {
            while !engine.holds_maintenance_lease() {
                tokio::time::sleep(LEASE_LOOK).await;
            }
            match hold(&engine, &streams, &channel, &clock, publish_timeout).await {
                Ok(()) => tracing::info!("web analytics: this node no longer writes the visits"),
                Err(e) => {
                    tracing::warn!(error = %e, "web analytics: cannot take over the visits; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            metrics::VISIT_WRITER.set(0);
        }
    });
    Ok(())
}

/// Takes the visits over and serves requests while the lease lasts.
async fn hold(
    engine: &Arc<Engine>,
    streams: &Streams,
    channel: &Channel,
    clock: &Arc<dyn Fn() -> i64 + Send + Sync>,
    publish_timeout: Duration,
) -> Result<(), String> {
    tracing::info!(
        wait_s = publish_timeout.as_secs(),
        "web analytics: taking over the visits once the former writer's last appends have landed"
    );
    tokio::time::sleep(publish_timeout).await;
    if !engine.holds_maintenance_lease() {
        return Ok(());
    }
    let last = engine.cluster().map(|c| c.stream_last_seq).unwrap_or(0);
    if !engine
        .wait_applied(last, publish_timeout.max(Duration::from_secs(5)))
        .await
    {
        return Err(format!("not caught up with the stream (at {last}) in time"));
    }
    let (e, s, now) = (engine.clone(), streams.visits.clone(), clock());
    let live = tokio::task::spawn_blocking(move || visits::rebuild(&e, &s, now))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let visits = live.len();
    let writer = Arc::new(
        Writer::start(engine.clone(), streams.clone(), live, clock.clone())
            .map_err(|e| e.to_string())?,
    );
    let mut listener = channel.listen().await?;
    metrics::VISIT_WRITER.set(1);
    tracing::info!(visits, "web analytics: this node writes the visits");
    let mut look = tokio::time::interval(LEASE_LOOK);
    loop {
        tokio::select! {
            request = listener.next() => {
                let Some(request) = request else { return Err("the NATS connection closed".into()) };
                let (engine, writer) = (engine.clone(), writer.clone());
                tokio::spawn(async move {
                    let answer = match serde_json::from_slice::<Vec<Hit>>(&request.payload) {
                        _ if !engine.holds_maintenance_lease() => Answer::NotHolder,
                        Ok(hits) => match writer.write(hits).await {
                            Ok(n) => Answer::Stored(n),
                            Err(e) => failed(e),
                        },
                        Err(e) => failed(WebError::Write(format!("a request to the visit writer: {e}"))),
                    };
                    let body = serde_json::to_vec(&answer).unwrap_or_default();
                    request.answer(body).await;
                });
            }
            _ = look.tick() => {
                if !engine.holds_maintenance_lease() {
                    return Ok(());
                }
            }
        }
    }
}
