//! A workflow's runs (`/v1/workflows/{wf}/runs`): start one (parameters and storage roots
//! checked whole before anything is written; one active run per workflow, as the seed),
//! look at it and its steps, stop it, retry a failed step, give a waiting step its values,
//! compare runs, delete records. The engine ([`super::runner`]) does the running.
//!
//! ```text
//! POST …/runs {parameters, storages, scenes, steps, version?, tags}
//!      ─► resolve_run (every problem named) ─► one transaction: the run (409 while
//!         another is active), its steps PENDING, the audit row ─► the engine drives it
//! POST …/runs/{n}/stop        RUNNING | AWAITING_INPUT ─► STOPPING (the engine stops it)
//! POST …/runs/{n}/retry       FAILED | STOPPED ─► RUNNING: the failed and stopped steps and
//!                             what follows them back to PENDING (finished ones stay)
//! POST …/runs/{n}/steps/{s}/retry   the same, for one step and what follows it
//! POST …/runs/{n}/steps/{s}/proceed {values}   a waiting step's delayed parameters
//! DELETE …/runs/{n}           an ended run's record, and its scratch outputs
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::dag;
use super::definition::Workflow;
use super::params;
use super::service::{WorkflowError, Workflows, refused, target};
use crate::auth::Principal;
use crate::error::ResourceError;
use crate::lifecycle::Operation;
use crate::lifecycle::workflow::{RunOp, RunStatus, StepStatus};
use crate::store::audit::{self, Action};
use crate::store::now;
use crate::store::workflows::{self as rows, RunRow, StepRow, WorkflowRow};

/// A run record kept per workflow at most (the oldest ended ones go first).
pub const MAX_RUN_RECORDS: usize = 1000;

/// `POST /v1/workflows/{wf}/runs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Parameter values by name (the others take their defaults).
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Each storage's root (`/bucket/folder/`), by storage name (the others their default).
    #[serde(default)]
    pub storages: BTreeMap<String, String>,
    /// Partial execution: run only the steps of these scenes (the others are skipped).
    #[serde(default)]
    pub scenes: Vec<String>,
    /// Partial execution: run only these steps (with the scenes' steps).
    #[serde(default)]
    pub steps: Vec<String>,
    /// The version to run (default: the newest).
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// One of your storage connections: the run's storage paths (`/bucket/folder/`) are in
    /// its object storage (wasm steps' folders staged through the run's scratch area; job
    /// steps that name no connection use it). None: your own storage in the gateway.
    #[serde(default)]
    pub connection: Option<String>,
}

/// Which runs a list shows (AC-27).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    /// Every one of these `key=value` tags.
    pub tags: BTreeMap<String, String>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub workflow: String,
    pub workflow_id: String,
    pub number: i64,
    pub version: i64,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The resolved values (defaults filled in; delayed ones once given).
    pub parameters: Value,
    /// Delayed parameters still awaited.
    pub awaiting: Vec<String>,
    pub storages: Value,
    /// The storage connection its paths are in (absent: the owner's own storage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The steps a partial run selected (absent: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<Vec<String>>,
    pub tags: Value,
    /// `api`, `rerun`, `schedule` or `webhook`.
    pub trigger: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub steps: Vec<StepView>,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub name: String,
    pub step_type: String,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// 0, one more on each retry.
    pub attempt: i64,
    /// The step's values with references resolved (inputs, output paths, properties).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// What it started (`{"kind": "training_job", "id"}`), stopped with the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

/// Runs side by side: per run its parameters and each step's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub runs: Vec<ComparedRun>,
    /// Every `step/metric` any of them has, in order.
    pub metrics: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComparedRun {
    pub number: i64,
    pub version: i64,
    pub status: RunStatus,
    pub parameters: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// `step/metric` → value.
    pub metrics: BTreeMap<String, f64>,
}

