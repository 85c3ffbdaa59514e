//! Web analytics (S4): Plausible-compatible tracking.
//!
//! Trackers (Plausible's own scripts and npm packages, or tally's
//! `/js/script.js`) send events to `POST /api/event`. Each is checked
//! against the registered [`sites`], enriched ([`enrich`]: browser, OS and
//! device from the user agent, bots dropped, the source from the referrer
//! or `utm_source`, UTM parameters, the country from a MaxMind database when
//! one is configured) and stored as an event of the web stream (`web_events` by
//! default) with a visitor id: a keyed hash of the day's salt ([`salts`]),
//! the user agent, the address and the site. The address and user agent
//! themselves are never stored.
//!
//! The web stream is the app's: public ingest into it is refused, so what
//! it holds is exactly what the trackers sent. It is an ordinary stream for
//! reading: SQL, `/v1/query` and rollups work on it.

pub mod enrich;
mod http;
mod metrics;
pub mod salts;
pub mod sites;

pub use http::{routes, Slot};

use enrich::{AgentParser, Payload, PayloadError};
use salts::Salts;
use sites::Sites;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tally_engine::Engine;
use tally_ingest::{Batch, BatchBuilder};

/// The web analytics app's settings (`[web]` in the config file).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Sites that always exist (more can be added through the admin API).
    pub sites: Vec<String>,
    /// The stream events are stored in.
    pub stream: String,
    /// A MaxMind-format database (GeoLite2-Country, GeoIP2-City...) for
    /// countries; none stores no country.
    pub geoip: Option<PathBuf>,
    /// Seconds added to the clock (tests and demos of day changes).
    pub clock_offset_secs: i64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            sites: Vec::new(),
            stream: "web_events".into(),
            geoip: None,
            clock_offset_secs: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    Payload(String),
    #[error(transparent)]
    Engine(#[from] tally_engine::Error),
    #[error("web analytics: {0}")]
    Setup(String),
}

/// What happened to a tracker's event.
#[derive(Debug, Clone, PartialEq)]
pub enum Tracked {
    /// Stored, for this many sites.
    Stored(usize),
    /// Dropped: a bot.
    Bot,
    /// Dropped: none of its sites is registered.
    UnknownSite,
}

pub struct WebApp {
    engine: Arc<Engine>,
    config: WebConfig,
    sites: Sites,
    salts: Salts,
    agents: Arc<AgentParser>,
    geo: Option<maxminddb::Reader<Vec<u8>>>,
}

