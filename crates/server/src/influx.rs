//! InfluxDB line protocol writes, answered as InfluxDB answers them so
//! that Telegraf and the InfluxDB clients work unchanged:
//!
//! - `POST /write?db=...&precision=n|u|ms|s|m|h` (1.x; `rp` and
//!   `consistency` are accepted and ignored);
//! - `POST /api/v2/write?bucket=...&org=...&precision=ns|us|ms|s` (2.x);
//! - `GET /ping` (and `HEAD`: 204), which clients use to check the server is up.
//!
//! Each measurement is a stream (see [`tally_ingest::parse_line_protocol`]
//! for how points become events). `db` and `bucket` are required, as
//! InfluxDB requires them, but tally has one namespace of streams: they
//! name no separate database.
//!
//! Success is 204 with no body. Errors carry InfluxDB's bodies
//! (`{"error": ...}` for 1.x, `{"code": ..., "message": ...}` for 2.x) with
//! tally's own fields beside them (the line, field and stream at fault).
//! A body is parsed and checked against every stream's schema before any
//! of it is written: a bad point writes nothing.
//!
//! The API key is taken from `Authorization: Token <key>` (what the 2.x
//! clients and Telegraf send), `Authorization: Bearer <key>`, a Basic
//! password (the 1.x clients' `username`/`password`), or the `p` query
//! parameter (1.x); it needs the `ingest` scope.

use crate::auth::Scope;
use crate::cluster::{idempotency_key, seq_header};
use crate::error::ApiError;
use crate::ingest::read_body;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map};
use std::collections::HashMap;
use std::sync::Arc;
use tally_engine::SchemaConflict;
use tally_ingest::Precision;

/// The InfluxDB version `/ping` reports: the 1.x API the write endpoints
/// speak (clients read it to pick their protocol).
const INFLUX_VERSION: &str = "1.8.10";

#[derive(Clone, Copy, PartialEq)]
enum Api {
    V1,
    V2,
}

pub(crate) async fn ping() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        "x-influxdb-version",
        HeaderValue::from_static(INFLUX_VERSION),
    );
    resp.headers_mut()
        .insert("x-influxdb-build", HeaderValue::from_static("OSS"));
    resp
}

pub(crate) async fn write_v1(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        write(&state, Api::V1, &params, &headers, body).await,
        Api::V1,
    )
}

pub(crate) async fn write_v2(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        write(&state, Api::V2, &params, &headers, body).await,
        Api::V2,
    )
}

fn answer(result: Result<u64, ApiError>, api: Api) -> Response {
    let e = match result {
        Ok(seq) => return (StatusCode::NO_CONTENT, seq_header(seq)).into_response(),
        Err(e) => e,
    };
    let mut extra = Map::new();
    if api == Api::V2 {
        let code = match e.status().as_u16() {
            400 => "invalid",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not found",
            413 => "request too large",
            415 => "unsupported media type",
            429 => "too many requests",
            503 => "unavailable",
            _ => "internal error",
        };
        extra.insert("code".into(), json!(code));
        extra.insert("message".into(), json!(e.to_string()));
    }
    let mut resp = e.into_response_with(extra);
    resp.headers_mut().insert(
        "x-influxdb-version",
        HeaderValue::from_static(INFLUX_VERSION),
    );
    resp
}

/// The API key of a write, wherever the client put it.
fn token(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        return match scheme.to_ascii_lowercase().as_str() {
            "token" | "bearer" => Some(rest.to_string()),
            "basic" => {
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                let pair = String::from_utf8(raw).ok()?;
                pair.split_once(':')
                    .map(|(_, password)| password.to_string())
            }
            _ => None,
        };
    }
    params.get("p").cloned()
}

async fn write(
    state: &Arc<AppState>,
    api: Api,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64, ApiError> {
    state
        .keys()
        .authorize_token(token(headers, params).as_deref(), Scope::Ingest)?;
    let key = idempotency_key(headers)?;
    let bad = |message: String| ApiError::BadRequest {
        message,
        stream: None,
    };
    let (target, names) = match api {
        Api::V1 => ("db", "n, u, ms, s, m or h"),
        Api::V2 => ("bucket", "ns, us, ms or s"),
    };
    if params.get(target).is_none_or(|v| v.is_empty()) {
        return Err(bad(match api {
            Api::V1 => "database is required (the `db` parameter)".into(),
            Api::V2 => "bucket is required (the `bucket` parameter)".into(),
        }));
    }
    let precision = match params.get("precision").map(String::as_str) {
        None | Some("") => Precision::Nanoseconds,
        Some(p) => Precision::parse(p)
            .filter(|_| api == Api::V1 || matches!(p, "ns" | "us" | "ms" | "s"))
            .ok_or_else(|| bad(format!("invalid precision {p:?}: use {names}")))?,
    };
    let engine = state.engine()?.clone();
    let (bytes, _share) = read_body(state, headers, body, None).await?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let measurements =
        tally_ingest::parse_line_protocol(&bytes, precision, now_us).map_err(|source| {
            ApiError::Parse {
                stream: stream_at(&bytes, source.location().map(|l| l.line())),
                source,
            }
        })?;
    drop(bytes);
    for m in &measurements {
        state.check_writable(&m.stream)?;
    }
    // Rows of a measurement's batch are numbered within it: a schema
    // error names the body line instead.
    let lines: HashMap<String, Vec<usize>> = measurements
        .iter()
        .map(|m| (m.stream.clone(), m.lines.clone()))
        .collect();
    let batches = measurements
        .into_iter()
        .map(|m| (m.stream, m.batch))
        .collect();
    match engine.ingest_all_once(batches, key.as_deref()).await {
        Ok(receipt) => Ok(receipt.lsn),
        Err(tally_engine::Error::Schema(SchemaConflict::Type {
            stream,
            field,
            line,
            existing,
            found,
        })) => {
            let line = lines
                .get(&stream)
                .and_then(|l| l.get(line.saturating_sub(1)))
                .copied()
                .unwrap_or(line);
            Err(ApiError::Schema(SchemaConflict::Type {
                stream,
                field,
                line,
                existing,
                found,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// The measurement named at the start of `line` of `body`, for naming the
/// stream of a parse error (empty when there is none).
fn stream_at(body: &[u8], line: Option<usize>) -> String {
    let Some(n) = line else {
        return String::new();
    };
    let text = body.split(|&c| c == b'\n').nth(n - 1).unwrap_or_default();
    let text = String::from_utf8_lossy(text);
    let mut name = String::new();
    let mut chars = text.trim_start().chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.extend(chars.next()),
            ',' | ' ' => break,
            c => name.push(c),
        }
    }
    name
}
