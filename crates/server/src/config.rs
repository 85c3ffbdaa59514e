//! Server configuration, as assembled by the CLI from flags, environment and
//! the config file.

use crate::auth::ApiKey;
use std::net::SocketAddr;
use tally_engine::EngineOptions;
use tally_query::QueryOptions;

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
    pub body_read_timeout: std::time::Duration,
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
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, engine: EngineOptions) -> Self {
        ServerConfig {
            listen,
            engine,
            max_body_bytes: 16 << 20,
            ingest_budget_bytes: 192 << 20,
            body_read_timeout: std::time::Duration::from_secs(30),
            keys: Vec::new(),
            allow_unauthenticated: false,
            query: QueryOptions::default(),
            counter: Some(Default::default()),
            rates: Default::default(),
            max_import_bytes: 64 << 30,
            import_concurrency: 2,
            time_fields: Default::default(),
            web: Some(Default::default()),
        }
    }
}
