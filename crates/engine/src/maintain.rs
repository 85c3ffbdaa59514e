//! Maintenance: a thread that archives settled segments and enforces each
//! stream's raw retention, every archive interval (or minute).

use crate::{Archive, Engine, Result, SyncReport};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_store::{SegmentFile, Store};

impl Engine {
    pub(crate) fn start_maintainer(&self) {
        if self.archive.is_none() && self.opts.retention.is_empty() {
            return;
        }
        let store = self.store.clone();
        let archive = self.archive.clone();
        let retention = self.opts.retention.clone();
        let cluster = self.opts.cluster.is_some();
        let stopping = self.stopping.clone();
        let faults = self.faults.clone();
        let every = archive
            .as_ref()
            .map_or(Duration::from_secs(60), |a| a.interval());
        let h = std::thread::Builder::new()
            .name("tally-maintainer".into())
            .spawn(move || {
                let mut next = Instant::now();
                while !stopping.load(Ordering::Acquire) {
                    let wait = next.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::park_timeout(wait.min(Duration::from_millis(200)));
                        continue;
                    }
                    match faults.run("maintainer", || {
                        maintain(&store, archive.as_deref(), &retention, cluster)
                    }) {
                        None => return,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "archive/retention pass failed; will retry")
                        }
                        Some(Ok(_)) => {}
                    }
                    next = Instant::now() + every;
                }
            })
            .ok();
        *self.maintainer.lock() = h;
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default)]
pub struct Maintenance {
    pub archive: Option<SyncReport>,
    /// Segments and events retention removed from the data directory.
    pub dropped_segments: usize,
    pub dropped_rows: u64,
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The segments retention removes now: those whose hour is past their
/// stream's retention and, with an archive, that the archive holds.
pub(crate) fn expired(
    files: &[Arc<SegmentFile>],
    archive: Option<&Archive>,
    retention: &BTreeMap<String, Duration>,
    now: i64,
) -> Vec<u64> {
    if retention.is_empty() {
        return Vec::new();
    }
    files
        .iter()
        .filter(|f| {
            // The apps' own streams (accounts, say) are kept unless named.
            let keep = retention.get(&f.meta.stream).or_else(|| {
                (!tally_ingest::is_internal_stream(&f.meta.stream))
                    .then(|| retention.get("*"))
                    .flatten()
            });
            keep.is_some_and(|k| {
                f.meta.partition + tally_store::HOUR_US <= now - k.as_micros() as i64
            })
        })
        // With an archive, a segment leaves only once it is archived.
        .filter(|f| archive.is_none_or(|a| a.holds(f.meta.id)))
        .map(|f| f.meta.id)
        .collect()
}

/// One pass. In cluster mode the archive is shared: the maintenance
/// lease's holder writes it, the others read its manifest again; and
/// retention is not decided here but by the seals the holder appends
/// (see `flush.rs`), so every node removes the same segments.
pub(crate) fn maintain(
    store: &Store,
    archive: Option<&Archive>,
    retention: &BTreeMap<String, Duration>,
    cluster: bool,
) -> Result<Maintenance> {
    let now = now_us();
    if cluster {
        let archive = match archive {
            Some(a) => Some(a.sync(store, now)?),
            None => None,
        };
        return Ok(Maintenance {
            archive,
            ..Default::default()
        });
    }
    let mut out = Maintenance {
        archive: archive.map(|a| a.sync(store, now)).transpose()?,
        ..Default::default()
    };
    let (files, _) = store.segment_files();
    let expired = expired(&files, archive, retention, now);
    drop(files);
    if expired.is_empty() {
        return Ok(out);
    }
    out.dropped_segments = expired.len();
    out.dropped_rows = store.drop_segments(&expired, archive.is_some())?;
    tracing::info!(
        segments = out.dropped_segments,
        rows = out.dropped_rows,
        archived = archive.is_some(),
        "retention removed raw segments from the data directory"
    );
    if let Some(a) = archive {
        // Record them as archive-only now rather than at the next pass.
        let r = a.sync(store, now)?;
        if let Some(first) = &mut out.archive {
            first.retired += r.retired;
        }
    }
    Ok(out)
}
