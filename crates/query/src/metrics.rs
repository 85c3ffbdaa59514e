//! Prometheus metrics of the query stage.

use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    HistogramVec, IntCounterVec, IntGauge,
};
use std::sync::LazyLock;

pub(crate) static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_query_seconds",
        "Query latency by API (sql, timeseries) and outcome (ok, cached, error)",
        &["api", "outcome"],
        exponential_buckets(0.000_05, 2.0, 20).unwrap()
    )
    .unwrap()
});
pub(crate) static CACHE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_query_cache_lookups_total",
        "Result cache lookups by API and result (hit, miss, uncacheable)",
        &["api", "result"]
    )
    .unwrap()
});
pub(crate) static CACHE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tally_query_cache_bytes", "Bytes held by the result cache").unwrap()
});
pub(crate) static CACHE_ENTRIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_query_cache_entries",
        "Answers held by the result cache"
    )
    .unwrap()
});
pub(crate) static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_query_rejected_total",
        "Queries refused or stopped by a limit (busy, timeout, memory, rows)",
        &["limit"]
    )
    .unwrap()
});
pub(crate) static RUNNING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tally_queries_running", "Queries executing now").unwrap()
});

/// Registers every metric of this stage so it is exported from the start.
pub fn init() {
    LazyLock::force(&QUERY_SECONDS);
    LazyLock::force(&CACHE_LOOKUPS);
    LazyLock::force(&CACHE_BYTES);
    LazyLock::force(&CACHE_ENTRIES);
    LazyLock::force(&REJECTED);
    LazyLock::force(&RUNNING);
}
