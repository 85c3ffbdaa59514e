//! The sites tally accepts tracker events for. Sites named in the config
//! always exist; sites added or removed through the admin API are events
//! of the internal stream `_tally_web_sites` (`kind` `add` or `remove`,
//! `domain`), read back at start.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use tally_engine::Engine;
use tally_ingest::{Batch, BatchBuilder, ColumnData};

/// Sites added and removed through the API.
pub const SITES_STREAM: &str = "_tally_web_sites";

/// Where a site comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
}

/// A site's domain as tally keeps it: lower case, 1-253 characters of
/// letters, digits, `.`, `-` and `:` (a port), not starting with `.` or `-`.
pub fn normalize_domain(d: &str) -> Result<String, String> {
    let d = d.trim().trim_start_matches("www.").to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 {
        return Err("a site's domain has 1 to 253 characters".into());
    }
    if d.starts_with(['.', '-']) {
        return Err(format!("{d:?} is not a domain"));
    }
    if let Some(c) = d
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')))
    {
        return Err(format!("a domain cannot hold {c:?}"));
    }
    Ok(d)
}

pub struct Sites {
    engine: Arc<Engine>,
    sites: RwLock<BTreeMap<String, Origin>>,
    /// Serialises changes, so the log's order is the registry's.
    write: tokio::sync::Mutex<()>,
}

impl Sites {
    /// The configured sites plus those the API added (and did not remove).
    /// Blocking (reads the stream back).
    pub fn open(engine: Arc<Engine>, configured: &[String]) -> Result<Sites, String> {
        let mut sites = BTreeMap::new();
        engine
            .scan(SITES_STREAM, &mut |b: &Batch| {
                let (Some(kind), Some(domain)) = (text(b, "kind"), text(b, "domain")) else {
                    return Ok(true);
                };
                for (k, d) in kind.into_iter().zip(domain) {
                    match (k.as_deref(), d) {
                        (Some("add"), Some(d)) => {
                            sites.insert(d, Origin::Api);
                        }
                        (Some("remove"), Some(d)) => {
                            sites.remove(&d);
                        }
                        _ => {}
                    }
                }
                Ok(true)
            })
            .map_err(|e| e.to_string())?;
        for d in configured {
            sites.insert(normalize_domain(d)?, Origin::Config);
        }
        Ok(Sites {
            engine,
            sites: RwLock::new(sites),
            write: tokio::sync::Mutex::new(()),
        })
    }

    pub fn contains(&self, domain: &str) -> bool {
        self.sites.read().contains_key(domain)
    }

    pub fn list(&self) -> Vec<(String, Origin)> {
        self.sites
            .read()
            .iter()
            .map(|(d, o)| (d.clone(), *o))
            .collect()
    }

    /// Adds a site (durably); false if it was already there.
    pub async fn add(&self, domain: &str) -> Result<bool, tally_engine::Error> {
        let _w = self.write.lock().await;
        if self.contains(domain) {
            return Ok(false);
        }
        self.engine
            .ingest(SITES_STREAM, event("add", domain))
            .await?;
        self.sites.write().insert(domain.to_string(), Origin::Api);
        Ok(true)
    }

    /// Removes a site added through the API; `None` if it is not there,
    /// `Some(false)` if the config names it (it cannot be removed here).
    pub async fn remove(&self, domain: &str) -> Result<Option<bool>, tally_engine::Error> {
        let _w = self.write.lock().await;
        match self.sites.read().get(domain) {
            None => return Ok(None),
            Some(Origin::Config) => return Ok(Some(false)),
            Some(Origin::Api) => {}
        }
        self.engine
            .ingest(SITES_STREAM, event("remove", domain))
            .await?;
        self.sites.write().remove(domain);
        Ok(Some(true))
    }
}

fn event(kind: &str, domain: &str) -> Batch {
    let mut b = BatchBuilder::new();
    let _ = b.start_row(1);
    let _ = b.push_str("kind", kind);
    let _ = b.push_str("domain", domain);
    b.finish_row(chrono::Utc::now().timestamp_micros());
    b.finish()
}

fn text(b: &Batch, name: &str) -> Option<Vec<Option<String>>> {
    match &b.column(name)?.data {
        ColumnData::Dim(s) => Some((0..s.len()).map(|i| s.get(i).map(str::to_string)).collect()),
        ColumnData::Value(_) => None,
    }
}
