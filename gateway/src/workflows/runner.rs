//! The run engine: one driver per run under way, on the lifecycle's task tracker, woken by
//! events (a step ended, its owner stopped, retried or proceeded), never by a timer.
//!
//! ```text
//! drive(run) ─► pass:
//!      ├─ the ends step tasks handed over: RUNNING → COMPLETED | FAILED
//!      ├─ read the run and its steps ─► outcomes ─► dag::plan
//!      ├─ skipped / failed before starting: recorded (PENDING → SKIPPED | FAILED)
//!      ├─ runnable: delayed parameters missing → AWAITING_INPUT; otherwise resolved, then
//!      │    PENDING → RUNNING (compare-and-set: a step starts once)
//!      └─ nothing runs or waits: the run COMPLETED, or FAILED naming its failed step
//!    written ─► the started steps run: a condition decided at once (its end written by the
//!      next pass), a wasm step in the plugin host, a job step as a training job, …
//!      ─► a step task ends: its end handed to the driver, the driver woken ─► pass
//! STOPPING ─► step tasks told to stop (training jobs stopped), waiting steps STOPPED
//!      ─► the run STOPPED once no step task is left
//! ```
//!
//! A hand-off along a chain is therefore three statements on one connection: the step's
//! end, one read of the run with its steps (one row), its successor's start; each write a
//! compare-and-set of its own, several ends or starts at once in one transaction. A metrics
//! file a condition needs is read once per step attempt. A step task that outlives its
//! driver (the run ended, the gateway shuts down) writes its end itself.
//!
//! Durability: every start and end of a step is written before anything follows from it.
//! A gateway killed mid-run goes on at its next start ([`Engine::resume`]): finished steps
//! are never run again; a step that was RUNNING (its end not yet written counts) is run
//! again (a wasm step) or found again (a job step's training job, by the id recorded, or by
//! the name and tags it was created with), and one driver per run (this process's map)
//! means one step never runs twice at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::condition::{self, Facts, MetricRef};
use super::dag::{self, StepOutcome};
use super::definition::{StepKind, Workflow};
use super::params::{self, Produced, ResolvedStep, RunValues, Scope};
use crate::auth::{Principal, Role};
use crate::lifecycle::workflow::{RunStatus, StepStatus};
use crate::models::Models;
use crate::plugins::{Plugins, StepCall, StepData};
use crate::serving::Services;
use crate::store::workflows::{self as rows, RunRow, StepEnd, StepRow};
use crate::store::{Store, now};
use crate::training::jobs::{CreateJob, Jobs};

/// The longest log kept per step in its record (the tail).
pub const STEP_LOG_BYTES: usize = 64 * 1024;
/// A metrics file a condition reads may be this large (seed: 1 MB).
const METRIC_FILE_BYTES: u64 = 1 << 20;
/// How often a job step asks after its training job (at most; `poll_interval_seconds`
/// when shorter).
const JOB_POLL: Duration = Duration::from_secs(1);
/// After a failed pass (the database busy, a bug), the driver tries again after this.
const RETRY_PASS: Duration = Duration::from_secs(1);

/// Where a run keeps outputs that name no path (a run-scoped scratch area in the owner's
/// storage), as a storage path.
pub fn scratch_path(run_id: &str, step: &str, output: &str) -> String {
    format!("/.atelier/runs/{run_id}/{step}/{output}/")
}

/// The owner's storage key a workflow path stands for: `/bucket/folder/` and
/// `obs://bucket/folder/` both mean `bucket/folder/`. None: not a storage path, or one with
/// an empty, `.` or `..` segment, a NUL or a backslash (a value a step returned, a literal,
/// a parameter: never trusted to stay under the owner's storage).
pub fn storage_key(v: &Value) -> Option<String> {
    let rest = path_like(v)?;
    if rest.is_empty() || params::check_path(rest).is_err() || rest.starts_with('/') {
        return None;
    }
    Some(rest.to_owned())
}

/// What follows `/`, `obs://` or `s3://` in a text value.
fn path_like(v: &Value) -> Option<&str> {
    let s = v.as_str()?;
    s.strip_prefix("obs://")
        .or_else(|| s.strip_prefix("s3://"))
        .or_else(|| s.strip_prefix('/'))
}

pub struct EngineParts {
    pub store: Store,
    pub plugins: Plugins,
    pub jobs: Jobs,
    pub models: Models,
    pub services: Services,
    pub tasks: TaskTracker,
    /// The gateway's address as callers reach it (a service step's `access_address`).
    pub base_url: String,
}

/// The workflow engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    plugins: Plugins,
    jobs: Jobs,
    models: Models,
    services: Services,
    base_url: String,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// The drivers, by run id: at most one per run.
    drivers: Mutex<HashMap<String, Driver>>,
}

#[derive(Clone)]
struct Driver {
    wake: Arc<Notify>,
    /// Set by [`Engine::drive`]: look again before ending.
    again: Arc<AtomicBool>,
    /// Steps that ended, handed to the driver: their ends are written in its next pass's
    /// transaction, with whatever starts because of them.
    ends: Arc<Mutex<Ends>>,
}

#[derive(Default)]
struct Ends {
    list: Vec<Finished>,
    /// The driver is gone: a step task that ends writes its end itself.
    closed: bool,
}

/// A step task that ended: how (none: it wrote nothing, e.g. told to stop before anything
/// ran), and when.
struct Finished {
    task: TaskRun,
    /// The [`StepTask`] that ran it (none: a condition, decided in the pass).
    id: Option<u64>,
    ended: Option<Ended>,
    at: String,
}

/// A step running in a task of its own.
struct StepTask {
    id: u64,
    stop: CancellationToken,
}

/// What a driver keeps between passes.
#[derive(Default)]
struct RunState {
    workflow: Option<Arc<Workflow>>,
    owner: Option<Principal>,
    tasks: HashMap<String, StepTask>,
    /// The number of the next step task.
    next_task: u64,
    /// Ends taken from [`Driver::ends`], until a pass's transaction with them commits.
    ended: Vec<Finished>,
    /// Metrics read for conditions, with the start of the step attempt they came from: a
    /// metrics file is read once per attempt, not on every pass.
    metrics: MetricCache,
}

enum Next {
    /// Until a step task ends or the run's owner acts.
    Wait,
    /// Something changed: look again now.
    Again,
    /// The run ended (or is gone).
    Done,
}

/// How a step task ended.
struct Ended {
    status: StepStatus,
    reason: Option<String>,
    outputs: Option<Value>,
    variables: Option<Value>,
    metrics: Option<Value>,
    log: Option<String>,
}

impl Ended {
    fn failed(reason: impl Into<String>) -> Ended {
        Ended {
            status: StepStatus::Failed,
            reason: Some(reason.into()),
            outputs: None,
            variables: None,
            metrics: None,
            log: None,
        }
    }
}

/// What a step task needs to know about its run.
#[derive(Clone)]
struct TaskRun {
    run_id: String,
    run_number: i64,
    /// The storage connection the run's paths are in (none: the owner's own storage).
    connection_id: Option<String>,
    owner: Principal,
    workflow: Arc<Workflow>,
    step: String,
    attempt: u32,
}

