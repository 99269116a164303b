//! Workflows' rows (`workflows`, `workflow_versions`, `workflow_runs`, `workflow_run_steps`;
//! migration 0024). A definition is stored as its canonical JSON with its digest; the
//! `workflows` service reads it as its own type.

use super::Conn;
use crate::lifecycle::workflow::{RunStatus, StepStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub name: String,
    pub description: String,
    pub latest_version: i64,
    pub tags: String,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT w.id, w.owner_id, u.name AS owner_name, w.name, w.description, \
     w.latest_version, w.tags, w.created_at, w.updated_at \
     FROM workflows w JOIN users u ON u.id = w.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "w",
};

pub async fn by_key(
    conn: &mut Conn,
    owner_id: &str,
    key: &str,
) -> sqlx::Result<Option<WorkflowRow>> {
    OWNED.by_key(conn, owner_id, key).await
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<WorkflowRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<WorkflowRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE w.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One owner's workflows by name, or everyone's.
pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<WorkflowRow>> {
    OWNED.list(conn, owner_id).await
}

/// The newest version of every workflow of one owner (or everyone's), by workflow id: one
/// query for a list, not one per workflow.
pub async fn latest_versions(
    conn: &mut Conn,
    owner_id: Option<&str>,
) -> sqlx::Result<Vec<(String, VersionRow)>> {
    let rows: Vec<(String, i64, String, String, String)> = sqlx::query_as(
        "SELECT v.workflow_id, v.version, v.digest, v.definition, v.created_at \
         FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id \
         AND v.version = w.latest_version WHERE ($1 IS NULL OR w.owner_id = $1)",
    )
    .bind(owner_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, version, digest, definition, created_at)| {
            (
                id,
                VersionRow {
                    version,
                    digest,
                    definition,
                    created_at,
                },
            )
        })
        .collect())
}

pub async fn count(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

/// A definition as published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub version: i64,
    pub digest: String,
    pub definition: String,
    pub created_at: String,
}

pub struct NewWorkflow<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub tags: &'a str,
    pub digest: &'a str,
    pub definition: &'a str,
    pub now: &'a str,
}

/// A new workflow with its version 1 (in the caller's transaction).
pub async fn insert(conn: &mut Conn, w: NewWorkflow<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workflows (id, owner_id, name, description, latest_version, tags, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $6, $6)",
    )
    .bind(w.id)
    .bind(w.owner_id)
    .bind(w.name)
    .bind(w.description)
    .bind(w.tags)
    .bind(w.now)
    .execute(&mut *conn)
    .await?;
    insert_version(conn, w.id, 1, w.digest, w.definition, w.now).await
}