impl WebApp {
    /// Opens the app: its sites, salts and GeoIP database. Blocking.
    pub fn open(engine: Arc<Engine>, config: WebConfig) -> Result<WebApp, WebError> {
        tally_ingest::validate_public_stream_name(&config.stream)
            .map_err(|e| WebError::Setup(format!("stream {:?}: {e}", config.stream)))?;
        let sites = Sites::open(engine.clone(), &config.sites).map_err(WebError::Setup)?;
        let salts = Salts::open(&engine.options().data_dir.join("web"))
            .map_err(|e| WebError::Setup(format!("salts: {e}")))?;
        let geo = match &config.geoip {
            Some(p) => Some(
                maxminddb::Reader::open_readfile(p)
                    .map_err(|e| WebError::Setup(format!("GeoIP database {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let agents = Arc::new(AgentParser::default());
        let warm = agents.clone();
        std::thread::Builder::new()
            .name("tally-web-ua-rules".into())
            .spawn(move || warm.warm())
            .map_err(|e| WebError::Setup(e.to_string()))?;
        metrics::init();
        Ok(WebApp {
            engine,
            config,
            sites,
            salts,
            agents,
            geo,
        })
    }

    pub fn config(&self) -> &WebConfig {
        &self.config
    }

    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Now, in µs, on the app's clock.
    pub fn now_us(&self) -> i64 {
        chrono::Utc::now().timestamp_micros() + self.config.clock_offset_secs * 1_000_000
    }

    /// Checks, enriches and stores one tracker request. Blocking work (the
    /// user-agent rules, a salt write) is short; the append is awaited.
    pub async fn track(
        &self,
        body: &[u8],
        user_agent: &str,
        ip: IpAddr,
    ) -> Result<Tracked, WebError> {
        let payload = enrich::parse_payload(body).map_err(|PayloadError { field, message }| {
            metrics::DROPPED.with_label_values(&["invalid"]).inc();
            WebError::Payload(format!("{field}: {message}"))
        })?;
        let agent = self.agents.parse(user_agent);
        if agent.bot {
            metrics::DROPPED.with_label_values(&["bot"]).inc();
            return Ok(Tracked::Bot);
        }
        let sites: Vec<&String> = payload
            .domains
            .iter()
            .filter(|d| self.sites.contains(d))
            .collect();
        let unknown = payload.domains.len() - sites.len();
        if unknown > 0 {
            metrics::DROPPED
                .with_label_values(&["unknown_site"])
                .inc_by(unknown as u64);
        }
        if sites.is_empty() {
            return Ok(Tracked::UnknownSite);
        }
        let now = self.now_us();
        let day = chrono::DateTime::from_timestamp_micros(now)
            .map(|t| t.date_naive())
            .unwrap_or_default();
        let salt = tokio::task::block_in_place(|| self.salts.for_day(day))
            .map_err(|e| WebError::Setup(format!("salts: {e}")))?;
        let country = self.country(ip);
        let ip_text = ip.to_string();
        let mut b = BatchBuilder::new();
        for (i, site) in sites.iter().enumerate() {
            let visitor = enrich::visitor_id(&salt, user_agent, &ip_text, site);
            row(
                &mut b,
                i + 1,
                site,
                &payload,
                &agent,
                &visitor,
                country.as_deref(),
            );
            b.finish_row(now);
        }
        let batch: Batch = b.finish();
        let n = batch.len();
        self.engine.ingest(&self.config.stream, batch).await?;
        metrics::STORED.inc_by(n as u64);
        Ok(Tracked::Stored(n))
    }

    fn country(&self, ip: IpAddr) -> Option<String> {
        let geo = self.geo.as_ref()?;
        let found = geo.lookup(ip).ok()?;
        let c: maxminddb::geoip2::Country = found.decode().ok()??;
        c.country.iso_code.map(str::to_string)
    }
}

/// One stored event's fields.
fn row(
    b: &mut BatchBuilder,
    line: usize,
    site: &str,
    p: &Payload,
    agent: &enrich::Agent,
    visitor: &str,
    country: Option<&str>,
) {
    let _ = b.start_row(line);
    let mut put = |name: &str, value: &str| {
        if !value.is_empty() {
            // Names are constants or checked prop names; values are text.
            let _ = b.push_str(name, value);
        }
    };
    put("site", site);
    put("name", &p.name);
    put("pathname", &enrich::pathname(&p.url, p.hash_mode));
    put("hostname", p.url.host_str().unwrap_or_default());
    put("visitor", visitor);
    let source = enrich::source(&p.url, p.referrer.as_deref(), site);
    put("source", source.as_deref().unwrap_or_default());
    if source.is_some() {
        let referrer = p.referrer.as_deref().and_then(enrich::referrer_page);
        put("referrer", referrer.as_deref().unwrap_or_default());
    }
    for (field, value) in enrich::utm(&p.url) {
        put(field, &value);
    }
    put("browser", &agent.browser);
    put("browser_version", &agent.browser_version);
    put("os", &agent.os);
    put("os_version", &agent.os_version);
    let device = p
        .width
        .map(enrich::device_of_width)
        .or(agent.device)
        .unwrap_or_default();
    put("device", device);
    put("country", country.unwrap_or_default());
    for (k, v) in &p.props {
        put(&format!("prop.{k}"), v);
    }
    for (name, value) in [
        ("scroll_depth", p.scroll_depth),
        ("engagement_ms", p.engagement_ms),
    ] {
        if let Some(v) = value {
            let _ = b.push_num(name, v);
        }
    }
}
