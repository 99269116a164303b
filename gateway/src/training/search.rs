//! Hyperparameter searches (spec/training.md §1.4 AutoSearch, §2.10; Katib's experiments and
//! Optuna's studies are the anchors): trials of a training job template, each a training job
//! of the owner's with sampled hyperparameters, at most `parallel` at once, the objective
//! read from the metrics the trial reports, poor trials stopped early by the median rule.
//! This module checks requests and keeps the rows; `search_runner.rs` runs the trials and
//! `samplers.rs` says what each one tries.
//!
//! ```text
//! POST /v1/training-searches ─► name, parameters, objective, algorithm and its settings,
//!     max_trials 1-100, parallel 1-16, early stopping, and the template checked by the
//!     jobs' own checks (Jobs::check, with the searched values at both ends of their
//!     ranges) ─► one transaction: quota, row PENDING, event, audit ─► the runner
//! stop ─► STOPPING ─► running trials' jobs stopped ─► STOPPED
//! delete ─► DELETING ─► trial jobs deleted (their objects in storage stay) ─► gone
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::jobs::{CreateJob, Data, JobError, Jobs};
use super::samplers::{
    self, Algorithm, AlgorithmSettings, Direction, EarlyStopping, ParamSpec, ParamType,
};
use crate::auth::{Principal, Role};
use crate::error::Error;
use crate::lifecycle::KeyedLocks;
use crate::lifecycle::search::{SearchOp, SearchStatus, TrialStatus};
use crate::store::audit::{self, Action, Target};
use crate::store::resource_events::{self, Catalogue, EventRecord, Row, SearchEvent};
use crate::store::training_searches::{self as rows, SearchRow, TrialRow};
use crate::store::transition::Transition;
use crate::store::{Store, operations};

/// Trials of one search (Katib's maxTrialCount; the seed's `num_samples` is 10-20).
pub const MAX_TRIALS: u32 = 100;
/// Trials running at once (Katib's parallelTrialCount).
pub const MAX_PARALLEL: u32 = 16;
/// A search's name leaves room for `-t100` in its trials' job names.
pub const MAX_NAME: usize = 59;

/// `POST /v1/training-searches`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSearch {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A training job request without a name (`POST /v1/training-jobs`); each trial is
    /// one with the searched hyperparameters set.
    pub template: CreateJob,
    pub parameters: Vec<ParamSpec>,
    pub objective: Objective,
    pub algorithm: Algorithm,
    #[serde(default)]
    pub algorithm_settings: AlgorithmSettings,
    pub max_trials: u32,
    #[serde(default = "one")]
    pub parallel: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

fn one() -> u32 {
    1
}

/// What the search optimises: the last value of a metric each trial reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub metric: String,
    pub direction: Direction,
    /// A value that ends the search once a trial reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<f64>,
}

impl Objective {
    /// Whether `v` reaches the goal.
    pub fn reached(&self, v: f64) -> bool {
        self.goal.is_some_and(|g| match self.direction {
            Direction::Max => v >= g,
            Direction::Min => v <= g,
        })
    }
}

/// A search as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SearchView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub status: SearchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub parameters: Vec<ParamSpec>,
    pub objective: Objective,
    pub algorithm: Algorithm,
    pub algorithm_settings: AlgorithmSettings,
    pub max_trials: u32,
    pub parallel: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    pub template: CreateJob,
    /// The best trial so far (the best one, once the search ended): among those that
    /// completed with the objective.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialView>,
    pub trials: Vec<TrialView>,
    /// Advice on the request (create only): what was accepted but is unlikely to serve well.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// The seed recommends 10 to 20 trials for a TPE search (fewer leave its model little to
/// learn from; random and grid searches have no such advice).
pub const TPE_TRIALS: (u32, u32) = (10, 20);

