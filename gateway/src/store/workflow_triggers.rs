//! Workflows' schedules, their firings and trigger tokens (`workflow_schedules`,
//! `workflow_schedule_firings`, `workflow_trigger_tokens`; migration 0026). Times are the
//! store's fixed-width UTC text, so text order is time order.

use super::Conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub workflow_id: String,
    pub cron: String,
    pub timezone: String,
    /// JSON object.
    pub parameters: String,
    /// JSON object: storage name → root.
    pub storages: String,
    /// The owner's storage connection the runs use, by name (none: their own storage).
    pub connection: Option<String>,
    pub enabled: bool,
    /// None while disabled.
    pub next_due: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const SCHEDULE: &str = "SELECT workflow_id, cron, timezone, parameters, storages, connection, \
     enabled, next_due, created_at, updated_at FROM workflow_schedules";

pub async fn schedule(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as(&format!("{SCHEDULE} WHERE workflow_id = $1"))
        .bind(workflow_id)
        .fetch_optional(conn)
        .await
}

pub struct NewSchedule<'a> {
    pub workflow_id: &'a str,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub parameters: &'a str,
    pub storages: &'a str,
    pub connection: Option<&'a str>,
    pub enabled: bool,
    pub next_due: Option<&'a str>,
    pub now: &'a str,
}

/// Creates or replaces the workflow's schedule.
pub async fn put_schedule(conn: &mut Conn, s: NewSchedule<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workflow_schedules (workflow_id, cron, timezone, parameters, storages, \
         enabled, next_due, created_at, updated_at, connection) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
         ON CONFLICT (workflow_id) DO UPDATE SET cron = $2, timezone = $3, parameters = $4, \
         storages = $5, enabled = $6, next_due = $7, updated_at = $8, connection = $9",
    )
    .bind(s.workflow_id)
    .bind(s.cron)
    .bind(s.timezone)
    .bind(s.parameters)
    .bind(s.storages)
    .bind(s.enabled)
    .bind(s.next_due)
    .bind(s.now)
    .bind(s.connection)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the schedule and its firings; whether there was one.
pub async fn delete_schedule(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<bool> {
    let n = sqlx::query("DELETE FROM workflow_schedules WHERE workflow_id = $1")
        .bind(workflow_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM workflow_schedule_firings WHERE workflow_id = $1")
        .bind(workflow_id)
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// The enabled schedules due at `now` or before.
pub async fn due(conn: &mut Conn, now: &str) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as(&format!(
        "{SCHEDULE} WHERE next_due IS NOT NULL AND next_due <= $1 ORDER BY next_due"
    ))
    .bind(now)
    .fetch_all(conn)
    .await
}

/// The earliest due time of any enabled schedule.
pub async fn earliest_due(conn: &mut Conn) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT MIN(next_due) FROM workflow_schedules WHERE next_due IS NOT NULL")
        .fetch_one(conn)
        .await
}

/// Moves a schedule from the due time `was` to `next` (None: it cannot fire again); false
/// when it changed meanwhile (replaced, disabled, deleted), and then it is not fired.
pub async fn advance(
    conn: &mut Conn,
    workflow_id: &str,
    was: &str,
    next: Option<&str>,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE workflow_schedules SET next_due = $3 WHERE workflow_id = $1 AND next_due = $2",
    )
    .bind(workflow_id)
    .bind(was)
    .bind(next)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FiringRow {
    pub due_at: String,
    pub fired_at: String,
    pub outcome: String,
    pub run_number: Option<i64>,
    pub detail: Option<String>,
}

pub struct NewFiring<'a> {
    pub workflow_id: &'a str,
    pub due_at: &'a str,
    pub fired_at: &'a str,
    pub outcome: &'a str,
    pub run_number: Option<i64>,
    pub detail: Option<&'a str>,
}

/// Records a firing and keeps the workflow's newest `keep`.
pub async fn record_firing(conn: &mut Conn, f: NewFiring<'_>, keep: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workflow_schedule_firings (id, workflow_id, due_at, fired_at, outcome, \
         run_number, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(super::ordered_id())
    .bind(f.workflow_id)
    .bind(f.due_at)
    .bind(f.fired_at)
    .bind(f.outcome)
    .bind(f.run_number)
    .bind(f.detail)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM workflow_schedule_firings WHERE workflow_id = $1 AND id NOT IN \
         (SELECT id FROM workflow_schedule_firings WHERE workflow_id = $1 \
          ORDER BY id DESC LIMIT $2)",
    )
    .bind(f.workflow_id)
    .bind(keep)
    .execute(conn)
    .await?;
    Ok(())
}

