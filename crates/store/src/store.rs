//! The store itself: applies records and answers reads over the tail and
//! the segments; flushing (`store/flush.rs`) and compaction
//! (`store/compaction.rs`) are its children.

use crate::catalog::{sync_dir, Catalog, SegmentMeta};
use crate::memtable::{MemTable, PartitionBuffer, Seal};
use crate::metrics::*;
use crate::schema::{Schemas, StreamSchema};
use crate::segment::{
    arrow_schema, concat_aligned, read_segment, write_segment, COMPACT_ZSTD_LEVEL, FLUSH_ZSTD_LEVEL,
};
use crate::{Error, Result};
use arrow::datatypes::{Field, Schema};
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_ingest::Batch;

mod compaction;
mod flush;
#[cfg(test)]
use compaction::compaction_candidate;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The data directory (the catalog and `segments/` live here).
    pub dir: PathBuf,
    /// Compaction merges segments of similar size once a partition has this
    /// many of them (see `store/compaction.rs`).
    pub compaction_fanout: usize,
    /// Segments this large are not merged further; a merge reads at most
    /// this many rows, which bounds its memory.
    pub compaction_max_rows: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Cluster mode: the tail is cut only where a seal record in the log
    /// cuts it ([`Store::seal`]), and segment ids are a function of the
    /// log ([`sealed_segment_id`]), so every node that applied the same
    /// records holds the same segments under the same ids.
    pub sealed: bool,
}

impl StoreOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            dir: dir.into(),
            compaction_fanout: 4,
            compaction_max_rows: 1 << 20,
            row_group_rows: 1 << 20,
            sealed: false,
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    pub rows: usize,
    pub segments: usize,
    pub bytes: u64,
    /// The catalog's checkpoint after the flush: the log may drop records
    /// at or below it.
    pub checkpoint_lsn: u64,
}

/// Size and extent of one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    pub rows: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub memory_rows: u64,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

pub struct Store {
    opts: StoreOptions,
    schemas: Schemas,
    catalog: RwLock<Catalog>,
    /// One handle per segment the catalog names; readers hold clones so a
    /// file compaction replaced is deleted only once no reader needs it.
    files: Mutex<HashMap<u64, Arc<SegmentFile>>>,
    active: RwLock<MemTable>,
    frozen: RwLock<Option<Arc<MemTable>>>,
    /// Per stream, per partition: a version that grows whenever the
    /// partition changes (a record applied, segments dropped by retention).
    /// A cached answer is valid while the partitions it read keep their
    /// versions.
    versions: Mutex<Versions>,
    /// One flush or compaction step at a time.
    maintenance: Mutex<()>,
    /// When this store last applied a seal (cluster mode).
    last_seal: Mutex<Option<Instant>>,
}

/// A segment file a reader may use. When compaction replaces it, it is
/// marked obsolete and deleted when the last handle is dropped.
#[derive(Debug)]
pub struct SegmentFile {
    pub meta: SegmentMeta,
    /// Absolute path.
    pub path: PathBuf,
    obsolete: AtomicBool,
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot delete a replaced segment");
                }
            }
        }
    }
}

/// What a query reads of one stream: the segments and in-memory rows that
/// may hold events in the asked time range, taken in one consistent view
/// (each row is in exactly one of them).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub schema: StreamSchema,
    pub segments: Vec<Arc<SegmentFile>>,
    /// Segments of the stream retention removed from the data directory
    /// that an archive holds but has not yet recorded as gone: a reader of
    /// the archive reads them there.
    pub retired: Vec<SegmentMeta>,
    /// In-memory rows as record batches, each with `ts` and a subset of the
    /// schema's columns (the ones that existed when it was built).
    pub memory: Vec<arrow::record_batch::RecordBatch>,
}

