//! The counter's rules in cluster mode, decided by compare-and-set on keys
//! every node shares ([`tally_engine::SharedKeys`], JetStream key-value
//! buckets) before anything is appended, so they hold whichever node
//! takes each request:
//!
//! - **once per window**: an increment creates the key `(counter, user)`
//!   (a per-message TTL: the window plus the longest an append can take)
//!   before it is appended, and once appended rewrites it to live one
//!   window from then; a create fails while the key lives, so of
//!   simultaneous increments through different nodes exactly one wins,
//!   and a slow append (NATS failing over) cannot outlive its
//!   reservation;
//! - **a username is taken once**: a registration creates the name's key
//!   in a bucket whose values never expire;
//! - **login limits** count attempts per account and per address in a
//!   bucket whose values live one limit period, each count moved by a
//!   revision-checked update.
//!
//! Key parts are hex, so any counter, user or address makes a valid key.

use super::error::CounterError;
use std::time::Duration;
use tally_engine::{Created, Engine, SharedKeys};

pub(super) struct SharedRules {
    gate: SharedKeys,
    users: SharedKeys,
    limits: SharedKeys,
    /// The once-per-window rule's window.
    window: Duration,
    /// How long a reservation outlives its window while its increment is
    /// being appended: longer than an append can take.
    hold: Duration,
}

/// A reservation that may have to be given back.
pub(super) struct Held {
    key: String,
    revision: u64,
}

fn unavailable(e: String) -> CounterError {
    CounterError::Unavailable(format!("the cluster's shared keys cannot be reached: {e}"))
}

fn key(kind: &str, parts: &[&str]) -> String {
    let mut k = kind.to_string();
    for p in parts {
        k.push('.');
        // An empty part still makes a token.
        k.push_str(&format!("x{}", hex::encode(p)));
    }
    k
}

impl Held {
    /// The id the reservation's increment is appended under: a retry of
    /// an append that may have been stored is stored once.
    pub(super) fn append_id(&self) -> String {
        format!("counter:{}:{}", self.key, self.revision)
    }
}

/// Reads and revision-checked writes one count may take before its caller
/// is told to retry (about two seconds of pauses at most).
const COUNT_TRIES: u32 = 20;

/// How long an increment's append that may have been stored is tried
/// again (NATS failing over takes seconds).
const APPEND_RETRY: Duration = Duration::from_secs(60);

