//! Batch imports: a file of any size goes in whole or not at all.
//!
//! [`Engine::begin_import`] opens a transaction for a client batch id; the
//! caller feeds it parsed chunks ([`ImportTxn::add`]), which are checked
//! against the stream's schema and staged as segment files in
//! `imports/<batch id>/` (see `tally_store::ImportStage`), so memory stays
//! bounded whatever the file's size. [`ImportTxn::finish`] makes the files
//! durable; [`Engine::commit_import`] then appends one small commit record
//! to the log. That record is the import's single point of commitment:
//! applying it (live, or when the log is replayed after a crash) adds the
//! files to the catalog with the batch id, in one atomic catalog write, and
//! counts the rows into the stream's rollups. Before it, nothing of the
//! import is visible and a crash or a shutdown leaves only staged files,
//! which are deleted; after it, the import is complete.
//!
//! The catalog remembers adopted batch ids, so a retried batch is answered
//! with [`Error::AlreadyImported`] instead of being imported twice.

use crate::metrics::IMPORTS;
use crate::record::{Live, Record};
use crate::{Engine, Error, Result};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tally_ingest::{Chunk, ColumnType};
use tally_log::Lsn;
use tally_store::{
    discard_stage, ImportStage, SchemaConflict, StagedImport, Store, MAX_COLUMNS_PER_STREAM,
};

/// Longest batch id accepted.
pub const MAX_BATCH_ID_LEN: usize = 128;

