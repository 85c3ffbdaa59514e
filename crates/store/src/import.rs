//! Staged imports: a batch import's events written as segment files beside
//! the store, which the catalog then adopts in one atomic replacement.
//!
//! An [`ImportStage`] buffers parsed rows per partition (like the in-memory
//! tail) and, whenever the buffer passes its budget, writes every partition
//! it holds as a Parquet file under `imports/<batch id>/` (fsync'd). No
//! reader sees these files: only the catalog names segments. When the import
//! is committed, [`Store::adopt`] links them into the stream's segment
//! directory (`segments/<stream>/...`, as flushed segments) and adds them to
//! the catalog together with the batch id, in the same atomic catalog
//! write, so a query sees all of the import or none of it, and a batch id
//! once adopted is never adopted again.
//! A stage dropped before it is finished deletes its directory; one left by
//! a crash is deleted at the next start ([`Store::remove_unadopted_imports`]).

use crate::catalog::{sync_dir, Catalog, ImportEntry, SegmentMeta};
use crate::memtable::MemTable;
use crate::schema::{ColumnDef, StreamSchema};
use crate::segment::{write_segment, FLUSH_ZSTD_LEVEL};
use crate::store::Store;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use tally_ingest::{Batch, Column, ColumnData, ColumnType, NumColumn, StrColumn};

/// Where staged imports live, relative to the data directory.
pub const IMPORTS_DIR: &str = "imports";

/// One staged segment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Relative to the data directory.
    pub path: String,
    pub partition: i64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub bytes: u64,
}

/// A finished stage: everything the commit needs, and what the log's
/// commit record holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedImport {
    pub stream: String,
    pub batch_id: String,
    pub columns: Vec<ColumnDef>,
    pub files: Vec<StagedFile>,
    pub rows: u64,
    /// Cluster mode: where in the shared archive the staged files were put
    /// (each under this prefix by its file name), for every node to fetch
    /// before it adopts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

impl StagedImport {
    /// The partitions the import covers.
    pub fn partitions(&self) -> Vec<i64> {
        let mut p: Vec<i64> = self.files.iter().map(|f| f.partition).collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// An empty batch with the import's columns (for schema checks).
    pub fn column_batch(&self) -> Batch {
        columns_batch(&self.columns)
    }
}

pub(crate) fn columns_batch(columns: &[ColumnDef]) -> Batch {
    Batch {
        ts: Vec::new(),
        columns: columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                data: match c.ty {
                    ColumnType::Dim => ColumnData::Dim(StrColumn::new()),
                    ColumnType::Value => ColumnData::Value(NumColumn::default()),
                },
            })
            .collect(),
    }
}

/// The directory of a batch's staged files, relative to the data directory.
pub fn stage_dir(batch_id: &str) -> String {
    format!("{IMPORTS_DIR}/{batch_id}")
}

/// An import being staged. Dropped unfinished, it deletes what it wrote.
pub struct ImportStage {
    data_dir: PathBuf,
    rel: String,
    stream: String,
    batch_id: String,
    schema: StreamSchema,
    table: MemTable,
    files: Vec<StagedFile>,
    rows: u64,
    spill_bytes: usize,
    row_group_rows: usize,
    finished: bool,
}

impl ImportStage {
    /// Starts staging `batch_id` of `stream` under `data_dir/imports/`,
    /// replacing anything an earlier, unfinished attempt left. Buffers at
    /// most about `spill_bytes` of rows before writing them out.
    pub fn new(
        data_dir: &Path,
        stream: &str,
        batch_id: &str,
        spill_bytes: usize,
    ) -> Result<ImportStage> {
        let rel = stage_dir(batch_id);
        let dir = data_dir.join(&rel);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(ImportStage {
            data_dir: data_dir.to_path_buf(),
            rel,
            stream: stream.to_string(),
            batch_id: batch_id.to_string(),
            schema: StreamSchema::default(),
            table: MemTable::new(),
            files: Vec::new(),
            rows: 0,
            spill_bytes: spill_bytes.max(1 << 20),
            row_group_rows: 1 << 20,
            finished: false,
        })
    }

