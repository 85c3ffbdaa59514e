//! Prometheus metrics of the query stage.

use prometheus::{
    exponential_buckets, register_gauge_vec, register_histogram_vec, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, GaugeVec, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec,
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

pub(crate) static JOB_LAG: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tally_job_lag_seconds",
        "How far the end of a job's newest window completed in order trails the clock",
        &["job_name"]
    )
    .unwrap()
});
pub(crate) static JOB_LAST_SUCCESS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tally_job_last_success_timestamp_seconds",
        "When a job's last successful run ended (Unix seconds)",
        &["job_name"]
    )
    .unwrap()
});
pub(crate) static JOB_LAST_DURATION: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tally_job_last_run_duration_seconds",
        "How long a job's last run took",
        &["job_name"]
    )
    .unwrap()
});
pub(crate) static JOB_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_job_run_seconds",
        "Job run durations",
        &["job_name"],
        exponential_buckets(0.001, 2.0, 20).unwrap()
    )
    .unwrap()
});
pub(crate) static JOB_RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_job_runs_total",
        "Job runs by outcome (ok, error)",
        &["job_name", "outcome"]
    )
    .unwrap()
});
pub(crate) static JOB_ROWS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("tally_job_rows", "Rows in a job's table", &["job_name"]).unwrap()
});
pub(crate) static JOB_WINDOW: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tally_job_window_seconds",
        "A job's window length (its lag normally stays under window + delay)",
        &["job_name"]
    )
    .unwrap()
});
pub(crate) static JOB_DELAY: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "tally_job_delay_seconds",
        "How long after a window ends a job runs it",
        &["job_name"]
    )
    .unwrap()
});
pub(crate) static JOB_PAUSED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "tally_job_paused",
        "1 while a job's schedule is paused",
        &["job_name"]
    )
    .unwrap()
});

/// Registers every metric of this stage so it is exported from the start.
pub fn init() {
    LazyLock::force(&QUERY_SECONDS);
    LazyLock::force(&CACHE_LOOKUPS);
    LazyLock::force(&CACHE_BYTES);
    LazyLock::force(&CACHE_ENTRIES);
    LazyLock::force(&REJECTED);
    LazyLock::force(&RUNNING);
    LazyLock::force(&JOB_LAG);
    LazyLock::force(&JOB_LAST_SUCCESS);
    LazyLock::force(&JOB_LAST_DURATION);
    LazyLock::force(&JOB_SECONDS);
    LazyLock::force(&JOB_RUNS);
    LazyLock::force(&JOB_ROWS);
    LazyLock::force(&JOB_PAUSED);
    LazyLock::force(&JOB_WINDOW);
    LazyLock::force(&JOB_DELAY);
}
