//! Web analytics' read side and backfill: Plausible's Stats API v1
//! (`/api/v1/stats/...`, any key with the `read` scope as its Bearer token)
//! and `POST /v1/web/backfill` (scope `admin`).

use crate::auth::Scope;
use crate::error::ApiError;
use crate::sites::app;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tally_apps::web::stats::{Params, StatsError};

/// Largest backfill body.
pub(crate) const MAX_BACKFILL_BYTES: usize = 256 << 20;

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
    state: &AppState,
    headers: &HeaderMap,
    params: HashMap<String, String>,
    which: Endpoint,
) -> Result<Json<Value>, ApiError> {
    state.keys.authorize(headers, Scope::Read)?;
    let app = app(state)?;
    let query = state.query()?;
    let s = app.stats(query);
    let p = Params(params);
    let v = match which {
        Endpoint::Aggregate => s.aggregate(&p).await?,
        Endpoint::Timeseries => s.timeseries(&p).await?,
        Endpoint::Breakdown => s.breakdown(&p).await?,
    };
    Ok(Json(v))
}

pub(crate) async fn aggregate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    stats(&state, &headers, params, Endpoint::Aggregate).await
}

pub(crate) async fn timeseries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    stats(&state, &headers, params, Endpoint::Timeseries).await
}

pub(crate) async fn breakdown(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    stats(&state, &headers, params, Endpoint::Breakdown).await
}

/// Unique visitors of the last 5 minutes, as a bare number (Plausible's
/// shape).
pub(crate) async fn realtime_visitors(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    state.keys.authorize(&headers, Scope::Read)?;
    let app = app(&state)?;
    let query = state.query()?;
    let n = app.stats(query).realtime_visitors(&Params(params)).await?;
    Ok(Json(json!(n)))
}

/// Stores past tracker events (NDJSON, see `WebApp::backfill`).
pub(crate) async fn backfill(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.keys.authorize(&headers, Scope::Admin)?;
    let body = crate::encoding::inflated(&headers, body, MAX_BACKFILL_BYTES)?;
    let app = app(&state)?.clone();
    // On its own task: a client hanging up must not cut it short.
    // A task cancelled by the runtime is a server shutting down.
    let r = tokio::spawn(async move { app.backfill(&body).await })
        .await
        .map_err(|e| match e.is_cancelled() {
            true => ApiError::from(tally_engine::Error::Closed),
            false => ApiError::Internal(e.to_string()),
        })?;
    match r {
        Ok(report) => Ok(Json(json!(report))),
        Err(tally_apps::web::WebError::Payload(message)) => Err(ApiError::BadRequest {
            message,
            stream: None,
        }),
        Err(tally_apps::web::WebError::Engine(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
