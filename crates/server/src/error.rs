//! Every error the HTTP API can answer, mapped to its status in one place.
//! Bodies are JSON: `{"error": "...", ...context}` where the context names the
//! stream, line and field when there is one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tally_engine::SchemaConflict;
use tally_query::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        stream: Option<String>,
    },

    #[error("stream '{stream}': {source}")]
    Parse {
        stream: String,
        source: tally_ingest::Error,
    },

    #[error(transparent)]
    Schema(#[from] SchemaConflict),

    #[error("missing or invalid API key (send 'Authorization: Bearer <key>')")]
    Unauthorized,

    #[error("this API key lacks the '{scope}' scope")]
    Forbidden { scope: &'static str },

    #[error("{what} not found")]
    NotFound { what: String },

    #[error("request body larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },

    #[error("unsupported {what} {value:?}; {expected}")]
    UnsupportedMediaType {
        what: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("{reason}")]
    Overloaded {
        reason: String,
        retry_after: Duration,
    },

    #[error("timed out {what} after {} s", after.as_secs())]
    Timeout { what: &'static str, after: Duration },

    #[error("not ready: the log is being replayed")]
    NotReady,

    #[error(transparent)]
    Query(#[from] QueryError),

    #[error("{message}")]
    Conflict { message: String },

    #[error("cannot answer in {value:?}; accepted: {expected}")]
    NotAcceptable {
        value: String,
        expected: &'static str,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::Parse { .. } | ApiError::Schema(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded { .. } | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            ApiError::Query(q) => match q {
                QueryError::Syntax { .. }
                | QueryError::UnknownTable { .. }
                | QueryError::UnknownColumn { .. }
                | QueryError::Invalid { .. }
                | QueryError::NotAllowed { .. } => StatusCode::BAD_REQUEST,
                QueryError::NotFound { .. } => StatusCode::NOT_FOUND,
                QueryError::TooComplex { limit, .. } if limit.ends_with("_bytes") => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                QueryError::TooComplex { .. } => StatusCode::BAD_REQUEST,
                QueryError::Limit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                QueryError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
                QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn context(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            ApiError::BadRequest {
                stream: Some(s), ..
            } => {
                m.insert("stream".into(), json!(s));
            }
            ApiError::Parse { stream, source } => {
                m.insert("stream".into(), json!(stream));
                if let Some(at) = source.location() {
                    m.insert("line".into(), json!(at.line()));
                    if let tally_ingest::Location::Event(n) = at {
                        m.insert("event".into(), json!(n));
                    }
                }
                if let Some(f) = source.field() {
                    m.insert("field".into(), json!(f));
                }
                if let tally_ingest::Error::TypeConflict {
                    existing, found, ..
                } = source
                {
                    m.insert("expected_type".into(), json!(existing.as_str()));
                    let kind = found.split_whitespace().next().unwrap_or(found);
                    m.insert("found_type".into(), json!(kind));
                }
            }
            ApiError::Schema(SchemaConflict::Type {
                stream,
                field,
                line,
                existing,
                found,
            }) => {
                m.insert("stream".into(), json!(stream));
                m.insert("field".into(), json!(field));
                m.insert("line".into(), json!(line));
                m.insert("expected_type".into(), json!(existing.as_str()));
                m.insert("found_type".into(), json!(found.as_str()));
            }
            ApiError::Schema(SchemaConflict::TooManyColumns {
                stream,
                field,
                limit,
            }) => {
                m.insert("stream".into(), json!(stream));
                m.insert("field".into(), json!(field));
                m.insert("limit".into(), json!(limit));
            }
            ApiError::PayloadTooLarge { limit } => {
                m.insert("limit".into(), json!(limit));
            }
            ApiError::Overloaded { retry_after, .. }
            | ApiError::Query(QueryError::Busy { retry_after, .. }) => {
                m.insert("retry_after".into(), json!(retry_after.as_secs().max(1)));
            }
            ApiError::Query(QueryError::Syntax { line, column, .. }) => {
                if let Some(l) = line {
                    m.insert("line".into(), json!(l));
                }
                if let Some(c) = column {
                    m.insert("column".into(), json!(c));
                }
            }
            ApiError::Query(QueryError::UnknownTable { name }) => {
                m.insert("table".into(), json!(name));
            }
            ApiError::Query(QueryError::UnknownColumn { name }) => {
                m.insert("column".into(), json!(name));
            }
            ApiError::Query(QueryError::NotFound { what, name }) => {
                m.insert((*what).replace(' ', "_"), json!(name));
            }
            ApiError::Query(QueryError::Limit { limit, .. }) => {
                m.insert("limit".into(), json!(limit));
            }
            ApiError::Query(QueryError::TooComplex { limit, max, .. }) => {
                m.insert("limit".into(), json!(limit));
                m.insert("max".into(), json!(max));
            }
            _ => {}
        }
        m
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Overloaded { retry_after, .. }
            | ApiError::Query(QueryError::Busy { retry_after, .. }) => Some(*retry_after),
            ApiError::NotReady => Some(crate::DEFAULT_RETRY_AFTER),
            _ => None,
        }
    }
}

/// A small JSON request body of an admin endpoint; 400 naming the shape
/// expected (`{"name": "..."}`) when it does not parse.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        message: format!("expected {shape}: {e}"),
        stream: None,
    })
}

/// 201 for something made, 200 for something that was already there.
pub(crate) fn created_status(created: bool) -> axum::http::StatusCode {
    if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    }
}

impl From<tally_engine::Error> for ApiError {
    fn from(e: tally_engine::Error) -> Self {
        use tally_engine::Error as E;
        match e {
            E::Schema(c) => ApiError::Schema(c),
            E::Overloaded {
                reason,
                retry_after,
            } => ApiError::Overloaded {
                reason,
                retry_after,
            },
            E::TooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
            E::Closed => ApiError::Overloaded {
                reason: "the server is shutting down".into(),
                retry_after: crate::DEFAULT_RETRY_AFTER,
            },
            e @ E::Failed { .. } => ApiError::Overloaded {
                reason: e.to_string(),
                retry_after: Duration::from_secs(30),
            },
            E::Rollup(tally_engine::RollupError::Invalid { message }) => ApiError::BadRequest {
                message,
                stream: None,
            },
            // The object store is unreachable or failing: try again later.
            E::Archive(e @ tally_engine::ArchiveError::Store { .. }) => ApiError::Overloaded {
                reason: e.to_string(),
                retry_after: Duration::from_secs(10),
            },
            E::AlreadyImported { .. } | E::ImportInProgress { .. } => ApiError::Conflict {
                message: e.to_string(),
            },
            E::BadBatchId { .. } | E::StreamTwice { .. } => ApiError::BadRequest {
                message: e.to_string(),
                stream: None,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_with(Map::new())
    }
}

impl ApiError {
    /// The response, with `extra` fields added to its JSON body.
    pub fn into_response_with(self, extra: Map<String, Value>) -> Response {
        let status = self.status();
        if status.is_server_error()
            && !matches!(self, ApiError::Overloaded { .. } | ApiError::NotReady)
        {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = self.context();
        body.extend(extra);
        body.insert("error".into(), json!(self.to_string()));
        let mut resp = (status, axum::Json(Value::Object(body))).into_response();
        if let Some(after) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
