//! The tracker's routes: `POST /api/event` (Plausible's Events API) and
//! `GET /js/script.js`. Both answer any origin (the tracker runs on the
//! customers' sites); neither needs a key.

use super::WebApp;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tally_http::{ApiError, Ready};

/// Where the server puts the app once it has opened.
pub type Slot = Arc<tally_http::Slot<WebApp>>;

const SCRIPT: &str = include_str!("script.js");

/// Largest tracker body accepted (Plausible's URLs and props fit well).
const MAX_BODY: usize = 64 << 10;

/// All of web analytics' routes: the tracker's (no key), and the sites,
/// Stats API and backfill routes (keys and scopes from `ready`).
pub fn routes<S: Clone + Send + Sync + 'static>(slot: Slot, ready: Ready) -> Router<S> {
    Router::new()
        .route("/api/event", post(event).options(preflight))
        .route("/js/script.js", get(script))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(slot.clone())
        .merge(super::admin::routes(slot, ready))
}

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    r
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

async fn script() -> Response {
    let mut r = SCRIPT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    cors(r)
}

/// The client's address: the first valid address of `X-Forwarded-For`
/// (trackers' events pass through the site's proxies; server-side senders
/// set it to the visitor's address, as Plausible's API asks), else the
/// connection's.
fn client_ip(headers: &HeaderMap, info: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|s| s.trim().parse::<IpAddr>().ok()))
        .or(info.map(|Extension(ConnectInfo(a))| a.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

async fn event(
    State(slot): State<Slot>,
    headers: HeaderMap,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    cors(match track(&slot, &headers, info, body).await {
        Ok(()) => (StatusCode::ACCEPTED, "ok").into_response(),
        Err(e) => e.into_response(),
    })
}

/// Stores a tracker's event (or drops it: a bot, an unknown site).
async fn track(
    slot: &Slot,
    headers: &HeaderMap,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Result<(), ApiError> {
    let app = slot.app()?.clone();
    // Inflated if a proxy or a server-side sender compressed it (gzip or
    // zstd, to at most `MAX_BODY`).
    let body = tally_http::encoding::inflated(headers, body, MAX_BODY)?;
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ip = client_ip(headers, info);
    // No task of its own: `track` hands the events to the visit writers
    // before its first wait, so a tracker hanging up cannot stop an append
    // half-way.
    app.track(&body, ua, ip).await?;
    Ok(())
}
