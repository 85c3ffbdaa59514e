//! Scheduled jobs: named SQL run over consecutive time windows, each
//! window's answer kept as that window's rows of the job's table,
//! `jobs.<name>` (docs/jobs.md).
//!
//! A job's windows are `every` long and aligned to multiples of it from the
//! Unix epoch (UTC), so an hourly job covers whole hours. A window runs once
//! it has ended and `delay` has passed (time for late events); the SQL reads
//! its bounds as `$window_start` and `$window_end` (UTC timestamps). Windows
//! run in order and a failed one is retried before any later one, so the end
//! of the newest completed window says how far the job has got; its **lag**
//! is how far that end trails the clock.
//!
//! A window's rows are one Parquet file, written aside, made durable and
//! renamed over the previous run's: running a window again replaces its rows
//! whole and never adds to them, and a crash leaves either the old rows or
//! the new ones. Job tables are derived data, like rollups: the events they
//! were computed from are still there to compute them again.

use crate::error::{QueryError, Result};
use crate::{collect_plan, parse_one, plan_read_only, QueryEngine};
use arrow::array::{ArrayRef, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use parking_lot::{Mutex, RwLock};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The columns every job table starts with.
pub const WINDOW_COLUMNS: [&str; 2] = ["window_start", "window_end"];
/// Runs a job remembers (its status shows them, newest first).
const HISTORY: usize = 100;
const MICROS: i64 = 1_000_000;

/// A job as written in the config file (`[[job]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    /// One read-only statement; `$window_start` and `$window_end` are the
    /// window's bounds.
    pub sql: String,
    /// Window length: "1h", "15m", "1d" (whole seconds, 1 s to 7 days).
    pub every: String,
    /// How long after a window ends it runs, so late events count: "2m".
    #[serde(default)]
    pub delay: Option<String>,
    /// The first window (RFC 3339, a window boundary); by default the last
    /// window complete when the job is first seen.
    #[serde(default)]
    pub start: Option<String>,
}

/// A checked job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    pub name: String,
    pub sql: String,
    /// Window length, µs.
    pub every: i64,
    /// Wait after a window's end, µs.
    pub delay: i64,
    /// First window's start, µs since the epoch.
    pub start: Option<i64>,
}

impl JobSpec {
    /// Checks names, durations, the start and that the SQL parses.
    pub fn into_def(self) -> Result<JobDef> {
        let invalid = |m: String| QueryError::Invalid {
            message: format!("job {:?}: {m}", self.name),
        };
        tally_ingest::validate_stream_name(&self.name)
            .map_err(|m| invalid(format!("name: {m}")))?;
        let every = parse_duration("every", &self.every).map_err(invalid)?;
        if !(MICROS..=7 * 86_400 * MICROS).contains(&every) {
            return Err(invalid(format!(
                "every = {:?}: windows are 1 s to 7 days long",
                self.every
            )));
        }
        let delay = match &self.delay {
            Some(d) => parse_duration("delay", d).map_err(invalid)?,
            None => 0,
        };
        let start = match &self.start {
            None => None,
            Some(s) => {
                let t = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| invalid(format!("start = {s:?}: {e}")))?
                    .timestamp_micros();
                if t.rem_euclid(every) != 0 {
                    return Err(invalid(format!(
                        "start = {s:?} is not a window boundary: windows of {} begin at multiples of it from 1970-01-01T00:00:00Z",
                        self.every
                    )));
                }
                Some(t)
            }
        };
        parse_one(&self.sql).map_err(|e| invalid(format!("sql: {e}")))?;
        Ok(JobDef {
            name: self.name,
            sql: self.sql,
            every,
            delay,
            start,
        })
    }
}

fn parse_duration(what: &str, s: &str) -> std::result::Result<i64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{what} = {s:?}: {e} (write \"30s\", \"15m\", \"1h\", \"1d\")"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{what} = {s:?}: use whole seconds"));
    }
    i64::try_from(d.as_micros()).map_err(|_| format!("{what} = {s:?}: too long"))
}

/// What started a run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
}

