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

mod admin;
mod cluster;
pub mod enrich;
mod http;
mod metrics;
pub mod salts;
pub mod sites;
pub mod stats;
pub mod visits;
mod writer;

pub use http::{routes, Slot};
pub use writer::Streams;

use enrich::{Agent, AgentParser, Payload, PayloadError};
use salts::Salts;
use sites::Sites;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tally_engine::Engine;
use visits::{Hit, Visits, ATTRS};
use writer::Writer;

/// The web analytics app's settings (`[web]` in the config file).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Sites that always exist (more can be added through the admin API).
    pub sites: Vec<String>,
    /// The stream events are stored in.
    pub stream: String,
    /// The stream visits are stored in.
    pub visits_stream: String,
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
            visits_stream: "web_visits".into(),
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
    /// A write failed in a way that is not the client's: the engine's
    /// error, as text (one failed write answers several waiting requests).
    #[error("web analytics: storing events failed: {0}")]
    Write(String),
}

impl From<WebError> for tally_http::ApiError {
    fn from(e: WebError) -> Self {
        use tally_http::{ApiError, Kind};
        match e {
            // Plausible's shape too: `{"errors": {"field": ["message"]}}`.
            WebError::Payload(message) => {
                let (field, msg) = message.split_once(": ").unwrap_or(("request", &message));
                let errors = serde_json::json!({ field: [msg] });
                ApiError::app(Kind::BadRequest, message.clone()).with("errors", errors)
            }
            WebError::Engine(e) => e.into(),
            e @ (WebError::Setup(_) | WebError::Write(_)) => ApiError::Internal(e.to_string()),
        }
    }
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

/// What a backfill stored and dropped.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Backfilled {
    /// Events stored (one per site of a line).
    pub stored: usize,
    /// Visits they make.
    pub visits: usize,
    pub bots: usize,
    pub unknown_site: usize,
}

/// Most lines of one backfill request.
pub const MAX_BACKFILL_LINES: usize = 1_000_000;
/// Events per record a backfill writes (records stay well under the log's
/// size limit).
const BACKFILL_RECORD_EVENTS: usize = 20_000;

pub struct WebApp {
    engine: Arc<Engine>,
    config: WebConfig,
    streams: Streams,
    sites: Sites,
    salts: Salts,
    /// Cluster mode: each day's salt, shared by every node.
    shared_salts: Option<tally_engine::SharedKeys>,
    agents: Arc<AgentParser>,
    geo: Option<maxminddb::Reader<Vec<u8>>>,
    writer: Attributor,
}

/// Where tracker events are attributed to visits.
enum Attributor {
    /// Here: a node alone.
    Local(Writer),
    /// On the cluster's visit writer (see [`cluster`]).
    Cluster(cluster::RemoteWriter),
}

impl WebApp {
    /// Opens the app: its sites, salts, GeoIP database, rollups and live
    /// visits (read back from the visits stream), and starts the visit
    /// writers. Blocking; needs a Tokio runtime.
    pub fn open(engine: Arc<Engine>, config: WebConfig) -> Result<WebApp, WebError> {
        for s in [&config.stream, &config.visits_stream] {
            tally_ingest::validate_public_stream_name(s)
                .map_err(|e| WebError::Setup(format!("stream {s:?}: {e}")))?;
        }
        if config.stream == config.visits_stream {
            return Err(WebError::Setup(
                "the events and the visits streams must differ".into(),
            ));
        }
        let streams = Streams {
            events: config.stream.clone(),
            visits: config.visits_stream.clone(),
        };
        let sites = Sites::open(engine.clone(), &config.sites).map_err(WebError::Setup)?;
        let salts = Salts::open(&engine.options().data_dir.join("web"))
            .map_err(|e| WebError::Setup(format!("salts: {e}")))?;
        // Today's salt lives into tomorrow, for yesterday's late events.
        let shared_salts = engine
            .shared_keys(
                "WEB_SALTS",
                std::time::Duration::from_secs(49 * 3600),
                false,
            )
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
        for def in stats::rollups(&streams) {
            if engine.rollup_definition(&def.name).as_ref() != Some(&def) {
                engine.define_rollup(def)?;
            }
        }
        let offset = config.clock_offset_secs;
        let clock = move || chrono::Utc::now().timestamp_micros() + offset * 1_000_000;
        let clock: Arc<dyn Fn() -> i64 + Send + Sync> = Arc::new(clock);
        let writer = match engine.channel(cluster::WORK) {
            None => {
                let live = visits::rebuild(&engine, &streams.visits, clock())?;
                tracing::info!(visits = live.len(), "web analytics: live visits read back");
                metrics::VISIT_WRITER.set(1);
                Attributor::Local(Writer::start(engine.clone(), streams.clone(), live, clock)?)
            }
            Some(channel) => {
                let publish_timeout = engine
                    .options()
                    .cluster
                    .as_ref()
                    .map_or(std::time::Duration::from_secs(15), |c| c.publish_timeout);
                cluster::spawn_holder(
                    engine.clone(),
                    streams.clone(),
                    channel.clone(),
                    clock,
                    publish_timeout,
                )?;
                Attributor::Cluster(cluster::RemoteWriter::new(channel, publish_timeout))
            }
        };
        Ok(WebApp {
            engine,
            config,
            streams,
            sites,
            salts,
            shared_salts,
            agents,
            geo,
            writer,
        })
    }

