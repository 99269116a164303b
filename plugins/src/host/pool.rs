//! The instance pool: the pooling allocator's slots (one per live instance, whatever it
//! does), each plugin's concurrency permits (a queue, not an error), warm instances kept per
//! (plugin, tenant), and the standby instances of fresh plugins: never called, made after a
//! call with a free slot only, keyed by plugin and checked against a fingerprint of what they
//! were made for. A call short of a slot evicts idle warm instances, then standby ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

use super::PluginRef;
use crate::bindings::Bound;
use crate::state::State;

/// A live instance: its store, its exports and its pool slot.
pub(crate) struct Live {
    pub store: Store<State>,
    pub bound: Bound,
    pub calls: u64,
    /// Whether the instance has run its `init` (inference processors, once per instance).
    pub initialized: bool,
    _slot: OwnedSemaphorePermit,
}

/// A pool slot and a new store, for an instance not made yet (a call makes it on its
/// blocking thread).
pub(super) struct Vacant {
    pub store: Store<State>,
    slot: OwnedSemaphorePermit,
}

impl Vacant {
    pub fn new(store: Store<State>, slot: OwnedSemaphorePermit) -> Vacant {
        Vacant { store, slot }
    }

    /// The instance made in this store.
    pub fn fill(self, bound: Bound) -> Live {
        Live {
            store: self.store,
            bound,
            calls: 0,
            initialized: false,
            _slot: self.slot,
        }
    }
}

/// How the call got its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceUse {
    /// A new instance made for this call.
    Fresh,
    /// A new, never-called instance made ahead of the call, off its path (fresh plugins keep
    /// `standby_instances` of them once called).
    FreshStandby,
    WarmNew,
    WarmReused,
}

/// Warm instances by (plugin key, tenant).
type Warm = HashMap<(String, String), Vec<Live>>;

/// Never-called instances of a fresh plugin, made ahead of its calls.
struct Standby {
    /// What the instances were made for (code, model directory, limits): a registration that
    /// changes any of it makes them stale.
    fingerprint: String,
    ready: Vec<Live>,
    filling: bool,
}

/// What a standby instance depends on: the code, the model directory and the limits (memory,
/// determinism) its store was made with.
pub(super) fn standby_fingerprint(plugin: &PluginRef) -> String {
    format!(
        "{}|{:?}|{:?}",
        plugin.digest, plugin.model_dir, plugin.limits
    )
}

pub(super) struct Pool {
    total: usize,
    slots: Arc<Semaphore>,
    warm: Mutex<Warm>,
    standby: Mutex<HashMap<String, Standby>>,
    plugin_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Bumped when a slot is taken and when a standby refill ends: what tests and
    /// diagnostics wait on instead of polling ([`Pool::changes`]).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Pool {
    /// A pool of `total` instances (the pooling allocator's size).
    pub fn new(total: usize) -> Pool {
        Pool {
            total,
            slots: Arc::new(Semaphore::new(total)),
            warm: Mutex::new(HashMap::new()),
            standby: Mutex::new(HashMap::new()),
            plugin_slots: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Called after the change is made, so a watcher that subscribes later sees it when it
    /// looks; with nobody watching (every call in production) it costs one atomic read.
    fn changed(&self) {
        if self.changes.receiver_count() > 0 {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Sees each slot taken and each standby refill ended from now on.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits for one of the plugin's concurrency permits.
    pub async fn running(&self, plugin: &PluginRef) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut slots = crate::locks::lock(&self.plugin_slots);
            slots
                .entry(plugin.key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(plugin.limits.concurrency as usize)))
                .clone()
        };
        semaphore.acquire_owned().await.expect("never closed")
    }

    /// A pool slot; idle warm instances, then standby instances, give theirs up when none is
    /// free.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        let permit = self.take_slot().await;
        self.changed();
        permit
    }

