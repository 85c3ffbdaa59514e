//! Leases: work that must be done by one node at a time (the bootstrap
//! checkpoint, sweeping claim objects) goes to the node holding a lease in
//! a JetStream key-value bucket, `<stream>_LEASES`.
//!
//! A node takes a free lease by creating its key (which fails while
//! another node's value is there) and keeps it by updating the key at the
//! revision it last wrote, every quarter of the lease's time. The bucket's
//! `max_age` is the lease's time, so the value of a node that stopped
//! renewing (killed, paused, cut off) expires, and another node creates the
//! key within a lease time and a renewal interval. A node that finds its
//! revision overwritten has lost the lease. On a clean close the holder
//! deletes the key, so another node takes over at once.
//!
//! A node counts itself the holder only until half the lease's time after
//! the start of its last successful renewal: the key cannot have expired
//! by then, so two nodes never both count themselves holders (beyond a
//! clock running at half speed).

use async_nats::jetstream::{self, kv};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One lease, contended for in the background for the log's lifetime.
#[derive(Clone)]
pub struct Lease {
    name: String,
    state: Arc<Mutex<LeaseState>>,
}

#[derive(Default)]
struct LeaseState {
    /// Held until then (a renewal moves it on).
    until: Option<Instant>,
    /// Who holds it, as last read.
    holder: Option<String>,
    /// Times this node took it.
    taken: u64,
}

/// A lease as `/v1/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseStatus {
    pub name: String,
    /// The node holding it, as this node last saw.
    pub holder: Option<String>,
    /// Whether this node holds it now.
    pub held: bool,
    /// Times this node has taken it since it started.
    pub taken: u64,
}

impl Lease {
    /// Whether this node holds the lease now: do the lease's work only
    /// while this says so.
    pub fn held(&self) -> bool {
        self.state.lock().until.is_some_and(|t| Instant::now() < t)
    }

    /// A lease this node never contends for (a node of a replica region).
    pub(super) fn never(name: &str) -> Lease {
        Lease {
            name: name.to_string(),
            state: Arc::default(),
        }
    }

    pub fn status(&self) -> LeaseStatus {
        let s = self.state.lock();
        LeaseStatus {
            name: self.name.clone(),
            holder: s.holder.clone(),
            held: s.until.is_some_and(|t| Instant::now() < t),
            taken: s.taken,
        }
    }
}

/// The leases' bucket, created when missing.
pub(super) async fn bucket(
    js: &jetstream::Context,
    stream: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    let name = format!("{stream}_LEASES");
    match js.get_key_value(&name).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.clone(),
                description: "tally: which node does the work that must be done once".into(),
                history: 1,
                max_age: ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the key-value bucket {name}: {e}")),
    }
}

/// Starts contending for lease `name` as `node`.
pub(super) fn spawn(
    handle: &tokio::runtime::Handle,
    kv: kv::Store,
    name: &str,
    node: &str,
    ttl: Duration,
    stop: watch::Receiver<bool>,
) -> Lease {
    let lease = Lease {
        name: name.to_string(),
        state: Arc::default(),
    };
    handle.spawn(contend(kv, lease.clone(), node.to_string(), ttl, stop));
    lease
}

async fn contend(
    kv: kv::Store,
    lease: Lease,
    node: String,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let key = lease.name.clone();
    let mut revision: Option<u64> = None;
    loop {
        let started = Instant::now();
        match revision {
            None => match kv.create(&key, node.clone().into()).await {
                Ok(rev) => {
                    revision = Some(rev);
                    let mut s = lease.state.lock();
                    s.until = Some(started + ttl / 2);
                    s.holder = Some(node.clone());
                    s.taken += 1;
                    tracing::info!(lease = %key, "took the lease");
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if let Ok(Some(v)) = kv.get(&key).await {
                        lease.state.lock().holder = Some(String::from_utf8_lossy(&v).into_owned());
                    }
                }
                Err(e) => {
                    tracing::debug!(lease = %key, error = %e, "cannot reach the lease bucket")
                }
            },
            Some(rev) => match kv.update(&key, node.clone().into(), rev).await {
                Ok(rev) => {
                    revision = Some(rev);
                    lease.state.lock().until = Some(started + ttl / 2);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    revision = None;
                    let mut s = lease.state.lock();
                    s.until = None;
                    s.holder = None;
                    tracing::warn!(lease = %key, "lost the lease (it expired and another node took it)");
                }
                // Not renewed this time: held until its time runs out.
                Err(e) => tracing::warn!(lease = %key, error = %e, "renewing the lease"),
            },
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 4) => {}
            _ = stop.changed() => {
                if let Some(rev) = revision {
                    lease.state.lock().until = None;
                    let _ = tokio::time::timeout(Duration::from_secs(1), kv.delete_expect_revision(&key, Some(rev))).await;
                }
                return;
            }
        }
    }
}
