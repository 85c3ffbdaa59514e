//! Every error the HTTP API can answer, the server's and the apps' alike,
//! mapped to its status in one place: each error has a [`Kind`], and the
//! kind decides the status (the table in `docs/api.md`, checked by a test).
//! Bodies are JSON: `{"error": "...", ...context}` where the context names
//! the stream, line and field when there is one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tally_engine::SchemaConflict;
use tally_query::QueryError;

/// How long a client is told to wait before retrying, when nothing better
/// is known.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What kind of failure an error is; the kind alone decides the status.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr, strum::EnumMessage,
)]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    /// The request is malformed: a body that does not parse, a type
    /// conflict, a bad parameter, field, name or query, a limit passed.
    BadRequest,
    /// No API key, or one the server does not know (header
    /// `WWW-Authenticate: Bearer`).
    Unauthorized,
    /// An app's page needs a logged-in user, or the login was wrong.
    LoginRequired,
    /// The key lacks the scope, or the user may not do this.
    Forbidden,
    /// No such stream, table, rollup, job, counter or app.
    NotFound,
    /// The answer cannot be given in the format asked for.
    NotAcceptable,
    /// The body took longer than its deadline to arrive.
    Timeout,
    /// It exists already, or is in progress (an import batch, a username).
    Conflict,
    /// The body, or the query text, is larger than its limit (`limit`).
    PayloadTooLarge,
    /// An unsupported `Content-Type` or `Content-Encoding`.
    UnsupportedMediaType,
    /// The query would read or return more than its limit allows.
    QueryLimit,
    /// Too many requests of this kind, or too soon: retry after
    /// `retry_after` seconds (header `Retry-After`).
    TooManyRequests,
    /// A fault of the server (logged).
    Internal,
    /// The server cannot do this in the mode it runs in (a batch import
    /// in cluster mode); the message says what to do instead.
    NotImplemented,
    /// Overloaded, starting, shutting down, or a store it needs is
    /// unreachable: retry after `retry_after` seconds (header
    /// `Retry-After`).
    Unavailable,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized | Kind::LoginRequired => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::QueryLimit => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn name(self) -> &'static str {
        self.into()
    }
}

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

    /// An app's error, already classified by its app: its kind, message,
    /// the JSON fields that say what it is about, and when to retry.
    #[error("{message}")]
    App {
        kind: Kind,
        message: String,
        context: Map<String, Value>,
        retry_after: Option<Duration>,
    },
}

impl ApiError {
    /// An app's error of `kind` with `message`; add what it is about with
    /// [`ApiError::with`] and when to retry with [`ApiError::retry_in`].
    pub fn app(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError::App {
            kind,
            message: message.into(),
            context: Map::new(),
            retry_after: None,
        }
    }

