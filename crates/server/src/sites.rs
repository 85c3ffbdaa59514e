//! Admin API of web analytics: the sites tracker events are accepted for.

use crate::auth::Scope;
use crate::error::{created_status, json_body, ApiError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tally_apps::web::{sites::normalize_domain, WebApp};

pub(crate) fn app(state: &AppState) -> Result<&Arc<WebApp>, ApiError> {
    state.engine()?;
    state.web.get().ok_or_else(|| ApiError::NotFound {
        what: "web analytics (it is turned off: [web] enabled = false)".into(),
    })
}

pub(crate) async fn list_sites(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys.authorize(&headers, Scope::Read)?;
    let app = app(&state)?;
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
pub(crate) struct NewSite {
    domain: String,
}

/// Registers a site: 201 when new, 200 when it was there.
pub(crate) async fn post_site(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.keys.authorize(&headers, Scope::Admin)?;
    let body: NewSite = json_body(&body, r#"{"domain": "..."}"#)?;
    let domain = normalize_domain(&body.domain).map_err(|message| ApiError::BadRequest {
        message: format!("domain: {message}"),
        stream: None,
    })?;
    let app = app(&state)?.clone();
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
pub(crate) async fn delete_site(
    State(state): State<Arc<AppState>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys.authorize(&headers, Scope::Admin)?;
    let domain = normalize_domain(&domain).map_err(|message| ApiError::BadRequest {
        message: format!("domain: {message}"),
        stream: None,
    })?;
    let app = app(&state)?.clone();
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