    /// The columns staged so far and their types.
    pub fn schema(&self) -> &StreamSchema {
        &self.schema
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds rows whose types the caller has checked against the stream and
    /// the rows staged before.
    pub fn add(&mut self, batch: &Batch) -> Result<()> {
        for c in &batch.columns {
            if self.schema.get(&c.name).is_none() {
                let columns = self
                    .schema
                    .columns
                    .iter()
                    .cloned()
                    .chain([ColumnDef {
                        name: c.name.clone(),
                        ty: c.data.column_type(),
                    }])
                    .collect();
                self.schema = StreamSchema::from_columns(columns);
            }
        }
        self.table.append(0, &self.stream, batch, &[]);
        self.rows += batch.len() as u64;
        if self.table.bytes >= self.spill_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes every buffered partition as a staged file.
    fn spill(&mut self) -> Result<()> {
        let table = std::mem::take(&mut self.table);
        let mut parts: Vec<_> = table.partitions.into_iter().collect();
        parts.sort_by_key(|((_, p), _)| *p);
        for ((_, partition), part) in parts {
            if part.rows() == 0 {
                continue;
            }
            let batch = part.to_segment_batch(&self.schema)?;
            let rel = format!("{}/{:06}.parquet", self.rel, self.files.len() + 1);
            let path = self.data_dir.join(&rel);
            let bytes = write_segment(&path, &batch, self.row_group_rows, FLUSH_ZSTD_LEVEL)?;
            let (min_ts, max_ts) = part.time_range();
            self.files.push(StagedFile {
                path: rel,
                partition,
                rows: part.rows() as u64,
                min_ts,
                max_ts,
                bytes,
            });
        }
        Ok(())
    }

    /// Writes what is still buffered and makes the directory durable. The
    /// files stay in place (and are deleted at the next start) until a
    /// commit adopts them; [`StagedImport`] says what they hold.
    pub fn finish(mut self) -> Result<StagedImport> {
        self.spill()?;
        sync_dir(&self.data_dir.join(&self.rel))?;
        self.finished = true;
        Ok(StagedImport {
            stream: self.stream.clone(),
            batch_id: self.batch_id.clone(),
            columns: self.schema.columns.clone(),
            files: std::mem::take(&mut self.files),
            shared: None,
            rows: self.rows,
        })
    }
}

impl Drop for ImportStage {
    fn drop(&mut self) {
        if !self.finished {
            discard_stage(&self.data_dir, &self.batch_id);
        }
    }
}

/// Gives the file `from` the name `to` too (a hard link; a copy, fsync'd,
/// where the two are on different file systems), replacing whatever an
/// earlier attempt left at `to`.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    match fs::remove_file(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(to, e)),
    }
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(|e| Error::io(to, e))?;
    fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(to, e))
}

/// Moves segments an older version left under `imports/<batch id>/` (it
/// adopted staged files where they were) to their stream's segment
/// directory, so every stored event of a stream is under
/// `segments/<stream>/`: each file gets its new name (durable), then the
/// catalog names it there; the old names go with the next clean-up of
/// unadopted imports. A crash midway leaves names no catalog holds, which
/// the next start deletes or links again. Returns how many moved.
pub(crate) fn relocate_adopted_imports(dir: &Path, cat: &mut Catalog) -> Result<usize> {
    let prefix = format!("{IMPORTS_DIR}/");
    let mut dirs = HashSet::new();
    let mut moved = 0;
    for seg in cat
        .segments
        .iter_mut()
        .filter(|s| s.path.starts_with(&prefix))
    {
        let rel = crate::store::segment_path(&seg.stream, seg.partition, seg.id);
        let to = dir.join(&rel);
        link_or_copy(&dir.join(&seg.path), &to)?;
        if let Some(parent) = to.parent() {
            dirs.insert(parent.to_path_buf());
        }
        // The batch remembers where each of its files went, for a replay
        // that feeds rollups from them (`Store::import_file`).
        let batch = seg.path[prefix.len()..]
            .split('/')
            .next()
            .unwrap_or_default();
        if let Some(entry) = cat.imports.get_mut(batch) {
            entry.moved.insert(seg.path.clone(), seg.id);
        }
        seg.path = rel;
        moved += 1;
    }
    if moved > 0 {
        for d in &dirs {
            sync_dir(d)?;
        }
        cat.save(dir)?;
        tracing::info!(
            segments = moved,
            "moved imported segments into their streams' directories"
        );
    }
    Ok(moved)
}

/// Cluster mode: writes, durably, a staged file of `batch_id` that another
/// node staged (fetched from the shared archive), at `rel` in the data
/// directory, which must be a file directly in the batch's stage.
pub fn put_staged_file(data_dir: &Path, batch_id: &str, rel: &str, bytes: &[u8]) -> Result<()> {
    let stage = stage_dir(batch_id);
    let name = rel
        .strip_prefix(stage.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'));
    let Some(name) = name else {
        return Err(Error::Format(format!(
            "a staged file of import {batch_id} is named {rel:?}, not a file in {stage}"
        )));
    };
    let dir = data_dir.join(&stage);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::io(&path, e))?;
    sync_dir(&dir)
}

/// Deletes a batch's staged files (an import rolled back, or adopted).
pub fn discard_stage(data_dir: &Path, batch_id: &str) {
    let dir = data_dir.join(stage_dir(batch_id));
    if let Err(e) = fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a rolled-back import's files; they are deleted at the next start");
        }
    }
}

impl Store {
    /// What the catalog records of an adopted batch id.
    pub fn imported(&self, batch_id: &str) -> Option<ImportEntry> {
        self.catalog_read().imports.get(batch_id).cloned()
    }

