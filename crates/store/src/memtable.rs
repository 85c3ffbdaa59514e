//! The in-memory tail: applied events not yet in Parquet segments.
//!
//! Partitioned by (stream, hour) like the segments they become. Each
//! partition keeps the same plain column vectors a batch has, so applying a
//! batch is a handful of `extend`s, and turning a partition into an Arrow
//! record batch is a copy per column.
//!
//! Queries read the tail through [`PartitionBuffer::arrow_chunks`]: rows are
//! converted to Arrow once, in chunks, and later snapshots reuse the chunks
//! already built (a partition only grows until it is flushed), so a query
//! right after an ingest copies only the rows that arrived since the last one.

use crate::schema::StreamSchema;
use crate::sorted;
use crate::{partition_of, Result};
use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tally_ingest::{Batch, ColumnData, ColumnType, NumColumn, StrColumn};

/// One partition's events: a timestamp column and one column per field seen.
#[derive(Debug, Default)]
pub struct PartitionBuffer {
    pub ts: Vec<i64>,
    /// Smallest and largest `ts`, kept as rows arrive.
    min_ts: i64,
    max_ts: i64,
    pub columns: Vec<(String, ColumnData)>,
    index: HashMap<String, usize>,
    bytes: usize,
    /// Arrow copies of the rows so far, for readers (see the module comment).
    chunks: Mutex<Vec<RecordBatch>>,
}

/// A chunk smaller than this is rebuilt (merged with the newer rows) by the
/// next snapshot, so a stream of tiny ingests does not leave a query with
/// thousands of tiny batches.
const MIN_CHUNK_ROWS: usize = 64 * 1024;

