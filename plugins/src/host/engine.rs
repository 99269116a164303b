//! The engine: wasmtime's `Engine` (component model, a pooling allocator sized by
//! `HostSettings::total_instances`, epoch interruption ticked by a thread, a memory
//! reservation equal to the largest memory limit), one `Linker` per world, linking a
//! component to its world, and the `Store` each instance lives in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::WasiCtxBuilder;

use super::{MIB, PluginRef};
use crate::bindings::Prepared;
use crate::limits::{CallError, HostSettings};
use crate::state::{CallState, Capture, Limiter, State};
use crate::world::World;

/// Epoch tick: deadlines are met to within about this much.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// The engine, its linkers and the thread that ticks its epoch (stopped when this drops).
pub(super) struct Runtime {
    engine: Engine,
    /// What a compiled form depends on: the engine's compatibility hash and the memory size.
    hash: String,
    linkers: HashMap<World, Linker<State>>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
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

impl Runtime {
    pub fn new(settings: &HostSettings) -> anyhow::Result<Runtime> {
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
        let hash = hex::encode(&hasher.0.finalize()[..8]);

        let mut linkers = HashMap::new();
        for world in World::ALL {
            let mut linker: Linker<State> = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            // The imports a guest can wait in, bounded by the call's deadline.
            crate::waits::link(&mut linker)?;
            crate::bindings::add_to_linker(world, &mut linker)?;
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
        Ok(Runtime {
            engine,
            hash,
            linkers,
            stop_ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Names the compiled forms this engine can load (`<digest>-<hash>.cwasm`).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Links `component` against `world`'s imports and type-checks its exports: what
    /// instantiating it later needs, done once.
    pub fn pre(&self, world: World, component: &Component) -> anyhow::Result<Prepared> {
        let linker = self
            .linkers
            .get(&world)
            .ok_or_else(|| anyhow::anyhow!("no linker for the {world} world"))?;
        let instance_pre = linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!("the component does not link against the {world} world: {e:#}")
        })?;
        Prepared::new(world, instance_pre)
            .map_err(|e| anyhow::anyhow!("its exports do not match the {world} world: {e:#}"))
    }

    /// A store for one instance of `plugin`: nothing from the host but its model directory
    /// (read-only), stdout and stderr captured, memory and tables limited, the epoch deadline
    /// a trap.
    pub fn store(&self, plugin: &PluginRef) -> Result<Store<State>, CallError> {
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