/// One run of one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub window_start: i64,
    pub window_end: i64,
    /// Wall clock, µs.
    pub started_at: i64,
    pub duration_ms: f64,
    /// Rows written; `None` when the run failed.
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub trigger: Trigger,
}

impl RunRecord {
    fn json(&self) -> Value {
        json!({
            "window_start": rfc3339(self.window_start),
            "window_end": rfc3339(self.window_end),
            "started_at": rfc3339(self.started_at),
            "duration_ms": self.duration_ms,
            "rows": self.rows,
            "error": self.error,
            "trigger": self.trigger,
            "ok": self.error.is_none(),
        })
    }
}

/// A job's progress, kept in `DATA/jobs/<name>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    /// The first window's start, fixed when the job is first seen.
    first_window: i64,
    /// The end of the newest window completed in order (windows before it
    /// have all run).
    done_until: Option<i64>,
    paused: bool,
    runs_ok: u64,
    runs_failed: u64,
    /// Wall clock of the last successful run, µs.
    last_success_at: Option<i64>,
    /// Newest first.
    history: VecDeque<RunRecord>,
}

impl Progress {
    /// The start of the next window the schedule runs.
    fn next_window(&self) -> i64 {
        self.done_until.unwrap_or(self.first_window)
    }
}

/// The rows a job has written, window by window.
#[derive(Debug, Default)]
struct Rows {
    /// Window start -> its rows (window columns included).
    windows: BTreeMap<i64, Vec<RecordBatch>>,
    /// The newest run's schema, which the table shows.
    schema: Option<SchemaRef>,
    count: u64,
}

/// One configured job.
#[derive(Debug)]
pub struct Job {
    pub def: JobDef,
    dir: PathBuf,
    rows: RwLock<Rows>,
    progress: Mutex<Progress>,
    /// Grows with every change of the table (the result cache's version).
    version: AtomicU64,
    /// One run of this job at a time.
    running: tokio::sync::Mutex<()>,
    /// The run under way, if any: (window start, started at).
    current: Mutex<Option<(i64, Instant)>>,
    /// Wakes the scheduler (pause, resume).
    pub(crate) wake: tokio::sync::Notify,
}

/// Every configured job of a data directory.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: BTreeMap<String, Arc<Job>>,
}

