//! The plugin host: one wasmtime engine, a compile cache on disk, pools of instances, and the
//! call path that runs each call under its plugin's limits.
//!
//! ```text
//! register: bytes ─ header ─ sha256 ─ compile or deserialize (compile.rs) ─ world and imports
//!           checked ─ linked and pre-instantiated (engine.rs) ─ kept in memory by digest
//! call:     load (memory, disk or compile) ─ the plugin's concurrency permit ─ an instance
//!           (pool.rs: warm, standby, or a pool slot and a new store) ─ instantiate ─ the
//!           world's exports under the deadline (call.rs) ─ the instance back to its pool
//! ```
//!
//! - `engine.rs`: the wasmtime `Engine` (component model, pooling allocator, epoch ticks),
//!   one `Linker` per world, linking a component, and a new `Store` per instance.
//! - `compile.rs`: registration's checks, the compiled forms on disk and the prepared
//!   components in memory.
//! - `pool.rs`: instances and their slots: the pool's, each plugin's concurrency, warm
//!   instances per (plugin, tenant), standby instances of fresh plugins.
//! - `call.rs`: `Host::run`, the one call path, typed by world (`run::<Inference>` is handed
//!   an inference processor's exports only: `crate::bindings::Bindings`); deadlines, traps
//!   classified, timings.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::limits::{CallError, HostSettings, Limits};
use crate::world::World;

mod call;
mod compile;
mod engine;
mod pool;

pub use crate::locks::KeyGuard;
pub(crate) use call::{Call, classify};
pub use call::{CallReport, Timings};
pub use compile::{LoadSource, RegisterError, Registered, sha256_hex};
pub use pool::InstanceUse;

pub(crate) const MIB: u64 = 1024 * 1024;

/// A plugin as calls name it: its code (by digest) and the limits its registration set.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// `name@version`, which keys warm instances and concurrency.
    pub key: String,
    pub digest: String,
    pub world: World,
    pub limits: Limits,
    /// Read-only model directory (inference processors), seen by the guest at `/model`.
    pub model_dir: Option<PathBuf>,
}

/// Per call: who calls (warm instances are never shared between tenants) and what it grants.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub tenant: String,
    pub call_id: String,
    pub storage: crate::storage::Grant,
    pub parameters: Vec<crate::bindings::types::Parameter>,
    pub checkpoint_prefix: Option<String>,
    pub stop: Arc<AtomicBool>,
    /// When the caller gives up on the call (an inference service's call timeout): each
    /// export's deadline is the plugin's own `timeout_ms` or this, whichever comes first, so
    /// the guest is interrupted then and its instance goes back (or is discarded) as after
    /// its own timeout. `None`: the plugin's own limit only.
    pub deadline: Option<std::time::Instant>,
    /// Run a call on a warm instance on the calling worker thread
    /// (`tokio::task::block_in_place`) instead of a blocking-pool thread: for short calls
    /// whose task awaits nothing else meanwhile (an inference request); it saves the two
    /// thread hops of `spawn_blocking`. Only on a multi-thread runtime; a new instance
    /// (instantiation) still goes to the blocking pool.
    pub inline: bool,
}

pub struct Host {
    settings: HostSettings,
    engine: engine::Runtime,
    cache: compile::CompileCache,
    pool: pool::Pool,
    keys: crate::locks::KeyedLocks,
}

impl Host {
    /// A host keeping components and their compiled forms under `dir`.
    pub fn new(dir: impl Into<PathBuf>, settings: HostSettings) -> anyhow::Result<Arc<Host>> {
        let engine = engine::Runtime::new(&settings)?;
        let cache = compile::CompileCache::new(dir.into(), engine.hash())?;
        Ok(Arc::new(Host {
            pool: pool::Pool::new(settings.total_instances as usize),
            engine,
            cache,
            settings,
            keys: Default::default(),
        }))
    }

    pub fn settings(&self) -> &HostSettings {
        &self.settings
    }

    /// Components compiled by this host since it started.
    pub fn compilations(&self) -> u64 {
        self.cache.compilations()
    }

    /// Checks and compiles a component (blocking: call from a blocking thread). Registering
    /// the same bytes again compiles nothing.
    pub fn register(
        &self,
        bytes: &[u8],
        expected: Option<World>,
    ) -> Result<Registered, RegisterError> {
        let size = bytes.len() as u64;
        let limit = self.settings.max_component_mb * MIB;
        if size > limit {
            return Err(RegisterError::TooLarge { size, limit });
        }
        self.cache.register(&self.engine, bytes, expected)
    }

    /// Loads a stored plugin ahead of its first call (at gateway start).
    pub fn preload(&self, digest: &str, world: World) -> Result<LoadSource, CallError> {
        self.cache.load(&self.engine, digest, world).map(|(_, s)| s)
    }

    /// Forgets a plugin's warm instances and, when no other registration uses the digest,
    /// its files.
    pub fn forget(&self, plugin: &PluginRef, remove_files: bool) {
        self.pool.forget(&plugin.key);
        if remove_files && !self.settings.shared_cache {
            self.cache.forget(&plugin.digest);
        }
    }

    /// Waits for, then holds, the lock of `key` until the guard drops. The gateway registers
    /// and deletes one `name@version` at a time, and works on the files of one digest at a
    /// time, so that concurrent requests never delete each other's files.
    pub async fn lock_key(&self, key: &str) -> KeyGuard {
        self.keys.lock(key).await
    }

    /// Keys locked or waited for now (for tests).
    pub fn locked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Pool slots taken now: instances running a call, warm and standby ones (for tests and
    /// diagnostics).
    pub fn instances_in_use(&self) -> usize {
        self.pool.in_use()
    }

    /// Standby instances of `plugin` ready now (for tests and diagnostics).
    pub fn standby_ready(&self, key: &str) -> usize {
        self.pool.standby_ready(key)
    }

    /// Standby instances of `plugin` once no refill of them is under way (a fresh plugin's
    /// call starts its refill before it returns, so after a call this is what it made).
    pub async fn standby_settled(&self, key: &str) -> usize {
        let mut changes = self.pool.changes();
        while self.pool.standby_filling(key) {
            if changes.changed().await.is_err() {
                break;
            }
        }
        self.pool.standby_ready(key)
    }

    /// Waits until `done` holds, looking again each time a pool slot is taken or a standby
    /// refill ends (for tests and diagnostics: no polling).
    pub async fn until(&self, done: impl Fn(&Host) -> bool) {
        let mut changes = self.pool.changes();
        while !done(self) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}
