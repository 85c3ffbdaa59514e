//! Dimension tables in cluster mode: a table loaded or dropped through any
//! node is one event of the internal stream [`STREAM`] (the body as sent,
//! with its format and tree columns), and every node, the one that took
//! the request too, loads or drops the table when it applies the event.
//! So every node holds the same tables, a function of the log. At start a
//! node loads each table's newest event again (its files may predate
//! them).

use crate::error::{QueryError, Result};
use crate::tables::{DimTable, DimTables, TableFormat, TableSpec};
use crate::QueryEngine;

/// A failed append, as the client should see it: a cluster log that may
/// come back is 503, the rest is the engine's error as text.
fn appending(e: tally_engine::Error) -> QueryError {
    match e {
        tally_engine::Error::Unavailable {
            reason,
            retry_after,
        }
        | tally_engine::Error::Overloaded {
            reason,
            retry_after,
        } => QueryError::Unavailable {
            reason: format!("the table change could not be logged: {reason}"),
            retry_after,
        },
        e => QueryError::Internal(format!("logging the table change: {e}")),
    }
}
use std::collections::BTreeMap;
use std::sync::Arc;
use tally_engine::{Engine, Follower, Lsn};
use tally_ingest::{Batch, BatchBuilder, ColumnData};

/// The internal stream of table loads and drops.
pub const STREAM: &str = "_tally_tables";

#[derive(Debug, Clone, PartialEq)]
enum Change {
    Put {
        name: String,
        format: TableFormat,
        spec: TableSpec,
        body: String,
    },
    Drop {
        name: String,
    },
}

fn format_name(f: TableFormat) -> &'static str {
    match f {
        TableFormat::Csv => "csv",
        TableFormat::Tsv => "tsv",
        TableFormat::Ndjson => "ndjson",
    }
}

impl Change {
    fn name(&self) -> &str {
        match self {
            Change::Put { name, .. } | Change::Drop { name } => name,
        }
    }

    fn to_batch(&self) -> Batch {
        let mut b = BatchBuilder::new();
        let _ = b.start_row(1);
        // Field names are constants and values text: cannot fail.
        match self {
            Change::Put {
                name,
                format,
                spec,
                body,
            } => {
                let _ = b.push_str("kind", "put");
                let _ = b.push_str("name", name);
                let _ = b.push_str("format", format_name(*format));
                if let Some(k) = &spec.key {
                    let _ = b.push_str("key", k);
                }
                if let Some(p) = &spec.parent {
                    let _ = b.push_str("parent", p);
                }
                let _ = b.push_str("all_text", if spec.all_text { "true" } else { "false" });
                let _ = b.push_str("body", body);
            }
            Change::Drop { name } => {
                let _ = b.push_str("kind", "drop");
                let _ = b.push_str("name", name);
            }
        }
        b.finish_row(chrono::Utc::now().timestamp_micros());
        b.finish()
    }

    fn from_batch(b: &Batch) -> Vec<std::result::Result<Change, String>> {
        let text = |name: &str, row: usize| -> Option<String> {
            match &b.column(name)?.data {
                ColumnData::Dim(c) => c.get(row).map(str::to_string),
                ColumnData::Value(_) => None,
            }
        };
        (0..b.len())
            .map(|row| {
                let name = text("name", row).ok_or("a table event without a name")?;
                match text("kind", row).as_deref() {
                    Some("drop") => Ok(Change::Drop { name }),
                    Some("put") => {
                        let format = match text("format", row).as_deref() {
                            Some("tsv") => TableFormat::Tsv,
                            Some("ndjson") => TableFormat::Ndjson,
                            _ => TableFormat::Csv,
                        };
                        Ok(Change::Put {
                            format,
                            spec: TableSpec {
                                key: text("key", row),
                                parent: text("parent", row),
                                all_text: text("all_text", row).as_deref() == Some("true"),
                            },
                            body: text("body", row).unwrap_or_default(),
                            name,
                        })
                    }
                    other => Err(format!("table {name}: unknown kind {other:?}")),
                }
            })
            .collect()
    }

