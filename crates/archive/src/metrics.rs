//! Prometheus metrics of the archive.

use prometheus::{
    exponential_buckets, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge, Histogram, IntCounter, IntCounterVec, IntGauge,
};
use std::sync::LazyLock;

pub(crate) static UPLOADED_SEGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_archive_uploaded_segments_total",
        "Segments copied to the archive"
    )
    .unwrap()
});
pub(crate) static UPLOADED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_archive_uploaded_bytes_total",
        "Bytes copied to the archive"
    )
    .unwrap()
});
pub(crate) static PASSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_archive_passes_total",
        "Archive passes, by outcome (ok, failed)",
        &["outcome"]
    )
    .unwrap()
});
pub(crate) static PASS_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_archive_pass_seconds",
        "Duration of one archive pass",
        exponential_buckets(0.001, 2.0, 18).unwrap()
    )
    .unwrap()
});
pub(crate) static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_archive_errors_total",
        "Failed object store operations, by operation",
        &["op"]
    )
    .unwrap()
});
pub(crate) static SEGMENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_archive_segments",
        "Segments the archive manifest names"
    )
    .unwrap()
});
pub(crate) static BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_archive_bytes",
        "Bytes of the segments the archive manifest names"
    )
    .unwrap()
});
pub(crate) static ONLY_SEGMENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_archive_only_segments",
        "Archived segments retention removed from the data directory"
    )
    .unwrap()
});
pub(crate) static PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_archive_pending_segments",
        "Local segments not archived yet (their partition has not settled), at the last pass"
    )
    .unwrap()
});

/// Registers every metric of the archive so it is exported from the start.
pub(crate) static WRITER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_archive_writer",
        "1 while this node writes the archive: always alone; in a cluster, while it holds the maintenance lease (at its last pass)"
    )
    .unwrap()
});

pub fn init() {
    LazyLock::force(&WRITER);
    LazyLock::force(&UPLOADED_SEGMENTS);
    LazyLock::force(&UPLOADED_BYTES);
    LazyLock::force(&PASSES);
    LazyLock::force(&PASS_SECONDS);
    LazyLock::force(&ERRORS);
    LazyLock::force(&SEGMENTS);
    LazyLock::force(&BYTES);
    LazyLock::force(&ONLY_SEGMENTS);
    LazyLock::force(&PENDING);
}