    /// The error with `key: value` in its JSON body (an app's errors only).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        if let ApiError::App { context, .. } = &mut self {
            context.insert(key.into(), value.into());
        }
        self
    }

    /// The error with a time to retry after (an app's errors only).
    pub fn retry_in(mut self, after: Duration) -> ApiError {
        if let ApiError::App { retry_after, .. } = &mut self {
            *retry_after = Some(after);
        }
        self
    }

    pub fn kind(&self) -> Kind {
        match self {
            ApiError::BadRequest { .. } | ApiError::Parse { .. } | ApiError::Schema(_) => {
                Kind::BadRequest
            }
            ApiError::Unauthorized => Kind::Unauthorized,
            ApiError::Forbidden { .. } => Kind::Forbidden,
            ApiError::NotFound { .. } => Kind::NotFound,
            ApiError::PayloadTooLarge { .. } => Kind::PayloadTooLarge,
            ApiError::UnsupportedMediaType { .. } => Kind::UnsupportedMediaType,
            ApiError::Overloaded { .. } | ApiError::NotReady => Kind::Unavailable,
            ApiError::Timeout { .. } => Kind::Timeout,
            ApiError::Internal(_) => Kind::Internal,
            ApiError::Conflict { .. } => Kind::Conflict,
            ApiError::NotAcceptable { .. } => Kind::NotAcceptable,
            ApiError::App { kind, .. } => *kind,
            ApiError::Query(q) => match q {
                QueryError::Syntax { .. }
                | QueryError::UnknownTable { .. }
                | QueryError::UnknownColumn { .. }
                | QueryError::Invalid { .. }
                | QueryError::NotAllowed { .. } => Kind::BadRequest,
                QueryError::NotFound { .. } => Kind::NotFound,
                QueryError::TooComplex { limit, .. } if limit.ends_with("_bytes") => {
                    Kind::PayloadTooLarge
                }
                QueryError::TooComplex { .. } => Kind::BadRequest,
                QueryError::Limit { .. } => Kind::QueryLimit,
                QueryError::Busy { .. } => Kind::TooManyRequests,
                QueryError::Unavailable { .. } => Kind::Unavailable,
                QueryError::Internal(_) => Kind::Internal,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status()
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
            | ApiError::Query(QueryError::Busy { retry_after, .. })
            | ApiError::Query(QueryError::Unavailable { retry_after, .. })
            | ApiError::App {
                retry_after: Some(retry_after),
                ..
            } => {
                m.insert("retry_after".into(), json!(retry_secs(*retry_after)));
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
        if let ApiError::App { context, .. } = self {
            m.extend(context.clone());
        }
        m
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Overloaded { retry_after, .. }
            | ApiError::Query(QueryError::Busy { retry_after, .. })
            | ApiError::Query(QueryError::Unavailable { retry_after, .. }) => Some(*retry_after),
            ApiError::App { retry_after, .. } => *retry_after,
            ApiError::NotReady => Some(DEFAULT_RETRY_AFTER),
            _ => None,
        }
    }
}

/// A small JSON request body of an admin endpoint; 400 naming the shape
/// expected (`{"name": "..."}`) when it does not parse.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        message: format!("expected {shape}: {e}"),
        stream: None,
    })
}

/// 201 for something made, 200 for something that was already there.
pub fn created_status(created: bool) -> axum::http::StatusCode {
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
            e @ E::Unavailable { .. } => {
                let retry_after = match &e {
                    E::Unavailable { retry_after, .. } => *retry_after,
                    _ => DEFAULT_RETRY_AFTER,
                };
                ApiError::Overloaded {
                    reason: e.to_string(),
                    retry_after,
                }
            }
            E::TooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
            E::Closed => ApiError::Overloaded {
                reason: "the server is shutting down".into(),
                retry_after: DEFAULT_RETRY_AFTER,
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
            e @ E::NotInCluster { .. } => ApiError::app(Kind::NotImplemented, e.to_string()),
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
        if self.kind() == Kind::Internal {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = self.context();
        body.extend(extra);
        body.insert("error".into(), json!(self.to_string()));
        let mut resp = (status, axum::Json(Value::Object(body))).into_response();
        if let Some(after) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
        }
        if self.kind() == Kind::Unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Whole seconds to wait, rounded up, at least one.
pub fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

/// The errors table of `docs/api.md`, made from [`Kind`]: each kind, its
/// status and when it is answered.
pub fn kinds_table() -> String {
    use strum::{EnumMessage, IntoEnumIterator};
    let mut t = String::from("| kind | status | when |\n|---|---|---|\n");
    for k in Kind::iter() {
        let when = k
            .get_documentation()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        t.push_str(&format!(
            "| `{}` | {} | {when} |\n",
            k.name(),
            k.status().as_u16()
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_table_in_the_api_docs_is_made_from_the_code() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
                .expect("docs/api.md");
        let section = doc
            .split("\n## Errors\n")
            .nth(1)
            .expect("docs/api.md has an '## Errors' section");
        let table: String = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            table,
            kinds_table(),
            "docs/api.md's errors table differs from the code; it should read:\n{}",
            kinds_table()
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_secs(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn an_apps_error_answers_with_its_kinds_status_context_and_retry() {
        let resp = ApiError::app(Kind::TooManyRequests, "too soon")
            .with("counter", "hits")
            .retry_in(Duration::from_millis(1500))
            .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
        let resp = ApiError::app(Kind::LoginRequired, "log in").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(
            ApiError::Unauthorized.into_response().headers()[header::WWW_AUTHENTICATE],
            "Bearer"
        );
    }

    #[test]
    fn engine_errors_have_one_status_wherever_they_surface() {
        let too_large = ApiError::from(tally_engine::Error::TooLarge { size: 10, limit: 5 });
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let busy = ApiError::from(QueryError::Busy {
            limit: 4,
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