impl Jobs {
    /// Loads each job's windows and progress from `dir/<name>/`. Jobs on
    /// disk that the configuration no longer names are left there, unread.
    pub fn open(dir: &Path, defs: &[JobDef]) -> Result<Jobs> {
        let mut jobs = BTreeMap::new();
        for def in defs {
            if jobs.contains_key(&def.name) {
                return Err(QueryError::Invalid {
                    message: format!("job {:?} is defined twice", def.name),
                });
            }
            let job = Job::open(dir.join(&def.name), def.clone())?;
            jobs.insert(def.name.clone(), Arc::new(job));
        }
        Ok(Jobs { jobs })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Job>> {
        self.jobs.values()
    }

    /// Sets each job's gauges from its state now (lag grows between runs,
    /// so it is computed when read).
    pub fn export_metrics(&self) {
        let now = now_us();
        for job in self.jobs.values() {
            job.export_metrics(now);
        }
    }
}

impl Job {
    fn open(dir: PathBuf, def: JobDef) -> Result<Job> {
        let windows_dir = dir.join("windows");
        fs::create_dir_all(&windows_dir).map_err(|e| io_err(&windows_dir, e))?;
        let state_path = dir.join("state.json");
        let progress = match fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| QueryError::Internal(format!("{}: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let first_window = def.start.unwrap_or_else(|| {
                    // The last window complete now, so a new job has
                    // something to show once its delay has passed.
                    let edge = (now_us() - def.delay).div_euclid(def.every) * def.every;
                    edge - def.every
                });
                let p = Progress {
                    first_window,
                    done_until: None,
                    paused: false,
                    runs_ok: 0,
                    runs_failed: 0,
                    last_success_at: None,
                    history: VecDeque::new(),
                };
                write_atomically(
                    &state_path,
                    &serde_json::to_vec_pretty(&p).map_err(internal)?,
                )?;
                p
            }
            Err(e) => return Err(io_err(&state_path, e)),
        };
        let mut rows = Rows::default();
        let mut newest: Option<(i64, SchemaRef)> = None;
        for entry in fs::read_dir(&windows_dir).map_err(|e| io_err(&windows_dir, e))? {
            let entry = entry.map_err(|e| io_err(&windows_dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // A run that stopped before its rename.
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(start) = name
                .strip_suffix(".parquet")
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            let (schema, batches) = read_parquet(&path)?;
            if newest.as_ref().is_none_or(|(s, _)| start > *s) {
                newest = Some((start, schema));
            }
            rows.count += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            rows.windows.insert(start, batches);
        }
        // The newest window's schema stands for the job's latest SQL.
        rows.schema = newest.map(|(_, s)| s);
        Ok(Job {
            def,
            dir,
            rows: RwLock::new(rows),
            progress: Mutex::new(progress),
            version: AtomicU64::new(1),
            running: tokio::sync::Mutex::new(()),
            current: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The table's version for the result cache.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The next window the schedule runs and when it is due (µs), unless
    /// the job is paused.
    pub(crate) fn due(&self) -> Option<(i64, i64)> {
        let p = self.progress.lock();
        if p.paused {
            return None;
        }
        let start = p.next_window();
        Some((start, start + self.def.every + self.def.delay))
    }

    /// Pauses or resumes the schedule (kept across restarts).
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        let mut p = self.progress.lock();
        p.paused = paused;
        self.save(&p)?;
        drop(p);
        self.wake.notify_one();
        Ok(())
    }

    fn save(&self, p: &Progress) -> Result<()> {
        write_atomically(
            &self.dir.join("state.json"),
            &serde_json::to_vec_pretty(p).map_err(internal)?,
        )
    }

    /// The job as the API shows it.
    pub fn status_json(&self) -> Value {
        let now = now_us();
        let p = self.progress.lock().clone();
        let (windows, rows) = {
            let r = self.rows.read();
            (r.windows.len(), r.count)
        };
        let running = self.current.lock().map(|(w, t)| {
            json!({
                "window_start": rfc3339(w),
                "window_end": rfc3339(w + self.def.every),
                "running_ms": t.elapsed().as_secs_f64() * 1e3,
            })
        });
        let next = p.next_window();
        json!({
            "name": self.def.name,
            "sql": self.def.sql,
            "every_seconds": self.def.every / MICROS,
            "delay_seconds": self.def.delay / MICROS,
            "table": format!("jobs.{}", self.def.name),
            "paused": p.paused,
            "first_window": rfc3339(p.first_window),
            "completed_until": p.done_until.map(rfc3339),
            "next_window": {
                "window_start": rfc3339(next),
                "window_end": rfc3339(next + self.def.every),
                "due_at": rfc3339(next + self.def.every + self.def.delay),
            },
            "lag_seconds": lag_at(&p, now),
            "last_success_at": p.last_success_at.map(rfc3339),
            "runs_ok": p.runs_ok,
            "runs_failed": p.runs_failed,
            "last_run": p.history.front().map(RunRecord::json),
            "running": running,
            "windows": windows,
            "rows": rows,
            "history": p.history.iter().map(RunRecord::json).collect::<Vec<_>>(),
        })
    }

    fn export_metrics(&self, now: i64) {
        let name = self.def.name.as_str();
        let p = self.progress.lock();
        JOB_LAG.with_label_values(&[name]).set(lag_at(&p, now));
        if let Some(t) = p.last_success_at {
            JOB_LAST_SUCCESS
                .with_label_values(&[name])
                .set(t as f64 / MICROS as f64);
        }
        JOB_PAUSED.with_label_values(&[name]).set(p.paused as i64);
        JOB_WINDOW
            .with_label_values(&[name])
            .set(self.def.every as f64 / MICROS as f64);
        JOB_DELAY
            .with_label_values(&[name])
            .set(self.def.delay as f64 / MICROS as f64);
        drop(p);
        JOB_ROWS
            .with_label_values(&[name])
            .set(self.rows.read().count as i64);
    }

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

impl QueryEngine {
    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.inner.jobs
    }

    /// Runs job `name` over the window starting at `window_start` and
    /// replaces that window's rows with the answer. The window must have
    /// ended; a manual run may repeat any window already run, or run the
    /// next one.
    pub async fn run_job(
        &self,
        name: &str,
        window_start: i64,
        trigger: Trigger,
    ) -> Result<RunRecord> {
        let job = self
            .jobs()
            .get(name)
            .cloned()
            .ok_or_else(|| QueryError::NotFound {
                what: "job",
                name: name.to_string(),
            })?;
        let every = job.def.every;
        if window_start.rem_euclid(every) != 0 {
            return Err(QueryError::Invalid {
                message: format!(
                    "{} is not a window start of job {name}: its windows are {} s long from 1970-01-01T00:00:00Z",
                    rfc3339(window_start),
                    every / MICROS
                ),
            });
        }
        let window_end = window_start + every;
        if window_end > now_us() {
            return Err(QueryError::Invalid {
                message: format!(
                    "window {} of job {name} has not ended yet (it ends at {})",
                    rfc3339(window_start),
                    rfc3339(window_end)
                ),
            });
        }
        if trigger == Trigger::Manual {
            let next = job.progress.lock().next_window();
            if window_start > next {
                return Err(QueryError::Invalid {
                    message: format!(
                        "job {name} has not reached window {} yet: windows run in order, the next is {}",
                        rfc3339(window_start),
                        rfc3339(next)
                    ),
                });
            }
        }
        let _one = job.running.lock().await;
        if trigger == Trigger::Schedule && job.progress.lock().paused {
            // Paused while this run waited for the previous one.
            return Err(QueryError::Invalid {
                message: format!("job {name} is paused"),
            });
        }
        *job.current.lock() = Some((window_start, Instant::now()));
        let started_at = now_us();
        let t = Instant::now();
        let result = self.job_window(&job, window_start, window_end).await;
        *job.current.lock() = None;
        let duration = t.elapsed();
        let record = RunRecord {
            window_start,
            window_end,
            started_at,
            duration_ms: duration.as_secs_f64() * 1e3,
            rows: result.as_ref().ok().copied(),
            error: result.as_ref().err().map(|e| e.to_string()),
            trigger,
        };
        let name = job.def.name.as_str();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        JOB_RUNS.with_label_values(&[name, outcome]).inc();
        JOB_SECONDS
            .with_label_values(&[name])
            .observe(duration.as_secs_f64());
        JOB_LAST_DURATION
            .with_label_values(&[name])
            .set(duration.as_secs_f64());
        {
            let mut p = job.progress.lock();
            match &result {
                Ok(_) => {
                    p.runs_ok += 1;
                    p.last_success_at = Some(now_us());
                    if window_start == p.next_window() {
                        p.done_until = Some(window_end);
                    }
                }
                Err(_) => p.runs_failed += 1,
            }
            p.history.push_front(record.clone());
            p.history.truncate(HISTORY);
            job.save(&p)?;
        }
        match &result {
            Ok(rows) => {
                tracing::info!(job = name, window = %rfc3339(window_start), rows, ms = record.duration_ms, "job window done")
            }
            Err(e) => {
                tracing::warn!(job = name, window = %rfc3339(window_start), error = %e, "job window failed")
            }
        }
        result.map(|_| record)
    }

    /// Computes one window and stores its rows; the number of rows.
    async fn job_window(&self, job: &Arc<Job>, start: i64, end: i64) -> Result<u64> {
        let statement = parse_one(&job.def.sql)?;
        let ts = |us: i64| ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()));
        let params = vec![("window_start", ts(start)), ("window_end", ts(end))];
        let answer = self
            .run(move |q| async move {
                let plan = plan_read_only(&q, statement).await?;
                let plan = plan.with_param_values(params)?;
                collect_plan(&q, plan).await
            })
            .await?;
        for f in answer.schema.fields() {
            if WINDOW_COLUMNS.contains(&f.name().as_str()) {
                return Err(QueryError::Invalid {
                    message: format!(
                        "job {}: the answer has a column named {}; job tables add window_start and window_end themselves, name it otherwise",
                        job.def.name,
                        f.name()
                    ),
                });
            }
        }
        let schema = window_schema(&answer.schema);
        let batches = answer
            .batches
            .iter()
            .map(|b| with_window(&schema, b, start, end))
            .collect::<Result<Vec<_>>>()?;
        let rows = answer.rows as u64;
        let job = job.clone();
        tokio::task::spawn_blocking(move || job.replace_window(start, schema, batches))
            .await
            .map_err(|e| QueryError::Internal(format!("writing a job window: {e}")))??;
        Ok(rows)
    }
}

impl Job {
    /// Makes `batches` window `start`'s rows, durably, then visible.
    fn replace_window(
        &self,
        start: i64,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        let dir = self.dir.join("windows");
        let path = dir.join(format!("{start}.parquet"));
        let tmp = dir.join(format!("{start}.parquet.tmp"));
        let write = || -> Result<()> {
            let f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
            let mut w = ArrowWriter::try_new(f, schema.clone(), None).map_err(internal)?;
            for b in &batches {
                w.write(b).map_err(internal)?;
            }
            let f = w.into_inner().map_err(internal)?;
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(&dir, e))
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let mut r = self.rows.write();
        let added: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let removed: u64 = r
            .windows
            .insert(start, batches)
            .map_or(0, |old| old.iter().map(|b| b.num_rows() as u64).sum());
        r.count = r.count + added - removed;
        // The newest window's schema stands for the job's latest SQL.
        if r.schema.is_none() || r.windows.last_key_value().is_some_and(|(k, _)| *k == start) {
            r.schema = Some(schema);
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// How far the end of the newest window completed in order trails `now`,
/// in seconds.
fn lag_at(p: &Progress, now: i64) -> f64 {
    (now - p.next_window()).max(0) as f64 / MICROS as f64
}

/// Runs each job's windows as they come due, until the process ends. A
/// failed window is tried again after a pause that doubles up to a minute.
/// Stops when `stop` turns true (a run under way finishes first).
pub async fn schedule(
    query: Arc<QueryEngine>,
    job: Arc<Job>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match job.due() {
            None => None,
            Some((start, due)) => {
                let now = now_us();
                if due <= now {
                    match query.run_job(job.name(), start, Trigger::Schedule).await {
                        Ok(_) => {
                            backoff = Duration::from_secs(1);
                            continue;
                        }
                        Err(_) => {
                            let w = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            Some(w)
                        }
                    }
                } else {
                    Some(Duration::from_micros((due - now) as u64))
                }
            }
        };
        let sleep = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = job.wake.notified() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

/// `answer`'s schema behind the window columns.
fn window_schema(answer: &Schema) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new(WINDOW_COLUMNS[0], ts.clone(), false),
        Field::new(WINDOW_COLUMNS[1], ts, false),
    ];
    fields.extend(answer.fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

fn with_window(schema: &SchemaRef, b: &RecordBatch, start: i64, end: i64) -> Result<RecordBatch> {
    let n = b.num_rows();
    let col = |v: i64| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v; n]).with_timezone("UTC"))
    };
    let mut columns = vec![col(start), col(end)];
    columns.extend(b.columns().iter().cloned());
    RecordBatch::try_new(schema.clone(), columns).map_err(internal)
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

fn read_parquet(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| QueryError::Internal(format!("{}: {e}", path.display())))?;
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .map_err(|e| QueryError::Internal(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Internal(format!("{}: {e}", path.display())))?;
    Ok((schema, batches))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn io_err(path: &Path, e: std::io::Error) -> QueryError {
    QueryError::Internal(format!("{}: {e}", path.display()))
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

use crate::metrics::{
    JOB_DELAY, JOB_LAG, JOB_LAST_DURATION, JOB_LAST_SUCCESS, JOB_PAUSED, JOB_ROWS, JOB_RUNS,
    JOB_SECONDS, JOB_WINDOW,
};
