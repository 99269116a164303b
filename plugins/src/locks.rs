//! An async lock per key (a resource's id, a plugin's `name@version`), made on first use and
//! dropped with its last user, so a long-running process keeps no entry per key it ever saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Map = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// See the module's doc. Cloning shares the locks.
#[derive(Clone, Default)]
pub struct KeyedLocks {
    map: Map,
}

/// Holds one key's lock until dropped.
pub struct KeyGuard {
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
    map: Map,
    key: String,
}

impl KeyedLocks {
    /// The lock of `key`, made on first use.
    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Waits for, then holds, the lock of `key` until the guard drops.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let lock = self.entry(key);
        KeyGuard {
            held: Some(lock.lock_owned().await),
            map: self.map.clone(),
            key: key.to_owned(),
        }
    }

    /// Holds the lock of `key` if nobody holds it now; `None` when someone does (for work
    /// that is refused, not queued, while the same work runs).
    pub fn try_lock(&self, key: &str) -> Option<KeyGuard> {
        let lock = self.entry(key);
        let held = lock.clone().try_lock_owned().ok();
        let guard = KeyGuard {
            held,
            map: self.map.clone(),
            key: key.to_owned(),
        };
        drop(lock);
        // A refused guard drops here: it removes the entry if nobody else holds it.
        guard.held.is_some().then_some(guard)
    }

    /// Keys locked or waited for now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.held.take();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it now: nobody has it or waits for it.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// Locks a std mutex; one poisoned by a panicking holder is taken as it is (the data it
/// guards here are maps and counters that stay consistent at every await-free step).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_no_entry_left_behind() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        // Another key is free.
        let b = locks.lock("b").await;
        assert_eq!(locks.len(), 2);
        // The same key waits until the holder drops.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        // (tokio::test runs one thread: the waiter runs at these yields, up to the lock.)
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
        drop(b);
        assert!(locks.is_empty(), "entries of keys nobody holds are dropped");
    }

    #[tokio::test]
    async fn try_lock_refuses_a_held_key_and_leaves_no_entry() {
        let locks = KeyedLocks::default();
        let a = locks.try_lock("a").expect("a free key");
        assert!(locks.try_lock("a").is_none(), "a held key is refused");
        assert!(locks.try_lock("b").is_some(), "another key is free");
        assert_eq!(
            locks.len(),
            1,
            "a refused try leaves only the holder's entry"
        );
        drop(a);
        assert!(locks.is_empty());
        assert!(locks.try_lock("a").is_some(), "free again once dropped");
        assert!(locks.is_empty());
    }
}
