//! The engine's settings: the log's durability and queue, the in-memory
//! tail's size and age, and a batch import's buffer. Each field is a flag
//! of `tally serve`, a `TALLY_*` variable and a config file key at once
//! (see `tally-settings`); the `default_value`s here are the only defaults,
//! and [`EngineOptions::new`] starts from them.

use crate::EngineOptions;
use std::path::PathBuf;
use std::time::Duration;
use tally_log::SyncMode;
use tally_settings::{duration, size, to_usize, ByteSize};

/// When an acknowledged write is on disk.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before every acknowledgement.
    Always,
    /// Acknowledge once the OS has the data; fsync every `--sync-interval`.
    Interval,
    /// Never fsync.
    Never,
}

/// The log: when writes are durable, and how many may wait for it.
#[derive(clap::Args, Debug, Clone)]
pub struct LogSettings {
    /// When an acknowledged write is on disk: `always` fsyncs before every
    /// acknowledgement (survives a power loss; group commit keeps it
    /// fast); `interval` acknowledges once the OS has the data and fsyncs
    /// every --sync-interval (survives a killed process, not a power
    /// loss); `never` is for throwaway data. See Durability.
    #[arg(long, env = "TALLY_SYNC", value_enum, default_value = "always")]
    pub sync: SyncPolicy,

    /// How often `--sync interval` fsyncs the log.
    #[arg(long, env = "TALLY_SYNC_INTERVAL", value_name = "DURATION",
          value_parser = duration, default_value = "100ms")]
    pub sync_interval: Duration,

    /// Batches that may wait for the log writer; past it, ingest answers
    /// 503 with Retry-After.
    #[arg(long, env = "TALLY_LOG_QUEUE", default_value = "4096")]
    pub log_queue: usize,
}

/// The in-memory tail: when it is flushed to Parquet, and how much it may
/// hold while flushing falls behind.
#[derive(clap::Args, Debug, Clone)]
pub struct TailSettings {
    /// The in-memory tail is written to Parquet once it holds this much.
    /// Larger means fewer, bigger segments and a longer log replay after a
    /// crash.
    #[arg(long, env = "TALLY_FLUSH_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "48MiB")]
    pub flush_bytes: ByteSize,

    /// ... or once its oldest event has waited this long.
    #[arg(long, env = "TALLY_FLUSH_INTERVAL", value_name = "DURATION",
          value_parser = duration, default_value = "60s")]
    pub flush_interval: Duration,

    /// While the in-memory tail (a flush in progress included) holds more,
    /// flushing is falling behind: writes wait up to --memory-wait for a
    /// flush to make room, then answer 503.
    #[arg(long, env = "TALLY_MEMORY_LIMIT_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "128MiB")]
    pub memory_limit_bytes: ByteSize,

    /// How long a write waits for a flush to make room in a full tail
    /// before 503; 0 refuses at once (the flusher then flushes on size and
    /// age only).
    #[arg(long, env = "TALLY_MEMORY_WAIT", value_name = "DURATION",
          value_parser = duration, default_value = "2s")]
    pub memory_wait: Duration,

    /// Rows a batch import buffers before writing its staged files: its
    /// memory whatever the file's size; smaller means more, smaller files
    /// until compaction merges them.
    #[arg(long, env = "TALLY_IMPORT_SPILL_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "64MiB")]
    pub import_spill_bytes: ByteSize,
}

impl Default for LogSettings {
    fn default() -> Self {
        tally_settings::defaults()
    }
}

impl Default for TailSettings {
    fn default() -> Self {
        tally_settings::defaults()
    }
}

impl LogSettings {
    /// The log's durability as the log takes it.
    pub fn sync_mode(&self) -> SyncMode {
        match self.sync {
            SyncPolicy::Always => SyncMode::Always,
            SyncPolicy::Interval => SyncMode::Interval(self.sync_interval),
            SyncPolicy::Never => SyncMode::Never,
        }
    }
}

impl EngineOptions {
    /// Defaults, with no archive (`tally serve` and the demo add the
    /// default one, [`crate::ArchiveOptions::in_data_dir`]).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self::with_settings(data_dir, &LogSettings::default(), &TailSettings::default())
    }

    /// Options from the log's and the tail's settings; the rest default.
    pub fn with_settings(
        data_dir: impl Into<PathBuf>,
        log: &LogSettings,
        tail: &TailSettings,
    ) -> Self {
        EngineOptions {
            archive: None,
            data_dir: data_dir.into(),
            sync: log.sync_mode(),
            log_queue: log.log_queue.max(1),
            flush_bytes: to_usize(tail.flush_bytes),
            flush_interval: tail.flush_interval,
            memory_limit_bytes: to_usize(tail.memory_limit_bytes),
            memory_wait: tail.memory_wait,
            import_spill_bytes: to_usize(tail.import_spill_bytes),
            log_segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
            compaction_fanout: 4,
            rollups: Vec::new(),
            retention: Default::default(),
        }
    }
}