    fn apply(&self, tables: &DimTables) {
        let done = match self {
            Change::Put {
                name,
                format,
                spec,
                body,
            } => tables.put(name, body.as_bytes(), *format, spec).map(|_| ()),
            Change::Drop { name } => tables.delete(name).map(|_| ()),
        };
        if let Err(e) = done {
            tracing::error!(table = self.name(), error = %e, "cannot apply a table change from the log; this node's table differs");
        }
    }
}

struct TablesFollower(Arc<DimTables>);

impl Follower for TablesFollower {
    fn applied(&self, lsn: Lsn, _stream: &str, batch: &Batch) {
        for c in Change::from_batch(batch) {
            match c {
                Ok(c) => c.apply(&self.0),
                Err(e) => tracing::error!(lsn, error = %e, "an unreadable table change"),
            }
        }
    }
}

/// Has this node's tables follow [`STREAM`] (cluster mode), loading each
/// table's newest stored change first. Blocking.
pub(crate) fn follow(engine: &Engine, tables: &Arc<DimTables>) -> Result<()> {
    // The newest change of each table among those stored, in the order
    // they were stored.
    let mut newest: BTreeMap<String, Change> = BTreeMap::new();
    engine
        .follow(
            &[STREAM],
            Arc::new(TablesFollower(tables.clone())),
            &mut |_, batch| {
                for c in Change::from_batch(batch).into_iter().flatten() {
                    newest.insert(c.name().to_string(), c);
                }
                Ok(())
            },
        )
        .map_err(|e| QueryError::Internal(format!("reading table changes: {e}")))?;
    for c in newest.values() {
        c.apply(tables);
    }
    Ok(())
}

impl QueryEngine {
    /// Loads table `name` from `body`: here alone, or in a cluster on
    /// every node through the log (checked here first, so a bad body is
    /// refused before anything is written).
    pub async fn put_table(
        &self,
        name: &str,
        body: bytes::Bytes,
        format: TableFormat,
        spec: TableSpec,
    ) -> Result<Arc<DimTable>> {
        let tables = self.tables().clone();
        if !self.engine().is_cluster() {
            let name = name.to_string();
            return tokio::task::spawn_blocking(move || tables.put(&name, &body, format, &spec))
                .await
                .map_err(|e| QueryError::Internal(e.to_string()))?;
        }
        let (n, b, s) = (name.to_string(), body.clone(), spec.clone());
        tokio::task::spawn_blocking(move || crate::tables::parse_table(&n, &b, format, &s))
            .await
            .map_err(|e| QueryError::Internal(e.to_string()))??;
        let body = String::from_utf8(body.to_vec()).map_err(|_| QueryError::Invalid {
            message: "the table's body is not UTF-8 text".into(),
        })?;
        let change = Change::Put {
            name: name.to_string(),
            format,
            spec,
            body,
        };
        self.engine()
            .ingest(STREAM, change.to_batch())
            .await
            .map_err(appending)?;
        // Applied (loaded) here before the append returned.
        tables.get(name).ok_or_else(|| {
            QueryError::Internal(format!(
                "table {name} was logged but could not be loaded here"
            ))
        })
    }

    /// Drops table `name` (on every node, in a cluster); false if there
    /// was none.
    pub async fn delete_table(&self, name: &str) -> Result<bool> {
        let tables = self.tables().clone();
        if !self.engine().is_cluster() {
            let name = name.to_string();
            return tokio::task::spawn_blocking(move || tables.delete(&name))
                .await
                .map_err(|e| QueryError::Internal(e.to_string()))?;
        }
        if tables.get(name).is_none() {
            return Ok(false);
        }
        let change = Change::Drop {
            name: name.to_string(),
        };
        self.engine()
            .ingest(STREAM, change.to_batch())
            .await
            .map_err(appending)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reads_back_as_written() {
        for c in [
            Change::Put {
                name: "ports".into(),
                format: TableFormat::Tsv,
                spec: TableSpec {
                    key: Some("code".into()),
                    parent: None,
                    all_text: true,
                },
                body: "code\tname\nNOOSL\tOslo\n".into(),
            },
            Change::Drop {
                name: "ports".into(),
            },
        ] {
            assert_eq!(Change::from_batch(&c.to_batch()), vec![Ok(c)]);
        }
    }
}
