//! The sites tally accepts tracker events for. Sites named in the config
//! always exist; sites added or removed through the admin API are events
//! of the internal stream `_tally_web_sites` (`kind` `add` or `remove`,
//! `domain`), read back at start and followed from then on, so in a
//! cluster every node holds the sites added through any node.

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
    sites: Arc<RwLock<BTreeMap<String, Origin>>>,
    /// Serialises this node's changes.
    write: tokio::sync::Mutex<()>,
}

/// Applies the sites stream's events to the registry, on every node, in
/// log order: a site added or removed through any node of a cluster is on
/// every node once applied.
struct Registry {
    sites: Arc<RwLock<BTreeMap<String, Origin>>>,
}

impl Registry {
    fn apply(&self, b: &Batch) {
        let (Some(kind), Some(domain)) = (text(b, "kind"), text(b, "domain")) else {
            return;
        };
        let mut sites = self.sites.write();
        for (k, d) in kind.into_iter().zip(domain) {
            match (k.as_deref(), d) {
                (Some("add"), Some(d)) => {
                    sites.entry(d).or_insert(Origin::Api);
                }
                // A configured site stays whatever the API did.
                (Some("remove"), Some(d)) if sites.get(&d) == Some(&Origin::Api) => {
                    sites.remove(&d);
                }
                _ => {}
            }
        }
    }
}

impl tally_engine::Follower for Registry {
    fn applied(&self, _lsn: tally_engine::Lsn, _stream: &str, batch: &Batch) {
        self.apply(batch);
    }
}

impl Sites {
    /// The configured sites plus those the API added (and did not remove),
    /// kept up to date from the log. Blocking (reads the stream back).
    pub fn open(engine: Arc<Engine>, configured: &[String]) -> Result<Sites, String> {
        let mut base = BTreeMap::new();
        for d in configured {
            base.insert(normalize_domain(d)?, Origin::Config);
        }
        let sites = Arc::new(RwLock::new(base));
        let registry = Arc::new(Registry {
            sites: sites.clone(),
        });
        let r = registry.clone();
        engine
            .follow(&[SITES_STREAM], registry, &mut |_, b: &Batch| {
                r.apply(b);
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        Ok(Sites {
            engine,
            sites,
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

    /// Adds a site (durably; applied from the log, on every node); false
    /// if it was already there.
    pub async fn add(&self, domain: &str) -> Result<bool, tally_engine::Error> {
        let _w = self.write.lock().await;
        if self.contains(domain) {
            return Ok(false);
        }
        self.engine
            .ingest(SITES_STREAM, event("add", domain))
            .await?;
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
