//! `tally serve` flags and the TOML config file.
//!
//! Every setting has a flag, a `TALLY_*` environment twin and a config-file
//! key of the same name; a flag or variable wins over the file, the file over
//! the default. Keys (API keys) live only in the file, as hashes.

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tally_engine::{EngineOptions, SyncMode};
use tally_server::{ApiKey, Scope, ServerConfig};

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML config file; its keys have the same names as these flags
    /// (with '_' for '-'), plus [[keys]] entries.
    #[arg(long, env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory for the log, segments and catalog. [default: ./tally-data]
    #[arg(long, env = "TALLY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on. A non-loopback address needs API keys or
    /// --allow-unauthenticated. [default: 127.0.0.1:8080]
    #[arg(long, env = "TALLY_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// When an acknowledged write is on disk: `always` fsyncs before every
    /// acknowledgement (survives power loss; group commit keeps it fast);
    /// `interval` acknowledges after the OS has the data and fsyncs every
    /// --sync-interval-ms (survives a killed process, not a power loss);
    /// `never` is for throwaway data. [default: always]
    #[arg(long, env = "TALLY_SYNC")]
    pub sync: Option<String>,

    /// fsync period for --sync interval, in milliseconds. [default: 100]
    #[arg(long, env = "TALLY_SYNC_INTERVAL_MS")]
    pub sync_interval_ms: Option<u64>,

    /// Largest request body accepted; bigger ones get 413. [default: 16777216]
    #[arg(long, env = "TALLY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Memory for request bodies being parsed and written at once; past it,
    /// ingest answers 503 with Retry-After. [default: 201326592]
    #[arg(long, env = "TALLY_INGEST_BUDGET_BYTES")]
    pub ingest_budget_bytes: Option<usize>,

    /// Seconds a request body may take to arrive, on every route (ingest
    /// counts from when the request holds its share of the ingest budget;
    /// imports, from each chunk to the next); slower ones get 408.
    /// [default: 30]
    #[arg(long, env = "TALLY_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,

    /// Largest file a batch import (`POST /v1/import`) accepts; bigger ones
    /// get 413. [default: 68719476736]
    #[arg(long, env = "TALLY_MAX_IMPORT_BYTES")]
    pub max_import_bytes: Option<u64>,

    /// Batch imports that may run at once; more get 429. [default: 2]
    #[arg(long, env = "TALLY_IMPORT_CONCURRENCY")]
    pub import_concurrency: Option<usize>,

    /// Bytes of rows a batch import buffers before writing them to its
    /// staged files: its memory, whatever the file's size. [default: 67108864]
    #[arg(long, env = "TALLY_IMPORT_SPILL_BYTES")]
    pub import_spill_bytes: Option<usize>,

    /// Flush the in-memory tail to Parquet once it holds this many bytes.
    /// Larger means fewer, bigger segments and a longer log replay after a
    /// crash. [default: 50331648]
    #[arg(long, env = "TALLY_FLUSH_BYTES")]
    pub flush_bytes: Option<usize>,

    /// ... or once its oldest event is this many seconds old. [default: 60]
    #[arg(long, env = "TALLY_FLUSH_INTERVAL_SECS")]
    pub flush_interval_secs: Option<u64>,

    /// While the in-memory tail holds more than this (flushing falls
    /// behind), writes wait for a flush, then are refused (503).
    /// [default: 134217728]
    #[arg(long, env = "TALLY_MEMORY_LIMIT_BYTES")]
    pub memory_limit_bytes: Option<usize>,

    /// How long a write waits for a flush to make room in a full tail
    /// before 503; 0 refuses at once and leaves flushes to size and age.
    /// [default: 2000]
    #[arg(long, env = "TALLY_MEMORY_WAIT_MS")]
    pub memory_wait_ms: Option<u64>,

    /// Batches that may wait for the log writer before ingest answers 503.
    /// [default: 4096]
    #[arg(long, env = "TALLY_LOG_QUEUE")]
    pub log_queue: Option<usize>,

    /// Allow listening on a non-loopback address with no API keys.
    #[arg(long, env = "TALLY_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Threads executing queries (a pool of their own, at lower CPU
    /// priority than ingestion). [default: the number of cores]
    #[arg(long, env = "TALLY_QUERY_WORKERS")]
    pub query_workers: Option<usize>,

    /// Queries executing at once; more get 429 with Retry-After. Cached
    /// answers do not count. [default: 16]
    #[arg(long, env = "TALLY_QUERY_MAX_CONCURRENT")]
    pub query_max_concurrent: Option<usize>,

    /// A query running longer is stopped with 422 (limit "timeout").
    /// [default: 30]
    #[arg(long, env = "TALLY_QUERY_TIMEOUT_SECS")]
    pub query_timeout_secs: Option<f64>,

    /// Memory one query's aggregations, sorts and joins may hold; past it
    /// the query fails with 422 (limit "memory") rather than spill to disk.
    /// [default: 536870912]
    #[arg(long, env = "TALLY_QUERY_MEMORY_LIMIT_BYTES")]
    pub query_memory_limit_bytes: Option<usize>,

    /// Rows one answer may have (422, limit "rows", past it). [default: 100000]
    #[arg(long, env = "TALLY_QUERY_MAX_ROWS")]
    pub query_max_rows: Option<usize>,

    /// Bytes of SQL text one statement may have (413, limit "sql_bytes",
    /// past it). The query threads' stacks are sized for the deepest
    /// expression this many bytes can write. [default: 262144]
    #[arg(long, env = "TALLY_SQL_MAX_BYTES")]
    pub sql_max_bytes: Option<usize>,

    /// Nesting of expressions and subqueries one statement may have (400,
    /// limit "sql_depth"). [default: 256]
    #[arg(long, env = "TALLY_SQL_MAX_DEPTH")]
    pub sql_max_depth: Option<usize>,

    /// Expressions one statement may hold in all (400, limit
    /// "sql_nodes"). [default: 50000]
    #[arg(long, env = "TALLY_SQL_MAX_NODES")]
    pub sql_max_nodes: Option<usize>,

    /// Items of one IN list or `in` filter (400, limit "sql_in_list").
    /// [default: 10000]
    #[arg(long, env = "TALLY_SQL_MAX_IN_LIST")]
    pub sql_max_in_list: Option<usize>,

    /// Bytes of answers kept by the result cache (0 disables it).
    /// [default: 67108864]
    #[arg(long, env = "TALLY_QUERY_CACHE_BYTES")]
    pub query_cache_bytes: Option<usize>,

    /// Where raw segments are archived: an absolute directory, file:///DIR or
    /// s3://BUCKET[/PREFIX] (settings in the file's [archive] table);
    /// "none" keeps no archive. Default: DATA_DIR/archive.
    #[arg(long, env = "TALLY_ARCHIVE")]
    pub archive: Option<String>,

    /// The counter app's window: how long after a user's accepted increment
    /// their next one is refused ("24h", "90s"). [default: 24h]
    #[arg(long, env = "TALLY_COUNTER_WINDOW")]
    pub counter_window: Option<String>,

    /// A site web analytics accepts tracker events for (repeatable; more
    /// through `POST /v1/sites`).
    #[arg(long = "web-site", env = "TALLY_WEB_SITES", value_delimiter = ',')]
    pub web_sites: Vec<String>,

    /// A MaxMind-format database for visitors' countries.
    #[arg(long, env = "TALLY_WEB_GEOIP")]
    pub web_geoip: Option<PathBuf>,

    /// Seconds added to web analytics' clock (to try day changes).
    #[arg(long, hide = true, env = "TALLY_WEB_CLOCK_OFFSET_SECS")]
    pub web_clock_offset_secs: Option<i64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    sync: Option<String>,
    sync_interval_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    ingest_budget_bytes: Option<usize>,
    body_read_timeout_secs: Option<u64>,
    max_import_bytes: Option<u64>,
    import_concurrency: Option<usize>,
    import_spill_bytes: Option<usize>,
    flush_bytes: Option<usize>,
    flush_interval_secs: Option<u64>,
    memory_limit_bytes: Option<usize>,
    memory_wait_ms: Option<u64>,
    log_queue: Option<usize>,
    allow_unauthenticated: Option<bool>,
    query_workers: Option<usize>,
    query_max_concurrent: Option<usize>,
    query_timeout_secs: Option<f64>,
    query_memory_limit_bytes: Option<usize>,
    query_max_rows: Option<usize>,
    query_cache_bytes: Option<usize>,
    sql_max_bytes: Option<usize>,
    sql_max_depth: Option<usize>,
    sql_max_nodes: Option<usize>,
    sql_max_in_list: Option<usize>,
    #[serde(default)]
    keys: Vec<KeyConfig>,
    /// `[[rollup]]` tables: continuous rollups (docs/rollups.md).
    #[serde(default, rename = "rollup")]
    rollups: Vec<tally_rollup::RollupDef>,
    /// `[[job]]` tables: SQL run on a schedule over consecutive time
    /// windows, each window's answer kept in `jobs.<name>` (docs/jobs.md).
    #[serde(default, rename = "job")]
    jobs: Vec<tally_query::jobs::JobSpec>,
    /// `[archive]`: where raw segments are archived (docs/archive.md).
    archive: Option<ArchiveConfig>,
    /// `[retention]`: stream name (or "*") = how long raw events stay in
    /// the data directory ("36h", "30d", "2w").
    #[serde(default)]
    retention: std::collections::BTreeMap<String, String>,
    /// `[time]`: stream name = the field holding its events' time and its
    /// format, for log shippers that name and write it their own way:
    /// `logs = { field = "date", format = "epoch_s" }` (docs/api.md).
    #[serde(default)]
    time: std::collections::BTreeMap<String, TimeFileConfig>,
    counter: Option<CounterFileConfig>,
    rates: Option<RatesFileConfig>,
    web: Option<WebFileConfig>,
}

