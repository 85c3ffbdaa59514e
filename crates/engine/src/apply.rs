//! Applying a log record, one `match` over its kinds: events go to the
//! rollups and the store (a large record's rollups on their own thread
//! beside the store); an import's commit feeds the staged files to the
//! rollups and has the catalog adopt them.

use crate::faults::Faults;
use crate::metrics::{ACCEPTED, ROLLUP_APPLY_SECONDS, UNDECODABLE};
use crate::record::{Live, Record};
use crate::{Error, Result};
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tally_ingest::Batch;
use tally_log::Lsn;
use tally_rollup::RollupSet;
use tally_store::{StagedImport, Store};

/// Where applied records go.
#[derive(Clone)]
pub(crate) struct Sinks {
    pub(crate) store: Arc<Store>,
    pub(crate) rollups: Arc<RollupSet>,
    pub(crate) applied: Arc<Mutex<Lsn>>,
    /// The store already holds records at or below this (replay only).
    pub(crate) store_after: Lsn,
    /// Counts large records' rollups on another core while the store
    /// takes them (live records only).
    pub(crate) beside: Option<Arc<RollupWorker>>,
    pub(crate) faults: Arc<Faults>,
    /// Cluster mode: the shared archive, where imports' staged files are.
    pub(crate) shared: Option<Arc<tally_archive::Shared>>,
    /// What follows some streams' records (see [`crate::follow`]).
    pub(crate) followers: crate::follow::Followers,
}

/// Records of at least this many events have their rollups counted beside
/// the store; smaller ones are not worth the thread hand-off.
const BESIDE_MIN_EVENTS: usize = 256;

impl Sinks {
    /// Applies one record; a panic on the way is caught and recorded as a
    /// fault of the `apply` part (the record stays in the log).
    pub(crate) fn apply(&self, lsn: Lsn, payload: &[u8], live: Option<Live>) {
        if self.faults.any() {
            // State is no longer trusted; the next start replays from the
            // last flush, which the log still holds.
            return;
        }
        self.faults
            .run("apply", || self.apply_unguarded(lsn, payload, live));
    }

    fn apply_unguarded(&self, lsn: Lsn, payload: &[u8], live: Option<Live>) {
        // A live append carries its record along; only replay decodes.
        let (record, outcome) = match live {
            Some(l) => (l.record, l.outcome),
            None => match Record::decode(payload) {
                Ok(r) => (r, None),
                Err(e) => {
                    // The CRC matched, so this is a bug or a newer format,
                    // not disk damage.
                    tracing::error!(lsn, error = %e, "skipping undecodable log record");
                    UNDECODABLE.inc();
                    return;
                }
            },
        };
        match record {
            Record::Events(parts) => self.apply_events(lsn, parts),
            Record::Import(staged) => self.apply_import(lsn, &staged, outcome.as_deref()),
            Record::Seal { retire } => self.apply_seal(lsn, retire),
        }
    }

    /// One request's events, every stream's part under one position.
    fn apply_events(&self, lsn: Lsn, parts: Vec<(String, Batch)>) {
        // Held until the record is in the store and in every rollup: a
        // flush waits for it (see `flush_and_compact`).
        let mut applied = self.applied.lock();
        let events: usize = parts.iter().map(|(_, b)| b.len()).sum();
        let to_store = |parts: &[(String, Batch)]| {
            if lsn > self.store_after {
                for (stream, batch) in parts {
                    self.store.apply(lsn, stream, batch);
                }
            }
        };
        match &self.beside {
            Some(worker) if events >= BESIDE_MIN_EVENTS => {
                let parts = Arc::new(parts);
                let sent = worker.send(lsn, parts.clone());
                to_store(&parts);
                if sent {
                    worker.wait();
                }
                crate::follow::deliver(&self.followers, lsn, &parts);
            }
            _ => {
                apply_rollups(&self.rollups, lsn, &parts);
                to_store(&parts);
                crate::follow::deliver(&self.followers, lsn, &parts);
            }
        }
        *applied = (*applied).max(lsn);
    }
}

