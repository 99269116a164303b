//! The call path ([`Host::run`]): load the plugin, wait for its concurrency permit, take an
//! instance (warm, standby, or a new store in a free pool slot), then on a blocking thread
//! instantiate if new and run the world's call under the deadline; afterwards a healthy warm
//! instance goes back to its pool and a fresh plugin's standby instances are topped up. The
//! deadline ([`arm_deadline`]) and what a trap means ([`classify`]) live here too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use super::engine::{TICK, instantiate};
use super::pool::{Live, standby_fingerprint};
use super::{CallContext, Host, InstanceUse, LoadSource, MIB, PluginRef};
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
}

impl Host {
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
        let standby = (plugin.limits.instance_policy == InstancePolicy::Fresh
            && self.settings.standby_instances > 0)
            .then(|| standby_fingerprint(plugin));
        let reused = if plugin.limits.instance_policy == InstancePolicy::Warm {
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
                let slot = self.pool.slot().await;
                self.engine
                    .store(plugin)
                    .map(|store| Live::new(store, None, slot))
            }
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
            self.pool
                .keep_warm(warm_key, live, plugin.limits.warm_instances as usize)
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

    /// Tops up the plugin's standby instances on a blocking thread. Only a free pool slot is
    /// used: a standby never makes a call wait, and calls evict standbys when slots run out.
    fn refill_standby(self: &Arc<Self>, plugin: &PluginRef, fingerprint: String) {
        let want = self.settings.standby_instances as usize;
        if !self.pool.begin_refill(&plugin.key, &fingerprint, want) {
            return;
        }
        let host = self.clone();
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                let made = host.make_standby(&plugin);
                if !host.pool.refilled(&plugin.key, &fingerprint, want, made) {
                    return;
                }
            }
        });
    }

    fn make_standby(&self, plugin: &PluginRef) -> Option<Live> {
        let slot = self.pool.free_slot()?;
        let loaded = self.cache.get(&plugin.digest)?;
        let mut store = self.engine.store(plugin).ok()?;
        arm_deadline(&mut store, plugin.limits.timeout_ms);
        let bound = instantiate(&loaded.pre, &mut store).ok()?;
        Some(Live::new(store, Some(bound), slot))
    }
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
