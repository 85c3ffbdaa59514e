//! Streams and dimension tables as DataFusion tables.
//!
//! A stream's table is the union of its Parquet segments and its in-memory
//! tail, taken from one store [`Snapshot`] when the query is planned, so an
//! acknowledged event is in the next query's answer (read-your-writes). Time
//! predicates on `ts` select which segments and tail partitions are read at
//! all; every filter is also handed to the Parquet reader as a pruning
//! predicate (row-group and page statistics), and projections reach the
//! reader, so only the needed columns are decoded.
//!
//! Segment files stay readable for the whole query: the snapshot's file
//! handles are parked in the query's [`Pins`], and compaction deletes a
//! replaced file only when the last handle goes.

use crate::tables::DimTables;
use arrow::array::{new_null_array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use std::sync::Arc;
use tally_engine::Engine;
use tally_ingest::is_internal_stream;
use tally_store::{arrow_schema, SegmentFile};

/// Where the archive's object store is registered in query sessions.
pub(crate) const ARCHIVE_URL: &str = "tally-archive://archive";

/// Segment handles a running query holds (a session config extension).
#[derive(Debug, Default)]
pub(crate) struct Pins(pub Mutex<Vec<Arc<SegmentFile>>>);

/// Which names a schema shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Namespace {
    /// Streams and dimension tables; a table shadows a stream of the same name.
    Default,
    Streams,
    Tables,
}

/// The schema provider behind `public`, `streams` and `tables`.
pub(crate) struct TallySchema {
    pub engine: Arc<Engine>,
    pub tables: Arc<DimTables>,
    pub namespace: Namespace,
}

impl TallySchema {
    /// The public stream a table name means: the stream of that name, or
    /// else the stream an InfluxDB measurement of that name went to
    /// (`"disk.io"` is the stream `disk+2Eio`).
    fn stream_named(&self, name: &str) -> Option<String> {
        if is_internal_stream(name) {
            return None;
        }
        if self.engine.store().schemas().get(name).is_some() {
            return Some(name.to_string());
        }
        tally_ingest::stream_for_measurement(name)
            .ok()
            .filter(|s| s != name && !is_internal_stream(s))
    }
}

#[async_trait]
impl SchemaProvider for TallySchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.namespace != Namespace::Tables {
            names.extend(
                self.engine
                    .store()
                    .schemas()
                    .all()
                    .into_keys()
                    .filter(|n| !is_internal_stream(n)),
            );
        }
        if self.namespace != Namespace::Streams {
            names.extend(self.tables.names());
        }
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.namespace != Namespace::Streams {
            if let Some(t) = self.tables.get(name) {
                return Ok(Some(t.provider()?));
            }
        }
        if self.namespace != Namespace::Tables {
            if let Some(stream) = self.stream_named(name) {
                if let Some(schema) = self.engine.store().schemas().get(&stream) {
                    return Ok(Some(Arc::new(StreamTable {
                        engine: self.engine.clone(),
                        stream,
                        schema: view_schema(&arrow_schema(&schema)),
                    })));
                }
            }
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        (self.namespace != Namespace::Streams && self.tables.get(name).is_some())
            || (self.namespace != Namespace::Tables
                && self
                    .stream_named(name)
                    .is_some_and(|s| self.engine.store().schemas().get(&s).is_some()))
    }
}

/// One stream as a table.
pub(crate) struct StreamTable {
    engine: Arc<Engine>,
    stream: String,
    schema: SchemaRef,
}

impl std::fmt::Debug for TallySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TallySchema({:?})", self.namespace)
    }
}

impl std::fmt::Debug for StreamTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamTable({})", self.stream)
    }
}

impl StreamTable {
    /// A Parquet scan of `files` (path or key, size) in the object store at
    /// `url`, spread over the session's partitions by size; `None` when
    /// there are no files.
    async fn parquet_scan(
        &self,
        state: &dyn Session,
        url: ObjectStoreUrl,
        mut files: Vec<(String, u64)>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if files.is_empty() {
            return Ok(None);
        }
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        let mut sizes = vec![0u64; partitions];
        files.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        for (path, bytes) in files {
            // Largest first into the lightest group: balanced work.
            let (i, _) = sizes
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| **b)
                .unwrap_or((0, &0));
            sizes[i] += bytes;
            groups[i].push(PartitionedFile::new(path, bytes));
        }
        let mut source = ParquetSource::new(self.schema.clone());
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let conf = FileScanConfigBuilder::new(url, Arc::new(source))
            .with_file_groups(
                groups
                    .into_iter()
                    .filter(|g| !g.is_empty())
                    .map(FileGroup::new)
                    .collect(),
            )
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        Ok(Some(format.create_physical_plan(state, conf).await?))
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (lo, hi) = ts_bounds(filters);
        let snapshot = self
            .engine
            .store()
            .snapshot(&self.stream, lo, hi)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let Some(snapshot) = snapshot else {
            return Ok(Arc::new(EmptyExec::new(projected)));
        };
        let partitions = state.config().target_partitions().max(1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let local: Vec<(String, u64)> = snapshot
            .segments
            .iter()
            .map(|s| (s.path.to_string_lossy().to_string(), s.meta.bytes))
            .collect();
        if let Some(plan) = self
            .parquet_scan(
                state,
                ObjectStoreUrl::local_filesystem(),
                local,
                projection,
                filters,
                limit,
            )
            .await?
        {
            inputs.push(plan);
            if let Some(pins) = state.config().get_extension::<Pins>() {
                pins.0.lock().extend(snapshot.segments.iter().cloned());
            }
        }
        // Events retention removed from the data directory: read from the
        // archive (an archived object is never deleted while archive-only).
        if let Some(archive) = self.engine.archive() {
            let ids = snapshot.segments.iter().map(|s| s.meta.id).collect();
            let archived: Vec<(String, u64)> = archive
                .segments_for(&self.stream, lo, hi, &ids, &snapshot.retired)
                .into_iter()
                .map(|m| (m.path, m.bytes))
                .collect();
            let url = ObjectStoreUrl::parse(ARCHIVE_URL)?;
            if let Some(plan) = self
                .parquet_scan(state, url, archived, projection, filters, limit)
                .await?
            {
                inputs.push(plan);
            }
        }

        if !snapshot.memory.is_empty() {
            let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
            for (i, b) in snapshot.memory.iter().enumerate() {
                parts[i % partitions].push(align(&self.schema, b)?);
            }
            parts.retain(|p| !p.is_empty());
            inputs.push(MemorySourceConfig::try_new_exec(
                &parts,
                self.schema.clone(),
                projection.cloned(),
            )?);
        }

        match inputs.len() {
            0 => Ok(Arc::new(EmptyExec::new(projected))),
            _ => UnionExec::try_new(inputs),
        }
    }
}

