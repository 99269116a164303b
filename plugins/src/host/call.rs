//! The call path ([`Host::run`]): load the plugin, wait for its concurrency permit, take an
//! instance (warm, standby, or a new store in a free pool slot), then in one blocking step
//! ([`Pending::finish`]: on a blocking-pool thread, or in place on the worker for a warm
//! instance when the caller asks, [`crate::CallContext::inline`]) instantiate if new, run the
//! world's call under the deadline, and settle: a healthy warm instance goes back to its pool,
//! the permit is released and a fresh plugin's standby instances are topped up. The deadline
//! ([`arm_deadline`]: the plugin's own timeout or the caller's deadline, whichever comes
//! first) and what a trap means ([`classify`]) live here too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Store, Trap};

use super::engine::TICK;
use super::pool::{Live, Vacant, standby_fingerprint};
use super::{CallContext, Host, InstanceUse, LoadSource, MIB, PluginRef};
use crate::bindings::types::{Error as GuestError, ErrorKind};
use crate::bindings::{Bindings, Prepared};
use crate::limits::{CallError, InstancePolicy, LimitKind, Limits};
use crate::state::{CallState, State};

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

    /// The report of a call refused before it ran.
    pub(crate) fn refused(error: CallError) -> Self {
        Self::failed(
            uuid::Uuid::now_v7().to_string(),
            error,
            Timings::default(),
            LoadSource::Memory,
        )
    }
}

/// What a call of world `W` runs with: the instance's exports and store, the plugin's limits
/// and the call's timings. Each export is called through [`Call::export`].
pub(crate) struct Call<'a, W: Bindings> {
    pub exports: &'a W::Exports,
    pub store: &'a mut Store<State>,
    pub limits: &'a Limits,
    pub timings: &'a mut Timings,
    /// Whether the instance has run its `init` (inference processors, once per instance).
    pub initialized: &'a mut bool,
}

impl<W: Bindings> Call<'_, W> {
    /// Calls one export with the deadline armed, its time recorded under `name`, a trap
    /// classified and the output's size (`size`) checked against the limit.
    pub fn export<T>(
        &mut self,
        name: &str,
        call: impl FnOnce(&W::Exports, &mut Store<State>) -> wasmtime::Result<Result<T, GuestError>>,
        size: impl Fn(&T) -> usize,
    ) -> Result<T, CallError> {
        arm_deadline(self.store, self.limits.timeout_ms);
        let t = Instant::now();
        let result = call(self.exports, self.store);
        self.timings
            .calls
            .push((name.to_string(), t.elapsed().as_micros() as u64));
        let value = result
            .map_err(|e| classify(e, self.store, self.limits, t))?
            .map_err(guest_error)?;
        let observed = size(&value) as u64;
        if observed > self.limits.output_bytes() {
            return Err(CallError::Limit {
                kind: LimitKind::Output,
                limit: self.limits.output_kb,
                observed: observed.div_ceil(1024),
                unit: "KiB".into(),
                hint: "raise limits.output_kb in the plugin's manifest (up to the gateway's ATELIER_PLUGIN_MAX_OUTPUT_KB)".into(),
            });
        }
        Ok(value)
    }
}

fn guest_error(e: GuestError) -> CallError {
    let kind = match e.kind {
        ErrorKind::InvalidInput => "invalid-input",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::NotReady => "not-ready",
        ErrorKind::Failed => "failed",
        ErrorKind::Cancelled => "cancelled",
    };
    CallError::Guest {
        kind: kind.into(),
        message: e.message,
    }
}

/// A call's instance: live (warm or standby), or a store to make it in.
enum Instance {
    Live(Live),
    Vacant(Vacant),
}

impl Instance {
    fn store_mut(&mut self) -> &mut Store<State> {
        match self {
            Instance::Live(l) => &mut l.store,
            Instance::Vacant(v) => &mut v.store,
        }
    }
}

/// `prepared` instantiated in `vacant`'s store under the deadline; on failure the store comes
/// back (what the guest wrote before failing goes to the report).
fn instantiate<W: Bindings>(
    prepared: &Prepared,
    mut vacant: Vacant,
    limits: &Limits,
    timings: &mut Timings,
) -> Result<Live, (Vacant, CallError)> {
    let Some(pre) = W::prepared(prepared) else {
        let e = CallError::host(format!(
            "the plugin's code is a {} component, not a {}",
            prepared.world(),
            W::WORLD
        ));
        return Err((vacant, e));
    };
    let t = Instant::now();
    arm_deadline(&mut vacant.store, limits.timeout_ms);
    let made = W::instantiate(pre, &mut vacant.store);
    timings.instantiate_us = t.elapsed().as_micros() as u64;
    match made {
        Ok(exports) => Ok(vacant.fill(W::bind(exports))),
        Err(e) => {
            let e = classify(e, &vacant.store, limits, t);
            Err((vacant, e))
        }
    }
}

