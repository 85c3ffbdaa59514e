//! The counter's events. Everything the app knows is an event in one of two
//! internal streams, written through the engine like any client's events:
//! durable once acknowledged, replayed after kill -9, and read back at start
//! to rebuild the app's memory. Nothing else holds counter state.
//!
//! - `_tally_counter`: `kind` `create` (a counter made through the admin
//!   API) or `inc` (one accepted increment), `counter`, `user`.
//! - `_tally_counter_accounts`: `kind` `register` (`user`,
//!   `password_hash`, an argon2id PHC string), `login` (`user`, `session`:
//!   the SHA-256 of the session token, never the token; `expires`, µs) or
//!   `logout` (`session`).

use tally_ingest::{Batch, BatchBuilder, Column, ColumnData};

/// Counters and their accepted increments.
pub const INCREMENTS: &str = "_tally_counter";
/// Accounts and sessions.
pub const ACCOUNTS: &str = "_tally_counter_accounts";

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Created {
        counter: String,
    },
    Increment {
        counter: String,
        user: String,
    },
    Registered {
        user: String,
        password_hash: String,
    },
    LoggedIn {
        user: String,
        session: String,
        expires: i64,
    },
    LoggedOut {
        session: String,
    },
}

impl Event {
    /// The stream the event belongs to.
    pub fn stream(&self) -> &'static str {
        match self {
            Event::Created { .. } | Event::Increment { .. } => INCREMENTS,
            _ => ACCOUNTS,
        }
    }

    /// A batch of one event at `ts` (µs).
    pub fn to_batch(&self, ts: i64) -> Batch {
        let mut b = BatchBuilder::new();
        let _ = b.start_row(1);
        let mut put = |name: &str, value: &str| {
            // Field names are constants and values are text: cannot fail.
            let _ = b.push_str(name, value);
        };
        match self {
            Event::Created { counter } => {
                put("kind", "create");
                put("counter", counter);
            }
            Event::Increment { counter, user } => {
                put("kind", "inc");
                put("counter", counter);
                put("user", user);
            }
            Event::Registered {
                user,
                password_hash,
            } => {
                put("kind", "register");
                put("user", user);
                put("password_hash", password_hash);
            }
            Event::LoggedIn {
                user,
                session,
                expires,
            } => {
                put("kind", "login");
                put("user", user);
                put("session", session);
                let _ = b.push_num("expires", *expires as f64);
            }
            Event::LoggedOut { session } => {
                put("kind", "logout");
                put("session", session);
            }
        }
        b.finish_row(ts);
        b.finish()
    }
}

/// Reads the events of a stored batch, with their times. A row the app
/// cannot have written (an unknown kind, a missing field) is an error that
/// names it: the app refuses to start on state it does not understand.
pub fn read_batch(batch: &Batch, mut f: impl FnMut(i64, Event)) -> Result<(), String> {
    let dim = |name: &str| match batch.column(name).map(|c: &Column| &c.data) {
        Some(ColumnData::Dim(s)) => Some(s),
        _ => None,
    };
    let (kind, counter, user, hash, session) = (
        dim("kind"),
        dim("counter"),
        dim("user"),
        dim("password_hash"),
        dim("session"),
    );
    let expires = match batch.column("expires").map(|c| &c.data) {
        Some(ColumnData::Value(v)) => Some(v),
        _ => None,
    };
    let text = |col: Option<&tally_ingest::StrColumn>, i: usize, field: &str| {
        col.and_then(|c| c.get(i))
            .map(str::to_string)
            .ok_or_else(|| format!("row {} (ts {}) has no {field}", i + 1, batch.ts[i]))
    };
    for (i, &ts) in batch.ts.iter().enumerate() {
        let event = match kind.and_then(|k| k.get(i)) {
            Some("create") => Event::Created {
                counter: text(counter, i, "counter")?,
            },
            Some("inc") => Event::Increment {
                counter: text(counter, i, "counter")?,
                user: text(user, i, "user")?,
            },
            Some("register") => Event::Registered {
                user: text(user, i, "user")?,
                password_hash: text(hash, i, "password_hash")?,
            },
            Some("login") => Event::LoggedIn {
                user: text(user, i, "user")?,
                session: text(session, i, "session")?,
                expires: expires
                    .and_then(|v| v.get(i))
                    .ok_or_else(|| format!("row {} (ts {ts}) has no expires", i + 1))?
                    as i64,
            },
            Some("logout") => Event::LoggedOut {
                session: text(session, i, "session")?,
            },
            other => return Err(format!("row {} (ts {ts}) has kind {other:?}", i + 1)),
        };
        f(ts, event);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_batches() {
        let events = [
            Event::Created {
                counter: "main".into(),
            },
            Event::Increment {
                counter: "main".into(),
                user: "ada".into(),
            },
            Event::Registered {
                user: "ada".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            Event::LoggedIn {
                user: "ada".into(),
                session: "ab".repeat(32),
                expires: 1_790_000_000_000_000,
            },
            Event::LoggedOut {
                session: "ab".repeat(32),
            },
        ];
        for (i, e) in events.iter().enumerate() {
            let mut seen = Vec::new();
            read_batch(&e.to_batch(i as i64 + 7), |ts, e| seen.push((ts, e))).unwrap();
            assert_eq!(seen, vec![(i as i64 + 7, e.clone())]);
        }
    }

    #[test]
    fn rows_the_app_cannot_have_written_are_named() {
        let mut b = BatchBuilder::new();
        b.start_row(1).unwrap();
        b.push_str("kind", "inc").unwrap();
        b.push_str("counter", "main").unwrap();
        b.finish_row(5);
        let err = read_batch(&b.finish(), |_, _| {}).unwrap_err();
        assert!(err.contains("row 1") && err.contains("user"), "{err}");
    }
}
