//! A search's runner: one task per search on the lifecycle's tracker, driven by its stored
//! rows so that a restarted gateway goes on where it was.
//!
//! ```text
//! each second (a tick, never cut short by a stop: the stop waits for it):
//!   PENDING ─► RUNNING ("The search starts to run.")
//!   trials CREATING: the job by its name if a killed gateway had made it, else made now
//!   trials RUNNING: its job ended ─► COMPLETED with the objective (the last value of the
//!       metric; none: FAILED), FAILED, STOPPED; still running ─► the median rule
//!       (stopped with Jobs::stop, EARLY_STOPPED)
//!   fewer than `parallel` under way, trials left, goal not reached ─► the sampler's next
//!       point: the trial row (number, parameters) committed first, then its job
//!   nothing under way, nothing left ─► COMPLETED with the best trial, or FAILED
//! ```
//!
//! **Invariant:** a trial number is written before its job is created and never sampled
//! again, so no trial runs twice; a trial found CREATING at a restart takes the job of its
//! name if there is one.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::jobs::{CreateJob, JobError};
use super::samplers::{self, Algorithm, Sampler};
use super::search::{self, CreateSearch, Searches, TrialView, best_of, trial_view};
use crate::auth::Principal;
use crate::error::Error;
use crate::lifecycle::Status;
use crate::lifecycle::search::{SearchStatus, TrialStatus};
use crate::lifecycle::training::JobStatus;
use crate::store::resource_events::{self, Row, SearchEvent};
use crate::store::training_jobs as job_rows;
use crate::store::training_searches::{self as rows, SearchRow, TrialEnd, TrialRow};
use crate::store::transition::Transition;

pub(super) async fn run(s: &Searches, id: &str, token: &CancellationToken) {
    loop {
        if token.is_cancelled() {
            return;
        }
        match tick(s, id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(search = %id, error = %Error::from(e), "a search's tick failed; trying again");
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(s.inner.every) => {}
        }
    }
}

/// One look at the search: false when it has nothing more to do.
async fn tick(s: &Searches, id: &str) -> Result<bool, JobError> {
    let store = &s.inner.store;
    let mut conn = store.pool.acquire().await?;
    let Some(row) = rows::by_id(&mut conn, id).await? else {
        return Ok(false);
    };
    drop(conn);
    match row.status {
        SearchStatus::Pending => {
            let mut tx = store.write().await?;
            Transition::new(id, &[SearchStatus::Pending], SearchStatus::Running)
                .resource_event(Row::of(id, None, SearchEvent::Started))
                .apply(&mut tx)
                .await?;
            tx.commit().await?;
        }
        SearchStatus::Running => {}
        _ => return Ok(false),
    }
    let spec = search::decode(&row)?;
    let who = search::owner(&row);
    let mut conn = store.pool.acquire().await?;
    let trials = rows::trials(&mut conn, id).await?;
    drop(conn);

    // The trials under way.
    for t in &trials {
        match t.status {
            TrialStatus::Creating => create_job(s, &row, &who, &spec, t).await?,
            TrialStatus::Running => watch(s, &row, &who, &spec, t, &trials).await?,
            _ => {}
        }
    }
    let trials = trial_views(s, id).await?;

    let direction = spec.objective.direction;
    let reached = trials.iter().any(|t| {
        t.status == TrialStatus::Completed && t.objective.is_some_and(|v| spec.objective.reached(v))
    });
    let limit = match spec.algorithm {
        Algorithm::Grid => u64::from(spec.max_trials).min(samplers::grid_size(&spec.parameters)),
        _ => u64::from(spec.max_trials),
    } as usize;
    let mut under_way = trials.iter().filter(|t| !t.status.is_terminal()).count();
    if reached && under_way > 0 {
        // The goal is reached: what still runs is stopped.
        for t in trials.iter().filter(|t| !t.status.is_terminal()) {
            stop_trial(s, &row, &who, t, "the search's goal was reached").await?;
        }
        under_way = 0;
    }

    // New trials.
    let mut made = trials.len();
    if !reached {
        let told_rows: Vec<(BTreeMap<String, Value>, f64)> = trials
            .iter()
            .filter(|t| matches!(t.status, TrialStatus::Completed | TrialStatus::EarlyStopped))
            .filter_map(|t| Some((t.parameters.clone(), t.objective?)))
            .collect();
        let told = samplers::told(&told_rows);
        let sampler = Sampler {
            params: &spec.parameters,
            algorithm: spec.algorithm,
            settings: &spec.algorithm_settings,
            direction,
        };
        while under_way < spec.parallel as usize && made < limit {
            let number = made as i64 + 1;
            let Some(params) = sampler.suggest(made as u32, &told) else {
                break;
            };
            let job_name = format!("{}-t{number}", row.name);
            let text = serde_json::to_string(&params).map_err(anyhow::Error::from)?;
            let mut tx = store.write().await?;
            rows::insert_trial(&mut tx, id, number, &job_name, &text).await?;
            tx.commit().await?;
            let mut conn = store.pool.acquire().await?;
            let t = rows::trials(&mut conn, id)
                .await?
                .into_iter()
                .find(|t| t.number == number)
                .ok_or_else(|| anyhow::anyhow!("trial {number} of search {id} vanished"))?;
            drop(conn);
            create_job(s, &row, &who, &spec, &t).await?;
            made += 1;
            under_way += 1;
        }
    }

    // The end.
    let trials = trial_views(s, id).await?;
    let left = trials.iter().any(|t| !t.status.is_terminal());
    if left || (!reached && trials.len() < limit) {
        return Ok(true);
    }
    let mut tx = store.write().await?;
    let done = match best_of(&trials, direction) {
        Some(best) => {
            let number = best.number.to_string();
            let value = best.objective.unwrap_or_default().to_string();
            let applied = Transition::new(id, &[SearchStatus::Running], SearchStatus::Completed)
                .resource_event(Row::filled(
                    id,
                    None,
                    SearchEvent::Completed,
                    &[&number, &spec.objective.metric, &value],
                ))
                .apply(&mut tx)
                .await?;
            if applied {
                rows::set_ended(&mut tx, id, Some(best.number)).await?;
            }
            applied
        }
        None => {
            let why = "every trial failed or reported no objective";
            let applied = Transition::new(id, &[SearchStatus::Running], SearchStatus::Failed)
                .reason(Some(why))
                .resource_event(Row::filled(id, None, SearchEvent::Failed, &[why]))
                .apply(&mut tx)
                .await?;
            if applied {
                rows::set_ended(&mut tx, id, None).await?;
            }
            applied
        }
    };
    tx.commit().await?;
    Ok(!done)
}

