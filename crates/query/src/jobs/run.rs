//! Running jobs: one window at a time on the query pool, its answer
//! stored as the window's rows; the scheduler that runs windows as they
//! come due.

use super::cluster::{encode_answer, Commit, STREAM};
use super::{
    internal, now_us, rfc3339, Job, Jobs, RunRecord, Trigger, HISTORY, MICROS, WINDOW_COLUMNS,
};
use crate::error::{QueryError, Result};
use crate::metrics::{JOB_LAST_DURATION, JOB_RUNS, JOB_SECONDS};
use crate::{collect_plan, parse_one, plan_read_only, QueryEngine, QueryState};
use arrow::array::{ArrayRef, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl QueryEngine {
    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.inner.jobs
    }

    /// Job `name`, or a not-found error naming it.
    fn job(&self, name: &str) -> Result<Arc<Job>> {
        self.jobs()
            .get(name)
            .cloned()
            .ok_or_else(|| QueryError::NotFound {
                what: "job",
                name: name.to_string(),
            })
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
        let job = self.job(name)?;
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
        let answer = self.job_answer(&job, window_start, window_end).await;
        let duration = t.elapsed();
        let (answer, note) = match answer {
            Ok(Answer::Rows(schema, batches, rows)) => (Ok((Some((schema, batches)), rows)), None),
            Ok(Answer::NoStream(names)) => (
                Ok((None, 0)),
                Some(format!(
                    "no events yet in stream {}: nothing to compute, the window's rows are left as they were",
                    names.join(", ")
                )),
            ),
            Err(e) => (Err(e), None),
        };
        let mut record = RunRecord {
            window_start,
            window_end,
            started_at,
            duration_ms: duration.as_secs_f64() * 1e3,
            rows: answer.as_ref().ok().map(|(_, rows)| *rows),
            error: None,
            note: note.clone(),
            trigger,
        };
        // Stored: in a cluster, through the log (every node applies it,
        // this one before the append returns); alone, here.
        let stored = match answer {
            Ok((rows, _)) if self.engine().is_cluster() => {
                self.commit_window(&job, &record, rows).await
            }
            Ok((Some((schema, batches)), _)) => {
                let j = job.clone();
                tokio::task::spawn_blocking(move || j.replace_window(window_start, schema, batches))
                    .await
                    .map_err(|e| QueryError::Internal(format!("writing a job window: {e}")))
                    .and_then(|r| r)
            }
            Ok((None, _)) => Ok(()),
            Err(e) => Err(e),
        };
        *job.current.lock() = None;
        let result = stored.map(|()| record.rows.unwrap_or(0));
        if let Err(e) = &result {
            record.rows = None;
            record.error = Some(e.to_string());
        }
        let name = job.def.name.as_str();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        JOB_RUNS.with_label_values(&[name, outcome]).inc();
        JOB_SECONDS
            .with_label_values(&[name])
            .observe(duration.as_secs_f64());
        JOB_LAST_DURATION
            .with_label_values(&[name])
            .set(duration.as_secs_f64());
        let committed = result.is_ok() && self.engine().is_cluster();
        if !committed {
            // A committed window's progress moved when this node applied
            // it; a failure, or a window run alone, is this node's.
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
            Ok(_) if note.is_some() => {
                tracing::info!(job = name, window = %rfc3339(window_start), note, "job window had no stream to read")
            }
            Ok(rows) => {
                tracing::info!(job = name, window = %rfc3339(window_start), rows, ms = record.duration_ms, "job window done")
            }
            Err(e) => {
                tracing::warn!(job = name, window = %rfc3339(window_start), error = %e, "job window failed")
            }
        }
        result.map(|_| record)
    }

    /// Cluster mode: appends a window's run to the log under the message
    /// id `job:<name>:<window start>` (a manual run under its own id: it
    /// means to run the window again). Returns once this node applied it.
    async fn commit_window(
        &self,
        job: &Arc<Job>,
        record: &RunRecord,
        rows: Option<(SchemaRef, Vec<RecordBatch>)>,
    ) -> Result<()> {
        let answer = match rows {
            Some((schema, batches)) => {
                let text = encode_answer(&schema, &batches)?;
                let limit = self.engine().options().max_record_bytes / 2;
                if text.len() > limit {
                    return Err(QueryError::Invalid {
                        message: format!(
                            "job {}: the answer of window {} is {} bytes as Arrow IPC (base64); a cluster commits a window as one log record, of at most {limit} bytes here: aggregate more, or shorten `every`",
                            job.def.name,
                            rfc3339(record.window_start),
                            text.len()
                        ),
                    });
                }
                Some(text)
            }
            None => None,
        };
        let node = self
            .engine()
            .cluster()
            .map(|c| c.node_id)
            .unwrap_or_default();
        let commit = Commit::Window {
            job: job.def.name.clone(),
            run: record.clone(),
            node,
            answer,
        };
        let key = match record.trigger {
            Trigger::Schedule => format!("job:{}:{}", job.def.name, record.window_start),
            Trigger::Manual => format!(
                "job:{}:{}:manual:{}",
                job.def.name, record.window_start, record.started_at
            ),
        };
        self.engine()
            .ingest_all_once(vec![(STREAM.to_string(), commit.to_batch())], Some(&key))
            .await
            .map_err(|e| QueryError::Internal(format!("committing the window to the log: {e}")))?;
        Ok(())
    }

    /// Pauses or resumes a job's schedule: on every node, through the log,
    /// in a cluster.
    pub async fn set_job_paused(&self, name: &str, paused: bool) -> Result<()> {
        let job = self.job(name)?;
        if self.engine().is_cluster() {
            let commit = Commit::Paused {
                job: name.to_string(),
                paused,
            };
            self.engine()
                .ingest(STREAM, commit.to_batch())
                .await
                .map_err(|e| QueryError::Internal(format!("appending to the log: {e}")))?;
            return Ok(());
        }
        tokio::task::spawn_blocking(move || job.set_paused(paused))
            .await
            .map_err(|e| QueryError::Internal(e.to_string()))?
    }

    /// Computes one window's rows (window columns first), or the
    /// streams the job reads that do not exist yet. A stream exists
    /// from its first event, so before it the window has nothing to read
    /// (a new deployment's job must not fail, and alert, every window
    /// until the first event arrives); a misspelt stream shows the same
    /// way, in each run's note.
    async fn job_answer(&self, job: &Arc<Job>, start: i64, end: i64) -> Result<Answer> {
        let statement = parse_one(&job.def.sql)?;
        let ts = |us: i64| ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()));
        let params = vec![("window_start", ts(start)), ("window_end", ts(end))];
        let answer = self
            .run(move |q| async move {
                let absent = absent_streams(&q, &statement);
                if !absent.is_empty() {
                    return Ok(Err(absent));
                }
                let plan = plan_read_only(&q, statement).await?;
                let plan = plan.with_param_values(params)?;
                collect_plan(&q, plan).await.map(Ok)
            })
            .await?;
        let answer = match answer {
            Ok(answer) => answer,
            Err(absent) => return Ok(Answer::NoStream(absent)),
        };
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
        Ok(Answer::Rows(schema, batches, answer.rows as u64))
    }
}

