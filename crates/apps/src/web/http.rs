//! The tracker's routes: `POST /api/event` (Plausible's Events API) and
//! `GET /js/script.js`. Both answer any origin (the tracker runs on the
//! customers' sites); neither needs a key.

use super::{Tracked, WebApp, WebError};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

/// Where the server puts the app once it has opened.
pub type Slot = Arc<OnceLock<Arc<WebApp>>>;

const SCRIPT: &str = include_str!("script.js");

/// Largest tracker body accepted (Plausible's URLs and props fit well).
const MAX_BODY: usize = 64 << 10;

pub fn routes<S: Clone + Send + Sync + 'static>(slot: Slot) -> Router<S> {
    Router::new()
        .route("/api/event", post(event).options(preflight))
        .route("/js/script.js", get(script))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(slot)
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

/// The body, inflated if a proxy or a server-side sender compressed it
/// (gzip or zstd, to at most [`MAX_BODY`]); otherwise the status and
/// message to answer.
fn inflated(headers: &HeaderMap, body: Bytes) -> Result<Bytes, (StatusCode, String)> {
    use tally_ingest::compression::{inflate, Encoding, InflateError};
    let value = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    let refuse = |status: StatusCode, message: String| (status, message);
    match Encoding::from_header(value) {
        Ok(Encoding::Identity) => Ok(body),
        Ok(encoding) => match inflate(encoding, &body, MAX_BODY, |_| true) {
            Ok(b) => Ok(b.into()),
            Err(e @ InflateError::TooLarge { .. }) => {
                Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))
            }
            Err(e) => Err(refuse(StatusCode::BAD_REQUEST, e.to_string())),
        },
        Err(v) => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {v:?}; send the body as it is, or gzip or zstd"),
        )),
    }
}

async fn event(
    State(slot): State<Slot>,
    headers: HeaderMap,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let Some(app) = slot.get().cloned() else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "web analytics is starting"})),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return cors(r);
    };
    let body = match inflated(&headers, body) {
        Ok(b) => b,
        Err((status, message)) => {
            return cors((status, axum::Json(json!({"error": message}))).into_response())
        }
    };
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ip = client_ip(&headers, info);
    // No task of its own: `track` hands the events to the visit writers
    // before its first wait, so a tracker hanging up cannot stop an append
    // half-way.
    let r = match app.track(&body, ua, ip).await {
        Ok(Tracked::Stored(_) | Tracked::Bot | Tracked::UnknownSite) => {
            (StatusCode::ACCEPTED, "ok").into_response()
        }
        Err(WebError::Payload(message)) => {
            let (field, msg) = message.split_once(": ").unwrap_or(("request", &message));
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"errors": {field: [msg]}})),
            )
                .into_response()
        }
        Err(WebError::Engine(tally_engine::Error::Overloaded { retry_after, .. })) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "overloaded"})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "tracker event not stored");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    };
    cors(r)
}