impl PartitionBuffer {
    pub fn rows(&self) -> usize {
        self.ts.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Smallest and largest event time (meaningless when empty).
    pub fn time_range(&self) -> (i64, i64) {
        (self.min_ts, self.max_ts)
    }

    /// Every row of this partition as Arrow record batches (each with `ts`
    /// then the columns that existed when it was built). Reuses the chunks
    /// earlier calls built and converts only the rows added since.
    /// `held` counts the bytes of all chunks, so the tail's memory limit
    /// sees them.
    pub fn arrow_chunks(&self, held: &AtomicUsize) -> Result<Vec<RecordBatch>> {
        let mut chunks = self.chunks.lock();
        let mut done: usize = chunks.iter().map(RecordBatch::num_rows).sum();
        if let Some(last) = chunks.last() {
            if last.num_rows() < MIN_CHUNK_ROWS && done < self.rows() {
                done -= last.num_rows();
                held.fetch_sub(last.get_array_memory_size(), Ordering::Relaxed);
                chunks.pop();
            }
        }
        if done < self.rows() {
            let chunk = self.rows_to_record_batch(done, self.rows())?;
            held.fetch_add(chunk.get_array_memory_size(), Ordering::Relaxed);
            chunks.push(chunk);
        }
        Ok(chunks.clone())
    }

    /// Rows `start..end` as one record batch, columns in this buffer's order.
    fn rows_to_record_batch(&self, start: usize, end: usize) -> Result<RecordBatch> {
        let mut fields = vec![Field::new("ts", crate::segment::ts_type(), false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(
            TimestampMicrosecondArray::from(self.ts[start..end].to_vec()).with_timezone("UTC"),
        )];
        for (name, data) in &self.columns {
            let (dt, array) = to_arrow_range(data, start, end);
            fields.push(Field::new(name, dt, true));
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }

    /// Appends the batch's rows listed in `rows` (all rows when `None`).
    /// Columns whose name is in `skip` are left out.
    fn extend(&mut self, batch: &Batch, rows: Option<&[usize]>, skip: &[String]) {
        let base = self.ts.len();
        let before = self.bytes;
        if base == 0 {
            (self.min_ts, self.max_ts) = (i64::MAX, i64::MIN);
        }
        match rows {
            None => self.ts.extend_from_slice(&batch.ts),
            Some(r) => self.ts.extend(r.iter().map(|&i| batch.ts[i])),
        }
        for &t in &self.ts[base..] {
            self.min_ts = self.min_ts.min(t);
            self.max_ts = self.max_ts.max(t);
        }
        self.bytes += (self.ts.len() - base) * 8;
        for col in &batch.columns {
            if skip.contains(&col.name) {
                continue;
            }
            let idx = match self.index.get(&col.name) {
                Some(&i) => i,
                None => {
                    let empty = match col.data.column_type() {
                        ColumnType::Dim => ColumnData::Dim(StrColumn::new()),
                        ColumnType::Value => ColumnData::Value(NumColumn::default()),
                    };
                    self.columns.push((col.name.clone(), empty));
                    self.index.insert(col.name.clone(), self.columns.len() - 1);
                    self.columns.len() - 1
                }
            };
            let dst = &mut self.columns[idx].1;
            pad(dst, base);
            self.bytes += append_rows(dst, &col.data, rows);
        }
        let len = self.ts.len();
        for (_, c) in &mut self.columns {
            let n = c.len();
            pad(c, len);
            self.bytes += len - n;
        }
        debug_assert!(self.bytes >= before);
    }

    /// Appends all of `other` (used to put a failed flush back).
    fn absorb(&mut self, other: &PartitionBuffer) {
        let batch = Batch {
            ts: other.ts.clone(),
            columns: other
                .columns
                .iter()
                .map(|(n, d)| tally_ingest::Column {
                    name: n.clone(),
                    data: d.clone(),
                })
                .collect(),
        };
        self.extend(&batch, None, &[]);
    }

    /// This partition as one Arrow record batch: `ts` then its own columns,
    /// in the stream schema's order, unsorted.
    pub fn to_record_batch(&self, schema: &StreamSchema) -> Result<RecordBatch> {
        let mut fields = vec![Field::new("ts", crate::segment::ts_type(), false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(
            TimestampMicrosecondArray::from(self.ts.clone()).with_timezone("UTC"),
        )];
        for i in self.schema_order(schema) {
            let (name, data) = &self.columns[i];
            let (dt, array) = to_arrow(data);
            fields.push(Field::new(name, dt, true));
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }

    /// This partition as a segment's rows: sorted by `ts`, columns in the
    /// stream schema's order, text that repeats as dictionaries (see
    /// [`crate::sorted`]).
    pub fn to_segment_batch(&self, schema: &StreamSchema) -> Result<RecordBatch> {
        let order = sorted::sort_order(&self.ts);
        let order = order.as_deref();
        let mut fields = vec![Field::new("ts", crate::segment::ts_type(), false)];
        let mut arrays = vec![sorted::ts_array(&self.ts, order)];
        for i in self.schema_order(schema) {
            let (name, data) = &self.columns[i];
            let array = sorted::column_array(data, order);
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }

    /// This partition's columns in the stream schema's order.
    fn schema_order(&self, schema: &StreamSchema) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.columns.len()).collect();
        order.sort_by_key(|&i| {
            schema
                .columns
                .iter()
                .position(|c| c.name == self.columns[i].0)
                .unwrap_or(usize::MAX)
        });
        order
    }
}

fn pad(c: &mut ColumnData, len: usize) {
    match c {
        ColumnData::Dim(s) => {
            while s.len() < len {
                s.push_null();
            }
        }
        ColumnData::Value(v) => {
            while v.len() < len {
                v.push_null();
            }
        }
    }
}

/// Appends rows of `src` to `dst` (same type); returns bytes added.
fn append_rows(dst: &mut ColumnData, src: &ColumnData, rows: Option<&[usize]>) -> usize {
    match (dst, src) {
        (ColumnData::Dim(d), ColumnData::Dim(s)) => {
            let b0 = d.bytes.len();
            match rows {
                None => {
                    let shift = d.bytes.len() as u32;
                    d.bytes.extend_from_slice(&s.bytes);
                    d.offsets.extend(s.offsets[1..].iter().map(|o| o + shift));
                    d.valid.extend_from_slice(&s.valid);
                }
                Some(r) => {
                    for &i in r {
                        d.push_from(s, i);
                    }
                }
            }
            d.bytes.len() - b0 + rows.map_or(s.len(), <[usize]>::len) * 5
        }
        (ColumnData::Value(d), ColumnData::Value(s)) => {
            match rows {
                None => {
                    d.values.extend_from_slice(&s.values);
                    d.valid.extend_from_slice(&s.valid);
                }
                Some(r) => {
                    for &i in r {
                        d.values.push(s.values[i]);
                        d.valid.push(s.valid[i]);
                    }
                }
            }
            rows.map_or(s.len(), <[usize]>::len) * 9
        }
        // Types were checked against the schema before this point.
        _ => 0,
    }
}

fn to_arrow(data: &ColumnData) -> (DataType, ArrayRef) {
    to_arrow_range(data, 0, data.len())
}

/// Rows `start..end` of a column as an Arrow array.
fn to_arrow_range(data: &ColumnData, start: usize, end: usize) -> (DataType, ArrayRef) {
    match data {
        ColumnData::Dim(s) => {
            let base = s.offsets[start];
            let offsets: Vec<i32> = s.offsets[start..=end]
                .iter()
                .map(|&o| (o - base) as i32)
                .collect();
            let bytes = s.bytes[base as usize..s.offsets[end] as usize].to_vec();
            let array = StringArray::new(
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                arrow::buffer::Buffer::from_vec(bytes),
                null_buffer(&s.valid[start..end]),
            );
            (DataType::Utf8, Arc::new(array))
        }
        ColumnData::Value(v) => {
            let array = Float64Array::new(
                ScalarBuffer::from(v.values[start..end].to_vec()),
                null_buffer(&v.valid[start..end]),
            );
            (DataType::Float64, Arc::new(array))
        }
    }
}

fn null_buffer(valid: &[bool]) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid.to_vec()))
    }
}

