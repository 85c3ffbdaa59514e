//! Cluster mode's log options, and connecting to NATS: the server
//! version check, the stream created or opened with those options.

use super::{stream, Error, Result};
use crate::Lsn;
use async_nats::jetstream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The oldest nats-server release cluster mode runs on: earlier ones lack
/// the mirror and acknowledgement fixes, per-message TTLs and atomic
/// batches that cluster mode relies on.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// How long opening the log waits for NATS and the stream at least.
const OPEN_WAIT: Duration = Duration::from_secs(60);

/// Where the cluster's log lives and how it is kept.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// `nats://HOST:PORT` of one or more servers of the NATS cluster.
    pub servers: Vec<String>,
    /// This node's name: in its NATS connection's name and its message ids.
    pub node_id: String,
    /// The JetStream stream holding the log (created when missing).
    pub stream: String,
    /// Copies of each record JetStream keeps (1, 3 or 5).
    pub replicas: usize,
    /// A retried publish with the same id inside this window is stored once.
    pub duplicate_window: Duration,
    /// Records older than this leave the stream (0: kept by size only).
    pub max_age: Duration,
    /// The stream's size limit: past it, the oldest records leave.
    pub max_bytes: u64,
    /// A NATS credentials file (`.creds`), for servers that require one.
    pub credentials: Option<PathBuf>,
    /// Trusts this CA for the servers' certificates (and requires TLS).
    pub tls_ca: Option<PathBuf>,
    /// This node's client certificate and key, for servers that verify it.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Appends waiting for JetStream's acknowledgement before new ones are
    /// refused with [`Error::Busy`].
    pub queue_capacity: usize,
    /// Records larger than this are refused (the server's `max_payload`
    /// lowers it).
    pub max_record_bytes: usize,
    /// How long an append keeps publishing (the same id) while no server
    /// acknowledges, before it fails; opening waits for NATS this long,
    /// and at least a minute.
    pub publish_timeout: Duration,
    /// Where records larger than one NATS message go, a pointer to them
    /// on the stream (the claim check); without it such records are
    /// refused.
    pub claims: Option<std::sync::Arc<dyn crate::ClaimStore>>,
    /// A lease not renewed for this long passes to another node.
    pub lease_ttl: Duration,
    /// How often the maintenance lease's holder uploads a bootstrap
    /// checkpoint to the shared archive (the engine does; 0: never).
    pub checkpoint_interval: Duration,
    /// Set on the nodes of a replica region: the JetStream domain of the
    /// home region, reached through this region's NATS leaf node. The node
    /// reads a mirror of the home stream in its own region (created when
    /// missing), and forwards its writes and key-value operations to the
    /// home region. `None`: this node is in the home region.
    pub home_domain: Option<String>,
}

impl JetStreamOptions {
    pub fn new(servers: Vec<String>, node_id: impl Into<String>) -> Self {
        JetStreamOptions {
            servers,
            node_id: node_id.into(),
            stream: "TALLY".into(),
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 16 << 30,
            credentials: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            queue_capacity: 4096,
            max_record_bytes: 8 << 20,
            publish_timeout: Duration::from_secs(15),
            claims: None,
            lease_ttl: Duration::from_secs(10),
            checkpoint_interval: Duration::from_secs(600),
            home_domain: None,
        }
    }

    /// The one subject the stream holds.
    pub fn subject(&self) -> String {
        format!("tally.log.{}", self.stream)
    }

    /// The JetStream context for the home region's stream and buckets:
    /// this region's own, or the home domain's through the leaf node.
    pub fn home(&self, client: &async_nats::Client) -> jetstream::Context {
        match &self.home_domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        }
    }

    /// What key-value subjects written to the home region's buckets start
    /// with: nothing at home; in a replica region, the home domain's API
    /// prefix, which the leaf node maps to the home region's own.
    pub fn home_subject_prefix(&self) -> String {
        match &self.home_domain {
            Some(domain) => format!("$JS.{domain}.API."),
            None => String::new(),
        }
    }

    /// Where the stream's claim objects live in the shared archive.
    pub fn claim_prefix(&self) -> String {
        format!("claims/{}", self.stream)
    }
}

