//! The log as a NATS JetStream stream: cluster mode's source of truth.
//!
//! One record is one message on the stream's one subject, and the stream
//! sequence is the record's LSN. JetStream replicates each message to the
//! stream's replicas before it acknowledges the publish (and, with the
//! server's `sync_interval: always`, fsyncs it there first), so an
//! acknowledged record survives the loss of any node, tally's or NATS'.
//!
//! Every node reads the whole stream, in sequence order, through an
//! ordered consumer and hands each record to the apply hook: all nodes
//! apply the same records in the same order, so all answer alike once
//! they have applied the same sequence.
//!
//! An append publishes with a `Nats-Msg-Id` header (the client's
//! idempotency key, or a fresh id), retries the publish with that same id
//! until JetStream acknowledges it or a deadline passes (a retry inside the
//! stream's duplicate window is stored once), and resolves only when this
//! node has applied the acknowledged sequence: read-your-writes on the node
//! that took the write, as with the local log.
//!
//! A record larger than one NATS message (the server's `max_payload`) is
//! put in the shared archive first, under its SHA-256, and the stream gets
//! a pointer to it (a `Tally-Claim` header, no payload): the claim check.
//! Every node fetches and checks it before applying, so the batch stays
//! one record. Claims older than the stream's history are removed.
//!
//! The NATS client runs on the log's own small tokio runtime, so the log
//! works the same from any caller (the engine opens it from a blocking
//! thread, requests append from the server's runtime).

use crate::metrics::{APPEND_BYTES, APPEND_RECORDS, QUEUE_DEPTH, REPLAYED};
use crate::{AppendFuture, ApplyHook, ClaimStore, Error, Log, Lsn, OpenReport, Result};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

mod channel;
mod claims;
mod connect;
mod keys;
mod lease;
mod promote;
mod status;
pub use channel::{CallError, Channel, Listener, Request};
use claims::{fetch_claim, publish_claim, sweep_claims};
use connect::{connect, mirror_reaches, MIRROR_WAIT};
pub use connect::{server_version, JetStreamOptions, MIN_SERVER_VERSION};
pub use keys::{valid_key, Created, Entry as SharedEntry, SharedKeys};
pub use lease::{Lease, LeaseStatus};
pub use promote::{promote, Promoted};
use status::{refresh, stream_state, StreamState};
pub use status::{ClusterStatus, PeerStatus, ServerStatus};

/// The lease for work done by one node at a time: the bootstrap
/// checkpoint, sweeping claim objects.
pub const MAINTENANCE_LEASE: &str = "maintenance";

struct Shared<A> {
    applied: AtomicU64,
    applied_tx: watch::Sender<Lsn>,
    depth: AtomicUsize,
    /// Attachments of this node's appends, by message id, until applied.
    pending: Mutex<HashMap<String, A>>,
    failed: Mutex<Option<String>>,
    state: Mutex<StreamState>,
    /// When this node last knew it had applied everything the stream held.
    current: Mutex<status::Currency>,
}

impl<A> Shared<A> {
    fn fail(&self, why: String) {
        tracing::error!(reason = %why, "the cluster log stopped applying");
        let mut f = self.failed.lock();
        if f.is_none() {
            *f = Some(why);
        }
    }
}

/// The log on a JetStream stream (see the module comment).
pub struct JetStreamLog<A> {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    client: async_nats::Client,
    js: jetstream::Context,
    opts: JetStreamOptions,
    subject: String,
    /// Message ids of appends without a client key: node id, boot nonce,
    /// counter.
    boot: String,
    next_id: AtomicU64,
    shared: Arc<Shared<A>>,
    apply: Mutex<Option<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// The largest record taken (larger ones are refused).
    max_record_bytes: usize,
    /// The largest record sent as one message (larger ones as a claim).
    message_limit: usize,
    maintenance: Lease,
}

/// The header naming a record's claim object (the record is not in the
/// message).
const CLAIM: &str = "Tally-Claim";

/// Records between the consumer and the apply thread.
struct Delivered {
    seq: Lsn,
    id: Option<String>,
    payload: Bytes,
}

