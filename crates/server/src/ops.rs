//! Health, readiness, metrics, stream listing and admin endpoints.

use crate::auth::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tally_engine::StreamInfo;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, Response> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // Still serving, about to stop: a load balancer should send new
        // requests elsewhere.
        return Err(ApiError::Overloaded {
            reason:
                "not ready: this node is shutting down (draining); send requests to another node"
                    .into(),
            retry_after: Duration::from_secs(5),
        }
        .into_response());
    }
    let engine = state.engine().map_err(IntoResponse::into_response)?;
    let faults = engine.faults();
    if !faults.is_empty() {
        // A part failed: not ready, naming which, so a load balancer takes
        // this node out and an operator knows what to look for.
        let failed: Vec<Value> = faults
            .iter()
            .map(|f| json!({"part": f.part, "error": f.message}))
            .collect();
        let e = ApiError::Overloaded {
            reason: format!(
                "not ready: {} failed; writes are refused until restart",
                faults.iter().map(|f| f.part).collect::<Vec<_>>().join(", ")
            ),
            retry_after: Duration::from_secs(30),
        };
        let mut extra = serde_json::Map::new();
        extra.insert("failed".into(), Value::Array(failed));
        return Err(e.into_response_with(extra));
    }
    let r = engine.recovery();
    Ok(Json(json!({
        "status": "ready",
        "replayed_records": r.log.replayed,
        "replay_ms": r.took.as_millis() as u64,
    })))
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(e) = state.engine.get() {
        crate::metrics::BUDGET_IN_USE
            .set((state.ingest_budget_bytes - state.ingest_budget.available_permits()) as i64);
        let _ = e.log_queue_depth();
        e.export_rollup_metrics();
    }
    if let Ok(q) = state.query() {
        q.jobs().export_metrics();
    }
    let families = prometheus::gather();
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], out).into_response(),
        Err(e) => ApiError::Internal(format!("encoding metrics: {e}")).into_response(),
    }
}

fn ts_json(us: Option<i64>) -> Value {
    match us.and_then(DateTime::<Utc>::from_timestamp_micros) {
        Some(t) => json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        None => Value::Null,
    }
}

fn stream_json(s: &StreamInfo) -> Value {
    let columns: Vec<Value> = s
        .schema
        .columns
        .iter()
        .map(|c| json!({ "name": c.name, "type": c.ty.as_str() }))
        .collect();
    json!({
        "name": s.name,
        // The InfluxDB measurement an encoded stream name stands for.
        "original_name": tally_ingest::measurement_of_stream(&s.name),
        "rows": s.rows(),
        "memory_rows": s.stats.memory_rows,
        "segments": s.stats.segments,
        "segment_bytes": s.stats.segment_bytes,
        // Hours retention moved out of the data directory, kept in the archive.
        "archive_only_rows": s.archive_only_rows,
        "archive_only_segments": s.archive_only_segments,
        "min_ts": ts_json(s.min_ts),
        "max_ts": ts_json(s.stats.max_ts),
        "columns": columns,
    })
}

pub(crate) async fn list_streams(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let streams: Vec<Value> = state
        .engine()?
        .streams()
        .iter()
        .filter(|s| !tally_ingest::is_internal_stream(&s.name))
        .map(stream_json)
        .collect();
    Ok(Json(json!({ "streams": streams })))
}

pub(crate) async fn get_stream(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let s = state
        .engine()?
        .stream(&stream)
        .filter(|_| !tally_ingest::is_internal_stream(&stream))
        .ok_or_else(|| ApiError::NotFound {
            what: format!("stream '{stream}'"),
        })?;
    Ok(Json(stream_json(&s)))
}

/// Flushes the in-memory tail to segments now.
pub(crate) async fn flush(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let engine = state.engine()?.clone();
    let r = tokio::task::spawn_blocking(move || engine.flush())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({
        "rows": r.rows,
        "segments": r.segments,
        "bytes": r.bytes,
        "checkpoint_lsn": r.checkpoint_lsn,
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupRequest {
    /// An absolute directory on the server's machine, missing or empty.
    to: String,
}

/// Takes a backup of the running server into a directory on its machine
/// (docs/operations.md), while ingest continues; one at a time.
pub(crate) async fn backup(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(req): Json<BackupRequest>,
) -> Result<Json<Value>, ApiError> {
    static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    state.keys().authorize(&headers, Scope::Admin)?;
    let bad = |message: String| ApiError::BadRequest {
        message,
        stream: None,
    };
    let to = std::path::PathBuf::from(&req.to);
    if !to.is_absolute() {
        return Err(bad(format!(
            "to = {:?}: give an absolute path on the server's machine",
            req.to
        )));
    }
    if std::fs::read_dir(&to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(bad(format!(
            "{} is not empty: back up into a new directory",
            req.to
        )));
    }
    let engine = state.engine()?.clone();
    if RUNNING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return Err(ApiError::Conflict {
            message: "a backup is already running".into(),
        });
    }
    let r = tokio::task::spawn_blocking(move || engine.backup(&to)).await;
    RUNNING.store(false, std::sync::atomic::Ordering::Release);
    let report = r.map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// Runs an archive and retention pass now (the maintenance thread runs
/// one every archive interval).
pub(crate) async fn maintain(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let engine = state.engine()?.clone();
    let r = tokio::task::spawn_blocking(move || engine.maintain())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({
        "archive": r.archive.map(|a| json!({
            "uploaded_segments": a.uploaded,
            "uploaded_bytes": a.uploaded_bytes,
            "retired_segments": a.retired,
            "replaced_segments": a.replaced,
            "pending_segments": a.pending,
            "skipped": a.skipped,
        })),
        "retention": {
            "dropped_segments": r.dropped_segments,
            "dropped_rows": r.dropped_rows,
        },
    })))
}

/// The archive's state: where it is, what it holds, the last pass.
pub(crate) async fn archive(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let engine = state.engine()?;
    let Some(status) = engine.archive_status() else {
        return Err(ApiError::NotFound {
            what: "archive (none is configured)".into(),
        });
    };
    let retention: serde_json::Map<String, Value> = engine
        .options()
        .retention
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.as_secs() / 3600)))
        .collect();
    let mut body = serde_json::to_value(status).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["retention_hours"] = Value::Object(retention);
    Ok(Json(body))
}

/// The OpenAPI document of this API (docs/openapi.json, compiled in).
pub(crate) async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
}

pub(crate) async fn not_found(uri: Uri) -> impl IntoResponse {
    let e = ApiError::NotFound {
        what: format!("route {}", uri.path()),
    };
    (StatusCode::NOT_FOUND, e.into_response())
}
