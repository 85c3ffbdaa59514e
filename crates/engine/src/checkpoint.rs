//! Bootstrap checkpoints in cluster mode (docs/cluster.md).
//!
//! The node holding the maintenance lease flushes, takes a backup of its
//! data directory (consistent at one stream sequence, see [`crate::backup`])
//! and uploads it to the shared archive under
//! `checkpoints/<stream>/<sequence>/`, the backup's manifest last: a
//! checkpoint without its manifest is unfinished and never read. It keeps
//! the newest two.
//!
//! A node that opens an empty data directory in cluster mode downloads the
//! newest finished checkpoint into it first, then applies the stream from
//! the sequence the checkpoint holds, instead of from the stream's first
//! record (which the stream may no longer hold). A node whose data is
//! older than the stream's first record does the same, after saying so:
//! its data is only a copy of what the stream and the archive hold.

use crate::backup::{BackupReport, MANIFEST};
use crate::{Engine, EngineOptions, Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tally_archive::Shared;

/// Where a half-downloaded checkpoint waits inside the data directory.
const DOWNLOADING: &str = "bootstrap.tmp";
/// Where a checkpoint's backup waits inside the data directory.
const UPLOADING: &str = "checkpoint.tmp";
/// Finished checkpoints kept in the archive.
const KEEP: usize = 2;

/// What one checkpoint upload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointReport {
    /// The stream sequence the checkpoint holds.
    pub seq: u64,
    pub key: String,
    pub files: u64,
    pub bytes: u64,
    pub took_ms: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        dir: path.to_path_buf(),
        source,
    }
}

fn archive_err(what: String) -> Error {
    Error::Io {
        dir: PathBuf::from("checkpoints"),
        source: std::io::Error::other(what),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            dir: PathBuf::from("runtime"),
            source,
        })
}

fn prefix(stream: &str) -> String {
    format!("checkpoints/{stream}")
}

/// Finished checkpoints in the archive, newest first, with every object
/// key of each; and unfinished ones.
fn listing(
    shared: &Shared,
    rt: &tokio::runtime::Runtime,
    stream: &str,
) -> Result<(Vec<(u64, Vec<String>)>, Vec<(u64, Vec<String>)>)> {
    let base = prefix(stream);
    let mut by_seq: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for o in rt.block_on(shared.list(&base)).map_err(archive_err)? {
        let rest = o
            .key
            .strip_prefix(&base)
            .unwrap_or(&o.key)
            .trim_start_matches('/');
        if let Some(seq) = rest.split('/').next().and_then(|s| s.parse::<u64>().ok()) {
            by_seq.entry(seq).or_default().push(o.key);
        }
    }
    let (mut done, mut unfinished) = (Vec::new(), Vec::new());
    for (seq, keys) in by_seq.into_iter().rev() {
        if keys.iter().any(|k| k.ends_with(&format!("/{MANIFEST}"))) {
            done.push((seq, keys));
        } else {
            unfinished.push((seq, keys));
        }
    }
    Ok((done, unfinished))
}

/// Every file under `dir`, as (path relative to it with `/`, full path).
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).map_err(io(&d))? {
            let p = e.map_err(io(&d))?.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                let rel: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                out.push((rel.join("/"), p));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Engine {
    /// Uploads a bootstrap checkpoint when this node holds the maintenance
    /// lease and the archive's newest finished one is at least `every` old
    /// (or there is none). Timed by the archive, not by this process: nodes
    /// restart and the lease moves, and a timer of each node's own might
    /// never run out.
    pub fn upload_checkpoint_if_due(
        &self,
        every: std::time::Duration,
    ) -> Result<Option<CheckpointReport>> {
        let (Some(c), Some(a)) = (&self.opts.cluster, &self.opts.archive) else {
            return Ok(None);
        };
        if !self.log.holds_maintenance_lease() {
            return Ok(None);
        }
        let shared = Shared::open(a)?;
        let rt = runtime()?;
        let newest = rt
            .block_on(shared.list(&prefix(&c.stream)))
            .map_err(archive_err)?
            .into_iter()
            .filter(|o| o.key.ends_with(&format!("/{MANIFEST}")))
            .map(|o| o.modified)
            .max();
        let age = newest.map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default());
        if age.is_some_and(|age| age < every) {
            return Ok(None);
        }
        self.upload_checkpoint()
    }

    /// Uploads a bootstrap checkpoint when this node holds the maintenance
    /// lease; `None` when it does not, or outside cluster mode.
    pub fn upload_checkpoint(&self) -> Result<Option<CheckpointReport>> {
        let (Some(c), Some(a)) = (&self.opts.cluster, &self.opts.archive) else {
            return Ok(None);
        };
        if !self.log.holds_maintenance_lease() {
            return Ok(None);
        }
        // One upload at a time (the periodic one and an operator's).
        static UPLOADING_NOW: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
        let _one = UPLOADING_NOW.lock();
        let t = Instant::now();
        self.flush()?;
        let tmp = self.opts.data_dir.join(UPLOADING);
        let _ = fs::remove_dir_all(&tmp);
        let backup = self.backup(&tmp)?;
        let shared = Shared::open(a)?;
        let rt = runtime()?;
        let key = format!("{}/{:020}", prefix(&c.stream), backup.log_lsn);
        let mut list = files(&tmp)?;
        // The manifest last: until it is there, the checkpoint is unfinished.
        list.sort_by_key(|(rel, _)| rel == MANIFEST);
        let (mut n, mut bytes) = (0, 0);
        for (rel, path) in &list {
            let body = fs::read(path).map_err(io(path))?;
            bytes += body.len() as u64;
            n += 1;
            rt.block_on(shared.put(&format!("{key}/{rel}"), body.into()))
                .map_err(archive_err)?;
        }
        let _ = fs::remove_dir_all(&tmp);
        // Older checkpoints go once newer ones are finished; unfinished ones
        // (an upload cut short) once they are an hour old.
        let (done, unfinished) = listing(&shared, &rt, &c.stream)?;
        let stale = chrono::Utc::now() - chrono::Duration::hours(1);
        let old_unfinished: Vec<String> = {
            let objects = rt
                .block_on(shared.list(&prefix(&c.stream)))
                .map_err(archive_err)?;
            let recent: std::collections::HashSet<String> = objects
                .into_iter()
                .filter(|o| o.modified > stale)
                .map(|o| o.key)
                .collect();
            unfinished
                .into_iter()
                .filter(|(_, keys)| keys.iter().all(|k| !recent.contains(k)))
                .flat_map(|(_, keys)| keys)
                .collect()
        };
        for k in done
            .into_iter()
            .skip(KEEP)
            .flat_map(|(_, keys)| keys)
            .chain(old_unfinished)
        {
            rt.block_on(shared.delete(&k)).map_err(archive_err)?;
        }
        let report = CheckpointReport {
            seq: backup.log_lsn,
            key,
            files: n,
            bytes,
            took_ms: t.elapsed().as_millis() as u64,
        };
        tracing::info!(
            seq = report.seq,
            files = n,
            bytes,
            took_ms = report.took_ms,
            "bootstrap checkpoint uploaded"
        );
        crate::metrics::CHECKPOINTS.inc();
        Ok(Some(report))
    }
}

