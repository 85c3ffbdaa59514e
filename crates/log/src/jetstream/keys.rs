//! Keys shared by every node of a cluster, for the rules that must hold
//! cluster-wide and be decided before a write is appended: a user's one
//! increment per window, a username taken once, login attempts counted
//! across nodes. Each set of keys is a JetStream key-value bucket,
//! `<stream>_<NAME>_<max age in seconds>` (or `<stream>_<NAME>` for values
//! that never expire), whose values expire `max_age` after they were
//! written (the bucket's `max_age`: every server 2.12 and later has it,
//! and it needs no per-message TTL), and whose writes are compare-and-set: a create fails
//! while a live value is there, an update names the revision it replaces.
//! So two nodes racing for one key never both win.

use async_nats::jetstream::{self, kv};
use std::time::Duration;

/// One bucket of shared keys.
#[derive(Clone)]
pub struct SharedKeys {
    kv: kv::Store,
    js: jetstream::Context,
    bucket: String,
    /// The log's runtime, where the NATS client lives.
    handle: tokio::runtime::Handle,
    max_age: Duration,
    /// What the bucket's key subjects start with (see
    /// [`super::JetStreamOptions::home_subject_prefix`]).
    prefix: String,
}

impl std::fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeys")
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// A live value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub revision: u64,
    /// When it was written, µs since the epoch (the server's clock).
    pub written_us: i64,
}

/// What a create found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The key is ours, at this revision.
    Yes(u64),
    /// Another value is live there.
    Taken(Entry),
}

/// How long a create keeps trying through errors (a new bucket's leader
/// election, a NATS server failing over).
const TRANSIENT_WAIT: Duration = Duration::from_secs(5);

/// Letters a key may hold (NATS subject tokens, without wildcards).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=./".contains(&b))
}

