//! The plugin host: one wasmtime engine (component model, pooling allocator, epoch
//! interruption), registration with a compile cache on disk, pre-instantiated components in
//! memory, and calls with fresh or warm instances under per-plugin limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::{inference, training, workflow};
use crate::limits::{CallError, HostSettings, InstancePolicy, LimitKind, Limits};
use crate::state::{CallState, Capture, Limiter, State};
use crate::world::{self, World};

const MIB: u64 = 1024 * 1024;
/// Epoch tick: deadlines are met to within about this much.
const TICK: Duration = Duration::from_millis(5);

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "the component is {size} bytes; the largest accepted is {limit} bytes (ATELIER_PLUGIN_MAX_COMPONENT_MB)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    NotComponent(String),
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error("{0}")]
    UnknownWorld(String),
    #[error("{0}")]
    ForbiddenImports(String),
    #[error("{0}")]
    Host(String),
}

/// What registration learned about a component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub digest: String,
    pub world: World,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub size: u64,
    /// Milliseconds spent compiling now (0 when the compiled form was already on disk).
    pub compile_ms: f64,
    /// Whether this registration compiled the component.
    pub compiled: bool,
}

/// Where a call found its plugin's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// Pre-instantiated in memory.
    Memory,
    /// The compiled artifact from the disk cache (no compilation).
    Disk,
    /// Compiled now (first use under these engine settings).
    Compiled,
}

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
}

pub(crate) enum Pre {
    Inference(inference::InferenceProcessorPre<State>),
    Workflow(workflow::WorkflowStepPre<State>),
    Training(training::TrainingAlgorithmPre<State>),
}

pub(crate) enum Bound {
    Inference(inference::InferenceProcessor),
    Workflow(workflow::WorkflowStep),
    Training(training::TrainingAlgorithm),
}

struct Loaded {
    pre: Pre,
}

/// A live instance with its store.
pub(crate) struct Live {
    pub store: Store<State>,
    /// Set once the instance exists (right after the store, before the call runs).
    pub bound: Option<Bound>,
    pub calls: u64,
    pub initialized: bool,
    _slot: OwnedSemaphorePermit,
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

/// Time spent, in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub load_us: u64,
    pub queued_us: u64,
    pub instantiate_us: u64,
    pub init_us: u64,
    pub calls: Vec<(String, u64)>,
    pub total_us: u64,
}

/// Everything a call produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallReport<O> {
    pub call_id: String,
    pub output: Option<O>,
    pub error: Option<CallError>,
    pub logs: Vec<crate::state::LogLine>,
    pub logs_dropped: u64,
    pub stdout: String,
    pub stderr: String,
    pub metrics: crate::state::Metrics,
    pub timings: Timings,
    pub instance: InstanceUse,
    pub load: LoadSource,
}

impl<O> CallReport<O> {
    /// The report of a call that failed before producing anything.
    pub fn failed(call_id: String, error: CallError, timings: Timings, load: LoadSource) -> Self {
        CallReport {
            call_id,
            output: None,
            error: Some(error),
            logs: Vec::new(),
            logs_dropped: 0,
            stdout: String::new(),
            stderr: String::new(),
            metrics: Default::default(),
            timings,
            instance: InstanceUse::Fresh,
            load,
        }
    }
}

type Warm = HashMap<(String, String), Vec<Live>>;

/// Never-called instances of a fresh plugin, made ahead of its calls.
struct Standby {
    /// What the instances were made for (code, model directory, limits): a registration that
    /// changes any of it makes them stale.
    fingerprint: String,
    ready: Vec<Live>,
    filling: bool,
}

pub struct Host {
    engine: Engine,
    settings: HostSettings,
    dir: PathBuf,
    engine_hash: String,
    linkers: HashMap<World, Linker<State>>,
    loaded: moka::sync::Cache<String, Arc<Loaded>>,
    warm: Arc<Mutex<Warm>>,
    standby: Mutex<HashMap<String, Standby>>,
    plugin_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    slots: Arc<Semaphore>,
    compilations: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
    keys: crate::locks::KeyedLocks,
}

