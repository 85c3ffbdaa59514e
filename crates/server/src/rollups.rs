//! The rollups API: define, list, inspect, rebuild and remove continuous
//! rollups (docs/rollups.md).

use crate::auth::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use tally_engine::RollupDef;

/// One rollup as the API shows it.
fn rollup_json(state: &AppState, name: &str) -> Result<Value, ApiError> {
    let r = state
        .engine()?
        .rollup_status(name)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("rollup '{name}'"),
        })?;
    let buckets: serde_json::Map<String, Value> = r
        .buckets
        .iter()
        .map(|(g, n)| (g.as_str().to_string(), json!(n)))
        .collect();
    let mut v = json!({
        "definition": r.definition,
        "status": r.state.as_str(),
        "events": r.events,
        "lsn": r.lsn,
        "buckets": buckets,
    });
    if let Some(b) = &r.build {
        v["build"] = json!({
            "rows_done": b.rows_done,
            "rows_total": b.rows_total,
            "from": b.range.map(|r| r.0),
            "to": b.range.map(|r| r.1),
        });
    }
    Ok(v)
}

pub(crate) async fn list_rollups(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let names = state.engine()?.rollup_names();
    let rollups = names
        .iter()
        .map(|n| rollup_json(&state, n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "rollups": rollups })))
}

pub(crate) async fn get_rollup(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    Ok(Json(rollup_json(&state, &name)?))
}

/// Adds a rollup, or replaces one of the same name; its state is built
/// from the stored events in the background (202).
pub(crate) async fn post_rollup(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let def: RollupDef = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("invalid rollup definition: {e}"),
        stream: None,
    })?;
    let name = def.name.clone();
    let engine = state.engine()?.clone();
    tokio::task::spawn_blocking(move || engine.define_rollup(def))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok((StatusCode::ACCEPTED, Json(rollup_json(&state, &name)?)))
}

/// Rebuilds a rollup from the stored events (reprocessing), in the
/// background (202).
pub(crate) async fn rebuild_rollup(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<RebuildParams>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let engine = state.engine()?.clone();
    if engine.rollup_definition(&name).is_none() {
        return Err(ApiError::NotFound {
            what: format!("rollup '{name}'"),
        });
    }
    let n = name.clone();
    let range = match (&params.from, &params.to) {
        (None, None) => None,
        (Some(f), Some(t)) => Some((time(f)?, time(t)?)),
        _ => {
            return Err(ApiError::BadRequest {
                message: "give both from and to, or neither".into(),
                stream: None,
            })
        }
    };
    tokio::task::spawn_blocking(move || engine.rebuild_rollup(&n, range))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok((StatusCode::ACCEPTED, Json(rollup_json(&state, &name)?)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RebuildParams {
    /// A partial rebuild: RFC 3339 times on the rollup's coarsest interval.
    from: Option<String>,
    to: Option<String>,
}

/// An RFC 3339 time in µs.
pub(crate) fn time(s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| ApiError::BadRequest {
            message: format!("time {s:?}: {e} (use RFC 3339, like 2026-11-01T00:00:00Z)"),
            stream: None,
        })
}

pub(crate) async fn delete_rollup(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let engine = state.engine()?.clone();
    let gone = tokio::task::spawn_blocking(move || engine.remove_rollup(&name).map(|g| (g, name)))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    match gone {
        (true, _) => Ok(StatusCode::NO_CONTENT),
        (false, name) => Err(ApiError::NotFound {
            what: format!("rollup '{name}'"),
        }),
    }
}