async fn trial_views(s: &Searches, id: &str) -> Result<Vec<TrialView>, JobError> {
    let mut conn = s.inner.store.pool.acquire().await?;
    Ok(rows::trials(&mut conn, id)
        .await?
        .iter()
        .map(trial_view)
        .collect())
}

/// Makes a CREATING trial's job (or finds the one a killed gateway made), then RUNNING; a
/// job that cannot be made fails the trial.
async fn create_job(
    s: &Searches,
    row: &SearchRow,
    who: &Principal,
    spec: &CreateSearch,
    t: &TrialRow,
) -> Result<(), JobError> {
    let store = &s.inner.store;
    let mut conn = store.pool.acquire().await?;
    let existing = job_rows::by_name(&mut conn, &row.owner_id, &t.job_name).await?;
    drop(conn);
    let params: BTreeMap<String, Value> = serde_json::from_str(&t.parameters).unwrap_or_default();
    let job_id = match existing {
        Some(j) => Ok(j.id),
        None => {
            let mut req: CreateJob = spec.template.clone();
            req.name = Some(t.job_name.clone());
            if req.description.is_empty() {
                req.description = format!("Trial {} of search {}", t.number, row.name);
            }
            for (k, v) in &params {
                req.hyperparameters.insert(k.clone(), v.clone());
            }
            // Each trial's outputs and logs in a folder of its own.
            for o in &mut req.outputs {
                o.path = trial_folder(&o.path, &t.job_name);
            }
            if let Some(l) = &mut req.log_path {
                *l = trial_folder(l, &t.job_name);
            }
            s.inner
                .jobs
                .create(who, req)
                .await
                .map(|j| j.id)
                .map_err(|e| Error::from(e).message)
        }
    };
    let mut tx = store.write().await?;
    match job_id {
        Ok(job_id) => {
            rows::set_trial_job(&mut tx, &row.id, t.number, &job_id).await?;
            let number = t.number.to_string();
            let shown = serde_json::to_string(&params).unwrap_or_default();
            resource_events::record(
                &mut tx,
                &Row::filled(
                    &row.id,
                    None,
                    SearchEvent::TrialCreated,
                    &[&number, &t.job_name, &shown],
                ),
            )
            .await?;
        }
        Err(why) => {
            fail(&mut tx, &row.id, t.number, &why, None).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// `obs://b/out/` → `obs://b/out/<job>/`.
fn trial_folder(path: &str, job: &str) -> String {
    format!("{}/{job}/", path.trim_end_matches('/'))
}

async fn fail(
    tx: &mut crate::store::Conn,
    search_id: &str,
    number: i64,
    why: &str,
    objective: Option<f64>,
) -> Result<(), JobError> {
    if rows::end_trial(
        tx,
        search_id,
        number,
        TrialEnd {
            status: TrialStatus::Failed,
            reason: Some(why),
            objective,
            outputs: None,
        },
    )
    .await?
    {
        let n = number.to_string();
        resource_events::record(
            tx,
            &Row::filled(search_id, None, SearchEvent::TrialFailed, &[&n, why]),
        )
        .await?;
    }
    Ok(())
}

/// A RUNNING trial: how its job ended, or the median rule while it runs.
async fn watch(
    s: &Searches,
    row: &SearchRow,
    who: &Principal,
    spec: &CreateSearch,
    t: &TrialRow,
    all: &[TrialRow],
) -> Result<(), JobError> {
    let store = &s.inner.store;
    let Some(job_id) = &t.job_id else {
        return Ok(());
    };
    let mut conn = store.pool.acquire().await?;
    let job = job_rows::by_id(&mut conn, job_id).await?;
    let Some(job) = job else {
        drop(conn);
        let mut tx = store.write().await?;
        fail(
            &mut tx,
            &row.id,
            t.number,
            "its training job was deleted",
            None,
        )
        .await?;
        tx.commit().await?;
        return Ok(());
    };
    let metric = &spec.objective.metric;
    let values = objective_reports(&mut conn, job_id, metric).await?;
    drop(conn);
    let last = values.last().map(|r| r.1);
    if job.status.is_terminal() {
        let outputs = match s.inner.jobs.get(who, job_id).await {
            Ok(v) => serde_json::to_string(&v.outputs).ok(),
            Err(_) => None,
        };
        let mut tx = store.write().await?;
        match (job.status, last) {
            (JobStatus::Completed, Some(v)) if v.is_finite() => {
                rows::end_trial(
                    &mut tx,
                    &row.id,
                    t.number,
                    TrialEnd {
                        status: TrialStatus::Completed,
                        reason: None,
                        objective: Some(v),
                        outputs: outputs.as_deref(),
                    },
                )
                .await?;
            }
            (JobStatus::Completed, _) => {
                let why = format!("its training job reported no value of {metric}");
                fail(&mut tx, &row.id, t.number, &why, None).await?;
            }
            (JobStatus::Terminated, _) => {
                rows::end_trial(
                    &mut tx,
                    &row.id,
                    t.number,
                    TrialEnd {
                        status: TrialStatus::Stopped,
                        reason: Some("its training job was stopped"),
                        objective: last,
                        outputs: outputs.as_deref(),
                    },
                )
                .await?;
            }
            (status, _) => {
                let why = format!(
                    "its training job ended {}{}",
                    status.as_str(),
                    job.status_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                fail(&mut tx, &row.id, t.number, &why, last).await?;
            }
        }
        tx.commit().await?;
        return Ok(());
    }
    // Still running: the median rule.
    let Some(rule) = &spec.early_stopping else {
        return Ok(());
    };
    if values.len() < rule.min_steps as usize {
        return Ok(());
    }
    let mut finished = Vec::new();
    let mut conn = store.pool.acquire().await?;
    for o in all.iter().filter(|o| o.status == TrialStatus::Completed) {
        if let Some(j) = &o.job_id {
            finished.push(objective_reports(&mut conn, j, metric).await?);
        }
    }
    drop(conn);
    let Some(v) = samplers::median_stop(&values, &finished, rule, spec.objective.direction) else {
        return Ok(());
    };
    if let Err(e) = s.inner.jobs.stop(who, job_id).await {
        tracing::debug!(job = %job_id, error = %Error::from(e), "stopping an early-stopped trial");
    }
    let mut tx = store.write().await?;
    if rows::end_trial(
        &mut tx,
        &row.id,
        t.number,
        TrialEnd {
            status: TrialStatus::EarlyStopped,
            reason: Some("the median rule stopped it"),
            objective: last,
            outputs: None,
        },
    )
    .await?
    {
        let (n, best, median, step) = (
            t.number.to_string(),
            v.best.to_string(),
            v.median.to_string(),
            v.step.to_string(),
        );
        resource_events::record(
            &mut tx,
            &Row::filled(
                &row.id,
                None,
                SearchEvent::TrialEarlyStopped,
                &[&n, &best, &median, &step],
            ),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A job's reports of the objective metric, in the order they came (the latest attempt's
/// only: a restarted job reports again).
async fn objective_reports(
    conn: &mut crate::store::Conn,
    job_id: &str,
    metric: &str,
) -> Result<Vec<samplers::Report>, JobError> {
    let rows = job_rows::metrics(conn, job_id, Some(metric), false, 100_000).await?;
    let last_attempt = rows.iter().map(|m| m.attempt).max().unwrap_or(0);
    Ok(samplers::reports(
        rows.iter()
            .filter(|m| m.attempt == last_attempt && m.worker == 0)
            .map(|m| (m.step, m.value)),
    ))
}

/// Stops a trial under way (its job, if it has one) and ends it STOPPED.
async fn stop_trial(
    s: &Searches,
    row: &SearchRow,
    who: &Principal,
    t: &TrialView,
    why: &str,
) -> Result<(), JobError> {
    let job_id = match &t.job_id {
        Some(j) => Some(j.clone()),
        None => {
            let mut conn = s.inner.store.pool.acquire().await?;
            job_rows::by_name(&mut conn, &row.owner_id, &t.name)
                .await?
                .map(|j| j.id)
        }
    };
    if let Some(j) = &job_id
        && let Err(e) = s.inner.jobs.stop(who, j).await
    {
        tracing::debug!(job = %j, error = %Error::from(e), "stopping a trial's job");
    }
    let mut tx = s.inner.store.write().await?;
    rows::end_trial(
        &mut tx,
        &row.id,
        t.number,
        TrialEnd {
            status: TrialStatus::Stopped,
            reason: Some(why),
            objective: t.objective,
            outputs: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A STOPPING search: its trials under way stopped, then STOPPED (with its best so far).
pub(super) async fn finish_stop(s: &Searches, id: &str) -> Result<(), JobError> {
    let mut conn = s.inner.store.pool.acquire().await?;
    let Some(row) = rows::by_id(&mut conn, id).await? else {
        return Ok(());
    };
    drop(conn);
    let spec = search::decode(&row)?;
    let trials = trial_views(s, id).await?;
    let who = search::owner(&row);
    for t in trials.iter().filter(|t| !t.status.is_terminal()) {
        stop_trial(s, &row, &who, t, "the search was stopped").await?;
    }
    let best = best_of(&trials, spec.objective.direction).map(|t| t.number);
    let mut tx = s.inner.store.write().await?;
    if Transition::new(id, &[SearchStatus::Stopping], SearchStatus::Stopped)
        .resource_event(Row::of(id, None, SearchEvent::Stopped))
        .apply(&mut tx)
        .await?
    {
        rows::set_ended(&mut tx, id, best).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn job_exists(s: &Searches, id: &str) -> Result<bool, JobError> {
    let mut conn = s.inner.store.pool.acquire().await?;
    Ok(job_rows::by_id(&mut conn, id).await?.is_some())
}

/// A DELETING search: its trials' jobs deleted (stopped first; their objects in storage
/// stay), then its rows.
pub(super) async fn finish_delete(s: &Searches, id: &str) -> Result<(), JobError> {
    let mut conn = s.inner.store.pool.acquire().await?;
    let Some(row) = rows::by_id(&mut conn, id).await? else {
        return Ok(());
    };
    let trials = rows::trials(&mut conn, id).await?;
    drop(conn);
    let who = search::owner(&row);
    for t in &trials {
        let mut conn = s.inner.store.pool.acquire().await?;
        let job = match &t.job_id {
            Some(j) => job_rows::by_id(&mut conn, j).await?,
            None => job_rows::by_name(&mut conn, &row.owner_id, &t.job_name).await?,
        };
        drop(conn);
        let Some(job) = job else { continue };
        // A job still TERMINATING (a stop just asked) cannot be deleted yet.
        let mut tries = 0;
        loop {
            match s.inner.jobs.delete(&who, &job.id).await {
                Ok(()) | Err(JobError::NotFound(_)) => break,
                Err(_) if !job_exists(s, &job.id).await? => break,
                Err(e) if tries < 240 => {
                    tracing::debug!(job = %job.id, error = %Error::from(e), "deleting a trial's job; again soon");
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut tx = s.inner.store.write().await?;
    rows::delete(&mut tx, id).await?;
    crate::store::operations::end::<SearchStatus>(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}
