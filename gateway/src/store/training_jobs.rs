//! Training jobs' rows (`training_jobs`, `training_workers`, `training_recoveries`,
//! `training_metrics`; migration 0021). `spec` is JSON the `training` service reads and
//! writes as its own type.

use super::Conn;
use crate::lifecycle::training::JobStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub name: String,
    pub description: String,
    pub algorithm_id: Option<String>,
    pub spec: String,
    pub status: JobStatus,
    pub status_reason: Option<String>,
    pub attempt: i64,
    pub retries: i64,
    pub streak: i64,
    pub run_seconds: i64,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

const SELECT: &str = "SELECT j.id, j.owner_id, u.name AS owner_name, j.name, j.description, \
     j.algorithm_id, j.spec, j.status, j.status_reason, j.attempt, j.retries, j.streak, \
     j.run_seconds, j.created_at, j.updated_at, j.started_at, j.ended_at \
     FROM training_jobs j JOIN users u ON u.id = j.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "j",
};

pub async fn by_key(conn: &mut Conn, owner_id: &str, key: &str) -> sqlx::Result<Option<JobRow>> {
    OWNED.by_key(conn, owner_id, key).await
}

pub async fn by_name(conn: &mut Conn, owner_id: &str, name: &str) -> sqlx::Result<Option<JobRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE j.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One owner's jobs by name, or everyone's.
pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<JobRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn count(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM training_jobs WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

/// The names of the jobs that run `algorithm_id`.
pub async fn using_algorithm(conn: &mut Conn, algorithm_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM training_jobs WHERE algorithm_id = $1 ORDER BY name")
        .bind(algorithm_id)
        .fetch_all(conn)
        .await
}

pub struct NewJob<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub algorithm_id: Option<&'a str>,
    pub spec: &'a str,
    pub now: &'a str,
}

