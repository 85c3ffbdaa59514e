//! The HTTP server: ingest endpoints, auth, limits, health and metrics.
//!
//! The server binds first and opens the engine in the background, so
//! `/healthz` answers at once while `/readyz` says 503 until the log has been
//! replayed, and again from SIGTERM on, while the server drains (see
//! [`HttpSettings::drain_delay`]). Every error that reaches HTTP is mapped to one status in one
//! place ([`error::ApiError`]) and answered as JSON.

mod cluster;
mod config;
mod dashboard;
mod deadline;
mod handover;
mod import;
mod influx;
mod ingest;
mod jobs;
mod metrics;
mod ops;
mod query;
mod rollups;
mod state;

pub use config::{HttpSettings, ServerConfig, CLUSTER_DRAIN_DELAY};
pub use tally_http::{hash_token, new_token, ApiError, ApiKey, Keys, Scope};
// The shared HTTP pieces, under the names the handlers use.
use tally_http::{auth, encoding, error};

use axum::routing::{get, post};
use axum::Router;
use state::AppState;
use std::future::Future;
use std::sync::Arc;
use tally_engine::Engine;
use tally_query::QueryEngine;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to listen on {addr} without API keys: anyone who can reach it could write and read data. \
         Configure keys (see `tally keys new`), listen on a loopback address, or pass --allow-unauthenticated"
    )]
    PublicWithoutKeys { addr: std::net::SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Engine(#[from] tally_engine::Error),
    /// An app or the query stage could not start (its own error, not the
    /// engine's).
    #[error("{part} could not start: {message}")]
    Start { part: &'static str, message: String },
}

/// Builds the router over a state.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/ping", get(influx::ping))
        .route("/v1/import/{stream}", post(import::post_import))
        .route("/v1/streams", get(ops::list_streams))
        .route("/v1/streams/{stream}", get(ops::get_stream))
        .route("/v1/admin/flush", post(ops::flush))
        .route("/v1/admin/maintain", post(ops::maintain))
        .route("/v1/admin/backup", post(ops::backup))
        .route("/v1/admin/checkpoint", post(cluster::post_checkpoint))
        .route("/v1/archive", get(ops::archive))
        .route("/v1/cluster", get(cluster::get_cluster))
        .route("/v1/sql", post(query::post_sql))
        .route("/v1/query", get(query::get_query).post(query::post_query))
        .route(
            "/v1/rollups",
            get(rollups::list_rollups).post(rollups::post_rollup),
        )
        .route(
            "/v1/rollups/{name}",
            get(rollups::get_rollup).delete(rollups::delete_rollup),
        )
        .route("/v1/rollups/{name}/rebuild", post(rollups::rebuild_rollup))
        .route("/v1/jobs", get(jobs::list_jobs))
        .route("/v1/jobs/{name}", get(jobs::get_job))
        .route("/v1/jobs/{name}/run", post(jobs::run_job))
        .route("/v1/jobs/{name}/pause", post(jobs::pause_job))
        .route("/v1/jobs/{name}/resume", post(jobs::resume_job))
        .route("/v1/tables", get(query::list_tables))
        .route(
            "/v1/tables/{name}",
            get(query::get_table)
                .put(query::put_table)
                .delete(query::delete_table),
        )
        .merge(tally_apps::counter::routes(
            state.counter.clone(),
            state.ready.clone(),
        ))
        .merge(tally_apps::rates::routes(state.rates.clone()))
        .merge(tally_apps::web::routes(
            state.web.clone(),
            state.ready.clone(),
        ))
        .merge(dashboard::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline::body_deadline,
        ))
        // Reads may name a write they must include; writes wait for none.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::min_seq,
        ))
        .merge(
            Router::new()
                .route("/v1/events/{stream}", post(ingest::post_events))
                .route("/write", post(influx::write_v1))
                .route("/api/v2/write", post(influx::write_v2))
                // The timestamp recorder (S0): `curl -X POST http://host/app`.
                .route("/{stream}", post(ingest::post_events))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    deadline::body_deadline,
                )),
        )
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(ops::not_found)
        .with_state(state)
}

