//! Query: answers questions about streams, in SQL and through the
//! time-series API.
//!
//! SQL runs on DataFusion over [`provider::StreamTable`]s (segments plus the
//! in-memory tail) and dimension tables ([`tables`]). The time-series API
//! ([`timeseries`]) compiles a structured request into SQL over the same
//! tables and shapes the answer for charts.
//!
//! Isolation: queries execute on their own thread pool (a separate tokio
//! runtime whose threads run at a lower CPU priority), so a heavy query
//! competes with ingestion only for the CPU the scheduler gives it, never
//! for the ingest path's threads or queues. Each query has a timeout, a
//! memory limit (DataFusion's memory pool; operators that exceed it fail
//! rather than spill) and a result-size limit, and at most
//! `max_concurrent` queries run at once; past that the caller is told to
//! retry (429). Answers are cached ([`cache`]) by query and data version.

mod cache;
mod error;
mod functions;
pub mod jobs;
pub mod limits;
mod metrics;
mod provider;
mod rollup_tables;
mod settings;
mod table_log;
pub mod tables;
pub mod timeseries;

pub use error::{QueryError, Result};
pub use limits::SqlLimits;
pub use metrics::init as init_metrics;
pub use settings::QuerySettings;
pub use tables::{DimTable, DimTables, TableFormat, TableSpec};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use cache::Cache;
use datafusion::catalog::SchemaProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;
use metrics::{CACHE_LOOKUPS, QUERY_SECONDS, REJECTED, RUNNING};
use provider::{Namespace, Pins, TallySchema};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_engine::Engine;
use tokio::sync::Semaphore;

/// Limits and sizes of the query stage.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Threads executing queries.
    pub workers: usize,
    /// Queries executing at once; more are refused with 429.
    pub max_concurrent: usize,
    /// A query running longer is stopped.
    pub timeout: Duration,
    /// Memory one query's operators (aggregation, sort, join) may hold.
    pub memory_limit: usize,
    /// Rows one answer may have.
    pub max_result_rows: usize,
    /// Bytes of answers the result cache keeps.
    pub cache_bytes: usize,
    /// Scheduled jobs ([`jobs`]); their tables live in `DATA/jobs`.
    pub jobs: Vec<jobs::JobDef>,
    /// The size and shape a SQL statement may have ([`limits`]).
    pub sql_limits: SqlLimits,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QuerySettings::default().options()
    }
}

/// The rows of one SQL answer.
#[derive(Debug)]
pub struct SqlAnswer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
}

impl SqlAnswer {
    fn bytes(&self) -> usize {
        self.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }
}

/// The query stage of a running server.
pub struct QueryEngine {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    engine: Arc<Engine>,
    tables: Arc<DimTables>,
    jobs: Arc<jobs::Jobs>,
    base: SessionState,
    opts: QueryOptions,
    permits: Arc<Semaphore>,
    sql_cache: Cache<SqlAnswer>,
    ts_cache: Cache<timeseries::Answer>,
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        // Dropping a runtime inside another one must not block.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl QueryEngine {
    /// Builds the query stage over `engine`; dimension tables live in
    /// `DATA/tables`.
    pub fn new(engine: Arc<Engine>, opts: QueryOptions) -> Result<QueryEngine> {
        let data_dir = &engine.options().data_dir;
        let tables = Arc::new(DimTables::open(data_dir.join("tables"))?);
        let jobs = Arc::new(jobs::Jobs::open(&data_dir.join("jobs"), &opts.jobs)?);
        if engine.is_cluster() {
            // Windows and dimension tables are committed through the log:
            // every node keeps the same ones.
            jobs::follow(&engine, &jobs)?;
            table_log::follow(&engine, &tables)?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.workers.max(1))
            .thread_name("tally-query")
            // Statements are parsed, checked and planned here: see `limits`.
            .thread_stack_size(limits::stack_bytes(&opts.sql_limits))
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query pool: {e}")))?;
        let base = base_state(&engine, &tables, &jobs, &opts)?;
        Ok(QueryEngine {
            inner: Arc::new(Inner {
                engine,
                tables,
                jobs,
                base,
                permits: Arc::new(Semaphore::new(opts.max_concurrent.max(1))),
                sql_cache: Cache::new(opts.cache_bytes / 2),
                ts_cache: Cache::new(opts.cache_bytes / 2),
                opts,
            }),
            runtime: Some(runtime),
        })
    }

