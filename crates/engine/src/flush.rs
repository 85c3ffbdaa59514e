//! Flushing: the in-memory tail to segments, rollup snapshots, then the
//! log truncated through what both cover; and the background thread that
//! flushes when the tail grows past a size or an age.

use crate::record::{Live, Record};
use crate::{Archive, EngineOptions, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tally_log::{Log, Lsn};
use tally_rollup::RollupSet;
use tally_store::{FlushReport, Store};
use tokio::sync::Notify;

/// How often the background flusher rewrites a changing rollup's
/// snapshot (each flush writes segments; rollup snapshots, which encode a
/// rollup's whole state, follow at most this often, and the log keeps the
/// records since the oldest one).
const ROLLUP_SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// Flushes the tail, applies rollup retention, saves the rollup states
/// due (all of those that moved when `snapshot_age` is zero), and only then
/// lets the log drop what both the flush and the rollups' snapshots cover:
/// rollups are never behind what the log still holds. A failed snapshot
/// keeps the log (retried at the next flush).
pub(crate) fn flush_and_compact(
    store: &Store,
    rollups: &RollupSet,
    applied: &Mutex<Lsn>,
    log: &dyn Log<Live>,
    snapshot_age: Duration,
    room: &Notify,
) -> Result<FlushReport> {
    let flushed = store.flush();
    // Writes waiting for room in the tail look again, whatever the outcome.
    room.notify_waiters();
    let report = flushed?;
    // A record's rollups may still be counting it beside the store: wait
    // for the record in progress, so the snapshots cover the flush.
    drop(applied.lock());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    rollups.retain_all(now);
    let covered = rollups.snapshot_due(snapshot_age)?;
    log.truncate_through(covered.map_or(report.checkpoint_lsn, |c| c.min(report.checkpoint_lsn)))?;
    store.compact()?;
    Ok(report)
}

/// Starts the background flusher: every 100 ms (or when unparked), a
/// flush when the tail is past `flush_bytes`, older than `flush_interval`
/// or over the memory limit (writes are waiting for room); stops when
/// `stopping` is set.
///
/// In cluster mode the log decides where the tail is cut: the node holding
/// the maintenance lease appends a seal record when its tail is due (every
/// node's tail is the same, give or take the apply lag), naming the
/// segments retention removes; every node writes what a seal cut off.
pub(crate) fn spawn_flusher(parts: FlusherParts) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tally-flusher".into())
        .spawn(move || parts.run())
        .ok()
}

pub(crate) struct FlusherParts {
    pub(crate) faults: Arc<crate::faults::Faults>,
    pub(crate) store: Arc<Store>,
    pub(crate) rollups: Arc<RollupSet>,
    pub(crate) applied: Arc<Mutex<Lsn>>,
    pub(crate) log: Arc<dyn Log<Live>>,
    pub(crate) archive: Option<Arc<Archive>>,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) opts: EngineOptions,
    pub(crate) room: Arc<Notify>,
}

impl FlusherParts {
    fn run(self) {
        let cluster = self.opts.cluster.is_some();
        let mut sealer = None;
        let mut tick = 0u64;
        while !self.stopping.load(Ordering::Acquire) {
            tick += 1;
            std::thread::park_timeout(Duration::from_millis(100));
            if self.faults.any() {
                // Derived state may be wrong: the log keeps every
                // record past the last good flush for the next start.
                return;
            }
            let (rows, bytes, age) = self.store.active_size();
            // A full tail flushes at once for the writes waiting on
            // it (none wait when `memory_wait` is zero).
            let full = rows > 0
                && !self.opts.memory_wait.is_zero()
                && self.store.memory_bytes() > self.opts.memory_limit_bytes;
            let due = bytes >= self.opts.flush_bytes
                || (rows > 0 && age >= self.opts.flush_interval)
                || full;
            let flush = if cluster {
                // The tail's age is the time since the last seal any holder
                // appended (this node's own tail is as old as its start,
                // and holders change): a node that has seen none since it
                // started seals at once.
                let due = bytes >= self.opts.flush_bytes
                    || full
                    || (rows > 0
                        && self
                            .store
                            .since_last_seal()
                            .is_none_or(|d| d >= self.opts.flush_interval));
                if !self.store.sealed_pending() && self.log.holds_maintenance_lease() {
                    // A quiet tail is sealed too, once a second, when
                    // retention has segments to remove.
                    if due || (tick.is_multiple_of(10) && self.retention_due()) {
                        self.seal(&mut sealer);
                    }
                }
                self.store.sealed_pending()
            } else {
                due
            };
            if !flush {
                continue;
            }
            let flushed = self.faults.run("flusher", || {
                flush_and_compact(
                    &self.store,
                    &self.rollups,
                    &self.applied,
                    self.log.as_ref(),
                    ROLLUP_SNAPSHOT_EVERY,
                    &self.room,
                )
            });
            match flushed {
                None => return,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "background flush failed; will retry");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Whether retention has segments to remove.
    fn retention_due(&self) -> bool {
        if self.opts.retention.is_empty() {
            return false;
        }
        let (files, _) = self.store.segment_files();
        let now = crate::maintain::now_us();
        !crate::maintain::expired(&files, self.archive.as_deref(), &self.opts.retention, now)
            .is_empty()
    }

    /// Appends a seal and waits (a bounded time) until this node has
    /// applied it.
    fn seal(&self, runtime: &mut Option<tokio::runtime::Runtime>) {
        if runtime.is_none() {
            match seal_runtime() {
                Ok(rt) => *runtime = Some(rt),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the sealer's runtime");
                    return;
                }
            }
        }
        let Some(rt) = runtime.as_ref() else { return };
        let sealed = append_seal(
            &self.store,
            self.archive.as_deref(),
            &self.opts.retention,
            self.log.as_ref(),
            rt,
        );
        if let Err(e) = sealed {
            tracing::warn!(error = %e, "cannot append a seal; will retry");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

pub(crate) fn seal_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Cluster mode: appends a seal record naming the segments retention
/// removes (past their stream's retention, and archived), and returns
/// once this node has applied it (or after [`SEAL_WAIT`]). Blocking: not
/// for async contexts.
pub(crate) fn append_seal(
    store: &Store,
    archive: Option<&Archive>,
    retention: &std::collections::BTreeMap<String, Duration>,
    log: &dyn Log<Live>,
    rt: &tokio::runtime::Runtime,
) -> Result<Lsn> {
    let (files, _) = store.segment_files();
    let retire = crate::maintain::expired(&files, archive, retention, crate::maintain::now_us());
    drop(files);
    let append = log.append(Record::Seal { retire }.encode(), None);
    // The timer is made inside the runtime, which drives it.
    match rt.block_on(async { tokio::time::timeout(SEAL_WAIT, append).await }) {
        Ok(Ok(lsn)) => {
            crate::metrics::SEALS.inc();
            tracing::debug!(lsn, "sealed the tail");
            Ok(lsn)
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(crate::Error::Overloaded {
            reason: format!("a seal was not applied within {} s", SEAL_WAIT.as_secs()),
            retry_after: Duration::from_secs(2),
        }),
    }
}

/// How long the sealer waits for its seal to be applied here.
const SEAL_WAIT: Duration = Duration::from_secs(10);