impl Store {
    /// Opens the store in `opts.dir`: loads the catalog and deletes segment
    /// files the catalog does not name (left by a crash mid-flush).
    pub fn open(opts: StoreOptions) -> Result<Store> {
        fs::create_dir_all(&opts.dir).map_err(|e| Error::io(&opts.dir, e))?;
        let mut catalog = Catalog::load(&opts.dir)?;
        crate::import::relocate_adopted_imports(&opts.dir, &mut catalog)?;
        let known: HashSet<PathBuf> = catalog
            .segments
            .iter()
            .map(|s| opts.dir.join(&s.path))
            .collect();
        let mut removed = 0;
        remove_orphans(&opts.dir.join("segments"), &known, &mut removed)?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed segment files not named by the catalog"
            );
        }
        let schemas = Schemas::new(catalog.streams.clone());
        let files = catalog
            .segments
            .iter()
            .map(|m| (m.id, SegmentFile::new(&opts.dir, m)))
            .collect();
        let store = Store {
            opts,
            schemas,
            catalog: RwLock::new(catalog),
            files: Mutex::new(files),
            active: RwLock::new(MemTable::new()),
            frozen: RwLock::new(None),
            versions: Mutex::new(Versions::default()),
            maintenance: Mutex::new(()),
            last_seal: Mutex::new(None),
        };
        store.update_segment_gauges();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Whether the log cuts the tail (cluster mode, [`StoreOptions::sealed`]).
    pub fn sealed(&self) -> bool {
        self.opts.sealed
    }

    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// Every log record at or below this LSN is in segments.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.catalog.read().checkpoint_lsn
    }

    /// Applies one log record. Called in LSN order by the log's apply thread
    /// (and by replay at startup).
    pub fn apply(&self, lsn: u64, stream: &str, batch: &Batch) {
        let conflicts = self.schemas.widen(stream, batch);
        if !conflicts.is_empty() {
            tracing::error!(stream, lsn, columns = ?conflicts, "dropping columns whose type conflicts with the schema");
            SCHEMA_APPLY_CONFLICTS.inc_by(conflicts.len() as u64);
        }
        let mut active = self.active.write();
        let touched = active.append(lsn, stream, batch, &conflicts);
        let (rows, bytes) = (active.rows, active.bytes);
        drop(active);
        if !touched.is_empty() {
            self.versions.lock().bump(stream, &touched, lsn);
        }
        let (frows, fbytes) = self
            .frozen
            .read()
            .as_ref()
            .map_or((0, 0), |f| (f.rows, f.bytes));
        MEM_ROWS.set((rows + frows) as i64);
        MEM_BYTES.set((bytes + fbytes) as i64);
    }

    /// Bytes held in memory (active tail plus a flush in progress, and the
    /// Arrow copies readers made of them).
    pub fn memory_bytes(&self) -> usize {
        let held = |m: &MemTable| m.bytes + m.chunk_bytes.load(Ordering::Relaxed);
        // One guard at a time: holding `active` while waiting for `frozen`
        // would deadlock with a flush, which holds `frozen` and waits for
        // `active` (the lock order is catalog, frozen, active).
        let frozen = self.frozen.read().as_ref().map_or(0, |f| held(f));
        let active = held(&self.active.read());
        frozen + active
    }

    /// The data version of `stream` between `lo` and `hi` (µs, inclusive):
    /// the version of the last change to a partition in that range (at
    /// least the LSN of the last record applied there), or 0. It only grows,
    /// so an answer computed at version v is still the answer while the
    /// version is v.
    pub fn data_version(&self, stream: &str, lo: Option<i64>, hi: Option<i64>) -> u64 {
        let versions = self.versions.lock();
        let Some(v) = versions.per_stream.get(stream) else {
            return 0;
        };
        let first = lo.map_or(i64::MIN, crate::partition_of);
        let last = hi.unwrap_or(i64::MAX);
        v.range(first..=last)
            .map(|(_, lsn)| *lsn)
            .max()
            .unwrap_or(0)
    }

    /// What a query of `stream` between `lo` and `hi` (µs, inclusive) reads;
    /// `None` if there is no such stream.
    pub fn snapshot(
        &self,
        stream: &str,
        lo: Option<i64>,
        hi: Option<i64>,
    ) -> Result<Option<Snapshot>> {
        let Some(schema) = self.schemas.get(stream) else {
            return Ok(None);
        };
        let (lo, hi) = (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
        let overlaps = |min: i64, max: i64| max >= lo && min <= hi;
        // The flush's lock order; each hand-over holds both sides, so each
        // row is seen exactly once.
        let catalog = self.catalog.read();
        let frozen = self.frozen.read();
        let active = self.active.read();
        let files = self.files.lock();
        let segments = catalog
            .segments
            .iter()
            .filter(|m| m.stream == stream && overlaps(m.min_ts, m.max_ts))
            .filter_map(|m| files.get(&m.id).cloned())
            .collect();
        drop(files);
        let retired = catalog
            .retired
            .iter()
            .filter(|m| m.stream == stream)
            .cloned()
            .collect();
        let mut memory = Vec::new();
        for table in frozen.iter().map(|f| f.as_ref()).chain([&*active]) {
            for ((s, _), part) in &table.partitions {
                let (min, max) = part.time_range();
                if s == stream && part.rows() > 0 && overlaps(min, max) {
                    memory.extend(part.arrow_chunks(&table.chunk_bytes)?);
                }
            }
        }
        Ok(Some(Snapshot {
            schema,
            segments,
            retired,
            memory,
        }))
    }

    /// Bytes and age of the active tail.
    pub fn active_size(&self) -> (usize, usize, Duration) {
        let a = self.active.read();
        (a.rows, a.bytes, a.created.elapsed())
    }

    /// Every segment, with a handle that keeps its file until dropped, and
    /// the segments retired but not yet acknowledged (see
    /// [`Store::drop_segments`]), in one consistent view.
    pub fn segment_files(&self) -> (Vec<Arc<SegmentFile>>, Vec<SegmentMeta>) {
        let catalog = self.catalog.read();
        let files = self.files.lock();
        let segments = catalog
            .segments
            .iter()
            .filter_map(|m| files.get(&m.id).cloned())
            .collect();
        (segments, catalog.retired.clone())
    }

    /// Removes segments from the data directory (retention). With
    /// `archived`, an archive holds them: they are listed as retired in the
    /// same catalog commit, until [`Store::acknowledge_retired`]. Files go
    /// once no reader holds them. Returns the rows removed.
    pub fn drop_segments(&self, ids: &[u64], archived: bool) -> Result<u64> {
        let _m = self.maintenance.lock();
        let mut cat = self.catalog.read().clone();
        let gone = take_segments(&mut cat, ids, archived);
        if gone.is_empty() {
            return Ok(0);
        }
        cat.save(&self.opts.dir)?;
        let replaced: Vec<u64> = gone.iter().map(|s| s.id).collect();
        let mut catalog = self.catalog.write();
        self.sync_files(&cat, &replaced);
        *catalog = cat;
        drop(catalog);
        Ok(self.retired(&gone))
    }

    /// After a catalog commit that removed `gone` by retention: cached
    /// answers over their partitions are dropped, metrics count them.
    /// Returns the rows removed.
    fn retired(&self, gone: &[SegmentMeta]) -> u64 {
        let mut versions = self.versions.lock();
        for s in gone {
            versions.bump(&s.stream, &[s.partition], 0);
        }
        drop(versions);
        let rows = gone.iter().map(|s| s.rows).sum();
        RETENTION_SEGMENTS.inc_by(gone.len() as u64);
        RETENTION_ROWS.inc_by(rows);
        self.update_segment_gauges();
        rows
    }

    /// Forgets retired segments the archive has recorded as gone.
    pub fn acknowledge_retired(&self, ids: &[u64]) -> Result<()> {
        let _m = self.maintenance.lock();
        let mut cat = self.catalog.read().clone();
        let before = cat.retired.len();
        cat.retired.retain(|s| !ids.contains(&s.id));
        if cat.retired.len() == before {
            return Ok(());
        }
        cat.save(&self.opts.dir)?;
        *self.catalog.write() = cat;
        Ok(())
    }

    /// The in-memory rows of `stream`'s first partition as one Arrow batch;
    /// for benchmarks and tests of the flush steps.
    #[doc(hidden)]
    pub fn partition_record_batch(&self, stream: &str) -> Option<arrow::record_batch::RecordBatch> {
        self.with_partition(stream, PartitionBuffer::to_record_batch)
    }

    /// [`Self::partition_record_batch`] as a flush writes it: sorted by
    /// time, repeated text as dictionaries.
    #[doc(hidden)]
    pub fn partition_segment_batch(
        &self,
        stream: &str,
    ) -> Option<arrow::record_batch::RecordBatch> {
        self.with_partition(stream, PartitionBuffer::to_segment_batch)
    }

    fn with_partition(
        &self,
        stream: &str,
        convert: impl Fn(&PartitionBuffer, &StreamSchema) -> Result<arrow::record_batch::RecordBatch>,
    ) -> Option<arrow::record_batch::RecordBatch> {
        let active = self.active.read();
        let schema = self.schemas.get(stream).unwrap_or_default();
        let part = active.partitions.iter().find(|((s, _), _)| s == stream)?.1;
        convert(part, &schema).ok()
    }

    /// The segments in the catalog.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.catalog.read().segments.clone()
    }

    /// Rows, segments and time range per stream.
    pub fn stream_stats(&self) -> BTreeMap<String, StreamStats> {
        let mut out: BTreeMap<String, StreamStats> = BTreeMap::new();
        for name in self.schemas.all().keys() {
            out.entry(name.clone()).or_default();
        }
        // One consistent view: the three read guards are held together (in
        // the flush's lock order), so no row is counted twice or missed.
        let catalog = self.catalog.read();
        let frozen = self.frozen.read();
        let active = self.active.read();
        for s in &catalog.segments {
            let e = out.entry(s.stream.clone()).or_default();
            e.rows += s.rows;
            e.segments += 1;
            e.segment_bytes += s.bytes;
            e.min_ts = Some(e.min_ts.map_or(s.min_ts, |m| m.min(s.min_ts)));
            e.max_ts = Some(e.max_ts.map_or(s.max_ts, |m| m.max(s.max_ts)));
        }
        let mut add_mem = |m: &MemTable| {
            for (stream, (rows, lo, hi)) in m.stream_rows() {
                let e = out.entry(stream.to_string()).or_default();
                e.rows += rows as u64;
                e.memory_rows += rows as u64;
                if rows > 0 {
                    e.min_ts = Some(e.min_ts.map_or(lo, |m| m.min(lo)));
                    e.max_ts = Some(e.max_ts.map_or(hi, |m| m.max(hi)));
                }
            }
        };
        if let Some(f) = frozen.as_ref() {
            add_mem(f);
        }
        add_mem(&active);
        out
    }

    /// Adds handles for the segments `cat` names that have none yet, and
    /// retires the `replaced` ones: their files go when the last reader
    /// holding them is done. Called with the catalog's write lock held.
    fn sync_files(&self, cat: &Catalog, replaced: &[u64]) {
        let mut files = self.files.lock();
        for m in &cat.segments {
            files
                .entry(m.id)
                .or_insert_with(|| SegmentFile::new(&self.opts.dir, m));
        }
        for id in replaced {
            if let Some(f) = files.remove(id) {
                f.obsolete.store(true, Ordering::Release);
            }
        }
    }

    pub(crate) fn catalog_read(&self) -> parking_lot::RwLockReadGuard<'_, Catalog> {
        self.catalog.read()
    }

    /// Held by flushes, compactions, retention and catalog changes: while
    /// it is held, no segment file or catalog entry changes or goes.
    pub fn maintenance_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.maintenance.lock()
    }

    /// Swaps in a catalog that adds segments of `stream` (already saved),
    /// as record `lsn`: readers see the new files at once, cached answers
    /// over `partitions` are invalidated, and the checkpoint may pass `lsn`
    /// (nothing of it waits in memory).
    pub(crate) fn install_catalog(&self, cat: Catalog, lsn: u64, stream: &str, partitions: &[i64]) {
        {
            let mut catalog = self.catalog.write();
            self.sync_files(&cat, &[]);
            *catalog = cat;
            let mut active = self.active.write();
            active.last_lsn = active.last_lsn.max(lsn);
        }
        self.versions.lock().bump(stream, partitions, lsn);
        self.update_segment_gauges();
    }

    fn update_segment_gauges(&self) {
        let cat = self.catalog.read();
        SEGMENTS.set(cat.segments.len() as i64);
        SEGMENT_BYTES.set(cat.segments.iter().map(|s| s.bytes as i64).sum());
        let mut per: HashMap<(&str, i64), i64> = HashMap::new();
        for s in &cat.segments {
            *per.entry((s.stream.as_str(), s.partition)).or_default() += 1;
        }
        MAX_SEGMENTS_PER_PARTITION.set(per.values().copied().max().unwrap_or(0));
    }
}