/// One stream's entry in `[time]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TimeFileConfig {
    field: String,
    #[serde(default)]
    format: Option<String>,
}

/// `[web]`: web analytics (docs/web.md).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct WebFileConfig {
    enabled: Option<bool>,
    sites: Option<Vec<String>>,
    stream: Option<String>,
    visits_stream: Option<String>,
    geoip: Option<PathBuf>,
}

/// `[rates]`: the rates service (docs/rates.md).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RatesFileConfig {
    stream: Option<String>,
    ports: Option<String>,
    regions: Option<String>,
    max_days: Option<u32>,
    cache_entries: Option<usize>,
}

/// `[counter]`: the global counter app (docs/counter.md).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct CounterFileConfig {
    enabled: Option<bool>,
    counters: Option<Vec<String>>,
    window: Option<String>,
    session_ttl: Option<String>,
    secure_cookies: Option<bool>,
    login_failures_per_account: Option<u32>,
    login_attempts_per_address: Option<u32>,
    registrations_per_address: Option<u32>,
    limit_period: Option<String>,
    max_live_clients: Option<usize>,
}

impl CounterFileConfig {
    /// The app's settings; `None` when it is turned off.
    fn into_config(
        self,
        window_flag: Option<String>,
    ) -> anyhow::Result<Option<tally_apps::counter::CounterConfig>> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let mut c = tally_apps::counter::CounterConfig::default();
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text).with_context(|| {
                format!("[counter] {key} = {text:?}: write a duration such as \"24h\" or \"90s\"")
            })
        };
        if let Some(names) = self.counters {
            if names.is_empty() {
                bail!("[counter] counters: name at least one counter (the first is the default)");
            }
            for n in &names {
                tally_apps::counter::validate_counter_name(n)
                    .map_err(|e| anyhow::anyhow!("[counter] counters: {e}"))?;
            }
            c.counters = names;
        }
        if let Some(w) = window_flag.or(self.window) {
            c.window = duration("window", &w)?;
        }
        if let Some(t) = self.session_ttl {
            c.session_ttl = duration("session_ttl", &t)?;
        }
        if let Some(p) = self.limit_period {
            c.limit_period = duration("limit_period", &p)?;
        }
        c.secure_cookies = self.secure_cookies.unwrap_or(false);
        if let Some(v) = self.login_failures_per_account {
            c.login_failures_per_account = v;
        }
        if let Some(v) = self.login_attempts_per_address {
            c.login_attempts_per_address = v;
        }
        if let Some(v) = self.registrations_per_address {
            c.registrations_per_address = v;
        }
        if let Some(v) = self.max_live_clients {
            c.max_live_clients = v;
        }
        Ok(Some(c))
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ArchiveConfig {
    /// A directory, file:///DIR, s3://BUCKET[/PREFIX] or "none".
    url: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    /// Also read from AWS_SECRET_ACCESS_KEY; never logged.
    secret_access_key: Option<String>,
    allow_http: Option<bool>,
    settle_secs: Option<u64>,
    interval_secs: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    name: String,
    hash: String,
    scopes: Vec<String>,
}