    async fn take_slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                return p;
            }
            let evicted = {
                let mut warm = crate::locks::lock(&self.warm);
                let key = warm
                    .iter()
                    .find(|(_, v)| !v.is_empty())
                    .map(|(k, _)| k.clone());
                key.and_then(|k| warm.get_mut(&k).and_then(|v| v.pop()))
            }
            .or_else(|| {
                let mut standby = crate::locks::lock(&self.standby);
                standby.values_mut().find_map(|s| s.ready.pop())
            });
            match evicted {
                Some(live) => drop(live),
                None => {
                    return self
                        .slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("never closed");
                }
            }
        }
    }

    /// A pool slot when one is free now.
    pub fn free_slot(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        if permit.is_some() {
            self.changed();
        }
        permit
    }

    /// A warm instance of (plugin key, tenant).
    pub fn take_warm(&self, key: &(String, String)) -> Option<Live> {
        crate::locks::lock(&self.warm)
            .get_mut(key)
            .and_then(|v| v.pop())
    }

    /// Keeps `live` warm for (plugin key, tenant) when fewer than `max` are; else hands it
    /// back.
    pub fn keep_warm(&self, key: (String, String), live: Live, max: usize) -> Option<Live> {
        let mut warm = crate::locks::lock(&self.warm);
        let pool = warm.entry(key).or_default();
        if pool.len() < max {
            pool.push(live);
            None
        } else {
            Some(live)
        }
    }

    /// A standby instance of the plugin, when one is ready and still matches it.
    pub fn take_standby(&self, key: &str, fingerprint: &str) -> Option<Live> {
        let mut standby = crate::locks::lock(&self.standby);
        let s = standby.get_mut(key)?;
        if s.fingerprint != fingerprint {
            s.ready.clear();
            return None;
        }
        s.ready.pop()
    }

    /// Whether the plugin's standby instances need topping up to `want`, no one else doing
    /// it: then the caller does, and reports each instance to [`Pool::refilled`].
    pub fn begin_refill(&self, key: &str, fingerprint: &str, want: usize) -> bool {
        let mut standby = crate::locks::lock(&self.standby);
        let s = standby.entry(key.to_string()).or_insert_with(|| Standby {
            fingerprint: fingerprint.to_string(),
            ready: Vec::new(),
            filling: false,
        });
        if s.fingerprint != fingerprint {
            s.ready.clear();
            s.fingerprint = fingerprint.to_string();
        }
        if s.filling || s.ready.len() >= want {
            return false;
        }
        s.filling = true;
        true
    }

    /// Keeps an instance made by a refill (`None`: none could be made); whether to make
    /// another.
    pub fn refilled(&self, key: &str, fingerprint: &str, want: usize, made: Option<Live>) -> bool {
        let mut standby = crate::locks::lock(&self.standby);
        // Forgotten (deleted) meanwhile: nothing to keep.
        let Some(s) = standby.get_mut(key) else {
            return false;
        };
        match made {
            Some(live) if s.fingerprint == fingerprint && s.ready.len() < want => {
                s.ready.push(live);
                if s.ready.len() < want {
                    return true;
                }
            }
            // No free slot, or the instance did not come up: the next call makes its own
            // and reports why.
            _ => {}
        }
        s.filling = false;
        drop(standby);
        self.changed();
        false
    }

    /// Drops the plugin's warm and standby instances and its concurrency permits.
    pub fn forget(&self, key: &str) {
        crate::locks::lock(&self.warm).retain(|(k, _), _| k != key);
        crate::locks::lock(&self.standby).remove(key);
        crate::locks::lock(&self.plugin_slots).remove(key);
    }

    /// Slots taken now: instances running a call, warm and standby ones.
    pub fn in_use(&self) -> usize {
        self.total.saturating_sub(self.slots.available_permits())
    }

    /// Whether a refill of the plugin's standby instances is under way.
    pub fn standby_filling(&self, key: &str) -> bool {
        crate::locks::lock(&self.standby)
            .get(key)
            .is_some_and(|s| s.filling)
    }

    /// Standby instances of the plugin ready now.
    pub fn standby_ready(&self, key: &str) -> usize {
        crate::locks::lock(&self.standby)
            .get(key)
            .map_or(0, |s| s.ready.len())
    }
}