/// A call with its instance and permit in hand: what [`Pending::finish`] runs and settles
/// on whichever thread runs it.
struct Pending<W, O, F> {
    instance: Instance,
    loaded: Arc<Prepared>,
    call_state: CallState,
    f: F,
    timings: Timings,
    /// The plugin's concurrency permit, released once the instance is settled.
    _running: OwnedSemaphorePermit,
    warm_key: (String, String),
    standby: Option<String>,
    call_id: String,
    instance_use: InstanceUse,
    load: LoadSource,
    started: Instant,
    /// Fresh or warm: the plugin's, or a training run's (always fresh).
    policy: InstancePolicy,
    world: std::marker::PhantomData<fn() -> (W, O)>,
}

impl<W, O, F> Pending<W, O, F>
where
    W: Bindings,
    O: Send + 'static,
    F: FnOnce(&mut Call<'_, W>) -> Result<O, CallError> + Send + 'static,
{
    /// Instantiates if new and runs the call (blocking), then settles the instance: a healthy
    /// warm one back to its pool, anything else dropped with its slot, then the standby
    /// instances topped up.
    fn finish(self, host: &Arc<Host>, plugin: &PluginRef) -> CallReport<O> {
        let Pending {
            mut instance,
            loaded,
            call_state,
            f,
            mut timings,
            _running,
            warm_key,
            standby,
            call_id,
            instance_use,
            load,
            started,
            policy,
            world: _,
        } = self;
        let limits = &plugin.limits;
        instance.store_mut().data_mut().begin_call(call_state);
        let (mut instance, output) = match instance {
            Instance::Live(live) => run_live::<W, O, F>(live, limits, &mut timings, f),
            Instance::Vacant(vacant) => {
                match instantiate::<W>(&loaded, vacant, limits, &mut timings) {
                    Ok(live) => run_live::<W, O, F>(live, limits, &mut timings, f),
                    Err((vacant, e)) => (Instance::Vacant(vacant), Err(e)),
                }
            }
        };

        let state = instance.store_mut().data_mut();
        let call = std::mem::take(&mut state.call);
        let report_stdout = state.stdout.take();
        let report_stderr = state.stderr.take();
        let healthy = output.is_ok() || matches!(output, Err(CallError::Guest { .. }));
        let spent = match instance {
            Instance::Live(live)
                if policy == InstancePolicy::Warm
                    && healthy
                    && live.calls < limits.recycle_after_calls
                    && live.store.data().limiter.memory_now <= limits.recycle_memory_mb * MIB =>
            {
                host.pool
                    .keep_warm(warm_key, live, limits.warm_instances as usize)
                    .map(Instance::Live)
            }
            other => Some(other),
        };
        // The call's instance and its pool slot go before a standby is made: with the pool
        // full but for this slot, the standby must find it free.
        drop(spent);
        if let Some(fingerprint) = standby {
            // After the call, so that making the next instance does not compete with it.
            host.refill_standby::<W>(plugin, fingerprint);
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

/// `f` on a live instance, counted as one of its calls.
fn run_live<W, O, F>(
    mut live: Live,
    limits: &Limits,
    timings: &mut Timings,
    f: F,
) -> (Instance, Result<O, CallError>)
where
    W: Bindings,
    F: FnOnce(&mut Call<'_, W>) -> Result<O, CallError>,
{
    let output = match W::exports(&live.bound) {
        Some(exports) => f(&mut Call {
            exports,
            store: &mut live.store,
            limits,
            timings,
            initialized: &mut live.initialized,
        }),
        None => Err(CallError::host(format!(
            "a kept instance of the plugin is not a {} instance",
            W::WORLD
        ))),
    };
    live.calls += 1;
    (Instance::Live(live), output)
}

/// Whether the current runtime can run blocking code in place (`block_in_place` panics on a
/// current-thread runtime).
fn multi_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

impl Host {
    /// Runs `f` on an instance of `plugin` (fresh or warm per its policy), with the call's
    /// grants, and collects what the call produced. A plugin of another world than `W` is
    /// refused before anything is loaded.
    pub(crate) async fn run<W, O, F>(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        f: F,
    ) -> CallReport<O>
    where
        W: Bindings,
        O: Send + 'static,
        F: FnOnce(&mut Call<'_, W>) -> Result<O, CallError> + Send + 'static,
    {
        self.run_as(plugin, ctx, plugin.limits.instance_policy, f)
            .await
    }

    /// [`Host::run`] with the instance policy `policy` instead of the plugin's (training runs
    /// always take a fresh instance).
    pub(crate) async fn run_as<W, O, F>(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        policy: InstancePolicy,
        f: F,
    ) -> CallReport<O>
    where
        W: Bindings,
        O: Send + 'static,
        F: FnOnce(&mut Call<'_, W>) -> Result<O, CallError> + Send + 'static,
    {
        if plugin.world != W::WORLD {
            return CallReport::refused(CallError::bad_input(format!(
                "the plugin is a {} plugin, not a {}",
                plugin.world,
                W::WORLD
            )));
        }
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
        let loaded = match self.cache.get(&plugin.digest) {
            // In memory: no need for a blocking thread.
            Some(l) => (l, LoadSource::Memory),
            None => {
                let host = self.clone();
                let (digest, world) = (plugin.digest.clone(), plugin.world);
                match tokio::task::spawn_blocking(move || {
                    host.cache.load(&host.engine, &digest, world)
                })
                .await
                {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => return fail(e, timings, LoadSource::Memory),
                    Err(e) => return fail(CallError::host(e), timings, LoadSource::Memory),
                }
            }
        };
        let (loaded, load) = loaded;
        timings.load_us = load_started.elapsed().as_micros() as u64;

        let queued = Instant::now();
        let _running = self.pool.running(plugin).await;
        let warm_key = (plugin.key.clone(), ctx.tenant.clone());
        let standby = (policy == InstancePolicy::Fresh && self.settings.standby_instances > 0)
            .then(|| standby_fingerprint(plugin));
        let reused = if policy == InstancePolicy::Warm {
            self.pool
                .take_warm(&warm_key)
                .map(|l| (l, InstanceUse::WarmReused))
        } else if let Some(fingerprint) = &standby {
            self.pool
                .take_standby(&plugin.key, fingerprint)
                .map(|l| (l, InstanceUse::FreshStandby))
        } else {
            None
        };
        let instance_use;
        let instance = match reused {
            Some((l, how)) => {
                instance_use = how;
                Ok(Instance::Live(l))
            }
            None => {
                instance_use = if policy == InstancePolicy::Warm {
                    InstanceUse::WarmNew
                } else {
                    InstanceUse::Fresh
                };
                let slot = self.pool.slot().await;
                self.engine
                    .store(plugin)
                    .map(|store| Instance::Vacant(Vacant::new(store, slot)))
            }
        };
        timings.queued_us = queued.elapsed().as_micros() as u64;
        let instance = match instance {
            Ok(i) => i,
            Err(e) => return fail(e, timings, load),
        };

        let call_state = CallState {
            parameters: ctx.parameters,
            grant: ctx.storage,
            output_cap: plugin.limits.output_bytes() as usize,
            stop: ctx.stop,
            checkpoint_prefix: ctx.checkpoint_prefix,
            deadline: ctx.deadline,
            ..Default::default()
        };
        let inline = ctx.inline && matches!(instance, Instance::Live(_)) && multi_thread();
        let pending = Pending::<W, O, F> {
            instance,
            loaded,
            call_state,
            f,
            timings,
            _running,
            warm_key,
            standby,
            call_id: call_id.clone(),
            instance_use,
            load,
            started,
            policy,
            world: std::marker::PhantomData,
        };
        if inline {
            // On this worker thread: the runtime hands the worker's other tasks to another
            // thread meanwhile, and nothing of this task runs until the call is settled.
            return tokio::task::block_in_place(|| pending.finish(self, plugin));
        }
        // On a blocking thread that settles the call too (the instance back to its pool, the
        // permit released): a caller that goes away meanwhile leaks nothing and lets no other
        // call past the plugin's concurrency while this one still runs.
        let host = self.clone();
        let for_thread = plugin.clone();
        match tokio::task::spawn_blocking(move || pending.finish(&host, &for_thread)).await {
            Ok(report) => report,
            Err(e) => fail(
                CallError::host(format!("the call's thread failed: {e}")),
                Timings::default(),
                load,
            ),
        }
    }

    /// Tops up the plugin's standby instances on a blocking thread. Only a free pool slot is
    /// used: a standby never makes a call wait, and calls evict standbys when slots run out.
    fn refill_standby<W: Bindings>(self: &Arc<Self>, plugin: &PluginRef, fingerprint: String) {
        let want = self.settings.standby_instances as usize;
        if !self.pool.begin_refill(&plugin.key, &fingerprint, want) {
            return;
        }
        let host = self.clone();
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                let made = host.make_standby::<W>(&plugin);
                if !host.pool.refilled(&plugin.key, &fingerprint, want, made) {
                    return;
                }
            }
        });
    }

    fn make_standby<W: Bindings>(&self, plugin: &PluginRef) -> Option<Live> {
        let slot = self.pool.free_slot()?;
        let prepared = self.cache.get(&plugin.digest)?;
        let mut store = self.engine.store(plugin).ok()?;
        arm_deadline(&mut store, plugin.limits.timeout_ms);
        let exports = W::instantiate(W::prepared(&prepared)?, &mut store).ok()?;
        Some(Vacant::new(store, slot).fill(W::bind(exports)))
    }
}

/// Epoch ticks to wait for `left` to pass (one more: the next tick may come at once).
fn ticks(left: Duration) -> u64 {
    (left.as_micros().div_ceil(TICK.as_micros()) as u64).saturating_add(1)
}

/// Starts the deadline of what runs next in `store` (a call, or an instantiation): `timeout_ms`
/// from now, or the caller's deadline ([`CallState::deadline`]) when that comes first. Wasm
/// code is interrupted by the epoch, and waiting host calls end at [`State::deadline`].
pub(crate) fn arm_deadline(store: &mut Store<State>, timeout_ms: u64) {
    let now = Instant::now();
    let own = now + Duration::from_millis(timeout_ms);
    let until = store.data().call.deadline.map_or(own, |d| d.min(own));
    store.set_epoch_deadline(ticks(until.saturating_duration_since(now)));
    store.data_mut().deadline = until;
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
