//! Every rollup of a data directory: their definitions (a manifest written
//! atomically), their states (one snapshot file each), the log position
//! each state covers, and rebuilds in progress.
//!
//! Consistency with the log: a rollup applies a record only if its LSN is
//! above the rollup's own position, so replaying the log from any earlier
//! point counts nothing twice. The engine snapshots rollups after the store
//! has flushed and before the log drops what the flush covered, so a
//! snapshot's position is never behind what the log still holds.
//!
//! Rebuilds: a new or changed definition starts an empty state marked
//! `building`. Live records are applied to it as they arrive, while a
//! builder feeds it every stored event up to the position the rebuild
//! started at; the states merge in any order, so when the builder is done
//! the new state is complete and replaces the old one in one step.
//! Readers see the old state (or none) until then, never a partial one.

use crate::def::RollupDef;
use crate::snapshot;
use crate::state::Rollup;
use crate::{Error, Result};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_ingest::Batch;

const MANIFEST: &str = "rollups.json";

/// Hands each batch of a record to the callback it is given.
pub type BatchSource<'a> = dyn FnMut(&mut dyn FnMut(&Batch)) + 'a;

/// A rollup's live state and the log position it covers.
#[derive(Debug)]
pub struct Entry {
    pub rollup: Rollup,
    /// The last LSN applied.
    pub lsn: u64,
    /// Whether `rollup` holds every stored event up to `lsn` (false for a
    /// new rollup until its first build ends: it answers nothing and is
    /// never written as a snapshot).
    pub complete: bool,
    /// A rebuild in progress: its state and whether the stored history up
    /// to `from_lsn` has been fed into it.
    pub building: Option<Building>,
}

#[derive(Debug)]
pub struct Building {
    /// Tells this build from a later one of the same rollup.
    pub id: u64,
    pub rollup: Rollup,
    /// Records above this go to the new state live; the builder feeds
    /// everything at or below it.
    pub from_lsn: u64,
    /// A partial rebuild: only buckets starting in `[lo, hi)` are rebuilt
    /// and replaced; `None`: the whole state.
    pub range: Option<(i64, i64)>,
    /// Stored events fed so far, and how many the build will feed.
    pub rows_done: u64,
    pub rows_total: u64,
}

impl Building {
    fn new(id: u64, rollup: Rollup, from_lsn: u64, range: Option<(i64, i64)>) -> Building {
        Building {
            id,
            rollup,
            from_lsn,
            range,
            rows_done: 0,
            rows_total: 0,
        }
    }
}

/// What opening found for one rollup.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// A snapshot of the current definition at this position.
    Snapshot(u64),
    /// No usable snapshot (new rollup, changed definition, damage): the
    /// state must be rebuilt from stored events.
    NeedsRebuild(String),
}

#[derive(Debug)]
pub struct RollupSet {
    dir: PathBuf,
    entries: RwLock<BTreeMap<String, Arc<RwLock<Entry>>>>,
    /// Serializes manifest and snapshot writes.
    write: Mutex<()>,
    next_build: std::sync::atomic::AtomicU64,
    /// Per rollup, the position of its snapshot on disk and when it was
    /// written (or found at open).
    snapped: Mutex<HashMap<String, (u64, Instant)>>,
    /// Changes whenever what answers could change other than by applied
    /// records: a definition added, replaced or removed, a build done.
    generation: std::sync::atomic::AtomicU64,
}

