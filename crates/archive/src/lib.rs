//! The raw archive: every event, as Parquet in object storage.
//!
//! Sealed segments (their hour ended more than `settle` ago) are copied, as
//! the very files the store wrote, to an object store: a local directory by
//! default, any S3-compatible store by configuration. `manifest.json` at the
//! archive's root names every archived segment; an object it does not name
//! is not part of the archive (an upload cut short, a file about to be
//! deleted). The layout is the data directory's:
//!
//! ```text
//! manifest.json
//! segments/<stream>/<YYYY-MM-DD>/<HH>/<id>.parquet
//! ```
//!
//! so DuckDB reads a stream's history directly with
//! `read_parquet('…/segments/<stream>/**/*.parquet', union_by_name = true)`.
//!
//! The archive mirrors the store's catalog: when compaction merges
//! segments, the merged segment is uploaded and the inputs leave the
//! manifest and then the object store, so each event is archived exactly
//! once. Segments that retention removes from the data directory stay in
//! the archive, marked `local: false`; they are what queries and rollup
//! rebuilds read there. The store lists such segments as *retired* in the
//! same catalog commit that removes them, until the archive has recorded
//! them, so a crash between the two steps never turns "removed by
//! retention" into "replaced by compaction".
//!
//! One process writes one archive (one data directory per archive prefix).
//! In cluster mode the archive is shared ([`ArchiveOptions::shared`]): every
//! node holds the same segments under the same ids (the log cuts them), the
//! node holding the maintenance lease writes the archive, and the others
//! read its manifest again at each pass. A node takes over from the
//! manifest as the last holder left it, once its own segments have caught
//! up with the manifest's checkpoint.

mod metrics;
mod options;
mod shared;
use options::{build_store, sync_put};
pub use options::{default_dir, ArchiveOptions, Location, URL_FORMS};
pub use shared::{Listed, Shared};

pub use metrics::init as init_metrics;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use metrics::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::{Mutex, RwLock};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_store::{SegmentMeta, Store, HOUR_US};

pub const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("archive {url}: {reason}")]
    Config { url: String, reason: String },

    #[error("archive {url}: {op} {key}: {source}")]
    Store {
        url: String,
        op: &'static str,
        key: String,
        source: Box<object_store::Error>,
    },

    #[error("archive {url}: manifest: {reason}")]
    Manifest { url: String, reason: String },

    #[error("archive {url}: segment {key}: {reason}")]
    Segment {
        url: String,
        key: String,
        reason: String,
    },

    #[error(transparent)]
    Local(#[from] tally_store::Error),

    #[error("archive: cannot start its I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// One archived segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// As in the catalog; `path` is also the object's key in the archive.
    #[serde(flatten)]
    pub meta: SegmentMeta,
    /// Whether the data directory still holds it (false once retention
    /// removed it there: the archive is then its only copy).
    pub local: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The catalog checkpoint of the store whose segments the manifest
    /// names, when it was written. In a shared archive a node whose own
    /// checkpoint is behind it does not write the manifest yet.
    #[serde(default)]
    pub checkpoint_lsn: u64,
    pub segments: Vec<Entry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT,
            checkpoint_lsn: 0,
            segments: Vec::new(),
        }
    }
}

/// In a shared archive: whether this node may write it now.
pub type Writer = Arc<dyn Fn() -> bool + Send + Sync>;

/// Objects the manifest does not name are removed from a shared archive
/// only once this old: a holder that lost its lease mid-pass may still be
/// putting them.
const UNNAMED_MIN_AGE: Duration = Duration::from_secs(3600);

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Segments recorded as no longer local (retention).
    pub retired: usize,
    /// Segments dropped because compaction merged them into an uploaded one.
    pub replaced: usize,
    /// Local segments not archived yet (their partition has not settled).
    pub pending: usize,
    /// Archived segments put again under the key their local file moved
    /// to (imports adopted before they lived in their stream's directory).
    pub relocated: usize,
    /// A shared archive: this node did not write it (another holds the
    /// lease, or this node's segments are behind the manifest).
    pub skipped: Option<&'static str>,
}

/// The archive's state, for status pages.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub url: String,
    pub segments: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Segments only the archive holds.
    pub archive_only_segments: usize,
    pub archive_only_rows: u64,
    pub pending_segments: usize,
    pub last_pass_unix_ms: Option<i64>,
    pub last_error: Option<String>,
}

