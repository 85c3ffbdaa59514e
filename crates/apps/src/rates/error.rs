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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
