//! Job tables in SQL: the `jobs` schema, one table per configured job,
//! every window's rows in the newest run's columns.

use super::run::window_schema;
use super::{rfc3339, Job, Jobs, WINDOW_COLUMNS};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use std::sync::Arc;

impl Job {
    /// The table: its schema (the newest run's, values nullable) and every
    /// window's rows in it.
    fn table(&self) -> datafusion::error::Result<(SchemaRef, Vec<RecordBatch>)> {
        let r = self.rows.read();
        let schema = table_schema(
            r.schema
                .as_deref()
                .unwrap_or(&window_schema(&Schema::empty())),
        );
        let mut out = Vec::new();
        for (start, batches) in &r.windows {
            for b in batches {
                out.push(conform(&schema, b).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "job {}: the rows of window {} do not fit the job's current columns ({e}); run that window again",
                        self.def.name,
                        rfc3339(*start)
                    ))
                })?);
            }
        }
        Ok((schema, out))
    }
}

/// What a job table shows: a run's schema with every value nullable, so
/// windows written by an older version of the SQL fit it.
fn table_schema(run: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        run.fields()
            .iter()
            .map(|f| {
                let window = WINDOW_COLUMNS.contains(&f.name().as_str());
                f.as_ref().clone().with_nullable(!window)
            })
            .collect::<Vec<_>>(),
    ))
}

/// `b` in `schema`: columns by name, cast where the type changed, null
/// where `b` lacks one.
fn conform(schema: &SchemaRef, b: &RecordBatch) -> std::result::Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match b.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type())
                .map_err(|e| format!("column {}: {e}", f.name())),
            None => Ok(arrow::array::new_null_array(f.data_type(), b.num_rows())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// The `jobs` schema: one table per configured job.
pub(crate) struct JobSchema {
    pub jobs: Arc<Jobs>,
}

impl std::fmt::Debug for JobSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobSchema")
    }
}

#[async_trait]
impl SchemaProvider for JobSchema {
    fn table_names(&self) -> Vec<String> {
        self.jobs.jobs.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        let Some(job) = self.jobs.get(name) else {
            return Ok(None);
        };
        let (schema, batches) = job.table()?;
        Ok(Some(Arc::new(MemTable::try_new(schema, vec![batches])?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.jobs.get(name).is_some()
    }
}
