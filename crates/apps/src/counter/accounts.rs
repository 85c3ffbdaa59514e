//! Accounts and sessions in memory, rebuilt from the accounts stream.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults:
//! 19 MiB, 2 passes, 1 lane, as OWASP recommends) on blocking threads, at
//! most `max_hashing` at once, so a burst of logins costs a bounded amount
//! of memory and never stalls the request threads. A login for an unknown
//! name is verified against a dummy hash of the same cost, so the answer and
//! its timing are those of a wrong password.
//!
//! A session is a random 256-bit token held by the client in a cookie; the
//! server keeps only its SHA-256 (in memory and in the log), the way API
//! keys are kept. A lookup by that hash cannot be timed to learn a token: a
//! guess's hash shares nothing predictable with the stored ones.

use super::events::Event;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 256;

/// A user name as stored: 3-32 of `[a-z0-9_.-]`, case-insensitive (kept in
/// lower case).
pub fn canonical_user(name: &str) -> Result<String, String> {
    let name = name.trim().to_ascii_lowercase();
    if !(3..=32).contains(&name.len()) {
        return Err("username must be 3 to 32 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "username contains {c:?}; allowed are letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(name)
}

pub fn check_password(password: &str) -> Result<(), String> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_BYTES} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// A new session token and the hash the server keeps.
pub fn new_session() -> (String, String) {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let hash = session_hash(&token);
    (token, hash)
}

/// The hex SHA-256 of a session token.
pub fn session_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Clone)]
enum UserState {
    /// Being registered: its hash is being computed or its event written.
    Pending,
    Active(Arc<str>),
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub expires: i64,
}

/// Why a password could not be checked or hashed now.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks in progress")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

pub struct Accounts {
    users: Mutex<HashMap<String, UserState>>,
    sessions: Mutex<HashMap<String, Session>>,
    dummy: Arc<str>,
    hashing: Arc<Semaphore>,
    hash_wait: Duration,
}

impl Accounts {
    pub fn new(max_hashing: usize, hash_wait: Duration) -> Result<Self, HashError> {
        let dummy = hash_password(&hex::encode(rand::random::<[u8; 16]>()))?;
        Ok(Accounts {
            users: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            dummy: dummy.into(),
            hashing: Arc::new(Semaphore::new(max_hashing.max(1))),
            hash_wait,
        })
    }

    /// Applies an account event read back from the log at start.
    pub fn restore(&self, event: Event, now: i64) {
        match event {
            Event::Registered {
                user,
                password_hash,
            } => {
                // The first registration of a name in the log wins (the
                // app never writes a second one); it replaces a claim this
                // node holds for the same name, which then fails.
                let mut users = self.users.lock();
                if !matches!(users.get(&user), Some(UserState::Active(_))) {
                    users.insert(user, UserState::Active(password_hash.into()));
                }
            }
            Event::LoggedIn {
                user,
                session,
                expires,
            } if expires > now => {
                self.sessions
                    .lock()
                    .insert(session, Session { user, expires });
            }
            Event::LoggedOut { session } => {
                self.sessions.lock().remove(&session);
            }
            _ => {}
        }
    }

    pub fn users(&self) -> usize {
        self.users.lock().len()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Claims `user` for a registration; false when the name is taken.
    pub fn claim(&self, user: &str) -> bool {
        let mut users = self.users.lock();
        if users.contains_key(user) {
            return false;
        }
        users.insert(user.to_string(), UserState::Pending);
        true
    }

    /// Ends a claim: the account exists with `hash`, or (None) the name is
    /// free again, unless an account of that name was applied meanwhile.
    pub fn settle(&self, user: &str, hash: Option<String>) {
        let mut users = self.users.lock();
        match hash {
            Some(h) => {
                users.insert(user.to_string(), UserState::Active(h.into()));
            }
            None => {
                if matches!(users.get(user), Some(UserState::Pending)) {
                    users.remove(user);
                }
            }
        }
    }

    /// Hashes a new password on a blocking thread.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.blocking(move || hash_password(&password)).await?
    }

    /// Whether `password` is `user`'s. Unknown and pending users are
    /// checked against the dummy hash, at the same cost.
    pub async fn verify(&self, user: &str, password: String) -> Result<bool, HashError> {
        let (hash, known) = match self.users.lock().get(user) {
            Some(UserState::Active(h)) => (h.clone(), true),
            _ => (self.dummy.clone(), false),
        };
        let ok = self
            .blocking(move || verify_password(&hash, &password))
            .await?;
        Ok(ok && known)
    }

    pub fn add_session(&self, hash: String, session: Session) {
        self.sessions.lock().insert(hash, session);
    }

    pub fn remove_session(&self, hash: &str) -> Option<Session> {
        self.sessions.lock().remove(hash)
    }

    /// The user of a live session.
    pub fn session_user(&self, hash: &str, now: i64) -> Option<String> {
        let sessions = self.sessions.lock();
        sessions
            .get(hash)
            .filter(|s| s.expires > now)
            .map(|s| s.user.clone())
    }

    /// Drops expired sessions.
    pub fn expire_sessions(&self, now: i64) {
        self.sessions.lock().retain(|_, s| s.expires > now);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.hash_wait, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let out = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?;
        Ok(out)
    }
}

fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords() {
        assert_eq!(canonical_user(" Ada.L ").unwrap(), "ada.l");
        assert!(canonical_user("ab").is_err());
        assert!(canonical_user("a b c").is_err());
        assert!(canonical_user(&"a".repeat(33)).is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_password(&"x".repeat(257)).is_err());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let a = Accounts::new(2, Duration::from_secs(5)).unwrap();
        let h = a.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(a.claim("ada"));
        assert!(!a.claim("ada"), "a pending name is taken");
        // Pending: not yet an account.
        assert!(!a.verify("ada", "correct horse".into()).await.unwrap());
        a.settle("ada", Some(h));
        assert!(a.verify("ada", "correct horse".into()).await.unwrap());
        assert!(!a.verify("ada", "wrong horse".into()).await.unwrap());
        assert!(!a.verify("bob", "correct horse".into()).await.unwrap());
        assert!(a.claim("bob"));
        a.settle("bob", None);
        assert!(a.claim("bob"), "a failed registration frees the name");
    }

    #[test]
    fn sessions_expire_and_log_out() {
        let a = Accounts::new(1, Duration::from_secs(5)).unwrap();
        let (token, hash) = new_session();
        assert_eq!(session_hash(&token), hash);
        a.restore(
            Event::LoggedIn {
                user: "ada".into(),
                session: hash.clone(),
                expires: 100,
            },
            50,
        );
        assert_eq!(a.session_user(&hash, 99).as_deref(), Some("ada"));
        assert_eq!(a.session_user(&hash, 100), None);
        a.restore(
            Event::LoggedOut {
                session: hash.clone(),
            },
            60,
        );
        assert_eq!(a.session_user(&hash, 70), None);
        // Expired at start: not loaded.
        a.restore(
            Event::LoggedIn {
                user: "ada".into(),
                session: "x".into(),
                expires: 10,
            },
            50,
        );
        assert_eq!(a.sessions(), 0);
    }
}
