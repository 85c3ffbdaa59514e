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
mod shared;

pub use error::CounterError;
pub use http::{routes, Slot};

use accounts::Accounts;
use events::Event;
use gate::{Gate, MemoryGate, Refusal};
use limits::Limiter;
use parking_lot::RwLock;
use shared::SharedRules;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tally_engine::{Engine, Follower, Lsn};
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

/// What the log decides, kept by following the app's streams: the same
/// on every node that applied the same records, whichever node took each
/// write.
struct Derived {
    counters: RwLock<BTreeMap<String, Arc<Cell>>>,
    accounts: Accounts,
    /// Each user's last accepted increment (on a single node, the
    /// once-per-window rule itself).
    gate: MemoryGate,
}

impl Derived {
    /// Applies one of the app's events at `ts`; `now` decides which
    /// sessions are still live.
    fn apply(&self, ts: i64, event: Event, now: i64) {
        match event {
            Event::Created { counter } => {
                self.counters
                    .write()
                    .entry(counter)
                    .or_insert_with(|| Cell::new(0));
            }
            Event::Increment { counter, user } => {
                self.gate.restore(&counter, &user, ts);
                let cell = self.counters.read().get(&counter).cloned();
                let cell = cell.unwrap_or_else(|| {
                    self.counters
                        .write()
                        .entry(counter)
                        .or_insert_with(|| Cell::new(0))
                        .clone()
                });
                cell.add_one();
            }
            e => self.accounts.restore(e, now),
        }
    }
}

/// Hands every node's applied counter events to its [`Derived`] state.
struct CounterFollower(Arc<Derived>);

impl Follower for CounterFollower {
    fn applied(&self, lsn: Lsn, _stream: &str, batch: &tally_ingest::Batch) {
        let now = now_us();
        if let Err(e) = events::read_batch(batch, |ts, e| self.0.apply(ts, e, now)) {
            tracing::error!(lsn, error = %e, "a counter event cannot be read; it is skipped");
        }
    }
}

pub struct CounterApp {
    engine: Arc<Engine>,
    config: CounterConfig,
    derived: Arc<Derived>,
    /// Cluster mode: the rules decided on keys every node shares.
    shared: Option<SharedRules>,
    failures_by_account: Limiter,
    logins_by_address: Limiter,
    registrations_by_address: Limiter,
    live_clients: AtomicU64,
    /// True once the server stops: live streams end.
    closing: watch::Sender<bool>,
    lookups: AtomicU64,
}

/// A held once-per-window reservation.
enum Reserved {
    Memory(gate::Ticket),
    Shared(shared::Held),
}

/// Whether a failed append surely stored nothing: refused before it was
/// sent (a full queue or memory, a bad record, a stopping engine).
fn surely_not_stored(e: &tally_engine::Error) -> bool {
    !e.may_have_been_stored()
}

/// The attempt limits.
#[derive(Clone, Copy)]
enum Limit {
    /// Registrations per address.
    Registrations,
    /// Login attempts per address.
    Logins,
    /// Failed logins per account.
    Failures,
}

impl Limit {
    fn key(self) -> &'static str {
        match self {
            Limit::Registrations => "reg",
            Limit::Logins => "login",
            Limit::Failures => "fail",
        }
    }
}

/// Why a limit check did not pass.
enum LimitError {
    /// Used up: the wait until the period ends.
    Wait(Duration),
    /// The shared keys could not be read.
    Other(CounterError),
}

impl LimitError {
    fn or_limited(self, what: &str) -> CounterError {
        match self {
            LimitError::Wait(retry_after) => CounterError::Limited {
                what: what.to_string(),
                retry_after,
            },
            LimitError::Other(e) => e,
        }
    }
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
        let derived = Arc::new(Derived {
            counters: RwLock::new(
                config
                    .counters
                    .iter()
                    .map(|c| (c.clone(), Cell::new(0)))
                    .collect(),
            ),
            accounts: Accounts::new(config.max_hashing, Duration::from_secs(10))?,
            gate: MemoryGate::new(),
        });
        // What the streams hold, then every event applied after, on every
        // node alike.
        let mut logouts = Vec::new();
        let mut bad = None;
        let follower = Arc::new(CounterFollower(derived.clone()));
        engine.follow(
            &[events::INCREMENTS, events::ACCOUNTS],
            follower,
            &mut |_, batch| {
                let r = events::read_batch(batch, |ts, e| match e {
                    Event::LoggedOut { .. } => logouts.push(e),
                    e => derived.apply(ts, e, now),
                });
                if let Err(e) = r {
                    bad.get_or_insert(e);
                }
                Ok(())
            },
        )?;
        if let Some(e) = bad {
            return Err(CounterError::Internal(format!(
                "the counter's stored events cannot be read: {e}"
            )));
        }
        // Logouts after logins, whatever order the scan met them in.
        for e in logouts {
            derived.accounts.restore(e, now);
        }
        derived.gate.forget_before(now - micros(config.window));
        let shared = SharedRules::open(&engine, config.window, config.limit_period)?;
        tracing::info!(
            counters = derived.counters.read().len(),
            increments = derived
                .counters
                .read()
                .values()
                .map(|c| c.value.load(Ordering::Acquire))
                .sum::<u64>(),
            users = derived.accounts.users(),
            sessions = derived.accounts.sessions(),
            cluster = shared.is_some(),
            took_ms = t.elapsed().as_millis() as u64,
            "counter app rebuilt from its streams"
        );
        metrics::init();
        let period = config.limit_period;
        Ok(CounterApp {
            engine,
            derived,
            shared,
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
        self.derived
            .counters
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| CounterError::UnknownCounter(name.to_string()))
    }

