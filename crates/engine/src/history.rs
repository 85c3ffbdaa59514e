//! What a rollup build reads: every stored event of a stream, from the
//! archive, the segments and the in-memory tail.

use crate::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use tally_archive::Archive;
use tally_rollup::RollupSet;

/// The stored events a build reads: a store snapshot and the archived
/// segments retention removed from it.
pub(crate) struct History<'a> {
    pub(crate) snapshot: Option<(tally_store::Snapshot, Vec<tally_store::SegmentMeta>)>,
    pub(crate) archive: Option<&'a Archive>,
}

impl History<'_> {
    /// Hands `f` every stored record batch; `Ok(false)` when `f` stopped
    /// early.
    pub(crate) fn read(
        &self,
        f: &mut dyn FnMut(&arrow::record_batch::RecordBatch) -> Result<bool>,
    ) -> Result<bool> {
        let Some((snapshot, archived)) = &self.snapshot else {
            return Ok(true);
        };
        if let Some(archive) = self.archive {
            for meta in archived {
                for rb in archive.read(meta)? {
                    if !f(&rb)? {
                        return Ok(false);
                    }
                }
            }
        }
        for seg in &snapshot.segments {
            for rb in tally_store::read_segment(&seg.path)? {
                if !f(&rb)? {
                    return Ok(false);
                }
            }
        }
        for rb in &snapshot.memory {
            if !f(rb)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Feeds a build every stored event of its history. `None` when the build
/// was replaced or the engine is stopping; otherwise the rows fed.
pub(crate) fn feed_history(
    rollups: &RollupSet,
    name: &str,
    id: u64,
    history: History,
    stopping: &AtomicBool,
) -> Result<Option<u64>> {
    let mut rows = 0u64;
    let complete = history.read(&mut |rb| {
        if stopping.load(Ordering::Acquire) {
            return Ok(false);
        }
        let batch = tally_store::batch_from_arrow(rb)?;
        rows += batch.len() as u64;
        Ok(rollups.feed(name, id, &batch))
    })?;
    Ok(complete.then_some(rows))
}
