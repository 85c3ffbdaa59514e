//! Query endpoints: `POST /v1/sql`, `GET|POST /v1/query`, and dimension
//! tables under `/v1/tables`.
//!
//! SQL answers come as JSON (`{"columns": [...], "rows": [{...}]}`), CSV or
//! an Arrow IPC stream, chosen by the `Accept` header. The work runs in the
//! query stage's own pool (see `tally_query`); these handlers only decode
//! requests and encode answers.

use crate::auth::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tally_query::timeseries::{Filter, Request};
use tally_query::{SqlAnswer, TableFormat, TableSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlRequest {
    sql: String,
}

/// Answer formats of `/v1/sql`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Output {
    Json,
    Csv,
    Arrow,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

fn output_of(headers: &HeaderMap) -> Result<Output, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    for part in accept.split(',') {
        let mime = part.split(';').next().unwrap_or("").trim();
        match mime {
            "application/json" | "*/*" | "application/*" | "" => return Ok(Output::Json),
            "text/csv" | "text/*" => return Ok(Output::Csv),
            ARROW_STREAM => return Ok(Output::Arrow),
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable {
        value: accept.to_string(),
        expected: "application/json, text/csv or application/vnd.apache.arrow.stream",
    })
}

pub(crate) async fn post_sql(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let output = output_of(&headers)?;
    let req: SqlRequest = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("body must be JSON {{\"sql\": \"...\"}}: {e}"),
        stream: None,
    })?;
    let answer = state.query()?.sql(&req.sql).await?;
    encode(&answer, output)
}

fn encode(answer: &SqlAnswer, output: Output) -> Result<Response, ApiError> {
    let internal =
        |e: arrow::error::ArrowError| ApiError::Internal(format!("encoding the answer: {e}"));
    let refs: Vec<&arrow::record_batch::RecordBatch> = answer.batches.iter().collect();
    let (content_type, body) = match output {
        Output::Json => {
            let mut rows = Vec::with_capacity(64 + answer.rows * 32);
            {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(&mut rows);
                w.write_batches(&refs).map_err(internal)?;
                w.finish().map_err(internal)?;
            }
            if rows.is_empty() {
                rows.extend_from_slice(b"[]");
            }
            let columns: Vec<Value> = answer
                .schema
                .fields()
                .iter()
                .map(|f| json!({ "name": f.name(), "type": type_name(f.data_type()) }))
                .collect();
            let mut out = Vec::with_capacity(rows.len() + 256);
            out.extend_from_slice(b"{\"columns\":");
            out.extend_from_slice(&serde_json::to_vec(&columns).unwrap_or_default());
            out.extend_from_slice(b",\"rows\":");
            out.extend_from_slice(&rows);
            out.extend_from_slice(format!(",\"row_count\":{}}}", answer.rows).as_bytes());
            ("application/json", out)
        }
        Output::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                if refs.is_empty() {
                    let empty = arrow::record_batch::RecordBatch::new_empty(answer.schema.clone());
                    w.write(&empty).map_err(internal)?;
                }
                for b in &refs {
                    w.write(b).map_err(internal)?;
                }
            }
            ("text/csv; charset=utf-8", out)
        }
        Output::Arrow => {
            let mut out = Vec::new();
            {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &answer.schema)
                    .map_err(internal)?;
                for b in &refs {
                    w.write(b).map_err(internal)?;
                }
                w.finish().map_err(internal)?;
            }
            (ARROW_STREAM, out)
        }
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// A friendly name for a column type.
fn type_name(t: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType as D;
    match t {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Float64 | D::Float32 | D::Float16 => "double".into(),
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            "integer".into()
        }
        D::Boolean => "boolean".into(),
        D::Timestamp(..) => "timestamp".into(),
        D::Date32 | D::Date64 => "date".into(),
        other => other.to_string(),
    }
}

pub(crate) async fn post_query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let req: Request = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("invalid query request: {e}"),
        stream: None,
    })?;
    let answer = state.query()?.timeseries(req).await?;
    Ok(json_text(answer.json.clone()))
}