pub use crate::locks::KeyGuard;

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

struct HashWriter(Sha256);
impl std::hash::Hasher for HashWriter {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Host {
    /// A host keeping components and their compiled forms under `dir`.
    pub fn new(dir: impl Into<PathBuf>, settings: HostSettings) -> anyhow::Result<Arc<Host>> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("components"))?;
        std::fs::create_dir_all(dir.join("compiled"))?;

        let mut pool = PoolingAllocationConfig::default();
        let max_memory = settings.max_memory_mb * MIB;
        pool.total_component_instances(settings.total_instances)
            .total_core_instances(settings.total_instances * 32)
            .total_memories(settings.total_instances * 8)
            .total_tables(settings.total_instances * 16)
            .total_stacks(settings.total_instances)
            .total_gc_heaps(settings.total_instances)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memory_size(max_memory as usize)
            .table_elements(200_000)
            .max_core_instance_size(16 * MIB as usize)
            .max_component_instance_size(4 * MIB as usize)
            // Keep freshly used pages resident: reusing a slot then costs a memset, not a
            // page fault per page (the first-touch cost of a fresh instance).
            .linear_memory_keep_resident(2 * MIB as usize)
            .table_keep_resident(MIB as usize);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(settings.max_wasm_stack_kb * 1024)
            .memory_reservation(max_memory)
            .memory_guard_size(32 * MIB)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // A profiling knob for developers (docs/plugins.md), read once per host.
        #[allow(clippy::disallowed_methods)]
        let perfmap = std::env::var_os("ATELIER_PLUGIN_PERFMAP").is_some();
        if perfmap {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let mut hasher = HashWriter(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        // The pool's memory settings change how code is compiled (bounds checks).
        std::hash::Hash::hash(&max_memory, &mut hasher);
        let engine_hash = hex::encode(&hasher.0.finalize()[..8]);

        let mut linkers = HashMap::new();
        for world in World::ALL {
            let mut linker: Linker<State> = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            // The imports a guest can wait in, bounded by the call's deadline.
            crate::waits::link(&mut linker)?;
            match world {
                World::InferenceProcessor => inference::InferenceProcessor::add_to_linker::<
                    State,
                    HasSelf<State>,
                >(&mut linker, |s| s)?,
                World::WorkflowStep => workflow::WorkflowStep::add_to_linker::<
                    State,
                    HasSelf<State>,
                >(&mut linker, |s| s)?,
                World::TrainingAlgorithm => training::TrainingAlgorithm::add_to_linker::<
                    State,
                    HasSelf<State>,
                >(&mut linker, |s| s)?,
            }
            linkers.insert(world, linker);
        }

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })?;
        }

        Ok(Arc::new(Host {
            slots: Arc::new(Semaphore::new(settings.total_instances as usize)),
            engine,
            settings,
            dir,
            engine_hash,
            linkers,
            loaded: moka::sync::Cache::builder().max_capacity(256).build(),
            warm: Arc::new(Mutex::new(HashMap::new())),
            standby: Mutex::new(HashMap::new()),
            plugin_slots: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
            stop_ticker,
            keys: Default::default(),
        }))
    }

    pub fn settings(&self) -> &HostSettings {
        &self.settings
    }

    /// Components compiled by this host since it started.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join("components").join(format!("{digest}.wasm"))
    }

    fn compiled_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("compiled")
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
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
        check_header(bytes)?;
        let digest = sha256_hex(bytes);
        let compiled_path = self.compiled_path(&digest);
        let started = Instant::now();
        let (component, compiled) = if compiled_path.exists() {
            (
                self.deserialize(&compiled_path)
                    .map_err(|e| RegisterError::Host(e.to_string()))?,
                false,
            )
        } else {
            let c = Component::new(&self.engine, bytes)
                .map_err(|e| RegisterError::Invalid(format!("{e:#}")))?;
            (c, true)
        };
        let compile_ms = if compiled {
            started.elapsed().as_secs_f64() * 1e3
        } else {
            0.0
        };
        let (world, exports, imports) = check_types(&self.engine, &component, expected)?;
        let pre = self
            .pre(world, &component)
            .map_err(|e| RegisterError::UnknownWorld(e.to_string()))?;
        if compiled {
            self.compilations.fetch_add(1, Ordering::Relaxed);
            let artifact = component
                .serialize()
                .map_err(|e| RegisterError::Host(e.to_string()))?;
            write_atomic(&compiled_path, &artifact)
                .map_err(|e| RegisterError::Host(e.to_string()))?;
        }
        let component_path = self.component_path(&digest);
        if !component_path.exists() {
            write_atomic(&component_path, bytes).map_err(|e| RegisterError::Host(e.to_string()))?;
        }
        self.loaded.insert(digest.clone(), Arc::new(Loaded { pre }));
        Ok(Registered {
            digest,
            world,
            exports,
            imports,
            size,
            compile_ms,
            compiled,
        })
    }

    fn deserialize(&self, path: &Path) -> anyhow::Result<Component> {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name), into a directory only the host writes.
        Ok(unsafe { Component::deserialize_file(&self.engine, path)? })
    }

    fn pre(&self, world: World, component: &Component) -> anyhow::Result<Pre> {
        let linker = &self.linkers[&world];
        let instance_pre = linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("the component does not link against the {world} world: {e:#}")
        })?;
        Ok(match world {
            World::InferenceProcessor => {
                Pre::Inference(inference::InferenceProcessorPre::new(instance_pre).map_err(
                    |e| anyhow::anyhow!("its exports do not match the {world} world: {e:#}"),
                )?)
            }
            World::WorkflowStep => {
                Pre::Workflow(workflow::WorkflowStepPre::new(instance_pre).map_err(|e| {
                    anyhow::anyhow!("its exports do not match the {world} world: {e:#}")
                })?)
            }
            World::TrainingAlgorithm => Pre::Training(
                training::TrainingAlgorithmPre::new(instance_pre).map_err(|e| {
                    anyhow::anyhow!("its exports do not match the {world} world: {e:#}")
                })?,
            ),
        })
    }

    /// The pre-instantiated plugin: from memory, from the disk cache, or compiled now.
    fn load(&self, digest: &str, world: World) -> Result<(Arc<Loaded>, LoadSource), CallError> {
        if let Some(l) = self.loaded.get(digest) {
            return Ok((l, LoadSource::Memory));
        }
        let compiled_path = self.compiled_path(digest);
        let (component, source) = if compiled_path.exists() {
            (
                self.deserialize(&compiled_path).map_err(CallError::host)?,
                LoadSource::Disk,
            )
        } else {
            let bytes = std::fs::read(self.component_path(digest)).map_err(|e| {
                CallError::host(format!("the component {digest} is not stored: {e}"))
            })?;
            let c = Component::new(&self.engine, &bytes).map_err(CallError::host)?;
            self.compilations.fetch_add(1, Ordering::Relaxed);
            let artifact = c.serialize().map_err(CallError::host)?;
            write_atomic(&compiled_path, &artifact).map_err(CallError::host)?;
            (c, LoadSource::Compiled)
        };
        let loaded = Arc::new(Loaded {
            pre: self.pre(world, &component).map_err(CallError::host)?,
        });
        self.loaded.insert(digest.to_string(), loaded.clone());
        Ok((loaded, source))
    }

    /// Loads a stored plugin ahead of its first call (at gateway start).
    pub fn preload(&self, digest: &str, world: World) -> Result<LoadSource, CallError> {
        self.load(digest, world).map(|(_, s)| s)
    }

    /// Forgets a plugin's warm instances and, when no other registration uses the digest,
    /// its files.
    pub fn forget(&self, plugin: &PluginRef, remove_files: bool) {
        crate::locks::lock(&self.warm).retain(|(key, _), _| *key != plugin.key);
        crate::locks::lock(&self.standby).remove(&plugin.key);
        crate::locks::lock(&self.plugin_slots).remove(&plugin.key);
        if remove_files && !self.settings.shared_cache {
            self.loaded.invalidate(&plugin.digest);
            let _ = std::fs::remove_file(self.component_path(&plugin.digest));
            let _ = std::fs::remove_file(self.compiled_path(&plugin.digest));
        }
    }

    fn plugin_semaphore(&self, plugin: &PluginRef) -> Arc<Semaphore> {
        let mut slots = crate::locks::lock(&self.plugin_slots);
        slots
            .entry(plugin.key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(plugin.limits.concurrency as usize)))
            .clone()
    }

    /// A pooling-allocator slot; idle warm instances, then standby instances, give theirs up
    /// when none is free.
    async fn slot(&self) -> OwnedSemaphorePermit {
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

    fn new_store(&self, plugin: &PluginRef) -> Result<Store<State>, CallError> {
        let stdout = Capture::default();
        let stderr = Capture::default();
        let mut wasi = WasiCtxBuilder::new();
        // Nothing from the host: no environment, no arguments, no network, no files but the
        // model directory (read-only).
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        if plugin.limits.deterministic {
            let seed = Sha256::digest(plugin.digest.as_bytes()).to_vec();
            wasi.wall_clock(FrozenClock)
                .secure_random(wasmtime_wasi::Deterministic::new(seed.clone()))
                .insecure_random(wasmtime_wasi::Deterministic::new(seed))
                .insecure_random_seed(0);
        }
        if let Some(dir) = &plugin.model_dir {
            wasi.preopened_dir(dir, "/model", wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| {
                    CallError::host(format!(
                        "cannot open the model directory {}: {e}",
                        dir.display()
                    ))
                })?;
        }
        let state = State {
            deadline: Instant::now(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_limit: plugin.limits.memory_bytes(),
                memory_now: 0,
                table_limit: 200_000,
                hit: None,
            },
            stdout,
            stderr,
            call: CallState::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        Ok(store)
    }

    /// A standby instance of the plugin, when one is ready and still matches it.
    fn take_standby(&self, key: &str, fingerprint: &str) -> Option<Live> {
        let mut standby = crate::locks::lock(&self.standby);
        let s = standby.get_mut(key)?;
        if s.fingerprint != fingerprint {
            s.ready.clear();
            return None;
        }
        s.ready.pop()
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
        (self.settings.total_instances as usize).saturating_sub(self.slots.available_permits())
    }

    /// Standby instances of `plugin` ready now (for tests and diagnostics).
    pub fn standby_ready(&self, key: &str) -> usize {
        crate::locks::lock(&self.standby)
            .get(key)
            .map_or(0, |s| s.ready.len())
    }

    /// Tops up the plugin's standby instances on a blocking thread. Only a free pool slot is
    /// used: a standby never makes a call wait, and calls evict standbys when slots run out.
    fn refill_standby(self: &Arc<Self>, plugin: &PluginRef, fingerprint: String) {
        let want = self.settings.standby_instances as usize;
        {
            let mut standby = crate::locks::lock(&self.standby);
            let s = standby
                .entry(plugin.key.clone())
                .or_insert_with(|| Standby {
                    fingerprint: fingerprint.clone(),
                    ready: Vec::new(),
                    filling: false,
                });
            if s.fingerprint != fingerprint {
                s.ready.clear();
                s.fingerprint = fingerprint.clone();
            }
            if s.filling || s.ready.len() >= want {
                return;
            }
            s.filling = true;
        }
        let host = self.clone();
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                let made = host.make_standby(&plugin);
                let mut standby = crate::locks::lock(&host.standby);
                // Forgotten (deleted) meanwhile: nothing to keep.
                let Some(s) = standby.get_mut(&plugin.key) else {
                    return;
                };
                match made {
                    Some(live) if s.fingerprint == fingerprint && s.ready.len() < want => {
                        s.ready.push(live);
                        if s.ready.len() < want {
                            continue;
                        }
                    }
                    // No free slot, or the instance did not come up: the next call makes
                    // its own and reports why.
                    _ => {}
                }
                s.filling = false;
                return;
            }
        });
    }

    fn make_standby(&self, plugin: &PluginRef) -> Option<Live> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let loaded = self.loaded.get(&plugin.digest)?;
        let mut store = self.new_store(plugin).ok()?;
        arm_deadline(&mut store, plugin.limits.timeout_ms);
        let bound = instantiate(&loaded.pre, &mut store).ok()?;
        Some(Live {
            store,
            bound: Some(bound),
            calls: 0,
            initialized: false,
            _slot: slot,
        })
    }

    /// Runs `f` on an instance of `plugin` (fresh or warm per its policy), with the call's
    /// grants, and collects what the call produced.
    pub(crate) async fn run<O, F>(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        f: F,
    ) -> CallReport<O>
    where
        O: Send + 'static,
        F: FnOnce(&mut Live, &Limits, &mut Timings) -> Result<O, CallError> + Send + 'static,
    {
        let started = Instant::now();
        let mut timings = Timings::default();
        let call_id = if ctx.call_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            ctx.call_id.clone()
        };
        let fail = |error: CallError, timings: Timings, load: LoadSource| {
            CallReport::failed(call_id.clone(), error, timings, load)
        };

        let load_started = Instant::now();
        let loaded = match self.loaded.get(&plugin.digest) {
            // In memory: no need for a blocking thread.
            Some(l) => (l, LoadSource::Memory),
            None => {
                let host = self.clone();
                let (digest, world) = (plugin.digest.clone(), plugin.world);
                match tokio::task::spawn_blocking(move || host.load(&digest, world)).await {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => return fail(e, timings, LoadSource::Memory),
                    Err(e) => return fail(CallError::host(e), timings, LoadSource::Memory),
                }
            }
        };
        let (loaded, load) = loaded;
        timings.load_us = load_started.elapsed().as_micros() as u64;

        let queued = Instant::now();
        let _running = self
            .plugin_semaphore(plugin)
            .acquire_owned()
            .await
            .expect("never closed");
        let warm_key = (plugin.key.clone(), ctx.tenant.clone());
        let standby = (plugin.limits.instance_policy == InstancePolicy::Fresh
            && self.settings.standby_instances > 0)
            .then(|| standby_fingerprint(plugin));
        let reused = if plugin.limits.instance_policy == InstancePolicy::Warm {
            crate::locks::lock(&self.warm)
                .get_mut(&warm_key)
                .and_then(|v| v.pop())
                .map(|l| (l, InstanceUse::WarmReused))
        } else if let Some(fingerprint) = &standby {
            self.take_standby(&plugin.key, fingerprint)
                .map(|l| (l, InstanceUse::FreshStandby))
        } else {
            None
        };
        let instance_use;
        let live = match reused {
            Some((l, how)) => {
                instance_use = how;
                Ok(l)
            }
            None => {
                instance_use = if plugin.limits.instance_policy == InstancePolicy::Warm {
                    InstanceUse::WarmNew
                } else {
                    InstanceUse::Fresh
                };
                let slot = self.slot().await;
                self.new_store(plugin).map(|store| (store, slot))
            }
            .map(|(store, slot)| Live {
                store,
                bound: None,
                calls: 0,
                initialized: false,
                _slot: slot,
            }),
        };
        timings.queued_us = queued.elapsed().as_micros() as u64;
        let mut live = match live {
            Ok(l) => l,
            Err(e) => return fail(e, timings, load),
        };

        let limits = plugin.limits.clone();
        let output_cap = limits.output_bytes() as usize;
        let call_state = CallState {
            parameters: ctx.parameters,
            grant: ctx.storage,
            output_cap,
            stop: ctx.stop,
            checkpoint_prefix: ctx.checkpoint_prefix,
            ..Default::default()
        };
        let joined = tokio::task::spawn_blocking(move || {
            live.store.data_mut().begin_call(call_state);
            let mut timings = timings;
            let mut result = Ok(());
            if live.bound.is_none() {
                let t = Instant::now();
                arm_deadline(&mut live.store, limits.timeout_ms);
                result = instantiate(&loaded.pre, &mut live.store)
                    .map(|b| live.bound = Some(b))
                    .map_err(|e| classify(e, &live.store, &limits, t));
                timings.instantiate_us = t.elapsed().as_micros() as u64;
            }
            let output = result.and_then(|()| f(&mut live, &limits, &mut timings));
            live.calls += 1;
            (live, output, timings)
        })
        .await;
        let (mut live, output, mut timings) = match joined {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    CallError::host(format!("the call's thread failed: {e}")),
                    Timings::default(),
                    load,
                );
            }
        };

        let state = live.store.data_mut();
        let call = std::mem::take(&mut state.call);
        let report_stdout = state.stdout.take();
        let report_stderr = state.stderr.take();
        let healthy = output.is_ok() || matches!(output, Err(CallError::Guest { .. }));
        let spent = if plugin.limits.instance_policy == InstancePolicy::Warm
            && healthy
            && live.calls < plugin.limits.recycle_after_calls
            && live.store.data().limiter.memory_now <= plugin.limits.recycle_memory_mb * MIB
        {
            let mut warm = crate::locks::lock(&self.warm);
            let pool = warm.entry(warm_key).or_default();
            if pool.len() < plugin.limits.warm_instances as usize {
                pool.push(live);
                None
            } else {
                Some(live)
            }
        } else {
            Some(live)
        };
        // The call's instance and its pool slot go before a standby is made: with the pool
        // full but for this slot, the standby must find it free.
        drop(spent);
        if let Some(fingerprint) = standby {
            // After the call, so that making the next instance does not compete with it.
            self.refill_standby(plugin, fingerprint);
        }
        timings.total_us = started.elapsed().as_micros() as u64;
        let (output, error) = match output {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        CallReport {
            call_id,
            output,
            error,
            logs: call.logs,
            logs_dropped: call.logs_dropped,
            stdout: report_stdout,
            stderr: report_stderr,
            metrics: call.metrics,
            timings,
            instance: instance_use,
            load,
        }
    }
}

