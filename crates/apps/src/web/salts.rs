//! Daily salts for visitor ids.
//!
//! A visitor id is a keyed hash of the day's salt, the user agent, the
//! address and the site (see [`super::enrich::visitor_id`]). Each UTC day has
//! its own random 128-bit salt, kept in `DATA_DIR/web/salts.json` (replaced
//! atomically, fsync'd) so a restart keeps today's ids. Salts older than
//! yesterday are deleted from the file: once a salt is gone, nobody (tally
//! included) can link an id back to an address and user agent, or link a
//! visitor's ids across days.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
struct SaltFile {
    /// `YYYY-MM-DD` to a hex salt.
    salts: BTreeMap<String, String>,
}

/// The salts of today and yesterday.
pub struct Salts {
    path: PathBuf,
    days: Mutex<BTreeMap<chrono::NaiveDate, [u8; 16]>>,
}

impl Salts {
    /// Loads the salt file of `dir` (creating the directory).
    pub fn open(dir: &Path) -> std::io::Result<Salts> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("salts.json");
        let file: SaltFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SaltFile::default(),
            Err(e) => return Err(e),
        };
        let mut days = BTreeMap::new();
        for (day, hex_salt) in file.salts {
            let (Ok(day), Ok(bytes)) = (
                chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d"),
                hex::decode(&hex_salt),
            ) else {
                continue;
            };
            if let Ok(salt) = <[u8; 16]>::try_from(bytes.as_slice()) {
                days.insert(day, salt);
            }
        }
        Ok(Salts {
            path,
            days: Mutex::new(days),
        })
    }

    /// The salt of `day` if it is made already (no file access).
    pub fn get(&self, day: chrono::NaiveDate) -> Option<[u8; 16]> {
        self.days.lock().get(&day).copied()
    }

    /// The salt of `day`, made (and written) when the day is new; days
    /// before the one before `day` are forgotten.
    pub fn for_day(&self, day: chrono::NaiveDate) -> std::io::Result<[u8; 16]> {
        let mut days = self.days.lock();
        if let Some(s) = days.get(&day) {
            return Ok(*s);
        }
        let salt: [u8; 16] = rand::random();
        let mut next = days.clone();
        next.insert(day, salt);
        let keep_from = day.pred_opt().unwrap_or(day);
        next.retain(|d, _| *d >= keep_from);
        self.save(&next)?;
        *days = next;
        Ok(salt)
    }

    /// Keeps `salt` as `day`'s (one the cluster agreed on); days before
    /// the one before `day` are forgotten.
    pub fn adopt(&self, day: chrono::NaiveDate, salt: [u8; 16]) -> std::io::Result<()> {
        let mut days = self.days.lock();
        if days.get(&day) == Some(&salt) {
            return Ok(());
        }
        let mut next = days.clone();
        next.insert(day, salt);
        let keep_from = day.pred_opt().unwrap_or(day);
        next.retain(|d, _| *d >= keep_from);
        self.save(&next)?;
        *days = next;
        Ok(())
    }

    /// The days whose salt is kept.
    pub fn days(&self) -> Vec<chrono::NaiveDate> {
        self.days.lock().keys().copied().collect()
    }

    fn save(&self, days: &BTreeMap<chrono::NaiveDate, [u8; 16]>) -> std::io::Result<()> {
        let file = SaltFile {
            salts: days
                .iter()
                .map(|(d, s)| (d.format("%Y-%m-%d").to_string(), hex::encode(s)))
                .collect(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&file).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_keeps_its_salt_across_reopen_and_old_days_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let salts = Salts::open(dir.path()).unwrap();
        let a = salts.for_day(d("2026-11-20")).unwrap();
        let b = salts.for_day(d("2026-11-21")).unwrap();
        assert_ne!(a, b);
        let salts = Salts::open(dir.path()).unwrap();
        assert_eq!(salts.for_day(d("2026-11-21")).unwrap(), b);
        salts.for_day(d("2026-11-22")).unwrap();
        assert_eq!(salts.days(), vec![d("2026-11-21"), d("2026-11-22")]);
        let text = std::fs::read_to_string(dir.path().join("salts.json")).unwrap();
        assert!(!text.contains(&hex::encode(a)));
    }
}
