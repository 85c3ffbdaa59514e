//! Flushing: the in-memory tail to segments, rollup snapshots, then the
//! log truncated through what both cover; and the background thread that
//! flushes when the tail grows past a size or an age.

use crate::record::Live;
use crate::{EngineOptions, Result};
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
pub(crate) fn spawn_flusher(
    faults: Arc<crate::faults::Faults>,
    store: Arc<Store>,
    rollups: Arc<RollupSet>,
    applied: Arc<Mutex<Lsn>>,
    log: Arc<dyn Log<Live>>,
    stopping: Arc<AtomicBool>,
    opts: EngineOptions,
    room: Arc<Notify>,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tally-flusher".into())
        .spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_millis(100));
                if faults.any() {
                    // Derived state may be wrong: the log keeps every
                    // record past the last good flush for the next start.
                    return;
                }
                let (rows, bytes, age) = store.active_size();
                // A full tail flushes at once for the writes waiting on
                // it (none wait when `memory_wait` is zero).
                let full = rows > 0
                    && !opts.memory_wait.is_zero()
                    && store.memory_bytes() > opts.memory_limit_bytes;
                if bytes >= opts.flush_bytes || (rows > 0 && age >= opts.flush_interval) || full {
                    let flushed = faults.run("flusher", || {
                        flush_and_compact(
                            &store,
                            &rollups,
                            &applied,
                            log.as_ref(),
                            ROLLUP_SNAPSHOT_EVERY,
                            &room,
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
        })
        .ok()
}
