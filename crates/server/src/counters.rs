//! Admin API of the counter app: list counters, make one.

use crate::auth::Scope;
use crate::error::{created_status, json_body, ApiError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tally_apps::counter::{CounterApp, CounterError};

fn app(state: &AppState) -> Result<&Arc<CounterApp>, ApiError> {
    state.engine()?;
    state.counter.get().ok_or_else(|| ApiError::NotFound {
        what: "the counter app (it is turned off: [counter] enabled = false)".into(),
    })
}

fn api_error(e: CounterError) -> ApiError {
    match e {
        CounterError::BadRequest { message, .. } => ApiError::BadRequest {
            message,
            stream: None,
        },
        CounterError::Engine(e) => e.into(),
        other => ApiError::Internal(other.to_string()),
    }
}

pub(crate) async fn list_counters(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys.authorize(&headers, Scope::Read)?;
    let app = app(&state)?;
    Ok(Json(json!({
        "default": app.default_counter(),
        "window_secs": app.config().window.as_secs_f64(),
        "counters": app.values(),
    })))
}

#[derive(Deserialize)]
pub(crate) struct NewCounter {
    name: String,
}

/// Makes a counter: 201 when new, 200 when it existed.
pub(crate) async fn post_counter(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.keys.authorize(&headers, Scope::Admin)?;
    let body: NewCounter = json_body(&body, r#"{"name": "..."}"#)?;
    let app = app(&state)?;
    // On its own task: a client hanging up must not cut it short.
    let (app2, name) = (app.clone(), body.name.clone());
    let created = tokio::spawn(async move { app2.create(&name).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(api_error)?;
    let value = app.value(&body.name).map_err(api_error)?;
    Ok((
        created_status(created),
        Json(json!({ "created": created, "counter": value })),
    ))
}