/// Reads `"2.12.1"` (or `"v2.14.0-beta"`) as (major, minor).
pub fn server_version(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

fn unavailable(opts: &JetStreamOptions, what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what} ({}): {e}", opts.servers.join(",")))
}

/// Connects to the NATS servers (waiting for them up to the open wait)
/// and checks the server's version.
pub(super) async fn client(opts: &JetStreamOptions) -> Result<async_nats::Client> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| unavailable(opts, what, e);
    let mut co = async_nats::ConnectOptions::new()
        .name(format!("tally {}", opts.node_id))
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => {
                    crate::metrics::CONNECTED.set(1);
                    tracing::info!("connected to NATS")
                }
                async_nats::Event::Disconnected => {
                    crate::metrics::CONNECTED.set(0);
                    tracing::warn!("disconnected from NATS")
                }
                other => tracing::info!(event = %other, "NATS"),
            }
        });
    if let Some(path) = &opts.credentials {
        co = co
            .credentials_file(path)
            .await
            .map_err(|e| unavailable(&format!("reading {}", path.display()), &e))?;
    }
    if let Some(ca) = &opts.tls_ca {
        co = co.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
        co = co.add_client_certificate(cert.clone(), key.clone());
    }
    // At start, NATS may still be coming up, its meta leader being
    // elected, or several nodes creating the stream at once.
    let deadline = Instant::now() + opts.publish_timeout.max(OPEN_WAIT);
    let client = loop {
        match co.clone().connect(opts.servers.as_slice()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot reach NATS yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(unavailable("connecting to NATS", &e)),
        }
    };
    crate::metrics::CONNECTED.set(1);
    let version = client.server_info().version;
    match server_version(&version) {
        Some(v) if v >= MIN_SERVER_VERSION => {}
        _ => {
            return Err(Error::Unavailable(format!(
            "nats-server {version} is too old: cluster mode needs {}.{} or later (docs/cluster.md)",
            MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
        )))
        }
    }
    Ok(client)
}

