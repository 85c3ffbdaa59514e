//! The engine: one durable, ordered path from a parsed batch to the store.
//!
//! `ingest` checks the batch against its stream's schema (reserving new
//! fields), refuses it if memory is full, encodes it and appends it to the
//! log; it returns only once the log has made the record durable and applied
//! it to the store, so an acknowledged event is both safe and visible.
//!
//! A background flusher turns the in-memory tail into Parquet segments when it
//! grows past a size or an age, then lets the log drop what the segments now
//! hold, then compacts. At open, the log is replayed from the catalog's
//! checkpoint, so a restart (even after `kill -9`) loses nothing that was
//! acknowledged and applies nothing twice.
//!
//! A maintenance thread copies sealed segments to the archive (when one is
//! configured) and enforces each stream's raw retention: segments whose
//! hour is older than the retention leave the data directory, once the
//! archive holds them. Queries and rollup rebuilds then read them there.
//!
//! Apps and the HTTP layer use only this crate's public interface.

mod apply;
mod backup;
mod checkpoint;
mod error;
pub use error::{Error, Result};
mod faults;
mod flush;
mod follow;
pub use follow::Follower;
mod history;
mod import;
mod inspect;
mod lock;
mod record;
mod rollups;
mod settings;
use apply::{RollupWorker, Sinks};
pub use backup::{restore, BackupReport, MANIFEST as BACKUP_MANIFEST};
use faults::Faults;
pub use faults::{panic_message, Fault};
use flush::flush_and_compact;
use history::{feed_history, History};
pub use import::{validate_batch_id, FinishedImport, ImportReceipt, ImportTxn, MAX_BATCH_ID_LEN};
pub use inspect::{
    Aggregate, ArchiveError, ArchiveStatus, BuildProgress, ColumnDef, Grain, RollupDef,
    RollupError, RollupState, RollupStatus, SchemaConflict, StreamInfo, StreamSchema,
};
use lock::DirLock;
pub use settings::{ClusterSettings, LogSettings, SyncPolicy, TailSettings};
mod maintain;
pub use checkpoint::CheckpointReport;
pub use maintain::Maintenance;
mod metrics;

use metrics::*;
use parking_lot::Mutex;
use record::Live;
pub use record::Record;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
pub use tally_archive::{Archive, ArchiveOptions, Location as ArchiveLocation, SyncReport};
use tally_ingest::{Batch, ColumnType};
pub use tally_log::{
    promote, valid_key, CallError, Channel, ClusterStatus, Created, JetStreamOptions, Lsn,
    Promoted, SharedEntry, SharedKeys, SyncMode,
};
use tally_log::{JetStreamLog, LocalLog, LocalLogOptions, Log, OpenReport};
use tally_rollup::{Loaded, RollupSet};
pub use tally_store::{FlushReport, StreamStats};
use tally_store::{Store, StoreOptions};

/// Registers the metrics of every stage below the HTTP layer.
pub fn init_metrics() {
    metrics::init();
    tally_log::init_metrics();
    tally_store::init_metrics();
    tally_archive::init_metrics();
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub sync: SyncMode,
    /// Flush the in-memory tail to segments once it holds this many bytes.
    pub flush_bytes: usize,
    /// ... or once its oldest event has waited this long.
    pub flush_interval: Duration,
    /// Writes wait while the in-memory tail holds more than this, and are
    /// refused (503) if it still does after `memory_wait`.
    pub memory_limit_bytes: usize,
    /// How long a write waits for the flusher to make room in a full tail.
    /// Zero refuses at once, and the flusher then flushes on size and age
    /// only.
    pub memory_wait: Duration,
    /// Batches that may wait for the log writer before ingest is refused.
    pub log_queue: usize,
    pub log_segment_bytes: u64,
    pub max_record_bytes: usize,
    pub compaction_fanout: usize,
    /// Rollups from the config file (they replace rollups of the same name
    /// defined through the API).
    pub rollups: Vec<RollupDef>,
    /// Where raw segments are archived; `None` keeps no archive. Opening
    /// an archive blocks: open the engine outside async contexts (as
    /// `spawn_blocking` does).
    pub archive: Option<ArchiveOptions>,
    /// How long each stream's raw events stay in the data directory (by
    /// event time, whole hours); `"*"` applies to streams not named.
    /// Unlimited when absent.
    pub retention: std::collections::BTreeMap<String, Duration>,
    /// A batch import buffers about this many bytes of rows before it
    /// writes them to its staged files: its memory, whatever the file size.
    pub import_spill_bytes: usize,
    /// Cluster mode: the log is this JetStream stream, shared by every
    /// node, instead of `wal/` (docs/cluster.md).
    pub cluster: Option<JetStreamOptions>,
}