impl Sinks {
    /// A seal: the store cuts its tail here (writing the previous cut
    /// first, if it is still waiting). A store that cannot write stops
    /// applying: it must not cut anywhere else than the log says.
    fn apply_seal(&self, lsn: Lsn, retire: Vec<u64>) {
        let mut applied = self.applied.lock();
        if lsn > self.store_after {
            if let Err(e) = self.store.seal(lsn, retire) {
                panic!("cannot write the segments cut at {lsn}: {e}");
            }
        }
        // It holds no events: every rollup has counted everything up to it
        // (so their snapshots cover it, and a node starting from them does
        // not ask the stream for it).
        self.rollups.advance(lsn);
        *applied = (*applied).max(lsn);
    }
}

fn apply_rollups(rollups: &RollupSet, lsn: Lsn, parts: &[(String, Batch)]) {
    let t = Instant::now();
    let parts: Vec<(&str, &Batch)> = parts.iter().map(|(s, b)| (s.as_str(), b)).collect();
    rollups.apply_parts(lsn, &parts);
    ROLLUP_APPLY_SECONDS.observe(t.elapsed().as_secs_f64());
}

/// One record's batches for the rollup worker: its LSN and each stream's
/// batch.
type RollupJob = (Lsn, Arc<Vec<(String, Batch)>>);