/// The workflow's firings, newest first.
pub async fn firings(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<Vec<FiringRow>> {
    sqlx::query_as(
        "SELECT due_at, fired_at, outcome, run_number, detail FROM workflow_schedule_firings \
         WHERE workflow_id = $1 ORDER BY id DESC",
    )
    .bind(workflow_id)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub token_hash: String,
    pub created_at: String,
    pub created_by: String,
}

pub async fn token(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as(
        "SELECT token_hash, created_at, created_by FROM workflow_trigger_tokens \
         WHERE workflow_id = $1",
    )
    .bind(workflow_id)
    .fetch_optional(conn)
    .await
}

/// Creates or replaces the workflow's trigger token (its hash).
pub async fn put_token(
    conn: &mut Conn,
    workflow_id: &str,
    token_hash: &str,
    created_by: &str,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workflow_trigger_tokens (workflow_id, token_hash, created_at, created_by) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id) DO UPDATE SET token_hash = $2, \
         created_at = $3, created_by = $4",
    )
    .bind(workflow_id)
    .bind(token_hash)
    .bind(now)
    .bind(created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the workflow's trigger token; whether it had one.
pub async fn delete_token(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<bool> {
    let n = sqlx::query("DELETE FROM workflow_trigger_tokens WHERE workflow_id = $1")
        .bind(workflow_id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{now, scratch as store, users, workflows};

    fn schedule_at<'a>(next_due: Option<&'a str>, t: &'a str) -> NewSchedule<'a> {
        NewSchedule {
            workflow_id: "w1",
            cron: "0 3 * * *",
            timezone: "UTC",
            parameters: "{}",
            storages: "{}",
            connection: None,
            enabled: next_due.is_some(),
            next_due,
            now: t,
        }
    }

    #[tokio::test]
    async fn a_due_time_is_claimed_once_and_firings_keep_the_newest() {
        let (store, dir) = store().await;
        let mut c = store.pool.acquire().await.unwrap();
        let t = now();
        users::insert_user(&mut c, "u1", "alice", "user", &t)
            .await
            .unwrap();
        workflows::insert(
            &mut c,
            workflows::NewWorkflow {
                id: "w1",
                owner_id: "u1",
                name: "etl",
                description: "",
                tags: "{}",
                digest: "d1",
                definition: "{}",
                now: &t,
            },
        )
        .await
        .unwrap();
        let due = "2026-12-07T03:00:00.000000Z";
        put_schedule(&mut c, schedule_at(Some(due), &t))
            .await
            .unwrap();
        assert_eq!(earliest_due(&mut c).await.unwrap().as_deref(), Some(due));
        assert!(
            due_at_or_before(&mut c, "2026-12-07T02:59:59.999999Z")
                .await
                .is_empty()
        );
        assert_eq!(due_at_or_before(&mut c, due).await.len(), 1);
        // Claimed once: a second claim of the same due time (another pass) gets nothing.
        let next = "2026-12-08T03:00:00.000000Z";
        assert!(advance(&mut c, "w1", due, Some(next)).await.unwrap());
        assert!(!advance(&mut c, "w1", due, Some(next)).await.unwrap());
        // Replaced meanwhile (disabled): the old due time claims nothing, nothing is due.
        put_schedule(&mut c, schedule_at(None, &t)).await.unwrap();
        assert!(!advance(&mut c, "w1", next, None).await.unwrap());
        assert_eq!(earliest_due(&mut c).await.unwrap(), None);

        for i in 0..7 {
            let f = NewFiring {
                workflow_id: "w1",
                due_at: due,
                fired_at: due,
                outcome: "started",
                run_number: Some(i),
                detail: None,
            };
            record_firing(&mut c, f, 5).await.unwrap();
        }
        let kept: Vec<Option<i64>> = firings(&mut c, "w1")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.run_number)
            .collect();
        assert_eq!(kept, [Some(6), Some(5), Some(4), Some(3), Some(2)]);
        assert!(delete_schedule(&mut c, "w1").await.unwrap());
        assert!(firings(&mut c, "w1").await.unwrap().is_empty());
        assert!(!delete_schedule(&mut c, "w1").await.unwrap());

        // Tokens: one per workflow, replaced in place, gone with the workflow.
        put_token(&mut c, "w1", "h1", "alice", &t).await.unwrap();
        put_token(&mut c, "w1", "h2", "alice", &t).await.unwrap();
        assert_eq!(token(&mut c, "w1").await.unwrap().unwrap().token_hash, "h2");
        workflows::delete(&mut c, "w1").await.unwrap();
        assert!(token(&mut c, "w1").await.unwrap().is_none());
        assert!(!delete_token(&mut c, "w1").await.unwrap());
        drop(c);
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn due_at_or_before(c: &mut Conn, t: &str) -> Vec<ScheduleRow> {
        due(c, t).await.unwrap()
    }
}
