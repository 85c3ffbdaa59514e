//! Compressed request bodies on every ingest endpoint:
//! `Content-Encoding: gzip` (or `x-gzip`) and `zstd`, as Fluent Bit,
//! Vector, Fluentd and Telegraf send them. What a body inflates to is held
//! to the same limit as an uncompressed body: a body that would inflate
//! past it (a decompression bomb) is a 413 as soon as the limit is passed
//! ([`tally_ingest::compression`]).

use crate::error::ApiError;
use axum::http::{header, HeaderMap};
pub use tally_ingest::compression::Encoding;
use tally_ingest::compression::InflateError;

/// The body's encoding from `Content-Encoding`; 415 for one tally does not
/// read.
pub fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let value = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    Encoding::from_header(value).map_err(|value| ApiError::UnsupportedMediaType {
        what: "content encoding",
        value,
        expected: "send the body as it is, or with Content-Encoding gzip or zstd",
    })
}

/// The answer to a body that could not be inflated: 413 past the limit,
/// 400 when it is not what its encoding says, `refused` when the caller
/// stopped it.
pub fn inflate_error(e: InflateError, refused: impl FnOnce() -> ApiError) -> ApiError {
    match e {
        InflateError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
        InflateError::Refused => refused(),
        e @ InflateError::Corrupt { .. } => ApiError::BadRequest {
            message: e.to_string(),
            stream: None,
        },
    }
}

/// A whole body, inflated if it is compressed, to at most `limit` bytes.
pub fn inflated(
    headers: &HeaderMap,
    body: axum::body::Bytes,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    match content_encoding(headers)? {
        Encoding::Identity => Ok(body),
        encoding => tally_ingest::compression::inflate(encoding, &body, limit, |_| true)
            .map(Into::into)
            .map_err(|e| inflate_error(e, || ApiError::Internal("inflating stopped".into()))),
    }
}
