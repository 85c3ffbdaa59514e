//! The claim check: a record larger than one NATS message is put in the
//! shared archive under its SHA-256, the stream gets a pointer to it, and
//! every node fetches and checks it before applying; claims older than the
//! stream's history are swept by the maintenance lease's holder.

use super::{publish_until_acknowledged, Shared};
use crate::{ClaimStore, Error, Lease, Lsn, Result};
use async_nats::jetstream;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The claim check: puts the record in the shared archive under its
/// SHA-256 (a retry puts the same object again), then publishes a pointer
/// to it under the record's message id.
#[allow(clippy::too_many_arguments)]
pub(super) async fn publish_claim(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: Bytes,
    store: &dyn ClaimStore,
    prefix: &str,
    limit: usize,
    deadline: Instant,
) -> Result<jetstream::publish::PublishAck> {
    use sha2::Digest;
    let key = format!("{prefix}/{}", hex::encode(sha2::Sha256::digest(&payload)));
    let put = tokio::time::timeout_at(deadline.into(), store.put(&key, payload));
    match put.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Error::Unavailable(format!(
                "putting a large record in the shared archive: {e}"
            )))
        }
        Err(_) => {
            return Err(Error::Unavailable(
                "putting a large record in the shared archive timed out".into(),
            ))
        }
    }
    let ack =
        publish_until_acknowledged(js, subject, id, Bytes::new(), Some(&key), limit, deadline)
            .await?;
    crate::metrics::CLAIMS.inc();
    Ok(ack)
}

/// Fetches a claimed record from the shared archive and checks it against
/// the SHA-256 its key names, retrying while the archive cannot be read
/// (this node waits rather than skip a record); `None` when stopped or the
/// record is gone (then the log has failed).
pub(super) async fn fetch_claim<A>(
    store: Option<&dyn ClaimStore>,
    key: &str,
    seq: Lsn,
    shared: &Shared<A>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Bytes> {
    use sha2::Digest;
    let Some(store) = store else {
        shared.fail(format!(
            "record {seq} is in the shared archive ({key}), and this node has no archive to read it from"
        ));
        return None;
    };
    let want = key.rsplit('/').next().unwrap_or_default();
    let mut wait = Duration::from_millis(100);
    loop {
        match store.get(key).await {
            Ok(Some(bytes)) if hex::encode(sha2::Sha256::digest(&bytes)) == want => {
                return Some(bytes)
            }
            Ok(Some(_)) => {
                shared.fail(format!(
                    "record {seq}'s object {key} in the shared archive does not match its checksum"
                ));
                return None;
            }
            Ok(None) => {
                shared.fail(format!(
                    "record {seq}'s object {key} is missing from the shared archive"
                ));
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, key, seq, "cannot read a record from the shared archive; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return None,
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Removes claim objects older than the stream's history (plus an hour):
/// no record still in the stream points at them. The node holding the
/// maintenance lease sweeps.
pub(super) async fn sweep_claims(
    store: Arc<dyn ClaimStore>,
    lease: Lease,
    prefix: String,
    max_age: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if !lease.held() {
            wait = Duration::from_secs(60);
            continue;
        }
        match store
            .remove_older_than(&prefix, max_age + Duration::from_secs(3600))
            .await
        {
            Ok(n) => crate::metrics::CLAIMS_REMOVED.inc_by(n as u64),
            Err(e) => tracing::warn!(error = %e, "removing old claim objects"),
        }
        wait = Duration::from_secs(3600);
    }
}
