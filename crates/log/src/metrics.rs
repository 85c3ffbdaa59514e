//! Prometheus metrics of the log stage.

use prometheus::{
    exponential_buckets, register_gauge, register_histogram, register_int_counter,
    register_int_gauge, Gauge, Histogram, IntCounter, IntGauge,
};
use std::sync::LazyLock;

pub(crate) static APPEND_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_log_append_bytes_total",
        "Bytes of records appended to the log"
    )
    .unwrap()
});
pub(crate) static APPEND_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_log_append_records_total",
        "Records appended to the log"
    )
    .unwrap()
});
pub(crate) static GROUP_RECORDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_log_group_commit_records",
        "Records written together in one group commit (one fsync)",
        exponential_buckets(1.0, 2.0, 14).unwrap()
    )
    .unwrap()
});
pub(crate) static WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_log_write_seconds",
        "Time to write one group to the log file",
        exponential_buckets(0.00001, 2.0, 18).unwrap()
    )
    .unwrap()
});
pub(crate) static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_log_fsync_seconds",
        "Time of one fsync of the log",
        exponential_buckets(0.00001, 2.0, 18).unwrap()
    )
    .unwrap()
});
pub(crate) static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_log_queue_depth",
        "Records waiting to be written to the log"
    )
    .unwrap()
});
pub(crate) static FILES: LazyLock<IntGauge> =
    LazyLock::new(|| register_int_gauge!("tally_log_files", "Log files on disk").unwrap());
pub(crate) static TORN_TAILS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_log_torn_tail_truncations_total",
        "Times a torn or corrupt log tail was truncated to the last whole record at startup"
    )
    .unwrap()
});
pub(crate) static TORN_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_log_torn_tail_bytes_total",
        "Bytes cut from torn log tails at startup"
    )
    .unwrap()
});
pub(crate) static REPLAYED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_log_replayed_records_total",
        "Records replayed from the log at startup"
    )
    .unwrap()
});

/// Registers every metric of this stage so it is exported from the start.
pub fn init() {
    LazyLock::force(&APPEND_BYTES);
    LazyLock::force(&APPEND_RECORDS);
    LazyLock::force(&GROUP_RECORDS);
    LazyLock::force(&WRITE_SECONDS);
    LazyLock::force(&FSYNC_SECONDS);
    LazyLock::force(&QUEUE_DEPTH);
    LazyLock::force(&FILES);
    LazyLock::force(&TORN_TAILS);
    LazyLock::force(&TORN_BYTES);
    LazyLock::force(&REPLAYED);
}

pub(crate) static DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_duplicate_publishes_total",
        "Appends JetStream found already stored (a retried message id)"
    )
    .unwrap()
});
pub(crate) static PUBLISH_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_publish_retries_total",
        "Publishes sent again (same message id) after no acknowledgement came"
    )
    .unwrap()
});
pub(crate) static APPLIED_SEQ: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_cluster_applied_seq",
        "The last stream sequence this node applied"
    )
    .unwrap()
});
pub(crate) static STREAM_LAST_SEQ: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_cluster_stream_last_seq",
        "The stream's last sequence, as last seen by this node"
    )
    .unwrap()
});
pub(crate) static APPLY_LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_cluster_apply_lag_records",
        "Records the stream holds that this node has not applied yet"
    )
    .unwrap()
});
pub(crate) static STALENESS: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "tally_cluster_staleness_seconds",
        "Time since this node last knew it had applied every record the stream held (how old its answers may be)"
    )
    .unwrap()
});
pub(crate) static CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_cluster_nats_connected",
        "1 while this node's NATS connection is up, 0 while it is lost"
    )
    .unwrap()
});
pub(crate) static CLAIMS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_claim_records_total",
        "Records this node put in the shared archive (too large for one NATS message) and published as a pointer"
    )
    .unwrap()
});
pub(crate) static CLAIMS_REMOVED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_claims_removed_total",
        "Claim objects removed from the shared archive once older than the stream's history"
    )
    .unwrap()
});
pub(crate) static APPLY_TIMEOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_apply_timeouts_total",
        "Writes JetStream acknowledged that this node had not applied within the publish timeout (answered 503)"
    )
    .unwrap()
});
pub(crate) static READER_RESTARTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_reader_restarts_total",
        "Times this node made its stream reader again because it delivered nothing for a while the stream held records it had not applied"
    )
    .unwrap()
});