/// `GET /v1/query?stream=..&from=..&aggregates=count,sum(v)&group_by=a,b
/// &filters=[{"field":..}]`: the same request as query parameters.
pub(crate) async fn get_query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let req = request_from_params(params)?;
    let answer = state.query()?.timeseries(req).await?;
    Ok(json_text(answer.json.clone()))
}

/// A JSON response from text that is already JSON.
fn json_text(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

fn request_from_params(mut p: HashMap<String, String>) -> Result<Request, ApiError> {
    let bad = |message: String| ApiError::BadRequest {
        message,
        stream: None,
    };
    let list = |s: Option<String>| -> Vec<String> {
        s.map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
    };
    let stream = p
        .remove("stream")
        .ok_or_else(|| bad("missing query parameter 'stream'".into()))?;
    let filters: Vec<Filter> = match p.remove("filters") {
        Some(f) => serde_json::from_str(&f).map_err(|e| {
            bad(format!(
                "query parameter 'filters' must be a JSON array of filters: {e}"
            ))
        })?,
        None => Vec::new(),
    };
    let limit = p
        .remove("limit")
        .map(|l| {
            l.parse()
                .map_err(|_| bad(format!("limit {l:?} is not a number")))
        })
        .transpose()?;
    let other = p
        .remove("other")
        .map(|o| {
            o.parse()
                .map_err(|_| bad(format!("other {o:?}: use true or false")))
        })
        .transpose()?;
    let req = Request {
        stream,
        from: p.remove("from"),
        to: p.remove("to"),
        interval: p.remove("interval"),
        timezone: p.remove("timezone"),
        aggregates: list(p.remove("aggregates")),
        filters,
        group_by: list(p.remove("group_by")),
        limit,
        order_by: p.remove("order_by"),
        other,
        fill: p.remove("fill"),
        source: p.remove("source"),
    };
    if let Some(unknown) = p.keys().next() {
        return Err(bad(format!("unknown query parameter '{unknown}'")));
    }
    Ok(req)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableParams {
    key: Option<String>,
    parent: Option<String>,
    /// Keep every CSV column as text.
    #[serde(default)]
    text: bool,
}

pub(crate) async fn put_table(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(params): Query<TableParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let query = state.query()?.clone();
    if query.engine().schema(&name).is_some() {
        return Err(ApiError::Conflict {
            message: format!("'{name}' is a stream; a table needs a name of its own"),
        });
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/csv");
    let mime = ct.split(';').next().unwrap_or("").trim();
    let format = match mime {
        "text/csv" => TableFormat::Csv,
        "text/tab-separated-values" => TableFormat::Tsv,
        "application/x-ndjson" | "application/jsonl" | "application/json" => TableFormat::Ndjson,
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                what: "content type",
                value: ct.to_string(),
                expected: "use text/csv, text/tab-separated-values or application/x-ndjson",
            })
        }
    };
    let spec = TableSpec {
        key: params.key,
        parent: params.parent,
        all_text: params.text,
    };
    let table = query.put_table(&name, body, format, spec).await?;
    Ok((StatusCode::OK, Json(table_json(&table))))
}

fn table_json(t: &tally_query::DimTable) -> Value {
    let columns: Vec<Value> = t
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": type_name(f.data_type()) }))
        .collect();
    json!({
        "name": t.name,
        "rows": t.rows,
        "version": t.version,
        "loaded_at": t.loaded_at,
        "key": t.key,
        "parent": t.parent,
        "tree": t.is_tree(),
        "columns": columns,
    })
}

pub(crate) async fn list_tables(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let tables: Vec<Value> = state
        .query()?
        .tables()
        .all()
        .iter()
        .map(|t| table_json(t))
        .collect();
    Ok(Json(json!({ "tables": tables })))
}

pub(crate) async fn get_table(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let t = state
        .query()?
        .tables()
        .get(&name)
        .ok_or(ApiError::NotFound {
            what: format!("table '{name}'"),
        })?;
    Ok(Json(table_json(&t)))
}

pub(crate) async fn delete_table(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let removed = state.query()?.delete_table(&name).await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: format!("table '{name}'"),
        })
    }
}