/// Whether a data directory holds nothing of a node yet (its lock file and
/// a half-downloaded checkpoint aside).
pub(crate) fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |entries| {
        entries.flatten().all(|e| {
            let name = e.file_name();
            name == "LOCK" || name == DOWNLOADING
        })
    })
}

/// Removes everything in the data directory but its lock file: the node's
/// data is older than the stream and is replaced by a checkpoint.
pub(crate) fn clear(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        if e.file_name() == "LOCK" {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            fs::remove_dir_all(&p).map_err(io(&p))?;
        } else {
            fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Fills an empty data directory from the newest finished checkpoint in
/// the shared archive; `None` when there is none (the node then applies
/// the stream from its first record).
pub(crate) fn bootstrap(opts: &EngineOptions) -> Result<Option<BackupReport>> {
    let (Some(c), Some(a)) = (&opts.cluster, &opts.archive) else {
        return Ok(None);
    };
    let shared = Shared::open(a)?;
    let rt = runtime()?;
    let (done, _) = listing(&shared, &rt, &c.stream)?;
    let Some((seq, keys)) = done.into_iter().next() else {
        tracing::info!(archive = %shared.url(), "no bootstrap checkpoint yet: applying the stream from its start");
        return Ok(None);
    };
    let t = Instant::now();
    let base = format!("{}/{seq:020}/", prefix(&c.stream));
    let tmp = opts.data_dir.join(DOWNLOADING);
    let _ = fs::remove_dir_all(&tmp);
    let mut manifest = None;
    let mut bytes = 0;
    for key in &keys {
        let rel = key.strip_prefix(&base).unwrap_or(key);
        let body = rt
            .block_on(shared.get(key))
            .map_err(archive_err)?
            .ok_or_else(|| archive_err(format!("{key} vanished while bootstrapping")))?;
        bytes += body.len();
        if rel == MANIFEST {
            manifest = Some(body);
            continue;
        }
        let path = tmp.join(rel);
        let parent = path.parent().unwrap_or(&tmp);
        fs::create_dir_all(parent).map_err(io(parent))?;
        let mut f = fs::File::create(&path).map_err(io(&path))?;
        f.write_all(&body).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
    }
    let report: BackupReport = manifest
        .and_then(|m| serde_json::from_slice(&m).ok())
        .ok_or_else(|| archive_err(format!("{base}{MANIFEST} is unreadable")))?;
    // Into place, then the directories made durable.
    for e in fs::read_dir(&tmp).map_err(io(&tmp))? {
        let e = e.map_err(io(&tmp))?;
        let to = opts.data_dir.join(e.file_name());
        fs::rename(e.path(), &to).map_err(io(&to))?;
    }
    fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    for (_, p) in files(&opts.data_dir)? {
        if let Some(d) = p.parent() {
            fs::File::open(d)
                .and_then(|d| d.sync_all())
                .map_err(io(d))?;
        }
    }
    tracing::info!(
        seq,
        files = keys.len(),
        bytes,
        took_ms = t.elapsed().as_millis() as u64,
        "bootstrapped from the archive's checkpoint"
    );
    crate::metrics::BOOTSTRAPS.inc();
    Ok(Some(report))
}