/// Runs the server until `shutdown` resolves, then finishes in-flight
/// requests, flushes, and returns.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // A socket handed over by systemd (or another supervisor) that keeps it
    // open across restarts: connections wait in its backlog while one
    // process hands over to the next.
    let inherited = inherited_listener().map_err(Error::Serve)?;
    let addr = match &inherited {
        Some(l) => l.local_addr().map_err(Error::Serve)?,
        None => config.listen,
    };
    if !addr.ip().is_loopback() && config.keys.is_empty() && !config.allow_unauthenticated {
        return Err(Error::PublicWithoutKeys { addr });
    }
    if config.keys.is_empty() {
        tracing::warn!(%addr, "no API keys configured: every endpoint is open to whoever can reach this address");
    }
    let handed_over = inherited.is_some();
    let listener = match inherited {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?,
    };
    let local = listener.local_addr().map_err(Error::Serve)?;
    // A data directory in use is refused before the listening line, which
    // scripts read as "started".
    if !handed_over {
        let dir = config.engine.data_dir.clone();
        tokio::task::spawn_blocking(move || Engine::check_unlocked(&dir))
            .await
            .map_err(|e| Error::Serve(std::io::Error::other(e)))??;
    }
    metrics::init();
    tally_query::init_metrics();
    let state = Arc::new(AppState::new(&config));

    // Open the engine (log replay) in the background; /readyz tells when.
    let opener = {
        let state = state.clone();
        let opts = config.engine.clone();
        let query_opts = config.query.clone();
        let counter = config.counter.clone();
        let rates = config.rates.clone();
        let web = config.web.clone();
        tokio::task::spawn_blocking(move || {
            let engine = Arc::new(Engine::open(opts)?);
            let start = |part: &'static str| {
                move |e: &dyn std::fmt::Display| Error::Start {
                    part,
                    message: e.to_string(),
                }
            };
            match counter {
                Some(c) => {
                    let app = tally_apps::counter::CounterApp::open(engine.clone(), c)
                        .map_err(|e| start("the counter app")(&e))?;
                    state.counter.set(Arc::new(app));
                }
                None => state
                    .counter
                    .turn_off("the counter app (it is turned off: [counter] enabled = false)"),
            }
            match web {
                Some(w) => {
                    let app = tally_apps::web::WebApp::open(engine.clone(), w)
                        .map_err(|e| start("web analytics")(&e))?;
                    state.web.set(Arc::new(app));
                }
                None => state
                    .web
                    .turn_off("web analytics (it is turned off: [web] enabled = false)"),
            }
            let query = QueryEngine::new(engine.clone(), query_opts)
                .map_err(|e| start("the query stage")(&e))?;
            // The query stage first: readiness is judged by the engine.
            let query = Arc::new(query);
            state.rates.set(Arc::new(tally_apps::rates::RatesApp::new(
                query.clone(),
                rates,
            )));
            // The maintenance lease's holder uploads bootstrap checkpoints.
            if let Some(c) = &engine.options().cluster {
                if !c.checkpoint_interval.is_zero() {
                    tokio::spawn(cluster::checkpoints(
                        engine.clone(),
                        c.checkpoint_interval,
                        state.stopping.subscribe(),
                    ));
                }
            }
            // Each job runs its windows as they come due, until shutdown.
            for job in query.jobs().all() {
                tokio::spawn(tally_query::jobs::schedule(
                    query.clone(),
                    job.clone(),
                    state.stopping.subscribe(),
                ));
            }
            state.ready.set_query(query);
            let _ = state.engine.set(engine);
            Ok::<_, Error>(())
        })
    };
    // Tests and scripts read this line to find the port.
    println!("tally listening on http://{local}");
    tracing::info!(%local, data_dir = %config.engine.data_dir.display(), "listening");

    let opened = |r: Result<Result<(), Error>, tokio::task::JoinError>| match r {
        Ok(r) => r.err(),
        Err(join) => Some(Error::Start {
            part: "the engine",
            message: join.to_string(),
        }),
    };
    let mut opener = Some(opener);
    if handed_over {
        // The socket's backlog holds connections while the engine opens:
        // accept only once every request can be answered, so a restart
        // costs clients a wait, never a 503.
        if let Some(e) = opened(opener.take().expect("not awaited yet").await) {
            return Err(e);
        }
    }

    // Client addresses key the counter's login limits.
    let app = router(state.clone()).layer(axum::middleware::from_fn(handover::peer_as_socket_addr));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (accepting_tx, accepting_rx) = tokio::sync::watch::channel(false);
    let mut engine_failed = None;
    let app = app.into_make_service_with_connect_info::<handover::Peer>();
    let counter = state.counter.clone();
    let stopping = state.stopping.clone();
    let listener = handover::Handover {
        inner: listener,
        stop: accepting_rx,
    };
    let draining = state.clone();
    let drain_delay = config.drain_delay;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let mut rx = stop_rx;
        let told = tokio::select! {
            _ = shutdown => true,
            _ = rx.wait_for(|v| *v) => false,
        };
        if told {
            drain(&draining, drain_delay).await;
        }
        // New connections stay in the socket's backlog (for the next
        // process, when the socket was handed over); those just accepted
        // get to send their request before idle ones are closed.
        accepting_tx.send_replace(true);
        if handed_over {
            tokio::time::sleep(handover::FIRST_REQUEST_GRACE).await;
        }
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        // Imports still uploading roll back; committing ones finish.
        stopping.send_replace(true);
        // Live-update streams never finish by themselves.
        if let Some(app) = counter.get() {
            app.close_live();
        }
    });
    let server = tokio::spawn(async move { server.await });
    if let Some(opener) = opener {
        engine_failed = opened(opener.await);
        if engine_failed.is_some() {
            let _ = stop_tx.send(true);
        }
    }
    let served = server
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
    if let Some(e) = engine_failed {
        return Err(e);
    }
    served.map_err(Error::Serve)?;
    if let Some(engine) = state.engine.get().cloned() {
        let t = std::time::Instant::now();
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .map_err(|e| Error::Serve(std::io::Error::other(e)))??;
        tracing::info!(took_ms = t.elapsed().as_millis() as u64, "stopped cleanly");
    }
    Ok(())
}

