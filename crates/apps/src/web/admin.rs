//! Web analytics' admin and read routes: the sites tracker events are
//! accepted for (`/v1/sites`, scope `read` to list, `admin` to change),
//! Plausible's Stats API v1 (`/api/v1/stats/...`, any key with the `read`
//! scope as its Bearer token) and `POST /v1/web/backfill` (scope `admin`).

use super::stats::{Params, StatsError};
use super::{sites::normalize_domain, Slot, WebApp};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use tally_http::{created_status, json_body, ApiError, Ready, Scope};

type Admin = tally_http::Admin<WebApp>;

/// The admin and read routes, for any router state.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(slot: Slot, ready: Ready) -> Router<S> {
    Router::new()
        .route("/v1/sites", get(list_sites).post(post_site))
        .route("/v1/sites/{domain}", axum::routing::delete(delete_site))
        .route(
            "/v1/web/backfill",
            post(backfill).layer(axum::extract::DefaultBodyLimit::max(MAX_BACKFILL_BYTES)),
        )
        .route("/api/v1/stats/realtime/visitors", get(realtime_visitors))
        .route("/api/v1/stats/aggregate", get(aggregate))
        .route("/api/v1/stats/timeseries", get(timeseries))
        .route("/api/v1/stats/breakdown", get(breakdown))
        .with_state(Admin { slot, ready })
}

async fn list_sites(State(s): State<Admin>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.ready.keys.authorize(&headers, Scope::Read)?;
    let app = s.app()?;
    let sites: Vec<Value> = app
        .sites()
        .list()
        .into_iter()
        .map(|(d, o)| json!({"domain": d, "from": o.as_str()}))
        .collect();
    Ok(Json(json!({
        "stream": app.config().stream,
        "sites": sites,
        // Whether visitors' countries are looked up (`--web-geoip`).
        "countries": app.config().geoip.is_some(),
    })))
}

#[derive(Deserialize)]
struct NewSite {
    domain: String,
}

/// Registers a site: 201 when new, 200 when it was there.
async fn post_site(
    State(s): State<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    s.ready.keys.authorize(&headers, Scope::Admin)?;
    let body: NewSite = json_body(&body, r#"{"domain": "..."}"#)?;
    let domain = normalize_domain(&body.domain).map_err(|message| ApiError::BadRequest {
        message: format!("domain: {message}"),
        stream: None,
    })?;
    let app = s.app()?.clone();
    let d = domain.clone();
    // On its own task: a client hanging up must not cut it short.
    let created = tokio::spawn(async move { app.sites().add(&d).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok((
        created_status(created),
        Json(json!({ "domain": domain, "created": created })),
    ))
}

/// Removes a site added through the API (404 if unknown; 409 for a site
/// the config names).
async fn delete_site(
    State(s): State<Admin>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.ready.keys.authorize(&headers, Scope::Admin)?;
    let domain = normalize_domain(&domain).map_err(|message| ApiError::BadRequest {
        message: format!("domain: {message}"),
        stream: None,
    })?;
    let app = s.app()?.clone();
    let d = domain.clone();
    let removed = tokio::spawn(async move { app.sites().remove(&d).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    match removed {
        None => Err(ApiError::NotFound {
            what: format!("site {domain}"),
        }),
        Some(false) => Err(ApiError::Conflict {
            message: format!("site {domain} is named in the config file; remove it there"),
        }),
        Some(true) => Ok(Json(json!({ "domain": domain, "removed": true }))),
    }
}

/// Largest backfill body.
const MAX_BACKFILL_BYTES: usize = 256 << 20;

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::Invalid(message) => ApiError::BadRequest {
                message,
                stream: None,
            },
            StatsError::Query(q) => ApiError::Query(q),
        }
    }
}

/// Which endpoint of the Stats API.
#[derive(Clone, Copy)]
enum Endpoint {
    Aggregate,
    Timeseries,
    Breakdown,
}

async fn stats(
    s: &Admin,
    headers: &HeaderMap,
    params: HashMap<String, String>,
    which: Endpoint,
) -> Result<Json<Value>, ApiError> {
    s.ready.keys.authorize(headers, Scope::Read)?;
    let app = s.app()?;
    let query = s.ready.query()?;
    let s = app.stats(query);
    let p = Params(params);
    let v = match which {
        Endpoint::Aggregate => s.aggregate(&p).await?,
        Endpoint::Timeseries => s.timeseries(&p).await?,
        Endpoint::Breakdown => s.breakdown(&p).await?,
    };
    Ok(Json(v))
}

async fn aggregate(
    State(s): State<Admin>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    stats(&s, &headers, params, Endpoint::Aggregate).await
}

async fn timeseries(
    State(s): State<Admin>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    stats(&s, &headers, params, Endpoint::Timeseries).await
}

async fn breakdown(
    State(s): State<Admin>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    stats(&s, &headers, params, Endpoint::Breakdown).await
}

/// Unique visitors of the last 5 minutes, as a bare number (Plausible's
/// shape).
async fn realtime_visitors(
    State(s): State<Admin>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    s.ready.keys.authorize(&headers, Scope::Read)?;
    let app = s.app()?;
    let query = s.ready.query()?;
    let n = app.stats(query).realtime_visitors(&Params(params)).await?;
    Ok(Json(json!(n)))
}

/// Stores past tracker events (NDJSON, see `WebApp::backfill`).
async fn backfill(
    State(s): State<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    s.ready.keys.authorize(&headers, Scope::Admin)?;
    let body = tally_http::encoding::inflated(&headers, body, MAX_BACKFILL_BYTES)?;
    let app = s.app()?.clone();
    // On its own task: a client hanging up must not cut it short.
    // A task cancelled by the runtime is a server shutting down.
    let r = tokio::spawn(async move { app.backfill(&body).await })
        .await
        .map_err(|e| match e.is_cancelled() {
            true => ApiError::from(tally_engine::Error::Closed),
            false => ApiError::Internal(e.to_string()),
        })?;
    Ok(Json(json!(r?)))
}