impl SharedRules {
    /// Appends the increment `held` reserves. An append that may have
    /// been stored (NATS failing over) is tried again under the same id,
    /// the reservation renewed before each try: stored once, and answered
    /// once the log takes it, rather than failing with the window spent.
    pub(super) async fn append(
        &self,
        engine: &Engine,
        held: &mut Held,
        batch: impl Fn() -> Vec<(String, tally_ingest::Batch)>,
    ) -> tally_engine::Result<tally_engine::Receipt> {
        let id = held.append_id();
        let until = tokio::time::Instant::now() + APPEND_RETRY;
        loop {
            match engine.ingest_all_once(batch(), Some(&id)).await {
                Err(e)
                    if e.may_have_been_stored()
                        && tokio::time::Instant::now() < until
                        && self.renew(held, super::now_us()).await =>
                {
                    super::metrics::APPEND_RETRIES.inc();
                    tracing::warn!(error = %e, "an increment's append may not have been stored; trying again under its id");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    /// Keeps a reservation whose increment's append is tried again (NATS
    /// failing over): it lives another window plus the longest a try can
    /// take from now, so it cannot lapse while the next try may still be
    /// stored. False when it cannot be renewed within a few seconds, well
    /// inside its current life: then the append must not be tried again.
    pub(super) async fn renew(&self, held: &mut Held, now: i64) -> bool {
        let value = format!("pending:{now}:renewed").into_bytes();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .gate
                .update_for(
                    &held.key,
                    value.clone(),
                    held.revision,
                    self.window + self.hold,
                )
                .await
            {
                Ok(Some(revision)) => {
                    held.revision = revision;
                    return true;
                }
                Ok(None) => return false,
                Err(e) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!(error = %e, "cannot renew an increment's reservation yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(_) => return false,
            }
        }
    }

    /// The buckets, in cluster mode; `None` on a single node. Blocking.
    pub(super) fn open(
        engine: &Engine,
        window: Duration,
        limit_period: Duration,
    ) -> Result<Option<SharedRules>, CounterError> {
        let Some(cluster) = &engine.options().cluster else {
            return Ok(None);
        };
        let open = |name: &str, age: Duration, per_key: bool| {
            engine
                .shared_keys(name, age, per_key)
                .map_err(|e| CounterError::Internal(format!("opening {name}: {e}")))?
                .ok_or_else(|| CounterError::Internal(format!("{name}: not in cluster mode")))
        };
        Ok(Some(SharedRules {
            gate: open("COUNTER_GATE", Duration::ZERO, true)?,
            users: open("COUNTER_USERS", Duration::ZERO, false)?,
            limits: open("COUNTER_LIMITS", limit_period, false)?,
            window,
            // A node retries a publish for the publish timeout; one sent
            // last may still land a little after.
            hold: cluster.publish_timeout * 2 + Duration::from_secs(5),
        }))
    }

    /// Reserves `user`'s increment of `counter` at `now` (µs), or says
    /// when the next is allowed (µs). The reservation lives its window
    /// plus the longest an append can take, so it cannot lapse before
    /// its increment is in the log; [`Self::commit`] then makes it live
    /// one window from the append.
    pub(super) async fn reserve(
        &self,
        counter: &str,
        user: &str,
        now: i64,
    ) -> Result<Result<Held, i64>, CounterError> {
        let key = key("g", &[counter, user]);
        let window = self.window.as_micros() as i64;
        match self
            .gate
            .create_for(
                &key,
                // Unique, so a lost answer's try is known for ours.
                format!("pending:{now}:{:016x}", rand::random::<u64>()).into_bytes(),
                self.window + self.hold,
            )
            .await
            .map_err(unavailable)?
        {
            Created::Yes(revision) => Ok(Ok(Held { key, revision })),
            // Accepted: the key lives one window from that write (the
            // server's clock). Still being appended: most likely accepted
            // a moment from now (an append that failed in a way that may
            // have stored it holds the key until its reservation lapses).
            Created::Taken(e) if e.value.starts_with(b"accepted:") => {
                Ok(Err(e.written_us.saturating_add(window)))
            }
            Created::Taken(e) => Ok(Err(now.max(e.written_us).saturating_add(window))),
        }
    }

    /// The reserved increment is in the log: the user's next is allowed
    /// one window from now.
    pub(super) async fn commit(&self, held: Held, at: i64) {
        let value = format!("accepted:{at}").into_bytes();
        // NATS failing over can take seconds: try a while, then leave the
        // reservation to its longer life.
        let mut pause = Duration::from_millis(100);
        for _ in 0..8 {
            match self
                .gate
                .update_for(&held.key, value.clone(), held.revision, self.window)
                .await
            {
                Ok(Some(_)) => return,
                Ok(None) => {
                    tracing::warn!("an increment's reservation changed under it");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot mark an increment accepted yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Gives back a reservation whose increment was surely not stored.
    pub(super) async fn release(&self, held: Held) {
        if let Err(e) = self.gate.delete_at(&held.key, held.revision).await {
            tracing::warn!(error = %e, "cannot give back an increment's reservation; the user waits a window");
        }
    }

    /// Takes `user`'s name for a registration; false when taken.
    pub(super) async fn claim_user(&self, user: &str) -> Result<Option<Held>, CounterError> {
        let key = key("u", &[user]);
        match self
            .users
            .create(&key, hex::encode(rand::random::<[u8; 16]>()).into_bytes())
            .await
            .map_err(unavailable)?
        {
            Created::Yes(revision) => Ok(Some(Held { key, revision })),
            Created::Taken(_) => Ok(None),
        }
    }

    /// Frees a name whose registration was not stored.
    pub(super) async fn release_user(&self, held: Held) {
        if let Err(e) = self.users.delete_at(&held.key, held.revision).await {
            tracing::warn!(error = %e, "cannot free a username whose registration failed");
        }
    }

    /// `Err(wait)` when `subject` has used its `max` attempts of `kind`
    /// in the current period.
    pub(super) async fn check(
        &self,
        kind: &str,
        subject: &str,
        max: u32,
        now: i64,
    ) -> Result<Result<(), Duration>, CounterError> {
        let period = self.limits.max_age().as_micros() as i64;
        let entry = self
            .limits
            .get(&key(kind, &[subject]))
            .await
            .map_err(unavailable)?;
        Ok(match entry.and_then(|e| parse_count(&e.value)) {
            Some((start, n)) if n >= max && now < start + period => {
                Err(Duration::from_micros((start + period - now) as u64))
            }
            _ => Ok(()),
        })
    }

    /// Counts an attempt of `kind` by `subject` at `now`.
    pub(super) async fn record(
        &self,
        kind: &str,
        subject: &str,
        now: i64,
    ) -> Result<(), CounterError> {
        let key = key(kind, &[subject]);
        let period = self.limits.max_age().as_micros() as i64;
        // Concurrent counts of one subject (several attempts from one
        // address through several nodes) conflict; each loser reads again
        // after a short random pause, so they spread out instead of
        // colliding again (a read may also come from a replica a moment
        // behind the last write).
        for attempt in 0..COUNT_TRIES {
            if attempt > 0 {
                let pause = rand::random::<u64>() % (10 * u64::from(attempt)) + 5;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let entry = self.limits.get(&key).await.map_err(unavailable)?;
            let (revision, count) = match &entry {
                Some(e) => (e.revision, parse_count(&e.value)),
                None => (0, None),
            };
            let (start, n) = match count {
                Some((start, n)) if now < start + period => (start, n.saturating_add(1)),
                _ => (now, 1),
            };
            let value = format!("{start}:{n}").into_bytes();
            if self
                .limits
                .update(&key, value, revision)
                .await
                .map_err(unavailable)?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(CounterError::Unavailable(
            "too many concurrent attempts to count; try again".into(),
        ))
    }

    /// Forgets `subject`'s attempts of `kind` (a successful login).
    pub(super) async fn clear(&self, kind: &str, subject: &str) -> Result<(), CounterError> {
        self.limits
            .delete(&key(kind, &[subject]))
            .await
            .map_err(unavailable)
    }
}

fn parse_count(v: &[u8]) -> Option<(i64, u32)> {
    let (start, n) = std::str::from_utf8(v).ok()?.split_once(':')?;
    Some((start.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_whatever_their_parts() {
        for parts in [&["main", "a.b-c_d"][..], &["", "..."], &["x", "ü ñ\n*>"]] {
            let k = key("g", parts);
            assert!(tally_engine::valid_key(&k), "{k}");
        }
        assert_ne!(key("g", &["ab", "c"]), key("g", &["a", "bc"]));
    }
}