/// Advice on an accepted request.
fn advice(req: &CreateSearch) -> Vec<String> {
    let mut out = Vec::new();
    if req.algorithm == Algorithm::Tpe && !(TPE_TRIALS.0..=TPE_TRIALS.1).contains(&req.max_trials) {
        out.push(format!(
            "max_trials: {} for a TPE search; {} to {} are recommended",
            req.max_trials, TPE_TRIALS.0, TPE_TRIALS.1
        ));
    }
    out
}

/// One trial.
#[derive(Debug, Clone, Serialize)]
pub struct TrialView {
    pub number: i64,
    /// Its training job's name (`<search>-t<number>`).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub status: TrialStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub parameters: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    pub early_stopped: bool,
    /// The job's output channels (where its model went), once it ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Data>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// The hyperparameter searches.
#[derive(Clone)]
pub struct Searches {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub store: Store,
    pub jobs: Jobs,
    pub tasks: TaskTracker,
    /// One lifecycle operation at a time per search.
    pub locks: KeyedLocks,
    pub create: tokio::sync::Mutex<()>,
    pub runners: Mutex<BTreeMap<String, CancellationToken>>,
    pub shutdown: CancellationToken,
    /// How often a runner looks at its trials.
    pub every: Duration,
}

impl Searches {
    pub fn new(store: Store, jobs: Jobs, tasks: TaskTracker) -> Searches {
        Searches {
            inner: Arc::new(Inner {
                store,
                jobs,
                tasks,
                locks: KeyedLocks::default(),
                create: tokio::sync::Mutex::new(()),
                runners: Mutex::new(BTreeMap::new()),
                shutdown: CancellationToken::new(),
                every: Duration::from_secs(1),
            }),
        }
    }

