//! Admin API of the counter app: list counters (scope `read`), make one
//! (scope `admin`).

use super::{CounterApp, Slot};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tally_http::{created_status, json_body, ApiError, Ready, Scope};

type Admin = tally_http::Admin<CounterApp>;

/// The admin routes, for any router state.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(slot: Slot, ready: Ready) -> Router<S> {
    Router::new()
        .route("/v1/counters", get(list_counters).post(post_counter))
        .with_state(Admin { slot, ready })
}

async fn list_counters(
    State(s): State<Admin>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.ready.keys.authorize(&headers, Scope::Read)?;
    let app = s.app()?;
    Ok(Json(json!({
        "default": app.default_counter(),
        "window_secs": app.config().window.as_secs_f64(),
        "counters": app.values(),
    })))
}

#[derive(Deserialize)]
struct NewCounter {
    name: String,
}

/// Makes a counter: 201 when new, 200 when it existed.
async fn post_counter(
    State(s): State<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    s.ready.keys.authorize(&headers, Scope::Admin)?;
    let body: NewCounter = json_body(&body, r#"{"name": "..."}"#)?;
    let app = s.app()?;
    // On its own task: a client hanging up must not cut it short.
    let (app2, name) = (app.clone(), body.name.clone());
    let created = tokio::spawn(async move { app2.create(&name).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let value = app.value(&body.name)?;
    Ok((
        created_status(created),
        Json(json!({ "created": created, "counter": value })),
    ))
}