    /// When the values in memory were known to hold every accepted
    /// increment (µs): now on a single node; in a cluster, when this node
    /// last knew it had applied everything the stream held.
    pub fn as_of(&self) -> i64 {
        let now = now_us();
        match self.engine.staleness() {
            Some(d) => now - micros(d),
            None => now,
        }
    }

    /// A counter's value, from memory.
    pub fn value(&self, name: &str) -> Result<Value, CounterError> {
        let cell = self.cell(name)?;
        Ok(Value {
            name: name.to_string(),
            value: cell.value.load(Ordering::Acquire),
            as_of: rfc3339(self.as_of()),
        })
    }

    /// Every counter's value.
    pub fn values(&self) -> Vec<Value> {
        let as_of = rfc3339(self.as_of());
        self.derived
            .counters
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
        if self.derived.counters.read().contains_key(name) {
            return Ok(false);
        }
        // Applied (the counter made) before the append returns.
        self.append(Event::Created {
            counter: name.to_string(),
        })
        .await?;
        Ok(true)
    }

    /// Adds one to `name` for `user`, at most once per window.
    pub async fn increment(&self, name: &str, user: &str) -> Result<Accepted, CounterError> {
        let cell = self.cell(name)?;
        let now = now_us();
        let window = micros(self.config.window);
        let too_soon = |next: i64| {
            metrics::INCREMENTS.with_label_values(&["refused"]).inc();
            CounterError::TooSoon {
                counter: name.to_string(),
                retry_after: Duration::from_micros((next - now).max(0) as u64),
                next: rfc3339(next),
            }
        };
        // The rule: on the shared keys in a cluster, in memory alone.
        let ticket = match &self.shared {
            Some(rules) => match rules.reserve(name, user, now).await? {
                Ok(held) => Reserved::Shared(held),
                Err(next) => return Err(too_soon(next)),
            },
            None => match self.derived.gate.reserve(name, user, now, window) {
                Ok(t) => Reserved::Memory(t),
                Err(Refusal::TooSoon { next }) => return Err(too_soon(next)),
                // Most likely accepted a moment from now.
                Err(Refusal::InFlight) => return Err(too_soon(now + window)),
            },
        };
        let event = Event::Increment {
            counter: name.to_string(),
            user: user.to_string(),
        };
        // The value moves when the event is applied, before this returns.
        let mut ticket = ticket;
        let appended = match (&mut ticket, &self.shared) {
            (Reserved::Shared(held), Some(rules)) => {
                let batch = || vec![(event.stream().to_string(), event.to_batch(now))];
                rules.append(&self.engine, held, batch).await
            }
            _ => {
                self.engine
                    .ingest(event.stream(), event.to_batch(now))
                    .await
            }
        };
        match (appended, ticket) {
            (Ok(_), ticket) => {
                // When the window starts: at the reservation alone, once
                // appended in a cluster (see `shared`).
                let accepted_at = match ticket {
                    Reserved::Memory(t) => {
                        self.derived.gate.commit(t);
                        now
                    }
                    Reserved::Shared(held) => {
                        let at = now_us();
                        if let Some(rules) = &self.shared {
                            rules.commit(held, at).await;
                        }
                        at
                    }
                };
                metrics::INCREMENTS.with_label_values(&["accepted"]).inc();
                Ok(Accepted {
                    name: name.to_string(),
                    value: cell.value.load(Ordering::Acquire),
                    as_of: rfc3339(now_us()),
                    next_allowed_at: rfc3339(accepted_at + window),
                })
            }
            (Err(e), ticket) => {
                match ticket {
                    Reserved::Memory(t) => self.derived.gate.release(t),
                    // An append that may have reached the log keeps the
                    // reservation: the user waits the window rather than
                    // risk a second increment in it.
                    Reserved::Shared(held) if surely_not_stored(&e) => {
                        if let Some(rules) = &self.shared {
                            rules.release(held).await;
                        }
                    }
                    Reserved::Shared(_) => {}
                }
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
        let limits = &self.config;
        self.check_limit(
            Limit::Registrations,
            address,
            limits.registrations_per_address,
            now,
        )
        .await
        .map_err(|e| e.or_limited("too many registrations from this address"))?;
        self.record_limit(Limit::Registrations, address, now)
            .await?;
        if !self.derived.accounts.claim(&user) {
            metrics::ACCOUNTS
                .with_label_values(&["register_taken"])
                .inc();
            return Err(CounterError::NameTaken);
        }
        // In a cluster the name is taken on the shared keys too, so two
        // nodes never both register it.
        let held = match &self.shared {
            Some(rules) => match rules.claim_user(&user).await {
                Ok(Some(held)) => Some(held),
                Ok(None) => {
                    self.derived.accounts.settle(&user, None);
                    metrics::ACCOUNTS
                        .with_label_values(&["register_taken"])
                        .inc();
                    return Err(CounterError::NameTaken);
                }
                Err(e) => {
                    self.derived.accounts.settle(&user, None);
                    return Err(e);
                }
            },
            None => None,
        };
        let registered = async {
            let hash = self.accounts().hash(password).await?;
            // The account is made when the event is applied.
            self.append(Event::Registered {
                user: user.clone(),
                password_hash: hash,
            })
            .await
        }
        .await;
        match registered {
            Ok(()) => {
                metrics::ACCOUNTS.with_label_values(&["registered"]).inc();
                let token = self.start_session(&user).await?;
                Ok((user, token))
            }
            Err(e) => {
                self.derived.accounts.settle(&user, None);
                let not_stored = match &e {
                    CounterError::Engine(e) => surely_not_stored(e),
                    _ => true,
                };
                if let (Some(rules), Some(held)) = (&self.shared, held) {
                    if not_stored {
                        rules.release_user(held).await;
                    }
                }
                Err(e)
            }
        }
    }

    fn accounts(&self) -> &Accounts {
        &self.derived.accounts
    }

    /// `Err` when `subject` has used its attempts of `kind` this period:
    /// on the shared keys in a cluster, in this node's memory alone.
    async fn check_limit(
        &self,
        kind: Limit,
        subject: &str,
        max: u32,
        now: i64,
    ) -> Result<(), LimitError> {
        match &self.shared {
            Some(rules) => match rules.check(kind.key(), subject, max, now).await {
                Ok(r) => r.map_err(LimitError::Wait),
                Err(e) => Err(LimitError::Other(e)),
            },
            None => self
                .limiter(kind)
                .check(subject, now)
                .map_err(LimitError::Wait),
        }
    }

    async fn record_limit(&self, kind: Limit, subject: &str, now: i64) -> Result<(), CounterError> {
        match &self.shared {
            Some(rules) => rules.record(kind.key(), subject, now).await,
            None => {
                self.limiter(kind).record(subject, now);
                Ok(())
            }
        }
    }

    fn limiter(&self, kind: Limit) -> &Limiter {
        match kind {
            Limit::Registrations => &self.registrations_by_address,
            Limit::Logins => &self.logins_by_address,
            Limit::Failures => &self.failures_by_account,
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
        let limited = |what: &'static str| {
            move |e: LimitError| {
                if matches!(e, LimitError::Wait(_)) {
                    metrics::ACCOUNTS
                        .with_label_values(&["login_limited"])
                        .inc();
                }
                e.or_limited(what)
            }
        };
        let c = &self.config;
        self.check_limit(Limit::Logins, address, c.login_attempts_per_address, now)
            .await
            .map_err(limited("too many login attempts from this address"))?;
        self.check_limit(Limit::Failures, &user, c.login_failures_per_account, now)
            .await
            .map_err(limited("too many failed logins for this account"))?;
        self.record_limit(Limit::Logins, address, now).await?;
        if password.len() > accounts::MAX_PASSWORD_BYTES
            || !self.accounts().verify(&user, password).await?
        {
            self.record_limit(Limit::Failures, &user, now).await?;
            metrics::ACCOUNTS.with_label_values(&["login_failed"]).inc();
            return Err(CounterError::WrongCredentials);
        }
        match &self.shared {
            Some(rules) => rules.clear(Limit::Failures.key(), &user).await?,
            None => self.failures_by_account.clear(&user),
        }
        metrics::ACCOUNTS.with_label_values(&["login"]).inc();
        let token = self.start_session(&user).await?;
        Ok((user, token))
    }

    async fn start_session(&self, user: &str) -> Result<String, CounterError> {
        let (token, hash) = accounts::new_session();
        let expires = now_us() + micros(self.config.session_ttl);
        // The session is live on every node once the event is applied.
        self.append(Event::LoggedIn {
            user: user.to_string(),
            session: hash,
            expires,
        })
        .await?;
        Ok(token)
    }

    /// Ends the session of `token`, if it is live.
    pub async fn logout(&self, token: &str) -> Result<(), CounterError> {
        let hash = accounts::session_hash(token);
        if self.accounts().session_user(&hash, now_us()).is_none() {
            return Ok(());
        }
        self.append(Event::LoggedOut { session: hash }).await?;
        metrics::ACCOUNTS.with_label_values(&["logout"]).inc();
        Ok(())
    }

    /// The user of a session token, if it is live.
    pub fn session_user(&self, token: &str) -> Option<String> {
        let now = now_us();
        let user = self
            .accounts()
            .session_user(&accounts::session_hash(token), now);
        // Now and then, sweep expired sessions and keys out of memory.
        if self.lookups.fetch_add(1, Ordering::Relaxed) % 16_384 == 16_383 {
            self.accounts().expire_sessions(now);
            self.derived
                .gate
                .forget_before(now - micros(self.config.window));
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
