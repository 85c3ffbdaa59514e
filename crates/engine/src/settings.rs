//! The engine's settings: the log's durability and queue, the in-memory
//! tail's size and age, and a batch import's buffer. Each field is a flag
//! of `tally serve`, a `TALLY_*` variable and a config file key at once
//! (see `tally-settings`); the `default_value`s here are the only defaults,
//! and [`EngineOptions::new`] starts from them.

use crate::EngineOptions;
use std::path::PathBuf;
use std::time::Duration;
use tally_log::{JetStreamOptions, SyncMode};
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
            cluster: None,
        }
    }
}

/// Cluster mode: the log on a NATS JetStream stream that every node
/// applies (docs/cluster.md). Without `--cluster` nothing here applies.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterSettings {
    /// Runs this node as part of a cluster whose log is a JetStream stream
    /// on these NATS servers (`nats://HOST:PORT`, comma-separated; one is
    /// enough, the others are learnt). Needs --node-id and a shared
    /// --archive; nats-server 2.12 or later, run with `sync_interval:
    /// always` for acknowledged writes to survive a power loss.
    #[arg(long, env = "TALLY_CLUSTER", value_name = "URLS")]
    pub cluster: Option<String>,

    /// This node's name in the cluster (unique per node; in its NATS
    /// connection name and in /v1/cluster).
    #[arg(long, env = "TALLY_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// Copies JetStream keeps of each record when it creates the stream:
    /// 3 survives the loss of one NATS server, 5 of two. An existing
    /// stream keeps its own.
    #[arg(long, env = "TALLY_CLUSTER_REPLICAS", default_value = "3",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub cluster_replicas: u8,

    /// The JetStream stream that holds the log (its subject is
    /// `tally.log.<name>`); every node of one cluster names the same.
    #[arg(
        long,
        env = "TALLY_CLUSTER_STREAM",
        value_name = "NAME",
        default_value = "TALLY"
    )]
    pub cluster_stream: String,

    /// A retried write with the same Idempotency-Key within this window is
    /// stored once (the stream's duplicate window).
    #[arg(long, env = "TALLY_CLUSTER_DEDUP_WINDOW", value_name = "DURATION",
          value_parser = duration, default_value = "2m")]
    pub cluster_dedup_window: Duration,

    /// Records older than this leave the stream; a node further behind
    /// must bootstrap from the archive. The stream's limits apply when it
    /// is created.
    #[arg(long, env = "TALLY_CLUSTER_MAX_AGE", value_name = "DURATION",
          value_parser = duration, default_value = "7d")]
    pub cluster_max_age: Duration,

    /// The stream's size limit: past it, the oldest records leave. Each
    /// NATS server holding a replica must have this much JetStream storage
    /// free (its `max_file_store`), or the stream cannot be created.
    #[arg(long, env = "TALLY_CLUSTER_MAX_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "16GiB")]
    pub cluster_max_bytes: ByteSize,

    /// A NATS credentials file (`.creds`: a user JWT and its NKey seed).
    #[arg(long, env = "TALLY_CLUSTER_CREDS", value_name = "FILE")]
    pub cluster_creds: Option<PathBuf>,

    /// A CA certificate (PEM) to trust for the NATS servers; requires TLS.
    #[arg(long, env = "TALLY_CLUSTER_TLS_CA", value_name = "FILE")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// This node's client certificate (PEM), for servers that verify
    /// clients; with --cluster-tls-key.
    #[arg(long, env = "TALLY_CLUSTER_TLS_CERT", value_name = "FILE")]
    pub cluster_tls_cert: Option<PathBuf>,

    /// The key of --cluster-tls-cert (PEM).
    #[arg(long, env = "TALLY_CLUSTER_TLS_KEY", value_name = "FILE")]
    pub cluster_tls_key: Option<PathBuf>,

    /// How long a write keeps publishing while no NATS server acknowledges
    /// it (a server lost, a leader being elected) before it answers 503.
    /// At start, a node waits this long, and at least a minute, for NATS
    /// and the stream.
    #[arg(long, env = "TALLY_CLUSTER_PUBLISH_TIMEOUT", value_name = "DURATION",
          value_parser = duration, default_value = "15s")]
    pub cluster_publish_timeout: Duration,

    /// How often the node holding the maintenance lease uploads a
    /// bootstrap checkpoint (its data at one stream sequence) to the shared
    /// archive, for nodes that join on an empty disk; 0 turns it off.
    #[arg(long, env = "TALLY_CLUSTER_CHECKPOINT_INTERVAL", value_name = "DURATION",
          value_parser = duration, default_value = "10m")]
    pub cluster_checkpoint_interval: Duration,

    /// Work done by one node at a time (checkpoints, sweeping) passes to
    /// another node when its holder has not renewed its lease for this
    /// long (killed, paused, cut off).
    #[arg(long, env = "TALLY_CLUSTER_LEASE_TTL", value_name = "DURATION",
          value_parser = duration, default_value = "10s")]
    pub cluster_lease_ttl: Duration,

    /// Runs this node in a replica region: the home region's JetStream
    /// domain, reached through this region's NATS server (a leaf node of
    /// the home region's). The node reads a mirror of the home stream in
    /// its own region (made when missing), serves every read from it, and
    /// forwards writes to the home stream; its staleness is how far it is
    /// behind the home region (docs/cluster.md, "Regions").
    #[arg(long, env = "TALLY_CLUSTER_HOME_DOMAIN", value_name = "DOMAIN")]
    pub cluster_home_domain: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        tally_settings::defaults()
    }
}

