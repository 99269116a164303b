//! Training runs ([`Host::train_run`]): a training algorithm's `train` as a long-running,
//! observable and stoppable call, what a training job's runner drives.
//!
//! ```text
//! TrainRun ─ channels checked, storage granted (inputs read-only, outputs writable)
//!          ─ resume-from: given, or on a restart (attempt > 0) the newest checkpoint
//!          ─ a fresh instance ─ describe ─ hyperparameters checked ─ train, under:
//!              the run's time limit (not the plugin's call timeout),
//!              TrainWatch::stop / the time limit ─► control.should-stop() is true,
//!              stop + grace ─► interrupted (epoch callback; waiting host calls end too)
//!          ─► TrainOutcome: Completed | Terminated | Failed (restartable or not)
//! ```
//!
//! While the guest runs, [`TrainWatch`] holds what it reported: heartbeats and progress,
//! log lines (its `log` calls, and its stdout and stderr line by line) and metrics, each in
//! a bounded queue the runner drains; what does not fit is counted, not kept.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::bindings::Training;
use crate::bindings::training::atelier::plugin::training_types as tr;
use crate::bindings::types::{ErrorKind, Parameter};
use crate::host::{CallContext, Host, InstanceUse, LoadSource, PluginRef, Timings};
use crate::limits::{CallError, InstancePolicy, LimitKind};
use crate::state::State;
pub use tr::{Channel, CheckpointInfo};

/// The grace a guest gets after a stop before it is interrupted (spec AC-49).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How often (in epoch ticks of 5 ms) a running guest is checked for a stop past its grace.
const CHECK_TICKS: u64 = 20;

/// A log line kept at most this long (longer ones are cut, with a note).
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Distinct metric names whose newest value is kept.
const MAX_METRIC_NAMES: usize = 1024;

/// What the guest is given and how long it may run.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub job_name: String,
    /// 0 on the first run; one more on each restart.
    pub attempt: u32,
    /// Input channels: storage prefixes of the caller's grant, readable only.
    pub inputs: Vec<tr::Channel>,
    /// Output channels: writable; checkpoints go under the first one's `checkpoints/`.
    pub outputs: Vec<tr::Channel>,
    /// The checkpoint to resume from. None: on a restart (attempt > 0) the newest checkpoint
    /// under the first output (numeric step order), on a first run nothing.
    pub resume_from: Option<tr::CheckpointInfo>,
    pub hyperparameters: Vec<Parameter>,
    /// Wall-clock time of `train` (the job's auto stop): then `should-stop` turns true and
    /// the grace starts. Independent of the plugin's call timeout, which bounds only the
    /// instantiation and `describe`.
    pub time_limit: Duration,
    /// How long a guest may run on after a stop (or the time limit) before it is interrupted.
    pub grace: Duration,
}

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// [`TrainWatch::stop`] (a user's stop, a deletion, a preemption).
    Stopped,
    /// The run's time limit passed.
    TimeLimit,
}

/// What failed, and whether a restart may help (spec §7.3, AC-48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The algorithm's own error (`train` returned `failed`, `invalid-input`, `unsupported`,
    /// or `cancelled` without being asked to stop): restarted only unconditionally.
    UserError,
    /// A transient problem outside the algorithm (`train` returned `not-ready`, or the host
    /// failed: instantiation, I/O): eligible for a conditional restart.
    EnvironmentError,
    /// The hyperparameters do not match the algorithm's `describe()`: before training.
    InvalidHyperparameters,
    /// The guest trapped (a panic, an uncaught exception, `unreachable`).
    Trap,
    /// The guest hit a limit of its plugin (memory, stack, output size).
    Limit,
}

impl FailureKind {
    /// Whether a conditional auto restart applies.
    pub fn restartable(self) -> bool {
        self == FailureKind::EnvironmentError
    }
}

/// How a training run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TrainOutcome {
    /// `train` returned its summary.
    Completed { final_metrics: Vec<(String, f64)> },
    /// Stopped: the guest returned `cancelled` after the stop (`interrupted: false`) or was
    /// interrupted once the grace was over (`interrupted: true`).
    Terminated {
        reason: StopReason,
        interrupted: bool,
    },
    Failed {
        kind: FailureKind,
        /// What the job's log shows: the trap's message, "memory limit ...", the guest's own.
        message: String,
        /// The `error-kind` the guest returned, when it returned one.
        guest_kind: Option<String>,
    },
}