impl RollupSet {
    /// Opens `dir`: the manifest's definitions plus `configured` (which
    /// replace manifest entries of the same name), each with its snapshot
    /// if it matches the definition. Returns what was found per rollup.
    pub fn open(
        dir: &Path,
        configured: &[RollupDef],
    ) -> Result<(RollupSet, BTreeMap<String, Loaded>)> {
        std::fs::create_dir_all(dir)?;
        let mut defs: BTreeMap<String, RollupDef> = match std::fs::read(dir.join(MANIFEST)) {
            Ok(b) => serde_json::from_slice::<Vec<RollupDef>>(&b)
                .map_err(|e| Error::Corrupt {
                    message: format!("{MANIFEST}: {e}"),
                })?
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        for d in configured {
            d.validate()?;
            defs.insert(d.name.clone(), d.clone());
        }
        let mut entries = BTreeMap::new();
        let mut loaded = BTreeMap::new();
        for (name, def) in defs {
            let path = snapshot_path(dir, &name);
            let (rollup, lsn, found) = match snapshot::read(&path) {
                Ok(Some((r, lsn))) if *r.def() == def => (r, lsn, Loaded::Snapshot(lsn)),
                Ok(Some(_)) => (
                    Rollup::new(def.clone())?,
                    0,
                    Loaded::NeedsRebuild("the definition changed".into()),
                ),
                Ok(None) => (
                    Rollup::new(def.clone())?,
                    0,
                    Loaded::NeedsRebuild("no snapshot yet".into()),
                ),
                Err(e) => {
                    tracing::warn!(rollup = %name, error = %e, "unusable rollup snapshot; the rollup will be rebuilt");
                    (
                        Rollup::new(def.clone())?,
                        0,
                        Loaded::NeedsRebuild(e.to_string()),
                    )
                }
            };
            let complete = matches!(found, Loaded::Snapshot(_));
            loaded.insert(name.clone(), found);
            entries.insert(
                name,
                Arc::new(RwLock::new(Entry {
                    rollup,
                    lsn,
                    complete,
                    building: None,
                })),
            );
        }
        let now = Instant::now();
        let snapped = loaded
            .iter()
            .filter_map(|(name, l)| match l {
                Loaded::Snapshot(lsn) => Some((name.clone(), (*lsn, now))),
                Loaded::NeedsRebuild(_) => None,
            })
            .collect();
        let set = RollupSet {
            dir: dir.to_path_buf(),
            entries: RwLock::new(entries),
            write: Mutex::new(()),
            next_build: std::sync::atomic::AtomicU64::new(1),
            snapped: Mutex::new(snapped),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        set.write_manifest()?;
        Ok((set, loaded))
    }

    pub fn names(&self) -> Vec<String> {
        self.entries.read().keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<RwLock<Entry>>> {
        self.entries.read().get(name).cloned()
    }

    pub fn definitions(&self) -> Vec<RollupDef> {
        self.entries
            .read()
            .values()
            .map(|e| e.read().rollup.def().clone())
            .collect()
    }

    /// The lowest position a complete rollup covers (the log must be
    /// replayed from above it), or `None` without complete rollups.
    pub fn min_lsn(&self) -> Option<u64> {
        self.entries
            .read()
            .values()
            .filter_map(|e| {
                let e = e.read();
                e.complete.then_some(e.lsn)
            })
            .min()
    }

    /// Applies a log record to every rollup of `stream` that has not yet
    /// counted it, and to rebuilds in progress.
    pub fn apply(&self, lsn: u64, stream: &str, batch: &Batch) {
        self.apply_parts(lsn, &[(stream, batch)]);
    }

    /// Applies one log record holding the events of several streams (each
    /// once): every rollup counts its stream's part, and the record's
    /// position is taken by all of them together.
    pub fn apply_parts(&self, lsn: u64, parts: &[(&str, &Batch)]) {
        for e in self.entries.read().values() {
            let mut e = e.write();
            let Some(&(_, batch)) = parts.iter().find(|(s, _)| *s == e.rollup.def().stream) else {
                // Positions advance for every rollup, so a quiet stream's
                // rollup does not hold the log back.
                e.lsn = e.lsn.max(lsn);
                continue;
            };
            if lsn <= e.lsn {
                continue;
            }
            if e.complete {
                e.rollup.apply(batch);
            }
            e.lsn = lsn;
            if let Some(b) = &mut e.building {
                if lsn > b.from_lsn {
                    b.rollup.apply_in(batch, b.range);
                }
            }
        }
    }

    /// Applies one log record that arrives as several batches (a batch
    /// import's commit record): `source` hands each batch to the callback
    /// it is given, and is called only if some rollup of `stream` has not
    /// yet counted `lsn`. Returns whether it was called.
    pub fn apply_each(&self, lsn: u64, stream: &str, source: &mut BatchSource<'_>) -> bool {
        let entries = self.entries.read();
        let mut need = Vec::new();
        for e in entries.values() {
            let mut g = e.write();
            if g.rollup.def().stream != stream {
                g.lsn = g.lsn.max(lsn);
            } else if lsn > g.lsn {
                need.push(e.clone());
            }
        }
        if need.is_empty() {
            return false;
        }
        source(&mut |batch| {
            for e in &need {
                let mut g = e.write();
                if g.complete {
                    g.rollup.apply(batch);
                }
                if let Some(b) = &mut g.building {
                    if lsn > b.from_lsn {
                        b.rollup.apply_in(batch, b.range);
                    }
                }
            }
        });
        for e in &need {
            e.write().lsn = lsn;
        }
        true
    }

    /// Moves every rollup's position to at least `lsn` (records at or
    /// below it are already counted, or belong to no rollup).
    pub fn advance(&self, lsn: u64) {
        for e in self.entries.read().values() {
            let mut e = e.write();
            e.lsn = e.lsn.max(lsn);
        }
    }

    /// Adds or replaces a definition. The new state starts empty and
    /// building from `at_lsn`, which must be the last applied position,
    /// read while no record is being applied; the caller
    /// feeds it stored history with [`Self::feed`] and ends with
    /// [`Self::finish`]. The old state (if any) answers until then.
    pub fn define(&self, def: RollupDef, at_lsn: u64) -> Result<u64> {
        let fresh = Rollup::new(def.clone())?;
        let id = self.build_id();
        let mut entries = self.entries.write();
        match entries.get(&def.name) {
            Some(e) => {
                let mut e = e.write();
                e.building = Some(Building::new(id, fresh, at_lsn, None));
                e.lsn = e.lsn.max(at_lsn);
            }
            None => {
                entries.insert(
                    def.name.clone(),
                    Arc::new(RwLock::new(Entry {
                        rollup: Rollup::new(def.clone())?,
                        lsn: at_lsn,
                        complete: false,
                        building: Some(Building::new(id, fresh, at_lsn, None)),
                    })),
                );
            }
        }
        drop(entries);
        self.write_manifest()?;
        Ok(id)
    }

    /// See the field; part of cache keys of answers from rollups.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn build_id(&self) -> u64 {
        self.next_build
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts rebuilding an existing rollup with its own definition (after
    /// damage, or to reprocess with fixed logic); `at_lsn` as for
    /// [`Self::define`]. With `range`, only buckets starting in it are
    /// rebuilt (its ends must fall on the rollup's coarsest interval), and
    /// only a complete rollup can be rebuilt in part. Returns the build's
    /// id.
    pub fn rebuild(&self, name: &str, at_lsn: u64, range: Option<(i64, i64)>) -> Result<u64> {
        let e = self.get(name).ok_or_else(|| Error::Invalid {
            message: format!("no rollup {name:?}"),
        })?;
        let id = self.build_id();
        let mut e = e.write();
        if let Some((lo, hi)) = range {
            let coarsest = *e
                .rollup
                .def()
                .grains()
                .last()
                .expect("a rollup has intervals");
            let w = coarsest.micros();
            if lo >= hi || lo.rem_euclid(w) != 0 || hi.rem_euclid(w) != 0 {
                return Err(Error::Invalid {
                    message: format!(
                        "rollup {name:?}: a partial rebuild's from and to must be whole {}s (its coarsest interval), from before to",
                        coarsest.as_str()
                    ),
                });
            }
            if !e.complete {
                return Err(Error::Invalid {
                    message: format!("rollup {name:?} is still being built; rebuild it whole"),
                });
            }
        }
        e.building = Some(Building::new(
            id,
            Rollup::new(e.rollup.def().clone())?,
            at_lsn,
            range,
        ));
        e.lsn = e.lsn.max(at_lsn);
        Ok(id)
    }

    /// Sets how many stored events build `id` will feed.
    pub fn set_total(&self, name: &str, id: u64, rows: u64) {
        if let Some(e) = self.get(name) {
            if let Some(b) = &mut e.write().building {
                if b.id == id {
                    b.rows_total = rows;
                }
            }
        }
    }

    /// Feeds stored events (all at or below the rebuild's start) to build
    /// `id`. False when that build is no longer the current one (replaced
    /// by a newer definition or rebuild): the builder should stop.
    pub fn feed(&self, name: &str, id: u64, batch: &Batch) -> bool {
        let Some(e) = self.get(name) else {
            return false;
        };
        let mut e = e.write();
        match &mut e.building {
            Some(b) if b.id == id => {
                b.rollup.apply_in(batch, b.range);
                b.rows_done += batch.len() as u64;
                true
            }
            _ => false,
        }
    }

    /// Ends build `id`: the new state replaces the old one in one step and
    /// is written as a snapshot. False if the build is no longer current.
    pub fn finish(&self, name: &str, id: u64) -> Result<bool> {
        let e = self.get(name).ok_or_else(|| Error::Invalid {
            message: format!("no rollup {name:?}"),
        })?;
        {
            let mut e = e.write();
            if !matches!(&e.building, Some(b) if b.id == id) {
                return Ok(false);
            }
            let b = e.building.take().expect("checked above");
            match b.range {
                Some((lo, hi)) => e.rollup.replace_range(b.rollup, lo, hi),
                None => e.rollup = b.rollup,
            }
            e.complete = true;
        }
        self.bump();
        self.write_manifest()?;
        self.snapshot_one(name)?;
        Ok(true)
    }

    /// Removes a rollup and its files.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let gone = self.entries.write().remove(name).is_some();
        if gone {
            self.snapped.lock().remove(name);
            self.bump();
            self.write_manifest()?;
            let _w = self.write.lock();
            match std::fs::remove_file(snapshot_path(&self.dir, name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(gone)
    }

    /// Applies every rollup's retention as of `now` (µs), builds in
    /// progress included. Returns the buckets dropped.
    pub fn retain_all(&self, now: i64) -> usize {
        let mut dropped = 0;
        for e in self.entries.read().values() {
            let mut e = e.write();
            dropped += e.rollup.retain(now);
            if let Some(b) = &mut e.building {
                dropped += b.rollup.retain(now);
            }
        }
        if dropped > 0 {
            self.bump();
        }
        dropped
    }

    /// Writes every changed rollup's snapshot (rollups being rebuilt keep
    /// their previous snapshot until the rebuild ends). Returns the lowest
    /// position the snapshots on disk cover.
    pub fn snapshot_all(&self) -> Result<Option<u64>> {
        self.snapshot_due(Duration::ZERO)
    }

    /// Writes the snapshots of the rollups that moved since their last
    /// one and whose last one is at least `min_age` old. A snapshot
    /// re-encodes the rollup's whole state, so under heavy ingest taking
    /// one at every flush costs more and more as the state grows; the
    /// log keeps what newer snapshots would hold meanwhile. Returns the
    /// lowest position the complete rollups' snapshots on disk cover: the
    /// log may drop records up to it, not past it.
    pub fn snapshot_due(&self, min_age: Duration) -> Result<Option<u64>> {
        let mut low: Option<u64> = None;
        for name in self.names() {
            let Some(e) = self.get(&name) else {
                continue;
            };
            let (complete, lsn) = {
                let e = e.read();
                (e.complete, e.lsn)
            };
            if !complete {
                continue;
            }
            let last = self.snapped.lock().get(&name).copied();
            let covered = match last {
                Some((at, when)) if at == lsn || when.elapsed() < min_age => at,
                _ => match self.snapshot_inner(&name)? {
                    Some(at) => at,
                    None => continue,
                },
            };
            low = Some(low.map_or(covered, |l| l.min(covered)));
        }
        Ok(low)
    }

    fn snapshot_one(&self, name: &str) -> Result<()> {
        self.snapshot_inner(name).map(|_| ())
    }

    fn snapshot_inner(&self, name: &str) -> Result<Option<u64>> {
        let Some(e) = self.get(name) else {
            return Ok(None);
        };
        // Encode under the read lock (ingest waits only for the encoding),
        // write outside it.
        let (bytes, lsn) = {
            let e = e.read();
            if !e.complete {
                return Ok(None);
            }
            (snapshot::encode(&e.rollup, e.lsn), e.lsn)
        };
        let _w = self.write.lock();
        snapshot::write_bytes(&snapshot_path(&self.dir, name), &bytes)?;
        self.snapped
            .lock()
            .insert(name.to_string(), (lsn, Instant::now()));
        Ok(Some(lsn))
    }

    fn write_manifest(&self) -> Result<()> {
        // The definitions are read under the write lock: read before it, a
        // list could be written after a newer one and drop a rollup
        // defined in between from the disk (a build finishing as another
        // rollup is defined).
        let _w = self.write.lock();
        let defs = self.definitions();
        let bytes = serde_json::to_vec_pretty(&defs).expect("definitions serialize");
        snapshot::write_bytes(&self.dir.join(MANIFEST), &bytes)
    }
}

fn snapshot_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.snap"))
}
