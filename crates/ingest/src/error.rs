//! Parse errors. Each carries where in the body it happened and which field,
//! because a client with a ten-thousand-line batch needs to know which line
//! to fix.

use crate::ColumnType;
use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a body an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line of an NDJSON or CSV body, or of a JSON document.
    Line(usize),
    /// The 1-based position of an event in a JSON array (the line that
    /// element starts on is not tracked once the array is parsed).
    Event(usize),
}

impl Location {
    pub fn line(&self) -> usize {
        match self {
            Location::Line(n) | Location::Event(n) => *n,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Event(n) => write!(f, "event {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("{at}: invalid {format}: {message}")]
    Syntax {
        at: Location,
        format: &'static str,
        message: String,
    },

    #[error("{at}: expected a JSON object, found {found}")]
    NotAnObject { at: Location, found: &'static str },

    #[error("{at}, field '{field}': {message}")]
    BadField {
        at: Location,
        field: String,
        message: String,
    },

    #[error("{at}, field '{field}': type conflict: {existing} before, {found} here")]
    TypeConflict {
        at: Location,
        field: String,
        existing: ColumnType,
        found: String,
    },

    #[error("{at}, field '{field}': invalid timestamp {value:?} (expected {expected})")]
    BadTimestamp {
        at: Location,
        field: String,
        value: String,
        expected: &'static str,
    },

    #[error("{at}: too many fields in one event (more than {limit})")]
    TooManyFields { at: Location, limit: usize },

    #[error("invalid record in log: {0}")]
    Codec(String),
}

impl Error {
    /// The location the error names, if any.
    pub fn location(&self) -> Option<Location> {
        match self {
            Error::Syntax { at, .. }
            | Error::NotAnObject { at, .. }
            | Error::BadField { at, .. }
            | Error::TypeConflict { at, .. }
            | Error::BadTimestamp { at, .. }
            | Error::TooManyFields { at, .. } => Some(*at),
            Error::Codec(_) => None,
        }
    }

    /// The field the error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::BadField { field, .. } | Error::TypeConflict { field, .. } => Some(field),
            Error::BadTimestamp { field, .. } => Some(field),
            _ => None,
        }
    }
}