    pub fn config(&self) -> &WebConfig {
        &self.config
    }

    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Now, in µs, on the app's clock.
    pub fn now_us(&self) -> i64 {
        chrono::Utc::now().timestamp_micros() + self.config.clock_offset_secs * 1_000_000
    }

    /// The stats API over `query` (see [`stats`]).
    pub fn stats<'a>(&'a self, query: &'a tally_query::QueryEngine) -> stats::Stats<'a> {
        let now_us = self.now_us();
        stats::Stats {
            query,
            streams: &self.streams,
            sites: &self.sites,
            today: chrono::DateTime::from_timestamp_micros(now_us)
                .map(|t| t.date_naive())
                .unwrap_or_default(),
            now_us,
        }
    }

    /// Checks a payload's agent and sites: the sites to store it for, or
    /// why it is dropped (counted).
    fn admit<'p>(&self, payload: &'p Payload, agent: &Agent) -> Result<Vec<&'p String>, Tracked> {
        if agent.bot {
            metrics::DROPPED.with_label_values(&["bot"]).inc();
            return Err(Tracked::Bot);
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
            return Err(Tracked::UnknownSite);
        }
        Ok(sites)
    }

    fn parse(body: &[u8]) -> Result<Payload, WebError> {
        enrich::parse_payload(body).map_err(|PayloadError { field, message }| {
            metrics::DROPPED.with_label_values(&["invalid"]).inc();
            WebError::Payload(format!("{field}: {message}"))
        })
    }

    /// Checks, enriches and stores one tracker request; returns once it
    /// is durable.
    pub async fn track(
        &self,
        body: &[u8],
        user_agent: &str,
        ip: IpAddr,
    ) -> Result<Tracked, WebError> {
        let payload = Self::parse(body)?;
        let agent = self.agents.parse(user_agent);
        let sites = match self.admit(&payload, &agent) {
            Ok(s) => s,
            Err(dropped) => return Ok(dropped),
        };
        let now = self.now_us();
        let day = chrono::DateTime::from_timestamp_micros(now)
            .map(|t| t.date_naive())
            .unwrap_or_default();
        // A new day's salt is written to disk once; every other request
        // finds it in memory.
        let salt = match self.salts.get(day) {
            Some(s) => s,
            None => self.new_day_salt(day).await?,
        };
        let hits = self.hits(&payload, &agent, &sites, &salt, user_agent, ip, now);
        let n = match &self.writer {
            Attributor::Local(w) => w.write(hits).await?,
            Attributor::Cluster(w) => w.write(hits).await?,
        };
        Ok(Tracked::Stored(n))
    }

    /// The salt of a day this node has none for yet: made here, or in a
    /// cluster the one every node uses (made by the first to need it).
    async fn new_day_salt(&self, day: chrono::NaiveDate) -> Result<[u8; 16], WebError> {
        let setup = |e: &dyn std::fmt::Display| WebError::Setup(format!("salts: {e}"));
        let Some(keys) = &self.shared_salts else {
            return tokio::task::block_in_place(|| self.salts.for_day(day)).map_err(|e| setup(&e));
        };
        let mine: [u8; 16] = rand::random();
        let key = format!("d{}", day.format("%Y%m%d"));
        let made = keys
            .create(&key, hex::encode(mine).into_bytes())
            .await
            .map_err(|reason| {
                WebError::Engine(tally_engine::Error::Unavailable {
                    reason: format!("the cluster's salts cannot be reached: {reason}"),
                    retry_after: std::time::Duration::from_secs(1),
                })
            })?;
        let salt = match made {
            tally_engine::Created::Yes(_) => mine,
            tally_engine::Created::Taken(e) => hex::decode(&e.value)
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| setup(&format!("the shared salt of {day} is not 16 hex bytes")))?,
        };
        tokio::task::block_in_place(|| self.salts.adopt(day, salt)).map_err(|e| setup(&e))?;
        Ok(salt)
    }

    /// The stored events of one payload, one per site.
    #[allow(clippy::too_many_arguments)]
    fn hits(
        &self,
        p: &Payload,
        agent: &Agent,
        sites: &[&String],
        salt: &[u8; 16],
        user_agent: &str,
        ip: IpAddr,
        ts: i64,
    ) -> Vec<Hit> {
        let country = self.country(ip);
        let ip_text = ip.to_string();
        let pathname = enrich::pathname(&p.url, p.hash_mode);
        let hostname = p.url.host_str().unwrap_or_default().to_string();
        let utm = enrich::utm(&p.url);
        let device = p
            .width
            .map(enrich::device_of_width)
            .or(agent.device)
            .unwrap_or_default();
        sites
            .iter()
            .map(|site| {
                let source = enrich::source(&p.url, p.referrer.as_deref(), site);
                let referrer = match &source {
                    Some(_) => p.referrer.as_deref().and_then(enrich::referrer_page),
                    None => None,
                };
                let mut attrs: [String; ATTRS.len()] = Default::default();
                for (slot, name) in attrs.iter_mut().zip(ATTRS) {
                    *slot = match name {
                        "source" => source.clone().unwrap_or_default(),
                        "referrer" => referrer.clone().unwrap_or_default(),
                        "device" => device.to_string(),
                        "browser" => agent.browser.clone(),
                        "browser_version" => agent.browser_version.clone(),
                        "os" => agent.os.clone(),
                        "os_version" => agent.os_version.clone(),
                        "country" => country.clone().unwrap_or_default(),
                        utm_field => utm
                            .iter()
                            .find(|(f, _)| *f == utm_field)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default(),
                    };
                }
                Hit {
                    ts,
                    site: site.to_string(),
                    visitor: enrich::visitor_id(salt, user_agent, &ip_text, site),
                    name: p.name.clone(),
                    pathname: pathname.clone(),
                    hostname: hostname.clone(),
                    props: p.props.clone(),
                    scroll_depth: p.scroll_depth,
                    engagement_ms: p.engagement_ms,
                    attrs,
                }
            })
            .collect()
    }

    /// Stores past events (a migration from another tool's raw logs, or a
    /// replay): NDJSON, one tracker payload per line with its
    /// `timestamp` (RFC 3339, or seconds since the epoch), `user_agent` and
    /// `ip`. Every line is checked before anything is stored; a bad one is
    /// named (`line N: field: ...`) and nothing is written. Events are put
    /// in time order and split into visits on their own (visitor ids use
    /// a salt made for this request, per day, so they match no live
    /// visitor's), then written in records of 20,000 events (and their
    /// visits' rows): a crash during a large backfill can keep a part of it.
    pub async fn backfill(&self, body: &[u8]) -> Result<Backfilled, WebError> {
        let now = self.now_us();
        let mut hits: Vec<Hit> = Vec::new();
        let mut report = Backfilled::default();
        let mut salts: HashMap<chrono::NaiveDate, [u8; 16]> = HashMap::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if n > MAX_BACKFILL_LINES {
                return Err(WebError::Payload(format!(
                    "line {n}: request: at most {MAX_BACKFILL_LINES} lines per request"
                )));
            }
            let at = |field: &str, message: String| {
                WebError::Payload(format!("line {n}: {field}: {message}"))
            };
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line)
                .map_err(|e| at("request", format!("not a JSON object: {e}")))?;
            let payload = enrich::payload_of(&obj)
                .map_err(|PayloadError { field, message }| at(field, message))?;
            let ts = match obj.get("timestamp") {
                Some(serde_json::Value::Number(x)) => x
                    .as_f64()
                    .map(|s| (s * 1e6).round() as i64)
                    .ok_or_else(|| at("timestamp", "not a number of seconds".into()))?,
                Some(serde_json::Value::String(t)) => chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| at("timestamp", format!("not RFC 3339: {e}")))?
                    .timestamp_micros(),
                _ => return Err(at("timestamp", "required (RFC 3339 or seconds)".into())),
            };
            if ts > now + 60_000_000 || ts < 0 {
                return Err(at("timestamp", "in the future or before 1970".into()));
            }
            let text = |k: &str| obj.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let user_agent = text("user_agent");
            let ip: IpAddr = text("ip")
                .parse()
                .map_err(|_| at("ip", format!("{:?} is not an IP address", text("ip"))))?;
            let agent = self.agents.parse(user_agent);
            let sites = match self.admit(&payload, &agent) {
                Ok(s) => s,
                Err(Tracked::Bot) => {
                    report.bots += 1;
                    continue;
                }
                Err(_) => {
                    report.unknown_site += 1;
                    continue;
                }
            };
            let day = chrono::DateTime::from_timestamp_micros(ts)
                .map(|t| t.date_naive())
                .unwrap_or_default();
            let salt = *salts.entry(day).or_insert_with(rand::random);
            hits.extend(self.hits(&payload, &agent, &sites, &salt, user_agent, ip, ts));
        }
        hits.sort_by_key(|h| h.ts);
        let mut live = Visits::default();
        let mut events = tally_ingest::BatchBuilder::new();
        let mut sessions = tally_ingest::BatchBuilder::new();
        let mut seen = std::collections::HashSet::new();
        for (i, hit) in hits.iter().enumerate() {
            let r = live.record(hit);
            if let Some(v) = &r.new {
                seen.insert(v.first.id);
            }
            visits::write_recorded(&mut events, &mut sessions, i + 1, hit, &r);
            if (i + 1) % BACKFILL_RECORD_EVENTS == 0 {
                let full = std::mem::replace(&mut events, tally_ingest::BatchBuilder::new());
                let full_visits =
                    std::mem::replace(&mut sessions, tally_ingest::BatchBuilder::new());
                self.append_waiting(full, full_visits).await?;
            }
        }
        self.append_waiting(events, sessions).await?;
        report.stored = hits.len();
        report.visits = seen.len();
        Ok(report)
    }

    /// Writes a backfill's visits' rows, then its events, each retried
    /// while the server is overloaded (for up to 10 minutes): a backfill
    /// is bulk work that waits for room rather than stopping half-way.
    async fn append_waiting(
        &self,
        events: tally_ingest::BatchBuilder,
        visits: tally_ingest::BatchBuilder,
    ) -> Result<(), WebError> {
        let n = events.rows();
        for (stream, batch) in [
            (&self.streams.visits, visits.finish()),
            (&self.streams.events, events.finish()),
        ] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
            while !batch.is_empty() {
                match self.engine.ingest(stream, batch.clone()).await {
                    Ok(_) => break,
                    Err(tally_engine::Error::Overloaded { retry_after, .. })
                        if std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(retry_after.min(std::time::Duration::from_secs(1)))
                            .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        metrics::STORED.inc_by(n as u64);
        Ok(())
    }

    /// The visitor's country: `country.iso_code` as MaxMind's databases
    /// (GeoLite2, GeoIP2, DB-IP's lite ones) hold it, or `country_code` as
    /// the free ip-location-db databases do.
    fn country(&self, ip: IpAddr) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Record<'a> {
            #[serde(borrow)]
            country: Option<maxminddb::geoip2::country::Country<'a>>,
            country_code: Option<&'a str>,
        }
        let geo = self.geo.as_ref()?;
        let found = geo.lookup(ip).ok()?;
        let r: Record = found.decode().ok()??;
        r.country
            .and_then(|c| c.iso_code)
            .or(r.country_code)
            .map(str::to_string)
    }
}
