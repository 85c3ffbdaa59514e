//! Promoting a replica region when the home region is lost: the region's
//! mirror of the home stream becomes the stream itself (nats-server 2.12
//! and later let a stream drop its mirror), keeping every record it holds
//! under the same sequences, and takes writes on the log's subject. The
//! region's nodes then restart without `--cluster-home-domain` and carry
//! on from the sequence they had applied.

use super::connect::{client, mirror_domain, JetStreamOptions};
use super::{Error, Result};
use async_nats::jetstream;
use std::time::Duration;

/// What a promotion did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Promoted {
    pub stream: String,
    /// The domain the stream mirrored until now.
    pub former_home: String,
    /// The last record the region held: records the home region stored
    /// after it never reached this region.
    pub last_seq: u64,
    pub messages: u64,
    /// The subject the stream now takes writes on.
    pub subject: String,
}

/// How long the home region gets to answer before it counts as lost.
const HOME_PROBE: Duration = Duration::from_secs(3);

/// Makes this region's mirror (on `opts.servers`) the cluster's stream.
/// Refuses when the stream is not a mirror, and, unless `even_if_home_answers`,
/// when the home region's stream still answers through the leaf node: two
/// writable copies of one log would diverge.
pub async fn promote(opts: &JetStreamOptions, even_if_home_answers: bool) -> Result<Promoted> {
    let client = client(opts).await?;
    let js = jetstream::new(client.clone());
    let name = &opts.stream;
    let mut stream = js.get_stream(name).await.map_err(|e| {
        Error::Unavailable(format!(
            "reading stream {name} on {}: {e}",
            opts.servers.join(",")
        ))
    })?;
    let info = stream
        .info()
        .await
        .map_err(|e| Error::Unavailable(format!("reading stream {name}: {e}")))?
        .clone();
    let Some(mirror) = info.config.mirror.clone() else {
        return Err(Error::Diverged(format!(
            "stream {name} on {} is not a mirror: this region already holds the cluster's stream",
            opts.servers.join(",")
        )));
    };
    let home = mirror_domain(&mirror).unwrap_or_default();
    if !even_if_home_answers {
        let probe = jetstream::with_domain(client.clone(), &home);
        let answer = tokio::time::timeout(HOME_PROBE, probe.get_stream(&mirror.name)).await;
        if let Ok(Ok(_)) = answer {
            return Err(Error::Diverged(format!(
                "the home region's stream {} (JetStream domain {home}) still answers through this region's leaf node: promoting now would make two writable logs. Stop the home region (or cut its link) first, or pass --even-if-home-answers",
                mirror.name
            )));
        }
    }
    let subject = opts.subject();
    let mut config = info.config.clone();
    config.mirror = None;
    config.mirror_direct = false;
    config.subjects = vec![subject.clone()];
    config.duplicate_window = opts.duplicate_window;
    let updated = js.update_stream(config).await.map_err(|e| {
        Error::Unavailable(format!(
            "promoting stream {name}: {e} (nats-server 2.12 or later lets a mirror be promoted)"
        ))
    })?;
    drop(stream.info().await);
    let _ = client.flush().await;
    Ok(Promoted {
        stream: name.clone(),
        former_home: home,
        last_seq: updated.state.last_sequence,
        messages: updated.state.messages,
        subject,
    })
}
