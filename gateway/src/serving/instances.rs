//! The instances of a model version that runs on a container or process engine (the
//! seed's custom engine contract, spec/inference.md §2.5, §2.7, §3.2): launched through the
//! backend ([`Backend::launch_engine`]), each watched by a supervisor task that runs its
//! probes and keeps the pool's rotation.
//!
//! ```text
//! launch ─► row (service_instances) ─► handle ─► STARTING: startup probe every period
//!    │  ok ──► READY (in the rotation) ◄──readiness ok── NOT_READY (out of it)
//!    │  failures ≥ max while the service deploys ──► the service is ABNORMAL
//!    │  failures ≥ max later, liveness failures ≥ max, or its processes exited
//!    └──────────────────────────────────────────────► RESTARTING: stopped, a new one
//! ```
//!
//! A call goes to a READY instance, in turn. A change of an instance's readiness asks the
//! service to re-evaluate RUNNING / ALARM. An instance deleted through the API is replaced
//! by a new one. Every instance's handle is in the store from the moment it exists, so a
//! restarted gateway re-attaches to those that still run ([`Pool::start`] with the rows),
//! and a stop removes them all ([`stop_recorded`]).
//!
//! A call holds a [`Lease`] on the instance it goes to ([`Pool::lease`]). Retiring a pool
//! ([`Pool::retire_draining`]: an update's swap, a stop) takes its instances out of the
//! rotation at once, waits for the calls in flight (bounded), then stops them; an
//! instance that goes (retired, restarted, replaced) fires its leases' [`Lease::gone`] at
//! once, which ends the WebSockets through it.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use atelier_inference::config::{Health, HealthCheck};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::{Backend, Endpoint, EngineSpec, Handle, Observed, StopMode};
use crate::store::Store;
use crate::store::service_instances as rows;

/// A probe's default period, timeout and failures when the model's config names none: the
/// instance must answer HTTP at all (any status) before it takes calls.
const DEFAULT_PERIOD: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Restarts back off from the period up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long an instance gets to stop before it is killed (the seed: a service with health
/// checks stops within 3 minutes; the runtime escalates after its own grace).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One health check (spec/inference.md §2.5).
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    /// Consecutive failures that count (startup: the service is ABNORMAL, or the instance
    /// restarts; liveness: it restarts; readiness: it leaves the rotation).
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `GET path` answers 200-399.
    Http { path: String },
    /// `sh -c command` inside the instance exits 0.
    Exec { command: String },
    /// An HTTP server answers at all (any status): the check without a health setting.
    Answers,
}

/// An instance's checks: the version's `health_checks` where it sets any, each probe on its
/// own; otherwise the model's `config.json` `health` (Table 9-15), the one check serving as
/// startup, readiness and liveness probe, as the seed's form sets them alike. Without
/// either, an instance takes calls once its server answers HTTP, and is restarted only
/// when its processes exit.
#[derive(Debug, Clone, PartialEq)]
pub struct Probes {
    pub startup: Check,
    pub readiness: Option<Check>,
    pub liveness: Option<Check>,
}

impl Probes {
    pub fn of(health: Option<&Health>) -> Probes {
        match health {
            Some(h) => Probes::each(Some(h), Some(h), Some(h)),
            None => Probes::each(None, None, None),
        }
    }

    /// Probes set one by one (a model version's `health_checks`). Without a startup probe
    /// the seed counts startup a success; here the instance must still answer HTTP (any
    /// status) before it takes calls, until the deploy timeout, since a large model may
    /// load for minutes.
    pub fn each(
        startup: Option<&Health>,
        readiness: Option<&Health>,
        liveness: Option<&Health>,
    ) -> Probes {
        Probes {
            startup: startup.map(Check::of).unwrap_or(Check {
                kind: CheckKind::Answers,
                delay: Duration::ZERO,
                period: DEFAULT_PERIOD,
                timeout: DEFAULT_TIMEOUT,
                failures: u32::MAX,
            }),
            readiness: readiness.map(Check::of),
            liveness: liveness.map(Check::of),
        }
    }
}