/// A thread that counts one record at a time into the rollups, for the
/// apply thread, which waits for it before the record is acknowledged.
pub(crate) struct RollupWorker {
    jobs: std::sync::mpsc::SyncSender<RollupJob>,
    done: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl RollupWorker {
    pub(crate) fn spawn(rollups: Arc<RollupSet>, faults: Arc<Faults>) -> Result<Arc<RollupWorker>> {
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<RollupJob>(1);
        let (finished, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("tally-rollup-apply".into())
            .spawn(move || {
                // Ends when the apply hook (and with it the sender) is dropped.
                for (lsn, record) in inbox {
                    // A panic is caught and recorded; the apply thread is
                    // told the record is done either way, so it never waits
                    // for a thread that is gone.
                    faults.run("rollups", || apply_rollups(&rollups, lsn, &record));
                    if finished.send(()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Rollup(tally_rollup::Error::Io(e)))?;
        Ok(Arc::new(RollupWorker {
            jobs,
            done: Mutex::new(done),
        }))
    }

    /// Hands a record to the worker; false if the worker is gone.
    fn send(&self, lsn: Lsn, record: Arc<Vec<(String, Batch)>>) -> bool {
        self.jobs.send((lsn, record)).is_ok()
    }

    fn wait(&self) {
        // An error means the worker is gone, and with it the record's
        // rollups: that can only follow a fault already recorded.
        let _ = self.done.lock().recv();
    }
}

impl Sinks {
    /// Applies a commit record: counts the staged rows into the rollups
    /// that lack them, then has the catalog adopt the files (unless it
    /// already has: a replay after the catalog took them).
    pub(crate) fn apply_import(
        &self,
        lsn: Lsn,
        staged: &StagedImport,
        outcome: Option<&OnceLock<std::result::Result<bool, String>>>,
    ) {
        let mut applied = self.applied.lock();
        let dir = self.store.dir().to_path_buf();
        let adopted = self.store.imported(&staged.batch_id).is_some();
        if !adopted {
            self.fetch_staged(lsn, staged);
        }
        let present = staged.files.iter().all(|f| dir.join(&f.path).is_file());
        let result = if !adopted && !present {
            // The log took the record but its writer was told it failed
            // and discarded the files: the import was rolled back.
            tracing::warn!(batch_id = %staged.batch_id, lsn, "commit record without its staged files: the import was rolled back");
            Err("the staged files are gone".to_string())
        } else {
            let mut read_failed = None;
            let fed = self.rollups.apply_each(lsn, &staged.stream, &mut |feed| {
                for (i, f) in staged.files.iter().enumerate() {
                    // Where adoption moved it, after a replay of an
                    // adopted import.
                    let path = self
                        .store
                        .import_file(staged, i)
                        .unwrap_or_else(|| dir.join(&f.path));
                    let batches = tally_store::read_segment(&path).and_then(|rbs| {
                        rbs.iter()
                            .map(tally_store::batch_from_arrow)
                            .collect::<tally_store::Result<Vec<_>>>()
                    });
                    match batches {
                        Ok(bs) => bs.iter().for_each(&mut *feed),
                        Err(e) => read_failed = Some(e.to_string()),
                    }
                }
            });
            if let Some(e) = read_failed.filter(|_| fed) {
                tracing::error!(batch_id = %staged.batch_id, error = %e, "rollups of '{}' miss part of an import; rebuild them (POST /v1/rollups/NAME/rebuild)", staged.stream);
            }
            if adopted {
                Ok(false)
            } else {
                if outcome.is_some() && failpoint_before_adopt() {
                    // A crash test's crash: the commit record is durable,
                    // the catalog has not adopted the files.
                    std::process::abort();
                }
                self.store.adopt(lsn, staged).map_err(|e| {
                    tracing::error!(batch_id = %staged.batch_id, lsn, error = %e, "cannot adopt a committed import; it is not visible, and a retry with the same batch id imports it");
                    e.to_string()
                })
            }
        };
        if result == Ok(true) {
            ACCEPTED.inc_by(staged.rows);
        }
        if let Some(o) = outcome {
            let _ = o.set(result);
        }
        *applied = (*applied).max(lsn);
    }
}

impl Sinks {
    /// Cluster mode: puts the import's staged files that are not on this
    /// node's disk (it was staged on another node) where staging would have
    /// put them, from the shared archive. A file that cannot be fetched is
    /// retried, then left missing: the import then counts as rolled back
    /// here, which the log says it was not, so it is logged as an error.
    fn fetch_staged(&self, lsn: Lsn, staged: &StagedImport) {
        let (Some(shared), Some(prefix)) = (&self.shared, &staged.shared) else {
            return;
        };
        let dir = self.store.dir().to_path_buf();
        let missing: Vec<&tally_store::StagedFile> = staged
            .files
            .iter()
            .filter(|f| !dir.join(&f.path).is_file())
            .collect();
        if missing.is_empty() {
            return;
        }
        let fetch = || -> std::result::Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            for f in &missing {
                let name = f.path.rsplit('/').next().unwrap_or(&f.path);
                let key = format!("{prefix}/{name}");
                let mut tries = 0;
                let bytes = loop {
                    match rt.block_on(shared.get(&key)) {
                        Ok(Some(b)) => break b,
                        Ok(None) => return Err(format!("{key} is not in the shared archive")),
                        Err(e) if tries < 5 => {
                            tries += 1;
                            tracing::warn!(key, error = %e, "fetching an import's staged file; will retry");
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                        Err(e) => return Err(e),
                    }
                };
                tally_store::put_staged_file(&dir, &staged.batch_id, &f.path, &bytes)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        // On a thread of its own: this may run inside the log's runtime.
        let fetched = std::thread::scope(|s| s.spawn(fetch).join())
            .unwrap_or_else(|_| Err("the fetching thread panicked".into()));
        if let Err(e) = fetched {
            tracing::error!(batch_id = %staged.batch_id, lsn, error = %e, "cannot fetch a committed import's staged files");
        }
    }
}

/// `TALLY_FAILPOINT=import_before_adopt`: the process aborts between a
/// commit record being durable and the catalog adopting its files, the
/// narrowest window of a crash during an import (used by the crash tests).
fn failpoint_before_adopt() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("TALLY_FAILPOINT").is_ok_and(|v| v == "import_before_adopt"))
}