pub(super) async fn connect(
    opts: &JetStreamOptions,
    subject: &str,
) -> Result<(async_nats::Client, jetstream::Context, stream::Info)> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| unavailable(opts, what, e);
    let client = client(opts).await?;
    let deadline = Instant::now() + opts.publish_timeout.max(OPEN_WAIT);
    let js = jetstream::new(client.clone());
    let mut config = stream::Config {
        name: opts.stream.clone(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        duplicate_window: opts.duplicate_window,
        max_age: opts.max_age,
        max_bytes: i64::try_from(opts.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        allow_direct: true,
        ..Default::default()
    };
    if let Some(domain) = &opts.home_domain {
        // A replica region reads a mirror of the home stream: the same
        // records under the same sequences, copied through the leaf node.
        config.subjects = Vec::new();
        config.duplicate_window = Duration::ZERO;
        config.mirror = Some(stream::Source {
            name: opts.stream.clone(),
            // The server takes the domain as the API prefix it stands for.
            external: Some(stream::External {
                api_prefix: format!("$JS.{domain}.API"),
                delivery_prefix: None,
            }),
            ..Default::default()
        });
        config.mirror_direct = true;
    }
    // Several nodes may start at once, and the meta leader may be being
    // elected: retry until the deadline.
    loop {
        let attempt = async {
            let mut s = js
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let info = s.info().await.map_err(|e| e.to_string())?.clone();
            Ok::<_, String>(info)
        };
        match attempt.await {
            Ok(info) => {
                check_role(opts, &info)?;
                if opts.home_domain.is_none() && !info.config.subjects.iter().any(|s| s == subject)
                {
                    return Err(Error::Diverged(format!(
                        "stream {} exists with subjects {:?}, not {subject}: name another stream (--cluster-stream)",
                        opts.stream, info.config.subjects
                    )));
                }
                if info.config.num_replicas != opts.replicas {
                    tracing::warn!(
                        stream = %opts.stream,
                        has = info.config.num_replicas,
                        asked = opts.replicas,
                        "the stream exists with another replica count; it is kept as it is"
                    );
                }
                return Ok((client, js, info));
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, stream = %opts.stream, "cannot open the stream yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(unavailable(&format!("opening stream {}", opts.stream), &e)),
        }
    }
}

/// Refuses a stream whose role in the cluster is not this node's: a
/// mirror where the node expects the home stream (this region is a
/// replica, or was not promoted), or a writable stream where it expects a
/// mirror (this region was promoted).
fn check_role(opts: &JetStreamOptions, info: &stream::Info) -> Result<()> {
    let name = &opts.stream;
    let mirror = info.config.mirror.as_ref();
    let origin = mirror.map(|m| (m.name.clone(), mirror_domain(m).unwrap_or_default()));
    match (&opts.home_domain, origin) {
        (None, Some((origin, domain))) => Err(Error::Diverged(format!(
            "stream {name} on these NATS servers is a mirror of {origin} (JetStream domain {domain:?}): this is a replica region; start the node with --cluster-home-domain {domain}, or promote this region first (`tally cluster promote`, docs/cluster.md)"
        ))),
        (Some(home), None) => Err(Error::Diverged(format!(
            "stream {name} on these NATS servers is not a mirror of the home region's (domain {home}): this region holds its own stream (it was promoted?); start the node without --cluster-home-domain"
        ))),
        (Some(home), Some((origin, domain))) if origin != *name || domain != *home => {
            Err(Error::Diverged(format!(
                "stream {name} mirrors {origin} in domain {domain:?}, not {name} in domain {home}"
            )))
        }
        _ => Ok(()),
    }
}

/// The JetStream domain a mirror copies from: as configured, or read from
/// the API prefix the server stores it as (`$JS.<domain>.API`).
pub(super) fn mirror_domain(m: &stream::Source) -> Option<String> {
    if let Some(d) = &m.domain {
        return Some(d.clone());
    }
    let api = &m.external.as_ref()?.api_prefix;
    api.strip_prefix("$JS.")?
        .strip_suffix(".API")
        .map(String::from)
}

/// How long a replica region's node waits at start for its mirror to hold
/// the records it has applied.
pub(super) const MIRROR_WAIT: Duration = Duration::from_secs(60);

/// The mirror's state once it holds `after`, or after [`MIRROR_WAIT`] (the
/// caller then refuses to start, saying why).
pub(super) async fn mirror_reaches(
    js: &jetstream::Context,
    opts: &JetStreamOptions,
    after: Lsn,
    mut info: stream::Info,
) -> stream::Info {
    let deadline = Instant::now() + MIRROR_WAIT;
    tracing::info!(
        stream = %opts.stream,
        applied = after,
        mirror_last = info.state.last_sequence,
        "waiting for this region's mirror to copy the records this node has applied"
    );
    while info.state.last_sequence < after && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(mut s) = js.get_stream(&opts.stream).await {
            if let Ok(i) = s.info().await {
                info = i.clone();
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_are_read_and_compared() {
        assert_eq!(server_version("2.12.1"), Some((2, 12)));
        assert_eq!(server_version("v2.14.0-beta.2"), Some((2, 14)));
        assert_eq!(server_version("2.9.10"), Some((2, 9)));
        assert!(server_version("2.9.10").unwrap() < MIN_SERVER_VERSION);
        assert!(server_version("3.0.0").unwrap() >= MIN_SERVER_VERSION);
        assert_eq!(server_version("garbage"), None);
    }
}