impl Check {
    fn of(h: &Health) -> Check {
        Check {
            kind: match &h.check {
                HealthCheck::Http { url, .. } => CheckKind::Http { path: url.clone() },
                HealthCheck::Exec { command } => CheckKind::Exec {
                    command: command.clone(),
                },
            },
            delay: Duration::from_secs(u64::from(h.initial_delay_seconds.unwrap_or(0))),
            period: Duration::from_secs(u64::from(h.period_seconds.max(1))),
            timeout: match h.timeout_seconds {
                Some(t) if t > 0 => Duration::from_secs(u64::from(t)),
                _ => DEFAULT_TIMEOUT,
            },
            failures: h.failure_threshold.max(1),
        }
    }
}

/// Where an instance is in its life, as the instances API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Starting,
    Ready,
    NotReady,
    Restarting,
    Failed,
}

/// An instance as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub model: String,
    pub version: String,
    pub engine: &'static str,
    pub phase: Phase,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an instance's first start went (what a deploy waits for).
#[derive(Debug, Clone, PartialEq)]
enum Startup {
    Pending,
    Up,
    /// Its startup checks failed the most times allowed.
    Abnormal(String),
    /// It could not be launched at all.
    Fatal(String),
}

/// Why a pool did not come up.
#[derive(Debug, Clone, PartialEq)]
pub enum StartError {
    /// Startup checks failed: the service is ABNORMAL.
    Abnormal(String),
    /// Launching failed: the service FAILED.
    Failed(String),
}

/// What every supervisor of one version needs.
pub struct Env {
    pub backend: Arc<dyn Backend>,
    pub store: Store,
    pub service_id: String,
    pub version_id: String,
    /// `model <name> <version>`, for messages.
    pub label: String,
    pub model: String,
    pub version: String,
    /// The launch; each instance gets its own id.
    pub engine: EngineSpec,
    pub probes: Probes,
    /// Called when an instance's readiness changes (the service re-evaluates RUNNING and
    /// ALARM).
    pub on_change: Arc<dyn Fn() + Send + Sync>,
    /// The service's log, which receives what the instances' servers print.
    pub log: super::logs::ServiceLog,
}

/// One instance's place in the pool: which instance fills it now and how it is.
struct Slot {
    index: usize,
    state: Mutex<SlotState>,
    ready: AtomicBool,
    /// Asked to replace its instance (deleted through the API).
    replace: Notify,
    startup: watch::Sender<Startup>,
}

#[derive(Clone)]
struct SlotState {
    instance_id: String,
    endpoint: Option<Endpoint>,
    /// The instance as calls see it, while it can take them.
    live: Option<Arc<Live>>,
    phase: Phase,
    restarts: u32,
    error: Option<String>,
}

