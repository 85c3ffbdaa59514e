//! Rollup snapshots: a rollup's whole state with the log position it
//! covers, in one checksummed file written atomically (temporary file,
//! fsync, rename, fsync of the directory). At restart the snapshot is
//! loaded and the log replayed past its position, so every event is
//! counted exactly once; a damaged snapshot is refused, never half-read.

use crate::aggregate::{Cell, GroupKey, State};
use crate::def::{Grain, RollupDef};
use crate::state::Rollup;
use crate::{Error, Result};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 4] = b"TLRU";
/// 2: each interval carries the first bucket retention kept.
const VERSION: u32 = 3;

/// Encodes `rollup` as of log position `lsn`.
pub fn encode(rollup: &Rollup, lsn: u64) -> Vec<u8> {
    let mut w = Vec::with_capacity(1 << 16);
    w.extend_from_slice(MAGIC);
    put_u32(&mut w, VERSION);
    put_u64(&mut w, lsn);
    let def = serde_json::to_vec(rollup.def()).expect("a definition serializes");
    put_bytes(&mut w, &def);
    put_u64(&mut w, rollup.events());
    let grains = rollup.def().grains();
    put_u32(&mut w, grains.len() as u32);
    for g in grains {
        w.push(grain_tag(g));
        put_u64(&mut w, rollup.kept_from(g) as u64);
        // Cells merged from a finer interval and not yet stored included.
        let mut buckets: Vec<(i64, BucketCells)> = Vec::new();
        for (start, key, cell) in rollup.cells(g, i64::MIN, i64::MAX) {
            match buckets.last_mut() {
                Some((b, cells)) if *b == start => cells.push((key, cell)),
                _ => buckets.push((start, vec![(key, cell)])),
            }
        }
        put_u32(&mut w, buckets.len() as u32);
        for (start, mut groups) in buckets {
            put_u64(&mut w, start as u64);
            put_u32(&mut w, groups.len() as u32);
            // Sorted, so one state always encodes to the same bytes.
            groups.sort_by(|a, b| a.0.cmp(b.0));
            for (key, cell) in groups {
                put_u32(&mut w, key.len() as u32);
                for v in key {
                    match v {
                        None => w.push(0),
                        Some(s) => {
                            w.push(1);
                            put_bytes(&mut w, s.as_bytes());
                        }
                    }
                }
                for s in &cell.states {
                    s.encode(&mut w);
                }
            }
        }
    }
    let crc = crc32c::crc32c(&w);
    put_u32(&mut w, crc);
    w
}

/// One bucket's cells, by group.
type BucketCells<'a> = Vec<(&'a GroupKey, Cow<'a, Cell>)>;

/// Decodes a snapshot: the rollup and the log position it covers.
pub fn decode(bytes: &[u8]) -> Result<(Rollup, u64)> {
    let corrupt = |what: &str| Error::Corrupt {
        message: what.to_string(),
    };
    if bytes.len() < 12 || &bytes[..4] != MAGIC {
        return Err(corrupt("not a rollup snapshot"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader { b: body, at: 4 };
    let version = r.u32()?;
    if version != VERSION {
        return Err(corrupt(&format!(
            "snapshot format {version}, this build reads {VERSION}"
        )));
    }
    let lsn = r.u64()?;
    let def: RollupDef =
        serde_json::from_slice(r.bytes()?).map_err(|e| corrupt(&format!("definition: {e}")))?;
    let mut rollup = Rollup::new(def)?;
    rollup.set_events(r.u64()?);
    let n_aggs = rollup.def().aggregates.len();
    let grains = r.u32()?;
    for _ in 0..grains {
        let grain = match r.u8()? {
            0 => Grain::Minute,
            1 => Grain::Hour,
            2 => Grain::Day,
            t => return Err(corrupt(&format!("interval tag {t}"))),
        };
        let kept_from = r.u64()? as i64;
        for _ in 0..r.u32()? {
            let start = r.u64()? as i64;
            for _ in 0..r.u32()? {
                let mut key: GroupKey = Vec::new();
                for _ in 0..r.u32()? {
                    key.push(match r.u8()? {
                        0 => None,
                        _ => Some(
                            String::from_utf8(r.bytes()?.to_vec())
                                .map_err(|_| corrupt("group text"))?,
                        ),
                    });
                }
                let states = (0..n_aggs)
                    .map(|i| {
                        let s = State::decode(&mut r)?;
                        match s.same_kind(&State::new(&rollup.def().aggregates[i])) {
                            true => Ok(s),
                            false => Err(corrupt("a state of the wrong kind")),
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                if !rollup.put_cell(grain, start, &key, Cell { states }) {
                    return Err(corrupt("an interval the definition lacks"));
                }
            }
        }
        rollup.set_kept_from(grain, kept_from);
    }
    if r.at != body.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok((rollup, lsn))
}

/// Writes `rollup` as of `lsn` to `path` atomically and durably.
pub fn write(path: &Path, rollup: &Rollup, lsn: u64) -> Result<()> {
    write_bytes(path, &encode(rollup, lsn))
}

/// Replaces the file at `path` with `bytes`: temporary file, fsync,
/// rename, fsync of the directory.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads the snapshot at `path`; `None` if there is none.
pub fn read(path: &Path) -> Result<Option<(Rollup, u64)>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn grain_tag(g: Grain) -> u8 {
    match g {
        Grain::Minute => 0,
        Grain::Hour => 1,
        Grain::Day => 2,
    }
}

pub(crate) fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_f64(w: &mut Vec<u8>, v: f64) {
    w.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, b.len() as u32);
    w.extend_from_slice(b);
}

pub(crate) fn put_opt(w: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => w.push(0),
        Some(x) => {
            w.push(1);
            put_f64(w, x);
        }
    }
}

/// A snapshot's bytes, read in order.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[cfg(test)]
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let Some(end) = end else {
            return Err(Error::Corrupt {
                message: "truncated".into(),
            });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn opt(&mut self) -> Result<Option<f64>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.f64()?),
        })
    }
}
