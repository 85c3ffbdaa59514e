//! Jobs in cluster mode: each window runs once in the cluster, and every
//! node holds the same job tables.
//!
//! Only the node holding the maintenance lease runs scheduled windows. It
//! computes a window's answer and appends it to the log as one event of
//! the internal stream [`STREAM`], under the message id
//! `job:<name>:<window start>`; JetStream stores a second append under
//! that id (a new holder that took over while the old one's append was in
//! flight) as nothing. Every node, the holder included, follows the stream
//! ([`tally_engine::Follower`]): it writes the window's rows and moves the
//! job's progress when it applies the event. So a window's rows and the
//! job's progress are a function of the log, the same on every node, and a
//! new holder carries on from the window after the last one committed,
//! whoever committed it. Pausing and resuming are events too.
//!
//! A failed run is not in the log: it shows in the history and metrics of
//! the node that ran it, which retries it (or the next holder does).

use super::{internal, now_us, rfc3339, Job, Jobs, RunRecord, Trigger};
use crate::error::{QueryError, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use std::sync::Arc;
use tally_engine::{Engine, Follower, Lsn};
use tally_ingest::{Batch, BatchBuilder, ColumnData};

/// The internal stream of committed windows, pauses and resumptions.
pub const STREAM: &str = "_tally_jobs";

/// One event of [`STREAM`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Commit {
    /// A window's run, with its answer (`None` when the streams it reads
    /// had no events yet: nothing to store).
    Window {
        job: String,
        run: RunRecord,
        node: String,
        answer: Option<String>,
    },
    Paused {
        job: String,
        paused: bool,
    },
}

impl Commit {
    fn job(&self) -> &str {
        match self {
            Commit::Window { job, .. } | Commit::Paused { job, .. } => job,
        }
    }

    /// As one event.
    pub(super) fn to_batch(&self) -> Batch {
        let mut b = BatchBuilder::new();
        let _ = b.start_row(1);
        // Field names are constants, values text or finite numbers.
        match self {
            Commit::Window {
                job,
                run,
                node,
                answer,
            } => {
                let _ = b.push_str("kind", "window");
                let _ = b.push_str("job", job);
                let _ = b.push_num("window_start", run.window_start as f64);
                let _ = b.push_num("window_end", run.window_end as f64);
                let _ = b.push_num("started_at", run.started_at as f64);
                let _ = b.push_num("duration_ms", run.duration_ms);
                let _ = b.push_num("rows", run.rows.unwrap_or(0) as f64);
                let trigger = match run.trigger {
                    Trigger::Schedule => "schedule",
                    Trigger::Manual => "manual",
                };
                let _ = b.push_str("trigger", trigger);
                let _ = b.push_str("node", node);
                if let Some(n) = &run.note {
                    let _ = b.push_str("note", n);
                }
                if let Some(a) = answer {
                    let _ = b.push_str("answer", a);
                }
            }
            Commit::Paused { job, paused } => {
                let _ = b.push_str("kind", if *paused { "pause" } else { "resume" });
                let _ = b.push_str("job", job);
            }
        }
        b.finish_row(now_us());
        b.finish()
    }

    /// Each event of a batch of [`STREAM`].
    pub(super) fn from_batch(b: &Batch) -> Vec<std::result::Result<Commit, String>> {
        let text = |name: &str, row: usize| -> Option<String> {
            match &b.column(name)?.data {
                ColumnData::Dim(c) => c.get(row).map(str::to_string),
                ColumnData::Value(_) => None,
            }
        };
        let num = |name: &str, row: usize| -> Option<f64> {
            match &b.column(name)?.data {
                ColumnData::Value(c) => c.get(row),
                ColumnData::Dim(_) => None,
            }
        };
        (0..b.len())
            .map(|row| {
                let job = text("job", row).ok_or("no job")?;
                let kind = text("kind", row).ok_or("no kind")?;
                match kind.as_str() {
                    "pause" | "resume" => Ok(Commit::Paused {
                        job,
                        paused: kind == "pause",
                    }),
                    "window" => {
                        let int = |n: &str| {
                            num(n, row)
                                .map(|v| v as i64)
                                .ok_or_else(|| format!("window of job {job}: no {n}"))
                        };
                        let trigger = match text("trigger", row).as_deref() {
                            Some("manual") => Trigger::Manual,
                            _ => Trigger::Schedule,
                        };
                        Ok(Commit::Window {
                            run: RunRecord {
                                window_start: int("window_start")?,
                                window_end: int("window_end")?,
                                started_at: int("started_at")?,
                                duration_ms: num("duration_ms", row).unwrap_or(0.0),
                                rows: Some(int("rows")? as u64),
                                error: None,
                                note: text("note", row),
                                trigger,
                            },
                            node: text("node", row).unwrap_or_default(),
                            answer: text("answer", row),
                            job,
                        })
                    }
                    other => Err(format!("job {job}: unknown kind {other:?}")),
                }
            })
            .collect()
    }
}