async fn insert_version(
    conn: &mut Conn,
    workflow_id: &str,
    version: i64,
    digest: &str,
    definition: &str,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO workflow_versions (workflow_id, version, digest, definition, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(workflow_id)
    .bind(version)
    .bind(digest)
    .bind(definition)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A definition to publish.
pub struct Definition<'a> {
    pub digest: &'a str,
    pub definition: &'a str,
    /// The workflow's description from now on (when the definition is new).
    pub description: &'a str,
}

/// Publishes a definition: a new version when its digest differs from the latest one's;
/// returns the version that holds it (the latest, unchanged, when it is the same).
pub async fn publish(
    conn: &mut Conn,
    workflow_id: &str,
    d: Definition<'_>,
    now: &str,
) -> sqlx::Result<i64> {
    let Definition {
        digest,
        definition,
        description,
    } = d;
    let latest: Option<(i64, String)> = sqlx::query_as(
        "SELECT v.version, v.digest FROM workflows w JOIN workflow_versions v \
         ON v.workflow_id = w.id AND v.version = w.latest_version WHERE w.id = $1",
    )
    .bind(workflow_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((version, latest_digest)) = latest else {
        return Err(sqlx::Error::RowNotFound);
    };
    if latest_digest == digest {
        return Ok(version);
    }
    let next = version + 1;
    insert_version(conn, workflow_id, next, digest, definition, now).await?;
    sqlx::query(
        "UPDATE workflows SET latest_version = $1, description = $2, updated_at = $3 \
         WHERE id = $4",
    )
    .bind(next)
    .bind(description)
    .bind(now)
    .bind(workflow_id)
    .execute(conn)
    .await?;
    Ok(next)
}

pub async fn version(
    conn: &mut Conn,
    workflow_id: &str,
    version: i64,
) -> sqlx::Result<Option<VersionRow>> {
    sqlx::query_as(
        "SELECT version, digest, definition, created_at FROM workflow_versions \
         WHERE workflow_id = $1 AND version = $2",
    )
    .bind(workflow_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// A workflow's versions, oldest first.
pub async fn versions(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as(
        "SELECT version, digest, definition, created_at FROM workflow_versions \
         WHERE workflow_id = $1 ORDER BY version",
    )
    .bind(workflow_id)
    .fetch_all(conn)
    .await
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM workflows WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub workflow_id: String,
    pub owner_id: String,
    pub number: i64,
    pub version: i64,
    pub parameters: String,
    pub selected: Option<String>,
    pub status: RunStatus,
    pub status_reason: Option<String>,
    pub tags: String,
    pub created_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
    /// JSON object: storage name → root.
    pub storages: String,
    /// JSON array: the delayed parameters still awaited.
    pub awaiting: String,
    pub connection_id: Option<String>,
    /// The connection's name (none when it was deleted).
    pub connection_name: Option<String>,
    /// `api`, `rerun`, `schedule` or `webhook`.
    pub trigger: String,
}

const RUN: &str = "SELECT id, workflow_id, owner_id, number, version, parameters, selected, \
     status, status_reason, tags, created_at, updated_at, ended_at, storages, awaiting, \
     connection_id, (SELECT c.name FROM storage_connections c WHERE c.id = connection_id) \
     AS connection_name, trigger FROM workflow_runs";

pub struct NewRun<'a> {
    pub id: &'a str,
    pub workflow_id: &'a str,
    pub owner_id: &'a str,
    pub version: i64,
    pub parameters: &'a str,
    pub selected: Option<&'a str>,
    pub tags: &'a str,
    pub storages: &'a str,
    pub awaiting: &'a str,
    pub connection_id: Option<&'a str>,
    pub trigger: &'a str,
    pub now: &'a str,
}

/// What starting a run found.
#[derive(Debug)]
pub enum Started {
    /// Its number.
    Number(i64),
    /// The workflow's active run (its number): one at a time.
    Busy(i64),
}

/// A new RUNNING run with the next number, unless the workflow has an active run (in the
/// caller's transaction: the unique index on active runs is the last word).
pub async fn start_run(conn: &mut Conn, r: NewRun<'_>) -> sqlx::Result<Started> {
    if let Some(n) = active_run(conn, r.workflow_id).await? {
        return Ok(Started::Busy(n));
    }
    let number: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM workflow_runs WHERE workflow_id = $1",
    )
    .bind(r.workflow_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO workflow_runs (id, workflow_id, owner_id, number, version, parameters, \
         selected, status, tags, created_at, updated_at, storages, awaiting, connection_id, \
         trigger) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14)",
    )
    .bind(r.id)
    .bind(r.workflow_id)
    .bind(r.owner_id)
    .bind(number)
    .bind(r.version)
    .bind(r.parameters)
    .bind(r.selected)
    .bind(RunStatus::Running)
    .bind(r.tags)
    .bind(r.now)
    .bind(r.storages)
    .bind(r.awaiting)
    .bind(r.connection_id)
    .bind(r.trigger)
    .execute(conn)
    .await?;
    Ok(Started::Number(number))
}

/// The number of the workflow's active run, if it has one.
pub async fn active_run(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT number FROM workflow_runs WHERE workflow_id = $1 \
         AND status IN ('RUNNING', 'AWAITING_INPUT', 'STOPPING')",
    )
    .bind(workflow_id)
    .fetch_optional(conn)
    .await
}

