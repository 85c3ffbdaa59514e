//! Query errors, each carrying what the user needs to fix the query.
//!
//! DataFusion's errors are sorted here into the user's mistakes (syntax,
//! unknown names, invalid operations: 4xx) and the server's (I/O: 5xx), so
//! no query text can produce a 500.

use datafusion::error::DataFusionError;
use std::time::Duration;

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("SQL syntax error: {message}")]
    Syntax {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },

    #[error("table '{name}' not found")]
    UnknownTable { name: String },

    #[error("column '{name}' not found")]
    UnknownColumn { name: String },

    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },

    #[error("{message}")]
    Invalid { message: String },

    #[error("{message}")]
    Limit {
        /// Which limit: `timeout`, `memory`, `rows`.
        limit: &'static str,
        message: String,
    },

    /// The request is past a limit on its size or shape, checked before
    /// any work: `sql_bytes`, `sql_depth`, `sql_nodes`, `sql_in_list`,
    /// `filters`, `group_by`, ...
    #[error("{message}")]
    TooComplex {
        limit: &'static str,
        max: usize,
        message: String,
    },

    #[error("too many queries running (limit {limit}); retry shortly")]
    Busy { limit: usize, retry_after: Duration },

    #[error("statement not allowed: {message}")]
    NotAllowed { message: String },

    /// The cluster log could not take a change (a table loaded through
    /// the log): retry after `retry_after`.
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        classify(e)
    }
}

fn classify(e: DataFusionError) -> QueryError {
    match e {
        DataFusionError::SQL(err, _) => {
            let message = err.to_string();
            let (line, column) = position(&message);
            QueryError::Syntax {
                message: message.trim_start_matches("sql parser error: ").to_string(),
                line,
                column,
            }
        }
        DataFusionError::Plan(msg) => plan_error(msg),
        DataFusionError::SchemaError(err, _) => match *err {
            datafusion::common::SchemaError::FieldNotFound { field, .. } => {
                QueryError::UnknownColumn { name: field.name }
            }
            other => QueryError::Invalid {
                message: other.to_string(),
            },
        },
        DataFusionError::ResourcesExhausted(msg) => QueryError::Limit {
            limit: "memory",
            message: format!("query exceeded its memory limit: {msg}"),
        },
        DataFusionError::NotImplemented(msg) => QueryError::Invalid {
            message: format!("not supported: {msg}"),
        },
        DataFusionError::Execution(msg) => QueryError::Invalid { message: msg },
        DataFusionError::ArrowError(err, _) => match *err {
            arrow::error::ArrowError::IoError(..) => QueryError::Internal(err.to_string()),
            other => QueryError::Invalid {
                message: other.to_string(),
            },
        },
        DataFusionError::Context(_, inner) => classify(*inner),
        DataFusionError::Diagnostic(_, inner) => classify(*inner),
        DataFusionError::Shared(inner) => classify(clone_shallow(&inner)),
        DataFusionError::External(err) => match err.downcast::<DataFusionError>() {
            Ok(inner) => classify(*inner),
            Err(err) => QueryError::Internal(err.to_string()),
        },
        DataFusionError::Collection(errs) => match errs.into_iter().next() {
            Some(first) => classify(first),
            None => QueryError::Internal("empty error collection".into()),
        },
        other => QueryError::Internal(other.to_string()),
    }
}

/// A copy of a shared error good enough to classify it.
fn clone_shallow(e: &DataFusionError) -> DataFusionError {
    match e {
        DataFusionError::Plan(m) => DataFusionError::Plan(m.clone()),
        DataFusionError::Execution(m) => DataFusionError::Execution(m.clone()),
        DataFusionError::ResourcesExhausted(m) => DataFusionError::ResourcesExhausted(m.clone()),
        DataFusionError::NotImplemented(m) => DataFusionError::NotImplemented(m.clone()),
        DataFusionError::Shared(inner) => clone_shallow(inner),
        other => DataFusionError::Internal(other.to_string()),
    }
}

fn plan_error(msg: String) -> QueryError {
    // "table 'datafusion.public.x' not found"
    if let Some(rest) = msg.strip_prefix("table '") {
        if let Some(name) = rest.strip_suffix("' not found") {
            let short = name.rsplit('.').next().unwrap_or(name);
            return QueryError::UnknownTable {
                name: short.to_string(),
            };
        }
    }
    QueryError::Invalid { message: msg }
}

/// "... at Line: 1, Column: 8" -> (1, 8).
fn position(msg: &str) -> (Option<u64>, Option<u64>) {
    let num_after = |key: &str| {
        let i = msg.rfind(key)? + key.len();
        let digits: String = msg[i..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    (num_after("Line:"), num_after("Column:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_the_parser_message() {
        assert_eq!(
            position("Expected: an expression, found: FROM at Line: 2, Column: 15"),
            (Some(2), Some(15))
        );
        assert_eq!(position("no position"), (None, None));
    }

    #[test]
    fn unknown_tables_are_named_without_the_catalog_prefix() {
        match plan_error("table 'datafusion.public.nope' not found".into()) {
            QueryError::UnknownTable { name } => assert_eq!(name, "nope"),
            other => panic!("{other:?}"),
        }
    }
}
