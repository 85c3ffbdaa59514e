//! The global counter (S2): a page with a number and a button; registered
//! users may add one to a counter at most once per window (24 hours by
//! default).
//!
//! The app sits on the engine's public interface only. Every accepted
//! increment, registration, login and logout is an event in the app's
//! internal streams ([`events`]), acknowledged only once durable; at start
//! the app reads them back ([`tally_engine::Engine::scan`]) and rebuilds its
//! memory: counter values, accounts, live sessions and each user's last
//! increment. Reads are served from that memory and never touch disk.
//!
//! The write path is: session -> CSRF -> the [`gate::Gate`] reserves
//! (counter, user) -> the increment event is appended -> the reservation
//! is committed and the value moves (or, when the append failed, the
//! reservation is released and nothing moved). Viewers are told of every
//! new value through a watch channel per counter, which the page follows by
//! Server-Sent Events.

pub mod accounts;
mod admin;
pub mod error;
pub mod events;
pub mod gate;
mod http;
pub mod limits;
mod metrics;

pub use error::CounterError;
pub use http::{routes, Slot};

use accounts::{Accounts, Session};
use events::Event;
use gate::{Gate, MemoryGate, Refusal};
use limits::Limiter;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tally_engine::Engine;
use tokio::sync::watch;

/// The counter's settings (`[counter]` in the config file).
#[derive(Debug, Clone)]
pub struct CounterConfig {
    /// Counters that always exist; the first is the default one
    /// (`GET /getvalue`). More can be made through the admin API.
    pub counters: Vec<String>,
    /// How long after an accepted increment a user's next one is refused.
    pub window: Duration,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Mark cookies `Secure` always (behind a TLS-terminating proxy that does
    /// not send `X-Forwarded-Proto: https`). They are also marked when a
    /// request says it came over HTTPS.
    pub secure_cookies: bool,
    /// Failed logins per account per `limit_period` before its logins are
    /// refused until the period ends.
    pub login_failures_per_account: u32,
    /// Login attempts per client address per `limit_period`.
    pub login_attempts_per_address: u32,
    /// Registrations per client address per `limit_period`.
    pub registrations_per_address: u32,
    pub limit_period: Duration,
    /// Password hashes computed at once (each takes 19 MiB for ~tens of ms).
    pub max_hashing: usize,
    /// Open live-update streams (Server-Sent Events) served at once.
    pub max_live_clients: usize,
}

impl Default for CounterConfig {
    fn default() -> Self {
        CounterConfig {
            counters: vec!["main".into()],
            window: Duration::from_secs(24 * 3600),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            secure_cookies: false,
            login_failures_per_account: 10,
            login_attempts_per_address: 60,
            registrations_per_address: 20,
            limit_period: Duration::from_secs(15 * 60),
            max_hashing: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            max_live_clients: 10_000,
        }
    }
}

/// A counter name: 1-64 of `[a-z0-9_-]`.
pub fn validate_counter_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "counter name {name:?} must be 1 to 64 of lower-case letters, digits, '_' and '-'"
        ))
    }
}

/// One counter's value, and its viewers' channel.
struct Cell {
    value: AtomicU64,
    tx: watch::Sender<u64>,
}

impl Cell {
    fn new(value: u64) -> Arc<Cell> {
        Arc::new(Cell {
            value: AtomicU64::new(value),
            tx: watch::channel(value).0,
        })
    }

    fn add_one(&self) -> u64 {
        let n = self.value.fetch_add(1, Ordering::AcqRel) + 1;
        // Concurrent increments may finish out of order: viewers only ever
        // see the value grow.
        self.tx.send_if_modified(|v| {
            let newer = n > *v;
            if newer {
                *v = n;
            }
            newer
        });
        n
    }
}

/// A counter's value as served.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Value {
    pub name: String,
    pub value: u64,
    /// When the value was known to include every accepted increment (RFC
    /// 3339). The node that accepts increments knows its value is current,
    /// so this is the time of the read; a replica following the log gives
    /// the time of the last record it applied.
    pub as_of: String,
}

