//! The log: tally's source of truth.
//!
//! Every accepted batch is one record in the log before it is acknowledged.
//! Segments, rollups and caches are all derived from the log and can be
//! rebuilt from it. [`Log`] is the small interface the engine uses; the
//! default implementation is [`LocalLog`], a write-ahead log of append-only
//! files on local disk. A NATS JetStream log implements the same interface
//! for cluster mode.
//!
//! Ordering contract: records are delivered to the apply hook exactly once,
//! in LSN order, and an `append` resolves only after its record is durable
//! (per the configured [`SyncMode`]) *and* has been delivered to the hook, so
//! an acknowledged write is visible to readers.

mod jetstream;
mod local;
mod metrics;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub use jetstream::{
    promote, server_version, valid_key, CallError, Channel, ClusterStatus, Created, JetStreamLog,
    JetStreamOptions, Lease, LeaseStatus, Listener, PeerStatus, Promoted, Request, ServerStatus,
    SharedEntry, SharedKeys, MAINTENANCE_LEASE, MIN_SERVER_VERSION,
};
pub use local::{LocalLog, LocalLogOptions, OpenReport, SyncMode};
/// Registers the log's metrics.
pub use metrics::init as init_metrics;

/// Where cluster mode keeps records too large for one NATS message (the
/// claim check): the shared archive. Keys are relative to its root. A
/// `put` resolves only when the object is durable.
pub trait ClaimStore: Send + Sync + std::fmt::Debug {
    fn put<'a>(
        &'a self,
        key: &'a str,
        bytes: bytes::Bytes,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
    /// `None` when no such object exists.
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<bytes::Bytes>, String>>;
    /// Removes the objects under `prefix` last written longer ago than
    /// `age`; how many.
    fn remove_older_than<'a>(
        &'a self,
        prefix: &'a str,
        age: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<usize, String>>;
}

/// Log sequence number: 1 for the first record ever appended, dense after.
pub type Lsn = u64;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("log file {path} is corrupt at byte {offset}: {reason}; it is not the last file, so this is not a torn write and tally will not guess")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error("log queue is full ({capacity} records waiting)")]
    Busy { capacity: usize },

    #[error("record of {size} bytes exceeds the log's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },

    #[error("log is closed")]
    Closed,

    #[error("log has failed and refuses writes until restart: {0}")]
    Failed(String),

    /// The cluster's log cannot be reached, or did not acknowledge in time.
    #[error("the cluster log is unavailable: {0}")]
    Unavailable(String),

    /// The stream no longer holds the records right after what this node
    /// has applied: it must bootstrap.
    #[error("this node has applied the stream up to {applied}, but the stream now starts at {first}: the records between left it (by age or size); start the node on an empty data directory to bootstrap")]
    Behind { applied: Lsn, first: Lsn },

    /// The stream and the node's data disagree about the past.
    #[error("{0}")]
    Diverged(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Called once per record, in LSN order, on the log's apply thread, with
/// the attachment its appender handed along (an `A`, the record as the
/// appender already holds it, so the hook need not decode it). Replayed
/// records, and records read back from a remote log, come with none.
pub type ApplyHook<A> = Box<dyn FnMut(Lsn, &[u8], Option<A>) + Send>;

pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Lsn>> + Send>>;

/// What the engine needs of a log of records that travel in process as
/// `A`.
pub trait Log<A>: Send + Sync {
    /// Appends one record. Fails fast with [`Error::Busy`] when the queue is
    /// full; the returned future resolves when the record is durable and
    /// applied.
    fn append(&self, payload: Vec<u8>, attachment: Option<A>) -> AppendFuture;

    /// As [`Self::append`], under an id the log stores once: a second
    /// append with the same id inside the log's duplicate window stores
    /// nothing and resolves to the first one's LSN. Logs that keep no such
    /// window append as [`Self::append`] does.
    fn append_once(&self, id: String, payload: Vec<u8>, attachment: Option<A>) -> AppendFuture {
        let _ = id;
        self.append(payload, attachment)
    }

    /// Allows the log to drop every record with an LSN at or below `lsn`:
    /// their effects are persisted elsewhere.
    fn truncate_through(&self, lsn: Lsn) -> Result<()>;

    /// The LSN of the last record applied.
    fn last_lsn(&self) -> Lsn;

    /// Records waiting to be written.
    fn queue_depth(&self) -> usize;

    /// Stops accepting appends, writes and applies what is queued, and
    /// waits for the log's threads to finish.
    fn close(&self);

    /// The cluster's state, for a log shared by a cluster.
    fn cluster(&self) -> Option<ClusterStatus> {
        None
    }

    /// Whether this node is the one to do the work done once per log (a
    /// node alone always is; in a cluster, the maintenance lease's holder).
    fn holds_maintenance_lease(&self) -> bool {
        true
    }

    /// How old this node's view of a shared log may be (see
    /// [`ClusterStatus::staleness_ms`]); `None` for a log of one node,
    /// which is always current.
    fn staleness(&self) -> Option<std::time::Duration> {
        None
    }

    /// Cluster mode: requests to the node doing the work `name` for the
    /// cluster (see [`Channel`]); `None` for a log of one node.
    fn channel(&self, name: &str) -> Option<Channel> {
        let _ = name;
        None
    }

    /// Cluster mode: the bucket `name` of keys every node shares, whose
    /// values live `max_age` (see [`SharedKeys`]); `None` for a log of one
    /// node, whose rules hold in its own memory. `per_key_ttl` lets each
    /// write set its own life. Blocking.
    fn shared_keys(
        &self,
        name: &str,
        max_age: std::time::Duration,
        per_key_ttl: bool,
    ) -> Option<Result<SharedKeys>> {
        let _ = (name, max_age, per_key_ttl);
        None
    }
}
