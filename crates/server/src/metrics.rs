//! Prometheus metrics of the HTTP layer, and the request-metrics middleware.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    HistogramVec, IntCounterVec, IntGauge,
};
use std::sync::LazyLock;
use std::time::Instant;

pub(crate) static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_http_requests_total",
        "HTTP requests by route and status",
        &["route", "status"]
    )
    .unwrap()
});
pub(crate) static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "tally_http_request_seconds",
        "HTTP request latency by route",
        &["route"],
        exponential_buckets(0.0001, 2.0, 18).unwrap()
    )
    .unwrap()
});
pub(crate) static BUDGET_IN_USE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_http_ingest_budget_bytes_in_use",
        "Bytes of the ingest memory budget held by requests"
    )
    .unwrap()
});

pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    LATENCY
        .with_label_values(&[&route])
        .observe(t.elapsed().as_secs_f64());
    REQUESTS
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

/// Registers every metric of this stage so it is exported from the start.
pub(crate) fn init() {
    tally_engine::init_metrics();
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&BUDGET_IN_USE);
}