    /// Creates a search: everything checked (the template by the jobs' own checks) before
    /// anything is written; then its runner starts.
    pub async fn create(&self, who: &Principal, req: CreateSearch) -> Result<SearchView, JobError> {
        let req = self.check(who, req).await?;
        let spec = serde_json::to_string(&req).map_err(anyhow::Error::from)?;
        let id = uuid::Uuid::new_v4().to_string();
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &req.name)
            .await?
            .is_some()
        {
            return Err(JobError::Conflict(format!(
                "you already have a training search named {:?}",
                req.name
            )));
        }
        let count = rows::count(&mut tx, &who.user_id).await?;
        let quota = self.inner.jobs.inner.settings.searches_per_user;
        if count >= i64::from(quota) {
            return Err(JobError::Conflict(format!(
                "you have {count} training searches, the most allowed ({quota}); delete one first"
            )));
        }
        rows::insert(
            &mut tx,
            rows::NewSearch {
                id: &id,
                owner_id: &who.user_id,
                name: &req.name,
                description: &req.description,
                spec: &spec,
                now: &crate::store::now(),
            },
        )
        .await?;
        operations::begin(&mut tx, &id, SearchStatus::Pending).await?;
        resource_events::record(&mut tx, &Row::of(&id, None, SearchEvent::Created)).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::CreateTrainingSearch,
            Target {
                kind: "training_search",
                id: &id,
                name: &req.name,
            },
            "accepted",
            None,
        )
        .await?;
        tx.commit().await?;
        self.spawn_runner(id.clone());
        let mut view = self.view_by_id(&id).await?;
        view.warnings = advice(&req);
        Ok(view)
    }

    /// The request checked; the seed filled in when none was given.
    async fn check(
        &self,
        who: &Principal,
        mut req: CreateSearch,
    ) -> Result<CreateSearch, JobError> {
        let bad = |m: String| JobError::Invalid(m);
        super::schema::check_name("name", &req.name).map_err(bad)?;
        if req.name.len() > MAX_NAME {
            return Err(bad(format!(
                "name: at most {MAX_NAME} characters (its trials are named <name>-t<number>)"
            )));
        }
        super::schema::check_description("description", &req.description).map_err(bad)?;
        if !(1..=MAX_TRIALS).contains(&req.max_trials) {
            return Err(bad(format!(
                "max_trials: {}; 1 to {MAX_TRIALS}",
                req.max_trials
            )));
        }
        if !(1..=MAX_PARALLEL).contains(&req.parallel) {
            return Err(bad(format!(
                "parallel: {}; 1 to {MAX_PARALLEL} trials at once",
                req.parallel
            )));
        }
        let m = &req.objective.metric;
        if m.is_empty()
            || m.len() > 64
            || !m
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
        {
            return Err(bad(format!(
                "objective.metric: {:?} is not a metric name (1-64 of letters, digits, _ - . /, as `[metric] name=value` lines print it)",
                m.chars().take(64).collect::<String>()
            )));
        }
        if let Some(g) = req.objective.goal
            && !g.is_finite()
        {
            return Err(bad("objective.goal: a finite number".into()));
        }
        if let Some(e) = &req.early_stopping {
            if e.rule != "median" {
                return Err(bad(format!(
                    "early_stopping.rule: {:?}; the rule is \"median\"",
                    e.rule.chars().take(32).collect::<String>()
                )));
            }
            if !(1..=1000).contains(&e.min_steps) {
                return Err(bad(format!(
                    "early_stopping.min_steps: {}; 1 to 1000",
                    e.min_steps
                )));
            }
            if !(1..=MAX_TRIALS).contains(&e.start_after_trials) {
                return Err(bad(format!(
                    "early_stopping.start_after_trials: {}; 1 to {MAX_TRIALS}",
                    e.start_after_trials
                )));
            }
        }
        samplers::check(&req.parameters, req.algorithm, &req.algorithm_settings).map_err(bad)?;
        if req.template.notification.is_some() {
            return Err(JobError::Invalid(
                "template.notification: a search's trials send no webhooks (the search would have to keep the secret); follow the search with atelier search get".into(),
            ));
        }
        if req.template.name.is_some() {
            return Err(bad(
                "template.name: leave it out; trials are named <search>-t<number>".into(),
            ));
        }
        // The template, as the jobs check it, with the searched values at each end of
        // their ranges (the first and the last choice).
        for end in [false, true] {
            let mut t = req.template.clone();
            t.name = Some(format!("{}-t{}", req.name, req.max_trials));
            for p in &req.parameters {
                t.hyperparameters.insert(p.name.clone(), end_value(p, end));
            }
            if let Err(e) = self.inner.jobs.check(who, &t).await {
                return Err(match e {
                    JobError::Invalid(m) => bad(name_the_parameter(&req.parameters, &m)),
                    other => other,
                });
            }
        }
        if req.algorithm_settings.seed.is_none() {
            req.algorithm_settings.seed = Some(u64::from(rand::random::<u32>()));
        }
        Ok(req)
    }

    /// The caller's search `key` (its id or name); another user's is not found (an admin
    /// finds it by id).
    pub(super) async fn find(&self, who: &Principal, key: &str) -> Result<SearchRow, JobError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        if let Some(s) = rows::by_key(&mut conn, &who.user_id, key).await? {
            return Ok(s);
        }
        if who.is_admin()
            && let Some(s) = rows::by_id(&mut conn, key).await?
        {
            return Ok(s);
        }
        Err(JobError::NotFound(format!(
            "training search {key} not found"
        )))
    }

    pub async fn list(&self, who: &Principal, all: bool) -> Result<Vec<SearchView>, JobError> {
        if all && !who.is_admin() {
            return Err(
                Error::forbidden("listing every user's training searches is for admins").into(),
            );
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let list = rows::list(&mut conn, (!all).then_some(who.user_id.as_str())).await?;
        drop(conn);
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            out.push(self.view(s).await?);
        }
        Ok(out)
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<SearchView, JobError> {
        let s = self.find(who, key).await?;
        self.view(s).await
    }

    pub async fn trials(&self, who: &Principal, key: &str) -> Result<Vec<TrialView>, JobError> {
        Ok(self.get(who, key).await?.trials)
    }

    pub async fn events(&self, who: &Principal, key: &str) -> Result<Vec<EventRecord>, JobError> {
        let s = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(resource_events::list(&mut conn, SearchEvent::KIND, &s.id, None, 1000).await?)
    }

    pub(super) async fn view_by_id(&self, id: &str) -> Result<SearchView, JobError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let row = rows::by_id(&mut conn, id)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("training search {id} not found")))?;
        drop(conn);
        self.view(row).await
    }

    async fn view(&self, s: SearchRow) -> Result<SearchView, JobError> {
        let spec = decode(&s)?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let trials: Vec<TrialView> = rows::trials(&mut conn, &s.id)
            .await?
            .iter()
            .map(trial_view)
            .collect();
        let best = best_of(&trials, spec.objective.direction).cloned();
        Ok(SearchView {
            id: s.id,
            name: s.name,
            owner: s.owner_name,
            description: s.description,
            status: s.status,
            status_reason: s.status_reason,
            parameters: spec.parameters,
            objective: spec.objective,
            algorithm: spec.algorithm,
            algorithm_settings: spec.algorithm_settings,
            max_trials: spec.max_trials,
            parallel: spec.parallel,
            early_stopping: spec.early_stopping,
            template: spec.template,
            best,
            trials,
            warnings: Vec::new(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            ended_at: s.ended_at,
        })
    }

    /// Stops a search: PENDING or RUNNING → STOPPING; its running trials' jobs are stopped
    /// and it ends STOPPED (with the best trial so far).
    pub async fn stop(&self, who: &Principal, key: &str) -> Result<SearchView, JobError> {
        let s = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&s.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&s.id, SearchOp::Stop, SearchStatus::Stopping)
            .audit(
                &who.name,
                Action::StopTrainingSearch,
                target(&s),
                "accepted",
                None,
            )
            .request(&mut tx, SearchOp::Stop, &s.name)
            .await?;
        tx.commit().await?;
        if let Some(t) = self.runner_token(&s.id) {
            t.cancel();
        }
        let _runner = self.inner.locks.lock(&format!("run:{}", s.id)).await;
        super::search_runner::finish_stop(self, &s.id).await?;
        self.view_by_id(&s.id).await
    }

    /// Deletes a search (a running one is stopped first) and its trials' jobs; their
    /// objects in storage stay.
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), JobError> {
        let s = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&s.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&s.id, SearchOp::Delete, SearchStatus::Deleting)
            .resource_event(Row::of(&s.id, None, SearchEvent::Deleted))
            .audit(
                &who.name,
                Action::DeleteTrainingSearch,
                target(&s),
                "accepted",
                None,
            )
            .request(&mut tx, SearchOp::Delete, &s.name)
            .await?;
        tx.commit().await?;
        if let Some(t) = self.runner_token(&s.id) {
            t.cancel();
        }
        let _runner = self.inner.locks.lock(&format!("run:{}", s.id)).await;
        super::search_runner::finish_delete(self, &s.id).await
    }

    fn runner_token(&self, id: &str) -> Option<CancellationToken> {
        self.inner.runners.lock().ok()?.get(id).cloned()
    }

    /// Runs the search's runner on the task tracker (one at a time per search).
    fn spawn_runner(&self, id: String) {
        let token = self.inner.shutdown.child_token();
        if let Ok(mut r) = self.inner.runners.lock()
            && let Some(old) = r.insert(id.clone(), token.clone())
        {
            old.cancel();
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let _one = this.inner.locks.lock(&format!("run:{id}")).await;
            super::search_runner::run(&this, &id, &token).await;
            if let Ok(mut r) = this.inner.runners.lock()
                && r.get(&id)
                    .is_some_and(|t| t.is_cancelled() == token.is_cancelled())
            {
                r.remove(&id);
            }
        });
    }

    /// At a gateway start (after the jobs'): every search under way goes on from its
    /// stored trials; stops and deletes are finished.
    pub async fn resume(&self) -> anyhow::Result<()> {
        for p in operations::resume::<SearchStatus>(&self.inner.store).await? {
            let id = p.resource_id;
            match p.status {
                SearchStatus::Stopping | SearchStatus::Deleting => {
                    let this = self.clone();
                    let deleting = p.status == SearchStatus::Deleting;
                    self.inner.tasks.spawn(async move {
                        let _runner = this.inner.locks.lock(&format!("run:{id}")).await;
                        let r = if deleting {
                            super::search_runner::finish_delete(&this, &id).await
                        } else {
                            super::search_runner::finish_stop(&this, &id).await
                        };
                        if let Err(e) = r {
                            tracing::warn!(search = %id, error = %Error::from(e), "finishing a search's stop or delete failed");
                        }
                    });
                }
                _ => self.spawn_runner(id),
            }
        }
        Ok(())
    }

    /// At gateway shutdown: the runners end; the trials' jobs go on and are found again.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}