impl<A: Send + 'static> JetStreamLog<A> {
    /// Connects, creates the stream when missing, calls `replay` for every
    /// record above `after` that the stream held at open, then applies
    /// every later record with `hook` as it arrives. Fails when the stream
    /// no longer holds the records right after `after` (the node is too far
    /// behind and must bootstrap), or holds fewer records than the node has
    /// applied (a different stream). Blocking: call it outside async
    /// contexts.
    pub fn open(
        opts: JetStreamOptions,
        after: Lsn,
        replay: &mut dyn FnMut(Lsn, &[u8]),
        hook: ApplyHook<A>,
    ) -> Result<(JetStreamLog<A>, OpenReport)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tally-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::Unavailable(format!("starting the NATS client's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let subject = opts.subject();
        let (client, js, mut info) = runtime.block_on(connect(&opts, &subject))?;
        if opts.home_domain.is_some() && after > info.state.last_sequence {
            // A replica region's mirror, just made or cut off for a
            // while, may not yet hold what this node applied (from a
            // bootstrap checkpoint, or before a restart): wait for it.
            info = runtime.block_on(mirror_reaches(&js, &opts, after, info));
        }
        let max_payload = client.server_info().max_payload;
        // Headers (the message id) take a little of the server's limit.
        let message_limit = max_payload.saturating_sub(1024).max(1024);
        let max_record_bytes = match opts.claims {
            Some(_) => opts.max_record_bytes,
            None => opts.max_record_bytes.min(message_limit),
        };
        let state = &info.state;
        let (first, last) = (state.first_sequence, state.last_sequence);
        if after > last && opts.home_domain.is_some() {
            return Err(Error::Unavailable(format!(
                "this node has applied records up to {after}, but this region's mirror of stream {} holds only up to {last} after {} s: is the leaf node to the home region (domain {}) up?",
                opts.stream,
                MIRROR_WAIT.as_secs(),
                opts.home_domain.as_deref().unwrap_or_default()
            )));
        }
        if after > last {
            return Err(Error::Diverged(format!(
                "this node has applied records up to {after}, but stream {} ends at {last}: it is not the stream this data directory was written from (or it lost records); start the node on an empty data directory to join this stream",
                opts.stream
            )));
        }
        if last > after && first > after + 1 {
            return Err(Error::Behind {
                applied: after,
                first,
            });
        }
        tracing::info!(
            stream = %opts.stream,
            first_seq = first,
            last_seq = last,
            applied = after,
            replicas = info.config.num_replicas,
            server = %client.server_info().server_name,
            version = %client.server_info().version,
            "cluster log open"
        );

        let (applied_tx, _) = watch::channel(after);
        let shared = Arc::new(Shared {
            applied: AtomicU64::new(after),
            applied_tx,
            depth: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
            state: Mutex::new(stream_state(&info)),
            current: Mutex::new(status::Currency::default()),
        });
        let (stop, stop_rx) = watch::channel(false);
        // Writes, buckets and the stream's state go to the home region;
        // records are read from this region's copy of the stream (the
        // same one, at home).
        let home = opts.home(&client);
        let maintenance = if opts.home_domain.is_some() {
            // A replica region's node never does the cluster's one-node
            // work: its view of the log is behind the home region's.
            Lease::never(MAINTENANCE_LEASE)
        } else {
            let leases = runtime
                .block_on(lease::bucket(
                    &home,
                    &opts.stream,
                    opts.lease_ttl,
                    opts.replicas,
                ))
                .map_err(Error::Unavailable)?;
            lease::spawn(
                &handle,
                leases,
                MAINTENANCE_LEASE,
                &opts.node_id,
                opts.lease_ttl,
                stop_rx.clone(),
            )
        };
        let (tx, mut rx) = mpsc::channel::<Delivered>(1024);
        handle.spawn(consume(
            js.clone(),
            opts.stream.clone(),
            after + 1,
            tx,
            shared.clone(),
            opts.claims.clone(),
            stop_rx.clone(),
        ));
        if let (Some(claims), false) = (&opts.claims, opts.max_age.is_zero()) {
            handle.spawn(sweep_claims(
                claims.clone(),
                maintenance.clone(),
                opts.claim_prefix(),
                opts.max_age,
                stop_rx.clone(),
            ));
        }
        handle.spawn(refresh(
            home.clone(),
            opts.stream.clone(),
            shared.clone(),
            stop_rx.clone(),
        ));

        // Replay what the stream held at open, on this thread.
        let mut report = OpenReport {
            first_lsn: (last >= first && first > 0).then_some(first),
            ..OpenReport::default()
        };
        let mut applied = after;
        while applied < last {
            let Some(d) = rx.blocking_recv() else {
                let why = shared.failed.lock().clone();
                return Err(Error::Unavailable(why.unwrap_or_else(|| {
                    "the stream's consumer ended during replay".into()
                })));
            };
            replay(d.seq, &d.payload);
            applied = d.seq;
            report.replayed += 1;
        }
        REPLAYED.inc_by(report.replayed);
        report.last_lsn = applied;
        shared.applied.store(applied, Ordering::Release);
        shared.applied_tx.send_replace(applied);

        let applier = shared.clone();
        let apply = std::thread::Builder::new()
            .name("tally-log-apply".into())
            .spawn(move || apply_loop(applier, rx, hook))
            .map_err(|e| Error::Unavailable(format!("starting the apply thread: {e}")))?;
        let boot = format!("{}-{:016x}", opts.node_id, boot_nonce());
        Ok((
            JetStreamLog {
                runtime: Mutex::new(Some(runtime)),
                handle,
                client,
                js: home,
                subject,
                boot,
                next_id: AtomicU64::new(0),
                shared,
                apply: Mutex::new(Some(apply)),
                stop,
                max_record_bytes,
                message_limit,
                maintenance,
                opts,
            },
            report,
        ))
    }

    /// The stream, the node's place in it and its connection.
    pub fn status(&self) -> ClusterStatus {
        let s = self.shared.state.lock().clone();
        let applied = self.shared.applied.load(Ordering::Acquire);
        let info = self.client.server_info();
        let connection = match self.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "pending",
        };
        ClusterStatus {
            node_id: self.opts.node_id.clone(),
            stream: self.opts.stream.clone(),
            subject: self.subject.clone(),
            applied_seq: applied,
            stream_last_seq: s.last.max(applied),
            stream_first_seq: s.first,
            stream_messages: s.messages,
            stream_bytes: s.bytes,
            lag: s.last.saturating_sub(applied),
            staleness_ms: self.shared.current.lock().staleness().as_millis() as u64,
            home_domain: self.opts.home_domain.clone(),
            replicas: self.opts.replicas,
            leader: s.leader,
            peers: s.peers,
            connection: connection.into(),
            server: (!info.version.is_empty()).then(|| ServerStatus {
                name: info.server_name,
                version: info.version,
                max_payload: info.max_payload,
            }),
            failed: self.shared.failed.lock().clone(),
            leases: vec![self.maintenance.status()],
        }
    }

    /// The lease for work done once in the cluster.
    pub fn maintenance_lease(&self) -> &Lease {
        &self.maintenance
    }

    fn publish(&self, id: String, payload: Vec<u8>) -> AppendFuture {
        let js = self.js.clone();
        let subject = self.subject.clone();
        let shared = self.shared.clone();
        let deadline = Instant::now() + self.opts.publish_timeout;
        let wait_for_apply = self.opts.publish_timeout;
        let home_domain = self.opts.home_domain.clone();
        let payload = Bytes::from(payload);
        let size = payload.len() as u64;
        let limit = self.max_record_bytes;
        let claim = (payload.len() > self.message_limit)
            .then(|| self.opts.claims.clone())
            .flatten()
            .map(|store| (store, self.opts.claim_prefix()));
        let task = self.handle.spawn(async move {
            let result = match claim {
                Some((store, prefix)) => {
                    publish_claim(
                        &js, &subject, &id, payload, &*store, &prefix, limit, deadline,
                    )
                    .await
                }
                None => {
                    publish_until_acknowledged(&js, &subject, &id, payload, None, limit, deadline)
                        .await
                }
            };
            let seq = match result {
                Ok(ack) => {
                    if ack.duplicate {
                        // Stored before: this copy's attachment is never
                        // delivered (the record is decoded instead).
                        shared.pending.lock().remove(&id);
                        crate::metrics::DUPLICATES.inc();
                    } else {
                        APPEND_RECORDS.inc();
                        APPEND_BYTES.inc_by(size);
                    }
                    ack.sequence
                }
                Err(Error::Unavailable(why)) if home_domain.is_some() => {
                    shared.pending.lock().remove(&id);
                    return Err(Error::Unavailable(format!(
                        "{why}. This node is in a replica region and forwards writes to the home region (JetStream domain {}) through its NATS leaf node: the home region may be unreachable; write there, or promote this region if it is lost (docs/cluster.md)",
                        home_domain.as_deref().unwrap_or_default()
                    )));
                }
                Err(e) => {
                    shared.pending.lock().remove(&id);
                    return Err(e);
                }
            };
            // Read-your-writes: answer once this node has applied it, or
            // say, after as long again as a publish may take, that it is
            // stored but not yet applied here (a retry with the same key
            // stores nothing more).
            let mut applied = shared.applied_tx.subscribe();
            let apply_deadline = tokio::time::Instant::now() + wait_for_apply;
            loop {
                if *applied.borrow_and_update() >= seq {
                    return Ok(seq);
                }
                if let Some(why) = shared.failed.lock().clone() {
                    return Err(Error::Failed(why));
                }
                match tokio::time::timeout_at(apply_deadline, applied.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Error::Closed),
                    Err(_) => {
                        crate::metrics::APPLY_TIMEOUTS.inc();
                        return Err(Error::Unavailable(format!(
                            "JetStream stored the record as sequence {seq}, but this node has not applied it within {} s (it has applied up to {}); retry with the same Idempotency-Key, or read elsewhere",
                            wait_for_apply.as_secs(),
                            *applied.borrow()
                        )));
                    }
                }
            }
        });
        let shared = self.shared.clone();
        Box::pin(async move {
            let r = task.await.unwrap_or(Err(Error::Closed));
            let d = shared.depth.fetch_sub(1, Ordering::Relaxed) - 1;
            QUEUE_DEPTH.set(d as i64);
            r
        })
    }
}