impl TrainOutcome {
    fn failed(kind: FailureKind, message: impl Into<String>) -> Self {
        TrainOutcome::Failed {
            kind,
            message: message.into(),
            guest_kind: None,
        }
    }
}

/// Everything a run produced besides what [`TrainWatch`] saw live.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub call_id: String,
    pub outcome: TrainOutcome,
    /// The checkpoint the guest was told to resume from.
    pub resumed_from: Option<CheckpointView>,
    pub timings: Timings,
    pub instance: InstanceUse,
    pub load: LoadSource,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointView {
    pub step: u64,
    pub path: String,
    pub size: u64,
}

impl From<&tr::CheckpointInfo> for CheckpointView {
    fn from(c: &tr::CheckpointInfo) -> Self {
        CheckpointView {
            step: c.step,
            path: c.path.clone(),
            size: c.size,
        }
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The `log` import (with its level).
    Log,
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainLog {
    pub at: SystemTime,
    pub source: LogSource,
    /// `debug`, `info`, `warning`, `error`; stdout lines are `info`, stderr lines `error`.
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricPoint {
    pub at: SystemTime,
    pub name: String,
    pub value: f64,
    /// The step the guest gave, or the metric's count of values so far.
    pub step: u64,
}

/// What the guest reported so far (see [`TrainWatch::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Liveness {
    /// When `train` started.
    pub started_at: Option<SystemTime>,
    pub heartbeat_at: Option<SystemTime>,
    /// The newest progress a heartbeat gave, in [0, 1].
    pub progress: Option<f64>,
    pub last_log_at: Option<SystemTime>,
    pub last_metric_at: Option<SystemTime>,
    /// Heartbeats, log lines and metric values so far, kept or not: a runner with its own
    /// clock sees activity as this number changing (hang detection).
    pub activity: u64,
    /// Log lines and metric values waiting in the queues.
    pub logs_queued: usize,
    pub log_bytes_queued: usize,
    pub metrics_queued: usize,
    /// Dropped since the run started: lines past the log queue, values past the metric
    /// queue or of a metric name past the first 1,024.
    pub logs_dropped: u64,
    pub metrics_dropped: u64,
    /// The newest value of each metric (name → (value, step)).
    pub latest_metrics: BTreeMap<String, (f64, u64)>,
    /// Whether a stop was asked for (or the time limit passed), and why.
    pub stop: Option<StopReason>,
}

/// Lines and values taken from the queues by [`TrainWatch::drain`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Drained {
    pub logs: Vec<TrainLog>,
    /// Lines dropped since the previous drain (the queue was full).
    pub logs_dropped: u64,
    pub metrics: Vec<MetricPoint>,
    pub metrics_dropped: u64,
}

/// The bounds of a [`TrainWatch`]'s queues.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// Bytes of log messages queued; lines past it are dropped (and counted) until drained.
    pub log_bytes: usize,
    pub metric_points: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            log_bytes: 1024 * 1024,
            metric_points: 10_000,
        }
    }
}

#[derive(Default)]
struct Observed {
    live: Liveness,
    logs: VecDeque<TrainLog>,
    metrics: VecDeque<MetricPoint>,
    logs_dropped_since_drain: u64,
    metrics_dropped_since_drain: u64,
    /// Values reported per metric name (the step of values without one).
    counts: BTreeMap<String, u64>,
}

/// When the running guest must stop, set when `train` starts.
#[derive(Clone, Copy)]
struct Clock {
    limit_at: Instant,
    grace: Duration,
}

/// The live side of a training run, shared between the runner and the guest's host calls:
/// the runner asks it to [`stop`](TrainWatch::stop), reads [`snapshot`](TrainWatch::snapshot)
/// and [`drain`](TrainWatch::drain)s it, and awaits [`changed`](TrainWatch::changed) instead
/// of polling. One watch per run.
pub struct TrainWatch {
    limits: WatchLimits,
    stop: Arc<AtomicBool>,
    stop_asked: Mutex<Option<(StopReason, Instant)>>,
    /// Whether the run's instance is in use ([`TrainWatch::claim_start`]).
    started: AtomicBool,
    clock: Mutex<Option<Clock>>,
    observed: Mutex<Observed>,
    /// Bumped on every report and on a stop.
    changes: tokio::sync::watch::Sender<u64>,
}