/// A window's answer, short of an error.
enum Answer {
    /// Its rows, and how many.
    Rows(SchemaRef, Vec<RecordBatch>, u64),
    /// Streams the statement reads have no events yet.
    NoStream(Vec<String>),
}

/// The tables `statement` reads that would be streams but do not exist
/// yet: unqualified or `streams.` names, valid as stream names, that no
/// table answers to.
fn absent_streams(q: &QueryState, statement: &Statement) -> Vec<String> {
    let Ok(refs) = q.session.resolve_table_references(statement) else {
        return Vec::new();
    };
    let mut absent = Vec::new();
    for r in refs {
        if !matches!(r.schema(), None | Some("streams")) {
            continue;
        }
        let name = r.table().to_string();
        if tally_ingest::validate_stream_name(&name).is_err() || absent.contains(&name) {
            continue;
        }
        let exists = match q.session.schema_for_ref(r) {
            Ok(schema) => schema.table_exist(&name),
            Err(_) => true,
        };
        if !exists {
            absent.push(name);
        }
    }
    absent
}

/// Runs each job's windows as they come due, until the process ends. A
/// failed window is tried again after a pause that doubles up to a minute.
/// Stops when `stop` turns true (a run under way finishes first). In a
/// cluster only the maintenance lease's holder runs windows; the others
/// look again every second (see [`super::cluster`]).
pub async fn schedule(
    query: Arc<QueryEngine>,
    job: Arc<Job>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let engine = query.engine().clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let holder = !engine.is_cluster() || engine.holds_maintenance_lease();
        let wait = match job.due() {
            _ if !holder => Some(LEASE_LOOK),
            None => None,
            Some((start, due)) => {
                let now = now_us();
                if due <= now && engine.is_cluster() && !caught_up(&engine).await {
                    // A new holder first applies what the last one
                    // committed.
                    Some(LEASE_LOOK)
                } else if due <= now {
                    let run = AssertUnwindSafe(query.run_job(job.name(), start, Trigger::Schedule));
                    let ran = match run.catch_unwind().await {
                        Ok(r) => r,
                        Err(panic) => {
                            // Recorded as the engine's fault: writes stop and
                            // /readyz names it; this job stops scheduling.
                            query.engine().report_panic("jobs", panic.as_ref());
                            return;
                        }
                    };
                    match ran {
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

/// How often a node that does not hold the maintenance lease looks again.
const LEASE_LOOK: Duration = Duration::from_secs(1);

/// Whether this node has applied every record the stream held a moment
/// ago (waits up to a second for it).
async fn caught_up(engine: &tally_engine::Engine) -> bool {
    let Some(last) = engine.cluster().map(|c| c.stream_last_seq) else {
        return true;
    };
    engine.wait_applied(last, LEASE_LOOK).await
}

/// `answer`'s schema behind the window columns.
pub(super) fn window_schema(answer: &Schema) -> SchemaRef {
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
