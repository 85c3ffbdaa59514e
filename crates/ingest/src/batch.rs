//! The columnar batch: what one request (or one log record) holds.
//!
//! A batch is built row by row by the parsers and read column by column by
//! the store and the codec. Columns are plain vectors (offsets + bytes for
//! strings) so that encoding, decoding and conversion to Arrow are copies of
//! contiguous memory rather than per-event allocations.

use crate::{Error, Location, Result};
use std::collections::HashMap;
use std::fmt;

/// Most fields one event may carry; keeps a hostile body from creating
/// thousands of columns.
pub const MAX_FIELDS_PER_EVENT: usize = 1000;

/// The two kinds of field: strings (and booleans) are dimensions, numbers
/// are values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Dim,
    Value,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Dim => "string",
            ColumnType::Value => "number",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A nullable string column: `offsets[i]..offsets[i+1]` is row `i` in `bytes`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StrColumn {
    pub offsets: Vec<u32>,
    pub bytes: Vec<u8>,
    pub valid: Vec<bool>,
}

impl StrColumn {
    pub fn new() -> Self {
        StrColumn {
            offsets: vec![0],
            bytes: Vec::new(),
            valid: Vec::new(),
        }
    }
    pub fn len(&self) -> usize {
        self.valid.len()
    }
    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }
    pub fn push(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
        self.offsets.push(self.bytes.len() as u32);
        self.valid.push(true);
    }
    pub fn push_null(&mut self) {
        self.offsets.push(self.bytes.len() as u32);
        self.valid.push(false);
    }
    /// Appends row `i` of `other` (bytes copied as they are; they are
    /// already valid UTF-8).
    pub fn push_from(&mut self, other: &StrColumn, i: usize) {
        let (a, b) = (other.offsets[i] as usize, other.offsets[i + 1] as usize);
        self.bytes.extend_from_slice(&other.bytes[a..b]);
        self.offsets.push(self.bytes.len() as u32);
        self.valid.push(other.valid[i]);
    }
    pub fn get(&self, i: usize) -> Option<&str> {
        if !self.valid[i] {
            return None;
        }
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        // Only whole `&str`s are ever pushed, and the codec validates UTF-8.
        std::str::from_utf8(&self.bytes[a..b]).ok()
    }
}

/// A nullable number column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NumColumn {
    pub values: Vec<f64>,
    pub valid: Vec<bool>,
}

impl NumColumn {
    pub fn len(&self) -> usize {
        self.valid.len()
    }
    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }
    pub fn push(&mut self, v: f64) {
        self.values.push(v);
        self.valid.push(true);
    }
    pub fn push_null(&mut self) {
        self.values.push(0.0);
        self.valid.push(false);
    }
    pub fn get(&self, i: usize) -> Option<f64> {
        self.valid[i].then(|| self.values[i])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Dim(StrColumn),
    Value(NumColumn),
}

