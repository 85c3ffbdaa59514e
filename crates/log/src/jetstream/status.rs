//! What `/v1/cluster` and the metrics show of the stream and this node's
//! place in it, refreshed in the background.

use super::{stream, Shared};
use crate::Lsn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
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

/// Keeps the stream's state (for the lag and `/v1/cluster`) fresh.
pub(super) async fn refresh<A>(
    mut s: stream::Stream,
    shared: Arc<Shared<A>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Ok(info) = s.info().await {
            let st = stream_state(info);
            crate::metrics::STREAM_LAST_SEQ.set(st.last as i64);
            *shared.state.lock() = st;
        }
        let applied = shared.applied.load(Ordering::Acquire);
        let last = shared.state.lock().last;
        crate::metrics::APPLY_LAG.set(last.saturating_sub(applied) as i64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}
