//! Backups of a running engine, and restoring them (docs/operations.md).
//!
//! A backup is a data directory tally can open: the catalog with the
//! segments it names, rollup snapshots, dimension tables, job tables, app
//! state (accounts, salts, sites), the archive when it lives in the data
//! directory, and the log from the catalog's checkpoint on. It is taken
//! while ingest goes on, consistent at one log position:
//!
//! - the store's maintenance lock is held throughout, so no flush,
//!   compaction or retention pass changes the catalog or removes a segment
//!   (writes keep being logged and applied; the in-memory tail grows, and
//!   past its limit writes get 503 as under any flush stall);
//! - everything but the log is copied first, then the log, file by file in
//!   order. The copy of the log is a prefix of it: every record applied to
//!   the catalog's segments and to the copied rollup snapshots is in it,
//!   and the newest file may end in a record cut halfway, which opening
//!   the backup drops as it drops a torn write after a crash.
//!
//! Opening the backup replays the log past the checkpoint, so the restored
//! server holds exactly the records of that prefix: its snapshot point.
//! Segment files never change once written, so they are hard links when
//! the backup is on the same filesystem; everything else is copied. Every
//! file and directory is made durable before the backup is reported done.

use crate::{Engine, Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The file that marks a directory as a finished backup.
pub const MANIFEST: &str = "tally-backup.json";

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupReport {
    pub format: u32,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    pub files: u64,
    pub bytes: u64,
    /// Segment files hard-linked rather than copied.
    pub linked: u64,
    /// The catalog's checkpoint: the log is replayed from here.
    pub checkpoint_lsn: u64,
    /// The log position applied when the copy of the log began; the
    /// backup holds at least this much.
    pub log_lsn: u64,
    pub took_ms: u64,
}

impl Engine {
    /// Copies the data directory to `to` (which must not exist or be
    /// empty) while ingest continues. See the module comment.
    pub fn backup(&self, to: &Path) -> Result<BackupReport> {
        let t = Instant::now();
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io { dir: p, source }
        };
        if fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::Io {
                dir: to.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the backup directory is not empty",
                ),
            });
        }
        fs::create_dir_all(to).map_err(io(to))?;
        let src = &self.opts.data_dir;
        let mut stats = Copied::default();
        let (checkpoint_lsn, log_lsn) = {
            let _m = self.store.maintenance_lock();
            let checkpoint = self.store.checkpoint_lsn();
            copy_tree(
                src,
                to,
                &mut |rel| rel != Path::new("LOCK") && rel != Path::new("wal"),
                &mut stats,
            )?;
            let log_lsn = self.log.last_lsn();
            copy_log(&src.join("wal"), &to.join("wal"), &mut stats)?;
            (checkpoint, log_lsn)
        };
        let report = BackupReport {
            format: 1,
            taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            files: stats.files,
            bytes: stats.bytes,
            linked: stats.linked,
            checkpoint_lsn,
            log_lsn,
            took_ms: t.elapsed().as_millis() as u64,
        };
        // The manifest last: a directory without one is not a backup.
        let text = serde_json::to_vec_pretty(&report).map_err(|e| Error::Io {
            dir: to.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let path = to.join(MANIFEST);
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(&text).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        sync_dir(to)?;
        tracing::info!(to = %to.display(), files = report.files, bytes = report.bytes, log_lsn, took_ms = report.took_ms, "backup taken");
        Ok(report)
    }
}

/// Copies backup `from` into data directory `to` (which must not exist or
/// be empty), durably. The server then opens `to` as after a crash at the
/// backup's snapshot point.
pub fn restore(from: &Path, to: &Path) -> Result<BackupReport> {
    let manifest = from.join(MANIFEST);
    let report: BackupReport = fs::read(&manifest)
        .map_err(|source| Error::Io {
            dir: from.to_path_buf(),
            source: std::io::Error::new(
                source.kind(),
                format!(
                    "{MANIFEST} is missing or unreadable ({source}): not a finished tally backup"
                ),
            ),
        })
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| Error::Io {
                dir: manifest.clone(),
                source: std::io::Error::other(e),
            })
        })?;
    if report.format != 1 {
        return Err(Error::Io {
            dir: from.to_path_buf(),
            source: std::io::Error::other(format!(
                "backup format {} is not one this tally reads (1)",
                report.format
            )),
        });
    }
    if fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Io {
            dir: to.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the data directory is not empty: restore into a new one",
            ),
        });
    }
    fs::create_dir_all(to).map_err(|source| Error::Io {
        dir: to.to_path_buf(),
        source,
    })?;
    let mut stats = Copied::default();
    copy_tree(from, to, &mut |rel| rel != Path::new(MANIFEST), &mut stats)?;
    Ok(report)
}

#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
    linked: u64,
}

/// Copies `from` into `to` recursively, skipping what `keep` refuses
/// (paths relative to the top), then syncs `to`'s directories. Files that
/// vanish during the copy (replaced by a rename) are skipped.
fn copy_tree(
    from: &Path,
    to: &Path,
    keep: &mut dyn FnMut(&Path) -> bool,
    stats: &mut Copied,
) -> Result<()> {
    fn walk(
        top: &Path,
        dir: &Path,
        to: &Path,
        keep: &mut dyn FnMut(&Path) -> bool,
        stats: &mut Copied,
    ) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Io {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let rel = path.strip_prefix(top).unwrap_or(&path).to_path_buf();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !keep(&rel) || name.ends_with(".tmp") {
                continue;
            }
            let target = to.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(Error::Io { dir: path, source }),
            };
            if meta.is_dir() {
                fs::create_dir_all(&target).map_err(|source| Error::Io {
                    dir: target.clone(),
                    source,
                })?;
                walk(top, &path, to, keep, stats)?;
                sync_dir(&target)?;
            } else if meta.is_file() {
                // Parquet files are never changed in place (a replacement is a new
                // file renamed over the old), so a link keeps the copied version.
                let immutable = name.ends_with(".parquet");
                copy_file(&path, &target, immutable, stats)?;
            }
        }
        Ok(())
    }
    walk(from, from, to, keep, stats)?;
    sync_dir(to)
}

/// Copies the log's files in order: a prefix of the log.
fn copy_log(from: &Path, to: &Path, stats: &mut Copied) -> Result<()> {
    fs::create_dir_all(to).map_err(|source| Error::Io {
        dir: to.to_path_buf(),
        source,
    })?;
    copy_tree(from, to, &mut |_| true, stats)
}

fn copy_file(from: &Path, to: &Path, link: bool, stats: &mut Copied) -> Result<()> {
    let err = |source| Error::Io {
        dir: from.to_path_buf(),
        source,
    };
    if link && fs::hard_link(from, to).is_ok() {
        stats.files += 1;
        stats.linked += 1;
        return Ok(());
    }
    let mut src = match File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let mut dst = File::create(to).map_err(|source| Error::Io {
        dir: to.to_path_buf(),
        source,
    })?;
    let n = std::io::copy(&mut src, &mut dst).map_err(err)?;
    dst.sync_all().map_err(err)?;
    stats.files += 1;
    stats.bytes += n;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            dir: PathBuf::from(dir),
            source,
        })
}