/// What `ingest` returns once a batch is durable and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub accepted: usize,
    pub lsn: Lsn,
}

/// What opening the engine found.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub checkpoint_lsn: Lsn,
    pub log: OpenReport,
    pub took: Duration,
    /// What each rollup's state was loaded from.
    pub rollups: std::collections::BTreeMap<String, Loaded>,
}

pub struct Engine {
    #[cfg_attr(not(test), allow(dead_code))]
    lock: Mutex<Option<DirLock>>,
    store: Arc<Store>,
    rollups: Arc<RollupSet>,
    /// Held while a record is applied, and while a rollup build starts:
    /// the LSN of the last record applied.
    applied: Arc<Mutex<Lsn>>,
    builders: Mutex<Vec<JoinHandle<()>>>,
    log: Arc<dyn Log<Live>>,
    opts: EngineOptions,
    recovery: Recovery,
    flusher: Mutex<Option<JoinHandle<()>>>,
    archive: Option<Arc<Archive>>,
    maintainer: Mutex<Option<JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
    closed: AtomicBool,
    /// Signalled after every flush: writes waiting for room look again.
    room: Arc<tokio::sync::Notify>,
    /// Batch ids being imported right now.
    imports_in_flight: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Background parts that panicked (see [`faults`]).
    faults: Arc<Faults>,
    /// What follows some streams' records (see [`follow`]).
    followers: follow::Followers,
}

impl Engine {
    /// Fails with [`Error::Locked`] when another process holds the data
    /// directory (after the short wait for an exiting one), so a server can
    /// refuse before it announces itself. Opening takes the lock for real.
    pub fn check_unlocked(data_dir: &std::path::Path) -> Result<()> {
        DirLock::acquire(data_dir).map(drop)
    }

    /// Opens the data directory: loads the catalog, replays the log past the
    /// checkpoint, starts the log and the flusher. Blocking; may take a while
    /// when the log holds many unflushed events.
    ///
    /// In cluster mode an empty data directory is first filled from the
    /// shared archive's newest bootstrap checkpoint; and one whose data is
    /// older than the stream's first record is emptied and filled so, once.
    pub fn open(opts: EngineOptions) -> Result<Engine> {
        match Self::open_once(opts.clone()) {
            Err(Error::Log(tally_log::Error::Behind { applied, first }))
                if opts.cluster.is_some() && opts.archive.is_some() =>
            {
                tracing::error!(
                    applied,
                    stream_first = first,
                    data_dir = %opts.data_dir.display(),
                    "this node's data ends before the stream's first record: replacing it with the shared archive's newest checkpoint"
                );
                {
                    let _lock = DirLock::acquire(&opts.data_dir)?;
                    checkpoint::clear(&opts.data_dir)?;
                }
                Self::open_once(opts)
            }
            r => r,
        }
    }

