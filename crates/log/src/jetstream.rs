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
//! The NATS client runs on the log's own small tokio runtime, so the log
//! works the same from any caller (the engine opens it from a blocking
//! thread, requests append from the server's runtime).

use crate::metrics::{APPEND_BYTES, APPEND_RECORDS, QUEUE_DEPTH, REPLAYED};
use crate::{AppendFuture, ApplyHook, Error, Log, Lsn, OpenReport, Result};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The oldest nats-server release cluster mode runs on: earlier ones lack
/// the mirror and acknowledgement fixes, per-message TTLs and atomic
/// batches that cluster mode relies on.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// Where the cluster's log lives and how it is kept.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// `nats://HOST:PORT` of one or more servers of the NATS cluster.
    pub servers: Vec<String>,
    /// This node's name: in its NATS connection's name and its message ids.
    pub node_id: String,
    /// The JetStream stream holding the log (created when missing).
    pub stream: String,
    /// Copies of each record JetStream keeps (1, 3 or 5).
    pub replicas: usize,
    /// A retried publish with the same id inside this window is stored once.
    pub duplicate_window: Duration,
    /// Records older than this leave the stream (0: kept by size only).
    pub max_age: Duration,
    /// The stream's size limit: past it, the oldest records leave.
    pub max_bytes: u64,
    /// A NATS credentials file (`.creds`), for servers that require one.
    pub credentials: Option<PathBuf>,
    /// Trusts this CA for the servers' certificates (and requires TLS).
    pub tls_ca: Option<PathBuf>,
    /// This node's client certificate and key, for servers that verify it.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Appends waiting for JetStream's acknowledgement before new ones are
    /// refused with [`Error::Busy`].
    pub queue_capacity: usize,
    /// Records larger than this are refused (the server's `max_payload`
    /// lowers it).
    pub max_record_bytes: usize,
    /// How long an append keeps publishing (the same id) while no server
    /// acknowledges, before it fails; how long opening waits for NATS.
    pub publish_timeout: Duration,
}

impl JetStreamOptions {
    pub fn new(servers: Vec<String>, node_id: impl Into<String>) -> Self {
        JetStreamOptions {
            servers,
            node_id: node_id.into(),
            stream: "TALLY".into(),
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 16 << 30,
            credentials: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            queue_capacity: 4096,
            max_record_bytes: 8 << 20,
            publish_timeout: Duration::from_secs(15),
        }
    }

    /// The one subject the stream holds.
    pub fn subject(&self) -> String {
        format!("tally.log.{}", self.stream)
    }
}

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
struct StreamState {
    first: Lsn,
    last: Lsn,
    messages: u64,
    bytes: u64,
    leader: Option<String>,
    peers: Vec<PeerStatus>,
}

