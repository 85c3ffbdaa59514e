//! Prometheus metrics of the HTTP layer, the request-metrics middleware,
//! and the middleware that turns a panic in a handler into a 500 for that
//! request alone.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use futures::FutureExt;
use prometheus::{
    exponential_buckets, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    HistogramVec, IntCounterVec, IntGauge,
};
use std::panic::AssertUnwindSafe;
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
pub(crate) static PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_http_panics_total",
        "Requests whose handler panicked (answered 500), by route",
        &["route"]
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

pub(crate) static DRAINING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_draining",
        "1 once the server was told to stop and is draining (/readyz answers 503)"
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
    let resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => panicked(&route, panic.as_ref()),
    };
    LATENCY
        .with_label_values(&[&route])
        .observe(t.elapsed().as_secs_f64());
    REQUESTS
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

/// The answer to a request whose handler panicked: the panic is logged with
/// the route and counted, the connection and the process go on. (State the
/// handler held behind a lock is not poisoned: tally's locks are
/// `parking_lot`'s.)
fn panicked(route: &str, panic: &(dyn std::any::Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(route, panic = %message, "request handler panicked");
    PANICS.with_label_values(&[route]).inc();
    crate::ApiError::Internal(format!(
        "the request failed on a bug in tally ({message}); the server goes on"
    ))
    .into_response()
}

/// Registers every metric of this stage so it is exported from the start.
pub(crate) fn init() {
    tally_engine::init_metrics();
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&BUDGET_IN_USE);
    LazyLock::force(&PANICS);
    LazyLock::force(&DRAINING);
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_as_json_and_the_server_goes_on() {
        super::init();
        async fn boom() -> &'static str {
            panic!("a bug in a handler")
        }
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "fine" }))
            .route_layer(axum::middleware::from_fn(super::track));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let before = super::PANICS.with_label_values(&["/boom"]).get();
        let resp = get_raw(addr, "/boom").await;
        assert!(resp.starts_with("HTTP/1.1 500"), "{resp}");
        assert!(resp.contains("application/json"), "{resp}");
        assert!(resp.contains("a bug in a handler"), "{resp}");
        assert_eq!(
            super::PANICS.with_label_values(&["/boom"]).get(),
            before + 1
        );
        let resp = get_raw(addr, "/ok").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("fine"), "{resp}");
    }
}
