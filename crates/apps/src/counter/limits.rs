//! Attempt limits: at most `max` attempts per key (an account name, a
//! client address) in each fixed period. Login failures per account and
//! login attempts and registrations per address go through one of these, so
//! guessing passwords costs an attacker periods, not CPU.
//!
//! Memory is bounded: past `capacity` keys, keys whose period has ended are
//! dropped, and if every key is still current a new key is refused (limited)
//! rather than stored.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

pub struct Limiter {
    max: u32,
    period_us: i64,
    capacity: usize,
    /// Key -> (start of its period, attempts in it).
    keys: Mutex<HashMap<String, (i64, u32)>>,
}

impl Limiter {
    pub fn new(max: u32, period: Duration, capacity: usize) -> Self {
        Limiter {
            max,
            period_us: period.as_micros().min(i64::MAX as u128) as i64,
            capacity,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when `key` has used its attempts of the current period.
    pub fn check(&self, key: &str, now: i64) -> Result<(), Duration> {
        let keys = self.keys.lock();
        match keys.get(key) {
            Some(&(start, n)) if n >= self.max && now < start + self.period_us => {
                Err(Duration::from_micros((start + self.period_us - now) as u64))
            }
            Some(_) => Ok(()),
            None if keys.len() >= self.capacity => Err(Duration::from_micros(
                self.period_us.clamp(0, i64::MAX) as u64,
            )),
            None => Ok(()),
        }
    }

    /// Counts an attempt of `key` at `now`.
    pub fn record(&self, key: &str, now: i64) {
        let mut keys = self.keys.lock();
        if keys.len() >= self.capacity && !keys.contains_key(key) {
            let period = self.period_us;
            keys.retain(|_, (start, _)| now < *start + period);
            if keys.len() >= self.capacity {
                return;
            }
        }
        let slot = keys.entry(key.to_string()).or_insert((now, 0));
        if now >= slot.0 + self.period_us {
            *slot = (now, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }

    /// Forgets `key` (after a successful login, its failures).
    pub fn clear(&self, key: &str) {
        self.keys.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn limits_per_key_and_period() {
        let l = Limiter::new(3, Duration::from_secs(10), 100);
        for _ in 0..3 {
            assert!(l.check("a", 0).is_ok());
            l.record("a", 0);
        }
        assert_eq!(l.check("a", 4 * S), Err(Duration::from_secs(6)));
        assert!(l.check("b", 4 * S).is_ok());
        // A new period starts fresh.
        assert!(l.check("a", 10 * S).is_ok());
        l.record("a", 10 * S);
        assert!(l.check("a", 11 * S).is_ok());
        l.record("a", 11 * S);
        l.record("a", 11 * S);
        assert!(l.check("a", 12 * S).is_err());
        l.clear("a");
        assert!(l.check("a", 12 * S).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let l = Limiter::new(1, Duration::from_secs(10), 2);
        l.record("a", 0);
        l.record("b", 0);
        // Full of current keys: a new key is refused, not stored.
        l.record("c", S);
        assert!(l.check("c", S).is_err());
        // Once the period ends, old keys make room.
        l.record("c", 11 * S);
        assert!(l.check("c", 11 * S).is_err());
        assert!(l.check("a", 11 * S).is_ok());
    }
}
