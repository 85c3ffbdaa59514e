//! The rates service's errors, and where they become HTTP answers: a status
//! and `{"error": "...", "parameter": ...}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum RatesError {
    #[error("the server is starting; try again shortly")]
    Starting,
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("{message}")]
    BadParameter {
        parameter: &'static str,
        message: String,
    },
    /// Reference data is missing or malformed.
    #[error("{0}")]
    Unavailable(String),
    #[error("query failed: {0}")]
    Query(String),
    /// Every query slot is taken (429, as on `/v1/sql`).
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: std::time::Duration,
    },
}

impl IntoResponse for RatesError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, parameter) = match &self {
            RatesError::Starting => (StatusCode::SERVICE_UNAVAILABLE, None),
            RatesError::Missing(p) => (StatusCode::BAD_REQUEST, Some(*p)),
            RatesError::BadParameter { parameter, .. } => {
                (StatusCode::BAD_REQUEST, Some(*parameter))
            }
            RatesError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            RatesError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
            RatesError::Query(_) => {
                tracing::error!(error = %message, "rates query failed");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        let mut body = json!({ "error": message });
        if let Some(p) = parameter {
            body["parameter"] = json!(p);
        }
        let mut resp = (status, Json(body)).into_response();
        let retry_after = match &self {
            RatesError::Busy { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
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
    fn a_full_query_pool_is_429_with_retry_after_as_on_the_sql_endpoint() {
        let resp = RatesError::Busy {
            message: "too many queries running".into(),
            retry_after: std::time::Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let resp = RatesError::Query("boom".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
}