/// What a standby instance depends on: the code, the model directory and the limits (memory,
/// determinism) its store was made with.
fn standby_fingerprint(plugin: &PluginRef) -> String {
    format!(
        "{}|{:?}|{:?}",
        plugin.digest, plugin.model_dir, plugin.limits
    )
}

/// The wall clock of deterministic plugins: always the Unix epoch.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

fn instantiate(pre: &Pre, store: &mut Store<State>) -> wasmtime::Result<Bound> {
    Ok(match pre {
        Pre::Inference(p) => Bound::Inference(p.instantiate(store)?),
        Pre::Workflow(p) => Bound::Workflow(p.instantiate(store)?),
        Pre::Training(p) => Bound::Training(p.instantiate(store)?),
    })
}

fn ticks(timeout_ms: u64) -> u64 {
    timeout_ms.div_ceil(TICK.as_millis() as u64) + 1
}

/// Starts the deadline of what runs next in `store` (a call, or an instantiation): wasm code
/// is interrupted by the epoch, and waiting host calls end at [`State::deadline`].
pub(crate) fn arm_deadline(store: &mut Store<State>, timeout_ms: u64) {
    store.set_epoch_deadline(ticks(timeout_ms));
    store.data_mut().deadline = Instant::now() + Duration::from_millis(timeout_ms);
}