    fn open_once(opts: EngineOptions) -> Result<Engine> {
        let t = Instant::now();
        let lock = DirLock::acquire(&opts.data_dir)?;
        if opts.cluster.is_some() && checkpoint::is_empty(&opts.data_dir) {
            checkpoint::bootstrap(&opts)?;
        }
        let mut sopts = StoreOptions::new(&opts.data_dir);
        sopts.compaction_fanout = opts.compaction_fanout;
        // Segments the same on every node: cut where the log's seals say.
        sopts.sealed = opts.cluster.is_some();
        let store = Arc::new(Store::open(sopts)?);
        let checkpoint = store.checkpoint_lsn();
        let archive = match &opts.archive {
            Some(a) => {
                let mut a = a.clone();
                // One archive for the cluster, written by the maintenance
                // lease's holder; the others read it.
                a.shared = opts.cluster.is_some();
                Some(Arc::new(Archive::open(&a)?))
            }
            None => None,
        };
        let (rollups, loaded) = RollupSet::open(&opts.data_dir.join("rollups"), &opts.rollups)?;
        let rollups = Arc::new(rollups);
        // Rollups may cover less than the store: replay from the lowest
        // position, each side skipping what it already holds.
        let replay_from = rollups.min_lsn().map_or(checkpoint, |r| r.min(checkpoint));
        let mut lopts = LocalLogOptions::new(opts.data_dir.join("wal"));
        lopts.sync = opts.sync;
        lopts.queue_capacity = opts.log_queue;
        lopts.segment_bytes = opts.log_segment_bytes;
        lopts.max_record_bytes = opts.max_record_bytes;
        let applied = Arc::new(Mutex::new(replay_from));
        let faults = Arc::new(Faults::default());
        // Cluster mode: claim-checked records and imports' staged files.
        let shared = match (&opts.cluster, &opts.archive) {
            (Some(_), Some(a)) => Some(Arc::new(tally_archive::Shared::open(a)?)),
            _ => None,
        };
        let followers = follow::Followers::default();
        let sinks = Sinks {
            followers: followers.clone(),
            shared: shared.clone(),
            store: store.clone(),
            rollups: rollups.clone(),
            applied: applied.clone(),
            store_after: checkpoint,
            beside: None,
            faults: faults.clone(),
        };
        let live = Sinks {
            store_after: 0,
            beside: Some(RollupWorker::spawn(rollups.clone(), faults.clone())?),
            ..sinks.clone()
        };
        let mut replay = |lsn, payload: &[u8]| sinks.apply(lsn, payload, None);
        let hook = Box::new(move |lsn, payload: &[u8], attachment: Option<Live>| {
            live.apply(lsn, payload, attachment)
        });
        let (log, report): (Arc<dyn Log<Live>>, OpenReport) = match &opts.cluster {
            None => {
                let (log, report) = LocalLog::open(lopts, replay_from, &mut replay, hook)?;
                (Arc::new(log), report)
            }
            Some(c) => {
                let mut c = c.clone();
                c.max_record_bytes = c.max_record_bytes.min(opts.max_record_bytes);
                c.queue_capacity = opts.log_queue;
                // Records too large for one NATS message go to the shared
                // archive's root, a pointer on the stream.
                if let Some(s) = &shared {
                    c.claims = Some(s.clone());
                }
                let (log, report) = JetStreamLog::open(c, replay_from, &mut replay, hook)?;
                (Arc::new(log), report)
            }
        };
        if let (Some(a), Some(_)) = (&archive, &opts.cluster) {
            let log = log.clone();
            a.set_writer(Arc::new(move || log.holds_maintenance_lease()));
        }
        // Imports whose commit record the log does not hold were rolled back.
        let dropped = store.remove_unadopted_imports()?;
        if dropped > 0 {
            tracing::info!(
                imports = dropped,
                "removed staged imports that were never committed"
            );
        }
        // Everything in the log is applied: rollups of quiet streams move up.
        rollups.advance(report.last_lsn);
        *applied.lock() = report.last_lsn;
        let mut rebuild: Vec<(String, String)> = loaded
            .clone()
            .into_iter()
            .filter_map(|(name, l)| match l {
                Loaded::NeedsRebuild(why) => Some((name, why)),
                Loaded::Snapshot(lsn) => {
                    // The log dropped records this snapshot lacks (it is
                    // older than the log's start): rebuild from the store.
                    let gap = lsn < checkpoint && report.first_lsn.is_none_or(|f| f > lsn + 1);
                    gap.then(|| {
                        (
                            name,
                            format!("its snapshot (at {lsn}) is older than the log"),
                        )
                    })
                }
            })
            .collect();
        rebuild.sort();
        let recovery = Recovery {
            checkpoint_lsn: checkpoint,
            log: report,
            took: t.elapsed(),
            rollups: loaded,
        };
        tracing::info!(
            checkpoint_lsn = checkpoint,
            replayed = recovery.log.replayed,
            torn_bytes = recovery.log.torn_bytes,
            took_ms = recovery.took.as_millis() as u64,
            "engine open"
        );
        let engine = Engine {
            lock: Mutex::new(Some(lock)),
            store,
            rollups,
            applied,
            builders: Mutex::new(Vec::new()),
            log,
            opts,
            recovery,
            flusher: Mutex::new(None),
            archive,
            maintainer: Mutex::new(None),
            stopping: Arc::new(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
            room: Default::default(),
            imports_in_flight: Default::default(),
            faults,
            followers,
        };
        *engine.flusher.lock() = flush::spawn_flusher(flush::FlusherParts {
            faults: engine.faults.clone(),
            store: engine.store.clone(),
            rollups: engine.rollups.clone(),
            applied: engine.applied.clone(),
            log: engine.log.clone(),
            archive: engine.archive.clone(),
            stopping: engine.stopping.clone(),
            opts: engine.opts.clone(),
            room: engine.room.clone(),
        });
        engine.start_maintainer();
        for (name, why) in rebuild {
            tracing::info!(rollup = %name, reason = %why, "building rollup from stored events");
            engine.rebuild_rollup(&name, None)?;
        }
        Ok(engine)
    }

    /// The stored events of `stream` between `lo` and `hi` (µs,
    /// inclusive): a store snapshot, and the archived segments retention
    /// removed from the data directory.
    pub(crate) fn stored(
        &self,
        stream: &str,
        lo: Option<i64>,
        hi: Option<i64>,
    ) -> Result<Option<(tally_store::Snapshot, Vec<tally_store::SegmentMeta>)>> {
        let snapshot = self.store.snapshot(stream, lo, hi)?;
        let archived = match (&snapshot, &self.archive) {
            (Some(s), Some(a)) => {
                let local = s.segments.iter().map(|f| f.meta.id).collect();
                a.segments_for(stream, lo, hi, &local, &s.retired)
            }
            _ => Vec::new(),
        };
        Ok(snapshot.map(|s| (s, archived)))
    }

    /// Reads every stored event of `stream`, in batches: archived segments
    /// first, then the data directory's segments, then the in-memory tail
    /// (each batch in the order it was stored, batches by segment, not
    /// by time). `f` returns false to stop early. Blocking; apps rebuild
    /// their state from their streams this way. Records applied while the
    /// scan runs may or may not be seen: a caller that must see everything
    /// scans before it writes.
    pub fn scan(&self, stream: &str, f: &mut dyn FnMut(&Batch) -> Result<bool>) -> Result<()> {
        self.scan_range(stream, None, None, f)
    }

    /// As [`Self::scan`], reading only segments and partitions that may
    /// hold events with `lo <= ts < hi` (µs); batches may still hold events
    /// outside the range, which the caller skips.
    pub fn scan_range(
        &self,
        stream: &str,
        lo: Option<i64>,
        hi: Option<i64>,
        f: &mut dyn FnMut(&Batch) -> Result<bool>,
    ) -> Result<()> {
        let history = History {
            snapshot: self.stored(stream, lo, hi)?,
            archive: self.archive.as_deref(),
        };
        history.read(&mut |rb| f(&tally_store::batch_from_arrow(rb)?))?;
        Ok(())
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The archive, when one is configured.
    pub fn archive(&self) -> Option<&Arc<Archive>> {
        self.archive.as_ref()
    }

    /// One maintenance pass now: archives settled segments, then removes
    /// from the data directory what each stream's retention no longer
    /// keeps (only segments the archive holds, when there is an archive).
    /// The maintenance thread runs this every archive interval (or minute).
    pub fn maintain(&self) -> Result<Maintenance> {
        maintain::maintain(
            &self.store,
            self.archive.as_deref(),
            &self.opts.retention,
            self.opts.cluster.is_some(),
        )
    }

    /// The type `field` already has in `stream` (for typing CSV cells).
    pub fn column_type(&self, stream: &str, field: &str) -> Option<ColumnType> {
        self.store.schemas().column_type(stream, field)
    }

    /// Returns once the in-memory tail is under its memory limit: at once
    /// when it is, else when a flush has made room, or `Overloaded` after
    /// [`EngineOptions::memory_wait`]. [`Self::ingest`] waits here itself;
    /// request handlers call it before reading a body, so a body that
    /// would be refused is neither read nor parsed.
    pub async fn wait_for_room(&self) -> Result<()> {
        let limit = self.opts.memory_limit_bytes;
        if self.store.memory_bytes() <= limit {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.opts.memory_wait;
        MEMORY_WAITS.inc();
        loop {
            let flushed = self.room.notified();
            tokio::pin!(flushed);
            // Registered before the check, so a flush between the two
            // still wakes this wait.
            flushed.as_mut().enable();
            let mem = self.store.memory_bytes();
            if mem <= limit {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline || self.closed.load(Ordering::Acquire) {
                OVERLOAD.with_label_values(&["memory"]).inc();
                return Err(Error::Overloaded {
                    reason: format!(
                        "the in-memory tail holds {} MiB, over its limit of {} MiB, while segments are written",
                        mem >> 20,
                        limit >> 20
                    ),
                    retry_after: Duration::from_secs(2),
                });
            }
            if let Some(h) = self.flusher.lock().as_ref() {
                h.thread().unpark();
            }
            let _ = tokio::time::timeout_at(deadline, flushed).await;
        }
    }

    /// Appends a batch durably. Returns once it is in the log and visible.
    pub async fn ingest(&self, stream: &str, batch: Batch) -> Result<Receipt> {
        self.ingest_all(vec![(stream.to_string(), batch)]).await
    }

    /// Appends the events of one request, for one stream or several (a
    /// line protocol body's measurements), as one log record: all of them
    /// are stored or none. Every batch is checked against its stream's
    /// schema before anything is written, so a bad body writes nothing.
    /// Returns once the record is in the log and visible.
    pub async fn ingest_all(&self, batches: Vec<(String, Batch)>) -> Result<Receipt> {
        self.ingest_all_once(batches, None).await
    }

    /// As [`Self::ingest_all`], under the client's idempotency key when it
    /// gives one: in cluster mode a second write with the same key inside
    /// the stream's duplicate window stores nothing and is answered with
    /// the first one's sequence. (The local log keeps no such window.)
    pub async fn ingest_all_once(
        &self,
        batches: Vec<(String, Batch)>,
        key: Option<&str>,
    ) -> Result<Receipt> {
        self.check_writable()?;
        self.wait_for_room().await?;
        let events: usize = batches.iter().map(|(_, b)| b.len()).sum();
        let all: Vec<(&str, &Batch)> = batches.iter().map(|(s, b)| (s.as_str(), b)).collect();
        if let Err(e) = self.store.schemas().reserve_all(&all) {
            REJECTED
                .with_label_values(&["schema"])
                .inc_by(events as u64);
            return Err(e.into());
        }
        if let Some(i) =
            (1..batches.len()).find(|&i| batches[..i].iter().any(|(s, _)| *s == batches[i].0))
        {
            return Err(Error::StreamTwice {
                stream: batches[i].0.clone(),
            });
        }
        let record = Record::Events(batches);
        let t = Instant::now();
        let payload = record.encode();
        let live = Live {
            record,
            outcome: None,
        };
        let append = match key {
            Some(k) => self
                .log
                .append_once(format!("key:{k}"), payload, Some(live)),
            None => self.log.append(payload, Some(live)),
        };
        let lsn = match append.await {
            Ok(lsn) => lsn,
            Err(e) => {
                let e = Error::from(e);
                if matches!(e, Error::Overloaded { .. }) {
                    OVERLOAD.with_label_values(&["log_queue"]).inc();
                }
                return Err(e);
            }
        };
        APPEND_SECONDS.observe(t.elapsed().as_secs_f64());
        ACCEPTED.inc_by(events as u64);
        BATCH_EVENTS.observe(events as f64);
        Ok(Receipt {
            accepted: events,
            lsn,
        })
    }

    /// Refuses writes once the engine is closing, or a background part
    /// of it has failed.
    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.faults.any() {
            if let Some(f) = self.faults.list().into_iter().next() {
                return Err(Error::Failed {
                    part: f.part,
                    message: f.message,
                });
            }
        }
        Ok(())
    }

    /// The background parts that failed (a panic caught): while any has,
    /// writes are refused and `/readyz` says which.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.list()
    }

    /// Records a panic caught in background work of a stage above the
    /// engine (a scheduled job, say) as a fault of `part`.
    pub fn report_panic(&self, part: &'static str, panic: &(dyn std::any::Any + Send)) {
        self.faults.record(part, panic_message(panic));
    }

    /// Flushes the tail to segments, lets the log drop what they hold, and
    /// compacts. In cluster mode the log decides where the tail is cut: on
    /// the maintenance lease's holder this appends a seal first (so the
    /// whole tail is written, here and on every node); elsewhere it writes
    /// what the last seal cut off. Blocking: not for async contexts.
    pub fn flush(&self) -> Result<FlushReport> {
        if self.opts.cluster.is_some() && self.log.holds_maintenance_lease() {
            let rt = flush::seal_runtime().map_err(|source| Error::Io {
                dir: PathBuf::from("runtime"),
                source,
            })?;
            flush::append_seal(
                &self.store,
                self.archive.as_deref(),
                &self.opts.retention,
                self.log.as_ref(),
                &rt,
            )?;
        }
        self.flush_tail()
    }

    /// Writes what may be written without appending to the log.
    fn flush_tail(&self) -> Result<FlushReport> {
        if let Some(f) = self.faults.list().into_iter().next() {
            // Derived state may be wrong: keep the log whole for the next
            // start to replay.
            return Err(Error::Failed {
                part: f.part,
                message: f.message,
            });
        }
        flush_and_compact(
            &self.store,
            &self.rollups,
            &self.applied,
            self.log.as_ref(),
            Duration::ZERO,
            &self.room,
        )
    }

    /// Stops the engine: the log writes and applies what is queued, the tail
    /// is flushed, and the flusher stops. Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.log.close();
        self.stopping.store(true, Ordering::Release);
        for slot in [&self.flusher, &self.maintainer] {
            if let Some(h) = slot.lock().take() {
                h.thread().unpark();
                let _ = h.join();
            }
        }
        // Builds stop between batches; an unfinished one is started again
        // at the next open.
        for h in self.builders.lock().drain(..) {
            let _ = h.join();
        }
        if self.faults.any() {
            tracing::warn!(
                "not flushing at shutdown after a failure: the next start replays the log"
            );
            return Ok(());
        }
        // In cluster mode only what a seal cut is written: the records
        // after it stay in the stream, which the next start applies.
        let r = self.flush_tail()?;
        tracing::info!(
            rows = r.rows,
            checkpoint_lsn = r.checkpoint_lsn,
            "engine shut down cleanly"
        );
        Ok(())
    }

    pub fn log_queue_depth(&self) -> usize {
        self.log.queue_depth()
    }

    pub fn last_lsn(&self) -> Lsn {
        self.log.last_lsn()
    }

    /// The cluster's state as this node sees it; `None` on a single node.
    pub fn cluster(&self) -> Option<ClusterStatus> {
        self.log.cluster()
    }

    /// Cluster mode: the bucket `name` of keys every node shares, whose
    /// values live `max_age` (compare-and-set rules the apps hold
    /// cluster-wide); `None` on a single node. `per_key_ttl` lets each
    /// write set its own life. Blocking.
    pub fn shared_keys(
        &self,
        name: &str,
        max_age: Duration,
        per_key_ttl: bool,
    ) -> Result<Option<SharedKeys>> {
        self.log
            .shared_keys(name, max_age, per_key_ttl)
            .transpose()
            .map_err(Error::from)
    }

    /// Cluster mode: how old this node's answers may be (the time since it
    /// last knew it had applied every record the stream held); `None` on a
    /// single node, which is always current.
    pub fn staleness(&self) -> Option<Duration> {
        self.log.staleness()
    }

    /// Whether this node runs in cluster mode.
    pub fn is_cluster(&self) -> bool {
        self.opts.cluster.is_some()
    }

    /// Whether the work done once per log is this node's to do now: always
    /// on a single node; in a cluster, while it holds the maintenance
    /// lease.
    /// Cluster mode: requests to the node doing the work `name` for the
    /// cluster; `None` on a single node.
    pub fn channel(&self, name: &str) -> Option<Channel> {
        self.log.channel(name)
    }

    pub fn holds_maintenance_lease(&self) -> bool {
        self.log.holds_maintenance_lease()
    }

    /// Waits until this node has applied `lsn` (a write another node
    /// acknowledged), up to `timeout`; false when it has not by then.
    pub async fn wait_applied(&self, lsn: Lsn, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.log.last_lsn() >= lsn {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || self.closed.load(Ordering::Acquire) {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
impl Engine {
    /// Stops without flushing the tail, as a crash would leave things (the
    /// log still holds everything acknowledged).
    fn abandon(self) {
        self.closed.store(true, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        if let Some(h) = self.flusher.lock().take() {
            h.thread().unpark();
            let _ = h.join();
        }
        self.log.close();
        self.lock.lock().take();
        std::mem::forget(self);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "engine shutdown failed; the log still holds everything acknowledged");
        }
    }
}

#[cfg(test)]
mod tests;
