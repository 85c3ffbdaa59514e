//! The counter's HTTP routes: the page, values (JSON and Server-Sent
//! Events), increments, and accounts.
//!
//! Sessions ride in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when the
//! request came over HTTPS or the config says so). Every state-changing
//! request must carry CSRF proof: the `X-CSRF-Token` header equal to the
//! `tally_csrf` cookie (a random token the page embeds; `SameSite=Strict`,
//! compared in constant time), and, when the browser sends `Origin`, an
//! origin of this host. A cross-site page can neither read the cookie nor
//! set the header, so it cannot forge a click or a login.

use super::{CounterApp, CounterError};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cookie::{Cookie, SameSite};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tally_http::ApiError;

/// Where the app is, once it has been rebuilt at start.
pub type Slot = Arc<tally_http::Slot<CounterApp>>;

pub const SESSION_COOKIE: &str = "tally_session";
pub const CSRF_COOKIE: &str = "tally_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The counter's routes, for any router state.
/// All of the counter's routes: its pages, values, increments and
/// accounts (session cookies), and its admin API (keys and scopes from
/// `ready`).
pub fn routes<S: Clone + Send + Sync + 'static>(slot: Slot, ready: tally_http::Ready) -> Router<S> {
    Router::new()
        .route("/counter/{name}", get(page))
        .route("/counter/{name}/value", get(value))
        .route("/counter/{name}/events", get(live))
        .route("/counter/{name}/inc", post(increment))
        .route("/getvalue", get(default_value))
        .route("/account", get(account))
        .route("/account/register", post(register))
        .route("/account/login", post(login))
        .route("/account/logout", post(logout))
        .route("/assets/counter.js", get(script))
        .route("/assets/counter.css", get(style))
        // Account forms are a few hundred bytes.
        .layer(DefaultBodyLimit::max(16 << 10))
        .with_state(slot.clone())
        .merge(super::admin::routes(slot, ready))
}

fn app(slot: &Slot) -> Result<&Arc<CounterApp>, ApiError> {
    slot.app()
}

/// Runs a state change to its end on its own task. A client that hangs up
/// drops its request's future; the change must still finish (its event may
/// already be in the log), or memory would disagree with the log and a
/// reservation would stay held.
async fn to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, CounterError>> + Send + 'static,
) -> Result<T, CounterError> {
    tokio::spawn(change)
        .await
        .map_err(|e| CounterError::Internal(e.to_string()))?
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request came over HTTPS (directly or through a proxy that
/// says so).
fn secure(app: &CounterApp, headers: &HeaderMap) -> bool {
    app.config().secure_cookies
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(
    name: &'static str,
    value: String,
    max_age: Option<std::time::Duration>,
    same_site: SameSite,
    secure: bool,
) -> (header::HeaderName, HeaderValue) {
    let mut c = Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(same_site)
        .secure(secure);
    if let Some(age) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(age.as_secs() as i64));
    }
    let v = HeaderValue::from_str(&c.build().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    (header::SET_COOKIE, v)
}

/// The CSRF token the client holds, or a new one to give it.
fn csrf_token(headers: &HeaderMap) -> (String, bool) {
    match cookie_value(headers, CSRF_COOKIE).filter(|t| t.len() == 64) {
        Some(t) => (t.to_string(), false),
        None => (hex::encode(rand::random::<[u8; 32]>()), true),
    }
}

fn csrf_cookie(
    app: &CounterApp,
    headers: &HeaderMap,
    token: &str,
) -> (header::HeaderName, HeaderValue) {
    set_cookie(
        CSRF_COOKIE,
        token.to_string(),
        None,
        SameSite::Strict,
        secure(app, headers),
    )
}

/// Refuses a state-changing request without CSRF proof.
fn check_csrf(headers: &HeaderMap) -> Result<(), CounterError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin = origin.as_bytes();
        let authority = origin
            .strip_prefix(b"https://")
            .or_else(|| origin.strip_prefix(b"http://"));
        if authority.is_none() || authority != host {
            return Err(CounterError::Forbidden(
                "cross-origin request refused (the Origin header names another site)".into(),
            ));
        }
    }
    let cookie = cookie_value(headers, CSRF_COOKIE).ok_or_else(|| {
        CounterError::Forbidden(format!(
            "missing CSRF cookie {CSRF_COOKIE}: load the page or GET /account first"
        ))
    })?;
    let sent = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .ok_or_else(|| {
            CounterError::Forbidden(format!(
                "missing {CSRF_HEADER} header: send the token GET /account returns"
            ))
        })?;
    if !bool::from(cookie.as_bytes().ct_eq(sent)) {
        return Err(CounterError::Forbidden(format!(
            "the {CSRF_HEADER} header does not match the {CSRF_COOKIE} cookie"
        )));
    }
    Ok(())
}

