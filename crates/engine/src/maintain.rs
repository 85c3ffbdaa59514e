//! Maintenance: a thread that archives settled segments and enforces each
//! stream's raw retention, every archive interval (or minute).

use crate::{Archive, Engine, Result, SyncReport};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tally_store::Store;

impl Engine {
    pub(crate) fn start_maintainer(&self) {
        if self.archive.is_none() && self.opts.retention.is_empty() {
            return;
        }
        let store = self.store.clone();
        let archive = self.archive.clone();
        let retention = self.opts.retention.clone();
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
                        maintain(&store, archive.as_deref(), &retention)
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

pub(crate) fn maintain(
    store: &Store,
    archive: Option<&Archive>,
    retention: &BTreeMap<String, Duration>,
) -> Result<Maintenance> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let mut out = Maintenance {
        archive: archive.map(|a| a.sync(store, now)).transpose()?,
        ..Default::default()
    };
    if retention.is_empty() {
        return Ok(out);
    }
    let (files, _) = store.segment_files();
    let expired: Vec<u64> = files
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
        .collect();
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
