//! A small in-memory cache with a time to live, for lookups on every proxied request
//! (credentials, routes). A read is one uncontended read lock and a clock read; values are
//! meant to be cheap to clone (`Arc`s).
//!
//! Entries expire `ttl` after insertion. When the cache is full, expired entries are
//! dropped, and if that frees nothing the whole cache is cleared: a miss only costs a
//! database read, and a full cache means far more distinct keys than the capacity is sized
//! for.
//!
//! Hand-written rather than a cache crate on purpose: it sits on the proxy's per-request path
//! (every proxied request reads a route and a credential), where a hit must stay one
//! uncontended read lock; the proxy's whole cost per request is measured against nginx in
//! docs/benchmarks.md (`bench/proxy.sh`).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    map: RwLock<HashMap<K, (V, Instant)>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TtlCache {
            map: RwLock::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let (v, at) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (value, Instant::now()));
    }

    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Drops every entry (a change that many entries may depend on).
    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_invalidated() {
        let c: TtlCache<String, u32> = TtlCache::new(10, Duration::from_millis(50));
        c.insert("a".into(), 1);
        c.insert("b".into(), 2);
        assert_eq!(c.get("a"), Some(1));
        c.invalidate("a");
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("b"), Some(2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("b"), None, "expired");
    }

    #[test]
    fn a_full_cache_stays_bounded() {
        let c: TtlCache<u32, u32> = TtlCache::new(4, Duration::from_secs(60));
        for i in 0..100 {
            c.insert(i, i);
            assert!(c.map.read().unwrap().len() <= 4);
            assert_eq!(c.get(&i), Some(i), "the newest entry is always kept");
        }
    }
}