    pub fn tables(&self) -> &Arc<DimTables> {
        &self.inner.tables
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Runs one read-only SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<Arc<SqlAnswer>> {
        let t = Instant::now();
        let result = self.sql_inner(sql).await;
        observe("sql", &result, t);
        result.map(|(a, _)| a)
    }

    async fn sql_inner(&self, sql: &str) -> Result<(Arc<SqlAnswer>, bool)> {
        let inner = &self.inner;
        limits::check_text(sql, &inner.opts.sql_limits)?;
        // Parsed and checked on the query pool, whose threads' stacks hold
        // the deepest tree a statement within the size limit can make
        // (walking or dropping it recurses once per level).
        let (statement, key) = {
            let inner = inner.clone();
            let sql = sql.to_string();
            self.on_pool(async move { inner.prepare(&sql) }).await?
        };
        if let Some(k) = &key {
            if let Some(hit) = inner.sql_cache.get(k) {
                CACHE_LOOKUPS.with_label_values(&["sql", "hit"]).inc();
                return Ok((hit, true));
            }
            CACHE_LOOKUPS.with_label_values(&["sql", "miss"]).inc();
        }
        let answer = self
            .run(move |state| async move { execute_statement(state, statement).await })
            .await?;
        let answer = Arc::new(answer);
        if let Some(k) = key {
            inner.sql_cache.put(k, answer.clone(), answer.bytes());
        }
        Ok((answer, false))
    }

    /// Runs a short piece of work (no query slot taken) on the query pool.
    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| QueryError::Internal("query pool stopped".into()))?;
        rt.spawn(work)
            .await
            .map_err(|e| QueryError::Internal(format!("query task failed: {e}")))?
    }

    /// Runs `work` on the query pool with a fresh per-query session (its own
    /// memory pool and segment pins), under the concurrency limit and the
    /// timeout.
    async fn run<F, Fut, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce(QueryState) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let inner = &self.inner;
        let permit = inner.permits.clone().try_acquire_owned().map_err(|_| {
            REJECTED.with_label_values(&["busy"]).inc();
            QueryError::Busy {
                limit: inner.opts.max_concurrent,
                retry_after: Duration::from_secs(1),
            }
        })?;
        let state = inner.query_state();
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| QueryError::Internal("query pool stopped".into()))?;
        let handle = rt.spawn(async move {
            // Dropped when the query ends or is cancelled: the slot and the
            // gauge are released either way.
            let _running = Running::start(permit);
            work(state).await
        });
        let abort = handle.abort_handle();
        match tokio::time::timeout(inner.opts.timeout, handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(QueryError::Internal(format!("query task failed: {join}"))),
            Err(_) => {
                abort.abort();
                REJECTED.with_label_values(&["timeout"]).inc();
                Err(QueryError::Limit {
                    limit: "timeout",
                    message: format!(
                        "query exceeded the time limit of {} s",
                        inner.opts.timeout.as_secs_f64()
                    ),
                })
            }
        }
    }
}