impl<A: Send + 'static> Log<A> for JetStreamLog<A> {
    fn append(&self, payload: Vec<u8>, attachment: Option<A>) -> AppendFuture {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.append_once(format!("{}-{n}", self.boot), payload, attachment)
    }

    fn append_once(&self, id: String, payload: Vec<u8>, attachment: Option<A>) -> AppendFuture {
        let size = payload.len();
        if size > self.max_record_bytes {
            return ready(Err(Error::TooLarge {
                size,
                limit: self.max_record_bytes,
            }));
        }
        if let Some(why) = self.shared.failed.lock().clone() {
            return ready(Err(Error::Failed(why)));
        }
        if *self.stop.borrow() {
            return ready(Err(Error::Closed));
        }
        let d = self.shared.depth.fetch_add(1, Ordering::Relaxed) + 1;
        if d > self.opts.queue_capacity {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
            return ready(Err(Error::Busy {
                capacity: self.opts.queue_capacity,
            }));
        }
        QUEUE_DEPTH.set(d as i64);
        if let Some(a) = attachment {
            self.shared.pending.lock().insert(id.clone(), a);
        }
        self.publish(id, payload)
    }

    fn truncate_through(&self, _lsn: Lsn) -> Result<()> {
        // The stream keeps its history by age and size: other nodes, and
        // nodes that join later, still read these records.
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        self.shared.applied.load(Ordering::Acquire)
    }

    fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.stop.send_replace(true);
        if let Some(t) = self.apply.lock().take() {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.lock().take() {
            let client = self.client.clone();
            let _ = rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(2), client.flush()).await
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }

    fn cluster(&self) -> Option<ClusterStatus> {
        Some(self.status())
    }

    fn holds_maintenance_lease(&self) -> bool {
        self.maintenance.held()
    }

    fn staleness(&self) -> Option<Duration> {
        Some(self.shared.current.lock().staleness())
    }

    fn channel(&self, name: &str) -> Option<Channel> {
        Some(Channel::new(
            self.client.clone(),
            format!("tally.work.{}.{name}", self.opts.stream),
        ))
    }

    fn shared_keys(
        &self,
        name: &str,
        max_age: Duration,
        per_key_ttl: bool,
    ) -> Option<Result<SharedKeys>> {
        let open = SharedKeys::open(
            &self.js,
            self.handle.clone(),
            &self.opts.stream,
            name,
            max_age,
            self.opts.replicas,
            per_key_ttl,
            self.opts.home_subject_prefix(),
        );
        Some(self.handle.block_on(open).map_err(Error::Unavailable))
    }
}

