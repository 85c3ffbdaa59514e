//! `POST /v1/events/{stream}` and the timestamp recorder's `POST /{stream}`.
//!
//! Order of checks, cheapest first: auth, stream name, content type, declared
//! size, then a share of the ingest memory budget (503 when the server is
//! already parsing and writing as much as it may hold), then the body is read
//! under the size limit, parsed whole, and handed to the engine. The answer
//! `{"accepted": N}` comes only once the batch is durable.

use crate::auth::Scope;
use crate::cluster::{idempotency_key, seq_header};
use crate::encoding::{content_encoding, inflate_error, Encoding};
use crate::error::ApiError;
use crate::metrics::BUDGET_IN_USE;
use crate::state::{AppState, TimeParams};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use tally_ingest::{validate_public_stream_name, Format};

/// Parsed and encoded copies of a body are held at once: budget this many
/// times the body size.
const BUDGET_FACTOR: usize = 3;

pub(crate) async fn post_events(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    Query(params): Query<TimeParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.keys().authorize(&headers, Scope::Ingest)?;
    let key = idempotency_key(&headers)?;
    validate_public_stream_name(&stream).map_err(|message| ApiError::BadRequest {
        message,
        stream: None,
    })?;
    state.check_writable(&stream)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format =
        Format::from_content_type(content_type).ok_or_else(|| ApiError::UnsupportedMediaType {
            what: "content type",
            value: content_type.unwrap_or_default().to_string(),
            expected: "send application/json, application/x-ndjson or text/csv",
        })?;
    let time = state.time_field(&stream, &params)?;
    let engine = state.engine()?.clone();
    let (bytes, permit) = read_body(&state, &headers, body, Some(&stream)).await?;

    let now_us = chrono::Utc::now().timestamp_micros();
    let hint = |field: &str| engine.column_type(&stream, field);
    // A body-less POST that declares no format records its arrival time;
    // a declared format must bring at least one event.
    let declared = content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        !mime.is_empty() && !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    let batch = if !declared && tally_ingest::is_blank(&bytes) {
        tally_ingest::timestamp_event(now_us)
    } else {
        tally_ingest::parse_with_time(&bytes, format, now_us, &hint, &time).map_err(|source| {
            ApiError::Parse {
                stream: stream.clone(),
                source,
            }
        })?
    };
    drop(bytes);
    let receipt = engine
        .ingest_all_once(vec![(stream, batch)], key.as_deref())
        .await?;
    drop(permit);
    let body = match engine.options().cluster.is_some() {
        true => json!({ "accepted": receipt.accepted, "seq": receipt.lsn }),
        false => json!({ "accepted": receipt.accepted }),
    };
    Ok((seq_header(receipt.lsn), Json(body)).into_response())
}

/// A request's share of the ingest memory budget, given back when dropped.
pub(crate) struct BudgetShare {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    state: Arc<AppState>,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        drop(self.permit.take());
        let state = &self.state;
        BUDGET_IN_USE
            .set((state.ingest_budget_bytes - state.ingest_budget.available_permits()) as i64);
    }
}

/// Reads an ingest request's body: checks what the headers say of it,
/// waits while the in-memory tail is full (503 if it stays full), reserves a share of the ingest memory budget for it (503 when the
/// server already holds as much as it may), then reads it under the size
/// limit (413) and the body read timeout, and inflates it if it is
/// compressed (gzip or zstd; the limit holds for the inflated body too). The share is held until the
/// returned [`BudgetShare`] is dropped, once the events are written.
pub(crate) async fn read_body(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    stream: Option<&str>,
) -> Result<(axum::body::Bytes, BudgetShare), ApiError> {
    let limit = state.max_body_bytes;
    let encoding = content_encoding(headers)?;
    let declared = check_body_headers(headers, limit as u64)?.map(|n| n as usize);

    // A full tail would refuse this body after it is read and parsed:
    // wait for room first (a flush under way makes it), and refuse before
    // spending anything on the body if none comes.
    if let Err(e) = state.engine()?.wait_for_room().await {
        drain(body, limit).await;
        return Err(e.into());
    }

    // Reserve memory for this request before reading its body.
    let want =
        (declared.unwrap_or(limit).max(1) * BUDGET_FACTOR).min(state.ingest_budget_bytes) as u32;
    let permit = match state.ingest_budget.clone().try_acquire_many_owned(want) {
        Ok(p) => p,
        Err(_) => {
            // Read and drop the body (one chunk at a time, so nothing is
            // held) so the client reads a clean 503 rather than a connection
            // reset while it is still sending.
            drain(body, limit).await;
            return Err(over_budget());
        }
    };
    BUDGET_IN_USE.set((state.ingest_budget_bytes - state.ingest_budget.available_permits()) as i64);
    let mut share = BudgetShare {
        permit: Some(permit),
        state: state.clone(),
    };

    // A client that trickles its body must not hold its share of the budget
    // forever.
    let after = state.body_read_timeout;
    let read = tokio::time::timeout(after, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::Timeout {
            what: "reading the request body",
            after,
        })?;
    let bytes = read.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest {
                message: format!("could not read the request body: {e}"),
                stream: stream.map(str::to_string),
            }
        }
    })?;
    if encoding == Encoding::Identity {
        return Ok((bytes, share));
    }
    // Inflating is CPU work of up to `limit` bytes: off the runtime.
    let mut permit = share.permit.take().expect("the share holds its permit");
    let st = state.clone();
    let (inflated, permit) = tokio::task::spawn_blocking(move || {
        let r = tally_ingest::compression::inflate(encoding, &bytes, limit, |len| {
            grow_share(&st, &mut permit, len)
        });
        (r, permit)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("inflating the body: {e}")))?;
    share.permit = Some(permit);
    BUDGET_IN_USE.set((state.ingest_budget_bytes - state.ingest_budget.available_permits()) as i64);
    let inflated = inflated.map_err(|e| inflate_error(e, over_budget))?;
    Ok((axum::body::Bytes::from(inflated), share))
}

/// Checks the declared length of a request's body before it is read:
/// within `limit` (413 otherwise). Returns it.
pub(crate) fn check_body_headers(headers: &HeaderMap, limit: u64) -> Result<Option<u64>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge {
            limit: limit.min(usize::MAX as u64) as usize,
        });
    }
    Ok(declared)
}

/// Takes more of the ingest budget for a body inflated to `len` bytes;
/// `false` when the budget has run out.
fn grow_share(
    state: &AppState,
    permit: &mut tokio::sync::OwnedSemaphorePermit,
    len: usize,
) -> bool {
    let need = (len * BUDGET_FACTOR).min(state.ingest_budget_bytes);
    let held = permit.num_permits();
    if need <= held {
        return true;
    }
    // Take a little ahead, so a large body asks a few times only.
    let more = (need - held)
        .max(4 << 20)
        .min(state.ingest_budget_bytes - held);
    match state
        .ingest_budget
        .clone()
        .try_acquire_many_owned(more as u32)
    {
        Ok(p) => {
            permit.merge(p);
            true
        }
        Err(_) => false,
    }
}

fn over_budget() -> ApiError {
    ApiError::Overloaded {
        reason: "too much ingest in flight; the server is at its memory budget".into(),
        retry_after: crate::DEFAULT_RETRY_AFTER,
    }
}

async fn drain(body: Body, limit: usize) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > limit {
            break;
        }
    }
}

/// Whether reading a body stopped at its size limit (axum's
/// `DefaultBodyLimit`, which wraps the body in `http_body_util::Limited`).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}