/// A wasmtime error as the call's typed error.
pub(crate) fn classify(
    e: wasmtime::Error,
    store: &Store<State>,
    limits: &Limits,
    started: Instant,
) -> CallError {
    if let Some((kind, observed)) = store.data().limiter.hit {
        return match kind {
            LimitKind::Memory => CallError::Limit {
                kind,
                limit: limits.memory_mb,
                observed: observed.div_ceil(MIB),
                unit: "MiB".into(),
                hint: "raise limits.memory_mb in the plugin's manifest (up to the gateway's ATELIER_PLUGIN_MAX_MEMORY_MB)".into(),
            },
            _ => CallError::Limit {
                kind,
                limit: 200_000,
                observed,
                unit: "table elements".into(),
                hint: "the table limit is fixed; a plugin needing more is unusual (function pointers)".into(),
            },
        };
    }
    let timeout = |waiting: Option<&str>| CallError::Limit {
        kind: LimitKind::Timeout,
        limit: limits.timeout_ms,
        observed: started.elapsed().as_millis() as u64,
        unit: "ms".into(),
        hint: format!(
            "raise limits.timeout_ms in the plugin's manifest (up to the gateway's ATELIER_PLUGIN_MAX_TIMEOUT_MS){}",
            waiting.map_or(String::new(), |w| format!(
                "; the plugin was waiting in the host call {w}"
            ))
        ),
    };
    if let Some(d) = e.downcast_ref::<crate::waits::DeadlinePassed>() {
        return timeout(Some(d.import));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => timeout(None),
        Some(Trap::StackOverflow) => CallError::Limit {
            kind: LimitKind::Stack,
            limit: 0,
            observed: 0,
            unit: "KiB".into(),
            hint: "the call recursed past the wasm stack (ATELIER_PLUGIN_MAX_WASM_STACK_KB); look for unbounded recursion".into(),
        },
        _ => CallError::Trap { message: format!("{e:?}") },
    }
}

