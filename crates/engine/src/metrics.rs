//! Prometheus metrics of the engine (ingest as a whole).

use prometheus::{
    exponential_buckets, register_histogram, register_int_counter, register_int_counter_vec,
    Histogram, IntCounter, IntCounterVec,
};
use std::sync::LazyLock;

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

/// Registers every metric of this stage so it is exported from the start.
pub fn init() {
    LazyLock::force(&ACCEPTED);
    LazyLock::force(&REJECTED);
    LazyLock::force(&OVERLOAD);
    LazyLock::force(&BATCH_EVENTS);
    LazyLock::force(&APPEND_SECONDS);
    LazyLock::force(&UNDECODABLE);
}
