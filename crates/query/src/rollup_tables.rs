//! Rollups as SQL tables: `rollups.<name>` has one row per (interval,
//! bucket, group) with each aggregate's value in that cell.
//!
//! Columns: `grain` (the interval: `minute`, `hour`, `day`), `bucket` (the bucket's
//! start, UTC), the group-by dimensions, then one column per aggregate named
//! as in the definition (`count`, `sum(v)`, `uniq(user)`, …); a `quantiles(f)`
//! aggregate gives `p50(f)`, `p90(f)`, `p95(f)` and `p99(f)`. Counts, sums,
//! minimums and maximums add up across rows as SQL expects; `avg`, `uniq`
//! and the quantiles are per cell: merging them across buckets or groups
//! needs the sketches, which `/v1/query` merges.
//!
//! A table is read from the rollup's state as of the scan, like the
//! time-series API's rollup answers; a rollup still being built for the
//! first time refuses to be read.

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;
use tally_engine::Engine;
use tally_rollup::{Aggregate, RollupDef};

/// Ranks of the quantile columns of a `quantiles(f)` aggregate.
const QUANTILES: [(u32, f64); 4] = [(50, 0.5), (90, 0.9), (95, 0.95), (99, 0.99)];

/// The `rollups` schema.
pub(crate) struct RollupSchema {
    pub engine: Arc<Engine>,
}

impl std::fmt::Debug for RollupSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RollupSchema")
    }
}

#[async_trait]
impl SchemaProvider for RollupSchema {
    fn table_names(&self) -> Vec<String> {
        self.engine.rollups().names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(entry) = self.engine.rollups().get(name) else {
            return Ok(None);
        };
        let def = entry.read().rollup.def().clone();
        Ok(Some(Arc::new(RollupTable {
            engine: self.engine.clone(),
            schema: table_schema(&def),
            name: name.to_string(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.engine.rollups().get(name).is_some()
    }
}

/// The version of a rollup's table for the result cache: it changes with
/// every record applied and every rebuild, redefinition or retention pass.
pub(crate) fn version(engine: &Engine, name: &str) -> Option<String> {
    let rollups = engine.rollups();
    let entry = rollups.get(name)?;
    let lsn = entry.read().lsn;
    Some(format!("{}.{lsn}", rollups.generation()))
}

fn table_schema(def: &RollupDef) -> SchemaRef {
    let mut fields = vec![
        Field::new("grain", DataType::Utf8, false),
        Field::new(
            "bucket",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(
        def.group_by
            .iter()
            .map(|d| Field::new(d, DataType::Utf8, true)),
    );
    for a in &def.aggregates {
        match a {
            a if a.whole() => fields.push(Field::new(a.to_string(), DataType::Int64, false)),
            Aggregate::Quantiles(f) => {
                for (p, _) in QUANTILES {
                    fields.push(Field::new(format!("p{p}({f})"), DataType::Float64, true));
                }
            }
            _ => fields.push(Field::new(a.to_string(), DataType::Float64, true)),
        }
    }
    Arc::new(Schema::new(fields))
}

struct RollupTable {
    engine: Arc<Engine>,
    name: String,
    schema: SchemaRef,
}

impl std::fmt::Debug for RollupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RollupTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for RollupTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let gone = || DataFusionError::Plan(format!("rollup {} no longer exists", self.name));
        let entry = self.engine.rollups().get(&self.name).ok_or_else(gone)?;
        let entry = entry.read();
        if !entry.complete {
            return Err(DataFusionError::Plan(format!(
                "rollup {} is still being built; read it when GET /v1/rollups/{} says \"ready\"",
                self.name, self.name
            )));
        }
        let rollup = &entry.rollup;
        let def = rollup.def();
        if table_schema(def) != self.schema {
            // Redefined between planning and scanning.
            return Err(gone());
        }
        let mut grain_col = StringBuilder::new();
        let mut bucket = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut dims: Vec<StringBuilder> =
            def.group_by.iter().map(|_| StringBuilder::new()).collect();
        let mut ints: Vec<Int64Builder> = Vec::new();
        let mut floats: Vec<Float64Builder> = Vec::new();
        // Per aggregate: where its column(s) go.
        enum Out {
            Int(usize),
            Float(usize),
            Quantiles(usize),
        }
        let outs: Vec<Out> = def
            .aggregates
            .iter()
            .map(|a| match a {
                a if a.whole() => {
                    ints.push(Int64Builder::new());
                    Out::Int(ints.len() - 1)
                }
                Aggregate::Quantiles(_) => {
                    let first = floats.len();
                    floats.extend(QUANTILES.iter().map(|_| Float64Builder::new()));
                    Out::Quantiles(first)
                }
                _ => {
                    floats.push(Float64Builder::new());
                    Out::Float(floats.len() - 1)
                }
            })
            .collect();
        for grain in def.grains() {
            for (start, key, cell) in rollup.cells(grain, i64::MIN, i64::MAX) {
                grain_col.append_value(grain.as_str());
                bucket.append_value(start);
                for (b, v) in dims.iter_mut().zip(key) {
                    b.append_option(v.as_deref());
                }
                for ((a, state), out) in def.aggregates.iter().zip(&cell.states).zip(&outs) {
                    match *out {
                        Out::Int(i) => {
                            ints[i].append_value(state.value(a, 0.0).unwrap_or(0.0) as i64)
                        }
                        Out::Float(i) => floats[i].append_option(state.value(a, 0.0)),
                        Out::Quantiles(first) => {
                            for (j, (_, q)) in QUANTILES.iter().enumerate() {
                                floats[first + j].append_option(state.value(a, *q));
                            }
                        }
                    }
                }
            }
        }
        drop(entry);
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(grain_col.finish()), Arc::new(bucket.finish())];
        columns.extend(dims.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        for out in &outs {
            match *out {
                Out::Int(i) => columns.push(Arc::new(ints[i].finish())),
                Out::Float(i) => columns.push(Arc::new(floats[i].finish())),
                Out::Quantiles(first) => {
                    for b in &mut floats[first..first + QUANTILES.len()] {
                        columns.push(Arc::new(b.finish()));
                    }
                }
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
