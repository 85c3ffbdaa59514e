//! The rates service's errors, and how they become the server's one
//! [`ApiError`]: a kind (which decides the status) and the `parameter` a
//! bad request is about.

use tally_http::{ApiError, Kind};

#[derive(Debug, thiserror::Error)]
pub enum RatesError {
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

impl From<RatesError> for ApiError {
    fn from(e: RatesError) -> Self {
        let message = e.to_string();
        match e {
            RatesError::Missing(parameter) | RatesError::BadParameter { parameter, .. } => {
                ApiError::app(Kind::BadRequest, message).with("parameter", parameter)
            }
            RatesError::Unavailable(_) => {
                ApiError::app(Kind::Unavailable, message).retry_in(tally_http::DEFAULT_RETRY_AFTER)
            }
            RatesError::Busy { retry_after, .. } => {
                ApiError::app(Kind::TooManyRequests, message).retry_in(retry_after)
            }
            RatesError::Query(_) => ApiError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    #[test]
    fn a_full_query_pool_is_429_with_retry_after_as_on_the_sql_endpoint() {
        let resp = ApiError::from(RatesError::Busy {
            message: "too many queries running".into(),
            retry_after: std::time::Duration::from_millis(1500),
        })
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let resp = ApiError::from(RatesError::Query("boom".into())).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
}