/// Says "not ready" while still serving every request for `delay`, so a
/// load balancer's health checks move traffic away before the listener
/// closes; a second signal ends the wait.
async fn drain(state: &AppState, delay: std::time::Duration) {
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    metrics::DRAINING.set(1);
    if delay.is_zero() {
        return;
    }
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "draining: /readyz answers 503 while this node still serves; it stops accepting after the delay"
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown_signal() => tracing::info!("a second signal: stopping now"),
    }
}

/// The listening socket a supervisor handed over, as systemd's socket
/// activation does: `LISTEN_PID` is this process and `LISTEN_FDS` is 1, the
/// socket being descriptor 3. (A child process would see another
/// `LISTEN_PID` than its own, and not take them.)
fn inherited_listener() -> std::io::Result<Option<tokio::net::TcpListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let fds = std::env::var("LISTEN_FDS").ok();
    if !ours || fds.is_none() {
        return Ok(None);
    }
    if fds.as_deref() != Some("1") {
        return Err(std::io::Error::other(format!(
            "LISTEN_FDS={}: tally takes exactly one listening socket",
            fds.unwrap_or_default()
        )));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: descriptor 3 is the listening socket the supervisor passed,
    // owned by nothing else in this process.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    std_listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std_listener).map(Some)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// How long a client should wait after a 503 for overload.
pub(crate) use tally_http::DEFAULT_RETRY_AFTER;
