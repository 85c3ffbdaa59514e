//! Server configuration, as assembled by the CLI from flags, environment and
//! the config file, and the HTTP layer's own settings.

use crate::auth::ApiKey;
use std::net::SocketAddr;
use std::time::Duration;
use tally_engine::EngineOptions;
use tally_query::QueryOptions;
use tally_settings::{duration, size, to_usize, ByteSize};

/// The HTTP layer: where it listens, and the sizes and times a request may
/// take. Each field is a flag of `tally serve`, a `TALLY_*` variable and a
/// config file key at once (see `tally-settings`); the `default_value`s
/// here are the only defaults, and [`ServerConfig::new`] starts from them.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on. A non-loopback address needs API keys or
    /// --allow-unauthenticated.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve a non-loopback address with no API keys.
    #[arg(long, env = "TALLY_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "TALLY_MAX_BODY_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "16MiB")]
    pub max_body_bytes: ByteSize,

    /// Memory for request bodies being parsed and written at once (each
    /// request reserves 3x its size); past it, ingest answers 503 with
    /// Retry-After.
    #[arg(long, env = "TALLY_INGEST_BUDGET_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "192MiB")]
    pub ingest_budget_bytes: ByteSize,

    /// A request body slower than this to arrive gets 408, on every route
    /// (ingest counts from when the request holds its share of the ingest
    /// budget; batch imports time each wait for the next chunk instead), so
    /// a trickling client holds neither a budget share nor a handler.
    #[arg(long, env = "TALLY_BODY_READ_TIMEOUT", value_name = "DURATION",
          value_parser = duration, default_value = "30s")]
    pub body_read_timeout: Duration,

    /// Largest file a batch import (`POST /v1/import`) takes; larger ones
    /// get 413. Imports stream, so this bounds disk, not memory.
    #[arg(long, env = "TALLY_MAX_IMPORT_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "64GiB")]
    pub max_import_bytes: ByteSize,

    /// Batch imports running at once; more get 429 with Retry-After.
    #[arg(long, env = "TALLY_IMPORT_CONCURRENCY", default_value = "2")]
    pub import_concurrency: usize,

    /// On SIGTERM, how long `/readyz` answers 503 while the node still
    /// serves every request, so a load balancer's health checks take it
    /// out of rotation first; then it stops accepting, finishes in-flight
    /// requests and exits. A second signal cuts the wait short.
    /// [default: 5s with --cluster, else 0s]
    #[arg(long, env = "TALLY_DRAIN_DELAY", value_name = "DURATION", value_parser = duration)]
    pub drain_delay: Option<Duration>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        tally_settings::defaults()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub engine: EngineOptions,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: usize,
    /// Bytes of request bodies being parsed and written at once, across all
    /// requests; past it, ingest answers 503 with Retry-After.
    pub ingest_budget_bytes: usize,
    /// Longest a request body may take to arrive once it holds its share of
    /// the budget (408 past it), so a trickling client cannot hold it forever.
    pub body_read_timeout: Duration,
    pub keys: Vec<ApiKey>,
    pub allow_unauthenticated: bool,
    pub query: QueryOptions,
    /// The global counter app; `None` turns it off.
    pub counter: Option<tally_apps::counter::CounterConfig>,
    /// The rates service (`GET /rates`).
    pub rates: tally_apps::rates::RatesConfig,
    /// Largest file a batch import accepts (`POST /v1/import`, 413 past it).
    pub max_import_bytes: u64,
    /// Batch imports that may run at once (429 past it).
    pub import_concurrency: usize,
    /// Web analytics; `None` turns it off.
    pub web: Option<tally_apps::web::WebConfig>,
    /// Per stream, the field holding its events' time and its format
    /// (others read `ts`).
    pub time_fields: std::collections::BTreeMap<String, tally_ingest::TimeField>,
    /// On SIGTERM, how long `/readyz` says 503 before the server stops
    /// accepting (see [`HttpSettings::drain_delay`]).
    pub drain_delay: Duration,
}

/// The drain delay when none is set: a cluster node sits behind a load
/// balancer, which needs a few health checks to take it out.
pub const CLUSTER_DRAIN_DELAY: Duration = Duration::from_secs(5);

impl ServerConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr, engine: EngineOptions) -> Self {
        let http = HttpSettings {
            listen,
            ..HttpSettings::default()
        };
        Self::with_settings(&http, engine, QueryOptions::default())
    }

    /// The HTTP layer's settings over `engine` and `query`; the apps'
    /// defaults.
    pub fn with_settings(http: &HttpSettings, engine: EngineOptions, query: QueryOptions) -> Self {
        let max_body_bytes = to_usize(http.max_body_bytes);
        let mut engine = engine;
        let engine_is_cluster = engine.cluster.is_some();
        // A record holds a body's events; leave room for its framing.
        engine.max_record_bytes = engine
            .max_record_bytes
            .max(max_body_bytes.saturating_mul(2));
        ServerConfig {
            listen: http.listen,
            engine,
            max_body_bytes,
            ingest_budget_bytes: to_usize(http.ingest_budget_bytes).min(u32::MAX as usize),
            body_read_timeout: http.body_read_timeout.max(Duration::from_secs(1)),
            keys: Vec::new(),
            allow_unauthenticated: http.allow_unauthenticated,
            query,
            counter: Some(Default::default()),
            rates: Default::default(),
            max_import_bytes: http.max_import_bytes.as_u64(),
            import_concurrency: http.import_concurrency.max(1),
            time_fields: Default::default(),
            web: Some(Default::default()),
            drain_delay: http.drain_delay.unwrap_or(if engine_is_cluster {
                CLUSTER_DRAIN_DELAY
            } else {
                Duration::ZERO
            }),
        }
    }
}
