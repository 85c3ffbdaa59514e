//! Stream schemas: inferred on first write, widened when new fields appear.
//!
//! A field keeps the type it was first seen with. The check happens before a
//! batch is appended to the log ([`Schemas::reserve`]), under one lock, so two
//! concurrent requests cannot give one field two types; a conflicting batch is
//! refused whole. Widening is reserved at that moment too: a field whose
//! append later fails is simply an all-null column.

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use tally_ingest::{Batch, ColumnType};

/// Most columns one stream may have.
pub const MAX_COLUMNS_PER_STREAM: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(with = "type_serde")]
    pub ty: ColumnType,
}

mod type_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use tally_ingest::ColumnType;
    pub fn serialize<S: Serializer>(t: &ColumnType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ColumnType, D::Error> {
        match String::deserialize(d)?.as_str() {
            "string" => Ok(ColumnType::Dim),
            "number" => Ok(ColumnType::Value),
            other => Err(serde::de::Error::custom(format!(
                "unknown column type {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSchema {
    pub columns: Vec<ColumnDef>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl StreamSchema {
    pub fn from_columns(columns: Vec<ColumnDef>) -> Self {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        StreamSchema { columns, index }
    }
    pub fn get(&self, name: &str) -> Option<ColumnType> {
        self.index.get(name).map(|&i| self.columns[i].ty)
    }
    fn covers(&self, batch: &Batch) -> bool {
        batch
            .columns
            .iter()
            .all(|c| self.get(&c.name) == Some(c.data.column_type()))
    }
    fn push(&mut self, name: &str, ty: ColumnType) {
        self.index.insert(name.to_string(), self.columns.len());
        self.columns.push(ColumnDef {
            name: name.to_string(),
            ty,
        });
    }
}

/// Why a batch does not fit its stream's schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaConflict {
    #[error("stream '{stream}', line {line}, field '{field}': type conflict: {existing} in the stream's schema, {found} here")]
    Type {
        stream: String,
        field: String,
        line: usize,
        existing: ColumnType,
        found: ColumnType,
    },
    #[error(
        "stream '{stream}': field '{field}' would exceed the limit of {limit} columns per stream"
    )]
    TooManyColumns {
        stream: String,
        field: String,
        limit: usize,
    },
}

#[derive(Default)]
pub struct Schemas {
    streams: RwLock<BTreeMap<String, StreamSchema>>,
}

impl Schemas {
    pub fn new(initial: BTreeMap<String, StreamSchema>) -> Self {
        let streams = initial
            .into_iter()
            .map(|(k, v)| (k, StreamSchema::from_columns(v.columns)))
            .collect();
        Schemas {
            streams: RwLock::new(streams),
        }
    }

    /// The type `field` has in `stream`, if it has one yet.
    pub fn column_type(&self, stream: &str, field: &str) -> Option<ColumnType> {
        self.streams.read().get(stream).and_then(|s| s.get(field))
    }

    pub fn get(&self, stream: &str) -> Option<StreamSchema> {
        self.streams.read().get(stream).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, StreamSchema> {
        self.streams.read().clone()
    }

    /// Checks `batch` against `stream`'s schema and widens the schema with
    /// its new fields. Nothing changes when it returns an error.
    pub fn reserve(&self, stream: &str, batch: &Batch) -> Result<(), SchemaConflict> {
        self.reserve_all(&[(stream, batch)])
    }

    /// [`Self::reserve`] for batches of several streams at once: either
    /// every stream's schema takes its batch, or nothing changes (one body
    /// of line protocol holds points of several measurements).
    pub fn reserve_all(&self, batches: &[(&str, &Batch)]) -> Result<(), SchemaConflict> {
        {
            let all = self.streams.read();
            if batches
                .iter()
                .all(|(stream, batch)| all.get(*stream).is_some_and(|s| s.covers(batch)))
            {
                return Ok(());
            }
        }
        let mut all = self.streams.write();
        let empty = StreamSchema::default();
        for (stream, batch) in batches {
            let schema = all.get(*stream).unwrap_or(&empty);
            let mut new = 0;
            for c in &batch.columns {
                let found = c.data.column_type();
                match schema.get(&c.name) {
                    Some(existing) if existing != found => {
                        return Err(SchemaConflict::Type {
                            stream: stream.to_string(),
                            field: c.name.clone(),
                            line: batch.first_row_with_value(c),
                            existing,
                            found,
                        });
                    }
                    Some(_) => {}
                    None => new += 1,
                }
                if schema.columns.len() + new > MAX_COLUMNS_PER_STREAM {
                    return Err(SchemaConflict::TooManyColumns {
                        stream: stream.to_string(),
                        field: c.name.clone(),
                        limit: MAX_COLUMNS_PER_STREAM,
                    });
                }
            }
        }
        for (stream, batch) in batches {
            let schema = all.entry(stream.to_string()).or_default();
            for c in &batch.columns {
                if schema.get(&c.name).is_none() {
                    schema.push(&c.name, c.data.column_type());
                }
            }
        }
        Ok(())
    }

    /// Widens without refusing: used when applying records already in the
    /// log. Returns the names of columns whose type conflicts (which the
    /// caller then drops from the batch).
    pub fn widen(&self, stream: &str, batch: &Batch) -> Vec<String> {
        if self
            .streams
            .read()
            .get(stream)
            .is_some_and(|s| s.covers(batch))
        {
            return Vec::new();
        }
        let mut all = self.streams.write();
        let schema = all.entry(stream.to_string()).or_default();
        let mut conflicts = Vec::new();
        for c in &batch.columns {
            match schema.get(&c.name) {
                Some(t) if t != c.data.column_type() => conflicts.push(c.name.clone()),
                Some(_) => {}
                None => schema.push(&c.name, c.data.column_type()),
            }
        }
        conflicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ingest::BatchBuilder;

    fn batch(fields: &[(&str, bool)]) -> Batch {
        let mut b = BatchBuilder::new();
        b.start_row(1).unwrap();
        for (name, is_num) in fields {
            if *is_num {
                b.push_num(name, 1.0).unwrap();
            } else {
                b.push_str(name, "x").unwrap();
            }
        }
        b.finish_row(0);
        b.finish()
    }

    #[test]
    fn widens_and_refuses_conflicts_without_change() {
        let s = Schemas::default();
        s.reserve("a", &batch(&[("x", true)])).unwrap();
        s.reserve("a", &batch(&[("x", true), ("y", false)]))
            .unwrap();
        assert_eq!(s.get("a").unwrap().columns.len(), 2);
        let err = s
            .reserve("a", &batch(&[("z", true), ("x", false)]))
            .unwrap_err();
        assert!(matches!(err, SchemaConflict::Type { ref field, .. } if field == "x"));
        assert_eq!(
            s.get("a").unwrap().columns.len(),
            2,
            "a refused batch must not widen the schema"
        );
        assert_eq!(s.column_type("a", "y"), Some(ColumnType::Dim));
    }
}