impl SegmentFile {
    fn new(dir: &Path, meta: &SegmentMeta) -> Arc<SegmentFile> {
        Arc::new(SegmentFile {
            meta: meta.clone(),
            path: dir.join(&meta.path),
            obsolete: AtomicBool::new(false),
        })
    }
}

/// Partition versions (see `Store::versions`).
#[derive(Debug, Default)]
struct Versions {
    /// The last version handed out.
    clock: u64,
    per_stream: HashMap<String, BTreeMap<i64, u64>>,
}

impl Versions {
    /// Gives the partitions a new version, at least `lsn`.
    fn bump(&mut self, stream: &str, partitions: &[i64], lsn: u64) {
        self.clock = (self.clock + 1).max(lsn);
        let v = match self.per_stream.get_mut(stream) {
            Some(v) => v,
            None => self.per_stream.entry(stream.to_string()).or_default(),
        };
        for p in partitions {
            v.insert(*p, self.clock);
        }
    }
}

/// `segments/<stream>/<YYYY-MM-DD>/<HH>/<id>.parquet`
/// Takes the segments `ids` names out of `cat` (retention); with
/// `archived` they are listed as retired until the archive records them.
fn take_segments(cat: &mut Catalog, ids: &[u64], archived: bool) -> Vec<SegmentMeta> {
    let ids: HashSet<u64> = ids.iter().copied().collect();
    let (gone, kept): (Vec<SegmentMeta>, Vec<SegmentMeta>) =
        cat.segments.drain(..).partition(|s| ids.contains(&s.id));
    cat.segments = kept;
    if archived {
        cat.retired.extend(gone.iter().cloned());
    }
    gone
}