/// A searched parameter's value at the low (or high) end of its range; its first (or
/// last) choice.
fn end_value(p: &ParamSpec, high: bool) -> Value {
    match p.kind {
        ParamType::Categorical => {
            let c = if high {
                p.choices.last()
            } else {
                p.choices.first()
            };
            c.cloned().unwrap_or(Value::Null)
        }
        ParamType::Integer | ParamType::Float => {
            let r = p.range.as_deref().unwrap_or(&[0.0, 0.0]);
            let v = if high { r[1] } else { r[0] };
            if p.kind == ParamType::Integer {
                Value::from(v as i64)
            } else {
                Value::from(v)
            }
        }
    }
}

/// A refusal of the template about a searched hyperparameter, said of the parameter.
fn name_the_parameter(params: &[ParamSpec], message: &str) -> String {
    for (i, p) in params.iter().enumerate() {
        if let Some(rest) = message.strip_prefix(&format!("hyperparameters.{}:", p.name)) {
            return format!("parameters[{i}] ({}):{rest}", p.name);
        }
    }
    format!("template.{message}")
}

pub(super) fn decode(s: &SearchRow) -> Result<CreateSearch, JobError> {
    serde_json::from_str(&s.spec)
        .map_err(|e| JobError::Internal(anyhow::anyhow!("training search {}: spec: {e}", s.id)))
}