fn decode(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

fn millis_between(a: &str, b: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(a, &Rfc3339).ok()?;
    let b = time::OffsetDateTime::parse(b, &Rfc3339).ok()?;
    i64::try_from((b - a).whole_milliseconds()).ok()
}

fn step_view(wf: Option<&Workflow>, s: StepRow) -> StepView {
    let step_type = wf
        .and_then(|w| w.step(&s.name))
        .map(|st| st.step_type().as_str().to_owned())
        .unwrap_or_default();
    let duration_ms = match (&s.started_at, &s.ended_at) {
        (Some(a), Some(b)) => millis_between(a, b),
        _ => None,
    };
    StepView {
        step_type,
        status: s.status,
        reason: s.reason,
        attempt: s.attempt,
        resolved: decode(s.inputs.as_deref()),
        outputs: decode(s.outputs.as_deref()),
        variables: decode(s.variables.as_deref()),
        metrics: decode(s.metrics.as_deref()),
        child: s
            .child_kind
            .zip(s.child_id)
            .map(|(kind, id)| serde_json::json!({ "kind": kind, "id": id })),
        started_at: s.started_at,
        ended_at: s.ended_at,
        duration_ms,
        name: s.name,
    }
}

/// A run's number (`3`) or id.
fn by_number(key: &str) -> Option<i64> {
    key.parse().ok()
}

impl Workflows {
    /// Starts a run of the workflow `key`.
    pub async fn start_run(
        &self,
        who: &Principal,
        key: &str,
        req: StartRun,
    ) -> Result<RunView, WorkflowError> {
        let w = self.find(who, key).await?;
        self.start(who, &w, req, "api").await
    }

    /// Starts a run with an earlier run's parameters, storages, selection and version.
    pub async fn rerun(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
    ) -> Result<RunView, WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        let parameters: Map<String, Value> = serde_json::from_str(&r.parameters)
            .map_err(|e| anyhow::anyhow!("run {}: parameters: {e}", r.id))?;
        let storages: BTreeMap<String, String> = serde_json::from_str(&r.storages)
            .map_err(|e| anyhow::anyhow!("run {}: storages: {e}", r.id))?;
        let steps: Vec<String> = r
            .selected
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| anyhow::anyhow!("run {}: selected: {e}", r.id))?
            .unwrap_or_default();
        let tags: BTreeMap<String, String> = serde_json::from_str(&r.tags).unwrap_or_default();
        let connection = match &r.connection_id {
            Some(id) => {
                let mut conn = self.inner.store.pool.acquire().await?;
                Some(
                    crate::store::storage_connections::by_id(&mut conn, id)
                        .await?
                        .ok_or_else(|| {
                            ResourceError::Conflict(format!(
                                "run {} used a storage connection that was deleted; start a run naming another",
                                r.number
                            ))
                        })?
                        .name,
                )
            }
            None => None,
        };
        let req = StartRun {
            parameters,
            storages,
            scenes: Vec::new(),
            steps,
            version: Some(r.version),
            tags,
            connection,
        };
        self.start(who, &w, req, "rerun").await
    }

    pub(super) async fn start(
        &self,
        who: &Principal,
        w: &WorkflowRow,
        req: StartRun,
        trigger: &str,
    ) -> Result<RunView, WorkflowError> {
        let version = req.version.unwrap_or(w.latest_version);
        let wf = self.definition(w, version).await?;
        let values = params::resolve_run(&wf, &req.parameters, &req.storages).map_err(refused)?;
        let mut selected = dag::selection(&wf, &req.scenes)
            .map_err(|e| refused(vec![e]))?
            .unwrap_or_default();
        for (i, s) in req.steps.iter().enumerate() {
            if wf.step(s).is_none() {
                return Err(ResourceError::Invalid(format!(
                    "steps[{i}]: the workflow has no step {s:?}"
                )));
            }
            selected.insert(s.clone());
        }
        let partial = !(req.scenes.is_empty() && req.steps.is_empty());
        check_tags(&req.tags)?;
        let connection_id = match &req.connection {
            Some(name) => {
                let mut conn = self.inner.store.pool.acquire().await?;
                Some(
                    crate::store::storage_connections::by_name(&mut conn, &w.owner_id, name)
                        .await?
                        .ok_or_else(|| {
                            ResourceError::Invalid(format!(
                                "connection: you have no storage connection named {name:?} (atelier storage list)"
                            ))
                        })?
                        .id,
                )
            }
            None => None,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let t = now();
        let selected_text = partial.then(|| json(&selected));
        let names: Vec<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
        let mut tx = self.inner.store.write().await?;
        let started = rows::start_run(
            &mut tx,
            rows::NewRun {
                id: &id,
                workflow_id: &w.id,
                owner_id: &w.owner_id,
                version,
                parameters: &json(&values.parameters),
                selected: selected_text.as_deref(),
                tags: &json(&req.tags),
                storages: &json(&values.storages),
                awaiting: &json(&values.awaiting),
                connection_id: connection_id.as_deref(),
                trigger,
                now: &t,
            },
        )
        .await?;
        let number = match started {
            rows::Started::Number(n) => n,
            rows::Started::Busy(n) => {
                return Err(ResourceError::Conflict(format!(
                    "workflow {} has run {n} under way (one run at a time, as the seed: wait for \
                     it, stop it, or copy the workflow under another name to run both)",
                    w.name
                )));
            }
        };
        rows::insert_steps(&mut tx, &id, &names).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::StartWorkflowRun,
            target(w),
            "accepted",
            Some(&format!("run {number} of version {version} ({trigger})")),
        )
        .await?;
        let pruned = rows::prune_runs(&mut tx, &w.id, MAX_RUN_RECORDS).await?;
        tx.commit().await?;
        for old in pruned {
            self.inner.engine.remove_scratch(&w.owner_id, &old).await;
        }
        self.inner.engine.drive(&id);
        self.run_view(w, &id).await
    }

    async fn definition(&self, w: &WorkflowRow, version: i64) -> Result<Workflow, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let v = rows::version(&mut conn, &w.id, version)
            .await?
            .ok_or_else(|| {
                ResourceError::Invalid(format!(
                    "version: workflow {} has no version {version} (its versions are 1 to {})",
                    w.name, w.latest_version
                ))
            })?;
        Ok(serde_json::from_str(&v.definition)
            .map_err(|e| anyhow::anyhow!("workflow {} version {version}: {e}", w.id))?)
    }

    /// The caller's workflow `key` and its run `run` (a number or an id).
    async fn find_run(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
    ) -> Result<(WorkflowRow, RunRow), WorkflowError> {
        let w = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let found = match by_number(run) {
            Some(n) => rows::run_by_number(&mut conn, &w.id, n).await?,
            None => rows::run_by_id(&mut conn, run)
                .await?
                .filter(|r| r.workflow_id == w.id),
        };
        let r = found.ok_or_else(|| {
            ResourceError::NotFound(format!("workflow {} has no run {run}", w.name))
        })?;
        Ok((w, r))
    }

    async fn run_view(&self, w: &WorkflowRow, id: &str) -> Result<RunView, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let r = rows::run_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| ResourceError::NotFound(format!("run {id} not found")))?;
        let steps = rows::step_states(&mut conn, id).await?;
        drop(conn);
        let wf = self.definition(w, r.version).await.ok();
        Ok(view(w, r, steps, wf.as_ref()))
    }

    /// The workflow's runs, newest first (with their steps).
    pub async fn runs(&self, who: &Principal, key: &str) -> Result<Vec<RunView>, WorkflowError> {
        self.runs_where(who, key, &RunFilter::default()).await
    }

    /// The workflow's runs with `filter`'s status and tags, newest first.
    pub async fn runs_where(
        &self,
        who: &Principal,
        key: &str,
        filter: &RunFilter,
    ) -> Result<Vec<RunView>, WorkflowError> {
        let w = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let runs: Vec<RunRow> = rows::runs(&mut conn, &w.id)
            .await?
            .into_iter()
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .filter(|r| {
                let tags: BTreeMap<String, String> =
                    serde_json::from_str(&r.tags).unwrap_or_default();
                filter.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
            })
            .collect();
        let mut defs: BTreeMap<i64, Option<Workflow>> = BTreeMap::new();
        let mut out = Vec::with_capacity(runs.len());
        for r in runs {
            let steps = rows::step_states(&mut conn, &r.id).await?;
            if let std::collections::btree_map::Entry::Vacant(e) = defs.entry(r.version) {
                let d = rows::version(&mut conn, &w.id, r.version)
                    .await?
                    .and_then(|v| serde_json::from_str(&v.definition).ok());
                e.insert(d);
            }
            let wf = defs.get(&r.version).and_then(Option::as_ref);
            out.push(view(&w, r, steps, wf));
        }
        Ok(out)
    }

    pub async fn run(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
    ) -> Result<RunView, WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        self.run_view(&w, &r.id).await
    }

    /// A step's log (the tail its record keeps).
    pub async fn step_log(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
        step: &str,
    ) -> Result<String, WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let s = rows::steps(&mut conn, &r.id)
            .await?
            .into_iter()
            .find(|s| s.name == step)
            .ok_or_else(|| {
                ResourceError::NotFound(format!("workflow {} has no step {step:?}", w.name))
            })?;
        Ok(s.log.unwrap_or_default())
    }

    /// Stops a run: its steps are stopped (the training jobs it started with them).
    pub async fn stop_run(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
    ) -> Result<RunView, WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        let name = format!("{} run {}", w.name, r.number);
        RunOp::Stop
            .check(&name, r.status)
            .map_err(|e| ResourceError::Conflict(e.message))?;
        let mut tx = self.inner.store.write().await?;
        let moved = rows::set_run_status(
            &mut tx,
            &r.id,
            RunOp::Stop.allowed_from(),
            RunStatus::Stopping,
            Some("stopping: asked by its owner"),
            &now(),
        )
        .await?;
        if !moved {
            return Err(ResourceError::Conflict(format!(
                "{name} changed meanwhile; look again"
            )));
        }
        let detail = &format!("run {}", r.number);
        self.commit_and_drive(tx, who, &w, &r, Action::StopWorkflowRun, detail)
            .await
    }

    /// The end of an operation on a run: its audit row, the commit, the engine woken, the
    /// run as it is now.
    async fn commit_and_drive(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        who: &Principal,
        w: &WorkflowRow,
        r: &RunRow,
        action: Action,
        detail: &str,
    ) -> Result<RunView, WorkflowError> {
        audit::record(
            &mut tx,
            &who.name,
            action,
            target(w),
            "accepted",
            Some(detail),
        )
        .await?;
        tx.commit().await?;
        self.inner.engine.drive(&r.id);
        self.run_view(w, &r.id).await
    }

    /// Goes on with a failed or stopped run: `step` (or every failed and stopped step) and
    /// what follows it run again; steps that completed are not run again.
    pub async fn retry_run(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
        step: Option<&str>,
    ) -> Result<RunView, WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        let name = format!("{} run {}", w.name, r.number);
        RunOp::Retry
            .check(&name, r.status)
            .map_err(|e| ResourceError::Conflict(e.message))?;
        let wf = self.definition(&w, r.version).await?;
        let steps = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::step_states(&mut conn, &r.id).await?
        };
        let status: BTreeMap<&str, StepStatus> =
            steps.iter().map(|s| (s.name.as_str(), s.status)).collect();
        let retried: Vec<&str> = match step {
            Some(s) => {
                let st = status.get(s).ok_or_else(|| {
                    ResourceError::NotFound(format!("workflow {} has no step {s:?}", w.name))
                })?;
                if !matches!(st, StepStatus::Failed | StepStatus::Stopped) {
                    return Err(ResourceError::Conflict(format!(
                        "step {s} of {name} is {st}; a failed or stopped step is retried"
                    )));
                }
                vec![s]
            }
            None => steps
                .iter()
                .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Stopped))
                .map(|s| s.name.as_str())
                .collect(),
        };
        let mut reset: BTreeSet<&str> = BTreeSet::new();
        for s in &retried {
            reset.insert(s);
            reset.extend(dag::descendants(&wf, s));
        }
        let reset: Vec<&str> = reset.into_iter().collect();
        let t = now();
        let mut tx = self.inner.store.write().await?;
        let moved = rows::set_run_status(
            &mut tx,
            &r.id,
            RunOp::Retry.allowed_from(),
            RunStatus::Running,
            None,
            &t,
        )
        .await;
        match moved {
            Ok(true) => {}
            Ok(false) => {
                return Err(ResourceError::Conflict(format!(
                    "{name} changed meanwhile; look again"
                )));
            }
            // The unique index: another run of the workflow started meanwhile.
            Err(e) if is_unique_violation(&e) => {
                return Err(ResourceError::Conflict(format!(
                    "workflow {} has another run under way; retry this one after it ends",
                    w.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        rows::reset_steps(&mut tx, &r.id, &reset).await?;
        let detail = &format!("run {}: {}", r.number, retried.join(", "));
        self.commit_and_drive(tx, who, &w, &r, Action::RetryWorkflowRun, detail)
            .await
    }

    /// Gives a waiting step its delayed parameters' values.
    pub async fn proceed(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
        step: &str,
        values: Map<String, Value>,
    ) -> Result<RunView, WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        let name = format!("{} run {}", w.name, r.number);
        RunOp::Proceed
            .check(&name, r.status)
            .map_err(|e| ResourceError::Conflict(e.message))?;
        let wf = self.definition(&w, r.version).await?;
        let s = wf.step(step).ok_or_else(|| {
            ResourceError::NotFound(format!("workflow {} has no step {step:?}", w.name))
        })?;
        let t = now();
        let mut tx = self.inner.store.write().await?;
        // Read again in the transaction: two proceeds cannot both give one value.
        let fresh = rows::run_by_id(&mut tx, &r.id)
            .await?
            .ok_or_else(|| ResourceError::NotFound(format!("{name} is gone")))?;
        let waiting = rows::step_states(&mut tx, &r.id)
            .await?
            .into_iter()
            .find(|x| x.name == step)
            .is_some_and(|x| x.status == StepStatus::AwaitingInput);
        if !waiting {
            return Err(ResourceError::Conflict(format!(
                "step {step} of {name} is not waiting for input"
            )));
        }
        let mut values_now = super::runner::run_values(&fresh)?;
        params::proceed(&wf, &mut values_now, s, &values).map_err(refused)?;
        rows::set_run_values(
            &mut tx,
            &r.id,
            &json(&values_now.parameters),
            &json(&values_now.awaiting),
            &t,
        )
        .await?;
        let detail = &format!(
            "run {}, step {step}: {}",
            r.number,
            values.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        self.commit_and_drive(tx, who, &w, &r, Action::ProceedWorkflowRun, detail)
            .await
    }

    /// Deletes an ended run's record (and the scratch outputs it kept).
    pub async fn delete_run(
        &self,
        who: &Principal,
        key: &str,
        run: &str,
    ) -> Result<(), WorkflowError> {
        let (w, r) = self.find_run(who, key, run).await?;
        RunOp::Delete
            .check(&format!("{} run {}", w.name, r.number), r.status)
            .map_err(|e| ResourceError::Conflict(e.message))?;
        let mut tx = self.inner.store.write().await?;
        rows::delete_run(&mut tx, &r.id).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::DeleteWorkflowRun,
            target(&w),
            "accepted",
            Some(&format!("run {}", r.number)),
        )
        .await?;
        tx.commit().await?;
        self.inner.engine.remove_scratch(&r.owner_id, &r.id).await;
        Ok(())
    }

    /// Runs side by side by their parameters and steps' metrics (`runs`: numbers; none: the
    /// 10 newest).
    pub async fn compare(
        &self,
        who: &Principal,
        key: &str,
        runs: &[i64],
    ) -> Result<Comparison, WorkflowError> {
        let all = self.runs(who, key).await?;
        let chosen: Vec<RunView> = if runs.is_empty() {
            all.into_iter().take(10).collect()
        } else {
            let mut out = Vec::new();
            for n in runs {
                let r = all.iter().find(|r| r.number == *n).ok_or_else(|| {
                    ResourceError::NotFound(format!("the workflow has no run {n}"))
                })?;
                out.push(r.clone());
            }
            out
        };
        let mut names = BTreeSet::new();
        let mut compared = Vec::new();
        for r in chosen {
            let mut metrics = BTreeMap::new();
            for s in &r.steps {
                if let Some(Value::Object(m)) = &s.metrics {
                    for (k, v) in m {
                        if let Some(x) = v.as_f64() {
                            let key = format!("{}/{k}", s.name);
                            names.insert(key.clone());
                            metrics.insert(key, x);
                        }
                    }
                }
            }
            compared.push(ComparedRun {
                number: r.number,
                version: r.version,
                status: r.status,
                parameters: r.parameters,
                duration_ms: r.duration_ms,
                metrics,
            });
        }
        Ok(Comparison {
            runs: compared,
            metrics: names.into_iter().collect(),
        })
    }
}

fn view(w: &WorkflowRow, r: RunRow, steps: Vec<StepRow>, wf: Option<&Workflow>) -> RunView {
    let duration_ms = r
        .ended_at
        .as_deref()
        .and_then(|e| millis_between(&r.created_at, e));
    RunView {
        workflow: w.name.clone(),
        workflow_id: r.workflow_id,
        number: r.number,
        version: r.version,
        status: r.status,
        status_reason: r.status_reason,
        parameters: decode(Some(&r.parameters)).unwrap_or(Value::Null),
        awaiting: serde_json::from_str(&r.awaiting).unwrap_or_default(),
        storages: decode(Some(&r.storages)).unwrap_or(Value::Null),
        connection: r.connection_name,
        selected: r
            .selected
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok()),
        tags: decode(Some(&r.tags)).unwrap_or(Value::Null),
        trigger: r.trigger,
        created_at: r.created_at,
        updated_at: r.updated_at,
        ended_at: r.ended_at,
        duration_ms,
        steps: steps.into_iter().map(|s| step_view(wf, s)).collect(),
        id: r.id,
    }
}

/// Tags: at most 20, keys 1-64 of `A-Z a-z 0-9 _ - .`, values up to 256 characters.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), WorkflowError> {
    if tags.len() > 20 {
        return Err(ResourceError::Invalid(format!(
            "tags: {} tags, at most 20",
            tags.len()
        )));
    }
    for (k, v) in tags {
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(ResourceError::Invalid(format!(
                "tags: key {:?}: 1-64 of A-Z a-z 0-9 _ - .",
                k.chars().take(70).collect::<String>()
            )));
        }
        if v.chars().count() > 256 {
            return Err(ResourceError::Invalid(format!(
                "tags.{k}: at most 256 characters"
            )));
        }
    }
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// JSON text of a run's stored values.
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tags() {
        assert_eq!(
            millis_between("2026-12-07T19:00:00.000000Z", "2026-12-07T19:00:01.250000Z"),
            Some(1250)
        );
        assert_eq!(millis_between("x", "2026-12-07T19:00:00Z"), None);
        assert!(check_tags(&BTreeMap::from([("team".into(), "cv".into())])).is_ok());
        let bad = check_tags(&BTreeMap::from([("a b".into(), "x".into())])).unwrap_err();
        assert!(bad.to_string().contains("tags: key \"a b\""), "{bad}");
        assert!(by_number("12") == Some(12) && by_number("0193-ab").is_none());
    }
}