pub async fn run_by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!("{RUN} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A workflow's runs, newest first.
pub async fn runs(conn: &mut Conn, workflow_id: &str) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!(
        "{RUN} WHERE workflow_id = $1 ORDER BY number DESC"
    ))
    .bind(workflow_id)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct StepRow {
    pub name: String,
    pub status: StepStatus,
    pub reason: Option<String>,
    pub attempt: i64,
    pub inputs: Option<String>,
    pub outputs: Option<String>,
    pub metrics: Option<String>,
    pub child_kind: Option<String>,
    pub child_id: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub variables: Option<String>,
    #[serde(default)]
    pub log: Option<String>,
}

/// The run's steps, PENDING (when the run starts; in the caller's transaction).
pub async fn insert_steps(conn: &mut Conn, run_id: &str, names: &[&str]) -> sqlx::Result<()> {
    for name in names {
        sqlx::query("INSERT INTO workflow_run_steps (run_id, name, status) VALUES ($1, $2, $3)")
            .bind(run_id)
            .bind(name)
            .bind(StepStatus::Pending)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A run's steps without their logs (`log` is None), in order, as one JSON array: one row
/// back from the database's thread instead of one per step.
const STEP_STATES: &str = "(SELECT json_group_array(json_object('seq', rowid, 'name', name, \
     'status', status, 'reason', reason, 'attempt', attempt, 'inputs', inputs, 'outputs', \
     outputs, 'metrics', metrics, 'child_kind', child_kind, 'child_id', child_id, \
     'started_at', started_at, 'ended_at', ended_at, 'variables', variables)) \
     FROM workflow_run_steps s WHERE s.run_id = $1)";

#[derive(serde::Deserialize)]
struct StepState {
    seq: i64,
    #[serde(flatten)]
    row: StepRow,
}

fn decode_steps(json: &str) -> sqlx::Result<Vec<StepRow>> {
    let mut steps: Vec<StepState> =
        serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    steps.sort_by_key(|s| s.seq);
    Ok(steps.into_iter().map(|s| s.row).collect())
}

/// The run's steps without their logs (`log` is None): what the engine reads on every
/// pass, which a long log must not slow down.
pub async fn step_states(conn: &mut Conn, run_id: &str) -> sqlx::Result<Vec<StepRow>> {
    let json: String = sqlx::query_scalar(&format!("SELECT {STEP_STATES}"))
        .bind(run_id)
        .fetch_one(conn)
        .await?;
    decode_steps(&json)
}

#[derive(sqlx::FromRow)]
struct RunAndSteps {
    #[sqlx(flatten)]
    run: RunRow,
    steps: String,
}

/// The run and its steps without their logs, in one statement (the engine's every pass).
pub async fn run_and_steps(
    conn: &mut Conn,
    run_id: &str,
) -> sqlx::Result<Option<(RunRow, Vec<StepRow>)>> {
    let row: Option<RunAndSteps> = sqlx::query_as(&format!(
        "SELECT r.*, {STEP_STATES} AS steps FROM ({RUN} WHERE id = $1) r"
    ))
    .bind(run_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.run, decode_steps(&r.steps)?)))
        .transpose()
}

