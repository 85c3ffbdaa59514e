//! Prometheus metrics of the store stage.

use prometheus::{
    exponential_buckets, register_histogram, register_int_counter, register_int_gauge, Histogram,
    IntCounter, IntGauge,
};
use std::sync::LazyLock;

pub(crate) static MEM_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_store_memtable_bytes",
        "Bytes held by the in-memory tail (active and flushing)"
    )
    .unwrap()
});
pub(crate) static MEM_ROWS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_store_memtable_rows",
        "Events held by the in-memory tail (active and flushing)"
    )
    .unwrap()
});
pub(crate) static SEGMENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tally_store_segments", "Parquet segments in the catalog").unwrap()
});
pub(crate) static SEGMENT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_store_segment_bytes",
        "Bytes of Parquet segments in the catalog"
    )
    .unwrap()
});
pub(crate) static MAX_SEGMENTS_PER_PARTITION: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_store_max_segments_per_partition",
        "Most segments any one partition has"
    )
    .unwrap()
});
pub(crate) static FLUSHES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("tally_store_flushes_total", "Flushes of the in-memory tail").unwrap()
});
pub(crate) static FLUSHED_ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_store_flushed_rows_total",
        "Events written to Parquet segments by flushes"
    )
    .unwrap()
});
pub(crate) static FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_store_flush_seconds",
        "Duration of one flush",
        exponential_buckets(0.001, 2.0, 16).unwrap()
    )
    .unwrap()
});
pub(crate) static COMPACTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_store_compactions_total",
        "Partitions compacted (segments merged)"
    )
    .unwrap()
});
pub(crate) static COMPACTED_SEGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_store_compacted_segments_total",
        "Segments merged away by compaction"
    )
    .unwrap()
});
pub(crate) static COMPACTION_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_store_compaction_seconds",
        "Duration of one partition compaction",
        exponential_buckets(0.001, 2.0, 16).unwrap()
    )
    .unwrap()
});
pub(crate) static SCHEMA_APPLY_CONFLICTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_store_apply_type_conflicts_total",
        "Columns dropped while applying a record because their type conflicted (should stay 0)"
    )
    .unwrap()
});
pub(crate) static RETENTION_SEGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_store_retention_segments_total",
        "Segments removed from the data directory by retention"
    )
    .unwrap()
});
pub(crate) static RETENTION_ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_store_retention_rows_total",
        "Events removed from the data directory by retention (kept in the archive when one is configured)"
    )
    .unwrap()
});

/// Registers every metric of this stage so it is exported from the start.
pub fn init() {
    LazyLock::force(&MEM_BYTES);
    LazyLock::force(&MEM_ROWS);
    LazyLock::force(&SEGMENTS);
    LazyLock::force(&SEGMENT_BYTES);
    LazyLock::force(&MAX_SEGMENTS_PER_PARTITION);
    LazyLock::force(&FLUSHES);
    LazyLock::force(&FLUSHED_ROWS);
    LazyLock::force(&FLUSH_SECONDS);
    LazyLock::force(&COMPACTIONS);
    LazyLock::force(&COMPACTED_SEGMENTS);
    LazyLock::force(&COMPACTION_SECONDS);
    LazyLock::force(&SCHEMA_APPLY_CONFLICTS);
    LazyLock::force(&RETENTION_SEGMENTS);
    LazyLock::force(&RETENTION_ROWS);
}