/// Segment ids in cluster mode are a function of the log, the same on
/// every node: `lsn << 24 | generation << 16 | index`. A seal at `lsn`
/// writes its partitions, in (stream, partition) order, as generation 0
/// with index 0, 1, …; a merge takes the id of its highest input one
/// generation up (an input is merged once, so no two merges share it).
/// Positions up to 2^40 and 65,536 partitions per seal fit.
pub fn sealed_segment_id(lsn: u64, index: usize) -> Result<u64> {
    if lsn >= 1 << 40 || index >= 1 << 16 {
        return Err(Error::Format(format!(
            "a seal at position {lsn} with {} partitions is past what segment ids hold (2^40 positions, 65,536 partitions a seal)",
            index + 1
        )));
    }
    Ok(lsn << 24 | index as u64)
}

/// The id of a merge of `inputs` in cluster mode (see [`sealed_segment_id`]).
pub(crate) fn merged_segment_id(inputs: &[SegmentMeta]) -> Result<u64> {
    let top = inputs.iter().map(|s| s.id).max().unwrap_or(0);
    let generation = (top >> 16) & 0xff;
    if generation == 0xff {
        return Err(Error::Format(format!(
            "segment {top} is merged past the last generation an id holds"
        )));
    }
    Ok((top & !(0xff << 16)) | (generation + 1) << 16)
}

pub(crate) fn segment_path(stream: &str, partition: i64, id: u64) -> String {
    let t: DateTime<Utc> = DateTime::from_timestamp_micros(partition).unwrap_or_default();
    format!(
        "segments/{stream}/{}/{}/{id:012}.parquet",
        t.format("%Y-%m-%d"),
        t.format("%H")
    )
}

fn min_max(ts: &[i64]) -> (i64, i64) {
    ts.iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)))
}

fn remove_orphans(dir: &Path, known: &HashSet<PathBuf>, removed: &mut usize) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
            remove_orphans(&path, known, removed)?;
        } else if !known.contains(&path) {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            *removed += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