/// What an accepted increment returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    pub name: String,
    pub value: u64,
    pub as_of: String,
    /// When this user may add one again (RFC 3339).
    pub next_allowed_at: String,
}

pub struct CounterApp {
    engine: Arc<Engine>,
    config: CounterConfig,
    counters: RwLock<BTreeMap<String, Arc<Cell>>>,
    accounts: Accounts,
    gate: Box<dyn Gate>,
    failures_by_account: Limiter,
    logins_by_address: Limiter,
    registrations_by_address: Limiter,
    live_clients: AtomicU64,
    /// True once the server stops: live streams end.
    closing: watch::Sender<bool>,
    lookups: AtomicU64,
}

/// Microseconds since the epoch, now.
fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

impl CounterApp {
    /// Rebuilds the app from its streams. Blocking (it reads every stored
    /// event of the app's streams): call it outside async contexts, before
    /// the app serves anything.
    pub fn open(engine: Arc<Engine>, config: CounterConfig) -> Result<CounterApp, CounterError> {
        for name in &config.counters {
            validate_counter_name(name).map_err(CounterError::Internal)?;
        }
        let t = std::time::Instant::now();
        let now = now_us();
        let accounts = Accounts::new(config.max_hashing, Duration::from_secs(10))?;
        let gate = MemoryGate::new();
        let mut values: BTreeMap<String, u64> =
            config.counters.iter().map(|c| (c.clone(), 0)).collect();
        let mut logouts = Vec::new();
        let mut bad = None;
        let mut read = |batch: &tally_ingest::Batch| {
            let r = events::read_batch(batch, |ts, e| match e {
                Event::Created { counter } => {
                    values.entry(counter).or_insert(0);
                }
                Event::Increment { counter, user } => {
                    gate.restore(&counter, &user, ts);
                    *values.entry(counter).or_insert(0) += 1;
                }
                Event::LoggedOut { .. } => logouts.push(e),
                e => accounts.restore(e, now),
            });
            if let Err(e) = r {
                bad = Some(e);
                return Ok(false);
            }
            Ok(true)
        };
        engine.scan(events::INCREMENTS, &mut read)?;
        engine.scan(events::ACCOUNTS, &mut read)?;
        if let Some(e) = bad {
            return Err(CounterError::Internal(format!(
                "the counter's stored events cannot be read: {e}"
            )));
        }
        // Logouts after logins, whatever order the scan met them in.
        for e in logouts {
            accounts.restore(e, now);
        }
        gate.forget_before(now - micros(config.window));
        tracing::info!(
            counters = values.len(),
            increments = values.values().sum::<u64>(),
            users = accounts.users(),
            sessions = accounts.sessions(),
            took_ms = t.elapsed().as_millis() as u64,
            "counter app rebuilt from its streams"
        );
        metrics::init();
        let period = config.limit_period;
        Ok(CounterApp {
            engine,
            counters: RwLock::new(values.into_iter().map(|(k, v)| (k, Cell::new(v))).collect()),
            accounts,
            gate: Box::new(gate),
            failures_by_account: Limiter::new(config.login_failures_per_account, period, 1 << 20),
            logins_by_address: Limiter::new(config.login_attempts_per_address, period, 1 << 20),
            registrations_by_address: Limiter::new(
                config.registrations_per_address,
                period,
                1 << 20,
            ),
            live_clients: AtomicU64::new(0),
            closing: watch::channel(false).0,
            lookups: AtomicU64::new(0),
            config,
        })
    }

    pub fn config(&self) -> &CounterConfig {
        &self.config
    }

    /// The default counter's name.
    pub fn default_counter(&self) -> &str {
        self.config.counters.first().map_or("main", |s| s.as_str())
    }

