//! What `/v1/cluster` and the metrics show of the stream and this node's
//! place in it, refreshed in the background.

use super::{jetstream, stream, Shared};
use crate::Lsn;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the stream and the node's connection look like now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub node_id: String,
    pub stream: String,
    pub subject: String,
    /// The last sequence this node applied.
    pub applied_seq: Lsn,
    /// The stream's last sequence, as last seen (0 when never seen).
    pub stream_last_seq: Lsn,
    /// The stream's first sequence still held.
    pub stream_first_seq: Lsn,
    pub stream_messages: u64,
    pub stream_bytes: u64,
    /// Records the stream holds that this node has not applied.
    pub lag: u64,
    /// How old this node's view of the stream may be: the time since it
    /// last knew it had applied every record the stream held (see
    /// [`Currency`]).
    pub staleness_ms: u64,
    /// The home region's JetStream domain, on a node of a replica region
    /// (it reads a mirror and forwards writes there); absent at home.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_domain: Option<String>,
    pub replicas: usize,
    /// The stream's leader and replicas as JetStream reports them.
    pub leader: Option<String>,
    pub peers: Vec<PeerStatus>,
    /// `connected`, `disconnected` or `pending`.
    pub connection: String,
    pub server: Option<ServerStatus>,
    /// Why this node stopped applying, when it has.
    pub failed: Option<String>,
    /// The leases for work done by one node at a time.
    pub leases: Vec<super::LeaseStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub current: bool,
    pub lag: Option<u64>,
    pub active_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerStatus {
    pub name: String,
    pub version: String,
    pub max_payload: usize,
}

/// A stream-state snapshot kept up to date by the log's own refresher.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamState {
    pub(super) first: Lsn,
    pub(super) last: Lsn,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) leader: Option<String>,
    pub(super) peers: Vec<PeerStatus>,
}

pub(super) fn stream_state(info: &stream::Info) -> StreamState {
    let cluster = info.cluster.as_ref();
    StreamState {
        first: info.state.first_sequence,
        last: info.state.last_sequence,
        messages: info.state.messages,
        bytes: info.state.bytes,
        leader: cluster.and_then(|c| c.leader.clone()),
        peers: cluster
            .map(|c| {
                c.replicas
                    .iter()
                    .map(|r| PeerStatus {
                        name: r.name.clone(),
                        current: r.current,
                        lag: r.lag,
                        active_ms: r.active.as_millis() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// When a node last knew it was current: each look at the stream notes
/// (when it asked, the stream's last sequence); once the node has applied
/// that sequence, it was current as of that moment. Under steady writes
/// that is about the apply lag plus the time between looks; with the NATS
/// connection lost, no look succeeds and it grows.
#[derive(Debug)]
pub struct Currency {
    looks: VecDeque<(Instant, Lsn)>,
    current_at: Instant,
}

/// Looks kept while the node is behind (two a second: a minute's worth).
const MAX_LOOKS: usize = 120;

impl Default for Currency {
    fn default() -> Self {
        Currency {
            looks: VecDeque::new(),
            current_at: Instant::now(),
        }
    }
}

impl Currency {
    /// The stream held up to `last` when asked at `at`; the node has
    /// applied `applied`.
    pub fn saw(&mut self, at: Instant, last: Lsn, applied: Lsn) {
        if self.looks.len() == MAX_LOOKS {
            // Behind for a minute: the oldest looks' times no longer
            // matter, the staleness is that large anyway.
            self.looks.pop_front();
        }
        self.looks.push_back((at, last));
        self.applied(applied);
    }

    /// The node has applied up to `applied`.
    pub fn applied(&mut self, applied: Lsn) {
        while let Some(&(at, last)) = self.looks.front() {
            if last > applied {
                break;
            }
            self.current_at = self.current_at.max(at);
            self.looks.pop_front();
        }
    }

    pub fn staleness(&self) -> Duration {
        self.current_at.elapsed()
    }
}

/// Keeps the stream's state (for the lag, the staleness and
/// `/v1/cluster`) fresh. It asks the home region's stream: in a replica
/// region, how far the node is behind the home region is the staleness
/// its readers see, the mirror's own delay included.
pub(super) async fn refresh<A>(
    js: jetstream::Context,
    stream: String,
    shared: Arc<Shared<A>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut handle: Option<stream::Stream> = None;
    loop {
        let asked = Instant::now();
        if handle.is_none() {
            handle = js.get_stream(&stream).await.ok();
        }
        let seen = match &mut handle {
            Some(s) => match s.info().await {
                Ok(info) => {
                    let st = stream_state(info);
                    crate::metrics::STREAM_LAST_SEQ.set(st.last as i64);
                    let last = st.last;
                    *shared.state.lock() = st;
                    Some(last)
                }
                Err(_) => None,
            },
            None => None,
        };
        let applied = shared.applied.load(Ordering::Acquire);
        let last = shared.state.lock().last;
        crate::metrics::APPLY_LAG.set(last.saturating_sub(applied) as i64);
        let staleness = {
            let mut c = shared.current.lock();
            match seen {
                Some(last) => c.saw(asked, last, applied),
                None => c.applied(applied),
            }
            c.staleness()
        };
        crate::metrics::STALENESS.set(staleness.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_current_as_of_the_last_look_whose_records_it_applied() {
        let t0 = Instant::now();
        let mut c = Currency {
            looks: VecDeque::new(),
            current_at: t0,
        };
        let ms = |n| t0 + Duration::from_millis(n);
        c.saw(ms(100), 10, 10);
        assert_eq!(c.current_at, ms(100));
        // Behind: the looks wait until their records are applied.
        c.saw(ms(600), 20, 12);
        c.saw(ms(1100), 30, 15);
        assert_eq!(c.current_at, ms(100));
        c.applied(25);
        assert_eq!(c.current_at, ms(600));
        c.saw(ms(1600), 30, 30);
        assert_eq!(c.current_at, ms(1600));
        assert!(c.looks.is_empty());
        // Never further behind than its oldest kept look.
        for i in 0..(MAX_LOOKS as u64 + 10) {
            c.saw(ms(2000 + i), 100 + i, 31);
        }
        assert_eq!(c.looks.len(), MAX_LOOKS);
        assert_eq!(c.current_at, ms(1600));
        c.applied(u64::MAX);
        assert_eq!(c.current_at, ms(2000 + MAX_LOOKS as u64 + 9));
    }
}