struct Shared<A> {
    applied: AtomicU64,
    applied_tx: watch::Sender<Lsn>,
    depth: AtomicUsize,
    /// Attachments of this node's appends, by message id, until applied.
    pending: Mutex<HashMap<String, A>>,
    failed: Mutex<Option<String>>,
    state: Mutex<StreamState>,
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
    max_record_bytes: usize,
}

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
        let (client, js, info) = runtime.block_on(connect(&opts, &subject))?;
        let max_payload = client.server_info().max_payload;
        // Headers (the message id) take a little of the server's limit.
        let max_record_bytes = opts
            .max_record_bytes
            .min(max_payload.saturating_sub(1024).max(1024));
        let state = &info.state;
        let (first, last) = (state.first_sequence, state.last_sequence);
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
        });
        let (stop, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<Delivered>(1024);
        handle.spawn(consume(
            js.clone(),
            opts.stream.clone(),
            after + 1,
            tx,
            shared.clone(),
            stop_rx.clone(),
        ));
        let stream_handle = runtime.block_on(js.get_stream(&opts.stream)).ok();
        if let Some(s) = stream_handle {
            handle.spawn(refresh(s, shared.clone(), stop_rx.clone()));
        }

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
                js,
                subject,
                boot,
                next_id: AtomicU64::new(0),
                shared,
                apply: Mutex::new(Some(apply)),
                stop,
                max_record_bytes,
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
        }
    }

    fn publish(&self, id: String, payload: Vec<u8>) -> AppendFuture {
        let js = self.js.clone();
        let subject = self.subject.clone();
        let shared = self.shared.clone();
        let deadline = Instant::now() + self.opts.publish_timeout;
        let payload = Bytes::from(payload);
        let size = payload.len() as u64;
        let limit = self.max_record_bytes;
        let task = self.handle.spawn(async move {
            let result =
                publish_until_acknowledged(&js, &subject, &id, payload, limit, deadline).await;
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
                Err(e) => {
                    shared.pending.lock().remove(&id);
                    return Err(e);
                }
            };
            // Read-your-writes: answer once this node has applied it.
            let mut applied = shared.applied_tx.subscribe();
            loop {
                if *applied.borrow_and_update() >= seq {
                    return Ok(seq);
                }
                if let Some(why) = shared.failed.lock().clone() {
                    return Err(Error::Failed(why));
                }
                if applied.changed().await.is_err() {
                    return Err(Error::Closed);
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

/// Reads `"2.12.1"` (or `"v2.14.0-beta"`) as (major, minor).
pub fn server_version(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

async fn connect(
    opts: &JetStreamOptions,
    subject: &str,
) -> Result<(async_nats::Client, jetstream::Context, stream::Info)> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Error::Unavailable(format!("{what} ({}): {e}", opts.servers.join(",")))
    };
    let mut co = async_nats::ConnectOptions::new()
        .name(format!("tally {}", opts.node_id))
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                other => tracing::info!(event = %other, "NATS"),
            }
        });
    if let Some(path) = &opts.credentials {
        co = co
            .credentials_file(path)
            .await
            .map_err(|e| unavailable(&format!("reading {}", path.display()), &e))?;
    }
    if let Some(ca) = &opts.tls_ca {
        co = co.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
        co = co.add_client_certificate(cert.clone(), key.clone());
    }
    let deadline = Instant::now() + opts.publish_timeout;
    let client = loop {
        match co.clone().connect(opts.servers.as_slice()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot reach NATS yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(unavailable("connecting to NATS", &e)),
        }
    };
    let version = client.server_info().version;
    match server_version(&version) {
        Some(v) if v >= MIN_SERVER_VERSION => {}
        _ => {
            return Err(Error::Unavailable(format!(
            "nats-server {version} is too old: cluster mode needs {}.{} or later (docs/cluster.md)",
            MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
        )))
        }
    }
    let js = jetstream::new(client.clone());
    let config = stream::Config {
        name: opts.stream.clone(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        duplicate_window: opts.duplicate_window,
        max_age: opts.max_age,
        max_bytes: i64::try_from(opts.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        allow_direct: true,
        ..Default::default()
    };
    // Several nodes may start at once, and the meta leader may be being
    // elected: retry until the deadline.
    loop {
        let attempt = async {
            let mut s = js
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let info = s.info().await.map_err(|e| e.to_string())?.clone();
            Ok::<_, String>(info)
        };
        match attempt.await {
            Ok(info) => {
                if !info.config.subjects.iter().any(|s| s == subject) {
                    return Err(Error::Diverged(format!(
                        "stream {} exists with subjects {:?}, not {subject}: name another stream (--cluster-stream)",
                        opts.stream, info.config.subjects
                    )));
                }
                if info.config.num_replicas != opts.replicas {
                    tracing::warn!(
                        stream = %opts.stream,
                        has = info.config.num_replicas,
                        asked = opts.replicas,
                        "the stream exists with another replica count; it is kept as it is"
                    );
                }
                return Ok((client, js, info));
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, stream = %opts.stream, "cannot open the stream yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(unavailable(&format!("opening stream {}", opts.stream), &e)),
        }
    }
}

fn stream_state(info: &stream::Info) -> StreamState {
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

/// Publishes `payload` with message id `id` until a server acknowledges
/// it. Each attempt waits for its acknowledgement; a lost acknowledgement
/// (a server killed, a leader elected) is retried with the same id, which
/// JetStream stores once.
async fn publish_until_acknowledged(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: Bytes,
    limit: usize,
    deadline: Instant,
) -> Result<jetstream::publish::PublishAck> {
    let mut wait = Duration::from_millis(50);
    loop {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
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

/// Reads the stream from `from` in order and forwards each record to the
/// apply thread. The ordered consumer recreates itself after a server or
/// leader change; when it ends, it is made again from the next sequence.
async fn consume(
    js: jetstream::Context,
    stream: String,
    from: Lsn,
    tx: mpsc::Sender<Delivered>,
    shared: Arc<Shared<impl Send + 'static>>,
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
        loop {
            let m = tokio::select! {
                m = messages.next() => m,
                _ = stop.changed() => return,
            };
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
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string());
            let payload = m.payload.clone();
            if tx.send(Delivered { seq, id, payload }).await.is_err() {
                return;
            }
            next = seq + 1;
        }
    }
}

/// Keeps the stream's state (for the lag and `/v1/cluster`) fresh.
async fn refresh<A>(
    mut s: jetstream::stream::Stream,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_are_read_and_compared() {
        assert_eq!(server_version("2.12.1"), Some((2, 12)));
        assert_eq!(server_version("v2.14.0-beta.2"), Some((2, 14)));
        assert_eq!(server_version("2.9.10"), Some((2, 9)));
        assert!(server_version("2.9.10").unwrap() < MIN_SERVER_VERSION);
        assert!(server_version("3.0.0").unwrap() >= MIN_SERVER_VERSION);
        assert_eq!(server_version("garbage"), None);
    }
}