impl ServeArgs {
    pub fn into_server_config(self) -> anyhow::Result<ServerConfig> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("tally-data"));
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let mut engine = EngineOptions::new(data_dir);
        let interval = Duration::from_millis(
            self.sync_interval_ms
                .or(file.sync_interval_ms)
                .unwrap_or(100),
        );
        engine.sync = match self.sync.or(file.sync).as_deref().unwrap_or("always") {
            "always" => SyncMode::Always,
            "interval" => SyncMode::Interval(interval),
            "never" => SyncMode::Never,
            other => bail!("--sync must be always, interval or never, not {other:?}"),
        };
        if let Some(v) = self.flush_bytes.or(file.flush_bytes) {
            engine.flush_bytes = v;
        }
        if let Some(v) = self.flush_interval_secs.or(file.flush_interval_secs) {
            engine.flush_interval = Duration::from_secs(v);
        }
        if let Some(v) = self.memory_limit_bytes.or(file.memory_limit_bytes) {
            engine.memory_limit_bytes = v;
        }
        if let Some(v) = self.memory_wait_ms.or(file.memory_wait_ms) {
            engine.memory_wait = Duration::from_millis(v);
        }
        if let Some(v) = self.import_spill_bytes.or(file.import_spill_bytes) {
            engine.import_spill_bytes = v;
        }
        if let Some(v) = self.log_queue.or(file.log_queue) {
            engine.log_queue = v.max(1);
        }
        for r in &file.rollups {
            r.validate()
                .with_context(|| format!("[[rollup]] {:?}", r.name))?;
        }
        engine.rollups = file.rollups;
        let archive = file.archive.unwrap_or_default();
        engine.archive = match self.archive.or(archive.url) {
            Some(url) if url == "none" => None,
            Some(url) => Some(tally_engine::ArchiveOptions::new(url)),
            None => Some(tally_engine::ArchiveOptions::in_data_dir(&engine.data_dir)),
        };
        if let Some(a) = &mut engine.archive {
            a.endpoint = archive.endpoint;
            a.region = archive.region;
            a.access_key_id = archive.access_key_id;
            a.secret_access_key = archive.secret_access_key;
            a.allow_http = archive.allow_http.unwrap_or(false);
            if let Some(v) = archive.settle_secs {
                a.settle = Duration::from_secs(v);
            }
            if let Some(v) = archive.interval_secs {
                a.interval = Duration::from_secs(v.max(1));
            }
            if let Err(reason) = tally_engine::ArchiveLocation::parse(&a.url) {
                bail!(
                    "--archive {:?} (TALLY_ARCHIVE, or [archive] url): {reason}",
                    a.url
                );
            }
        }
        for (stream, period) in file.retention {
            let us = tally_rollup::parse_period(&period).with_context(|| {
                format!("[retention] {stream} = {period:?}: write a whole number of hours, days or weeks, as \"36h\", \"30d\" or \"2w\"")
            })?;
            engine
                .retention
                .insert(stream, Duration::from_micros(us as u64));
        }
        let mut config = ServerConfig::new(listen, engine);
        for (stream, t) in file.time {
            let format = match t.format.as_deref() {
                None => tally_ingest::TimeFormat::Auto,
                Some(f) => tally_ingest::TimeFormat::parse(f).with_context(|| {
                    format!(
                        "[time] {stream}: format {f:?}: use {}",
                        tally_ingest::TimeFormat::NAMES
                    )
                })?,
            };
            tally_ingest::validate_field_name(&t.field)
                .map_err(|e| anyhow::anyhow!("[time] {stream}: field {:?}: {e}", t.field))?;
            config.time_fields.insert(
                stream,
                tally_ingest::TimeField {
                    field: t.field,
                    format,
                },
            );
        }
        if let Some(v) = self.max_body_bytes.or(file.max_body_bytes) {
            config.max_body_bytes = v;
        }
        config.engine.max_record_bytes = config
            .engine
            .max_record_bytes
            .max(config.max_body_bytes * 2);
        if let Some(v) = self.ingest_budget_bytes.or(file.ingest_budget_bytes) {
            config.ingest_budget_bytes = v.min(u32::MAX as usize);
        }
        if let Some(v) = self.body_read_timeout_secs.or(file.body_read_timeout_secs) {
            config.body_read_timeout = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.max_import_bytes.or(file.max_import_bytes) {
            config.max_import_bytes = v;
        }
        if let Some(v) = self.import_concurrency.or(file.import_concurrency) {
            config.import_concurrency = v.max(1);
        }
        config.allow_unauthenticated =
            self.allow_unauthenticated || file.allow_unauthenticated.unwrap_or(false);
        let q = &mut config.query;
        if let Some(v) = self.query_workers.or(file.query_workers) {
            q.workers = v.max(1);
        }
        if let Some(v) = self.query_max_concurrent.or(file.query_max_concurrent) {
            q.max_concurrent = v.max(1);
        }
        if let Some(v) = self.query_timeout_secs.or(file.query_timeout_secs) {
            if !(v.is_finite() && v > 0.0) {
                bail!("--query-timeout-secs must be a positive number, not {v}");
            }
            q.timeout = Duration::from_secs_f64(v);
        }
        if let Some(v) = self
            .query_memory_limit_bytes
            .or(file.query_memory_limit_bytes)
        {
            q.memory_limit = v;
        }
        if let Some(v) = self.query_max_rows.or(file.query_max_rows) {
            q.max_result_rows = v.max(1);
        }
        let l = &mut q.sql_limits;
        if let Some(v) = self.sql_max_bytes.or(file.sql_max_bytes) {
            l.max_bytes = v.max(16);
        }
        if let Some(v) = self.sql_max_depth.or(file.sql_max_depth) {
            l.max_depth = v.max(4);
        }
        if let Some(v) = self.sql_max_nodes.or(file.sql_max_nodes) {
            l.max_nodes = v.max(4);
        }
        if let Some(v) = self.sql_max_in_list.or(file.sql_max_in_list) {
            l.max_in_list = v.max(1);
        }
        if let Some(v) = self.query_cache_bytes.or(file.query_cache_bytes) {
            q.cache_bytes = v;
        }
        for spec in file.jobs {
            let def = spec.into_def(&q.sql_limits).context("[[job]]")?;
            if q.jobs.iter().any(|j| j.name == def.name) {
                bail!("[[job]] {:?} is defined twice", def.name);
            }
            q.jobs.push(def);
        }
        let rates = file.rates.unwrap_or_default();
        let r = &mut config.rates;
        r.stream = rates.stream.unwrap_or(r.stream.clone());
        r.ports = rates.ports.unwrap_or(r.ports.clone());
        r.regions = rates.regions.unwrap_or(r.regions.clone());
        if let Some(v) = rates.max_days {
            r.max_days = v.max(1);
        }
        if let Some(v) = rates.cache_entries {
            r.cache_entries = v;
        }
        config.counter = file
            .counter
            .unwrap_or_default()
            .into_config(self.counter_window)?;
        let web = file.web.unwrap_or_default();
        config.web = if web.enabled == Some(false) {
            None
        } else {
            let mut w = tally_apps::web::WebConfig {
                sites: web.sites.unwrap_or_default(),
                ..Default::default()
            };
            w.sites.extend(self.web_sites);
            for site in &w.sites {
                tally_apps::web::sites::normalize_domain(site)
                    .map_err(|e| anyhow::anyhow!("[web] sites: {e}"))?;
            }
            if let Some(s) = web.stream {
                w.stream = s;
            }
            if let Some(s) = web.visits_stream {
                w.visits_stream = s;
            }
            w.geoip = self.web_geoip.or(web.geoip);
            w.clock_offset_secs = self.web_clock_offset_secs.unwrap_or(0);
            Some(w)
        };
        for k in file.keys {
            let hash = ApiKey::parse_hash(&k.hash)
                .map_err(|e| anyhow::anyhow!("key {:?}: {e}", k.name))?;
            let scopes = k
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s)
                        .ok_or_else(|| anyhow::anyhow!("key {:?}: unknown scope {s:?}", k.name))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            config.keys.push(ApiKey {
                name: k.name,
                hash,
                scopes,
            });
        }
        Ok(config)
    }
}
