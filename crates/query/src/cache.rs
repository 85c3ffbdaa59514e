//! The result cache.
//!
//! Keys are the normalized query plus the data versions of what it reads
//! (per stream partition range, per dimension table). An ingest into those
//! partitions raises their version, so the next lookup builds a different
//! key and misses; the stale entry is never served and ages out. Bounded by
//! bytes, least recently used out first.

use crate::metrics::{CACHE_BYTES, CACHE_ENTRIES};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

struct Entry<V> {
    value: Arc<V>,
    bytes: usize,
    last_used: u64,
}

pub(crate) struct Cache<V> {
    inner: Mutex<Inner<V>>,
    capacity: usize,
}

struct Inner<V> {
    map: HashMap<String, Entry<V>>,
    bytes: usize,
    tick: u64,
}

impl<V> Cache<V> {
    pub fn new(capacity: usize) -> Self {
        Cache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
            capacity,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let e = inner.map.get_mut(key)?;
        e.last_used = tick;
        Some(e.value.clone())
    }

    /// Stores `value`; an answer larger than a quarter of the cache is not
    /// kept (it would evict everything else for one query).
    pub fn put(&self, key: String, value: Arc<V>, bytes: usize) {
        let bytes = bytes + key.len() + 64;
        if bytes > self.capacity / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let last_used = inner.tick;
        if let Some(old) = inner.map.insert(
            key,
            Entry {
                value,
                bytes,
                last_used,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        if inner.bytes > self.capacity {
            // Evict the least recently used down to 3/4 of the capacity, so
            // the sort is paid once per many inserts.
            let mut order: Vec<(u64, String)> = inner
                .map
                .iter()
                .map(|(k, e)| (e.last_used, k.clone()))
                .collect();
            order.sort_unstable();
            for (_, k) in order {
                if inner.bytes <= self.capacity * 3 / 4 {
                    break;
                }
                if let Some(e) = inner.map.remove(&k) {
                    inner.bytes -= e.bytes;
                }
            }
        }
        CACHE_BYTES.set(inner.bytes as i64);
        CACHE_ENTRIES.set(inner.map.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c: Cache<u32> = Cache::new(2000);
        for i in 0..20 {
            c.put(format!("k{i}"), Arc::new(i), 100);
            // k0 stays hot.
            assert!(c.get("k0").is_some());
        }
        assert!(c.get("k0").is_some());
        assert!(c.get("k1").is_none());
        assert!(c.get("k19").is_some());
        let inner = c.inner.lock();
        assert!(inner.bytes <= 2000);
        assert_eq!(
            inner.bytes,
            inner.map.values().map(|e| e.bytes).sum::<usize>()
        );
    }
}
