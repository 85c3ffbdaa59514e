//! What the engine shows of its parts: streams with their schema and the
//! rows only the archive holds, each rollup's status, the archive's state,
//! data versions for caches. The HTTP layer and the apps read the engine
//! through these methods and the value types re-exported here; they do not
//! depend on the store, rollup or archive crates.

use crate::{Engine, Result};
use std::collections::HashSet;

pub use tally_archive::Error as ArchiveError;
pub use tally_archive::Status as ArchiveStatus;
pub use tally_rollup::Error as RollupError;
pub use tally_rollup::{Aggregate, Grain, RollupDef};
pub use tally_store::{ColumnDef, SchemaConflict, StreamSchema};

/// One stream as the API shows it: what the data directory holds, plus
/// what retention moved out of it into the archive.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub name: String,
    pub stats: crate::StreamStats,
    pub schema: StreamSchema,
    /// Rows and segments only the archive holds (retention removed them
    /// from the data directory).
    pub archive_only_rows: u64,
    pub archive_only_segments: usize,
    /// The earliest event time, the archive's included (µs).
    pub min_ts: Option<i64>,
}

impl StreamInfo {
    /// Every row, the archive-only ones included.
    pub fn rows(&self) -> u64 {
        self.stats.rows + self.archive_only_rows
    }
}

/// Where a rollup's state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupState {
    /// New: its first build from the stored events has not ended, and it
    /// answers nothing yet.
    Building,
    /// Complete and counting live.
    Ready,
    /// Complete and answering while a rebuild runs beside it.
    Rebuilding,
}

impl RollupState {
    pub fn as_str(self) -> &'static str {
        match self {
            RollupState::Building => "building",
            RollupState::Ready => "ready",
            RollupState::Rebuilding => "rebuilding",
        }
    }
}

/// A build from the stored events in progress.
#[derive(Debug, Clone, Copy)]
pub struct BuildProgress {
    pub rows_done: u64,
    pub rows_total: u64,
    /// A partial rebuild's range (µs), `None` for the whole state.
    pub range: Option<(i64, i64)>,
}

/// One rollup's definition and state, read at one moment.
#[derive(Debug, Clone)]
pub struct RollupStatus {
    pub definition: RollupDef,
    pub state: RollupState,
    /// Events counted.
    pub events: u64,
    /// The last log position applied.
    pub lsn: u64,
    /// Buckets held per interval.
    pub buckets: Vec<(Grain, usize)>,
    pub build: Option<BuildProgress>,
}

impl Engine {
    /// Every stream (internal ones included), by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let retired = self.retired_segments();
        self.store
            .stream_stats()
            .into_iter()
            .map(|(name, stats)| self.stream_info(name, stats, &retired))
            .collect()
    }

    /// One stream, or `None` when nothing was ever written to it.
    pub fn stream(&self, name: &str) -> Option<StreamInfo> {
        let stats = self.store.stream_stats().remove(name)?;
        Some(self.stream_info(name.to_string(), stats, &self.retired_segments()))
    }

    /// A stream's columns, or `None` when the stream does not exist.
    pub fn schema(&self, stream: &str) -> Option<StreamSchema> {
        self.store.schemas().get(stream)
    }

    /// A number that changes whenever the events of `stream` in `[lo, hi]`
    /// (µs, either end open) may have changed: a cache key.
    pub fn data_version(&self, stream: &str, lo: Option<i64>, hi: Option<i64>) -> u64 {
        self.store.data_version(stream, lo, hi)
    }

    /// The archive's state, when one is configured.
    pub fn archive_status(&self) -> Option<ArchiveStatus> {
        self.archive.as_ref().map(|a| a.status())
    }

    /// The names of every rollup.
    pub fn rollup_names(&self) -> Vec<String> {
        self.rollups.names()
    }

    /// A rollup's definition, or `None` when there is no such rollup.
    pub fn rollup_definition(&self, name: &str) -> Option<RollupDef> {
        let entry = self.rollups.get(name)?;
        let def = entry.read().rollup.def().clone();
        Some(def)
    }

    /// A rollup's definition and state, or `None` when there is none.
    pub fn rollup_status(&self, name: &str) -> Option<RollupStatus> {
        let entry = self.rollups.get(name)?;
        let e = entry.read();
        let definition = e.rollup.def().clone();
        let buckets = definition
            .grains()
            .into_iter()
            .map(|g| (g, e.rollup.bucket_count(g)))
            .collect();
        let state = match (e.complete, e.building.is_some()) {
            (false, _) => RollupState::Building,
            (true, false) => RollupState::Ready,
            (true, true) => RollupState::Rebuilding,
        };
        Some(RollupStatus {
            definition,
            state,
            events: e.rollup.events(),
            lsn: e.lsn,
            buckets,
            build: e.building.as_ref().map(|b| BuildProgress {
                rows_done: b.rows_done,
                rows_total: b.rows_total,
                range: b.range,
            }),
        })
    }

    /// Removes a rollup and its saved state; false when there was none.
    pub fn remove_rollup(&self, name: &str) -> Result<bool> {
        Ok(self.rollups.remove(name)?)
    }

    /// Segments the data directory no longer holds (retention removed
    /// them), which the archive alone answers for.
    fn retired_segments(&self) -> Vec<tally_store::SegmentMeta> {
        if self.archive.is_none() {
            return Vec::new();
        }
        self.store.segment_files().1
    }

    fn stream_info(
        &self,
        name: String,
        stats: crate::StreamStats,
        retired: &[tally_store::SegmentMeta],
    ) -> StreamInfo {
        let archived = match &self.archive {
            Some(a) => a.segments_for(&name, None, None, &HashSet::new(), retired),
            None => Vec::new(),
        };
        let min_ts = archived.iter().map(|m| m.min_ts).chain(stats.min_ts).min();
        StreamInfo {
            schema: self.schema(&name).unwrap_or_default(),
            archive_only_rows: archived.iter().map(|m| m.rows).sum(),
            archive_only_segments: archived.len(),
            min_ts,
            stats,
            name,
        }
    }
}
