//! Hyperparameter searches' rows (`training_searches`, `training_search_trials`; migration
//! 0022). `spec` is JSON the `training::search` service reads and writes as its own type.

use super::Conn;
use crate::lifecycle::search::{SearchStatus, TrialStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub owner_role: String,
    pub name: String,
    pub description: String,
    pub spec: String,
    pub status: SearchStatus,
    pub status_reason: Option<String>,
    pub best_trial: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
}

const SELECT: &str = "SELECT s.id, s.owner_id, u.name AS owner_name, u.role AS owner_role, \
     s.name, s.description, s.spec, s.status, s.status_reason, s.best_trial, s.created_at, \
     s.updated_at, s.ended_at \
     FROM training_searches s JOIN users u ON u.id = s.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "s",
};

pub async fn by_key(conn: &mut Conn, owner_id: &str, key: &str) -> sqlx::Result<Option<SearchRow>> {
    OWNED.by_key(conn, owner_id, key).await
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<SearchRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<SearchRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE s.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One owner's searches by name, or everyone's.
pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<SearchRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn count(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM training_searches WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

pub struct NewSearch<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub spec: &'a str,
    pub now: &'a str,
}

pub async fn insert(conn: &mut Conn, s: NewSearch<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO training_searches (id, owner_id, name, description, spec, status, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(s.id)
    .bind(s.owner_id)
    .bind(s.name)
    .bind(s.description)
    .bind(s.spec)
    .bind(SearchStatus::Pending)
    .bind(s.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The search ended: its end time and best trial (set with its last transition).
pub async fn set_ended(conn: &mut Conn, id: &str, best_trial: Option<i64>) -> sqlx::Result<()> {
    sqlx::query("UPDATE training_searches SET ended_at = $1, best_trial = $2 WHERE id = $3")
        .bind(super::now())
        .bind(best_trial)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM training_searches WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrialRow {
    pub number: i64,
    pub job_name: String,
    pub job_id: Option<String>,
    pub parameters: String,
    pub status: TrialStatus,
    pub reason: Option<String>,
    pub objective: Option<f64>,
    pub outputs: Option<String>,
    pub created_at: String,
    pub ended_at: Option<String>,
}

/// A search's trials by number.
pub async fn trials(conn: &mut Conn, search_id: &str) -> sqlx::Result<Vec<TrialRow>> {
    sqlx::query_as(
        "SELECT number, job_name, job_id, parameters, status, reason, objective, outputs, \
         created_at, ended_at FROM training_search_trials WHERE search_id = $1 ORDER BY number",
    )
    .bind(search_id)
    .fetch_all(conn)
    .await
}

/// A new trial, CREATING: numbered and sampled before its job exists.
pub async fn insert_trial(
    conn: &mut Conn,
    search_id: &str,
    number: i64,
    job_name: &str,
    parameters: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO training_search_trials (search_id, number, job_name, parameters, status, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(search_id)
    .bind(number)
    .bind(job_name)
    .bind(parameters)
    .bind(TrialStatus::Creating)
    .bind(super::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// The trial's job exists: RUNNING.
pub async fn set_trial_job(
    conn: &mut Conn,
    search_id: &str,
    number: i64,
    job_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE training_search_trials SET job_id = $1, status = $2 \
         WHERE search_id = $3 AND number = $4",
    )
    .bind(job_id)
    .bind(TrialStatus::Running)
    .bind(search_id)
    .bind(number)
    .execute(conn)
    .await?;
    Ok(())
}

/// How a trial ended.
pub struct TrialEnd<'a> {
    pub status: TrialStatus,
    pub reason: Option<&'a str>,
    pub objective: Option<f64>,
    pub outputs: Option<&'a str>,
}

/// Ends a trial that has not ended: true if it was under way.
pub async fn end_trial(
    conn: &mut Conn,
    search_id: &str,
    number: i64,
    end: TrialEnd<'_>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE training_search_trials SET status = $1, reason = $2, objective = $3, \
         outputs = $4, ended_at = $5 \
         WHERE search_id = $6 AND number = $7 AND status IN ($8, $9)",
    )
    .bind(end.status)
    .bind(end.reason)
    .bind(end.objective)
    .bind(end.outputs)
    .bind(super::now())
    .bind(search_id)
    .bind(number)
    .bind(TrialStatus::Creating)
    .bind(TrialStatus::Running)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