/// A stream's schema as queries see it: strings as `Utf8View`. The Parquet
/// reader then decodes dictionary pages into views of the dictionary (no
/// per-row copy of the bytes), and grouping, comparison and filtering run
/// on DataFusion's view kernels; that is several times less work on
/// low-cardinality dimensions than materializing plain strings.
pub(crate) fn view_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with exactly the columns of `schema`, in its types (missing ones
/// as nulls, columns added after the table was planned left out).
fn align(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) if batch.column(i).data_type() == f.data_type() => Ok(batch.column(i).clone()),
            Ok(i) => Ok(cast(batch.column(i), f.data_type())?),
            Err(_) => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The range of `ts` (µs, inclusive) the conjunction of `filters` allows;
/// `None` on a side means unbounded. Conservative: it may allow more than
/// the filters do, never less.
pub(crate) fn ts_bounds(filters: &[Expr]) -> (Option<i64>, Option<i64>) {
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    let mut tighten_lo = |v: i64| lo = Some(lo.map_or(v, |l| l.max(v)));
    let mut tighten_hi = |v: i64| hi = Some(hi.map_or(v, |h| h.min(v)));
    let mut stack: Vec<&Expr> = filters.iter().collect();
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    stack.push(left);
                    stack.push(right);
                    continue;
                }
                let (op, lit) = match (is_ts(left), is_ts(right)) {
                    (true, false) => (*op, timestamp_us(right)),
                    (false, true) => (op.swap().unwrap_or(*op), timestamp_us(left)),
                    _ => continue,
                };
                let Some((floor, ceil)) = lit else { continue };
                match op {
                    Operator::Gt | Operator::GtEq => tighten_lo(floor),
                    Operator::Lt | Operator::LtEq => tighten_hi(ceil),
                    Operator::Eq => {
                        tighten_lo(floor);
                        tighten_hi(ceil);
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_ts(expr) => {
                if let Some((floor, _)) = timestamp_us(low) {
                    tighten_lo(floor);
                }
                if let Some((_, ceil)) = timestamp_us(high) {
                    tighten_hi(ceil);
                }
            }
            _ => {}
        }
    }
    (lo, hi)
}

fn is_ts(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == "ts")
}

/// A timestamp literal in µs, rounded down and up (they differ only for
/// nanosecond literals).
fn timestamp_us(e: &Expr) -> Option<(i64, i64)> {
    let Expr::Literal(v, _) = e else { return None };
    let (floor, ceil) = match v {
        ScalarValue::TimestampSecond(Some(s), _) => {
            (s.checked_mul(1_000_000)?, s.checked_mul(1_000_000)?)
        }
        ScalarValue::TimestampMillisecond(Some(ms), _) => {
            (ms.checked_mul(1000)?, ms.checked_mul(1000)?)
        }
        ScalarValue::TimestampMicrosecond(Some(us), _) => (*us, *us),
        ScalarValue::TimestampNanosecond(Some(ns), _) => (
            ns.div_euclid(1000),
            ns.div_euclid(1000) + i64::from(ns.rem_euclid(1000) != 0),
        ),
        _ => return None,
    };
    Some((floor, ceil))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_from_comparisons_between_and_conjunctions() {
        let f = vec![col("ts").gt_eq(ts(10)).and(col("ts").lt(ts(20)))];
        assert_eq!(ts_bounds(&f), (Some(10), Some(20)));
        let f = vec![ts(15).lt_eq(col("ts")), col("ts").between(ts(5), ts(30))];
        assert_eq!(ts_bounds(&f), (Some(15), Some(30)));
        let f = vec![col("ts").eq(ts(7)), col("x").gt(lit(1))];
        assert_eq!(ts_bounds(&f), (Some(7), Some(7)));
        // An OR cannot bound the range.
        let f = vec![col("ts").gt(ts(10)).or(col("ts").lt(ts(0)))];
        assert_eq!(ts_bounds(&f), (None, None));
        let ns = lit(ScalarValue::TimestampNanosecond(Some(1500), None));
        assert_eq!(ts_bounds(&[col("ts").lt(ns)]), (None, Some(2)));
    }
}