pub async fn steps(conn: &mut Conn, run_id: &str) -> sqlx::Result<Vec<StepRow>> {
    sqlx::query_as(
        "SELECT name, status, reason, attempt, inputs, outputs, metrics, child_kind, child_id, \
         started_at, ended_at, variables, log FROM workflow_run_steps WHERE run_id = $1 \
         ORDER BY rowid",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// The statuses a compare-and-set moves from, bound as one JSON array
/// (`status IN (SELECT value FROM json_each($n))`).
fn statuses<T: serde::Serialize>(from: &[T]) -> String {
    serde_json::to_string(from).unwrap_or_else(|_| "[]".into())
}

/// Compare-and-set of one step's status (with its reason; `at` stamps a start or an end).
pub async fn set_step(
    conn: &mut Conn,
    run_id: &str,
    name: &str,
    from: &[StepStatus],
    to: StepStatus,
    reason: Option<&str>,
    at: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE workflow_run_steps SET status = $1, reason = $2, \
         started_at = CASE WHEN $1 = 'RUNNING' THEN $3 ELSE started_at END, \
         ended_at = CASE WHEN $1 IN ('COMPLETED', 'FAILED', 'STOPPED', 'SKIPPED') \
         THEN $3 ELSE NULL END \
         WHERE run_id = $4 AND name = $5 AND status IN (SELECT value FROM json_each($6))",
    )
    .bind(to)
    .bind(reason)
    .bind(at)
    .bind(run_id)
    .bind(name)
    .bind(statuses(from))
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// What a step ended with.
pub struct StepEnd<'a> {
    pub status: StepStatus,
    pub reason: Option<&'a str>,
    /// JSON objects (none: nothing produced).
    pub outputs: Option<&'a str>,
    pub variables: Option<&'a str>,
    pub metrics: Option<&'a str>,
    pub log: Option<&'a str>,
}

/// A step starts (compare-and-set from `from`): RUNNING, its resolved values recorded, what
/// an earlier attempt produced cleared.
pub async fn start_step(
    conn: &mut Conn,
    run_id: &str,
    name: &str,
    from: &[StepStatus],
    inputs: &str,
    at: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE workflow_run_steps SET status = 'RUNNING', reason = NULL, inputs = $1, \
         started_at = $2, ended_at = NULL, outputs = NULL, variables = NULL, \
         metrics = NULL, log = NULL, child_kind = NULL, child_id = NULL \
         WHERE run_id = $3 AND name = $4 AND status IN (SELECT value FROM json_each($5))",
    )
    .bind(inputs)
    .bind(at)
    .bind(run_id)
    .bind(name)
    .bind(statuses(from))
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A step ends (compare-and-set from `from`) with what it produced.
pub async fn end_step(
    conn: &mut Conn,
    run_id: &str,
    name: &str,
    from: &[StepStatus],
    end: StepEnd<'_>,
    at: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE workflow_run_steps SET status = $1, reason = $2, outputs = $3, \
         variables = $4, metrics = $5, log = COALESCE($6, log), ended_at = $7 \
         WHERE run_id = $8 AND name = $9 AND status IN (SELECT value FROM json_each($10))",
    )
    .bind(end.status)
    .bind(end.reason)
    .bind(end.outputs)
    .bind(end.variables)
    .bind(end.metrics)
    .bind(end.log)
    .bind(at)
    .bind(run_id)
    .bind(name)
    .bind(statuses(from))
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// What a step started (a training job, a service, a model version): stopped with the run.
pub async fn set_child(
    conn: &mut Conn,
    run_id: &str,
    name: &str,
    kind: &str,
    id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE workflow_run_steps SET child_kind = $1, child_id = $2 \
         WHERE run_id = $3 AND name = $4",
    )
    .bind(kind)
    .bind(id)
    .bind(run_id)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// A retry: the steps named go back to PENDING, those that had started with one more attempt,
/// what they produced cleared (in the caller's transaction).
pub async fn reset_steps(conn: &mut Conn, run_id: &str, names: &[&str]) -> sqlx::Result<()> {
    for name in names {
        sqlx::query(
            "UPDATE workflow_run_steps SET status = 'PENDING', reason = NULL, \
             attempt = attempt + CASE WHEN started_at IS NULL THEN 0 ELSE 1 END, \
             inputs = NULL, outputs = NULL, variables = NULL, metrics = NULL, log = NULL, \
             child_kind = NULL, child_id = NULL, started_at = NULL, ended_at = NULL \
             WHERE run_id = $1 AND name = $2",
        )
        .bind(run_id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Compare-and-set of a run's status (`ended_at` stamped when it ends, cleared otherwise).
pub async fn set_run_status(
    conn: &mut Conn,
    id: &str,
    from: &[RunStatus],
    to: RunStatus,
    reason: Option<&str>,
    at: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE workflow_runs SET status = $1, status_reason = $2, updated_at = $3, \
         ended_at = CASE WHEN $1 IN ('COMPLETED', 'FAILED', 'STOPPED') THEN $3 ELSE NULL END \
         WHERE id = $4 AND status IN (SELECT value FROM json_each($5))",
    )
    .bind(to)
    .bind(reason)
    .bind(at)
    .bind(id)
    .bind(statuses(from))
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The run's parameter values and the delayed ones still awaited (after a proceed).
pub async fn set_run_values(
    conn: &mut Conn,
    id: &str,
    parameters: &str,
    awaiting: &str,
    at: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE workflow_runs SET parameters = $1, awaiting = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(parameters)
    .bind(awaiting)
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The runs under way, oldest first (a gateway start goes on with each).
pub async fn active_runs(conn: &mut Conn) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!(
        "{RUN} WHERE status IN ('RUNNING', 'AWAITING_INPUT', 'STOPPING') ORDER BY created_at"
    ))
    .fetch_all(conn)
    .await
}

pub async fn run_by_number(
    conn: &mut Conn,
    workflow_id: &str,
    number: i64,
) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!("{RUN} WHERE workflow_id = $1 AND number = $2"))
        .bind(workflow_id)
        .bind(number)
        .fetch_optional(conn)
        .await
}

/// Keeps the workflow's newest `keep` run records: older ended ones are removed (their
/// ids returned, for their scratch outputs).
pub async fn prune_runs(
    conn: &mut Conn,
    workflow_id: &str,
    keep: usize,
) -> sqlx::Result<Vec<String>> {
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM workflow_runs WHERE workflow_id = $1 \
         AND status IN ('COMPLETED', 'FAILED', 'STOPPED') \
         AND number <= (SELECT MAX(number) FROM workflow_runs WHERE workflow_id = $1) - $2",
    )
    .bind(workflow_id)
    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    for id in &old {
        delete_run(conn, id).await?;
    }
    Ok(old)
}

