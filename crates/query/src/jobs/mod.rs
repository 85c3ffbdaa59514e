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

mod cluster;
mod job;
mod run;
mod table;

pub(crate) use cluster::follow;
pub use cluster::STREAM;
pub use job::{Job, Jobs};
pub use run::schedule;
pub(crate) use table::JobSchema;

use crate::error::{QueryError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

/// The columns every job table starts with.
pub const WINDOW_COLUMNS: [&str; 2] = ["window_start", "window_end"];
/// Runs a job remembers (its status shows them, newest first).
pub(super) const HISTORY: usize = 100;
pub(super) const MICROS: i64 = 1_000_000;

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
    /// Checks names, durations, the start, and that the SQL parses and is
    /// within the SQL limits (as a `/v1/sql` statement would be).
    pub fn into_def(self, limits: &crate::SqlLimits) -> Result<JobDef> {
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
        crate::limits::check_sql(&self.sql, limits).map_err(|e| invalid(format!("sql: {e}")))?;
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub window_start: i64,
    pub window_end: i64,
    /// Wall clock, µs.
    pub started_at: i64,
    pub duration_ms: f64,
    /// Rows written; `None` when the run failed.
    pub rows: Option<u64>,
    pub error: Option<String>,
    /// Why a successful run wrote nothing (the stream it reads has no
    /// events yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub trigger: Trigger,
}

impl RunRecord {
    pub(super) fn json(&self) -> Value {
        json!({
            "window_start": rfc3339(self.window_start),
            "window_end": rfc3339(self.window_end),
            "started_at": rfc3339(self.started_at),
            "duration_ms": self.duration_ms,
            "rows": self.rows,
            "error": self.error,
            "note": self.note,
            "trigger": self.trigger,
            "ok": self.error.is_none(),
        })
    }
}

pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

pub(super) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(super) fn io_err(path: &Path, e: std::io::Error) -> QueryError {
    QueryError::Internal(format!("{}: {e}", path.display()))
}

pub(super) fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqlLimits;

    fn spec(sql: String) -> JobSpec {
        JobSpec {
            name: "j".into(),
            sql,
            every: "1h".into(),
            delay: None,
            start: None,
        }
    }

    /// A job's SQL is held to the limits of `/v1/sql`, checked at the
    /// limit and one past it, on a thread that survives the deepest tree.
    #[test]
    fn job_sql_is_held_to_the_sql_limits() {
        let limits = SqlLimits {
            max_depth: 40,
            ..SqlLimits::default()
        };
        // `1 + 1 + ...` nests one level per operator.
        let sum = |terms: usize| format!("SELECT {} FROM events", vec!["1"; terms].join(" + "));
        let deepest = (1..200)
            .take_while(|&n| spec(sum(n)).into_def(&limits).is_ok())
            .last()
            .expect("a short sum is accepted");
        let past = spec(sum(deepest + 1)).into_def(&limits).unwrap_err();
        assert!(
            matches!(&past, QueryError::Invalid { message } if message.contains("sql_depth")),
            "{past}"
        );
        // The size limit, and a sum far past every limit, refused without
        // overflowing the stack.
        let big = spec(sum(120_000))
            .into_def(&SqlLimits::default())
            .unwrap_err();
        assert!(big.to_string().contains("sql_bytes"), "{big}");
        let wide = SqlLimits {
            max_bytes: 1 << 20,
            ..SqlLimits::default()
        };
        let deep = spec(sum(120_000)).into_def(&wide).unwrap_err();
        assert!(deep.to_string().contains("sql_"), "{deep}");
    }
}
