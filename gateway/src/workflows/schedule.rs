//! A workflow's cron schedule (`/v1/workflows/{wf}/schedule`) and the loop that fires it.
//!
//! ```text
//! PUT …/schedule {cron, timezone, parameters, storages, enabled}
//!      ─► cron::Schedule::new (field named) ─► params::resolve_run against the newest
//!         version (a broken schedule is refused now) ─► one transaction: the row with its
//!         next_due, the audit row ─► the loop woken
//! the loop: sleep until the earliest next_due (at most MAX_SLEEP; woken by a change)
//!      ─► each due schedule: next_due moved on, from now (at most once per due time)
//!      ─► a run under way? skipped and recorded : Workflows::start as the owner,
//!         trigger `schedule` ─► the firing recorded (the newest 100 kept)
//! ```
//!
//! Missed firings: a gateway that was down (or busy) past one or more due times fires once
//! when it is back, and the next due time counts from then: never once per missed period.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::cron;
use super::params;
use super::runs::StartRun;
use super::service::{WorkflowError, Workflows, refused, target};
use crate::auth::{Principal, Role};
use crate::error::ResourceError;
use crate::store::audit::{self, Action};
use crate::store::storage_connections;
use crate::store::workflow_triggers::{self as rows, ScheduleRow};
use crate::store::workflows::{self as wf_rows, WorkflowRow};

/// Firings kept per workflow (the newest).
pub const MAX_FIRINGS: i64 = 100;

/// The longest the loop sleeps without looking again: a clock set forward, or a lost
/// wake-up, costs at most this much delay.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// A firing that failed on the gateway's side (the log has the error).
const INTERNAL: &str = "failed: an internal error (the gateway's log has it)";

/// How long the loop waits after the store failed it.
const AFTER_ERROR: Duration = Duration::from_secs(10);

/// What the scheduler shares with the service: the loop's wake-up and the test setting.
#[derive(Debug, Default)]
pub struct Scheduling {
    wake: tokio::sync::Notify,
    /// 6-field patterns with seconds (env `ATELIER_CRON_SECONDS`; tests and demos).
    seconds: bool,
}

impl Scheduling {
    pub fn new(seconds: bool) -> Scheduling {
        Scheduling {
            wake: tokio::sync::Notify::new(),
            seconds,
        }
    }
}

fn utc_default() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// `PUT /v1/workflows/{wf}/schedule`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    /// Standard 5 fields: minute hour day-of-month month day-of-week.
    pub cron: String,
    /// IANA name (default `UTC`).
    #[serde(default = "utc_default")]
    pub timezone: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub storages: BTreeMap<String, String>,
    /// One of the owner's storage connections, by name, for the runs' storage paths (none:
    /// the owner's own storage).
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A schedule as the API shows it, with its recent firings.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub workflow: String,
    pub workflow_id: String,
    pub cron: String,
    pub timezone: String,
    pub parameters: Value,
    pub storages: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    pub enabled: bool,
    /// When it fires next (UTC); absent while disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The newest first, at most 100.
    pub firings: Vec<FiringView>,
}

/// What one due time did.
#[derive(Debug, Clone, Serialize)]
pub struct FiringView {
    pub due_at: String,
    pub fired_at: String,
    /// `started`, `skipped` or `failed`.
    pub outcome: String,
    /// The run it started, or the one under way that it skipped for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// `started run 3`, `skipped: run 2 under way`, `failed: <why>`.
    pub detail: String,
}

/// The end of a change to a workflow's schedule or trigger token: its audit row, then the
/// commit.
pub(super) async fn audited(
    mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    who: &Principal,
    action: Action,
    w: &WorkflowRow,
    detail: Option<&str>,
) -> Result<(), WorkflowError> {
    audit::record(&mut tx, &who.name, action, target(w), "accepted", detail).await?;
    tx.commit().await?;
    Ok(())
}

/// A timestamp as the store keeps times.
pub(super) fn stamp(t: Timestamp) -> String {
    let micros = t.as_microsecond();
    let odt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::store::format_time(odt)
}

