//! The jobs API: scheduled SQL jobs' status (lag, last success, run
//! durations), re-running windows, pausing and resuming (docs/jobs.md).
//! Jobs are defined in the config file; their rows are `jobs.<name>` in SQL.

use crate::auth::Scope;
use crate::error::ApiError;
use crate::rollups::time;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use tally_query::jobs::{Job, Trigger};

/// Windows one request may re-run.
const MAX_RERUN_WINDOWS: i64 = 1_000;

fn job(state: &AppState, name: &str) -> Result<Arc<Job>, ApiError> {
    state
        .query()?
        .jobs()
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            what: format!("job '{name}'"),
        })
}

pub(crate) async fn list_jobs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let jobs: Vec<Value> = state
        .query()?
        .jobs()
        .all()
        .map(|j| j.status_json())
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

pub(crate) async fn get_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    Ok(Json(job(&state, &name)?.status_json()))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunParams {
    /// The first window to run again (its start, RFC 3339).
    from: String,
    /// Run every window starting before this time; by default only `from`'s.
    to: Option<String>,
}

/// Runs windows again, in order, each replacing its rows; answers when
/// they have all run, with one record per window. Stops at the first
/// failure.
pub(crate) async fn run_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    params: Result<Query<RunParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    // The job first (an unknown one is a 404), then its parameters, each
    // refusal as JSON.
    let job = job(&state, &name)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest {
        message: e.body_text(),
        stream: None,
    })?;
    let every = job.def.every;
    let from = time(&params.from)?;
    let to = match &params.to {
        Some(t) => time(t)?,
        None => from + every,
    };
    if to <= from {
        return Err(ApiError::BadRequest {
            message: format!(
                "to ({}) must be after from ({})",
                params.to.unwrap_or_default(),
                params.from
            ),
            stream: None,
        });
    }
    let windows = (to - from + every - 1) / every;
    if windows > MAX_RERUN_WINDOWS {
        return Err(ApiError::BadRequest {
            message: format!(
                "from..to spans {windows} windows; run at most {MAX_RERUN_WINDOWS} per request"
            ),
            stream: None,
        });
    }
    let query = state.query()?.clone();
    let mut runs = Vec::new();
    let mut start = from;
    while start < to {
        let record = query.run_job(&name, start, Trigger::Manual).await?;
        runs.push(json!({
            "window_start": tally_query::jobs::rfc3339(record.window_start),
            "rows": record.rows,
            "duration_ms": record.duration_ms,
        }));
        start += every;
    }
    Ok(Json(json!({ "job": name, "runs": runs })))
}

pub(crate) async fn pause_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, name, headers, true).await
}

pub(crate) async fn resume_job(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, name, headers, false).await
}

async fn set_paused(
    state: Arc<AppState>,
    name: String,
    headers: HeaderMap,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let job = job(&state, &name)?;
    state.query()?.set_job_paused(&name, paused).await?;
    Ok(Json(job.status_json()))
}