pub struct Archive {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// For an archive in a local directory: its path, to fsync what is put
    /// (the file system store does not).
    local_root: Option<PathBuf>,
    settle: Duration,
    interval: Duration,
    manifest: RwLock<Arc<Manifest>>,
    /// One pass at a time.
    pass: Mutex<()>,
    last: Mutex<(Option<i64>, Option<String>, usize)>,
    /// Always `Some` until dropped (taken then, to be shut down without
    /// blocking: the archive may be dropped inside an async context).
    rt: Option<tokio::runtime::Runtime>,
    shared: bool,
    writer: RwLock<Option<Writer>>,
    /// Whether this node wrote the shared archive at its last pass (a new
    /// term starts with a sweep of old unnamed objects).
    writing: Mutex<bool>,
}

impl Drop for Archive {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archive({})", self.url)
    }
}

impl Archive {
    /// Connects to the archive, loads its manifest (an empty one if there
    /// is none yet) and deletes objects the manifest does not name.
    pub fn open(opts: &ArchiveOptions) -> Result<Archive> {
        let (store, local_root) = build_store(opts)?;
        // I/O runs on this runtime's worker, which is always driven, so
        // pooled connections stay usable from any thread or runtime.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tally-archive-io")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        WRITER.set(!opts.shared as i64);
        let archive = Archive {
            url: opts.url.clone(),
            store,
            local_root,
            settle: opts.settle,
            interval: opts.interval,
            manifest: RwLock::new(Arc::new(Manifest::default())),
            pass: Mutex::new(()),
            last: Mutex::new((None, None, 0)),
            rt: Some(rt),
            shared: opts.shared,
            writer: RwLock::new(None),
            writing: Mutex::new(false),
        };
        let manifest = archive.block_on(archive.load_manifest())?;
        *archive.manifest.write() = Arc::new(manifest);
        // Another node may be writing a shared archive right now.
        if !archive.shared {
            archive.sweep(Duration::ZERO)?;
        }
        archive.export_gauges();
        Ok(archive)
    }

    /// Removes objects the manifest does not name that are at least
    /// `min_age` old.
    fn sweep(&self, min_age: Duration) -> Result<()> {
        let removed = self.block_on(self.remove_unnamed(min_age))?;
        if removed > 0 {
            tracing::info!(url = %self.url, objects = removed, "removed archive objects the manifest does not name");
        }
        Ok(())
    }

    /// A shared archive: says when this node may write it (the holder of
    /// the maintenance lease). Until set, it does not.
    pub fn set_writer(&self, writer: Writer) {
        *self.writer.write() = Some(writer);
    }

    fn may_write(&self) -> bool {
        !self.shared || self.writer.read().as_ref().is_some_and(|w| w())
    }

