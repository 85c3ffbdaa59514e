//! The engine's errors: what a write, an import or a start can fail with,
//! typed so that the HTTP layer maps each to its status.

use std::path::PathBuf;
use std::time::Duration;
use tally_store::SchemaConflict;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Schema(#[from] SchemaConflict),

    #[error("overloaded: {reason}")]
    Overloaded {
        reason: String,
        retry_after: Duration,
    },

    /// The cluster log could not be reached, or did not confirm a record
    /// in time: a write answered this way may still have been stored.
    #[error("the cluster log is unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },

    #[error("record of {size} bytes is larger than the log accepts ({limit})")]
    TooLarge { size: usize, limit: usize },

    #[error("log: {0}")]
    Log(tally_log::Error),

    #[error("store: {0}")]
    Store(#[from] tally_store::Error),

    #[error(transparent)]
    Rollup(#[from] tally_rollup::Error),

    #[error(transparent)]
    Archive(#[from] tally_archive::Error),

    #[error("the engine is shutting down")]
    Closed,

    #[error("stream '{stream}' is named twice in one write; give each stream one batch")]
    StreamTwice { stream: String },

    #[error("refusing writes: a background part of the server failed ({part}: {message}); restart it (nothing acknowledged is lost)")]
    Failed { part: &'static str, message: String },

    #[error("batch {batch_id} was already imported into '{stream}' ({rows} rows); it is not imported twice")]
    AlreadyImported {
        batch_id: String,
        stream: String,
        rows: u64,
    },

    #[error("batch {batch_id} is being imported by another request")]
    ImportInProgress { batch_id: String },

    #[error("invalid batch id {batch_id:?}: {reason}")]
    BadBatchId { batch_id: String, reason: String },

    #[error("batch {batch_id} was committed but could not be applied ({reason}); it is not visible, and a retry with the same batch id imports it")]
    ImportNotApplied { batch_id: String, reason: String },

    #[error("{what} is not available in cluster mode yet: {instead}")]
    NotInCluster {
        what: &'static str,
        instead: &'static str,
    },

    #[error("data directory {dir} is in use by another tally process")]
    Locked { dir: PathBuf },

    #[error("data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl From<tally_log::Error> for Error {
    fn from(e: tally_log::Error) -> Self {
        match e {
            tally_log::Error::Busy { capacity } => Error::Overloaded {
                reason: format!("the log's queue is full ({capacity} batches waiting)"),
                retry_after: Duration::from_secs(1),
            },
            tally_log::Error::TooLarge { size, limit } => Error::TooLarge { size, limit },
            tally_log::Error::Closed => Error::Closed,
            tally_log::Error::Unavailable(reason) => Error::Unavailable {
                reason,
                retry_after: Duration::from_secs(2),
            },
            other => Error::Log(other),
        }
    }
}

impl Error {
    /// Whether a write that failed this way may still be in the log (and
    /// so be applied): the cluster log did not confirm it, or failed after
    /// taking it. Other failures refused the write before it was sent.
    pub fn may_have_been_stored(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Log(_))
    }
}
