//! The counter's errors, and how they become the server's one
//! [`ApiError`]: a kind (which decides the status) and the fields that say
//! what each is about.

use super::accounts::HashError;
use std::time::Duration;
use tally_http::{retry_secs, ApiError, Kind};

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
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

impl From<CounterError> for ApiError {
    fn from(e: CounterError) -> Self {
        let message = e.to_string();
        match e {
            CounterError::UnknownCounter(name) => {
                ApiError::app(Kind::NotFound, message).with("counter", name)
            }
            CounterError::BadRequest { field, .. } => {
                ApiError::app(Kind::BadRequest, message).with("field", field)
            }
            CounterError::NotLoggedIn | CounterError::WrongCredentials => {
                ApiError::app(Kind::LoginRequired, message)
            }
            CounterError::Forbidden(_) => ApiError::app(Kind::Forbidden, message),
            CounterError::NameTaken => ApiError::app(Kind::Conflict, message),
            CounterError::TooSoon {
                counter,
                retry_after,
                next,
            } => ApiError::app(Kind::TooManyRequests, message)
                .with("counter", counter)
                .with("next_allowed_at", next)
                .retry_in(retry_after),
            CounterError::Limited { retry_after, .. } => {
                ApiError::app(Kind::TooManyRequests, message).retry_in(retry_after)
            }
            CounterError::Unavailable(_) => {
                ApiError::app(Kind::Unavailable, message).retry_in(tally_http::DEFAULT_RETRY_AFTER)
            }
            CounterError::Engine(e) => e.into(),
            CounterError::Internal(m) => ApiError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    #[test]
    fn an_engine_refusing_a_record_as_too_large_is_413_as_on_the_ingest_endpoints() {
        let e = CounterError::Engine(tally_engine::Error::TooLarge { size: 10, limit: 5 });
        assert_eq!(ApiError::from(e).status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn too_soon_names_the_counter_and_when_the_next_is_allowed() {
        let resp = ApiError::from(CounterError::TooSoon {
            counter: "hits".into(),
            retry_after: Duration::from_millis(2_001),
            next: "2026-12-06T00:00:00Z".into(),
        })
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
    }
}