impl Engine {
    pub fn new(p: EngineParts) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                store: p.store,
                plugins: p.plugins,
                jobs: p.jobs,
                models: p.models,
                services: p.services,
                base_url: p.base_url,
                tasks: p.tasks,
                shutdown: CancellationToken::new(),
                drivers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Makes sure the run's driver runs and looks at it again (after a start, a stop, a
    /// retry, a proceed).
    pub fn drive(&self, run_id: &str) {
        let Ok(mut drivers) = self.inner.drivers.lock() else {
            return;
        };
        if let Some(d) = drivers.get(run_id) {
            d.again.store(true, Ordering::SeqCst);
            d.wake.notify_one();
            return;
        }
        let d = Driver {
            wake: Arc::new(Notify::new()),
            again: Arc::new(AtomicBool::new(false)),
            ends: Default::default(),
        };
        drivers.insert(run_id.to_owned(), d.clone());
        drop(drivers);
        let this = self.clone();
        let id = run_id.to_owned();
        self.inner
            .tasks
            .spawn(async move { this.run_driver(id, d).await });
    }

    /// At a gateway start: every run under way goes on.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let mut conn = self.inner.store.pool.acquire().await?;
        for run in rows::active_runs(&mut conn).await? {
            self.drive(&run.id);
        }
        Ok(())
    }

    /// At gateway shutdown: the drivers end (steps in the plugin host finish their call;
    /// training jobs go on and are found again).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Removes a deleted run's scratch outputs from its owner's storage.
    pub async fn remove_scratch(&self, owner_id: &str, run_id: &str) {
        let root = self.inner.plugins.storage_root(owner_id);
        let dir = root.join(".atelier").join("runs");
        let name = run_id.to_owned();
        let _ = tokio::task::spawn_blocking(move || remove_tree(&dir, &name)).await;
    }

    async fn run_driver(self, run_id: String, d: Driver) {
        let mut st = RunState::default();
        loop {
            d.again.store(false, Ordering::SeqCst);
            let next = match self.pass(&run_id, &mut st, &d).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(run = %run_id, error = %e, "workflow run: a pass failed; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_PASS) => Next::Again,
                        _ = self.inner.shutdown.cancelled() => break,
                    }
                }
            };
            match next {
                Next::Again => continue,
                Next::Wait => {
                    tokio::select! {
                        _ = d.wake.notified() => {}
                        _ = self.inner.shutdown.cancelled() => break,
                    }
                }
                Next::Done => {
                    {
                        let Ok(mut drivers) = self.inner.drivers.lock() else {
                            break;
                        };
                        if d.again.swap(false, Ordering::SeqCst) {
                            continue;
                        }
                        drivers.remove(&run_id);
                    }
                    self.close(&d, &mut st).await;
                    return;
                }
            }
        }
        if let Ok(mut drivers) = self.inner.drivers.lock() {
            drivers.remove(&run_id);
        }
        self.close(&d, &mut st).await;
    }

    /// The driver ends: step tasks still running write their ends themselves from now on,
    /// and the ends handed over but not yet written are written here.
    async fn close(&self, d: &Driver, st: &mut RunState) {
        if let Ok(mut q) = d.ends.lock() {
            q.closed = true;
            st.ended.append(&mut q.list);
        }
        if st.ended.is_empty() {
            return;
        }
        let written = match self.inner.store.pool.acquire().await {
            Ok(mut conn) => self.write_ends(&mut conn, st).await,
            Err(e) => Err(e.into()),
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, "recording the ends of a run's steps failed; they run again when the run resumes");
        }
    }

    /// Writes the ends handed over (several in one transaction); they are done with then
    /// (their tasks too).
    async fn write_ends(
        &self,
        conn: &mut crate::store::Conn,
        st: &mut RunState,
    ) -> anyhow::Result<()> {
        if st.ended.len() > 1 {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            for f in &st.ended {
                if let Some(e) = &f.ended {
                    write_end(&mut tx, &f.task, e, &f.at).await?;
                }
            }
            tx.commit().await?;
        } else if let Some(Finished {
            task,
            ended: Some(e),
            at,
            ..
        }) = st.ended.first()
        {
            write_end(conn, task, e, at).await?;
        }
        for f in st.ended.drain(..) {
            if let Some(id) = f.id
                && st.tasks.get(&f.task.step).is_some_and(|t| t.id == id)
            {
                st.tasks.remove(&f.task.step);
            }
        }
        Ok(())
    }

    /// One look at the run: the ends of steps that ended (handed over by their tasks)
    /// written, the run read, what that decides, and the starts of what can start now;
    /// whether the run ended. What starts is dispatched once its start is written.
    async fn pass(&self, run_id: &str, st: &mut RunState, d: &Driver) -> anyhow::Result<Next> {
        if let Ok(mut q) = d.ends.lock() {
            st.ended.append(&mut q.list);
        }
        // No transaction around the pass: every write is a compare-and-set of its own (a
        // step starts once, ends once), and a hand-off along a chain is then three
        // statements (the end, one read, the start). Several ends or starts at once are
        // written in one transaction each.
        let mut conn = self.inner.store.pool.acquire().await?;
        self.write_ends(&mut conn, st).await?;
        let Some((run, steps)) = rows::run_and_steps(&mut conn, run_id).await? else {
            for t in st.tasks.values() {
                t.stop.cancel();
            }
            return Ok(Next::Done);
        };
        if run.status.is_terminal() {
            return Ok(Next::Done);
        }
        let wf = match &st.workflow {
            Some(w) => w.clone(),
            None => {
                let v = rows::version(&mut conn, &run.workflow_id, run.version)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("version {} is gone", run.version))?;
                let w: Workflow = serde_json::from_str(&v.definition)?;
                let w = Arc::new(w);
                st.workflow = Some(w.clone());
                w
            }
        };
        let owner = match &st.owner {
            Some(o) => o.clone(),
            None => {
                let o = owner_of(&mut conn, &run.owner_id).await?;
                st.owner = Some(o.clone());
                o
            }
        };
        if run.status == RunStatus::Stopping {
            return self.stopping(&run, &owner, &steps, st).await;
        }
        let values = run_values(&run)?;
        let by_name: BTreeMap<&str, &StepRow> =
            steps.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut outcomes = BTreeMap::new();
        let mut produced = BTreeMap::new();
        for r in &steps {
            let Some(step) = wf.step(&r.name) else {
                continue;
            };
            let o = match r.status {
                StepStatus::Pending => continue,
                StepStatus::AwaitingInput | StepStatus::Running | StepStatus::Stopping => {
                    StepOutcome::Active
                }
                StepStatus::Completed => match step.kind {
                    StepKind::Condition(_) => StepOutcome::Branch(
                        decode_object(r.outputs.as_deref())
                            .get("result")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    ),
                    _ => {
                        produced.insert(r.name.clone(), produced_of(r));
                        StepOutcome::Completed
                    }
                },
                StepStatus::Skipped => StepOutcome::Skipped,
                StepStatus::Failed => StepOutcome::Failed,
                StepStatus::Stopped => StepOutcome::Stopped,
            };
            outcomes.insert(r.name.clone(), o);
        }
        let metrics = self
            .metric_facts(&wf, &run, &by_name, &mut st.metrics)
            .await;
        let known = Known {
            parameters: &values.parameters,
            metrics: &metrics,
        };
        let selected: Option<std::collections::BTreeSet<String>> = run
            .selected
            .as_deref()
            .map(serde_json::from_str)
            .transpose()?;
        let scope = Scope {
            workflow: &wf,
            run: &values,
            execution_id: &run.id,
            produced: &produced,
        };
        // Something decided here (a skip, a failure, a wait, a condition) needs another
        // look; steps started as tasks wake the driver when they end.
        let mut changed = false;
        let mut launched = false;
        let at = now();

        // Steps a previous gateway left running, and waiting steps whose values came.
        let mut again: Vec<&StepRow> = Vec::new();
        for r in &steps {
            let Some(step) = wf.step(&r.name) else {
                continue;
            };
            let resume = r.status == StepStatus::Running && !st.tasks.contains_key(&r.name);
            let given =
                r.status == StepStatus::AwaitingInput && params::awaiting(step, &values).is_empty();
            if resume || given {
                changed = true;
                again.push(r);
            }
        }
        let mut started = Vec::new();
        changed |= launch(&mut conn, &run, &wf, &again, &scope, &mut started).await?;

        let plan = known.with(|facts| dag::plan(&wf, &outcomes, selected.as_ref(), facts));
        for (name, reason) in &plan.skipped {
            let reason = format!("skipped: {reason}");
            changed |= rows::set_step(
                &mut conn,
                run_id,
                name,
                &[StepStatus::Pending],
                StepStatus::Skipped,
                Some(&reason),
                &at,
            )
            .await?;
        }
        for (name, reason) in &plan.failed {
            changed |= rows::set_step(
                &mut conn,
                run_id,
                name,
                &[StepStatus::Pending],
                StepStatus::Failed,
                Some(reason),
                &at,
            )
            .await?;
        }
        // Parallel branches start together: one transaction records them all.
        let mut batch: Vec<&StepRow> = Vec::new();
        for name in &plan.runnable {
            let (Some(step), Some(r)) = (wf.step(name), by_name.get(name.as_str())) else {
                continue;
            };
            let waits = params::awaiting(step, &values);
            if !waits.is_empty() {
                let reason = format!("waits for parameter {}: proceed with it", waits.join(", "));
                rows::set_step(
                    &mut conn,
                    run_id,
                    name,
                    &[StepStatus::Pending],
                    StepStatus::AwaitingInput,
                    Some(&reason),
                    &at,
                )
                .await?;
                changed = true;
                continue;
            }
            batch.push(r);
        }
        changed |= launch(&mut conn, &run, &wf, &batch, &scope, &mut started).await?;
        if changed || !started.is_empty() {
            // Recorded RUNNING: now they run.
            for (r, step, resolved) in started {
                if self.dispatch(&run, &owner, &wf, r, step, resolved, &known, st, d) {
                    launched = true;
                } else {
                    changed = true;
                }
            }
            if changed || (launched && run.status != RunStatus::Running) {
                return Ok(Next::Again);
            }
            return Ok(Next::Wait);
        }

        // Nothing new started: is the run still going?
        let first = |s: StepStatus| steps.iter().find(|r| r.status == s);
        let running = steps
            .iter()
            .any(|r| matches!(r.status, StepStatus::Running | StepStatus::Stopping));
        let next = if running {
            if run.status == RunStatus::AwaitingInput {
                rows::set_run_status(
                    &mut conn,
                    run_id,
                    &[RunStatus::AwaitingInput],
                    RunStatus::Running,
                    None,
                    &at,
                )
                .await?;
            }
            Next::Wait
        } else if let Some(w) = first(StepStatus::AwaitingInput) {
            if run.status == RunStatus::Running {
                let reason = format!(
                    "step {} {}",
                    w.name,
                    w.reason.as_deref().unwrap_or("waits for input")
                );
                rows::set_run_status(
                    &mut conn,
                    run_id,
                    &[RunStatus::Running],
                    RunStatus::AwaitingInput,
                    Some(&reason),
                    &at,
                )
                .await?;
            }
            Next::Wait
        } else {
            let failed = steps
                .iter()
                .find(|r| matches!(r.status, StepStatus::Failed | StepStatus::Stopped));
            let (to, reason) = match failed {
                Some(f) => (
                    RunStatus::Failed,
                    Some(format!(
                        "step {} {}: {}",
                        f.name,
                        if f.status == StepStatus::Stopped {
                            "was stopped"
                        } else {
                            "failed"
                        },
                        f.reason.as_deref().unwrap_or("no reason recorded")
                    )),
                ),
                None => match first(StepStatus::Pending) {
                    Some(p) => (
                        RunStatus::Failed,
                        Some(format!("step {} cannot run", p.name)),
                    ),
                    None => (RunStatus::Completed, None),
                },
            };
            rows::set_run_status(
                &mut conn,
                run_id,
                &[RunStatus::Running, RunStatus::AwaitingInput],
                to,
                reason.as_deref(),
                &at,
            )
            .await?;
            Next::Done
        };
        Ok(next)
    }

    /// STOPPING: step tasks told to stop, waiting and orphaned steps STOPPED; the run
    /// STOPPED once no task is left.
    async fn stopping(
        &self,
        run: &RunRow,
        owner: &Principal,
        steps: &[StepRow],
        st: &mut RunState,
    ) -> anyhow::Result<Next> {
        for t in st.tasks.values() {
            t.stop.cancel();
        }
        let at = now();
        for r in steps {
            let orphan = r.status == StepStatus::Running && !st.tasks.contains_key(&r.name);
            if !(orphan || r.status == StepStatus::AwaitingInput) {
                continue;
            }
            if orphan && let Some(id) = &r.child_id {
                match r.child_kind.as_deref() {
                    Some("training_job") => {
                        let _ = self.inner.jobs.stop(owner, id).await;
                    }
                    Some("service") => {
                        let _ = self.inner.services.stop(owner, id).await;
                    }
                    _ => {}
                }
            }
            let mut tx = self.inner.store.write().await?;
            rows::set_step(
                &mut tx,
                &run.id,
                &r.name,
                &[StepStatus::Running, StepStatus::AwaitingInput],
                StepStatus::Stopped,
                Some("stopped with the run"),
                &at,
            )
            .await?;
            tx.commit().await?;
        }
        if !st.tasks.is_empty() {
            return Ok(Next::Wait);
        }
        let mut tx = self.inner.store.write().await?;
        rows::set_run_status(
            &mut tx,
            &run.id,
            &[RunStatus::Stopping],
            RunStatus::Stopped,
            Some("stopped by its owner"),
            &at,
        )
        .await?;
        tx.commit().await?;
        Ok(Next::Done)
    }

    fn task_run(
        &self,
        run: &RunRow,
        owner: &Principal,
        wf: &Arc<Workflow>,
        r: &StepRow,
    ) -> TaskRun {
        TaskRun {
            run_id: run.id.clone(),
            run_number: run.number,
            connection_id: run.connection_id.clone(),
            owner: owner.clone(),
            workflow: wf.clone(),
            step: r.name.clone(),
            attempt: u32::try_from(r.attempt).unwrap_or(0),
        }
    }

    /// Runs a step recorded RUNNING: a condition here (false), the others in a task (true).
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        run: &RunRow,
        owner: &Principal,
        wf: &Arc<Workflow>,
        r: &StepRow,
        step: &super::definition::Step,
        resolved: ResolvedStep,
        known: &Known<'_>,
        st: &mut RunState,
        d: &Driver,
    ) -> bool {
        let task = self.task_run(run, owner, wf, r);
        // What an earlier gateway's attempt started (a step it left RUNNING): followed,
        // never started twice.
        let child = if r.status == StepStatus::Running {
            r.child_id.clone()
        } else {
            None
        };
        match &step.kind {
            StepKind::Condition(p) => {
                let ended = match known.with(|facts| condition::evaluate_all(&p.conditions, facts))
                {
                    Ok(b) => Ended {
                        status: StepStatus::Completed,
                        reason: Some(format!(
                            "the conditions are {b}: {} runs",
                            if b {
                                "the if branch"
                            } else {
                                "the else branch"
                            }
                        )),
                        outputs: Some(json!({ "result": b })),
                        variables: None,
                        metrics: None,
                        log: None,
                    },
                    Err(e) => Ended::failed(format!("its conditions: {e}")),
                };
                // Written by the next pass, with what it decides.
                st.ended.push(Finished {
                    task,
                    id: None,
                    ended: Some(ended),
                    at: now(),
                });
                false
            }
            StepKind::Wasm(_) => {
                self.spawn_wasm(task, resolved, step.policy.max_execution_minutes, st, d);
                true
            }
            StepKind::Job(_) => {
                self.spawn_job(task, Some(resolved), child, st, d);
                true
            }
            StepKind::Model(_) => {
                self.spawn_step(task, st, d, move |this, task, stop| {
                    Box::pin(async move { this.run_model(&task, resolved, child, stop).await })
                });
                true
            }
            StepKind::Service(_) => {
                self.spawn_step(task, st, d, move |this, task, stop| {
                    Box::pin(async move { this.run_service(&task, resolved, child, stop).await })
                });
                true
            }
        }
    }

    /// Writes how a step ended in a transaction of its own (a step task whose driver is
    /// gone).
    async fn record(&self, task: &TaskRun, e: Ended, at: &str) -> anyhow::Result<()> {
        let mut tx = self.inner.store.write().await?;
        write_end(&mut tx, task, &e, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs `work` as the step's task: its end recorded, the driver woken.
    fn spawn_step<F>(&self, task: TaskRun, st: &mut RunState, d: &Driver, work: F)
    where
        F: FnOnce(
                Engine,
                TaskRun,
                CancellationToken,
            ) -> futures_util::future::BoxFuture<'static, Option<Ended>>
            + Send
            + 'static,
    {
        let stop = CancellationToken::new();
        let id = st.next_task;
        st.next_task += 1;
        st.tasks.insert(
            task.step.clone(),
            StepTask {
                id,
                stop: stop.clone(),
            },
        );
        let (this, wake, ends) = (self.clone(), d.wake.clone(), d.ends.clone());
        self.inner.tasks.spawn(async move {
            // A panic in a step's work fails the step instead of leaving the run waiting.
            let ended = std::panic::AssertUnwindSafe(work(this.clone(), task.clone(), stop))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Some(Ended::failed(
                        "the gateway's work on this step failed unexpectedly (see its log); retry it",
                    ))
                });
            // Handed to the driver, which writes it with what follows from it; a task that
            // outlives its driver writes it itself.
            let finished = Finished {
                task,
                id: Some(id),
                ended,
                at: now(),
            };
            let left = match ends.lock() {
                Ok(mut q) if !q.closed => {
                    q.list.push(finished);
                    None
                }
                _ => Some(finished),
            };
            if let Some(Finished {
                task,
                ended: Some(e),
                at,
                ..
            }) = left
                && let Err(err) = this.record(&task, e, &at).await
            {
                tracing::warn!(run = %task.run_id, step = %task.step, error = %err, "recording a step's end failed");
            }
            wake.notify_one();
        });
    }

    fn spawn_wasm(
        &self,
        task: TaskRun,
        resolved: ResolvedStep,
        max_minutes: u64,
        st: &mut RunState,
        d: &Driver,
    ) {
        self.spawn_step(task, st, d, move |this, task, _stop| {
            Box::pin(async move { Some(this.run_wasm(&task, resolved, max_minutes).await) })
        });
    }

    async fn run_wasm(&self, task: &TaskRun, resolved: ResolvedStep, max_minutes: u64) -> Ended {
        let props: super::definition::WasmProperties =
            match serde_json::from_value(resolved.properties.clone()) {
                Ok(p) => p,
                Err(e) => return Ended::failed(format!("properties: {e}")),
            };
        let owner = &task.owner.user_id;
        let root = self.inner.plugins.storage_root(owner);
        // With a storage connection, the step's folders are staged: inputs downloaded into
        // the run's scratch area before the call, outputs uploaded after it.
        let s3 = match &task.connection_id {
            Some(cid) => match crate::training::runner::client(&self.inner.jobs, cid).await {
                Ok(c) => Some(c),
                Err(e) => return Ended::failed(format!("the run's storage connection: {e}")),
            },
            None => None,
        };
        let stage = |kind: &str, key: &str| {
            format!(
                ".atelier/runs/{}/{}/{}/{kind}/{key}",
                task.run_id, task.step, task.attempt
            )
        };
        // (staged key, object-storage key) of what is uploaded after the call, and of what
        // was downloaded before it.
        let mut uploads: Vec<(String, String)> = Vec::new();
        let mut staged_inputs: Vec<(String, String)> = Vec::new();
        if s3.is_none() {
            for dir in &resolved.create_dirs {
                let Some(key) = storage_key(&Value::String(dir.clone())) else {
                    continue;
                };
                if let Err(e) = make_dirs(&root, &key) {
                    return Ended::failed(format!("creating {dir}: {e}"));
                }
            }
        }
        let mut inputs = Vec::new();
        for (name, v) in &resolved.inputs {
            let data = match (storage_key(v), &s3) {
                (Some(k), None) => StepData::Prefix(k),
                (Some(k), Some(client)) => {
                    let k = folder(&k);
                    let local = stage("in", &k);
                    if let Err(e) = crate::training::runner::download_folder(
                        client,
                        &format!("obs://{k}"),
                        &root.join(&local),
                    )
                    .await
                    {
                        return Ended::failed(format!("input {name}: downloading {v}: {e}"));
                    }
                    staged_inputs.push((local.clone(), k));
                    StepData::Prefix(local)
                }
                (None, _) if path_like(v).is_some() => {
                    return Ended::failed(format!(
                        "input {name}: {v} is not a storage path this step may use (an empty, \
                         . or .. segment, or none after the bucket)"
                    ));
                }
                (None, _) => StepData::Value(v.clone()),
            };
            inputs.push((name.clone(), data));
        }
        let mut outputs = Vec::new();
        let mut paths = BTreeMap::new();
        for (name, path) in &resolved.outputs {
            let path = match path {
                Some(p) => p.clone(),
                None => Value::String(scratch_path(&task.run_id, &task.step, name)),
            };
            let Some(mut key) = storage_key(&path) else {
                return Ended::failed(format!(
                    "output {name}: {path} is not a storage path (/bucket/folder/)"
                ));
            };
            if s3.is_some() && path.as_str().is_some_and(|p| !p.starts_with("/.atelier/")) {
                let k = folder(&key);
                key = stage("out", &k);
                uploads.push((key.clone(), k));
            }
            if let Err(e) = make_dirs(&root, &key) {
                return Ended::failed(format!("output {name}: creating {path}: {e}"));
            }
            outputs.push((name.clone(), key));
            paths.insert(name.clone(), path);
        }
        let mut grants = Vec::new();
        for g in &props.grants {
            match storage_key(&g.path) {
                Some(k) if s3.is_some() => {
                    let k = folder(&k);
                    let local = stage(if g.write { "out" } else { "in" }, &k);
                    if let Some(client) = &s3
                        && let Err(e) = crate::training::runner::download_folder(
                            client,
                            &format!("obs://{k}"),
                            &root.join(&local),
                        )
                        .await
                    {
                        return Ended::failed(format!("grants: downloading {}: {e}", g.path));
                    }
                    if g.write {
                        uploads.push((local.clone(), k));
                    }
                    grants.push((local, g.write));
                }
                Some(k) => grants.push((k, g.write)),
                None => {
                    return Ended::failed(format!(
                        "grants: {} is not a storage path (/bucket/folder/)",
                        g.path
                    ));
                }
            }
        }
        let call = StepCall {
            plugin_name: props.plugin.clone(),
            plugin_version: props.version.clone(),
            workflow_name: task.workflow.name.clone(),
            execution_id: task.run_id.clone(),
            step_name: task.step.clone(),
            attempt: task.attempt,
            inputs,
            outputs,
            grants,
            parameters: props.parameters.clone().into_iter().collect::<Map<_, _>>(),
            deadline: Instant::now() + Duration::from_secs(max_minutes.saturating_mul(60)),
        };
        let report = match self.inner.plugins.run_step(owner, call).await {
            Ok(r) => r,
            Err(e) => return Ended::failed(e.to_string()),
        };
        let log = Some(report.log);
        if let Some(e) = report.error {
            return Ended {
                log,
                ..Ended::failed(e)
            };
        }
        if let Some(client) = &s3 {
            for (local, k) in &uploads {
                if let Err(e) = crate::training::runner::upload_dir(
                    client,
                    &root.join(local),
                    &format!("obs://{k}"),
                )
                .await
                {
                    return Ended {
                        log,
                        ..Ended::failed(format!("uploading /{k}: {e}"))
                    };
                }
            }
        }
        // A path the component returns in the staging area means its object-storage path.
        let unstage = |v: Value| match &v {
            Value::String(text) => uploads
                .iter()
                .chain(staged_inputs.iter())
                .find_map(|(local, k)| {
                    text.strip_prefix(local.as_str())
                        .map(|rest| json!(format!("/{k}{rest}")))
                })
                .unwrap_or(v),
            _ => v,
        };
        // A declared output with a path is that path (what later steps read); a value the
        // component returns stands for an output without one, or is added beside.
        let declared: Vec<&str> = resolved
            .outputs
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        let mut outputs: BTreeMap<String, Value> = paths;
        for (k, v) in report.outputs {
            if !declared.contains(&k.as_str()) {
                outputs.insert(k, unstage(v));
            }
        }
        let variables: BTreeMap<String, Value> = report
            .variables
            .into_iter()
            .map(|(k, v)| (k, unstage(Value::String(v))))
            .collect();
        Ended {
            status: StepStatus::Completed,
            reason: None,
            outputs: Some(json!(outputs)),
            variables: Some(json!(variables)),
            metrics: Some(json!(report.metrics)),
            log,
        }
    }

    /// A job step: its training job created (or found again), followed until it ends.
    fn spawn_job(
        &self,
        task: TaskRun,
        resolved: Option<ResolvedStep>,
        job_id: Option<String>,
        st: &mut RunState,
        d: &Driver,
    ) {
        self.spawn_step(task, st, d, move |this, task, stop| {
            Box::pin(async move { this.run_job(&task, resolved, job_id, stop).await })
        });
    }

    async fn run_job(
        &self,
        task: &TaskRun,
        resolved: Option<ResolvedStep>,
        job_id: Option<String>,
        stop: CancellationToken,
    ) -> Option<Ended> {
        let jobs = &self.inner.jobs;
        let step = task.workflow.step(&task.step)?;
        let poll = Duration::from_secs(step.policy.poll_interval_seconds.max(1)).min(JOB_POLL);
        let deadline = Instant::now()
            + Duration::from_secs(step.policy.max_execution_minutes.saturating_mul(60));
        let tag_run = ("workflow_run".to_owned(), task.run_id.clone());
        let id = match job_id {
            Some(id) => {
                let _ = self.set_child(task, "training_job", &id).await;
                id
            }
            None => {
                let resolved = resolved?;
                let mut req: CreateJob = match serde_json::from_value(resolved.properties) {
                    Ok(r) => r,
                    Err(e) => return Some(Ended::failed(format!("properties: {e}"))),
                };
                let name = req.name.clone().unwrap_or_else(|| {
                    job_name(
                        &task.workflow.name,
                        task.run_number,
                        &task.step,
                        task.attempt,
                    )
                });
                req.name = Some(name.clone());
                if req.connection.is_none()
                    && let Some(cid) = &task.connection_id
                {
                    req.connection = self.connection_name(cid).await;
                }
                // The seed's OBS paths (`/bucket/folder/`) as the job's URIs.
                for d in req.inputs.iter_mut().chain(req.outputs.iter_mut()) {
                    if let Some(rest) = d.path.strip_prefix('/') {
                        d.path = format!("obs://{rest}");
                    }
                }
                let code = req.custom.as_mut().and_then(|c| c.code_dir.as_mut());
                for p in [req.log_path.as_mut(), code].into_iter().flatten() {
                    if let Some(rest) = p.strip_prefix('/') {
                        *p = format!("obs://{rest}");
                    }
                }
                req.tags.insert(tag_run.0.clone(), tag_run.1.clone());
                req.tags.insert("workflow_step".into(), task.step.clone());
                // Created by an earlier gateway that died before recording it?
                let found = jobs
                    .get(&task.owner, &name)
                    .await
                    .ok()
                    .filter(|j| j.tags.get(&tag_run.0) == Some(&tag_run.1));
                let view = match found {
                    Some(v) => v,
                    None => match jobs.create(&task.owner, req).await {
                        Ok(v) => v,
                        Err(e) => {
                            return Some(Ended::failed(format!(
                                "creating its training job: {}",
                                crate::error::Error::from(e)
                            )));
                        }
                    },
                };
                if let Err(e) = self.set_child(task, "training_job", &view.id).await {
                    tracing::warn!(run = %task.run_id, step = %task.step, error = %e, "recording a step's job failed");
                }
                view.id
            }
        };
        let mut stopped = false;
        let mut late = false;
        loop {
            let view = match jobs.get(&task.owner, &id).await {
                Ok(v) => v,
                Err(e) => {
                    return Some(Ended::failed(format!(
                        "its training job {id}: {}",
                        crate::error::Error::from(e)
                    )));
                }
            };
            if view.status.is_terminal() {
                return Some(self.job_ended(task, &view, stopped, late).await);
            }
            if !stopped && (stop.is_cancelled() || Instant::now() >= deadline) {
                late = !stop.is_cancelled();
                stopped = true;
                let _ = jobs.stop(&task.owner, &id).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.cancelled(), if !stopped => {}
                // The job goes on; the next gateway finds it again.
                _ = self.inner.shutdown.cancelled() => return None,
            }
        }
    }

    async fn job_ended(
        &self,
        task: &TaskRun,
        view: &crate::training::jobs::JobView,
        stopped: bool,
        late: bool,
    ) -> Ended {
        use crate::lifecycle::training::JobStatus;
        let reason = view.status_reason.clone().unwrap_or_default();
        if stopped && !late {
            return Ended {
                status: StepStatus::Stopped,
                reason: Some(format!(
                    "stopped with the run; training job {} is {}",
                    view.name, view.status
                )),
                ..Ended::failed("")
            };
        }
        if view.status != JobStatus::Completed {
            return Ended::failed(format!(
                "training job {} is {}{}{}",
                view.name,
                view.status,
                if late {
                    " (stopped: it ran past the step's max_execution_minutes)"
                } else {
                    ""
                },
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            ));
        }
        let outputs: BTreeMap<String, Value> = view
            .outputs
            .iter()
            .map(|o| (o.name.clone(), Value::String(o.path.clone())))
            .collect();
        let mut metrics = BTreeMap::new();
        if let Ok(points) = self
            .inner
            .jobs
            .metrics(&task.owner, &view.id, None, false)
            .await
        {
            for p in points {
                metrics.insert(p.name, p.value);
            }
        }
        Ended {
            status: StepStatus::Completed,
            reason: Some(format!("training job {} COMPLETED", view.name)),
            outputs: Some(json!(outputs)),
            variables: Some(json!({ "job_id": view.id, "job_name": view.name })),
            metrics: Some(json!(metrics)),
            log: None,
        }
    }

    /// A model step: a version of the model named (a new model when the owner has none of
    /// that name), followed until its import ends.
    async fn run_model(
        &self,
        task: &TaskRun,
        resolved: ResolvedStep,
        child: Option<String>,
        stop: CancellationToken,
    ) -> Option<Ended> {
        let models = &self.inner.models;
        let who = &task.owner;
        let (mut props, name) = match named_body(resolved.properties, "model create") {
            Ok(x) => x,
            Err(e) => return Some(Ended::failed(e)),
        };
        if let Some(cid) = &task.connection_id
            && let Some(Value::Object(src)) = props.get_mut("source")
            && src.get("type").and_then(Value::as_str) == Some("obs")
        {
            if !src.contains_key("connection")
                && let Some(n) = self.connection_name(cid).await
            {
                src.insert("connection".into(), json!(n));
            }
            if let Some(p) = src.get("path").and_then(Value::as_str)
                && let Some(rest) = p.strip_prefix('/')
            {
                let uri = format!("obs://{rest}");
                src.insert("path".into(), json!(uri));
            }
        }
        // (model id, version): the one an earlier attempt registered, or a new one.
        let (model_id, version) = match child.as_deref().and_then(|c| c.split_once('/')) {
            Some((m, v)) => (m.to_owned(), v.to_owned()),
            None => {
                let existing = models.get(who, &name).await.is_ok();
                let created = if existing {
                    props.remove("name");
                    match serde_json::from_value::<crate::models::CreateVersion>(Value::Object(
                        props,
                    )) {
                        Ok(req) => models.create_version(who, &name, req).await,
                        Err(e) => {
                            return Some(Ended::failed(format!("properties (a new version): {e}")));
                        }
                    }
                } else {
                    match serde_json::from_value::<crate::models::CreateModel>(Value::Object(props))
                    {
                        Ok(req) => models.create(who, req).await.map(|(_, v)| v),
                        Err(e) => return Some(Ended::failed(format!("properties: {e}"))),
                    }
                };
                let v = match created {
                    Ok(v) => v,
                    Err(e) => return Some(Ended::failed(format!("registering model {name}: {e}"))),
                };
                (v.model_id, v.version)
            }
        };
        let _ = self
            .set_child(task, "model_version", &format!("{model_id}/{version}"))
            .await;
        loop {
            let now = match models.version(who, &model_id, &version).await {
                Ok(x) => x,
                Err(e) => return Some(Ended::failed(format!("model {name} {version}: {e}"))),
            };
            match now.status {
                crate::lifecycle::model::ModelStatus::Normal => {
                    let value = json!({"model": name, "version": now.version,
                                       "model_id": now.model_id, "version_id": now.id});
                    let outputs: BTreeMap<String, Value> = task
                        .workflow
                        .step(&task.step)
                        .map(|s| {
                            s.outputs
                                .iter()
                                .map(|o| (o.name.clone(), value.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Some(Ended {
                        status: StepStatus::Completed,
                        reason: Some(format!("model {name} version {} is NORMAL", now.version)),
                        outputs: Some(json!(outputs)),
                        variables: Some(json!({"model_name": name, "model_version": now.version,
                                               "model_id": now.model_id, "version_id": now.id})),
                        metrics: None,
                        log: None,
                    });
                }
                crate::lifecycle::model::ModelStatus::Failed => {
                    return Some(Ended::failed(format!(
                        "model {name} version {} FAILED: {}",
                        now.version,
                        now.error.unwrap_or_default()
                    )));
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(JOB_POLL) => {}
                _ = stop.cancelled() => {
                    return Some(Ended {
                        status: StepStatus::Stopped,
                        reason: Some(format!("stopped with the run while model {name} {version} imported")),
                        ..Ended::failed("")
                    });
                }
                _ = self.inner.shutdown.cancelled() => return None,
            }
        }
    }

    /// A service step: the service named deployed (or, when the owner has one of that name,
    /// updated), followed until it runs; its `access_address` for later steps.
    async fn run_service(
        &self,
        task: &TaskRun,
        resolved: ResolvedStep,
        child: Option<String>,
        stop: CancellationToken,
    ) -> Option<Ended> {
        use crate::lifecycle::service::ServiceStatus;
        let services = &self.inner.services;
        let who = &task.owner;
        let (mut props, name) = match named_body(resolved.properties, "service deploy") {
            Ok(x) => x,
            Err(e) => return Some(Ended::failed(e)),
        };
        // The service an earlier attempt deployed, or deployed (updated) now.
        let service_id = match child {
            Some(id) => id,
            None => {
                let existing = services.get(who, &name).await.ok();
                let deployed = match existing {
                    Some(_) => {
                        props.remove("name");
                        match serde_json::from_value::<crate::serving::spec::UpdateService>(
                            Value::Object(props),
                        ) {
                            Ok(req) => services.update(who, &name, req).await,
                            Err(e) => {
                                return Some(Ended::failed(format!("properties (an update): {e}")));
                            }
                        }
                    }
                    None => match serde_json::from_value::<crate::serving::spec::DeployService>(
                        Value::Object(props),
                    ) {
                        Ok(req) => services.deploy(who, req).await,
                        Err(e) => return Some(Ended::failed(format!("properties: {e}"))),
                    },
                };
                let view = match deployed {
                    Ok(v) => v,
                    Err(e) => return Some(Ended::failed(format!("deploying service {name}: {e}"))),
                };
                view.id
            }
        };
        let _ = self.set_child(task, "service", &service_id).await;
        let mut stopped = false;
        loop {
            let now = match services.get(who, &service_id).await {
                Ok(x) => x,
                Err(e) => return Some(Ended::failed(format!("service {name}: {e}"))),
            };
            match now.status {
                ServiceStatus::Running | ServiceStatus::Alarm if !stopped => {
                    let address =
                        format!("{}{}", self.inner.base_url.trim_end_matches('/'), now.url);
                    let outputs: BTreeMap<String, Value> = task
                        .workflow
                        .step(&task.step)
                        .map(|s| {
                            s.outputs
                                .iter()
                                .map(|o| (o.name.clone(), json!(address)))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Some(Ended {
                        status: StepStatus::Completed,
                        reason: Some(format!("service {name} is {}", now.status)),
                        outputs: Some(json!(outputs)),
                        variables: Some(json!({"access_address": address, "service_id": now.id,
                                               "service_name": name})),
                        metrics: None,
                        log: None,
                    });
                }
                ServiceStatus::Failed | ServiceStatus::Abnormal => {
                    return Some(Ended::failed(format!(
                        "service {name} is {}: {}",
                        now.status,
                        now.status_reason.unwrap_or_default()
                    )));
                }
                ServiceStatus::Stopped if stopped => {
                    return Some(Ended {
                        status: StepStatus::Stopped,
                        reason: Some(format!("stopped with the run; service {name} is STOPPED")),
                        ..Ended::failed("")
                    });
                }
                _ => {}
            }
            if stop.is_cancelled() && !stopped {
                stopped = true;
                if let Err(e) = services.stop(who, &service_id).await {
                    return Some(Ended {
                        status: StepStatus::Stopped,
                        reason: Some(format!(
                            "stopped with the run; stopping service {name}: {e}"
                        )),
                        ..Ended::failed("")
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(JOB_POLL) => {}
                _ = stop.cancelled(), if !stopped => {}
                _ = self.inner.shutdown.cancelled() => return None,
            }
        }
    }

    async fn set_child(&self, task: &TaskRun, kind: &str, id: &str) -> anyhow::Result<()> {
        let mut tx = self.inner.store.write().await?;
        rows::set_child(&mut tx, &task.run_id, &task.step, kind, id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn connection_name(&self, id: &str) -> Option<String> {
        let mut conn = self.inner.store.pool.acquire().await.ok()?;
        crate::store::storage_connections::by_id(&mut conn, id)
            .await
            .ok()
            .flatten()
            .map(|c| c.name)
    }

    /// The metric values conditions may ask for, of steps that completed: from the
    /// output's metrics files, or what the step reported.
    async fn metric_facts(
        &self,
        wf: &Workflow,
        run: &RunRow,
        steps: &BTreeMap<&str, &StepRow>,
        cache: &mut MetricCache,
    ) -> MetricFacts {
        let mut out = HashMap::new();
        for s in &wf.steps {
            for (_, c) in s.conditions() {
                for leaf in c.leaves() {
                    let condition::Operand::Metric(m) = leaf else {
                        continue;
                    };
                    let key = (m.step.clone(), m.output.clone(), m.json_key.clone());
                    if out.contains_key(&key) {
                        continue;
                    }
                    let Some(r) = steps.get(m.step.as_str()) else {
                        continue;
                    };
                    if r.status != StepStatus::Completed {
                        continue;
                    }
                    let value = match cache.get(&key) {
                        Some((started, v)) if *started == r.started_at => v.clone(),
                        _ => {
                            let v = self.metric(run, r, m).await;
                            cache.insert(key.clone(), (r.started_at.clone(), v.clone()));
                            v
                        }
                    };
                    out.insert(key, value);
                }
            }
        }
        out
    }

    async fn metric(&self, run: &RunRow, r: &StepRow, m: &MetricRef) -> Result<f64, String> {
        let resolved: Value = r
            .inputs
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let files: Vec<Value> = resolved
            .get("metric_files")
            .and_then(|f| f.get(&m.output))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let root = self.inner.plugins.storage_root(&run.owner_id);
        let s3 = match &run.connection_id {
            Some(cid) => Some(crate::training::runner::client(&self.inner.jobs, cid).await?),
            None => None,
        };
        let mut last_error = None;
        for f in &files {
            let Some(key) = storage_key(f) else { continue };
            let read = match &s3 {
                Some(client) => read_object(client, &key, METRIC_FILE_BYTES).await,
                None => read_small(&root, &key, METRIC_FILE_BYTES).map_err(|e| e.to_string()),
            };
            match read {
                Ok(bytes) => match condition::metric_from_file(&bytes, &m.json_key) {
                    Ok(v) => return Ok(v),
                    Err(e) => last_error = Some(format!("{f}: {e}")),
                },
                Err(e) => last_error = Some(format!("{f}: {e}")),
            }
        }
        if let Some(v) = decode_object(r.metrics.as_deref())
            .get(&m.json_key)
            .and_then(Value::as_f64)
        {
            return Ok(v);
        }
        Err(last_error.unwrap_or_else(|| {
            format!(
                "step {} reported no metric {} (and output {} has no metrics file)",
                m.step, m.json_key, m.output
            )
        }))
    }
}

type MetricFacts = HashMap<(String, String, String), Result<f64, String>>;
/// Per metric: the start of the step attempt it was read from, and what was read.
type MetricCache = HashMap<(String, String, String), (Option<String>, Result<f64, String>)>;

/// What conditions are evaluated against: the run's parameters and the metrics fetched.
struct Known<'a> {
    parameters: &'a BTreeMap<String, Value>,
    metrics: &'a MetricFacts,
}

impl Known<'_> {
    fn with<R>(&self, f: impl FnOnce(&Facts) -> R) -> R {
        let lookup = |m: &MetricRef| {
            self.metrics
                .get(&(m.step.clone(), m.output.clone(), m.json_key.clone()))
                .cloned()
                .unwrap_or_else(|| Err(format!("step {} has no metrics yet", m.step)))
        };
        f(&Facts {
            parameters: self.parameters,
            metric: &lookup,
        })
    }
}

/// A step recorded RUNNING in a pass, run once the pass commits.
type Started<'a> = (&'a StepRow, &'a super::definition::Step, ResolvedStep);

/// Starts steps (each from where it is: PENDING, AWAITING_INPUT, or RUNNING left by an
/// earlier gateway): their references resolved and recorded RUNNING (compare-and-set: a
/// step starts once; several in one transaction), added to `started`, which run once
/// recorded. Returns whether some were decided here (FAILED: a reference that cannot be
/// resolved).
async fn launch<'a>(
    conn: &mut crate::store::Conn,
    run: &RunRow,
    wf: &'a Arc<Workflow>,
    batch: &[&'a StepRow],
    scope: &Scope<'_>,
    started: &mut Vec<Started<'a>>,
) -> anyhow::Result<bool> {
    if batch.len() > 1 {
        // Parallel branches start together: one transaction records them all.
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let mut decided = false;
        for r in batch {
            decided |= Box::pin(launch(&mut tx, run, wf, &[*r], scope, started)).await?;
        }
        tx.commit().await?;
        return Ok(decided);
    }
    let at = now();
    let mut decided = false;
    for r in batch {
        let Some(step) = wf.step(&r.name) else {
            continue;
        };
        match params::resolve_step(step, scope) {
            Ok(resolved) => {
                let text = serde_json::to_string(&resolved)?;
                if rows::start_step(conn, &run.id, &r.name, &[r.status], &text, &at).await? {
                    started.push((*r, step, resolved));
                }
            }
            Err(e) => {
                decided = true;
                rows::set_step(
                    conn,
                    &run.id,
                    &r.name,
                    &[r.status],
                    StepStatus::Failed,
                    Some(&e.to_string()),
                    &at,
                )
                .await?;
            }
        }
    }
    Ok(decided)
}

/// Writes how a step ended (RUNNING or STOPPING → its end).
async fn write_end(
    conn: &mut crate::store::Conn,
    task: &TaskRun,
    e: &Ended,
    at: &str,
) -> anyhow::Result<bool> {
    let text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    let (outputs, variables, metrics) = (text(&e.outputs), text(&e.variables), text(&e.metrics));
    let log = e.log.as_deref().map(|l| tail(l, STEP_LOG_BYTES));
    Ok(rows::end_step(
        conn,
        &task.run_id,
        &task.step,
        &[StepStatus::Running, StepStatus::Stopping],
        StepEnd {
            status: e.status,
            reason: e.reason.as_deref(),
            outputs: outputs.as_deref(),
            variables: variables.as_deref(),
            metrics: metrics.as_deref(),
            log: log.as_deref(),
        },
        at,
    )
    .await?)
}

/// The run's owner, as the steps act (a user's rights, never more).
async fn owner_of(conn: &mut crate::store::Conn, user_id: &str) -> anyhow::Result<Principal> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(Principal {
        user_id: user_id.to_owned(),
        name: name.unwrap_or_else(|| user_id.to_owned()),
        role: Role::User,
        token_id: String::new(),
    })
}

/// The run's values as stored.
pub fn run_values(run: &RunRow) -> anyhow::Result<RunValues> {
    Ok(RunValues {
        parameters: serde_json::from_str(&run.parameters)?,
        awaiting: serde_json::from_str(&run.awaiting)?,
        storages: serde_json::from_str(&run.storages)?,
    })
}

fn decode_object(text: Option<&str>) -> Map<String, Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

fn produced_of(r: &StepRow) -> Produced {
    Produced {
        outputs: decode_object(r.outputs.as_deref()).into_iter().collect(),
        variables: decode_object(r.variables.as_deref())
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
    }
}

/// `<workflow>-<run>-<step>` (with `-r<attempt>` on a retry), as a job name (1-64 of
/// `A-Z a-z 0-9 _ -`).
fn job_name(workflow: &str, run: i64, step: &str, attempt: u32) -> String {
    let mut name = format!("{workflow}-{run}-{step}");
    if attempt > 0 {
        name.push_str(&format!("-r{attempt}"));
    }
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= 64 {
        return clean;
    }
    // Too long: a digest keeps names of different steps apart.
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(clean.as_bytes()));
    format!("{}-{}", &clean[..55], &h[..8])
}

/// The last `max` bytes of `s` (on a character boundary).
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// Creates `key` (a folder) under the owner's storage `root`, never following a link.
fn make_dirs(root: &std::path::Path, key: &str) -> std::io::Result<()> {
    let rel = key.trim_end_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(root)?;
    let dir = crate::confined::Dir::open(root)?;
    dir.create_dir_all(std::path::Path::new(rel), None)?;
    Ok(())
}

/// A model or service step's properties: the request body and the name it gives.
fn named_body(properties: Value, request: &str) -> Result<(Map<String, Value>, String), String> {
    let Value::Object(body) = properties else {
        return Err(format!("properties: the body of a {request} request"));
    };
    match body.get("name").and_then(Value::as_str) {
        Some(n) => {
            let name = n.to_owned();
            Ok((body, name))
        }
        None => Err("properties.name: a name is required".into()),
    }
}

/// `bucket/key` as a folder (`bucket/key/`).
fn folder(key: &str) -> String {
    if key.ends_with('/') {
        key.to_owned()
    } else {
        format!("{key}/")
    }
}

/// A small object of the run's storage connection (`bucket/key`), at most `max` bytes.
async fn read_object(client: &aws_sdk_s3::Client, key: &str, max: u64) -> Result<Vec<u8>, String> {
    let (bucket, k) = key.split_once('/').ok_or("not an object path")?;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(k)
        .send()
        .await
        .map_err(|e| crate::object_storage::transfer::s3_error(&e, "reading"))?;
    if out.content_length().unwrap_or(0) as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .into_bytes();
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes.to_vec())
}

/// Removes `name` under `dir` (a tree of the owner's storage), never following a link.
fn remove_tree(dir: &std::path::Path, name: &str) -> std::io::Result<()> {
    let d = crate::confined::Dir::open(dir)?;
    remove_in(&d, std::ffi::OsStr::new(name))
}

fn remove_in(d: &crate::confined::Dir, name: &std::ffi::OsStr) -> std::io::Result<()> {
    match d.file_type(name)? {
        None => Ok(()),
        Some((t, _)) if t.is_dir() => {
            let sub = d.open_dir(std::path::Path::new(name))?;
            for e in sub.entries(100_000)? {
                remove_in(&sub, &e)?;
            }
            d.remove_dir(name)
        }
        Some(_) => d.remove_file(name),
    }
}

/// Reads a small object of the owner's storage, never following a link.
fn read_small(root: &std::path::Path, key: &str, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let path = std::path::Path::new(key);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not an object"));
    };
    let dir = crate::confined::Dir::open(root)?;
    let dir = if parent.as_os_str().is_empty() {
        dir
    } else {
        dir.open_dir(parent)?
    };
    let f = dir.open_read(name)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_paths_and_job_names() {
        assert_eq!(storage_key(&json!("/b/x/")).as_deref(), Some("b/x/"));
        assert_eq!(storage_key(&json!("obs://b/x")).as_deref(), Some("b/x"));
        assert_eq!(storage_key(&json!("plain")), None);
        assert_eq!(storage_key(&json!(3)), None);
        // Never a way out of the owner's storage (or into the gateway's files).
        for hostile in [
            "/../other-user/x/",
            "obs://b/../../etc/",
            "/b/./x",
            "/b//x/",
            "//etc/passwd",
            "s3://b/x\\..\\y",
            "/",
            "/b/x\u{0}",
        ] {
            assert_eq!(storage_key(&json!(hostile)), None, "{hostile}");
            assert!(path_like(&json!(hostile)).is_some(), "{hostile}");
        }
        assert_eq!(job_name("etl", 3, "train", 0), "etl-3-train");
        assert_eq!(job_name("etl", 3, "train", 2), "etl-3-train-r2");
        let long = job_name(&"w".repeat(64), 1, &"s".repeat(64), 0);
        assert_eq!(long.len(), 64);
        assert_ne!(long, job_name(&"w".repeat(64), 1, &"s".repeat(63), 0));
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("é日本", 4), "本");
    }

    #[test]
    fn make_dirs_does_not_follow_a_planted_link() {
        let base = std::env::temp_dir().join(format!("atelier-wfrun-{}", uuid::Uuid::new_v4()));
        let (root, outside) = (Dir(base.join("root")), Dir(base.join("outside")));
        std::fs::create_dir_all(root.path()).unwrap();
        std::fs::create_dir_all(outside.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("bkt")).unwrap();
        assert!(make_dirs(root.path(), "bkt/run/out/").is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        std::fs::write(outside.path().join("m.json"), "[]").unwrap();
        assert!(read_small(root.path(), "bkt/m.json", 10).is_err());
        make_dirs(root.path(), "ok/a/b/").unwrap();
        assert!(root.path().join("ok/a/b").is_dir());
        std::fs::write(root.path().join("ok/a/m.json"), "0123456789AB").unwrap();
        assert!(read_small(root.path(), "ok/a/m.json", 10).is_err());
        assert_eq!(
            read_small(root.path(), "ok/a/m.json", 12).unwrap().len(),
            12
        );
        let _ = std::fs::remove_dir_all(base);
    }

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
}
