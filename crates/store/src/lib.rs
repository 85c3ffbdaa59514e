//! Store: where applied events live.
//!
//! Events arrive here from the log's apply hook, in log order, into an
//! in-memory columnar tail (the [`MemTable`]), partitioned by stream and hour.
//! A flush freezes the tail, writes each partition as a Parquet segment
//! (sorted by time, zstd, dictionary-encoded dimensions) and commits the
//! [`Catalog`] with the log position it covers; only then may the log drop
//! those records. Compaction merges small segments of a partition so the file
//! count per partition stays bounded.
//!
//! Crash safety: a segment file is fsync'd before the catalog that names it is
//! atomically replaced, so the catalog never points at a partial file; files
//! that no catalog names (a crash between the two) are deleted at open.

mod catalog;
mod error;
mod import;
mod memtable;
mod metrics;
mod schema;
mod segment;
mod sorted;
mod store;

pub use catalog::{Catalog, ImportEntry, SegmentMeta};
pub use error::{Error, Result};
pub use import::{
    discard_stage, put_staged_file, stage_dir, ImportStage, StagedFile, StagedImport, IMPORTS_DIR,
};
pub use memtable::{MemTable, PartitionBuffer, Seal};
/// Registers the store's metrics.
pub use metrics::init as init_metrics;
pub use schema::{ColumnDef, SchemaConflict, Schemas, StreamSchema, MAX_COLUMNS_PER_STREAM};
pub use segment::{arrow_schema, batch_from_arrow, read_segment, write_segment};
pub use store::{
    sealed_segment_id, FlushReport, SegmentFile, Snapshot, Store, StoreOptions, StreamStats,
};

/// Microseconds in one hour: the partition width.
pub const HOUR_US: i64 = 3_600_000_000;

/// The partition (hour start, µs) an event time falls in.
pub fn partition_of(ts_us: i64) -> i64 {
    ts_us.div_euclid(HOUR_US) * HOUR_US
}