fn check_header(bytes: &[u8]) -> Result<(), RegisterError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(RegisterError::NotComponent(
            "not a WebAssembly file (it does not start with \\0asm); upload the .wasm component"
                .into(),
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(RegisterError::NotComponent(
            "this is a core WebAssembly module, not a component; build with componentize-py or cargo-component, or wrap it with `wasm-tools component new`".into(),
        )),
        _ => Err(RegisterError::NotComponent(
            "an unsupported WebAssembly version or layer (components of the component model are expected)".into(),
        )),
    }
}

fn check_types(
    engine: &Engine,
    component: &Component,
    expected: Option<World>,
) -> Result<(World, Vec<String>, Vec<String>), RegisterError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let world = match (world::detect(&exports), expected) {
        (Some(w), Some(e)) if w != e => {
            return Err(RegisterError::UnknownWorld(format!(
                "the manifest says world {e} but the component exports {} ({w} world)",
                exports.join(", ")
            )));
        }
        (Some(w), _) => w,
        (None, _) => {
            return Err(RegisterError::UnknownWorld(format!(
                "the component targets none of Atelier's worlds: it exports [{}], and a plugin exports one of {} (package {} {})",
                exports.join(", "),
                World::ALL
                    .iter()
                    .map(|w| format!("{}/{}@0.1.x ({w})", world::PACKAGE, w.export()))
                    .collect::<Vec<_>>()
                    .join(", "),
                world::PACKAGE,
                world::VERSION
            )));
        }
    };
    let refused = world::refused_imports(world, &imports);
    if !refused.is_empty() {
        return Err(RegisterError::ForbiddenImports(format!(
            "the component imports what Atelier does not grant to a {world} plugin: {}",
            refused.join("; ")
        )));
    }
    Ok((world, exports, imports))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