    fn cell(&self, name: &str) -> Result<Arc<Cell>, CounterError> {
        self.counters
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| CounterError::UnknownCounter(name.to_string()))
    }

    /// A counter's value, from memory.
    pub fn value(&self, name: &str) -> Result<Value, CounterError> {
        let cell = self.cell(name)?;
        Ok(Value {
            name: name.to_string(),
            value: cell.value.load(Ordering::Acquire),
            as_of: rfc3339(now_us()),
        })
    }

    /// Every counter's value.
    pub fn values(&self) -> Vec<Value> {
        let as_of = rfc3339(now_us());
        self.counters
            .read()
            .iter()
            .map(|(name, c)| Value {
                name: name.clone(),
                value: c.value.load(Ordering::Acquire),
                as_of: as_of.clone(),
            })
            .collect()
    }

    /// A receiver of a counter's new values.
    pub fn watch(&self, name: &str) -> Result<watch::Receiver<u64>, CounterError> {
        Ok(self.cell(name)?.tx.subscribe())
    }

    /// Makes a counter (durably); false when it already existed.
    pub async fn create(&self, name: &str) -> Result<bool, CounterError> {
        validate_counter_name(name).map_err(|message| CounterError::BadRequest {
            message,
            field: Some("name"),
        })?;
        if self.counters.read().contains_key(name) {
            return Ok(false);
        }
        self.append(Event::Created {
            counter: name.to_string(),
        })
        .await?;
        let mut counters = self.counters.write();
        if counters.contains_key(name) {
            return Ok(false);
        }
        counters.insert(name.to_string(), Cell::new(0));
        Ok(true)
    }

    /// Adds one to `name` for `user`, at most once per window.
    pub async fn increment(&self, name: &str, user: &str) -> Result<Accepted, CounterError> {
        let cell = self.cell(name)?;
        let now = now_us();
        let window = micros(self.config.window);
        let ticket = match self.gate.reserve(name, user, now, window) {
            Ok(t) => t,
            Err(refusal) => {
                metrics::INCREMENTS.with_label_values(&["refused"]).inc();
                let next = match refusal {
                    Refusal::TooSoon { next } => next,
                    // Most likely accepted a moment from now.
                    Refusal::InFlight => now + window,
                };
                return Err(CounterError::TooSoon {
                    counter: name.to_string(),
                    retry_after: Duration::from_micros((next - now).max(0) as u64),
                    next: rfc3339(next),
                });
            }
        };
        let event = Event::Increment {
            counter: name.to_string(),
            user: user.to_string(),
        };
        match self
            .engine
            .ingest(event.stream(), event.to_batch(now))
            .await
        {
            Ok(_) => {
                self.gate.commit(ticket);
                let value = cell.add_one();
                metrics::INCREMENTS.with_label_values(&["accepted"]).inc();
                Ok(Accepted {
                    name: name.to_string(),
                    value,
                    as_of: rfc3339(now_us()),
                    next_allowed_at: rfc3339(now + window),
                })
            }
            Err(e) => {
                self.gate.release(ticket);
                metrics::INCREMENTS.with_label_values(&["failed"]).inc();
                Err(e.into())
            }
        }
    }

    /// Registers an account and logs it in: the new session's token.
    pub async fn register(
        &self,
        username: &str,
        password: String,
        address: &str,
    ) -> Result<(String, String), CounterError> {
        let now = now_us();
        let user =
            accounts::canonical_user(username).map_err(|message| CounterError::BadRequest {
                message,
                field: Some("username"),
            })?;
        accounts::check_password(&password).map_err(|message| CounterError::BadRequest {
            message,
            field: Some("password"),
        })?;
        self.registrations_by_address
            .check(address, now)
            .map_err(|retry_after| CounterError::Limited {
                what: "too many registrations from this address".into(),
                retry_after,
            })?;
        self.registrations_by_address.record(address, now);
        if !self.accounts.claim(&user) {
            metrics::ACCOUNTS
                .with_label_values(&["register_taken"])
                .inc();
            return Err(CounterError::NameTaken);
        }
        let registered = async {
            let hash = self.accounts.hash(password).await?;
            self.append(Event::Registered {
                user: user.clone(),
                password_hash: hash.clone(),
            })
            .await?;
            Ok::<_, CounterError>(hash)
        }
        .await;
        match registered {
            Ok(hash) => {
                self.accounts.settle(&user, Some(hash));
                metrics::ACCOUNTS.with_label_values(&["registered"]).inc();
                let token = self.start_session(&user).await?;
                Ok((user, token))
            }
            Err(e) => {
                self.accounts.settle(&user, None);
                Err(e)
            }
        }
    }

    /// Checks a password and starts a session: the user and the token.
    pub async fn login(
        &self,
        username: &str,
        password: String,
        address: &str,
    ) -> Result<(String, String), CounterError> {
        let now = now_us();
        // A name that cannot exist is a wrong login like any other (no
        // hint that it is malformed rather than unknown).
        let user = accounts::canonical_user(username)
            .unwrap_or_else(|_| username.trim().to_ascii_lowercase());
        let limited = |what: &str, retry_after| {
            metrics::ACCOUNTS
                .with_label_values(&["login_limited"])
                .inc();
            CounterError::Limited {
                what: what.to_string(),
                retry_after,
            }
        };
        self.logins_by_address
            .check(address, now)
            .map_err(|d| limited("too many login attempts from this address", d))?;
        self.failures_by_account
            .check(&user, now)
            .map_err(|d| limited("too many failed logins for this account", d))?;
        self.logins_by_address.record(address, now);
        if password.len() > accounts::MAX_PASSWORD_BYTES
            || !self.accounts.verify(&user, password).await?
        {
            self.failures_by_account.record(&user, now);
            metrics::ACCOUNTS.with_label_values(&["login_failed"]).inc();
            return Err(CounterError::WrongCredentials);
        }
        self.failures_by_account.clear(&user);
        metrics::ACCOUNTS.with_label_values(&["login"]).inc();
        let token = self.start_session(&user).await?;
        Ok((user, token))
    }

    async fn start_session(&self, user: &str) -> Result<String, CounterError> {
        let (token, hash) = accounts::new_session();
        let expires = now_us() + micros(self.config.session_ttl);
        self.append(Event::LoggedIn {
            user: user.to_string(),
            session: hash.clone(),
            expires,
        })
        .await?;
        self.accounts.add_session(
            hash,
            Session {
                user: user.to_string(),
                expires,
            },
        );
        Ok(token)
    }

    /// Ends the session of `token`, if it is live.
    pub async fn logout(&self, token: &str) -> Result<(), CounterError> {
        let hash = accounts::session_hash(token);
        if self.accounts.session_user(&hash, now_us()).is_none() {
            return Ok(());
        }
        self.append(Event::LoggedOut {
            session: hash.clone(),
        })
        .await?;
        self.accounts.remove_session(&hash);
        metrics::ACCOUNTS.with_label_values(&["logout"]).inc();
        Ok(())
    }

    /// The user of a session token, if it is live.
    pub fn session_user(&self, token: &str) -> Option<String> {
        let now = now_us();
        let user = self
            .accounts
            .session_user(&accounts::session_hash(token), now);
        // Now and then, sweep expired sessions and keys out of memory.
        if self.lookups.fetch_add(1, Ordering::Relaxed) % 16_384 == 16_383 {
            self.accounts.expire_sessions(now);
            self.gate.forget_before(now - micros(self.config.window));
        }
        user
    }

    async fn append(&self, event: Event) -> Result<(), CounterError> {
        self.engine
            .ingest(event.stream(), event.to_batch(now_us()))
            .await?;
        Ok(())
    }

    /// Ends every live-update stream (the server is shutting down).
    pub fn close_live(&self) {
        self.closing.send_replace(true);
    }

    /// Counts a live-update client in, unless there are too many.
    fn live_client(self: &Arc<Self>) -> Option<LiveClient> {
        let n = self.live_clients.fetch_add(1, Ordering::AcqRel);
        if n >= self.config.max_live_clients as u64 {
            self.live_clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::LIVE_CLIENTS.inc();
        Some(LiveClient(self.clone()))
    }
}

/// A live-update client's place, given back when its stream ends.
struct LiveClient(Arc<CounterApp>);

impl LiveClient {
    /// Tells when the server stops.
    fn closing(&self) -> watch::Receiver<bool> {
        self.0.closing.subscribe()
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.0.live_clients.fetch_sub(1, Ordering::AcqRel);
        metrics::LIVE_CLIENTS.dec();
    }
}