/// A running query's slot.
struct Running(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Running {
    fn start(permit: tokio::sync::OwnedSemaphorePermit) -> Running {
        RUNNING.inc();
        Running(permit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.dec();
    }
}

/// One query's session and what it keeps alive while it runs.
pub(crate) struct QueryState {
    pub session: SessionState,
    pub pins: Arc<Pins>,
    pub max_rows: usize,
}

impl Inner {
    /// Parses one statement, checks it against the limits, and makes its
    /// cache key (`None` when its answer must not be cached).
    fn prepare(&self, sql: &str) -> Result<(Statement, Option<String>)> {
        let statement = parse_one(sql)?;
        limits::check(&statement, &self.opts.sql_limits)?;
        let normalized = statement.to_string();
        if is_volatile(&normalized) {
            CACHE_LOOKUPS
                .with_label_values(&["sql", "uncacheable"])
                .inc();
            return Ok((statement, None));
        }
        let refs = self.base.resolve_table_references(&statement)?;
        // Table functions (tree_descendants) read dimension tables the
        // statement does not name: any table change is a new key.
        let mut key = format!("{normalized}\u{1}tables={}", self.tables.generation());
        for r in refs {
            key.push('\u{1}');
            key.push_str(&r.to_string());
            key.push('=');
            key.push_str(&self.version_of(r.schema(), r.table()));
        }
        Ok((statement, Some(key)))
    }

    fn query_state(&self) -> QueryState {
        let pins = Arc::new(Pins::default());
        let base_rt = self.base.runtime_env();
        let runtime = Arc::new(RuntimeEnv {
            memory_pool: Arc::new(GreedyMemoryPool::new(self.opts.memory_limit)),
            disk_manager: base_rt.disk_manager.clone(),
            cache_manager: base_rt.cache_manager.clone(),
            object_store_registry: base_rt.object_store_registry.clone(),
        });
        let mut session = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_runtime_env(runtime)
            .build();
        session.config_mut().set_extension(pins.clone());
        QueryState {
            session,
            pins,
            max_rows: self.opts.max_result_rows,
        }
    }

    /// The data version of a table a query names (0 for unknown names; the
    /// query then fails and nothing is cached).
    fn version_of(&self, schema: Option<&str>, table: &str) -> String {
        if schema == Some("rollups") {
            return rollup_tables::version(&self.engine, table).unwrap_or_default();
        }
        if schema == Some("jobs") {
            return self.jobs.get(table).map_or(0, |j| j.version()).to_string();
        }
        let dim = || self.tables.get(table).map(|t| t.version);
        let stream = || {
            let store = self.engine.store();
            // A measurement's name stands for its encoded stream.
            let name = match store.schemas().get(table) {
                Some(_) => table.to_string(),
                None => tally_ingest::stream_for_measurement(table).ok()?,
            };
            store
                .schemas()
                .get(&name)
                .map(|_| store.data_version(&name, None, None))
        };
        let v = match schema {
            Some("tables") => dim(),
            Some("streams") => stream(),
            _ => dim().or_else(stream),
        };
        v.unwrap_or(0).to_string()
    }
}

fn observe<T>(api: &str, result: &Result<(T, bool)>, t: Instant) {
    let outcome = match result {
        Ok((_, true)) => "cached",
        Ok((_, false)) => "ok",
        Err(QueryError::Busy { .. }) => "busy",
        Err(_) => "error",
    };
    QUERY_SECONDS
        .with_label_values(&[api, outcome])
        .observe(t.elapsed().as_secs_f64());
}

/// The session every query starts from: catalogs, functions, options.
fn base_state(
    engine: &Arc<Engine>,
    tables: &Arc<DimTables>,
    jobs: &Arc<jobs::Jobs>,
    opts: &QueryOptions,
) -> Result<SessionState> {
    let mut config = SessionConfig::new()
        .with_target_partitions(opts.workers.max(1))
        .with_information_schema(true)
        .with_batch_size(8192);
    let o = config.options_mut();
    // Filters prune row groups and pages by statistics; rows are filtered
    // after decoding. Late materialization (pushdown_filters) measured
    // slower on the query benchmark: its row selections cost more than the
    // decoding they save unless a filter is very selective.
    o.execution.parquet.pushdown_filters = false;
    // Segments carry no bloom filters; do not look for them per row group.
    o.execution.parquet.bloom_filter_on_read = false;
    o.sql_parser.dialect = datafusion::config::Dialect::Generic;
    let runtime = RuntimeEnvBuilder::new()
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if let Some(archive) = engine.archive() {
        let url = url::Url::parse(provider::ARCHIVE_URL)
            .map_err(|e| QueryError::Internal(format!("archive URL: {e}")))?;
        ctx.register_object_store(&url, archive.object_store());
    }
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| QueryError::Internal("no default catalog".into()))?;
    for (name, namespace) in [
        ("public", Namespace::Default),
        ("streams", Namespace::Streams),
        ("tables", Namespace::Tables),
    ] {
        let schema: Arc<dyn SchemaProvider> = Arc::new(TallySchema {
            engine: engine.clone(),
            tables: tables.clone(),
            namespace,
        });
        catalog.register_schema(name, schema)?;
    }
    catalog.register_schema(
        "rollups",
        Arc::new(rollup_tables::RollupSchema {
            engine: engine.clone(),
        }),
    )?;
    catalog.register_schema("jobs", Arc::new(jobs::JobSchema { jobs: jobs.clone() }))?;
    ctx.register_udtf(
        "tree_descendants",
        Arc::new(tables::TreeDescendants {
            tables: tables.clone(),
        }),
    );
    ctx.register_udf(timeseries::bucket_udf());
    for f in functions::all() {
        ctx.register_udf(f);
    }
    Ok(ctx.state())
}

fn parse_one(sql: &str) -> Result<Statement> {
    let mut statements =
        datafusion::sql::parser::DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
            .map_err(QueryError::from)?;
    match statements.len() {
        1 => Ok(statements.pop_front().expect("one statement")),
        0 => Err(QueryError::Invalid {
            message: "no SQL statement given".into(),
        }),
        n => Err(QueryError::Invalid {
            message: format!("one statement per request, got {n}"),
        }),
    }
}

/// Whether a normalized statement's answer depends on when or how often it
/// runs (so it must not be cached).
fn is_volatile(normalized: &str) -> bool {
    let s = normalized.to_ascii_lowercase();
    [
        "now(",
        "current_date",
        "current_time",
        "random(",
        "uuid(",
        "to_timestamp_now",
    ]
    .iter()
    .any(|f| s.contains(f))
}

/// Plans and runs one statement, read-only.
async fn execute_statement(q: QueryState, statement: Statement) -> Result<SqlAnswer> {
    let plan = plan_read_only(&q, statement).await?;
    collect_plan(&q, plan).await
}

/// Plans one statement, refusing any that would change something.
pub(crate) async fn plan_read_only(
    q: &QueryState,
    statement: Statement,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let plan = q.session.statement_to_plan(statement).await?;
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| QueryError::NotAllowed {
            message: e.strip_backtrace(),
        })?;
    Ok(plan)
}

