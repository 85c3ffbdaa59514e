//! A job's state: its definition, its progress (`state.json`) and its rows,
//! one Parquet file per window, replaced whole by each run of the window.

use super::{internal, io_err, now_us, rfc3339, JobDef, RunRecord, MICROS};
use crate::error::{QueryError, Result};
use crate::metrics::{JOB_DELAY, JOB_LAG, JOB_LAST_SUCCESS, JOB_PAUSED, JOB_ROWS, JOB_WINDOW};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
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
use std::time::Instant;

/// A job's progress, kept in `DATA/jobs/<name>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Progress {
    /// The first window's start, fixed when the job is first seen.
    pub(super) first_window: i64,
    /// The end of the newest window completed in order (windows before it
    /// have all run).
    pub(super) done_until: Option<i64>,
    pub(super) paused: bool,
    pub(super) runs_ok: u64,
    pub(super) runs_failed: u64,
    /// Wall clock of the last successful run, µs.
    pub(super) last_success_at: Option<i64>,
    /// Newest first.
    pub(super) history: VecDeque<RunRecord>,
}

impl Progress {
    /// The start of the next window the schedule runs.
    pub(super) fn next_window(&self) -> i64 {
        self.done_until.unwrap_or(self.first_window)
    }
}

/// The rows a job has written, window by window.
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// Window start -> its rows (window columns included).
    pub(super) windows: BTreeMap<i64, Vec<RecordBatch>>,
    /// The newest run's schema, which the table shows.
    pub(super) schema: Option<SchemaRef>,
    pub(super) count: u64,
}

/// One configured job.
#[derive(Debug)]
pub struct Job {
    pub def: JobDef,
    dir: PathBuf,
    pub(super) rows: RwLock<Rows>,
    pub(super) progress: Mutex<Progress>,
    /// Grows with every change of the table (the result cache's version).
    pub(super) version: AtomicU64,
    /// One run of this job at a time.
    pub(super) running: tokio::sync::Mutex<()>,
    /// The run under way, if any: (window start, started at).
    pub(super) current: Mutex<Option<(i64, Instant)>>,
    /// Wakes the scheduler (pause, resume).
    pub(crate) wake: tokio::sync::Notify,
}

/// Every configured job of a data directory.
#[derive(Debug, Default)]
pub struct Jobs {
    pub(super) jobs: BTreeMap<String, Arc<Job>>,
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

    /// Whether window `start` has rows on this node's disk.
    pub(super) fn has_window(&self, start: i64) -> bool {
        self.rows.read().windows.contains_key(&start)
    }

    /// Pauses or resumes the schedule (kept across restarts) on this node
    /// (in a cluster, [`crate::QueryEngine::set_job_paused`] does it on
    /// every node through the log).
    pub(super) fn set_paused_locally(&self, paused: bool) -> Result<()> {
        self.set_paused(paused)
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

    pub(super) fn save(&self, p: &Progress) -> Result<()> {
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
}

impl Job {
    /// Makes `batches` window `start`'s rows, durably, then visible.
    pub(super) fn replace_window(
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
pub(super) fn lag_at(p: &Progress, now: i64) -> f64 {
    (now - p.next_window()).max(0) as f64 / MICROS as f64
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

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
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