impl SharedKeys {
    /// Opens bucket `<stream>_<name>_<secs>` (`<stream>_<name>` when
    /// `max_age` is zero), creating it when missing. `per_key_ttl` lets
    /// each write set its own life ([`Self::create_for`]), on top of
    /// `max_age`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open(
        js: &jetstream::Context,
        handle: tokio::runtime::Handle,
        stream: &str,
        name: &str,
        max_age: Duration,
        replicas: usize,
        per_key_ttl: bool,
        prefix: String,
    ) -> Result<SharedKeys, String> {
        // Zero: values never expire. Otherwise the age is in the name, so
        // a changed setting is a new bucket rather than a silent mismatch.
        let (bucket, max_age) = if max_age.is_zero() {
            (format!("{stream}_{name}"), Duration::ZERO)
        } else {
            let age = max_age.max(Duration::from_secs(1));
            (format!("{stream}_{name}_{}", age.as_secs()), age)
        };
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    description: format!("tally: {name}, each value kept {max_age:?} (0: always)"),
                    history: 1,
                    max_age,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    // Per-message TTLs (nats-server 2.11 and later); an
                    // expired value leaves a marker for a minute.
                    limit_markers: per_key_ttl.then_some(Duration::from_secs(60)),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating the key-value bucket {bucket}: {e}"))?,
        };
        Ok(SharedKeys {
            kv,
            js: js.clone(),
            bucket,
            handle,
            max_age,
            prefix,
        })
    }

    fn subject(&self, key: &str) -> String {
        format!("{}$KV.{}.{key}", self.prefix, self.bucket)
    }

    /// Writes `key` if its last write is `revision` (0: none, or only a
    /// removal marker), to live `ttl` when given (a bucket opened with
    /// `per_key_ttl`): `None` when another write came first.
    async fn publish_for(
        js: &jetstream::Context,
        subject: String,
        value: Vec<u8>,
        revision: u64,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            async_nats::HeaderValue::from(revision),
        );
        if let Some(ttl) = ttl {
            headers.insert(
                async_nats::header::NATS_MESSAGE_TTL,
                async_nats::HeaderValue::from(ttl.as_secs().max(1)),
            );
        }
        let sent = js
            .publish_with_headers(subject.clone(), headers, value.into())
            .await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => Ok(Some(ack.sequence)),
            // The server answers a stale subject sequence with error code
            // 10164 ("wrong last sequence"), which the client does not
            // sort into its kind.
            Err(e)
                if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
                    || e.to_string().contains("wrong last sequence") =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("writing {subject}: {e}")),
        }
    }

    /// Creates `key` with `value` unless a live value is there. Give each
    /// create a value of its own: a live value equal to it is taken for
    /// this create's own, stored by a try whose answer was lost.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Created, String> {
        self.create_maybe_for(key, value, None).await
    }

    /// Creates `key` with `value`, to live `ttl`, unless a live value is
    /// there.
    pub async fn create_for(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Created, String> {
        self.create_maybe_for(key, value, Some(ttl)).await
    }

    async fn create_maybe_for(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<Created, String> {
        let (kv, js, key) = (self.kv.clone(), self.js.clone(), key.to_string());
        let subject = self.subject(&key);
        self.run(async move {
            // A bucket just made elects its leader, and a NATS server
            // failing over stops answering, for a few seconds: errors
            // are tried again until then.
            let deadline = std::time::Instant::now() + TRANSIENT_WAIT;
            let mut conflicts = 0;
            let mut last_error = String::new();
            while conflicts < 12 && std::time::Instant::now() < deadline {
                // Over nothing, or over the marker a removal or an expiry
                // left.
                let last = match kv.entry(&key).await {
                    Ok(Some(e)) if e.operation == kv::Operation::Put => {
                        let entry = Entry {
                            value: e.value.to_vec(),
                            revision: e.revision,
                            written_us: (e.created.unix_timestamp_nanos() / 1_000) as i64,
                        };
                        // An earlier try of ours that was stored though
                        // its answer was lost (values are unique).
                        if entry.value == value {
                            return Ok(Created::Yes(entry.revision));
                        }
                        return Ok(Created::Taken(entry));
                    }
                    Ok(Some(e)) => e.revision,
                    Ok(None) => 0,
                    Err(e) => {
                        last_error = format!("reading {key}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                // Racing creators each read, then write over what they
                // read; all but one find it changed and read again.
                match Self::publish_for(&js, subject.clone(), value.clone(), last, ttl).await {
                    Ok(Some(rev)) => return Ok(Created::Yes(rev)),
                    Ok(None) => conflicts += 1,
                    Err(e) => {
                        last_error = e;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Err(if conflicts >= 12 {
                format!("creating {key}: it keeps changing")
            } else {
                last_error
            })
        })
        .await
    }

    /// Replaces `key`'s value at `revision`, to live `ttl` from now;
    /// `None` when another write came first.
    pub async fn update_for(
        &self,
        key: &str,
        value: Vec<u8>,
        revision: u64,
        ttl: Duration,
    ) -> Result<Option<u64>, String> {
        let js = self.js.clone();
        let subject = self.subject(key);
        self.run(async move { Self::publish_for(&js, subject, value, revision, Some(ttl)).await })
            .await
    }

    /// How long a value lives after it was written (zero: always).
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Runs `f` on the log's runtime.
    async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        self.handle
            .spawn(f)
            .await
            .map_err(|e| format!("shared keys: {e}"))?
    }

    /// The live value of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, String> {
        let (kv, key) = (self.kv.clone(), key.to_string());
        self.run(async move { live(&kv, &key).await }).await
    }

    /// Replaces `key`'s value if it is still at `revision` (0: absent);
    /// `None` when another write came first.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        revision: u64,
    ) -> Result<Option<u64>, String> {
        let js = self.js.clone();
        let subject = self.subject(key);
        self.run(async move { Self::publish_for(&js, subject, value, revision, None).await })
            .await
    }

    /// Removes `key` if it is still at `revision` (a reservation given
    /// back); a newer value is left alone.
    pub async fn delete_at(&self, key: &str, revision: u64) -> Result<(), String> {
        let (kv, key) = (self.kv.clone(), key.to_string());
        self.run(async move {
            match kv.delete_expect_revision(&key, Some(revision)).await {
                Ok(()) => Ok(()),
                // Someone else's value now: not ours to remove (see
                // `publish_for` for the second spelling).
                Err(e)
                    if e.kind() == kv::DeleteErrorKind::WrongLastRevision
                        || e.to_string().contains("wrong last sequence") =>
                {
                    Ok(())
                }
                Err(e) => Err(format!("removing {key}: {e}")),
            }
        })
        .await
    }

    /// Removes `key` whatever its value.
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        let (kv, key) = (self.kv.clone(), key.to_string());
        self.run(async move {
            kv.delete(&key)
                .await
                .map_err(|e| format!("removing {key}: {e}"))
        })
        .await
    }
}

async fn live(kv: &kv::Store, key: &str) -> Result<Option<Entry>, String> {
    match kv.entry(key).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(Some(Entry {
            value: e.value.to_vec(),
            revision: e.revision,
            written_us: (e.created.unix_timestamp_nanos() / 1_000) as i64,
        })),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("reading {key}: {e}")),
    }
}
