//! Parquet segment files.
//!
//! A segment holds one partition's events sorted by time: `ts` as a UTC
//! microsecond timestamp, dimensions as dictionary-encoded strings, values as
//! doubles, zstd-compressed, with page statistics for pruning. The files are
//! plain Parquet: DuckDB, ClickHouse or pandas read them as they are.

use crate::schema::StreamSchema;
use crate::{Error, Result};
use arrow::array::{new_null_array, ArrayRef};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow schema of a whole stream: `ts` then every column.
pub fn arrow_schema(schema: &StreamSchema) -> SchemaRef {
    let mut fields = vec![Field::new("ts", ts_type(), false)];
    for c in &schema.columns {
        let dt = match c.ty {
            tally_ingest::ColumnType::Dim => DataType::Utf8,
            tally_ingest::ColumnType::Value => DataType::Float64,
        };
        fields.push(Field::new(&c.name, dt, true));
    }
    Arc::new(Schema::new(fields))
}

/// zstd level for flushes: fast, because flushing competes with ingest for CPU.
pub const FLUSH_ZSTD_LEVEL: i32 = 1;
/// zstd level for compaction: it rewrites data once, in the background, and
/// what it writes is what stays on disk.
pub const COMPACT_ZSTD_LEVEL: i32 = 6;

/// Writes `batch`, sorted by `ts`, as a Parquet file at `path` and fsyncs it.
/// Returns the file size.
pub fn write_segment(
    path: &Path,
    batch: &RecordBatch,
    row_group_rows: usize,
    zstd_level: i32,
) -> Result<u64> {
    let sorted = sort_by_ts(batch)?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level).unwrap_or_default(),
        ))
        .set_dictionary_enabled(true)
        // Sorted timestamps are small steps: delta encoding stores them in
        // a few bits each, where a dictionary would try (and fail) to
        // intern every one.
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .set_created_by("tally".into())
        .build();
    // Dictionary columns (see `crate::sorted`) are text to readers: the
    // file's Arrow schema says so, as it does for plain text.
    add_encoded_arrow_schema_to_metadata(&plain_schema(&sorted.schema()), &mut props);
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut writer =
        ArrowWriter::try_new_with_options(file, sorted.schema(), options).map_err(|source| {
            Error::Parquet {
                path: path.into(),
                source,
            }
        })?;
    writer.write(&sorted).map_err(|source| Error::Parquet {
        path: path.into(),
        source,
    })?;
    let file = writer.into_inner().map_err(|source| Error::Parquet {
        path: path.into(),
        source,
    })?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(len)
}

/// `schema` with dictionary columns as their values' type.
fn plain_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type((**value).clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Reads a whole segment.
pub fn read_segment(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|source| Error::Parquet {
            path: path.into(),
            source,
        })?;
    reader.collect::<Result<Vec<_>, _>>().map_err(Error::Arrow)
}

/// The events of a record batch in a segment's layout (`ts`, text
/// dimensions, numeric values) as an ingest batch, so stored events can be
/// replayed through the same code as new ones (rollup rebuilds). Columns of
/// other types are left out.
pub fn batch_from_arrow(rb: &RecordBatch) -> Result<tally_ingest::Batch> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
    use tally_ingest::{Column, ColumnData, NumColumn, StrColumn};
    let schema = rb.schema();
    let mut ts = Vec::new();
    let mut columns = Vec::new();
    for (field, col) in schema.fields().iter().zip(rb.columns()) {
        if field.name() == "ts" {
            let t = col
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| Error::Format(format!("ts is {}", col.data_type())))?;
            ts = t.values().to_vec();
            continue;
        }
        // Dictionary pages may come back as dictionaries: plain text first.
        let col = match col.data_type() {
            DataType::Dictionary(..) | DataType::Utf8View | DataType::LargeUtf8 => {
                arrow::compute::cast(col, &DataType::Utf8)?
            }
            _ => col.clone(),
        };
        let data = match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                let mut c = StrColumn::new();
                for i in 0..a.len() {
                    match a.is_valid(i) {
                        true => c.push(a.value(i)),
                        false => c.push_null(),
                    }
                }
                ColumnData::Dim(c)
            }
            DataType::Float64 => {
                let a = col.as_primitive::<Float64Type>();
                let mut c = NumColumn::default();
                for i in 0..a.len() {
                    match a.is_valid(i) {
                        true => c.push(a.value(i)),
                        false => c.push_null(),
                    }
                }
                ColumnData::Value(c)
            }
            _ => continue,
        };
        columns.push(Column {
            name: field.name().clone(),
            data,
        });
    }
    if ts.len() != rb.num_rows() {
        return Err(Error::Format("a record batch without ts".into()));
    }
    Ok(tally_ingest::Batch { ts, columns })
}

fn sort_by_ts(batch: &RecordBatch) -> Result<RecordBatch> {
    let ts = batch.column(0);
    if let Some(t) = ts
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
    {
        if t.values().windows(2).all(|w| w[0] <= w[1]) {
            return Ok(batch.clone());
        }
    }
    let indices = sort_to_indices(ts, None, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Concatenates batches of possibly different column sets into one batch of
/// `schema` (columns a batch lacks become nulls).
pub(crate) fn concat_aligned(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let mut aligned = Vec::with_capacity(batches.len());
    for b in batches {
        let cols: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match b.schema().index_of(f.name()) {
                Ok(i) => b.column(i).clone(),
                Err(_) => new_null_array(f.data_type(), b.num_rows()),
            })
            .collect();
        aligned.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(concat_batches(schema, &aligned)?)
}