/// Checks a client batch id: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting
/// with a dot (it names a directory).
pub fn validate_batch_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_BATCH_ID_LEN {
        return Err(format!(
            "a batch id has 1 to {MAX_BATCH_ID_LEN} characters, this one {}",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err("a batch id cannot start with '.'".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "a batch id holds only letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    Ok(())
}

/// What a committed import returns.
#[derive(Debug, Clone)]
pub struct ImportReceipt {
    pub batch_id: String,
    pub rows: u64,
    pub files: usize,
    pub lsn: Lsn,
}

/// Holds a batch id as in flight, so two clients cannot stage it at once;
/// counts the import as rolled back if it ends uncommitted.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    batch_id: String,
    committed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().remove(&self.batch_id);
        if !self.committed {
            IMPORTS.with_label_values(&["rolled_back"]).inc();
        }
    }
}

/// An import being staged. Dropping it rolls the import back.
pub struct ImportTxn {
    store: Arc<Store>,
    stage: ImportStage,
    stream: String,
    _in_flight: InFlight,
}

/// A staged import, durable on disk, not yet committed. Dropping it rolls
/// the import back.
pub struct FinishedImport {
    staged: StagedImport,
    data_dir: PathBuf,
    committed: bool,
    _in_flight: InFlight,
}

impl FinishedImport {
    pub fn rows(&self) -> u64 {
        self.staged.rows
    }
}

impl Drop for FinishedImport {
    fn drop(&mut self) {
        if !self.committed {
            discard_stage(&self.data_dir, &self.staged.batch_id);
        }
    }
}

impl ImportTxn {
    /// The type a column has in the stream, or in the rows staged so far:
    /// what CSV cells of that column are read as.
    pub fn column_type(&self, field: &str) -> Option<ColumnType> {
        self.store
            .schemas()
            .column_type(&self.stream, field)
            .or_else(|| self.stage.schema().get(field))
    }

    pub fn rows(&self) -> u64 {
        self.stage.rows()
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Checks a chunk against the stream's schema and the chunks before it
    /// (errors name the file line), then stages it. Blocking (it may write
    /// staged files).
    pub fn add(&mut self, chunk: &Chunk) -> Result<()> {
        let batch = &chunk.batch;
        let mut new = 0;
        for c in &batch.columns {
            let found = c.data.column_type();
            match self.column_type(&c.name) {
                Some(existing) if existing != found => {
                    // 1-based row of the chunk, to the file's line.
                    let row = batch.first_row_with_value(c);
                    return Err(SchemaConflict::Type {
                        stream: self.stream.clone(),
                        field: c.name.clone(),
                        line: chunk.lines.get(row - 1).copied().unwrap_or(row),
                        existing,
                        found,
                    }
                    .into());
                }
                Some(_) => {}
                None => new += 1,
            }
        }
        if new > 0 {
            let stream_columns = self
                .store
                .schemas()
                .get(&self.stream)
                .map_or(0, |s| s.columns.len());
            let staged_only = self
                .stage
                .schema()
                .columns
                .iter()
                .filter(|c| {
                    self.store
                        .schemas()
                        .column_type(&self.stream, &c.name)
                        .is_none()
                })
                .count();
            if stream_columns + staged_only + new > MAX_COLUMNS_PER_STREAM {
                let field = batch
                    .columns
                    .iter()
                    .find(|c| self.column_type(&c.name).is_none())
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                return Err(SchemaConflict::TooManyColumns {
                    stream: self.stream.clone(),
                    field,
                    limit: MAX_COLUMNS_PER_STREAM,
                }
                .into());
            }
        }
        self.stage.add(batch)?;
        Ok(())
    }

    /// Writes what is buffered and makes the staged files durable. Blocking.
    pub fn finish(self) -> Result<FinishedImport> {
        let data_dir = self.store.dir().to_path_buf();
        let staged = self.stage.finish()?;
        Ok(FinishedImport {
            staged,
            data_dir,
            committed: false,
            _in_flight: self._in_flight,
        })
    }
}

impl Engine {
    /// Cluster mode: puts the staged files in the shared archive, under
    /// the stream's claim prefix (so they are swept, as claims are, once no
    /// record in the stream can point at them). Returns the prefix.
    async fn share_staged(
        &self,
        c: &tally_log::JetStreamOptions,
        staged: &StagedImport,
    ) -> Result<String> {
        let Some(a) = &self.opts.archive else {
            return Err(Error::NotInCluster {
                what: "a batch import without a shared archive",
                instead: "configure --archive",
            });
        };
        let attempt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = format!(
            "{}/imports/{}/{}-{attempt}",
            c.claim_prefix(),
            staged.batch_id,
            c.node_id
        );
        let shared = tally_archive::Shared::open(a)?;
        let failed = |what: String| Error::Overloaded {
            reason: format!(
                "staging import {} in the shared archive: {what}",
                staged.batch_id
            ),
            retry_after: std::time::Duration::from_secs(5),
        };
        for f in &staged.files {
            let path = self.store.dir().join(&f.path);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            shared
                .put(&format!("{prefix}/{name}"), bytes.into())
                .await
                .map_err(failed)?;
        }
        Ok(prefix)
    }

    /// Starts an import of `batch_id` into `stream`. Refused when the batch
    /// id was already imported (with what was imported), or is being
    /// imported right now.
    pub fn begin_import(&self, stream: &str, batch_id: &str) -> Result<ImportTxn> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Closed);
        }
        validate_batch_id(batch_id).map_err(|reason| Error::BadBatchId {
            batch_id: batch_id.to_string(),
            reason,
        })?;
        if let Some(done) = self.store.imported(batch_id) {
            return Err(Error::AlreadyImported {
                batch_id: batch_id.to_string(),
                stream: done.stream,
                rows: done.rows,
            });
        }
        if !self.imports_in_flight.lock().insert(batch_id.to_string()) {
            return Err(Error::ImportInProgress {
                batch_id: batch_id.to_string(),
            });
        }
        let in_flight = InFlight {
            set: self.imports_in_flight.clone(),
            batch_id: batch_id.to_string(),
            committed: false,
        };
        let stage = ImportStage::new(
            self.store.dir(),
            stream,
            batch_id,
            self.opts.import_spill_bytes,
        )?;
        Ok(ImportTxn {
            store: self.store.clone(),
            stage,
            stream: stream.to_string(),
            _in_flight: in_flight,
        })
    }

    /// Commits a staged import: one record in the log, then the catalog
    /// adopts the files. Returns once the import is durable and visible.
    /// On an error the import is rolled back, unless the error says it was
    /// committed ([`Error::ImportNotApplied`]).
    pub async fn commit_import(&self, mut import: FinishedImport) -> Result<ImportReceipt> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut staged = import.staged.clone();
        // A column another writer gave another type since the check.
        self.store
            .schemas()
            .reserve(&staged.stream, &staged.column_batch())?;
        if let Some(c) = &self.opts.cluster {
            // Every node adopts the files: they go to the shared archive
            // first, under a prefix of this attempt's own.
            staged.shared = Some(self.share_staged(c, &staged).await?);
        }
        let outcome = Arc::new(OnceLock::new());
        let record = Record::Import(staged.clone());
        let payload = record.encode();
        let live = Live {
            record,
            outcome: Some(outcome.clone()),
        };
        // In cluster mode the batch id is the message id: a retry through
        // another node within the duplicate window stores nothing more.
        let append =
            self.log
                .append_once(format!("import:{}", staged.batch_id), payload, Some(live));
        let lsn = append.await.map_err(Error::from)?;
        import.committed = true;
        import._in_flight.committed = true;
        if outcome.get().is_none() {
            if let Some(done) = self.store.imported(&staged.batch_id) {
                // The log already held this batch id's commit (another
                // attempt's): this attempt's files are not needed.
                discard_stage(self.store.dir(), &staged.batch_id);
                return Err(Error::AlreadyImported {
                    batch_id: staged.batch_id,
                    stream: done.stream,
                    rows: done.rows,
                });
            }
        }
        match outcome.get() {
            Some(Ok(_)) => {
                IMPORTS.with_label_values(&["committed"]).inc();
                Ok(ImportReceipt {
                    batch_id: staged.batch_id,
                    rows: staged.rows,
                    files: staged.files.len(),
                    lsn,
                })
            }
            other => Err(Error::ImportNotApplied {
                batch_id: staged.batch_id,
                reason: match other {
                    Some(Err(e)) => e.clone(),
                    _ => "the commit record was not applied".into(),
                },
            }),
        }
    }
}