/// Removes a run's record and its steps.
pub async fn delete_run(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM workflow_runs WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{now, scratch as store, users};

    fn workflow<'a>(id: &'a str, name: &'a str, t: &'a str) -> NewWorkflow<'a> {
        NewWorkflow {
            id,
            owner_id: "u1",
            name,
            description: "",
            tags: "{}",
            digest: "d1",
            definition: "{\"v\":1}",
            now: t,
        }
    }

    fn run<'a>(id: &'a str, workflow_id: &'a str, t: &'a str) -> NewRun<'a> {
        NewRun {
            id,
            workflow_id,
            owner_id: "u1",
            version: 1,
            parameters: "{}",
            selected: None,
            tags: "{}",
            storages: "{}",
            awaiting: "[]",
            connection_id: None,
            trigger: "api",
            now: t,
        }
    }

    fn def<'a>(digest: &'a str, definition: &'a str) -> Definition<'a> {
        Definition {
            digest,
            definition,
            description: "",
        }
    }

    /// A store with user u1 (alice) and her workflow w1 (etl); the time it was made.
    async fn with_etl() -> (crate::store::Store, std::path::PathBuf, String) {
        let (store, dir) = store().await;
        let mut c = store.pool.acquire().await.unwrap();
        let t = now();
        users::insert_user(&mut c, "u1", "alice", "user", &t)
            .await
            .unwrap();
        insert(&mut c, workflow("w1", "etl", &t)).await.unwrap();
        drop(c);
        (store, dir, t)
    }

    #[tokio::test]
    async fn publishing_the_same_definition_makes_no_version_and_a_change_makes_one() {
        let (store, dir, t) = with_etl().await;
        let mut c = store.pool.acquire().await.unwrap();
        assert_eq!(
            publish(&mut c, "w1", def("d1", "{\"v\":1}"), &t)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            publish(&mut c, "w1", def("d2", "{\"v\":2}"), &t)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            publish(&mut c, "w1", def("d2", "{\"v\":2}"), &t)
                .await
                .unwrap(),
            2
        );
        // Back to the first definition: a new version again (the latest differs).
        assert_eq!(
            publish(&mut c, "w1", def("d1", "{\"v\":1}"), &t)
                .await
                .unwrap(),
            3
        );
        let all = versions(&mut c, "w1").await.unwrap();
        assert_eq!(
            all.iter()
                .map(|v| (v.version, v.digest.as_str()))
                .collect::<Vec<_>>(),
            [(1, "d1"), (2, "d2"), (3, "d1")]
        );
        assert_eq!(
            by_name(&mut c, "u1", "etl")
                .await
                .unwrap()
                .unwrap()
                .latest_version,
            3
        );
        assert!(publish(&mut c, "nope", def("d", "{}"), &t).await.is_err());
        drop(c);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_workflow_has_one_active_run_and_runs_are_numbered() {
        let (store, dir, t) = with_etl().await;
        let mut c = store.pool.acquire().await.unwrap();
        insert(&mut c, workflow("w2", "other", &t)).await.unwrap();
        assert!(matches!(
            start_run(&mut c, run("r1", "w1", &t)).await.unwrap(),
            Started::Number(1)
        ));
        insert_steps(&mut c, "r1", &["prep", "train"])
            .await
            .unwrap();
        // A second while the first is active: refused, by the check and by the index.
        assert!(matches!(
            start_run(&mut c, run("r2", "w1", &t)).await.unwrap(),
            Started::Busy(1)
        ));
        let raw = sqlx::query(
            "INSERT INTO workflow_runs (id, workflow_id, owner_id, number, version, parameters, \
             status, created_at, updated_at) VALUES ('r9', 'w1', 'u1', 9, 1, '{}', 'AWAITING_INPUT', 'x', 'x')",
        )
        .execute(&mut *c)
        .await;
        assert!(raw.is_err(), "the index refuses a second active run");
        // Another workflow's run is its own.
        assert!(matches!(
            start_run(&mut c, run("r3", "w2", &t)).await.unwrap(),
            Started::Number(1)
        ));
        sqlx::query("UPDATE workflow_runs SET status = 'COMPLETED' WHERE id = 'r1'")
            .execute(&mut *c)
            .await
            .unwrap();
        assert!(matches!(
            start_run(&mut c, run("r2", "w1", &t)).await.unwrap(),
            Started::Number(2)
        ));
        assert_eq!(
            runs(&mut c, "w1")
                .await
                .unwrap()
                .iter()
                .map(|r| r.number)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        // A step moves only from where it is.
        use crate::lifecycle::workflow::step;
        for (from, to, moved) in [
            (step::PENDING, step::RUNNING, true),
            (step::PENDING, step::RUNNING, false),
            (step::RUNNING, step::COMPLETED, true),
        ] {
            let m = set_step(&mut c, "r1", "prep", &[from], to, None, &t)
                .await
                .unwrap();
            assert_eq!(m, moved, "{from} → {to}");
        }
        let s = steps(&mut c, "r1").await.unwrap();
        assert_eq!(s[0].status, step::COMPLETED);
        assert!(s[0].started_at.is_some() && s[0].ended_at.is_some());
        assert_eq!(s[1].status, step::PENDING);
        // Deleting the workflow deletes its runs and their steps.
        delete(&mut c, "w1").await.unwrap();
        assert!(run_by_id(&mut c, "r1").await.unwrap().is_none());
        assert!(steps(&mut c, "r1").await.unwrap().is_empty());
        drop(c);
        let _ = std::fs::remove_dir_all(dir);
    }
}