impl TrainWatch {
    pub fn new(limits: WatchLimits) -> Arc<TrainWatch> {
        Arc::new(TrainWatch {
            limits,
            stop: Arc::new(AtomicBool::new(false)),
            stop_asked: Mutex::new(None),
            started: AtomicBool::new(false),
            clock: Mutex::new(None),
            observed: Mutex::new(Observed::default()),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Asks the run to stop: `control.should-stop()` turns true, and a guest still running
    /// after the grace is interrupted. A stop before `train` starts ends the run without it.
    pub fn stop(&self) {
        self.ask_stop(StopReason::Stopped, Instant::now());
    }

    fn ask_stop(&self, reason: StopReason, at: Instant) {
        {
            let mut asked = crate::locks::lock(&self.stop_asked);
            if asked.is_some() {
                return;
            }
            *asked = Some((reason, at));
        }
        self.stop.store(true, Ordering::SeqCst);
        crate::locks::lock(&self.observed).live.stop = Some(reason);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Why the run is stopping, if it is; turns the time limit into a stop once it passed.
    pub fn stopping(&self) -> Option<StopReason> {
        if let Some((reason, _)) = *crate::locks::lock(&self.stop_asked) {
            return Some(reason);
        }
        let clock = (*crate::locks::lock(&self.clock))?;
        if Instant::now() >= clock.limit_at {
            self.ask_stop(StopReason::TimeLimit, clock.limit_at);
            return Some(StopReason::TimeLimit);
        }
        None
    }

    /// When the guest is interrupted: the stop (or the time limit), plus the grace.
    pub(crate) fn interrupt_at(&self) -> Option<Instant> {
        let clock = (*crate::locks::lock(&self.clock))?;
        let stop = match *crate::locks::lock(&self.stop_asked) {
            Some((_, at)) => at.min(clock.limit_at),
            None => clock.limit_at,
        };
        Some(stop + clock.grace)
    }

    /// Resolves once the guest must be interrupted (for the host calls it can wait in).
    pub(crate) async fn interrupted(&self) {
        let mut changes = self.changes.subscribe();
        loop {
            let Some(at) = self.interrupt_at() else {
                // Not started: nothing to interrupt yet.
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => return,
                r = changes.changed() => if r.is_err() {
                    tokio::time::sleep_until(at.into()).await;
                    return;
                },
            }
        }
    }

    /// Marks the run as started (its instance is used from now on), unless a stop came
    /// first: then false, and the run ends without touching the guest.
    fn claim_start(&self) -> bool {
        let asked = crate::locks::lock(&self.stop_asked);
        if asked.is_some() {
            return false;
        }
        self.started.store(true, Ordering::SeqCst);
        true
    }

    /// Resolves when a stop is asked for before the run started (while it is queued).
    async fn stopped_before_start(&self) {
        let mut changes = self.changes.subscribe();
        loop {
            {
                // Under the stop's lock: `claim_start` sees the same order.
                let asked = crate::locks::lock(&self.stop_asked);
                if asked.is_some() && !self.started.load(Ordering::SeqCst) {
                    return;
                }
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    fn start(&self, time_limit: Duration, grace: Duration) {
        let now = Instant::now();
        *crate::locks::lock(&self.clock) = Some(Clock {
            limit_at: now
                .checked_add(time_limit)
                .unwrap_or(now + Duration::from_secs(1 << 40)),
            grace,
        });
        crate::locks::lock(&self.observed).live.started_at = Some(SystemTime::now());
        self.bump();
    }

    /// What the guest reported so far.
    pub fn snapshot(&self) -> Liveness {
        let o = crate::locks::lock(&self.observed);
        let mut live = o.live.clone();
        live.logs_queued = o.logs.len();
        live.metrics_queued = o.metrics.len();
        live
    }

    /// Takes the queued log lines and metric values.
    pub fn drain(&self) -> Drained {
        let mut o = crate::locks::lock(&self.observed);
        o.live.log_bytes_queued = 0;
        Drained {
            logs: o.logs.drain(..).collect(),
            logs_dropped: std::mem::take(&mut o.logs_dropped_since_drain),
            metrics: o.metrics.drain(..).collect(),
            metrics_dropped: std::mem::take(&mut o.metrics_dropped_since_drain),
        }
    }

    /// Sees every report and stop from now on: `changed().await` returns after the next one.
    pub fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub(crate) fn heartbeat(&self, progress: Option<f64>) {
        {
            let mut o = crate::locks::lock(&self.observed);
            o.live.heartbeat_at = Some(SystemTime::now());
            if let Some(p) = progress.filter(|p| p.is_finite()) {
                o.live.progress = Some(p.clamp(0.0, 1.0));
            }
            o.live.activity += 1;
        }
        self.bump();
    }

    pub(crate) fn log(&self, source: LogSource, level: &'static str, message: &str) {
        let message = cut(message);
        {
            let mut o = crate::locks::lock(&self.observed);
            let now = SystemTime::now();
            o.live.last_log_at = Some(now);
            o.live.activity += 1;
            if o.live.log_bytes_queued + message.len() > self.limits.log_bytes {
                o.live.logs_dropped += 1;
                o.logs_dropped_since_drain += 1;
            } else {
                o.live.log_bytes_queued += message.len();
                o.logs.push_back(TrainLog {
                    at: now,
                    source,
                    level,
                    message,
                });
            }
        }
        self.bump();
    }

    pub(crate) fn metric(&self, name: String, value: f64, step: Option<u64>) {
        {
            let mut o = crate::locks::lock(&self.observed);
            let now = SystemTime::now();
            o.live.last_metric_at = Some(now);
            o.live.activity += 1;
            let known = o.counts.contains_key(&name);
            if !known && o.counts.len() >= MAX_METRIC_NAMES {
                o.live.metrics_dropped += 1;
                o.metrics_dropped_since_drain += 1;
            } else {
                let count = o.counts.entry(name.clone()).or_insert(0);
                let step = step.unwrap_or(*count);
                *count += 1;
                o.live.latest_metrics.insert(name.clone(), (value, step));
                if o.metrics.len() >= self.limits.metric_points {
                    o.live.metrics_dropped += 1;
                    o.metrics_dropped_since_drain += 1;
                } else {
                    o.metrics.push_back(MetricPoint {
                        at: now,
                        name,
                        value,
                        step,
                    });
                }
            }
        }
        self.bump();
    }
}

/// A line cut to [`MAX_LINE_BYTES`] (at a character boundary).
fn cut(message: &str) -> String {
    if message.len() <= MAX_LINE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_LINE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} [{} more bytes cut]",
        &message[..end],
        message.len() - end
    )
}

/// The guest was interrupted: its grace after a stop (or the time limit) is over.
#[derive(Debug, thiserror::Error)]
#[error("the training run was interrupted: its grace after the stop is over")]
pub struct Interrupted;

/// A channel's path as a grant prefix: not empty (that would be the caller's whole storage).
fn channel_prefix(kind: &str, c: &tr::Channel) -> Result<String, String> {
    if c.path.is_empty() {
        return Err(format!(
            "{kind} channel {:?}: give a storage prefix (an empty path would be the whole storage)",
            c.name
        ));
    }
    crate::storage::normalize_prefix(&c.path)
        .map_err(|e| format!("{kind} channel {:?}: {e}", c.name))
}

/// Grants the run's storage: inputs read-only, outputs writable. An input and an output
/// that overlap (one inside the other) are refused: inside a writable output an input could
/// be written, and an output inside an input could not.
fn grant_channels(ctx: &mut CallContext, run: &TrainRun) -> Result<Option<String>, String> {
    let inputs = run
        .inputs
        .iter()
        .map(|c| channel_prefix("input", c).map(|p| (c, p)))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = run
        .outputs
        .iter()
        .map(|c| channel_prefix("output", c).map(|p| (c, p)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, ip) in &inputs {
        for (o, op) in &outputs {
            if ip.starts_with(op.as_str()) || op.starts_with(ip.as_str()) {
                return Err(format!(
                    "input channel {:?} ({ip}) and output channel {:?} ({op}) overlap; give an output prefix outside every input",
                    i.name, o.name
                ));
            }
        }
    }
    for (_, p) in &inputs {
        ctx.storage.allow(p, false)?;
    }
    for (_, p) in &outputs {
        ctx.storage.allow(p, true)?;
    }
    Ok(outputs.first().map(|(_, p)| format!("{p}checkpoints/")))
}

/// What `train`'s error means for the job.
fn guest_outcome(kind: ErrorKind, message: String, stopping: Option<StopReason>) -> TrainOutcome {
    let (failure, name) = match kind {
        ErrorKind::Cancelled => match stopping {
            Some(reason) => {
                return TrainOutcome::Terminated {
                    reason,
                    interrupted: false,
                };
            }
            None => (FailureKind::UserError, "cancelled"),
        },
        ErrorKind::NotReady => (FailureKind::EnvironmentError, "not-ready"),
        ErrorKind::InvalidInput => (FailureKind::UserError, "invalid-input"),
        ErrorKind::Unsupported => (FailureKind::UserError, "unsupported"),
        ErrorKind::Failed => (FailureKind::UserError, "failed"),
    };
    let message = if kind == ErrorKind::Cancelled {
        format!("the algorithm returned cancelled though no stop was asked for: {message}")
    } else {
        message
    };
    TrainOutcome::Failed {
        kind: failure,
        message,
        guest_kind: Some(name.into()),
    }
}

/// A failed call (trap, limit, host) as the run's outcome.
fn call_outcome(e: CallError) -> TrainOutcome {
    match e {
        CallError::Limit {
            kind: LimitKind::Memory,
            limit,
            observed,
            ..
        } => TrainOutcome::failed(
            FailureKind::Limit,
            format!(
                "memory limit: the algorithm asked for {observed} MiB, its limit is {limit} MiB (limits.memory_mb)"
            ),
        ),
        e @ CallError::Limit { .. } => TrainOutcome::failed(FailureKind::Limit, e.to_string()),
        CallError::Trap { message } => TrainOutcome::failed(FailureKind::Trap, message),
        CallError::Guest { message, .. } => TrainOutcome::failed(FailureKind::UserError, message),
        CallError::BadInput { message } => {
            TrainOutcome::failed(FailureKind::InvalidHyperparameters, message)
        }
        CallError::Host { message } => TrainOutcome::failed(FailureKind::EnvironmentError, message),
    }
}

impl Host {
    /// Runs a training algorithm's `train` as a training job's run (see the module's
    /// documentation): `ctx.storage` names the caller's storage root (its prefixes are the
    /// run's channels, granted here); `watch` is how the runner stops and observes it.
    ///
    /// Always a fresh instance, whatever the plugin's instance policy: a run lasts minutes
    /// to hours and its guest keeps whatever it read (data, weights) in its memory, so an
    /// instance that ran one job's `train` is never handed to another call, of this tenant
    /// or any other; and a new instance starts from the component's initial state, so a
    /// restart (attempt > 0) resumes from its checkpoint only, as a job on a new machine.
    pub async fn train_run(
        self: &Arc<Self>,
        plugin: &PluginRef,
        mut ctx: CallContext,
        run: TrainRun,
        watch: Arc<TrainWatch>,
    ) -> TrainReport {
        if ctx.call_id.is_empty() {
            ctx.call_id = uuid::Uuid::now_v7().to_string();
        }
        let call_id = ctx.call_id.clone();
        let refused = |outcome: TrainOutcome| TrainReport {
            call_id: call_id.clone(),
            outcome,
            resumed_from: None,
            timings: Timings::default(),
            instance: InstanceUse::Fresh,
            load: LoadSource::Memory,
        };
        if plugin.world != crate::World::TrainingAlgorithm {
            return refused(TrainOutcome::failed(
                FailureKind::UserError,
                format!(
                    "the plugin is a {} plugin, not a training algorithm",
                    plugin.world
                ),
            ));
        }
        if watch.stopping().is_some() {
            return refused(TrainOutcome::Terminated {
                reason: StopReason::Stopped,
                interrupted: false,
            });
        }
        ctx.storage.prefixes.clear();
        let checkpoints = match grant_channels(&mut ctx, &run) {
            Ok(c) => c,
            Err(message) => {
                return refused(TrainOutcome::failed(FailureKind::UserError, message));
            }
        };
        let mut context = tr::TrainContext {
            job_name: run.job_name,
            attempt: run.attempt,
            inputs: run.inputs,
            outputs: run.outputs,
            resume_from: run.resume_from,
        };
        if context.resume_from.is_none()
            && context.attempt > 0
            && let Some(prefix) = &checkpoints
        {
            context.resume_from = crate::storage::latest_checkpoint(&ctx.storage, prefix);
        }
        let resumed_from = context.resume_from.as_ref().map(CheckpointView::from);
        ctx.checkpoint_prefix = checkpoints;
        ctx.parameters = run.hyperparameters;
        ctx.stop = watch.stop_flag();
        let (time_limit, grace) = (run.time_limit, run.grace);
        let w = watch.clone();
        let queued = watch.clone();
        let running =
            self.run_as::<Training, _, _>(plugin, ctx, InstancePolicy::Fresh, move |call| {
                if !w.claim_start() {
                    return Ok(TrainOutcome::Terminated {
                        reason: StopReason::Stopped,
                        interrupted: false,
                    });
                }
                call.store.data_mut().watch_training(w.clone());
                let spec = call.export(
                    "describe",
                    |b, s| b.atelier_plugin_algorithm().call_describe(s).map(Ok),
                    crate::calls::spec_size,
                )?;
                let given = std::mem::take(&mut call.store.data_mut().call.parameters);
                call.store.data_mut().call.parameters =
                    crate::calls::check_hyperparameters(&spec, given)?;
                if let Some(reason) = w.stopping() {
                    return Ok(TrainOutcome::Terminated {
                        reason,
                        interrupted: false,
                    });
                }
                w.start(time_limit, grace);
                arm_run(call.store, &w);
                let t = Instant::now();
                let result = b_train(call, &context);
                call.store.data().stdout.flush_tee();
                call.store.data().stderr.flush_tee();
                call.timings
                    .calls
                    .push(("train".into(), t.elapsed().as_micros() as u64));
                Ok(match result {
                    Ok(Ok(summary)) => TrainOutcome::Completed {
                        final_metrics: summary.final_metrics,
                    },
                    Ok(Err(e)) => guest_outcome(e.kind, e.message, w.stopping()),
                    Err(e) if is_interrupt(&e, &w) => TrainOutcome::Terminated {
                        reason: w.stopping().unwrap_or(StopReason::Stopped),
                        interrupted: true,
                    },
                    Err(e) => call_outcome(crate::host::classify(e, call.store, call.limits, t)),
                })
            });
        // A stop while the run waits for its plugin's concurrency permit or a pool slot
        // ends it there: dropping the call before its instance is used leaves nothing behind
        // (once the instance is used, only the guest's own end or the interrupt ends it).
        let report = tokio::select! {
            report = running => report,
            _ = queued.stopped_before_start() => {
                return refused(TrainOutcome::Terminated {
                    reason: StopReason::Stopped,
                    interrupted: false,
                });
            }
        };
        TrainReport {
            call_id: report.call_id,
            outcome: match (report.output, report.error) {
                (Some(o), _) => o,
                (None, Some(e)) => call_outcome(e),
                (None, None) => TrainOutcome::failed(FailureKind::EnvironmentError, "no outcome"),
            },
            resumed_from,
            timings: report.timings,
            instance: report.instance,
            load: report.load,
        }
    }
}

fn b_train(
    call: &mut crate::host::Call<'_, Training>,
    context: &tr::TrainContext,
) -> wasmtime::Result<Result<tr::TrainSummary, crate::bindings::types::Error>> {
    call.exports
        .atelier_plugin_algorithm()
        .call_train(&mut *call.store, context)
}

/// Whether the call ended because its grace was over: the epoch callback's error or a
/// waiting host call's (which may have reached the run's last deadline first).
fn is_interrupt(e: &wasmtime::Error, watch: &TrainWatch) -> bool {
    e.downcast_ref::<Interrupted>().is_some()
        || (e.downcast_ref::<crate::waits::DeadlinePassed>().is_some()
            && watch.stopping().is_some())
}

/// Arms the store for `train`: no epoch deadline of the plugin's call timeout, but a check
/// every [`CHECK_TICKS`] whether the grace after a stop is over; the host calls a guest can
/// wait in end then too ([`crate::waits`]).
fn arm_run(store: &mut wasmtime::Store<State>, watch: &Arc<TrainWatch>) {
    let far = watch
        .interrupt_at()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 40));
    store.data_mut().deadline = far;
    let w = watch.clone();
    store.epoch_deadline_callback(move |_| {
        w.stopping();
        match w.interrupt_at() {
            Some(at) if Instant::now() >= at => Err(wasmtime::Error::new(Interrupted)),
            _ => Ok(wasmtime::UpdateDeadline::Continue(CHECK_TICKS)),
        }
    });
    store.set_epoch_deadline(CHECK_TICKS);
}
