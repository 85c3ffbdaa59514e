//! The catalog: which segments exist, which stream schemas they follow, and
//! how far into the log they reach.
//!
//! One small JSON file, replaced atomically (write a temporary file, fsync,
//! rename over, fsync the directory). Readers of the data directory (backup,
//! DuckDB users) can rely on it: every segment it names is complete.

use crate::schema::StreamSchema;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

pub const CATALOG_FILE: &str = "catalog.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub stream: String,
    /// Start of the hour this segment's events fall in (µs since the epoch).
    pub partition: i64,
    /// Path relative to the data directory.
    pub path: String,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    pub format: u32,
    /// Every log record at or below this LSN is in the segments listed.
    pub checkpoint_lsn: u64,
    pub next_segment_id: u64,
    pub streams: BTreeMap<String, StreamSchema>,
    pub segments: Vec<SegmentMeta>,
    /// Segments retention removed while an archive holds them, until the
    /// archive has recorded that they are no longer local: with this list a
    /// segment that left the data directory is never mistaken for one that
    /// compaction replaced (see `tally-archive`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<SegmentMeta>,
    /// Batch imports adopted, by client batch id: a retried batch is
    /// recognised and not imported twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub imports: BTreeMap<String, ImportEntry>,
}

/// What the catalog keeps of an adopted batch import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportEntry {
    pub stream: String,
    pub rows: u64,
    /// The log position of its commit record.
    pub lsn: u64,
    /// When it was adopted (µs since the epoch).
    pub at_us: i64,
    /// The segment id its first staged file got; the others follow in
    /// order (so a replay finds each file where adoption moved it).
    #[serde(default)]
    pub first_segment: Option<u64>,
    /// Files an older version adopted where they were staged, moved into
    /// their stream's directory since: staged path → segment id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moved: BTreeMap<String, u64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            format: FORMAT,
            checkpoint_lsn: 0,
            next_segment_id: 1,
            streams: BTreeMap::new(),
            segments: Vec::new(),
            retired: Vec::new(),
            imports: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Loads the catalog of `dir`, or an empty one if there is none yet.
    pub fn load(dir: &Path) -> Result<Catalog> {
        let path = dir.join(CATALOG_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let cat: Catalog = serde_json::from_slice(&text).map_err(|e| Error::Catalog {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if cat.format != FORMAT {
            return Err(Error::Catalog {
                path,
                reason: format!("unknown catalog format {}", cat.format),
            });
        }
        Ok(cat)
    }

    /// Atomically replaces the catalog of `dir` with this one.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{CATALOG_FILE}.tmp"));
        let path = dir.join(CATALOG_FILE);
        let text = serde_json::to_vec(self).map_err(|e| Error::Catalog {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&text).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