impl ColumnData {
    pub fn column_type(&self) -> ColumnType {
        match self {
            ColumnData::Dim(_) => ColumnType::Dim,
            ColumnData::Value(_) => ColumnType::Value,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Dim(c) => c.len(),
            ColumnData::Value(c) => c.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn valid(&self) -> &[bool] {
        match self {
            ColumnData::Dim(c) => &c.valid,
            ColumnData::Value(c) => &c.valid,
        }
    }
    fn push_null(&mut self) {
        match self {
            ColumnData::Dim(c) => c.push_null(),
            ColumnData::Value(c) => c.push_null(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// A batch of events: `ts` (microseconds since the epoch, UTC) and columns of
/// equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub ts: Vec<i64>,
    pub columns: Vec<Column>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
    /// The 1-based row of the first non-null value in `column`, for naming
    /// the line of a schema conflict found after parsing.
    pub fn first_row_with_value(&self, column: &Column) -> usize {
        column
            .data
            .valid()
            .iter()
            .position(|v| *v)
            .map_or(1, |i| i + 1)
    }
    /// Approximate heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let mut n = self.ts.len() * 8;
        for c in &self.columns {
            n += c.name.len() + c.data.len();
            n += match &c.data {
                ColumnData::Dim(s) => s.bytes.len() + s.offsets.len() * 4,
                ColumnData::Value(v) => v.values.len() * 8,
            };
        }
        n
    }
}

/// Builds a batch one event at a time. Parsers call [`start_row`], then
/// [`push_str`]/[`push_num`] per field, then [`finish_row`].
///
/// [`start_row`]: BatchBuilder::start_row
/// [`push_str`]: BatchBuilder::push_str
/// [`push_num`]: BatchBuilder::push_num
/// [`finish_row`]: BatchBuilder::finish_row
#[derive(Default)]
pub struct BatchBuilder {
    ts: Vec<i64>,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    at: Option<Location>,
    fields_in_row: usize,
    /// Column index of the k-th field of the previous event: events of one
    /// body usually list their fields in the same order, so this predicts
    /// the column without hashing the name.
    order: Vec<usize>,
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rows(&self) -> usize {
        self.ts.len()
    }

    /// Starts an event at `line` of the body.
    pub fn start_row(&mut self, line: usize) -> Result<()> {
        self.start_row_at(Location::Line(line))
    }

    pub fn start_row_at(&mut self, at: Location) -> Result<()> {
        self.at = Some(at);
        self.fields_in_row = 0;
        Ok(())
    }

    pub fn location(&self) -> Location {
        self.at.unwrap_or(Location::Line(1))
    }

    fn column_for(&mut self, name: &str, ty: ColumnType) -> Result<&mut ColumnData> {
        let at = self.location();
        self.fields_in_row += 1;
        if self.fields_in_row > MAX_FIELDS_PER_EVENT {
            return Err(Error::TooManyFields {
                at,
                limit: MAX_FIELDS_PER_EVENT,
            });
        }
        let row = self.ts.len();
        let k = self.fields_in_row - 1;
        let predicted = self
            .order
            .get(k)
            .copied()
            .filter(|&i| self.columns[i].name == name);
        let idx = match predicted.or_else(|| self.index.get(name).copied()) {
            Some(i) => i,
            None => {
                if name == "ts" {
                    return Err(Error::BadField {
                        at,
                        field: name.into(),
                        message: "'ts' is reserved for the event timestamp".into(),
                    });
                }
                crate::validate_field_name(name).map_err(|message| Error::BadField {
                    at,
                    field: name.into(),
                    message,
                })?;
                let data = match ty {
                    ColumnType::Dim => ColumnData::Dim(StrColumn::new()),
                    ColumnType::Value => ColumnData::Value(NumColumn::default()),
                };
                self.columns.push(Column {
                    name: name.to_string(),
                    data,
                });
                self.index.insert(name.to_string(), self.columns.len() - 1);
                self.columns.len() - 1
            }
        };
        if k < self.order.len() {
            self.order[k] = idx;
        } else {
            self.order.push(idx);
        }
        let col = &mut self.columns[idx];
        if col.data.column_type() != ty {
            return Err(Error::TypeConflict {
                at,
                field: name.into(),
                existing: col.data.column_type(),
                found: ty.as_str().into(),
            });
        }
        if col.data.len() > row {
            return Err(Error::BadField {
                at,
                field: name.into(),
                message: "field appears twice in one event".into(),
            });
        }
        while col.data.len() < row {
            col.data.push_null();
        }
        Ok(&mut col.data)
    }

    /// The type `name` already has in this batch, if any.
    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.index
            .get(name)
            .map(|&i| self.columns[i].data.column_type())
    }

    pub fn push_str(&mut self, name: &str, value: &str) -> Result<()> {
        if let ColumnData::Dim(c) = self.column_for(name, ColumnType::Dim)? {
            c.push(value);
        }
        Ok(())
    }

    pub fn push_num(&mut self, name: &str, value: f64) -> Result<()> {
        let at = self.location();
        if !value.is_finite() {
            return Err(Error::BadField {
                at,
                field: name.into(),
                message: "number is not finite".into(),
            });
        }
        if let ColumnData::Value(c) = self.column_for(name, ColumnType::Value)? {
            c.push(value);
        }
        Ok(())
    }

    pub fn finish_row(&mut self, ts_us: i64) {
        self.ts.push(ts_us);
    }

    pub fn finish(mut self) -> Batch {
        let rows = self.ts.len();
        for c in &mut self.columns {
            while c.data.len() < rows {
                c.data.push_null();
            }
        }
        Batch {
            ts: self.ts,
            columns: self.columns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_missing_fields_with_nulls() {
        let mut b = BatchBuilder::new();
        b.start_row(1).unwrap();
        b.push_str("a", "x").unwrap();
        b.finish_row(1);
        b.start_row(2).unwrap();
        b.push_num("v", 2.5).unwrap();
        b.finish_row(2);
        let batch = b.finish();
        assert_eq!(batch.len(), 2);
        let ColumnData::Dim(a) = &batch.column("a").unwrap().data else {
            panic!()
        };
        assert_eq!((a.get(0), a.get(1)), (Some("x"), None));
        let ColumnData::Value(v) = &batch.column("v").unwrap().data else {
            panic!()
        };
        assert_eq!((v.get(0), v.get(1)), (None, Some(2.5)));
    }

    #[test]
    fn conflicting_types_name_the_line_and_field() {
        let mut b = BatchBuilder::new();
        b.start_row(1).unwrap();
        b.push_num("v", 1.0).unwrap();
        b.finish_row(1);
        b.start_row(2).unwrap();
        let err = b.push_str("v", "x").unwrap_err();
        assert_eq!(
            err,
            Error::TypeConflict {
                at: Location::Line(2),
                field: "v".into(),
                existing: ColumnType::Value,
                found: "string".into()
            }
        );
    }

    #[test]
    fn fields_in_changing_order_land_in_their_own_columns() {
        let mut b = BatchBuilder::new();
        let rows: &[&[(&str, f64)]] = &[
            &[("a", 1.0), ("b", 2.0)],
            &[("b", 3.0), ("a", 4.0)],
            &[("c", 5.0)],
            &[("a", 6.0), ("b", 7.0)],
        ];
        for (i, row) in rows.iter().enumerate() {
            b.start_row(i + 1).unwrap();
            for (k, v) in row.iter() {
                b.push_num(k, *v).unwrap();
            }
            b.finish_row(0);
        }
        let batch = b.finish();
        let col = |n: &str| match &batch.column(n).unwrap().data {
            ColumnData::Value(v) => (0..4).map(|i| v.get(i)).collect::<Vec<_>>(),
            _ => panic!(),
        };
        assert_eq!(col("a"), vec![Some(1.0), Some(4.0), None, Some(6.0)]);
        assert_eq!(col("b"), vec![Some(2.0), Some(3.0), None, Some(7.0)]);
        assert_eq!(col("c"), vec![None, None, Some(5.0), None]);
    }

    #[test]
    fn duplicate_field_in_one_event_is_an_error() {
        let mut b = BatchBuilder::new();
        b.start_row(1).unwrap();
        b.push_num("v", 1.0).unwrap();
        assert!(matches!(b.push_num("v", 2.0), Err(Error::BadField { .. })));
    }
}