fn session_user(app: &CounterApp, headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, SESSION_COOKIE).and_then(|t| app.session_user(t))
}

fn address(info: Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    info.map_or_else(
        || "unknown".into(),
        |Extension(ConnectInfo(a))| a.ip().to_string(),
    )
}

async fn value(State(slot): State<Slot>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let v = app(&slot)?.value(&name)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response())
}

async fn default_value(State(slot): State<Slot>) -> Result<Response, ApiError> {
    let app = app(&slot)?;
    let v = app.value(app.default_counter())?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response())
}

/// Server-Sent Events: the value now, then every new value.
async fn live(
    State(slot): State<Slot>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let app = app(&slot)?;
    let rx = app.watch(&name)?;
    let guard = app
        .live_client()
        .ok_or_else(|| CounterError::Unavailable("too many live viewers; reload later".into()))?;
    let first = true;
    let stream = futures::stream::unfold((rx, first, guard), move |(mut rx, first, guard)| {
        let name = name.clone();
        async move {
            if !first {
                let mut closing = guard.closing();
                tokio::select! {
                    changed = rx.changed() => changed.ok()?,
                    // The server is stopping: end the stream, so the
                    // graceful shutdown is not held by open pages (their
                    // EventSource reconnects to the next process).
                    _ = closing.wait_for(|c| *c) => return None,
                }
            }
            let value = *rx.borrow_and_update();
            let data = json!({
                "name": name,
                "value": value,
                "as_of": super::rfc3339(super::now_us()),
            });
            let event = SseEvent::default().event("value").data(data.to_string());
            Some((Ok(event), (rx, false, guard)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn increment(
    State(slot): State<Slot>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = app(&slot)?;
    // Without a session there is nothing to forge: 401 first.
    let user = session_user(app, &headers).ok_or(CounterError::NotLoggedIn)?;
    check_csrf(&headers)?;
    let app2 = app.clone();
    let accepted = to_the_end(async move { app2.increment(&name, &user).await }).await?;
    Ok(Json(accepted).into_response())
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn credentials(body: &[u8]) -> Result<Credentials, CounterError> {
    serde_json::from_slice(body).map_err(|e| CounterError::BadRequest {
        message: format!("expected a JSON object {{\"username\": ..., \"password\": ...}}: {e}"),
        field: None,
    })
}

/// Answers a new session: its cookie and the user.
fn logged_in(app: &CounterApp, headers: &HeaderMap, user: String, token: String) -> Response {
    let cookie = set_cookie(
        SESSION_COOKIE,
        token,
        Some(app.config().session_ttl),
        SameSite::Lax,
        secure(app, headers),
    );
    ([cookie], Json(json!({ "user": user }))).into_response()
}

/// How a user gets a session.
#[derive(Clone, Copy)]
enum Entry {
    Register,
    Login,
}

async fn register(
    State(slot): State<Slot>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    enter(Entry::Register, &slot, info, &headers, &body).await
}

async fn login(
    State(slot): State<Slot>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    enter(Entry::Login, &slot, info, &headers, &body).await
}

/// Registers or logs in, and answers the new session.
async fn enter(
    entry: Entry,
    slot: &Slot,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let app = app(slot)?;
    check_csrf(headers)?;
    let c = credentials(body)?;
    let (app2, from) = (app.clone(), address(info));
    let (user, token) = to_the_end(async move {
        match entry {
            Entry::Register => app2.register(&c.username, c.password, &from).await,
            Entry::Login => app2.login(&c.username, c.password, &from).await,
        }
    })
    .await?;
    Ok(logged_in(app, headers, user, token))
}

async fn logout(State(slot): State<Slot>, headers: HeaderMap) -> Result<Response, ApiError> {
    let app = app(&slot)?;
    check_csrf(&headers)?;
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE).map(str::to_string) {
        let app2 = app.clone();
        to_the_end(async move { app2.logout(&token).await }).await?;
    }
    let clear = set_cookie(
        SESSION_COOKIE,
        String::new(),
        Some(std::time::Duration::ZERO),
        SameSite::Lax,
        secure(app, &headers),
    );
    Ok(([clear], Json(json!({ "user": null }))).into_response())
}

/// Who is logged in, and the CSRF token to send with changes.
async fn account(State(slot): State<Slot>, headers: HeaderMap) -> Result<Response, ApiError> {
    let app = app(&slot)?;
    let (csrf, new) = csrf_token(&headers);
    let body = Json(json!({ "user": session_user(app, &headers), "csrf": csrf }));
    let mut resp = ([(header::CACHE_CONTROL, "no-store")], body).into_response();
    if new {
        let (k, v) = csrf_cookie(app, &headers, &csrf);
        resp.headers_mut().append(k, v);
    }
    Ok(resp)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Headers every page and asset gets: no framing (a button is a
/// clickjacking target), no inline script, nothing from elsewhere.
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
];

async fn page(
    State(slot): State<Slot>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = app(&slot)?;
    let v = app.value(&name)?;
    let (csrf, new) = csrf_token(&headers);
    let user = session_user(app, &headers);
    let html = PAGE
        .replace("{{name}}", &escape(&name))
        .replace("{{value}}", &v.value.to_string())
        .replace("{{csrf}}", &csrf)
        .replace("{{user}}", &escape(user.as_deref().unwrap_or("")))
        .replace("{{window}}", &window_text(app.config().window));
    let mut resp = (PAGE_HEADERS, Html(html)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if new {
        let (k, v) = csrf_cookie(app, &headers, &csrf);
        resp.headers_mut().append(k, v);
    }
    Ok(resp)
}

/// "24 hours", "1 hour", "90 seconds": the window as the page says it.
fn window_text(d: std::time::Duration) -> String {
    let (n, unit) = match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    }
}

async fn script() -> Response {
    let mut h = PAGE_HEADERS.to_vec();
    h.push((header::CONTENT_TYPE, "text/javascript; charset=utf-8"));
    asset(&h, SCRIPT)
}

async fn style() -> Response {
    let mut h = PAGE_HEADERS.to_vec();
    h.push((header::CONTENT_TYPE, "text/css; charset=utf-8"));
    asset(&h, STYLE)
}

fn asset(headers: &[(header::HeaderName, &'static str)], body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    for (k, v) in headers {
        resp.headers_mut()
            .insert(k.clone(), HeaderValue::from_static(v));
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn csrf_needs_matching_cookie_and_header_and_own_origin() {
        let t = "a".repeat(64);
        let cookie = format!("x=1; {CSRF_COOKIE}={t}");
        let ok = headers(&[("cookie", &cookie), (CSRF_HEADER, &t), ("host", "h:1")]);
        assert!(check_csrf(&ok).is_ok());
        let mut same_origin = ok.clone();
        same_origin.insert("origin", HeaderValue::from_static("http://h:1"));
        assert!(check_csrf(&same_origin).is_ok());
        let mut other = ok.clone();
        other.insert("origin", HeaderValue::from_static("http://evil:1"));
        assert!(check_csrf(&other).is_err());
        let mut null = ok.clone();
        null.insert("origin", HeaderValue::from_static("null"));
        assert!(check_csrf(&null).is_err());
        assert!(check_csrf(&headers(&[("cookie", &cookie)])).is_err());
        assert!(check_csrf(&headers(&[(CSRF_HEADER, &t)])).is_err());
        let wrong = "b".repeat(64);
        assert!(check_csrf(&headers(&[("cookie", &cookie), (CSRF_HEADER, &wrong)])).is_err());
    }

    #[test]
    fn windows_read_naturally() {
        assert_eq!(
            window_text(std::time::Duration::from_secs(86_400)),
            "24 hours"
        );
        assert_eq!(
            window_text(std::time::Duration::from_secs(120)),
            "2 minutes"
        );
        assert_eq!(window_text(std::time::Duration::from_secs(2)), "2 seconds");
        assert_eq!(window_text(std::time::Duration::from_secs(3600)), "1 hour");
        assert_eq!(window_text(std::time::Duration::from_secs(60)), "1 minute");
    }
}
