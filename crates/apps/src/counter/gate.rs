//! The once-per-window rule: a user's increment of a counter is accepted
//! at most once per window.
//!
//! The rule is a compare-and-set on one key, (counter, user): [`Gate::reserve`]
//! moves the key from "last accepted at T" (or absent) to "in flight" only
//! when T is a window old, [`Gate::commit`] makes the reservation the new
//! last acceptance once its event is durable, and [`Gate::release`] puts the
//! old value back when the append failed. Two clicks at the same instant
//! race for the same key and only one reserves it, whichever connection or
//! tab they come from.
//!
//! [`MemoryGate`] keeps the keys in this process, which is exact while one
//! process accepts increments (the single-node server). A cluster puts the
//! same three operations on a shared compare-and-set store (a JetStream
//! key-value bucket's revision-checked update, say) behind this trait; the
//! HTTP API does not change.

use parking_lot::Mutex;
use std::collections::HashMap;

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user's last increment was accepted at `last` (µs); the next is
    /// allowed at `next` (µs).
    TooSoon { next: i64 },
    /// Another increment by the user is being written now.
    InFlight,
}

/// A held reservation; give it back through commit or release.
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    key: (String, String),
    previous: Option<i64>,
    at: i64,
}

pub trait Gate: Send + Sync {
    /// Reserves the key for an increment at `now` (µs) if its last accepted
    /// increment is at least `window` (µs) old.
    fn reserve(&self, counter: &str, user: &str, now: i64, window: i64) -> Result<Ticket, Refusal>;
    /// The increment is durable: its time is the key's last acceptance.
    fn commit(&self, ticket: Ticket);
    /// The increment was not written: the key is as it was.
    fn release(&self, ticket: Ticket);
    /// At start: an increment read back from the log.
    fn restore(&self, counter: &str, user: &str, at: i64);
    /// Forgets keys whose last acceptance is older than `before` (µs): they
    /// allow an increment whatever their time was.
    fn forget_before(&self, before: i64);
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Accepted(i64),
    InFlight,
}

/// The gate of a single process: one map behind one lock, held for a map
/// lookup, never across I/O.
#[derive(Default)]
pub struct MemoryGate {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl MemoryGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys held (for the metrics and tests).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Gate for MemoryGate {
    fn reserve(&self, counter: &str, user: &str, now: i64, window: i64) -> Result<Ticket, Refusal> {
        let key = (counter.to_string(), user.to_string());
        let mut slots = self.slots.lock();
        let previous = match slots.get(&key) {
            Some(Slot::InFlight) => return Err(Refusal::InFlight),
            Some(Slot::Accepted(last)) if now < last.saturating_add(window) => {
                return Err(Refusal::TooSoon {
                    next: last.saturating_add(window),
                })
            }
            Some(Slot::Accepted(last)) => Some(*last),
            None => None,
        };
        slots.insert(key.clone(), Slot::InFlight);
        Ok(Ticket {
            key,
            previous,
            at: now,
        })
    }

    fn commit(&self, ticket: Ticket) {
        self.slots
            .lock()
            .insert(ticket.key, Slot::Accepted(ticket.at));
    }

    fn release(&self, ticket: Ticket) {
        let mut slots = self.slots.lock();
        match ticket.previous {
            Some(t) => slots.insert(ticket.key, Slot::Accepted(t)),
            None => slots.remove(&ticket.key),
        };
    }

    fn restore(&self, counter: &str, user: &str, at: i64) {
        let mut slots = self.slots.lock();
        let slot = slots
            .entry((counter.to_string(), user.to_string()))
            .or_insert(Slot::Accepted(at));
        if let Slot::Accepted(t) = slot {
            *t = (*t).max(at);
        }
    }

    fn forget_before(&self, before: i64) {
        self.slots
            .lock()
            .retain(|_, s| !matches!(s, Slot::Accepted(t) if *t < before));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 1_000;

    #[test]
    fn one_increment_per_window() {
        let g = MemoryGate::new();
        let t = g.reserve("c", "u", 10, W).unwrap();
        assert_eq!(g.reserve("c", "u", 10, W).unwrap_err(), Refusal::InFlight);
        g.commit(t);
        assert_eq!(
            g.reserve("c", "u", 500, W).unwrap_err(),
            Refusal::TooSoon { next: 1_010 }
        );
        // Other users and other counters are separate keys.
        g.commit(g.reserve("c", "v", 500, W).unwrap());
        g.commit(g.reserve("d", "u", 500, W).unwrap());
        assert_eq!(
            g.reserve("c", "u", 1_009, W).unwrap_err(),
            Refusal::TooSoon { next: 1_010 }
        );
        g.commit(g.reserve("c", "u", 1_010, W).unwrap());
        assert!(g.reserve("c", "u", 2_009, W).is_err());
    }

    #[test]
    fn a_released_reservation_leaves_the_key_as_it_was() {
        let g = MemoryGate::new();
        g.release(g.reserve("c", "u", 10, W).unwrap());
        assert!(g.is_empty());
        g.commit(g.reserve("c", "u", 10, W).unwrap());
        g.release(g.reserve("c", "u", 2_000, W).unwrap());
        // Back to "accepted at 10": allowed again, not refused as too soon.
        g.commit(g.reserve("c", "u", 2_001, W).unwrap());
        assert_eq!(
            g.reserve("c", "u", 2_002, W).unwrap_err(),
            Refusal::TooSoon { next: 3_001 }
        );
    }

    #[test]
    fn restore_keeps_the_latest_and_forget_drops_old_keys() {
        let g = MemoryGate::new();
        g.restore("c", "u", 50);
        g.restore("c", "u", 20);
        assert_eq!(
            g.reserve("c", "u", 60, W).unwrap_err(),
            Refusal::TooSoon { next: 1_050 }
        );
        g.restore("c", "v", 10);
        g.forget_before(30);
        assert_eq!(g.len(), 1);
        assert!(g.reserve("c", "v", 11, W).is_ok());
    }

    #[test]
    fn simultaneous_reservations_admit_exactly_one() {
        let g = std::sync::Arc::new(MemoryGate::new());
        let won: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| {
                    let g = g.clone();
                    s.spawn(move || match g.reserve("c", "u", 10, W) {
                        Ok(t) => {
                            g.commit(t);
                            1
                        }
                        Err(_) => 0,
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 1);
    }
}