fn parse_stamp(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// Who a schedule's or a webhook's run starts as: the workflow's owner, with a user's
/// rights whatever their role.
pub(super) fn owner(w: &WorkflowRow, via: &str) -> Principal {
    Principal {
        user_id: w.owner_id.clone(),
        name: w.owner_name.clone(),
        role: Role::User,
        token_id: format!("{via}:{}", w.id),
    }
}

fn view(w: &WorkflowRow, s: ScheduleRow, firings: Vec<rows::FiringRow>) -> ScheduleView {
    ScheduleView {
        workflow: w.name.clone(),
        workflow_id: w.id.clone(),
        cron: s.cron,
        timezone: s.timezone,
        parameters: serde_json::from_str(&s.parameters).unwrap_or(Value::Null),
        storages: serde_json::from_str(&s.storages).unwrap_or(Value::Null),
        connection: s.connection,
        enabled: s.enabled,
        next_due: s.next_due,
        created_at: s.created_at,
        updated_at: s.updated_at,
        firings: firings
            .into_iter()
            .map(|f| FiringView {
                due_at: f.due_at,
                fired_at: f.fired_at,
                outcome: f.outcome,
                run: f.run_number,
                detail: f.detail.unwrap_or_default(),
            })
            .collect(),
    }
}

impl Workflows {
    /// Sets (creates or replaces) the workflow's schedule; checked whole first.
    pub async fn set_schedule(
        &self,
        who: &Principal,
        key: &str,
        req: SetSchedule,
    ) -> Result<ScheduleView, WorkflowError> {
        let w = self.find(who, key).await?;
        let seconds = self.inner.scheduling.seconds;
        let sched =
            cron::Schedule::new(&req.cron, &req.timezone, seconds).map_err(|e| refused(vec![e]))?;
        let wf = self.newest_definition(&w).await?;
        params::resolve_run(&wf, &req.parameters, &req.storages).map_err(refused)?;
        if let Some(name) = &req.connection {
            let mut conn = self.inner.store.pool.acquire().await?;
            if storage_connections::by_name(&mut conn, &w.owner_id, name)
                .await?
                .is_none()
            {
                return Err(ResourceError::Invalid(format!(
                    "connection: the workflow's owner has no storage connection named {name:?} (atelier storage list)"
                )));
            }
        }
        let t = Timestamp::now();
        let next_due = if req.enabled {
            Some(stamp(
                sched
                    .next_after(t)
                    .map_err(|m| ResourceError::Invalid(format!("cron: {m}")))?,
            ))
        } else {
            None
        };
        let now = stamp(t);
        let mut tx = self.inner.store.write().await?;
        rows::put_schedule(
            &mut tx,
            rows::NewSchedule {
                workflow_id: &w.id,
                cron: req.cron.trim(),
                timezone: &req.timezone,
                parameters: &serde_json::to_string(&req.parameters).map_err(anyhow::Error::from)?,
                storages: &serde_json::to_string(&req.storages).map_err(anyhow::Error::from)?,
                connection: req.connection.as_deref(),
                enabled: req.enabled,
                next_due: next_due.as_deref(),
                now: &now,
            },
        )
        .await?;
        let detail = format!(
            "{:?} in {}{}",
            req.cron.trim(),
            req.timezone,
            if req.enabled { "" } else { ", disabled" }
        );
        audited(tx, who, Action::SetWorkflowSchedule, &w, Some(&detail)).await?;
        self.inner.scheduling.wake.notify_one();
        self.schedule_view(&w).await
    }

    async fn newest_definition(
        &self,
        w: &WorkflowRow,
    ) -> Result<super::definition::Workflow, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let v = wf_rows::version(&mut conn, &w.id, w.latest_version)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("workflow {} has no version {}", w.id, w.latest_version)
            })?;
        Ok(serde_json::from_str(&v.definition)
            .map_err(|e| anyhow::anyhow!("workflow {} version {}: {e}", w.id, v.version))?)
    }

    /// The workflow's schedule and its newest firings.
    pub async fn schedule(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<ScheduleView, WorkflowError> {
        let w = self.find(who, key).await?;
        self.schedule_view(&w).await
    }

    async fn schedule_view(&self, w: &WorkflowRow) -> Result<ScheduleView, WorkflowError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let s = rows::schedule(&mut conn, &w.id).await?.ok_or_else(|| {
            ResourceError::NotFound(format!(
                "workflow {} has no schedule (PUT /v1/workflows/{}/schedule sets one)",
                w.name, w.name
            ))
        })?;
        let firings = rows::firings(&mut conn, &w.id).await?;
        Ok(view(w, s, firings))
    }

    /// Removes the workflow's schedule and its firings' record.
    pub async fn delete_schedule(&self, who: &Principal, key: &str) -> Result<(), WorkflowError> {
        let w = self.find(who, key).await?;
        let mut tx = self.inner.store.write().await?;
        if !rows::delete_schedule(&mut tx, &w.id).await? {
            return Err(ResourceError::NotFound(format!(
                "workflow {} has no schedule",
                w.name
            )));
        }
        audited(tx, who, Action::DeleteWorkflowSchedule, &w, None).await?;
        self.inner.scheduling.wake.notify_one();
        Ok(())
    }

    /// The scheduler: fires due schedules, then sleeps until the next due time (at most
    /// [`MAX_SLEEP`]) or a schedule's change, until `shutdown`.
    pub async fn schedule_loop(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.fire_due().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "workflow schedules: the store failed; trying again soon");
                    AFTER_ERROR
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.scheduling.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Fires every schedule due now; how long until the next one is due.
    async fn fire_due(&self) -> anyhow::Result<Duration> {
        let now = Timestamp::now();
        let due = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::due(&mut conn, &stamp(now)).await?
        };
        for s in due {
            let id = s.workflow_id.clone();
            if let Err(e) = self.fire(s, now).await {
                tracing::warn!(workflow = %id, error = %e, "a workflow schedule could not fire");
            }
        }
        let earliest = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::earliest_due(&mut conn).await?
        };
        let Some(next) = earliest.as_deref().and_then(parse_stamp) else {
            return Ok(MAX_SLEEP);
        };
        let wait = next.duration_since(Timestamp::now());
        // Never a busy loop: a due time in the past (one that could not be moved on) is
        // looked at again after a short pause.
        Ok(Duration::try_from(wait)
            .unwrap_or_default()
            .clamp(Duration::from_millis(20), MAX_SLEEP))
    }

    /// One due schedule: moved on to its next time, then its run started (or the firing
    /// recorded as skipped or failed).
    async fn fire(&self, s: ScheduleRow, now: Timestamp) -> anyhow::Result<()> {
        let Some(due) = s.next_due.clone() else {
            return Ok(());
        };
        let seconds = self.inner.scheduling.seconds;
        let next = cron::Schedule::new(&s.cron, &s.timezone, seconds)
            .map_err(|e| e.to_string())
            .and_then(|c| c.next_after(now));
        let w = {
            let mut conn = self.inner.store.pool.acquire().await?;
            wf_rows::by_id(&mut conn, &s.workflow_id).await?
        };
        let Some(w) = w else {
            return Ok(());
        };
        // Claimed first: a crash after this fires nothing twice (at most once per due time).
        {
            let mut tx = self.inner.store.write().await?;
            let moved = rows::advance(
                &mut tx,
                &s.workflow_id,
                &due,
                next.as_ref().ok().map(|t| stamp(*t)).as_deref(),
            )
            .await?;
            tx.commit().await?;
            if !moved {
                return Ok(()); // changed meanwhile: the loop reads it again
            }
        }
        let (outcome, run, detail) = match next {
            Err(m) => (
                "failed",
                None,
                format!("failed: the schedule is refused now ({m}); set it again"),
            ),
            Ok(_) => match self.start_scheduled(&w, &s).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(workflow = %w.id, error = %e, "a scheduled run did not start");
                    ("failed", None, INTERNAL.to_owned())
                }
            },
        };
        let mut tx = self.inner.store.write().await?;
        rows::record_firing(
            &mut tx,
            rows::NewFiring {
                workflow_id: &w.id,
                due_at: &due,
                fired_at: &stamp(now),
                outcome,
                run_number: run,
                detail: Some(&detail),
            },
            MAX_FIRINGS,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(workflow = %w.id, due = %due, "{detail}");
        Ok(())
    }

    /// Starts the schedule's run: `(outcome, run number, detail)`.
    async fn start_scheduled(
        &self,
        w: &WorkflowRow,
        s: &ScheduleRow,
    ) -> anyhow::Result<(&'static str, Option<i64>, String)> {
        let active = {
            let mut conn = self.inner.store.pool.acquire().await?;
            wf_rows::active_run(&mut conn, &w.id).await?
        };
        if let Some(n) = active {
            return Ok(("skipped", Some(n), format!("skipped: run {n} under way")));
        }
        let req = StartRun {
            parameters: serde_json::from_str(&s.parameters)?,
            storages: serde_json::from_str(&s.storages)?,
            connection: s.connection.clone(),
            ..StartRun::default()
        };
        Ok(
            match self.start(&owner(w, "schedule"), w, req, "schedule").await {
                Ok(r) => (
                    "started",
                    Some(r.number),
                    format!("started run {}", r.number),
                ),
                Err(ResourceError::Conflict(m)) => {
                    // Another run started between the look and the start.
                    let mut conn = self.inner.store.pool.acquire().await?;
                    match wf_rows::active_run(&mut conn, &w.id).await? {
                        Some(n) => ("skipped", Some(n), format!("skipped: run {n} under way")),
                        None => ("failed", None, format!("failed: {m}")),
                    }
                }
                Err(ResourceError::Internal(e)) => {
                    tracing::warn!(workflow = %w.id, error = %e, "a scheduled run did not start");
                    ("failed", None, INTERNAL.to_owned())
                }
                Err(e) => ("failed", None, format!("failed: {e}")),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_times() {
        let a: Timestamp = "2026-12-07T20:00:00Z".parse().unwrap();
        let b: Timestamp = "2026-12-07T20:00:00.000001Z".parse().unwrap();
        assert_eq!(stamp(a), "2026-12-07T20:00:00.000000Z");
        assert!(stamp(a) < stamp(b));
        assert_eq!(parse_stamp(&stamp(b)), Some(b));
    }
}