/// The whole in-memory tail, or a frozen copy of it being flushed.
#[derive(Debug)]
pub struct MemTable {
    pub partitions: HashMap<(String, i64), PartitionBuffer>,
    pub rows: usize,
    pub bytes: usize,
    /// LSN of the last record applied here (0 when empty).
    pub last_lsn: u64,
    pub created: Instant,
    /// Bytes of the Arrow chunks readers have built (see the module comment).
    pub chunk_bytes: AtomicUsize,
    /// Set when a seal record cut this table (cluster mode, see
    /// [`crate::Store::seal`]).
    pub seal: Option<Seal>,
}

/// Where the log cut the tail in cluster mode: the seal record's position,
/// and the segments the record tells every node to retire.
#[derive(Debug, Clone, PartialEq)]
pub struct Seal {
    pub lsn: u64,
    pub retire: Vec<u64>,
}

impl Default for MemTable {
    fn default() -> Self {
        MemTable {
            partitions: HashMap::new(),
            rows: 0,
            bytes: 0,
            last_lsn: 0,
            created: Instant::now(),
            chunk_bytes: AtomicUsize::new(0),
            seal: None,
        }
    }
}

impl MemTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one log record's batch, skipping the `skip` columns.
    /// Returns the partitions the batch touched.
    pub fn append(&mut self, lsn: u64, stream: &str, batch: &Batch, skip: &[String]) -> Vec<i64> {
        self.last_lsn = self.last_lsn.max(lsn);
        if batch.is_empty() {
            return Vec::new();
        }
        let first = partition_of(batch.ts[0]);
        let single = batch.ts.iter().all(|&t| partition_of(t) == first);
        let touched = if single {
            self.extend_partition(stream, first, batch, None, skip);
            vec![first]
        } else {
            let mut groups: HashMap<i64, Vec<usize>> = HashMap::new();
            for (i, &t) in batch.ts.iter().enumerate() {
                groups.entry(partition_of(t)).or_default().push(i);
            }
            let mut touched = Vec::with_capacity(groups.len());
            for (p, rows) in groups {
                self.extend_partition(stream, p, batch, Some(&rows), skip);
                touched.push(p);
            }
            touched
        };
        self.rows += batch.len();
        touched
    }

    fn extend_partition(
        &mut self,
        stream: &str,
        p: i64,
        batch: &Batch,
        rows: Option<&[usize]>,
        skip: &[String],
    ) {
        let part = match self.partitions.get_mut(&(stream.to_string(), p)) {
            Some(part) => part,
            None => self.partitions.entry((stream.to_string(), p)).or_default(),
        };
        let before = part.bytes;
        part.extend(batch, rows, skip);
        self.bytes += part.bytes - before;
    }

    /// Puts the contents of a frozen table back (after a failed flush).
    pub fn absorb(&mut self, other: &MemTable) {
        for ((stream, p), part) in &other.partitions {
            let dst = self.partitions.entry((stream.clone(), *p)).or_default();
            let before = dst.bytes;
            dst.absorb(part);
            self.bytes += dst.bytes - before;
        }
        self.rows += other.rows;
        self.last_lsn = self.last_lsn.max(other.last_lsn);
        self.created = self.created.min(other.created);
    }

    /// Rows per stream.
    pub fn stream_rows(&self) -> HashMap<&str, (usize, i64, i64)> {
        let mut out: HashMap<&str, (usize, i64, i64)> = HashMap::new();
        for ((s, _), part) in &self.partitions {
            let e = out.entry(s.as_str()).or_insert((0, i64::MAX, i64::MIN));
            e.0 += part.rows();
            if part.rows() > 0 {
                e.1 = e.1.min(part.min_ts);
                e.2 = e.2.max(part.max_ts);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ingest::{parse, Format};

    #[test]
    fn splits_batches_by_hour_and_pads_columns() {
        let body = "{\"ts\":0,\"a\":\"x\"}\n{\"ts\":3600000,\"v\":1}\n{\"ts\":10,\"v\":2}\n";
        let batch = parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap();
        let mut m = MemTable::new();
        m.append(7, "s", &batch, &[]);
        assert_eq!(m.rows, 3);
        assert_eq!(m.last_lsn, 7);
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(m.stream_rows()["s"], (3, 0, 3_600_000_000));
        let p0 = &m.partitions[&("s".to_string(), 0)];
        assert_eq!(p0.ts, vec![0, 10_000]);
        let schema = StreamSchema::from_columns(vec![]);
        let rb = p0.to_record_batch(&schema).unwrap();
        assert_eq!(rb.num_rows(), 2);
        assert_eq!(rb.num_columns(), 3);
        assert_eq!(rb.column(1).null_count(), 1);
        assert_eq!(rb.column(2).null_count(), 1);
    }
}