/// A window's rows as text for the log: the Arrow IPC stream, base64.
pub(super) fn encode_answer(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    let mut buf = Vec::new();
    {
        let mut w =
            arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema).map_err(internal)?;
        for b in batches {
            w.write(b).map_err(internal)?;
        }
        w.finish().map_err(internal)?;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

fn decode_answer(text: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(internal)?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(internal)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(internal)?;
    Ok((schema, batches))
}

impl Job {
    /// Applies a committed event. `live` is false for events read back
    /// from the store at start, which this node may have applied before:
    /// then a window already behind the job's progress only has its rows
    /// written again if they are missing.
    pub(super) fn apply_commit(&self, c: &Commit, live: bool) -> Result<()> {
        match c {
            Commit::Paused { paused, .. } => self.set_paused_locally(*paused),
            Commit::Window {
                run, answer, node, ..
            } => {
                let behind = {
                    let p = self.progress.lock();
                    p.done_until.is_some() && run.window_start < p.next_window()
                };
                if behind && !live && self.has_window(run.window_start) {
                    return Ok(());
                }
                if let Some(a) = answer {
                    let (schema, batches) = decode_answer(a)?;
                    self.replace_window(run.window_start, schema, batches)?;
                }
                if behind && !live {
                    return Ok(());
                }
                let mut p = self.progress.lock();
                if p.done_until.is_none() {
                    // The cluster's first window, whichever node chose it.
                    p.first_window = run.window_start;
                }
                if run.window_start > p.next_window() {
                    tracing::warn!(job = %self.def.name, window = %rfc3339(run.window_start),
                        expected = %rfc3339(p.next_window()),
                        "a committed window is past this node's next one; following the log");
                }
                if run.window_start >= p.next_window() {
                    p.done_until = Some(run.window_end);
                }
                p.runs_ok += 1;
                p.last_success_at = Some(run.started_at + (run.duration_ms * 1e3) as i64);
                let mut record = run.clone();
                if !node.is_empty() {
                    let by = format!("run by node {node}");
                    record.note = Some(match record.note.take() {
                        Some(n) => format!("{n}; {by}"),
                        None => by,
                    });
                }
                p.history.push_front(record);
                p.history.truncate(super::HISTORY);
                self.save(&p)
            }
        }
    }
}

/// What every node runs for [`STREAM`]'s events.
struct JobsFollower {
    jobs: Arc<Jobs>,
}

impl JobsFollower {
    fn apply(&self, batch: &Batch, live: bool) {
        for c in Commit::from_batch(batch) {
            let applied = c.map_err(QueryError::Internal).and_then(|c| {
                match self.jobs.get(c.job()) {
                    Some(job) => job.apply_commit(&c, live),
                    // Not configured on this node: nothing to keep.
                    None => Ok(()),
                }
            });
            if let Err(e) = applied {
                tracing::error!(error = %e, "cannot apply a committed job window; this node's job table lacks it");
            }
        }
    }
}

impl Follower for JobsFollower {
    fn applied(&self, _lsn: Lsn, _stream: &str, batch: &Batch) {
        self.apply(batch, true);
    }
}

/// Has every node's jobs follow [`STREAM`] (cluster mode), catching up
/// first with what it holds. Blocking.
pub(crate) fn follow(engine: &Engine, jobs: &Arc<Jobs>) -> Result<()> {
    let follower = Arc::new(JobsFollower { jobs: jobs.clone() });
    let f = follower.clone();
    engine
        .follow(&[STREAM], follower, &mut |_, batch| {
            f.apply(batch, false);
            Ok(())
        })
        .map_err(|e| QueryError::Internal(format!("reading committed job windows: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn a_commit_reads_back_as_written() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let rb = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![1, i64::MAX])),
            ],
        )
        .unwrap();
        let answer = encode_answer(&schema, std::slice::from_ref(&rb)).unwrap();
        let c = Commit::Window {
            job: "j".into(),
            run: RunRecord {
                window_start: 1_700_000_000_000_000,
                window_end: 1_700_000_060_000_000,
                started_at: 1_700_000_065_123_456,
                duration_ms: 12.5,
                rows: Some(2),
                error: None,
                note: None,
                trigger: Trigger::Manual,
            },
            node: "b".into(),
            answer: Some(answer),
        };
        let p = Commit::Paused {
            job: "j".into(),
            paused: true,
        };
        for commit in [c.clone(), p] {
            let back = Commit::from_batch(&commit.to_batch());
            assert_eq!(back, vec![Ok(commit)]);
        }
        let Commit::Window { answer, .. } = c else {
            unreachable!()
        };
        let (s, batches) = decode_answer(&answer.unwrap()).unwrap();
        assert_eq!((s, batches), (schema, vec![rb]));
    }
}