/// Executes a logical plan and gathers its rows, up to the row limit.
pub(crate) async fn collect_plan(
    q: &QueryState,
    plan: datafusion::logical_expr::LogicalPlan,
) -> Result<SqlAnswer> {
    let df = datafusion::dataframe::DataFrame::new(q.session.clone(), plan);
    let mut stream = df.execute_stream().await?;
    let schema = plain_schema(&stream.schema());
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > q.max_rows {
            REJECTED.with_label_values(&["rows"]).inc();
            return Err(QueryError::Limit {
                limit: "rows",
                message: format!(
                    "the answer has more than {} rows; add a LIMIT or aggregate",
                    q.max_rows
                ),
            });
        }
        batches.push(plain_batch(&schema, batch)?);
    }
    // The segments this query read may be deleted from here on.
    q.pins.0.lock().clear();
    Ok(SqlAnswer {
        schema,
        batches,
        rows,
    })
}

/// The answer's schema with view types as plain strings and binaries:
/// views are how queries read, plain types are what every client reads.
fn plain_schema(schema: &arrow::datatypes::Schema) -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast to `schema` where its columns are views.
fn plain_batch(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => arrow::compute::cast(c, f.data_type()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(DataFusionError::from)?;
    Ok(RecordBatch::try_new(schema.clone(), columns).map_err(DataFusionError::from)?)
}

/// Query worker threads run at a lower CPU priority than ingestion's.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with who = 0 changes only the calling thread
    // (Linux keeps nice values per thread); failure leaves it unchanged.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 5);
    }
}
