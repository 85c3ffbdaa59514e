//! Prometheus metrics of the engine (ingest as a whole).

use prometheus::{
    exponential_buckets, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGaugeVec,
};
use std::sync::LazyLock;

pub(crate) static PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_background_panics_total",
        "Panics caught in a background part of the engine, by part",
        &["part"]
    )
    .unwrap()
});
pub(crate) static ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_ingest_events_accepted_total",
        "Events acknowledged (durable and applied)"
    )
    .unwrap()
});
pub(crate) static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_ingest_events_rejected_total",
        "Events refused, by reason",
        &["reason"]
    )
    .unwrap()
});
pub(crate) static OVERLOAD: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_ingest_overload_refusals_total",
        "Batches refused because a bounded stage was full, by stage",
        &["stage"]
    )
    .unwrap()
});
pub(crate) static MEMORY_WAITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_ingest_memory_waits_total",
        "Writes that found the in-memory tail over its limit and waited for a flush"
    )
    .unwrap()
});
pub(crate) static BATCH_EVENTS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_ingest_batch_events",
        "Events per acknowledged batch",
        exponential_buckets(1.0, 4.0, 10).unwrap()
    )
    .unwrap()
});
pub(crate) static APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_ingest_append_seconds",
        "Time from handing a batch to the log until it is durable and applied",
        exponential_buckets(0.00005, 2.0, 16).unwrap()
    )
    .unwrap()
});
pub(crate) static UNDECODABLE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_log_undecodable_records_total",
        "Log records that could not be decoded"
    )
    .unwrap()
});

pub(crate) static ROLLUP_APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "tally_rollup_apply_seconds",
        "Time to apply one record to every rollup (part of each acknowledgement)",
        exponential_buckets(0.000005, 2.0, 18).unwrap()
    )
    .unwrap()
});
pub(crate) static ROLLUP_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_rollup_lag_records",
        "Log records applied to the store but not yet to the rollup (0: current; rollups are updated before each acknowledgement)",
        &["rollup"]
    )
    .unwrap()
});
pub(crate) static ROLLUP_EVENTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_rollup_events",
        "Events a rollup holds (after its filter)",
        &["rollup"]
    )
    .unwrap()
});
pub(crate) static ROLLUP_BUILD_ROWS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_rollup_build_rows",
        "Stored events a running build has fed, and will feed in all",
        &["rollup", "of"]
    )
    .unwrap()
});
pub(crate) static ROLLUP_BUILDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_rollup_builds_total",
        "Rollup builds ended, by outcome (done, replaced, failed, stopped)",
        &["outcome"]
    )
    .unwrap()
});

pub(crate) static IMPORTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_imports_total",
        "Batch imports ended, by outcome (committed, rolled_back)",
        &["outcome"]
    )
    .unwrap()
});

/// Registers every metric of this stage so it is exported from the start.
pub fn init() {
    LazyLock::force(&ACCEPTED);
    LazyLock::force(&REJECTED);
    LazyLock::force(&OVERLOAD);
    LazyLock::force(&MEMORY_WAITS);
    LazyLock::force(&BATCH_EVENTS);
    LazyLock::force(&APPEND_SECONDS);
    LazyLock::force(&UNDECODABLE);
    LazyLock::force(&ROLLUP_APPLY_SECONDS);
    LazyLock::force(&ROLLUP_LAG);
    LazyLock::force(&ROLLUP_EVENTS);
    LazyLock::force(&ROLLUP_BUILD_ROWS);
    LazyLock::force(&ROLLUP_BUILDS);
    LazyLock::force(&IMPORTS);
}
pub(crate) static CHECKPOINTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_checkpoints_uploaded_total",
        "Bootstrap checkpoints this node uploaded to the shared archive (as the maintenance lease's holder)"
    )
    .unwrap()
});
pub(crate) static SEALS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_seals_total",
        "Seal records this node appended (as the maintenance lease's holder): each cuts every node's tail into segments"
    )
    .unwrap()
});
pub(crate) static BOOTSTRAPS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_cluster_bootstraps_total",
        "Times this node filled its data directory from a checkpoint in the shared archive"
    )
    .unwrap()
});
