//! Ingest: turns request bodies into columnar event batches.
//!
//! Everything that enters tally passes through here first. A request body
//! (one JSON object, a JSON array, NDJSON, CSV, or nothing at all) becomes one
//! [`Batch`]: a timestamp column plus one column per field, already laid out
//! the way the store keeps it. Parsing is all-or-nothing: the first bad line
//! fails the whole body with an [`Error`] that names the line and the field,
//! so nothing of a bad request is ever written.
//!
//! The same [`Batch`] is what the write-ahead log stores ([`codec`]), so a
//! replayed record and a live request take the same path into the store.

mod batch;
mod chunks;
pub mod codec;
pub mod compression;
mod csv;
mod error;
mod json;
mod lineproto;
mod names;
mod time;

pub use batch::{Batch, BatchBuilder, Column, ColumnData, ColumnType, NumColumn, StrColumn};
pub use chunks::{Chunk, ChunkReader, FileFormat, MAX_LINE_BYTES};
pub use error::{Error, Location, Result};
pub use lineproto::{
    parse_line_protocol, parse_line_protocol_scanner_only, Measurement, Precision, MAX_KEY_BYTES,
    MAX_POINT_BYTES,
};
pub use names::{
    is_internal_stream, measurement_of_stream, stream_for_measurement, validate_field_name,
    validate_public_stream_name, validate_stream_name, INTERNAL_STREAM_PREFIX,
    MAX_ENCODED_STREAM_NAME_LEN, MAX_FIELD_NAME_LEN, MAX_STREAM_NAME_LEN,
};
pub use time::{TimeField, TimeFormat};

/// The body formats tally accepts on its ingest endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object or a JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header row.
    Csv,
}

impl Format {
    /// The format's name, as errors say it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Ndjson => "NDJSON",
            Format::Csv => "CSV",
        }
    }

    /// Maps a `Content-Type` header to a format; `None` means unsupported (415).
    /// A missing content type is taken as JSON, which also covers NDJSON
    /// bodies sent by tools that do not set one (see [`parse`]).
    pub fn from_content_type(content_type: Option<&str>) -> Option<Format> {
        let Some(ct) = content_type else {
            return Some(Format::Json);
        };
        match mime(ct).as_str() {
            "" | "application/json" | "text/json" | "application/x-www-form-urlencoded" => {
                Some(Format::Json)
            }
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/json-lines"
            | "application/jsonlines"
            | "application/x-jsonlines" => Some(Format::Ndjson),
            "text/csv" | "application/csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The media type of a `Content-Type` header, lower case, without
/// parameters.
pub(crate) fn mime(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parses a request body into one batch.
///
/// `now_us` is the arrival time, used for events without `ts`. `hint` tells
/// CSV parsing which type a column already has in the stream, since CSV cells
/// carry no type of their own. A body with no events is refused (see
/// [`timestamp_event`] for the body-less POST of the timestamp recorder).
pub fn parse(
    body: &[u8],
    format: Format,
    now_us: i64,
    hint: &dyn Fn(&str) -> Option<ColumnType>,
) -> Result<Batch> {
    parse_with_time(body, format, now_us, hint, &TimeField::default())
}

/// [`parse`], with the event time read from `time` rather than `ts`.
pub fn parse_with_time(
    body: &[u8],
    format: Format,
    now_us: i64,
    hint: &dyn Fn(&str) -> Option<ColumnType>,
    time: &TimeField,
) -> Result<Batch> {
    if is_blank(body) {
        return Err(no_events(format));
    }
    let batch = match format {
        Format::Json => json::parse_json(body, now_us, time),
        Format::Ndjson => json::parse_ndjson(body, now_us, time),
        Format::Csv => csv::parse_csv(body, now_us, hint, time),
    }?;
    if batch.is_empty() {
        return Err(no_events(format));
    }
    Ok(batch)
}

fn no_events(format: Format) -> Error {
    Error::Syntax {
        at: Location::Line(1),
        format: format.name(),
        message: "the body holds no events (only a POST with no body and no \
                  Content-Type records an event with just its arrival time)"
            .into(),
    }
}

/// Whether a body is empty or all whitespace.
pub fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// The event a POST with no body and no declared format records: only its
/// arrival time (the timestamp recorder's `curl -X POST http://host/app`).
pub fn timestamp_event(now_us: i64) -> Batch {
    let mut b = BatchBuilder::new();
    // A batch of one row with no fields cannot fail to build.
    let _ = b.start_row(1);
    b.finish_row(now_us);
    b.finish()
}

/// Parses a timestamp given as text: RFC 3339, or epoch milliseconds.
pub fn parse_ts_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<f64>() {
        return ts_from_ms(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
        .filter(|us| (MIN_TS_US..=MAX_TS_US).contains(us))
}

/// Epoch milliseconds (possibly fractional) to microseconds, range-checked.
pub fn ts_from_ms(ms: f64) -> Option<i64> {
    if !ms.is_finite() {
        return None;
    }
    let us = (ms * 1000.0).round();
    if us < MIN_TS_US as f64 || us > MAX_TS_US as f64 {
        return None;
    }
    Some(us as i64)
}

/// Earliest accepted timestamp: 1970-01-01.
pub const MIN_TS_US: i64 = 0;
/// Latest accepted timestamp: 2200-01-01, far enough for any real clock and
/// near enough to catch seconds-or-nanoseconds mistakes in epoch values.
pub const MAX_TS_US: i64 = 7_258_118_400_000_000;