/// An instance as calls see it: where it listens, the calls in flight to it, and whether it
/// has gone.
struct Live {
    endpoint: Endpoint,
    calls: AtomicUsize,
    quiet: Notify,
    gone: CancellationToken,
    /// What the caller keeps with the instance (the API's shared connections to it).
    attached: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Live {
    fn new(endpoint: Endpoint) -> Arc<Live> {
        Arc::new(Live {
            endpoint,
            calls: AtomicUsize::new(0),
            quiet: Notify::new(),
            gone: CancellationToken::new(),
            attached: OnceLock::new(),
        })
    }

    /// Returns when no call is in flight.
    async fn quiet(&self) {
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.calls.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A call's hold on an instance ([`Pool::lease`]): counted in flight until dropped (a
/// retirement waits for it), unless [`Lease::detach`]ed.
pub struct Lease {
    live: Arc<Live>,
    counted: bool,
}

impl Lease {
    pub fn endpoint(&self) -> &Endpoint {
        &self.live.endpoint
    }

    /// Fires when the instance goes: retired (as it leaves the rotation, before the drain),
    /// restarted or replaced.
    pub fn gone(&self) -> CancellationToken {
        self.live.gone.child_token()
    }

    /// No longer counted in flight (a WebSocket, which a retirement does not wait for).
    pub fn detach(mut self) -> Lease {
        self.release();
        self
    }

    /// What the caller keeps with this instance for as long as it lives, made by `init` at
    /// the first call; `None` when another type is kept.
    pub fn attached<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<Arc<T>> {
        self.live
            .attached
            .get_or_init(|| Arc::new(init()))
            .clone()
            .downcast()
            .ok()
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.counted) && self.live.calls.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.live.quiet.notify_waiters();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// The instances of one version of a service.
pub struct Pool {
    env: Arc<Env>,
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    /// Being retired: out of the rotation.
    retiring: AtomicBool,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Pool {
    /// Starts `count` supervisors, each adopting the recorded instance of its slot when
    /// there is one that still runs (a gateway restart), else launching a new one. Returns
    /// at once: [`Pool::wait_started`] waits for the first starts.
    pub async fn start(env: Env, count: u32, recorded: Vec<rows::InstanceRow>) -> Arc<Pool> {
        let env = Arc::new(env);
        let mut adopt: Vec<Option<(String, Handle, u32)>> = vec![None; count as usize];
        for r in recorded {
            let slot = usize::try_from(r.slot).unwrap_or(usize::MAX);
            let fits = slot < adopt.len() && adopt[slot].is_none();
            let alive = match &r.handle {
                Some(h) if fits => matches!(env.backend.poll(h).await, Observed::Running),
                _ => false,
            };
            match (alive, r.handle) {
                (true, Some(h)) => {
                    adopt[slot] = Some((r.id, h, u32::try_from(r.restarts).unwrap_or(0)));
                }
                (_, handle) => remove_instance(&env, &r.id, handle.as_ref()).await,
            }
        }
        let pool = Arc::new(Pool {
            slots: (0..count as usize)
                .map(|index| {
                    Arc::new(Slot {
                        index,
                        state: Mutex::new(SlotState {
                            instance_id: String::new(),
                            endpoint: None,
                            live: None,
                            phase: Phase::Starting,
                            restarts: 0,
                            error: None,
                        }),
                        ready: AtomicBool::new(false),
                        replace: Notify::new(),
                        startup: watch::Sender::new(Startup::Pending),
                    })
                })
                .collect(),
            env,
            next: AtomicUsize::new(0),
            retiring: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        for (slot, adopted) in pool.slots.iter().zip(adopt) {
            let (env, slot, cancel) = (pool.env.clone(), slot.clone(), pool.cancel.clone());
            pool.tasks
                .spawn(async move { supervise(env, slot, adopted, cancel).await });
        }
        pool
    }

    /// Returns when every instance passed its startup checks once, or when one cannot.
    pub async fn wait_started(&self) -> Result<(), StartError> {
        for slot in &self.slots {
            let mut rx = slot.startup.subscribe();
            let outcome = rx
                .wait_for(|s| *s != Startup::Pending)
                .await
                .map(|s| s.clone())
                .unwrap_or(Startup::Fatal("the instance's supervisor ended".into()));
            match outcome {
                Startup::Up | Startup::Pending => {}
                Startup::Abnormal(why) => return Err(StartError::Abnormal(why)),
                Startup::Fatal(why) => return Err(StartError::Failed(why)),
            }
        }
        Ok(())
    }

    /// A ready instance's endpoint, in turn; `None` when none is ready.
    pub fn pick(&self) -> Option<Endpoint> {
        self.lease().map(|l| l.endpoint().clone())
    }

    /// A ready instance, in turn, held for a call; `None` when none is ready.
    pub fn lease(&self) -> Option<Lease> {
        if self.retiring.load(Ordering::Acquire) {
            return None;
        }
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let live = (0..n)
            .map(|i| &self.slots[(start + i) % n])
            .filter(|s| s.ready.load(Ordering::Acquire))
            .find_map(|s| s.state.lock().ok()?.live.clone())?;
        live.calls.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            live,
            counted: true,
        })
    }

    /// Whether every instance is in the rotation.
    pub fn all_ready(&self) -> bool {
        self.slots.iter().all(|s| s.ready.load(Ordering::Acquire))
    }

    /// Why the pool is not all ready: the first instance's error.
    pub fn trouble(&self) -> Option<String> {
        self.slots.iter().find_map(|s| {
            let st = s.state.lock().ok()?;
            (!s.ready.load(Ordering::Acquire)).then(|| {
                format!(
                    "instance {} is {:?}{}",
                    st.instance_id,
                    st.phase,
                    st.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            })
        })
    }

    pub fn views(&self) -> Vec<InstanceView> {
        self.slots
            .iter()
            .filter_map(|s| {
                let st = s.state.lock().ok()?.clone();
                Some(InstanceView {
                    id: st.instance_id,
                    model: self.env.model.clone(),
                    version: self.env.version.clone(),
                    engine: self.env.backend.name(),
                    phase: st.phase,
                    restarts: st.restarts,
                    error: st.error,
                })
            })
            .collect()
    }

    /// Asks the instance `id` to be replaced by a new one; false when it is not here.
    pub fn replace(&self, id: &str) -> bool {
        for s in &self.slots {
            if s.state.lock().is_ok_and(|st| st.instance_id == id) {
                s.replace.notify_one();
                return true;
            }
        }
        false
    }

    /// The directories holding the instances' logs (the engine writes them: read through
    /// `confined`), by instance id.
    pub fn instance_ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter_map(|s| Some(s.state.lock().ok()?.instance_id.clone()))
            .collect()
    }

    /// Stops the supervisors (they launch nothing more); the instances keep running until
    /// [`Pool::retire`] or [`stop_recorded`] stops them.
    pub async fn halt(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Halts the supervisors, then stops and removes this pool's instances (those of
    /// another deployment of the same service, an update's, stay).
    pub async fn retire(&self) {
        self.retire_draining(Duration::ZERO).await;
    }

    /// [`Pool::retire`], after the calls in flight to its instances end (at most `drain`):
    /// the instances leave the rotation at once.
    pub async fn retire_draining(&self, drain: Duration) {
        self.retiring.store(true, Ordering::Release);
        self.halt().await;
        let lives: Vec<Arc<Live>> = self
            .slots
            .iter()
            .filter_map(|s| s.state.lock().ok()?.live.take())
            .collect();
        // WebSockets end now (a client that reconnects reaches what serves now); calls in
        // flight may finish.
        for l in &lives {
            l.gone.cancel();
        }
        let quiet = futures_util::future::join_all(lives.iter().map(|l| l.quiet()));
        if tokio::time::timeout(drain, quiet).await.is_err() {
            tracing::info!(service = %self.env.service_id, "calls still in flight to retired instances after {drain:?}; stopping them");
        }
        let ids = self.instance_ids();
        let recorded = match self.env.store.pool.acquire().await {
            Ok(mut conn) => rows::for_service(&mut conn, &self.env.service_id)
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for r in recorded.into_iter().filter(|r| ids.contains(&r.id)) {
            remove_instance(&self.env, &r.id, r.handle.as_ref()).await;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A pool that goes without a halt (an update that replaced it, a failed deploy)
        // stops its supervisors; its instances are stopped through the store.
        self.cancel.cancel();
        for s in &self.slots {
            if let Some(live) = s.state.lock().ok().and_then(|mut st| st.live.take()) {
                live.gone.cancel();
            }
        }
    }
}

/// Stops and removes every recorded instance of `service_id` (and its row): a stop, a
/// delete, a failed deploy. Halt the pools first, so nothing launches meanwhile.
pub async fn stop_recorded(backend: &Arc<dyn Backend>, store: &Store, service_id: &str) {
    let recorded = match store.pool.acquire().await {
        Ok(mut conn) => rows::for_service(&mut conn, service_id).await,
        Err(e) => Err(e),
    };
    let recorded = match recorded {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(service = %service_id, error = %e, "reading a service's instances failed");
            return;
        }
    };
    for r in recorded {
        stop_one(backend, store, &r.id, r.handle.as_ref()).await;
    }
}

async fn stop_one(backend: &Arc<dyn Backend>, store: &Store, id: &str, handle: Option<&Handle>) {
    if let Some(h) = handle
        && let Err(e) = backend.stop(h, StopMode { grace: STOP_GRACE }).await
    {
        tracing::warn!(instance = %id, error = %e, "stopping an engine instance failed");
    }
    if let Err(e) = backend.remove_engine(id).await {
        tracing::warn!(instance = %id, error = %e, "removing an engine instance failed");
    }
    if let Ok(mut conn) = store.pool.acquire().await
        && let Err(e) = rows::delete(&mut conn, id).await
    {
        tracing::warn!(instance = %id, error = %e, "removing an instance's row failed");
    }
}

async fn remove_instance(env: &Env, id: &str, handle: Option<&Handle>) {
    stop_one(&env.backend, &env.store, id, handle).await;
}

/// Records and launches a new instance in `slot`.
async fn launch(env: &Env, slot: &Slot, restarts: u32) -> Result<(String, Handle), String> {
    let id = uuid::Uuid::new_v4().to_string();
    {
        let mut conn = env.store.pool.acquire().await.map_err(|e| e.to_string())?;
        rows::insert(
            &mut conn,
            &id,
            &env.service_id,
            &env.version_id,
            slot.index,
            restarts,
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let spec = EngineSpec {
        id: id.clone(),
        ..env.engine.clone()
    };
    match env.backend.launch_engine(&spec).await {
        Ok(handle) => {
            let mut conn = env.store.pool.acquire().await.map_err(|e| e.to_string())?;
            rows::set_handle(&mut conn, &id, &handle)
                .await
                .map_err(|e| e.to_string())?;
            Ok((id, handle))
        }
        Err(e) => {
            remove_instance(env, &id, None).await;
            Err(e.to_string())
        }
    }
}

/// How a running instance's watch ended.
enum Ended {
    Cancelled,
    /// Restart it (counted), saying why.
    Restart(String),
    /// Replace it (asked through the API; not counted).
    Replace,
}

/// One slot's life: an instance adopted or launched, started, watched, restarted.
async fn supervise(
    env: Arc<Env>,
    slot: Arc<Slot>,
    mut adopted: Option<(String, Handle, u32)>,
    cancel: CancellationToken,
) {
    let mut restarts = adopted.as_ref().map_or(0, |a| a.2);
    let mut backoff = env.probes.startup.period;
    let mut first = true;
    loop {
        // Launching is not raced with the cancel: an instance launched is recorded.
        let (id, handle, fresh) = match adopted.take() {
            Some((id, handle, _)) => (id, handle, false),
            None => {
                set(&slot, |st| {
                    st.phase = if first {
                        Phase::Starting
                    } else {
                        Phase::Restarting
                    };
                    st.restarts = restarts;
                });
                match launch(&env, &slot, restarts).await {
                    Ok((id, handle)) => (id, handle, true),
                    Err(why) => {
                        let why = format!("{}: launching an instance: {why}", env.label);
                        set(&slot, |st| {
                            st.phase = Phase::Failed;
                            st.error = Some(why.clone());
                        });
                        if first {
                            slot.startup.send_replace(Startup::Fatal(why));
                            return;
                        }
                        tracing::warn!(service = %env.service_id, error = %why, "an engine instance could not be launched; trying again");
                        if wait(&cancel, backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        let endpoint = env.backend.engine_endpoint(&handle).ok();
        set(&slot, |st| {
            st.instance_id = id.clone();
            st.live = endpoint.clone().map(Live::new);
            st.endpoint = endpoint.clone();
            st.restarts = restarts;
            st.error = None;
        });
        // What its server prints goes to the service's log (an adopted instance's earlier
        // output was copied by the gateway that launched it).
        let mut output = Output {
            id: id.clone(),
            offset: if fresh { 0 } else { log_len(&env, &handle) },
        };
        // An adopted instance served before: it is watched as a running one.
        let started = if fresh {
            set(&slot, |st| st.phase = Phase::Starting);
            startup(&env, &handle, endpoint.as_ref(), &cancel, &mut output).await
        } else {
            Ok(())
        };
        let ended = match started {
            Err(None) => Ended::Cancelled,
            Err(Some(why)) => {
                let why = format!(
                    "{} instance {id}: {why}{}",
                    env.label,
                    log_tail(&env, &handle)
                );
                set(&slot, |st| {
                    st.phase = Phase::Failed;
                    st.error = Some(why.clone());
                });
                if first {
                    // The deploy decides (ABNORMAL); the instance stays for its logs until
                    // the service's instances are stopped.
                    slot.startup.send_replace(Startup::Abnormal(why));
                    return;
                }
                Ended::Restart(why)
            }
            Ok(()) => {
                first = false;
                backoff = env.probes.startup.period;
                slot.startup.send_replace(Startup::Up);
                set_ready(&env, &slot, true);
                watch_running(
                    &env,
                    &slot,
                    &handle,
                    endpoint.as_ref(),
                    &cancel,
                    &mut output,
                )
                .await
            }
        };
        output.pump(&env, &handle);
        set_ready(&env, &slot, false);
        if !matches!(ended, Ended::Cancelled) {
            // It goes now: the WebSockets through it end.
            let live = slot.state.lock().ok().and_then(|mut st| st.live.take());
            if let Some(live) = live {
                live.gone.cancel();
            }
        }
        match ended {
            // Halted: a retirement drains and stops it, or it keeps running for the next
            // gateway.
            Ended::Cancelled => return,
            Ended::Restart(why) => {
                restarts += 1;
                tracing::warn!(service = %env.service_id, instance = %id, reason = %why, "restarting an engine instance");
                set(&slot, |st| {
                    st.phase = Phase::Restarting;
                    st.error = Some(why.clone());
                });
                remove_instance(&env, &id, Some(&handle)).await;
                if wait(&cancel, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Ended::Replace => {
                tracing::info!(service = %env.service_id, instance = %id, "replacing an engine instance (deleted)");
                set(&slot, |st| st.phase = Phase::Restarting);
                remove_instance(&env, &id, Some(&handle)).await;
            }
        }
    }
}

/// The most of an instance's output one pass copies into the service's log; more is
/// skipped, and said.
const PUMP_BYTES: u64 = 64 * 1024;

/// How far an instance's output was copied into the service's log.
struct Output {
    id: String,
    offset: u64,
}

impl Output {
    fn pump(&mut self, env: &Env, handle: &Handle) {
        pump_log(env, handle, &self.id, &mut self.offset);
    }
}

/// The length of the instance's output file now (0 when it cannot be read).
fn log_len(env: &Env, handle: &Handle) -> u64 {
    env.backend
        .engine_log_dir(handle)
        .and_then(|dir| crate::confined::Dir::open(&dir).ok())
        .and_then(|dir| {
            dir.open_read(std::ffi::OsStr::new(crate::backends::ENGINE_LOG))
                .ok()
        })
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len())
}

/// Copies the lines the instance's server printed since `offset` into the service's log
/// (the file is the instance's: read through `confined`, bounded); a line not yet ended
/// waits for the next pass.
fn pump_log(env: &Env, handle: &Handle, id: &str, offset: &mut u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Some(dir) = env.backend.engine_log_dir(handle) else {
        return;
    };
    let Ok(dir) = crate::confined::Dir::open(&dir) else {
        return;
    };
    let Ok(mut f) = dir.open_read(std::ffi::OsStr::new(crate::backends::ENGINE_LOG)) else {
        return;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return;
    };
    if len < *offset {
        *offset = 0;
    }
    let start = (*offset).max(len.saturating_sub(PUMP_BYTES));
    let short: String = id.chars().take(8).collect();
    if start > *offset {
        let skipped = start - *offset;
        env.log.push(
            &env.service_id,
            super::logs::Source::Engine,
            &format!("[{short}] ({skipped} bytes of output skipped: more than a pass copies)"),
        );
    }
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err()
        || f.take(len - start).read_to_end(&mut bytes).is_err()
    {
        return;
    }
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        // No whole line yet; a full pass of one line is let through as it is.
        if bytes.len() as u64 == PUMP_BYTES {
            env.log.push(
                &env.service_id,
                super::logs::Source::Engine,
                &format!("[{short}] {}", String::from_utf8_lossy(&bytes)),
            );
            *offset = len;
        } else {
            *offset = start;
        }
        return;
    };
    for line in String::from_utf8_lossy(&bytes[..end]).lines() {
        env.log.push(
            &env.service_id,
            super::logs::Source::Engine,
            &format!("[{short}] {line}"),
        );
    }
    *offset = start + end as u64 + 1;
}

/// The end of what the instance's server printed, as a suffix for a failure's reason.
fn log_tail(env: &Env, handle: &Handle) -> String {
    let Some(dir) = env.backend.engine_log_dir(handle) else {
        return String::new();
    };
    let tail = crate::backends::runconf::log_tail(&dir.join(crate::backends::ENGINE_LOG), 8);
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; its log ends: {}", tail.trim())
    }
}

fn set(slot: &Slot, f: impl FnOnce(&mut SlotState)) {
    if let Ok(mut st) = slot.state.lock() {
        f(&mut st);
    }
}

fn set_ready(env: &Env, slot: &Slot, ready: bool) {
    set(slot, |st| {
        st.phase = if ready { Phase::Ready } else { st.phase };
    });
    if slot.ready.swap(ready, Ordering::AcqRel) != ready {
        (env.on_change)();
    }
}

/// Sleeps `d`; true when cancelled meanwhile.
async fn wait(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// The startup checks: `Ok` once one passes; `Err(Some(why))` after the most failures (or
/// when the instance exits); `Err(None)` when cancelled.
async fn startup(
    env: &Env,
    handle: &Handle,
    endpoint: Option<&Endpoint>,
    cancel: &CancellationToken,
    output: &mut Output,
) -> Result<(), Option<String>> {
    let check = &env.probes.startup;
    if wait(cancel, check.delay).await {
        return Err(None);
    }
    let mut failures = 0u32;
    loop {
        output.pump(env, handle);
        if let Observed::Exited(how) = env.backend.poll(handle).await {
            return Err(Some(format!("its server exited: {how}")));
        }
        match probe(env, handle, endpoint, check).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures >= check.failures {
                    return Err(Some(format!(
                        "the startup check failed {failures} times: {why}"
                    )));
                }
            }
        }
        if wait(cancel, check.period).await {
            return Err(None);
        }
    }
}

/// Watches a started instance: its processes, its liveness (restart) and readiness (in or
/// out of the rotation); ends when it must go.
async fn watch_running(
    env: &Env,
    slot: &Slot,
    handle: &Handle,
    endpoint: Option<&Endpoint>,
    cancel: &CancellationToken,
    output: &mut Output,
) -> Ended {
    let period = [&env.probes.liveness, &env.probes.readiness]
        .into_iter()
        .flatten()
        .map(|c| c.period)
        .min()
        .unwrap_or(DEFAULT_PERIOD);
    let (mut live_failures, mut ready_failures) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ended::Cancelled,
            _ = slot.replace.notified() => return Ended::Replace,
            _ = tokio::time::sleep(period) => {}
        }
        output.pump(env, handle);
        if let Observed::Exited(how) = env.backend.poll(handle).await {
            return Ended::Restart(format!("its server exited: {how}"));
        }
        if let Some(check) = &env.probes.liveness {
            match probe(env, handle, endpoint, check).await {
                Ok(()) => live_failures = 0,
                Err(why) => {
                    live_failures += 1;
                    if live_failures >= check.failures {
                        return Ended::Restart(format!(
                            "the liveness check failed {live_failures} times: {why}"
                        ));
                    }
                }
            }
        }
        if let Some(check) = &env.probes.readiness {
            match probe(env, handle, endpoint, check).await {
                Ok(()) => {
                    ready_failures = 0;
                    set(slot, |st| st.error = None);
                    set_ready(env, slot, true);
                }
                Err(why) => {
                    ready_failures += 1;
                    if ready_failures >= check.failures {
                        set(slot, |st| {
                            st.phase = Phase::NotReady;
                            st.error = Some(format!("the readiness check failed: {why}"));
                        });
                        set_ready(env, slot, false);
                    }
                }
            }
        }
    }
}

/// One check, within its timeout.
async fn probe(
    env: &Env,
    handle: &Handle,
    endpoint: Option<&Endpoint>,
    check: &Check,
) -> Result<(), String> {
    let run = async {
        match &check.kind {
            CheckKind::Http { path } => {
                http_status(endpoint, path)
                    .await
                    .and_then(|status| match status {
                        200..=399 => Ok(()),
                        s => Err(format!("GET {path} answered {s}")),
                    })
            }
            CheckKind::Answers => http_status(endpoint, "/").await.map(|_| ()),
            CheckKind::Exec { command } => {
                let link = env
                    .backend
                    .ssh_link(handle)
                    .await
                    .map_err(|e| e.to_string())?;
                match crate::backends::agent::run(link, command).await? {
                    (Some(0), _) => Ok(()),
                    (code, out) => Err(format!(
                        "`{command}` exited with {}: {}",
                        code.map_or("a signal".to_owned(), |c| c.to_string()),
                        out.trim()
                    )),
                }
            }
        }
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s",
            check.timeout.as_secs_f64()
        )),
    }
}

/// The status of `GET path` on the instance's server.
async fn http_status(endpoint: Option<&Endpoint>, path: &str) -> Result<u16, String> {
    let endpoint = endpoint.ok_or("the backend gives no way to reach the instance")?;
    let io = endpoint
        .dial()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let req = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::USER_AGENT, "atelier-probe")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("the probe's path {path:?}: {e}"))?;
    let send = sender.send_request(req);
    tokio::pin!(conn);
    tokio::select! {
        resp = send => resp
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("no HTTP answer: {e}")),
        end = &mut conn => Err(match end {
            Ok(()) => "the connection closed without an answer (nothing listens on port 8080?)".to_owned(),
            Err(e) => format!("no HTTP answer: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_inference::config::Protocol;

    #[test]
    fn the_models_health_setting_gives_all_three_probes() {
        let h = Health {
            check: HealthCheck::Http {
                url: "/health".into(),
                protocol: Protocol::Http,
            },
            initial_delay_seconds: Some(2),
            timeout_seconds: Some(0),
            period_seconds: 3,
            failure_threshold: 4,
        };
        let p = Probes::of(Some(&h));
        assert_eq!(
            p.startup,
            Check {
                kind: CheckKind::Http {
                    path: "/health".into()
                },
                delay: Duration::from_secs(2),
                period: Duration::from_secs(3),
                timeout: DEFAULT_TIMEOUT,
                failures: 4,
            }
        );
        assert_eq!(p.readiness.as_ref(), Some(&p.startup));
        assert_eq!(p.liveness.as_ref(), Some(&p.startup));
    }

    #[test]
    fn without_a_health_setting_an_instance_must_answer_http_at_all() {
        let p = Probes::of(None);
        assert_eq!(p.startup.kind, CheckKind::Answers);
        assert_eq!(p.startup.failures, u32::MAX);
        assert!(p.readiness.is_none() && p.liveness.is_none());
    }
}
