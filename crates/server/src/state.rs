//! Shared server state.

use crate::auth::Keys;
use crate::config::ServerConfig;
use crate::error::ApiError;
use std::sync::{Arc, OnceLock};
use tally_engine::Engine;
use tally_query::QueryEngine;
use tokio::sync::Semaphore;

pub(crate) struct AppState {
    /// Set once the engine has opened (log replayed).
    pub engine: OnceLock<Arc<Engine>>,
    /// The API keys, and the query stage (set just before the engine):
    /// what the apps' routes are lent too.
    pub ready: tally_http::Ready,
    pub max_body_bytes: usize,
    /// Permits are bytes of ingest work in flight.
    pub ingest_budget: Arc<Semaphore>,
    pub ingest_budget_bytes: usize,
    pub body_read_timeout: std::time::Duration,
    /// The counter app, set (before the engine) once rebuilt.
    pub counter: tally_apps::counter::Slot,
    /// The rates service, set with the query engine.
    pub rates: tally_apps::rates::Slot,
    /// Largest file `POST /v1/import` accepts.
    pub max_import_bytes: u64,
    /// One permit per import that may run at once.
    pub import_slots: Arc<Semaphore>,
    /// Turns true when the server starts shutting down (imports still
    /// uploading roll back and say so).
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Set on SIGTERM, before the server stops accepting: `/readyz` answers
    /// 503 so a load balancer takes this node out while it still serves.
    pub draining: std::sync::atomic::AtomicBool,
    /// Web analytics, set once opened.
    pub web: tally_apps::web::Slot,
    /// The streams web analytics writes (public ingest into them is
    /// refused).
    pub web_streams: Vec<String>,
    /// Per stream, where its event time is (see [`Self::time_field`]).
    pub time_fields: std::collections::BTreeMap<String, tally_ingest::TimeField>,
}

impl AppState {
    /// The field holding `stream`'s event time and its format: the
    /// request's `ts_field`/`ts_format` parameters, else the stream's
    /// `[time]` entry, else `ts`.
    pub fn time_field(
        &self,
        stream: &str,
        params: &TimeParams,
    ) -> Result<tally_ingest::TimeField, crate::ApiError> {
        let mut t = self.time_fields.get(stream).cloned().unwrap_or_default();
        if let Some(f) = &params.ts_field {
            tally_ingest::validate_field_name(f).map_err(|e| crate::ApiError::BadRequest {
                message: format!("ts_field {f:?}: {e}"),
                stream: Some(stream.to_string()),
            })?;
            t.field = f.clone();
            t.format = tally_ingest::TimeFormat::Auto;
        }
        if let Some(f) = &params.ts_format {
            t.format =
                tally_ingest::TimeFormat::parse(f).ok_or_else(|| crate::ApiError::BadRequest {
                    message: format!("ts_format {f:?}: use {}", tally_ingest::TimeFormat::NAMES),
                    stream: Some(stream.to_string()),
                })?;
        }
        Ok(t)
    }

    /// Refuses public writes into a stream an app owns.
    pub fn check_writable(&self, stream: &str) -> Result<(), crate::ApiError> {
        if self.web_streams.iter().any(|s| s == stream) {
            return Err(crate::ApiError::BadRequest {
                message: format!(
                    "stream '{stream}' is written by web analytics only (trackers send POST /api/event)"
                ),
                stream: Some(stream.to_string()),
            });
        }
        Ok(())
    }

    pub fn new(config: &ServerConfig) -> Self {
        AppState {
            engine: OnceLock::new(),
            ready: tally_http::Ready::new(Keys::new(config.keys.clone())),
            max_body_bytes: config.max_body_bytes,
            ingest_budget: Arc::new(Semaphore::new(config.ingest_budget_bytes)),
            ingest_budget_bytes: config.ingest_budget_bytes,
            body_read_timeout: config.body_read_timeout,
            counter: Default::default(),
            rates: Default::default(),
            max_import_bytes: config.max_import_bytes,
            import_slots: Arc::new(Semaphore::new(config.import_concurrency.max(1))),
            stopping: tokio::sync::watch::Sender::new(false),
            draining: Default::default(),
            web: Default::default(),
            time_fields: config.time_fields.clone(),
            web_streams: config
                .web
                .iter()
                .flat_map(|w| [w.stream.clone(), w.visits_stream.clone()])
                .collect(),
        }
    }

    pub fn engine(&self) -> Result<&Arc<Engine>, ApiError> {
        self.engine.get().ok_or(ApiError::NotReady)
    }

    pub fn query(&self) -> Result<&Arc<QueryEngine>, ApiError> {
        self.ready.query()
    }

    pub fn keys(&self) -> &Keys {
        &self.ready.keys
    }
}

/// Where a request's events keep their time, when not in `ts`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TimeParams {
    pub ts_field: Option<String>,
    pub ts_format: Option<String>,
}