/// The search's owner, as its trials are created, stopped and deleted.
pub(super) fn owner(s: &SearchRow) -> Principal {
    Principal {
        user_id: s.owner_id.clone(),
        name: s.owner_name.clone(),
        role: Role::parse(&s.owner_role).unwrap_or(Role::User),
        token_id: String::new(),
    }
}

pub(super) fn trial_view(t: &TrialRow) -> TrialView {
    TrialView {
        number: t.number,
        name: t.job_name.clone(),
        job_id: t.job_id.clone(),
        status: t.status,
        reason: t.reason.clone(),
        parameters: serde_json::from_str(&t.parameters).unwrap_or_default(),
        objective: t.objective,
        early_stopped: t.status == TrialStatus::EarlyStopped,
        outputs: t
            .outputs
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default(),
        created_at: t.created_at.clone(),
        ended_at: t.ended_at.clone(),
    }
}

/// The best of the trials that completed with the objective (the first of equals).
pub(super) fn best_of(trials: &[TrialView], direction: Direction) -> Option<&TrialView> {
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed)
        .filter_map(|t| Some((t, t.objective.filter(|v| v.is_finite())?)))
        .reduce(|a, b| if direction.better(b.1, a.1) { b } else { a })
        .map(|(t, _)| t)
}

fn target(s: &SearchRow) -> Target<'_> {
    Target {
        kind: "training_search",
        id: &s.id,
        name: &s.name,
    }
}
