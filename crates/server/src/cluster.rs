//! Cluster mode's HTTP surface: `/v1/cluster`, reads that name the write
//! they must include (`min_seq`), and the sequence and idempotency key of
//! writes.
//!
//! Every node applies the stream in order, so a node that has applied
//! sequence N answers as every other node that has. A client that wrote on
//! node A (answer header `Tally-Seq: N`) and reads on node B sends
//! `Tally-Min-Seq: N` (or `?min_seq=N`): B waits until it has applied N, up
//! to [`MIN_SEQ_WAIT`], and otherwise answers 503 with `Retry-After`
//! rather than an answer that lacks the write.

use crate::auth::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a read waits for this node to apply its `min_seq`.
pub(crate) const MIN_SEQ_WAIT: Duration = Duration::from_secs(5);

/// The sequence of the record a write was stored as.
pub(crate) const SEQ_HEADER: &str = "tally-seq";
const MIN_SEQ_HEADER: &str = "tally-min-seq";
/// On every read in cluster mode: how old the answer may be, in seconds.
const STALENESS_HEADER: &str = "tally-staleness";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest idempotency key accepted.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 200;

/// `GET /v1/cluster`: this node's applied sequence, its lag, the stream's
/// state and the NATS connection (a single node reports its log's last
/// sequence and `"cluster": false`).
pub(crate) async fn get_cluster(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Read)?;
    let engine = state.engine()?;
    Ok(Json(match engine.cluster() {
        Some(status) => {
            let mut v =
                serde_json::to_value(status).map_err(|e| ApiError::Internal(e.to_string()))?;
            v["cluster"] = json!(true);
            v
        }
        None => json!({ "cluster": false, "applied_seq": engine.last_lsn() }),
    }))
}

/// `POST /v1/admin/checkpoint` (admin): uploads a bootstrap checkpoint now
/// when this node holds the maintenance lease; `"uploaded": null` when it
/// does not (the answer names the holder) or outside cluster mode.
pub(crate) async fn post_checkpoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.keys().authorize(&headers, Scope::Admin)?;
    let engine = state.engine()?.clone();
    let e = engine.clone();
    let report = tokio::task::spawn_blocking(move || e.upload_checkpoint())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let leases = engine.cluster().map(|c| c.leases).unwrap_or_default();
    Ok(Json(json!({ "uploaded": report, "leases": leases })))
}

/// While this node holds the maintenance lease, uploads a bootstrap
/// checkpoint whenever the archive's newest is `every` old (or there is
/// none), looking every 30 s (or `every`, if shorter), until the server
/// stops.
pub(crate) async fn checkpoints(
    engine: Arc<tally_engine::Engine>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tick = every.min(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.upload_checkpoint_if_due(every)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "uploading a bootstrap checkpoint failed; will retry")
            }
            Err(e) => tracing::warn!(error = %e, "the checkpoint upload stopped"),
        }
    }
}

/// The header that tells a writer its record's sequence.
pub(crate) fn seq_header(seq: u64) -> [(HeaderName, HeaderValue); 1] {
    [(HeaderName::from_static(SEQ_HEADER), HeaderValue::from(seq))]
}

/// The client's `Idempotency-Key`, checked: 1 to 200 visible ASCII
/// characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::BadRequest {
        message: format!("header Idempotency-Key: {why}"),
        stream: None,
    };
    let text = v
        .to_str()
        .map_err(|_| bad("use visible ASCII characters"))?;
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad(&format!("give 1 to {MAX_IDEMPOTENCY_KEY} characters")));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("use visible ASCII characters, no spaces"));
    }
    Ok(Some(text.to_string()))
}

/// Holds a request that names a `min_seq` until this node has applied
/// it; 503 with `Retry-After` after [`MIN_SEQ_WAIT`]. The parameter is
/// taken out of the query string, so handlers never see it. In cluster
/// mode the answer says how old it may be (`Tally-Staleness`, seconds).
pub(crate) async fn min_seq(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let bad = |what: &str| ApiError::BadRequest {
        message: format!("{what}: write the sequence a write was answered with (header Tally-Seq)"),
        stream: None,
    };
    let mut wanted: Option<u64> = None;
    if let Some(v) = req.headers().get(MIN_SEQ_HEADER) {
        let n = v.to_str().ok().and_then(|t| t.trim().parse().ok());
        wanted = Some(n.ok_or_else(|| bad("header Tally-Min-Seq"))?);
    }
    if let Some(query) = req.uri().query() {
        if query
            .split('&')
            .any(|p| p == "min_seq" || p.starts_with("min_seq="))
        {
            let mut kept = Vec::new();
            for pair in query.split('&') {
                match pair.strip_prefix("min_seq=") {
                    Some(v) => {
                        let n: u64 = v.parse().map_err(|_| bad("parameter min_seq"))?;
                        wanted = Some(wanted.map_or(n, |w| w.max(n)));
                    }
                    None if pair == "min_seq" => return Err(bad("parameter min_seq")),
                    None => kept.push(pair),
                }
            }
            let path = req.uri().path();
            let rebuilt = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(rebuilt.parse().map_err(|_| bad("the query string"))?);
            *req.uri_mut() = Uri::from_parts(parts).map_err(|_| bad("the query string"))?;
        }
    }
    if let Some(seq) = wanted {
        let engine = state.engine()?.clone();
        if !engine.wait_applied(seq, MIN_SEQ_WAIT).await {
            return Err(ApiError::Overloaded {
                reason: format!(
                    "this node has applied up to sequence {}, not yet {seq}, after {} s; retry, or read from the node that took the write",
                    engine.last_lsn(),
                    MIN_SEQ_WAIT.as_secs()
                ),
                retry_after: Duration::from_secs(1),
            });
        }
    }
    let mut resp = next.run(req).await;
    // How old this answer may be: the time since this node last knew it
    // had applied everything the stream held.
    if let Some(staleness) = state.engine.get().and_then(|e| e.staleness()) {
        let secs = format!("{:.3}", staleness.as_secs_f64());
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut()
                .insert(HeaderName::from_static(STALENESS_HEADER), v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert(
            IDEMPOTENCY_HEADER,
            HeaderValue::from_static("order-42/retry"),
        );
        assert_eq!(
            idempotency_key(&h).unwrap().as_deref(),
            Some("order-42/retry")
        );
        for bad in ["", "a b", &"k".repeat(MAX_IDEMPOTENCY_KEY + 1)] {
            h.insert(IDEMPOTENCY_HEADER, HeaderValue::from_str(bad).unwrap());
            assert!(idempotency_key(&h).is_err(), "{bad:?}");
        }
    }
}