    /// Runs archive I/O to completion on the archive's runtime.
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store, keys relative to the archive's root (for query
    /// engines that read the archived Parquet directly).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest.read().clone()
    }

    /// Whether the segment is archived.
    pub fn holds(&self, id: u64) -> bool {
        self.manifest
            .read()
            .segments
            .iter()
            .any(|e| e.meta.id == id)
    }

    /// The archived segments a reader of `stream` between `lo` and `hi`
    /// (µs, inclusive) reads here rather than locally: those retention
    /// removed from the data directory (`retired` are removed but not yet
    /// recorded as such), except any the reader's `local` view still has.
    ///
    /// Retention removes only archived segments, so a retired one is read
    /// here even when this copy of the manifest does not name it yet (a
    /// shared archive's manifest, read again at the next pass, on a node
    /// that applied the retention first): its key is its path, the same on
    /// every node.
    pub fn segments_for(
        &self,
        stream: &str,
        lo: Option<i64>,
        hi: Option<i64>,
        local: &HashSet<u64>,
        retired: &[SegmentMeta],
    ) -> Vec<SegmentMeta> {
        let (lo, hi) = (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
        let in_range = |m: &SegmentMeta| m.stream == stream && m.max_ts >= lo && m.min_ts <= hi;
        let manifest = self.manifest.read();
        let mut out: Vec<SegmentMeta> = manifest
            .segments
            .iter()
            .filter(|e| in_range(&e.meta))
            .filter(|e| !e.local || retired.iter().any(|r| r.id == e.meta.id))
            .filter(|e| !local.contains(&e.meta.id))
            .map(|e| e.meta.clone())
            .collect();
        for r in retired {
            if in_range(r) && !local.contains(&r.id) && !out.iter().any(|m| m.id == r.id) {
                out.push(r.clone());
            }
        }
        out
    }

    /// Reads one archived segment. Blocking: not for async contexts.
    pub fn read(&self, meta: &SegmentMeta) -> Result<Vec<RecordBatch>> {
        let key = ObjectPath::from(meta.path.as_str());
        let bytes = self.block_on(async {
            let got = self
                .store
                .get(&key)
                .await
                .map_err(|e| self.err("get", &key, e))?;
            got.bytes().await.map_err(|e| self.err("get", &key, e))
        })?;
        let bad = |reason: String| Error::Segment {
            url: self.url.clone(),
            key: meta.path.clone(),
            reason,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))
    }

    /// One pass: uploads the local segments of settled partitions the
    /// archive lacks, records segments retention removed, and drops the
    /// ones compaction replaced. Nothing changes in the manifest unless
    /// every upload of the pass succeeded.
    pub fn sync(&self, local: &Store, now_us: i64) -> Result<SyncReport> {
        let _pass = self.pass.lock();
        let t = Instant::now();
        let result = self.sync_inner(local, now_us);
        let mut last = self.last.lock();
        last.0 = Some(now_us / 1000);
        match &result {
            Ok(r) => {
                last.1 = None;
                last.2 = r.pending;
                PASSES.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                last.1 = Some(e.to_string());
                PASSES.with_label_values(&["failed"]).inc();
            }
        }
        drop(last);
        PASS_SECONDS.observe(t.elapsed().as_secs_f64());
        self.export_gauges();
        result
    }

    fn sync_inner(&self, local: &Store, now_us: i64) -> Result<SyncReport> {
        if self.shared {
            // Another node may have written it since this one last read it.
            let m = self.block_on(self.load_manifest())?;
            *self.manifest.write() = Arc::new(m);
            let writing = self.may_write();
            WRITER.set(writing as i64);
            let new_term = writing && !std::mem::replace(&mut *self.writing.lock(), writing);
            if !writing {
                self.forget_archived_retired(local)?;
                return Ok(SyncReport {
                    skipped: Some("another node holds the maintenance lease"),
                    ..Default::default()
                });
            }
            if local.checkpoint_lsn() < self.manifest().checkpoint_lsn {
                return Ok(SyncReport {
                    skipped: Some("this node's segments are behind the manifest"),
                    ..Default::default()
                });
            }
            if new_term {
                self.sweep(UNNAMED_MIN_AGE)?;
            }
        }
        // Read before the listing, which then holds every record up to it.
        let checkpoint_lsn = local.checkpoint_lsn();
        let (files, retired) = local.segment_files();
        let current = self.manifest();
        let mut report = SyncReport::default();
        let archived: HashMap<u64, &Entry> =
            current.segments.iter().map(|e| (e.meta.id, e)).collect();
        let settle = self.settle.as_micros() as i64;
        let mut added = Vec::new();
        let mut moved = HashSet::new();
        for f in &files {
            if let Some(e) = archived.get(&f.meta.id) {
                if e.meta.path == f.meta.path {
                    continue;
                }
                // Same segment, new local name: archived again under it,
                // so the archive's layout follows the data directory's.
                moved.insert(f.meta.id);
                report.relocated += 1;
            } else if f.meta.partition + HOUR_US + settle > now_us {
                report.pending += 1;
                continue;
            }
            // `f` keeps the file while it is read, even if compaction
            // replaces the segment meanwhile.
            let bytes = std::fs::read(&f.path)
                .map_err(|e| tally_store::Error::io(&f.path, e))
                .map_err(Error::Local)?;
            let key = ObjectPath::from(f.meta.path.as_str());
            let size = bytes.len() as u64;
            self.put(&key, PutPayload::from(Bytes::from(bytes)))?;
            UPLOADED_SEGMENTS.inc();
            UPLOADED_BYTES.inc_by(size);
            if !moved.contains(&f.meta.id) {
                report.uploaded += 1;
                report.uploaded_bytes += size;
            }
            added.push(Entry {
                meta: f.meta.clone(),
                local: true,
            });
        }
        let in_store: HashSet<u64> = files.iter().map(|f| f.meta.id).collect();
        let retired_ids: HashSet<u64> = retired.iter().map(|m| m.id).collect();
        let mut next = Manifest {
            checkpoint_lsn: checkpoint_lsn.max(current.checkpoint_lsn),
            ..Manifest::default()
        };
        let mut doomed = Vec::new();
        for e in &current.segments {
            let id = e.meta.id;
            if moved.contains(&id) {
                // Its entry under the new key is in `added`.
                doomed.push(ObjectPath::from(e.meta.path.as_str()));
            } else if e.local && retired_ids.contains(&id) {
                next.segments.push(Entry {
                    meta: e.meta.clone(),
                    local: false,
                });
                report.retired += 1;
            } else if e.local && !in_store.contains(&id) {
                // Compaction merged it; the merged segment is in `added`
                // (same partition, so settled too) or already archived.
                doomed.push(ObjectPath::from(e.meta.path.as_str()));
                report.replaced += 1;
            } else {
                next.segments.push(e.clone());
            }
        }
        for m in &retired {
            if !archived.contains_key(&m.id) {
                // Retention only removes archived segments; this one was
                // lost with an archive that was replaced or emptied.
                tracing::error!(url = %self.url, segment = %m.path, rows = m.rows, "a segment retention removed is not in the archive");
            }
        }
        next.segments.extend(added);
        let changed = report.uploaded + report.retired + report.replaced + report.relocated > 0;
        if changed || (self.shared && next.checkpoint_lsn > current.checkpoint_lsn) {
            next.segments.sort_by_key(|e| e.meta.id);
            if !self.may_write() {
                return Err(Error::Manifest {
                    url: self.url.clone(),
                    reason: "this node lost the maintenance lease during the pass; the manifest is left as it was".into(),
                });
            }
            self.save_manifest(&next)?;
            *self.manifest.write() = Arc::new(next);
        }
        if !retired.is_empty() {
            let ids: Vec<u64> = retired.iter().map(|m| m.id).collect();
            local.acknowledge_retired(&ids)?;
        }
        for key in doomed {
            match self.block_on(self.store.delete(&key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                // Unnamed now; removed at the next open.
                Err(e) => {
                    tracing::warn!(url = %self.url, key = %key, error = %e, "cannot delete a replaced archive object")
                }
            }
        }
        Ok(report)
    }

    /// A shared archive, on a node that does not write it: forgets the
    /// retired segments the manifest already records as archive-only.
    fn forget_archived_retired(&self, local: &Store) -> Result<()> {
        let (_, retired) = local.segment_files();
        if retired.is_empty() {
            return Ok(());
        }
        let m = self.manifest();
        let recorded: Vec<u64> = retired
            .iter()
            .filter(|r| m.segments.iter().any(|e| e.meta.id == r.id && !e.local))
            .map(|r| r.id)
            .collect();
        if !recorded.is_empty() {
            local.acknowledge_retired(&recorded)?;
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        let m = self.manifest();
        let last = self.last.lock().clone();
        let only = m.segments.iter().filter(|e| !e.local);
        Status {
            url: self.url.clone(),
            segments: m.segments.len(),
            rows: m.segments.iter().map(|e| e.meta.rows).sum(),
            bytes: m.segments.iter().map(|e| e.meta.bytes).sum(),
            archive_only_segments: only.clone().count(),
            archive_only_rows: only.map(|e| e.meta.rows).sum(),
            pending_segments: last.2,
            last_pass_unix_ms: last.0,
            last_error: last.1,
        }
    }

    fn export_gauges(&self) {
        let m = self.manifest();
        SEGMENTS.set(m.segments.len() as i64);
        BYTES.set(m.segments.iter().map(|e| e.meta.bytes as i64).sum());
        ONLY_SEGMENTS.set(m.segments.iter().filter(|e| !e.local).count() as i64);
        PENDING.set(self.last.lock().2 as i64);
    }

    async fn load_manifest(&self) -> Result<Manifest> {
        let key = ObjectPath::from(MANIFEST);
        let got = match self.store.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(Manifest::default()),
            Err(e) => return Err(self.err("get", &key, e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.err("get", &key, e))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        if m.format != FORMAT {
            return Err(Error::Manifest {
                url: self.url.clone(),
                reason: format!("unknown manifest format {}", m.format),
            });
        }
        Ok(m)
    }

    /// Replaces the manifest: one `put`, which object stores make atomic.
    fn save_manifest(&self, m: &Manifest) -> Result<()> {
        let key = ObjectPath::from(MANIFEST);
        let text = serde_json::to_vec_pretty(m).map_err(|e| Error::Manifest {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        self.put(&key, PutPayload::from(text))
    }

    /// Puts an object; in a local directory, also makes it durable.
    fn put(&self, key: &ObjectPath, payload: PutPayload) -> Result<()> {
        self.block_on(self.store.put(key, payload))
            .map_err(|e| self.err("put", key, e))?;
        if let Some(root) = &self.local_root {
            sync_put(root, key)
                .map_err(|(path, e)| Error::Local(tally_store::Error::io(&path, e)))?;
        }
        Ok(())
    }

    async fn remove_unnamed(&self, min_age: Duration) -> Result<usize> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::zero());
        let named: HashSet<String> = self
            .manifest()
            .segments
            .iter()
            .map(|e| e.meta.path.clone())
            .collect();
        let prefix = ObjectPath::from("segments");
        let mut listing = self.store.list(Some(&prefix));
        let mut unnamed = Vec::new();
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|e| self.err("list", &prefix, e))?;
            if !named.contains(meta.location.as_ref()) && meta.last_modified <= cutoff {
                unnamed.push(meta.location);
            }
        }
        for key in &unnamed {
            match self.store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("delete", key, e)),
            }
        }
        Ok(unnamed.len())
    }

    fn err(&self, op: &'static str, key: &ObjectPath, source: object_store::Error) -> Error {
        ERRORS.with_label_values(&[op]).inc();
        Error::Store {
            url: self.url.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests;