    /// Adds a staged import's files to the catalog, with its batch id, in
    /// one atomic catalog write; applied as the log's commit record `lsn`.
    /// Returns false (and changes nothing) when the batch id is already
    /// adopted: a commit record replayed after the catalog took it.
    pub fn adopt(&self, lsn: u64, staged: &StagedImport) -> Result<bool> {
        if self.sealed() {
            // A cut before this record is written first, so segments meet
            // in the same order on every node.
            self.flush_sealed()?;
        }
        let _m = self.maintenance_lock();
        if self.catalog_read().imports.contains_key(&staged.batch_id) {
            return Ok(false);
        }
        let conflicts = self.schemas().widen(&staged.stream, &staged.column_batch());
        if !conflicts.is_empty() {
            // Checked before the commit record was written; a conflict
            // here is a bug, and adopting would make the files unreadable.
            return Err(Error::Catalog {
                path: self.dir().join(crate::catalog::CATALOG_FILE),
                reason: format!(
                    "import {} conflicts with the schema of '{}' in {conflicts:?}",
                    staged.batch_id, staged.stream
                ),
            });
        }
        let mut cat = self.catalog_read().clone();
        // Each staged file gets a second name in its stream's segment
        // directory, where flushed segments live (so a glob over
        // `segments/<stream>/` sees imports too), durable before the
        // catalog names it. A crash before the catalog write leaves names
        // no catalog holds: the next start deletes them and replays the
        // commit record, which links the staged files again.
        // In cluster mode the ids come from the commit record's position,
        // the same on every node (see `sealed_segment_id`).
        let first_segment = if self.sealed() {
            crate::store::sealed_segment_id(lsn, staged.files.len().saturating_sub(1))?;
            crate::store::sealed_segment_id(lsn, 0)?
        } else {
            cat.next_segment_id
        };
        let mut dirs = HashSet::new();
        let mut paths = Vec::with_capacity(staged.files.len());
        for (i, f) in staged.files.iter().enumerate() {
            let rel =
                crate::store::segment_path(&staged.stream, f.partition, first_segment + i as u64);
            let to = self.dir().join(&rel);
            link_or_copy(&self.dir().join(&f.path), &to)?;
            if let Some(parent) = to.parent() {
                dirs.insert(parent.to_path_buf());
            }
            paths.push(rel);
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        for (i, (f, path)) in staged.files.iter().zip(paths).enumerate() {
            let id = first_segment + i as u64;
            cat.next_segment_id = cat.next_segment_id.max(id + 1);
            cat.segments.push(SegmentMeta {
                id,
                stream: staged.stream.clone(),
                partition: f.partition,
                path,
                rows: f.rows,
                min_ts: f.min_ts,
                max_ts: f.max_ts,
                bytes: f.bytes,
            });
        }
        cat.imports.insert(
            staged.batch_id.clone(),
            ImportEntry {
                stream: staged.stream.clone(),
                rows: staged.rows,
                lsn,
                at_us: chrono::Utc::now().timestamp_micros(),
                first_segment: Some(first_segment),
                moved: BTreeMap::new(),
            },
        );
        cat.streams = self.schemas().all();
        cat.save(self.dir())?;
        self.install_catalog(cat, lsn, &staged.stream, &staged.partitions());
        // The staged names are no longer needed (a crash before this
        // leaves them to the next start's clean-up).
        discard_stage(self.dir(), &staged.batch_id);
        Ok(true)
    }

    /// Where staged file `i` of an import is now: its staged path until
    /// adoption, then its place in the stream's segment directory (absent
    /// once compaction has merged it away).
    pub fn import_file(&self, staged: &StagedImport, i: usize) -> Option<PathBuf> {
        let f = staged.files.get(i)?;
        let at = self.dir().join(&f.path);
        if at.is_file() {
            return Some(at);
        }
        let entry = self.imported(&staged.batch_id)?;
        let id = match entry.moved.get(&f.path) {
            Some(&id) => id,
            None => entry.first_segment? + i as u64,
        };
        let moved = self
            .dir()
            .join(crate::store::segment_path(&staged.stream, f.partition, id));
        moved.is_file().then_some(moved)
    }

    /// Deletes staged imports no catalog entry names (rolled back, or cut
    /// short by a crash before their commit record), and the directories
    /// compaction emptied. Run after the log is replayed.
    pub fn remove_unadopted_imports(&self) -> Result<usize> {
        let root = self.dir().join(IMPORTS_DIR);
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&root, e)),
        };
        let named: HashSet<PathBuf> = self
            .catalog_read()
            .segments
            .iter()
            .map(|s| self.dir().join(&s.path))
            .collect();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&root, e))?;
            let dir = entry.path();
            let mut keep = false;
            if dir.is_dir() {
                for f in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                    let f = f.map_err(|e| Error::io(&dir, e))?.path();
                    if named.contains(&f) {
                        keep = true;
                    } else {
                        fs::remove_file(&f).map_err(|e| Error::io(&f, e))?;
                    }
                }
            }
            if !keep {
                let r = if dir.is_dir() {
                    fs::remove_dir(&dir)
                } else {
                    fs::remove_file(&dir)
                };
                r.map_err(|e| Error::io(&dir, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