impl<A> Drop for JetStreamLog<A> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.apply.lock().take() {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

fn ready(r: Result<Lsn>) -> AppendFuture {
    Box::pin(std::future::ready(r))
}

fn boot_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Publishes `payload` with message id `id` until a server acknowledges
/// it. Each attempt waits for its acknowledgement; a lost acknowledgement
/// (a server killed, a leader elected) is retried with the same id, which
/// JetStream stores once.
pub(super) async fn publish_until_acknowledged(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: Bytes,
    claim: Option<&str>,
    limit: usize,
    deadline: Instant,
) -> Result<jetstream::publish::PublishAck> {
    let mut wait = Duration::from_millis(50);
    loop {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        if let Some(key) = claim {
            headers.insert(CLAIM, key);
        }
        let attempt = async {
            let ack = js
                .publish_with_headers(subject.to_string(), headers, payload.clone())
                .await
                .map_err(|e| {
                    (
                        e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded,
                        e.to_string(),
                    )
                })?;
            ack.await.map_err(|e| (false, e.to_string()))
        };
        match attempt.await {
            Ok(ack) => return Ok(ack),
            Err((true, e)) => {
                tracing::warn!(error = %e, "a record over the NATS server's max_payload");
                return Err(Error::TooLarge {
                    size: payload.len(),
                    limit,
                });
            }
            Err((false, e)) => {
                crate::metrics::PUBLISH_RETRIES.inc();
                if Instant::now() + wait >= deadline {
                    return Err(Error::Unavailable(format!(
                        "JetStream did not acknowledge the record: {e}"
                    )));
                }
                tracing::debug!(error = %e, id, "publish not acknowledged; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// How long each pull of the stream reader lasts. The client library
/// derives the idle heartbeat from it (half of it) and makes the consumer
/// again after two missed heartbeats: an ordered consumer is one replica,
/// in memory, on one server, and when that server is killed or paused its
/// reader goes silent. With the library's 30 s pulls that took a minute to
/// notice; with these, about four seconds.
const READER_PULL_EXPIRY: Duration = Duration::from_secs(2);

/// A reader that has delivered nothing for this long while the stream holds
/// records this node has not applied is made again from the next sequence.
/// The library's own recovery was not enough: in the fault soak, readers
/// whose server was killed stayed silent for more than 8 s (the library
/// first deletes the old consumer, waiting out the request when its server
/// is gone, and its retries back off to ten seconds apart).
const READER_STALL: Duration = Duration::from_secs(3);

/// Reads the stream from `from` in order and forwards each record to the
/// apply thread. The ordered consumer recreates itself after a server or
/// leader change; when it ends or stalls, it is made again from the next
/// sequence.
async fn consume(
    js: jetstream::Context,
    stream: String,
    from: Lsn,
    tx: mpsc::Sender<Delivered>,
    shared: Arc<Shared<impl Send + 'static>>,
    claims: Option<Arc<dyn ClaimStore>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = from;
    loop {
        if *stop.borrow() {
            return;
        }
        let messages = async {
            let s = js.get_stream(&stream).await.map_err(|e| e.to_string())?;
            let c = s
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    max_expires: READER_PULL_EXPIRY,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            c.messages().await.map_err(|e| e.to_string())
        };
        let mut messages = match messages.await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, from = next, "cannot read the stream yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let mut progress = Instant::now();
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let m = tokio::select! {
                m = messages.next() => m,
                _ = check.tick() => {
                    let last = shared.state.lock().last;
                    if last >= next && progress.elapsed() >= READER_STALL {
                        tracing::warn!(
                            next,
                            stream_last = last,
                            idle_s = progress.elapsed().as_secs(),
                            "the stream reader delivered nothing while records wait; making it again"
                        );
                        crate::metrics::READER_RESTARTS.inc();
                        break;
                    }
                    continue;
                }
                _ = stop.changed() => return,
            };
            progress = Instant::now();
            let m = match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading the stream; the consumer recovers");
                    continue;
                }
                None => break,
            };
            let Ok(info) = m.info() else { continue };
            let seq = info.stream_sequence;
            if seq < next {
                continue;
            }
            if seq > next {
                shared.fail(format!(
                    "the stream no longer holds records {next}..{}: they left it (by age or size) before this node applied them; start the node on an empty data directory to bootstrap",
                    seq - 1
                ));
                return;
            }
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let id = header(async_nats::header::NATS_MESSAGE_ID.as_ref());
            let payload = match header(CLAIM) {
                None => m.payload.clone(),
                Some(key) => {
                    match fetch_claim(claims.as_deref(), &key, seq, &shared, &mut stop).await {
                        Some(p) => p,
                        None => return,
                    }
                }
            };
            if tx.send(Delivered { seq, id, payload }).await.is_err() {
                return;
            }
            next = seq + 1;
            progress = Instant::now();
        }
    }
}

fn apply_loop<A>(
    shared: Arc<Shared<A>>,
    mut rx: mpsc::Receiver<Delivered>,
    mut hook: ApplyHook<A>,
) {
    while let Some(d) = rx.blocking_recv() {
        let attachment =
            d.id.as_ref()
                .and_then(|id| shared.pending.lock().remove(id));
        hook(d.seq, &d.payload, attachment);
        shared.applied.store(d.seq, Ordering::Release);
        shared.applied_tx.send_replace(d.seq);
        crate::metrics::APPLIED_SEQ.set(d.seq as i64);
    }
}