/// A new job, CREATING.
pub async fn insert(conn: &mut Conn, j: NewJob<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO training_jobs (id, owner_id, name, description, algorithm_id, spec, status, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(j.id)
    .bind(j.owner_id)
    .bind(j.name)
    .bind(j.description)
    .bind(j.algorithm_id)
    .bind(j.spec)
    .bind(JobStatus::Creating)
    .bind(j.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM training_jobs WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The attempt `attempt` starts running now.
pub async fn set_started(conn: &mut Conn, id: &str, attempt: i64, now: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE training_jobs SET attempt = $2, started_at = $3, ended_at = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(attempt)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The running attempt ended after `seconds` of running; `restart`: one more restart, with
/// the streak of consecutive unconditional ones set to `streak`.
pub async fn set_attempt_ended(
    conn: &mut Conn,
    id: &str,
    seconds: i64,
    restart: Option<i64>,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE training_jobs SET run_seconds = run_seconds + $2, \
         retries = retries + (CASE WHEN $3 IS NULL THEN 0 ELSE 1 END), \
         streak = COALESCE($3, streak), \
         attempt = attempt + (CASE WHEN $3 IS NULL THEN 0 ELSE 1 END), \
         started_at = NULL, ended_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(seconds)
    .bind(restart)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub attempt: i64,
    pub rank: i64,
    pub handle: Option<crate::lifecycle::handle::Handle>,
    pub exit_code: Option<i64>,
    pub started_at: String,
    pub ended_at: Option<String>,
}

pub async fn insert_worker(
    conn: &mut Conn,
    job_id: &str,
    attempt: i64,
    rank: i64,
    handle: &crate::lifecycle::handle::Handle,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO training_workers (job_id, attempt, rank, handle, started_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id, attempt, rank) \
         DO UPDATE SET handle = $4, started_at = $5, exit_code = NULL, ended_at = NULL",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(rank)
    .bind(handle)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn worker_ended(
    conn: &mut Conn,
    job_id: &str,
    attempt: i64,
    rank: i64,
    exit_code: Option<i64>,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE training_workers SET exit_code = $4, ended_at = $5 \
         WHERE job_id = $1 AND attempt = $2 AND rank = $3 AND ended_at IS NULL",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(rank)
    .bind(exit_code)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The workers of one attempt, by rank.
pub async fn workers(conn: &mut Conn, job_id: &str, attempt: i64) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as(
        "SELECT attempt, rank, handle, exit_code, started_at, ended_at FROM training_workers \
         WHERE job_id = $1 AND attempt = $2 ORDER BY rank",
    )
    .bind(job_id)
    .bind(attempt)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct RecoveryRow {
    pub attempt: i64,
    pub started_at: String,
    pub ended_at: String,
    pub fault_source: String,
    pub reason: String,
    pub action: String,
}

pub async fn insert_recovery(conn: &mut Conn, job_id: &str, r: &RecoveryRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO training_recoveries (job_id, attempt, started_at, ended_at, fault_source, \
         reason, action) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (job_id, attempt) DO NOTHING",
    )
    .bind(job_id)
    .bind(r.attempt)
    .bind(&r.started_at)
    .bind(&r.ended_at)
    .bind(&r.fault_source)
    .bind(&r.reason)
    .bind(&r.action)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn recoveries(conn: &mut Conn, job_id: &str) -> sqlx::Result<Vec<RecoveryRow>> {
    sqlx::query_as(
        "SELECT attempt, started_at, ended_at, fault_source, reason, action \
         FROM training_recoveries WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job_id)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct MetricRow {
    pub attempt: i64,
    pub worker: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    pub value: f64,
    pub time: String,
}

pub async fn insert_metrics(conn: &mut Conn, job_id: &str, rows: &[MetricRow]) -> sqlx::Result<()> {
    for m in rows {
        sqlx::query(
            "INSERT INTO training_metrics (job_id, attempt, worker, name, step, value, time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job_id)
        .bind(m.attempt)
        .bind(m.worker)
        .bind(&m.name)
        .bind(m.step)
        .bind(m.value)
        .bind(&m.time)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn count_metrics(conn: &mut Conn, job_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM training_metrics WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(conn)
        .await
}

/// A job's metrics in the order they came: `name` only when given, else the job's own
/// (`system`: the platform's resource usage, `system/…`).
pub async fn metrics(
    conn: &mut Conn,
    job_id: &str,
    name: Option<&str>,
    system: bool,
    limit: i64,
) -> sqlx::Result<Vec<MetricRow>> {
    sqlx::query_as(
        "SELECT attempt, worker, name, step, value, time FROM training_metrics \
         WHERE job_id = $1 AND ($2 IS NULL OR name = $2) \
         AND ($2 IS NOT NULL OR (name LIKE 'system/%') = $3) ORDER BY rowid LIMIT $4",
    )
    .bind(job_id)
    .bind(name)
    .bind(system)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The mean of one worker's samples of `name` in one attempt; `None` without samples.
pub async fn mean(
    conn: &mut Conn,
    job_id: &str,
    attempt: i64,
    worker: i64,
    name: &str,
) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar(
        "SELECT AVG(value) FROM training_metrics \
         WHERE job_id = $1 AND attempt = $2 AND worker = $3 AND name = $4",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(worker)
    .bind(name)
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{now, scratch, users};

    #[tokio::test]
    async fn the_mean_is_of_one_worker_one_attempt_and_one_name() {
        let (store, dir) = scratch().await;
        let mut c = store.pool.acquire().await.unwrap();
        let t = now();
        users::insert_user(&mut c, "u1", "alice", "user", &t)
            .await
            .unwrap();
        let job = |id: &'static str| NewJob {
            id,
            owner_id: "u1",
            name: id,
            description: "",
            algorithm_id: None,
            spec: "{}",
            now: "2026-01-01T00:00:00Z",
        };
        insert(&mut c, job("j1")).await.unwrap();
        insert(&mut c, job("j2")).await.unwrap();
        assert_eq!(
            mean(&mut c, "j1", 0, 0, "system/gpuUtil").await.unwrap(),
            None
        );
        let m = |attempt, worker, name: &str, value| MetricRow {
            attempt,
            worker,
            name: name.into(),
            step: None,
            value,
            time: t.clone(),
        };
        insert_metrics(
            &mut c,
            "j1",
            &[
                m(0, 0, "system/gpuUtil", 30.0),
                m(0, 0, "system/gpuUtil", 50.0),
                m(0, 1, "system/gpuUtil", 100.0),
                m(1, 0, "system/gpuUtil", 90.0),
                m(0, 0, "system/cpuUsage", 100.0),
            ],
        )
        .await
        .unwrap();
        insert_metrics(&mut c, "j2", &[m(0, 0, "system/gpuUtil", 0.0)])
            .await
            .unwrap();
        assert_eq!(
            mean(&mut c, "j1", 0, 0, "system/gpuUtil").await.unwrap(),
            Some(40.0)
        );
        assert_eq!(
            mean(&mut c, "j1", 1, 0, "system/gpuUtil").await.unwrap(),
            Some(90.0)
        );
        assert_eq!(
            mean(&mut c, "j2", 0, 0, "system/gpuUtil").await.unwrap(),
            Some(0.0)
        );
        drop(c);
        let _ = std::fs::remove_dir_all(dir);
    }
}