/// 1 to 64 letters, digits or `extra` bytes.
fn is_name(s: &str, extra: &[u8]) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

impl ClusterSettings {
    /// The log's options in cluster mode; `None` without `--cluster`.
    pub fn options(&self) -> Result<Option<JetStreamOptions>, String> {
        let Some(urls) = &self.cluster else {
            return Ok(None);
        };
        let servers: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if servers.is_empty() {
            return Err("--cluster: name at least one NATS server, as nats://HOST:PORT".into());
        }
        for s in &servers {
            if !(s.starts_with("nats://") || s.starts_with("tls://")) {
                return Err(format!(
                    "--cluster: {s:?} is not a NATS URL; write nats://HOST:PORT (or tls://HOST:PORT)"
                ));
            }
        }
        let node_id = self
            .node_id
            .clone()
            .ok_or("cluster mode needs --node-id (TALLY_NODE_ID): a name unique to this node")?;
        if !is_name(&node_id, b"-_.") {
            return Err(format!(
                "--node-id {node_id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        let stream = &self.cluster_stream;
        if !is_name(stream, b"-_") {
            return Err(format!(
                "--cluster-stream {stream:?}: use 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        if self.cluster_tls_cert.is_some() != self.cluster_tls_key.is_some() {
            return Err("--cluster-tls-cert and --cluster-tls-key go together".into());
        }
        let mut o = JetStreamOptions::new(servers, node_id);
        o.stream = stream.clone();
        o.replicas = self.cluster_replicas as usize;
        o.duplicate_window = self.cluster_dedup_window;
        o.max_age = self.cluster_max_age;
        o.max_bytes = self.cluster_max_bytes.as_u64();
        o.credentials = self.cluster_creds.clone();
        o.tls_ca = self.cluster_tls_ca.clone();
        o.tls_cert = self.cluster_tls_cert.clone();
        o.tls_key = self.cluster_tls_key.clone();
        o.publish_timeout = self.cluster_publish_timeout;
        o.checkpoint_interval = self.cluster_checkpoint_interval;
        if self.cluster_lease_ttl < Duration::from_secs(1) {
            return Err("--cluster-lease-ttl: at least 1s".into());
        }
        o.lease_ttl = self.cluster_lease_ttl;
        if let Some(d) = &self.cluster_home_domain {
            if !is_name(d, b"-_") {
                return Err(format!(
                    "--cluster-home-domain {d:?}: a JetStream domain is 1 to 64 letters, digits, '-' or '_'"
                ));
            }
            o.home_domain = Some(d.clone());
        }
        Ok(Some(o))
    }
}
