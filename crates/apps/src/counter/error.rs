//! The counter's errors, and the one place they become HTTP answers: a
//! status and a JSON body `{"error": "...", ...context}`.

use super::accounts::HashError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("the server is starting; try again shortly")]
    Starting,
    #[error("no counter named {0:?}")]
    UnknownCounter(String),
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<&'static str>,
    },
    #[error("log in to do this")]
    NotLoggedIn,
    #[error("wrong username or password")]
    WrongCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("that username is taken")]
    NameTaken,
    #[error("this user already added one to {counter:?}; the next is allowed at {next}")]
    TooSoon {
        counter: String,
        retry_after: Duration,
        next: String,
    },
    #[error("{what}; try again in {} s", retry_secs(*retry_after))]
    Limited { what: String, retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Engine(#[from] tally_engine::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<HashError> for CounterError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => CounterError::Limited {
                what: "too many logins and registrations in progress".into(),
                retry_after: Duration::from_secs(1),
            },
            HashError::Failed(m) => CounterError::Internal(m),
        }
    }
}

/// Whole seconds to wait, at least one.
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

impl IntoResponse for CounterError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body, retry_after) = match &self {
            CounterError::Starting => (StatusCode::SERVICE_UNAVAILABLE, json!({}), Some(1)),
            CounterError::UnknownCounter(name) => {
                (StatusCode::NOT_FOUND, json!({ "counter": name }), None)
            }
            CounterError::BadRequest { field, .. } => {
                (StatusCode::BAD_REQUEST, json!({ "field": field }), None)
            }
            CounterError::NotLoggedIn | CounterError::WrongCredentials => {
                (StatusCode::UNAUTHORIZED, json!({}), None)
            }
            CounterError::Forbidden(_) => (StatusCode::FORBIDDEN, json!({}), None),
            CounterError::NameTaken => (StatusCode::CONFLICT, json!({}), None),
            CounterError::TooSoon {
                counter,
                retry_after,
                next,
            } => {
                let secs = retry_secs(*retry_after);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "counter": counter, "retry_after": secs, "next_allowed_at": next }),
                    Some(secs),
                )
            }
            CounterError::Limited { retry_after, .. } => {
                let secs = retry_secs(*retry_after);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "retry_after": secs }),
                    Some(secs),
                )
            }
            CounterError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, json!({}), Some(1)),
            CounterError::Engine(tally_engine::Error::Overloaded { retry_after, .. }) => {
                let secs = retry_secs(*retry_after);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "retry_after": secs }),
                    Some(secs),
                )
            }
            CounterError::Engine(tally_engine::Error::TooLarge { limit, .. }) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "limit": limit }),
                None,
            ),
            CounterError::Engine(tally_engine::Error::Closed) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({}), Some(1))
            }
            CounterError::Engine(_) | CounterError::Internal(_) => {
                tracing::error!(error = %message, "counter request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, json!({}), None)
            }
        };
        let mut body = body;
        body["error"] = json!(message);
        let mut resp = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_secs(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn an_engine_refusing_a_record_as_too_large_is_413_as_on_the_ingest_endpoints() {
        let e = CounterError::Engine(tally_engine::Error::TooLarge { size: 10, limit: 5 });
        assert_eq!(e.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
