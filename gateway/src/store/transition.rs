//! The one compare-and-set that moves a resource between statuses, for every kind: the
//! status, its event and its audit row in the caller's transaction, or nothing at all.
//!
//! ```text
//! Transition::new(id, from, to).reason(..).event(..).audit(..).apply(&mut tx)
//!   UPDATE {table} SET status = to, {reason} = .., updated_at = now
//!     WHERE id = ? AND status IN (from…)          one row: + event, + audit row → true
//!                                                 none:    nothing written   → false
//! ```
//!
//! Invariant: an event or audit row describing a transition exists only if the transition
//! happened; both are written in the transaction of the status change (`apply` takes a
//! transaction, not a connection), as is the durable operation a transient status stands
//! for (begun on the way in, ended on the way out: [`super::operations`]).

use sqlx::{Sqlite, Transaction};

use super::audit::{self, Action, Target};
use super::events::{self, EventKind};
use super::{Conn, operations, placeholders, resource_events};
use crate::lifecycle::batch::BatchStatus;
use crate::lifecycle::model::ModelStatus;
use crate::lifecycle::mount::MountStatus;
use crate::lifecycle::notebook::NotebookStatus;
use crate::lifecycle::search::SearchStatus;
use crate::lifecycle::service::ServiceStatus;
use crate::lifecycle::training::JobStatus;
use crate::lifecycle::upload::UploadStatus;
use crate::lifecycle::{Operation, Refused, Status};

/// Where a kind's rows and statuses are stored.
pub trait Stored:
    Status
    + Unpin
    + sqlx::Type<Sqlite>
    + for<'q> sqlx::Encode<'q, Sqlite>
    + for<'r> sqlx::Decode<'r, Sqlite>
{
    /// The resource kind (`notebook`), as the `operations` table names it.
    const KIND: &'static str;
    /// The table, whose `id` is the resource's id and `status` its status.
    const TABLE: &'static str;
    /// The statuses that stand for work under way, which a restarted gateway resumes
    /// (see [`super::operations`]).
    const TRANSIENT: &'static [Self];
    /// The column that says why the resource is in its status (cleared by a transition
    /// without a reason).
    const REASON: &'static str;
}

impl Stored for NotebookStatus {
    const KIND: &'static str = "notebook";
    const TRANSIENT: &'static [Self] = &[
        NotebookStatus::Creating,
        NotebookStatus::Starting,
        NotebookStatus::Stopping,
        NotebookStatus::Deleting,
        NotebookStatus::Snapshotting,
    ];
    const TABLE: &'static str = "notebooks";
    const REASON: &'static str = "status_reason";
}

impl Stored for UploadStatus {
    const KIND: &'static str = "upload";
    /// Landing is resumed; an upload QUEUED or UPLOADING waits for its client.
    const TRANSIENT: &'static [Self] = &[UploadStatus::Landing];
    const TABLE: &'static str = "notebook_uploads";
    const REASON: &'static str = "error";
}

impl Stored for MountStatus {
    const KIND: &'static str = "mount";
    /// A mount MOUNTING at a restart is made again by the health loop, not resumed.
    const TRANSIENT: &'static [Self] = &[];
    const TABLE: &'static str = "notebook_mounts";
    const REASON: &'static str = "error";
}

impl Stored for ModelStatus {
    const KIND: &'static str = "model_version";
    const TRANSIENT: &'static [Self] = &[ModelStatus::Importing, ModelStatus::Deleting];
    const TABLE: &'static str = "model_versions";
    const REASON: &'static str = "error";
}

impl Stored for ServiceStatus {
    const KIND: &'static str = "service";
    const TRANSIENT: &'static [Self] = &[
        ServiceStatus::Deploying,
        ServiceStatus::Stopping,
        ServiceStatus::Updating,
        ServiceStatus::Deleting,
    ];
    const TABLE: &'static str = "services";
    const REASON: &'static str = "status_reason";
}

impl Stored for BatchStatus {
    const KIND: &'static str = "batch";
    /// A job RUNNING when the gateway stopped runs on from its pending items.
    const TRANSIENT: &'static [Self] = &[
        BatchStatus::Deploying,
        BatchStatus::Running,
        BatchStatus::Stopping,
        BatchStatus::Deleting,
    ];
    const TABLE: &'static str = "batch_services";
    const REASON: &'static str = "status_reason";
}

impl Stored for JobStatus {
    const KIND: &'static str = "training_job";
    /// A RUNNING job's workers are found again at a restart; the others go on.
    const TRANSIENT: &'static [Self] = &[
        JobStatus::Creating,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Terminating,
        JobStatus::Deleting,
    ];
    const TABLE: &'static str = "training_jobs";
    const REASON: &'static str = "status_reason";
}

impl Stored for SearchStatus {
    const KIND: &'static str = "training_search";
    /// A running search goes on from its stored trials.
    const TRANSIENT: &'static [Self] = &[
        SearchStatus::Pending,
        SearchStatus::Running,
        SearchStatus::Stopping,
        SearchStatus::Deleting,
    ];
    const TABLE: &'static str = "training_searches";
    const REASON: &'static str = "status_reason";
}

impl Stored for crate::lifecycle::workflow::RunStatus {
    const KIND: &'static str = "workflow_run";
    /// A run under way goes on from its stored steps.
    const TRANSIENT: &'static [Self] = &[
        crate::lifecycle::workflow::RunStatus::Running,
        crate::lifecycle::workflow::RunStatus::AwaitingInput,
        crate::lifecycle::workflow::RunStatus::Stopping,
    ];
    const TABLE: &'static str = "workflow_runs";
    const REASON: &'static str = "status_reason";
}

enum EventRow<'a> {
    /// A notebook's (the seed's named catalogue), listed under notebook `subject`.
    Notebook {
        subject: &'a str,
        kind: EventKind,
        text: &'a str,
        detail: Option<&'a str>,
    },
    /// Another kind's (`resource_events`).
    Resource(resource_events::Row<'a>),
}

struct AuditRow<'a> {
    user: &'a str,
    action: Action,
    target: Target<'a>,
    outcome: &'a str,
    detail: Option<&'a str>,
}

/// A status change with what it records; see the module's doc.
#[must_use = "a transition does nothing until it is applied"]
pub struct Transition<'a, S> {
    id: &'a str,
    from: &'a [S],
    to: S,
    reason: Option<&'a str>,
    event: Option<EventRow<'a>>,
    audit: Option<AuditRow<'a>>,
}

impl<'a, S: Stored> Transition<'a, S> {
    /// `id` from any of `from` to `to`.
    pub fn new(id: &'a str, from: &'a [S], to: S) -> Self {
        Transition {
            id,
            from,
            to,
            reason: None,
            event: None,
            audit: None,
        }
    }

    /// `id` to `to` from wherever `op` is allowed.
    pub fn of<O: Operation<Status = S>>(id: &'a str, op: O, to: S) -> Self {
        Self::new(id, op.allowed_from(), to)
    }

    /// Why the resource is in its new status (kept on the row; none clears it).
    pub fn reason(mut self, reason: Option<&'a str>) -> Self {
        self.reason = reason;
        self
    }

    /// The event that says so, listed under notebook `subject`, with the catalogue's text.
    pub fn event(self, subject: &'a str, kind: EventKind, detail: Option<&'a str>) -> Self {
        self.event_text(subject, kind, kind.description(), detail)
    }

    /// [`Self::event`] with a text of its own (the seed's texts that carry values).
    pub fn event_text(
        mut self,
        subject: &'a str,
        kind: EventKind,
        text: &'a str,
        detail: Option<&'a str>,
    ) -> Self {
        self.event = Some(EventRow::Notebook {
            subject,
            kind,
            text,
            detail,
        });
        self
    }

    /// The event of a kind other than a notebook that says so.
    pub fn resource_event(mut self, row: resource_events::Row<'a>) -> Self {
        self.event = Some(EventRow::Resource(row));
        self
    }

    /// The audit row that records who asked for it.
    pub fn audit(
        mut self,
        user: &'a str,
        action: Action,
        target: Target<'a>,
        outcome: &'a str,
        detail: Option<&'a str>,
    ) -> Self {
        self.audit = Some(AuditRow {
            user,
            action,
            target,
            outcome,
            detail,
        });
        self
    }

    /// Applies it: true when the resource was in one of `from` and is now in `to` with its
    /// event and audit row written; false, writing nothing, otherwise.
    pub async fn apply(self, tx: &mut Transaction<'_, Sqlite>) -> sqlx::Result<bool> {
        if !compare_and_set(tx, self.id, self.from, self.to, self.reason).await? {
            return Ok(false);
        }
        if S::TRANSIENT.contains(&self.to) {
            operations::begin(tx, self.id, self.to).await?;
        } else {
            operations::end::<S>(tx, self.id).await?;
        }
        match self.event {
            Some(EventRow::Notebook {
                subject,
                kind,
                text,
                detail,
            }) => events::record_text(tx, subject, kind, text, detail).await?,
            Some(EventRow::Resource(row)) => resource_events::record(tx, &row).await?,
            None => {}
        }
        if let Some(a) = self.audit {
            audit::record(tx, a.user, a.action, a.target, a.outcome, a.detail).await?;
        }
        Ok(true)
    }

    /// Applies a transition a user asked for with `op`: a refusal says why (the
    /// operation is not allowed in the resource's status, or it moved meanwhile, or it is
    /// gone), in the words of [`Operation::check`].
    pub async fn request<O: Operation<Status = S>>(
        self,
        tx: &mut Transaction<'_, Sqlite>,
        op: O,
        name: &str,
    ) -> Result<(), Denied> {
        let id = self.id;
        if self.apply(tx).await? {
            return Ok(());
        }
        match status_of::<S>(tx, id).await? {
            None => Err(Denied::Gone {
                kind: O::KIND,
                id: id.to_owned(),
            }),
            Some(current) => {
                op.check(name, current)?;
                // Allowed now, so it moved in between: say where it is.
                Err(Denied::moved(O::KIND, name, current))
            }
        }
    }
}

/// Why a requested transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// Not allowed in the resource's status (409).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Allowed, but the resource changed status between the check and the write (409).
    #[error("{}", .0.message)]
    Moved(Refused),
    /// The resource does not exist (any more).
    #[error("{kind} {id} not found")]
    Gone { kind: &'static str, id: String },
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

impl Denied {
    /// `kind` `name` is in `current`, not in the status it was read in.
    pub fn moved(kind: &str, name: &str, current: impl Status) -> Denied {
        Denied::Moved(Refused {
            message: format!(
                "{kind} {name} changed to {} meanwhile; try again",
                current.as_str()
            ),
        })
    }
}

/// The bare compare-and-set: `id`'s status to `to` if it is one of `from`.
async fn compare_and_set<S: Stored>(
    conn: &mut Conn,
    id: &str,
    from: &[S],
    to: S,
    reason: Option<&str>,
) -> sqlx::Result<bool> {
    if from.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "UPDATE {table} SET status = $1, {reason_col} = $2, updated_at = $3 \
         WHERE id = $4 AND status IN ({list})",
        table = S::TABLE,
        reason_col = S::REASON,
        list = placeholders(5, from.len()),
    );
    let mut q = sqlx::query(&sql)
        .bind(to)
        .bind(reason)
        .bind(super::now())
        .bind(id);
    for s in from {
        q = q.bind(*s);
    }
    Ok(q.execute(conn).await?.rows_affected() == 1)
}

/// A resource's stored status, if it exists.
pub async fn status_of<S: Stored>(conn: &mut Conn, id: &str) -> sqlx::Result<Option<S>> {
    sqlx::query_scalar(&format!("SELECT status FROM {} WHERE id = $1", S::TABLE))
        .bind(id)
        .fetch_optional(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::notebook::NotebookOp;
    use crate::store::Store;
    use NotebookStatus::*;

    /// A scratch data dir, removed after the test.
    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn store_with_notebook(status: NotebookStatus) -> (Store, Dir) {
        let dir = Dir(std::env::temp_dir().join(format!("atelier-tr-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let store = Store::open(&dir.0).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        sqlx::query(
            "INSERT INTO users VALUES ('u1', 'ann', 'user', '2026-01-01T00:00:00.000000Z')",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO notebooks (id, owner_id, name, flavor, image, status, status_reason, \
             auto_stop_enabled, auto_stop_hours, backend, created_at, updated_at) \
             VALUES ('n1', 'u1', 'dev', 'f', 'i', $1, 'old reason', 0, 1, 'process', 'x', 'x')",
        )
        .bind(status)
        .execute(&mut *conn)
        .await
        .unwrap();
        (store, dir)
    }

    async fn counts(store: &Store) -> (i64, i64) {
        let mut conn = store.pool.acquire().await.unwrap();
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        (events, audit)
    }

    fn target() -> Target<'static> {
        Target {
            kind: "notebook",
            id: "n1",
            name: "dev",
        }
    }

    #[tokio::test]
    async fn a_transition_writes_status_event_and_audit_or_nothing() {
        let (store, _dir) = store_with_notebook(Running).await;
        // Not in `from`: nothing is written.
        let mut tx = store.write().await.unwrap();
        let moved = Transition::new("n1", &[Stopped], Starting)
            .event("n1", EventKind::Scheduled, None)
            .audit("ann", Action::StartNotebook, target(), "accepted", None)
            .apply(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(!moved);
        assert_eq!(counts(&store).await, (0, 0));
        let mut conn = store.pool.acquire().await.unwrap();
        assert_eq!(
            status_of::<NotebookStatus>(&mut conn, "n1").await.unwrap(),
            Some(Running)
        );
        drop(conn);

        // In `from`: status, reason, event and audit row, together.
        let mut tx = store.write().await.unwrap();
        let moved = Transition::new("n1", &[Running, Error], Stopping)
            .reason(Some("auto-stopped: idle"))
            .event("n1", EventKind::StopNotebookResourceIdle, Some("idle 1h"))
            .audit("system", Action::StopNotebook, target(), "accepted", None)
            .apply(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(moved);
        assert_eq!(counts(&store).await, (1, 1));
        let mut conn = store.pool.acquire().await.unwrap();
        let (status, reason): (NotebookStatus, Option<String>) =
            sqlx::query_as("SELECT status, status_reason FROM notebooks WHERE id = 'n1'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            (status, reason.as_deref()),
            (Stopping, Some("auto-stopped: idle"))
        );
        let (name, detail): (String, Option<String>) =
            sqlx::query_as("SELECT name, detail FROM events")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            (name.as_str(), detail.as_deref()),
            ("StopNotebookResourceIdle", Some("idle 1h"))
        );

        // A transition without a reason clears the old one; a rolled-back one leaves no trace.
        let mut tx = store.write().await.unwrap();
        assert!(
            Transition::new("n1", &[Stopping], Stopped)
                .event("n1", EventKind::StopNotebook, None)
                .apply(&mut tx)
                .await
                .unwrap()
        );
        tx.rollback().await.unwrap();
        assert_eq!(counts(&store).await, (1, 1));
        let mut tx = store.write().await.unwrap();
        assert!(
            Transition::new("n1", &[Stopping], Stopped)
                .apply(&mut tx)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let reason: Option<String> =
            sqlx::query_scalar("SELECT status_reason FROM notebooks WHERE id = 'n1'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(reason, None);
    }

    #[tokio::test]
    async fn a_request_says_refused_moved_or_gone() {
        let (store, _dir) = store_with_notebook(Stopped).await;
        let mut tx = store.write().await.unwrap();
        // Refused in its status, with the table's words.
        let e = Transition::of("n1", NotebookOp::Stop, Stopping)
            .request(&mut tx, NotebookOp::Stop, "dev")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot stop notebook dev while it is STOPPED; allowed when it is RUNNING, ERROR"
        );
        assert!(matches!(e, Denied::Refused(_)));
        // Allowed now but not in the `from` given: it moved meanwhile.
        let e = Transition::new("n1", &[Running], Starting)
            .request(&mut tx, NotebookOp::Start, "dev")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "notebook dev changed to STOPPED meanwhile; try again"
        );
        assert!(matches!(e, Denied::Moved(_)));
        let e = Transition::of("n2", NotebookOp::Start, Starting)
            .request(&mut tx, NotebookOp::Start, "gone")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "notebook n2 not found");
        assert!(matches!(e, Denied::Gone { .. }));
        Transition::of("n1", NotebookOp::Start, Starting)
            .audit("ann", Action::StartNotebook, target(), "accepted", None)
            .request(&mut tx, NotebookOp::Start, "dev")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(counts(&store).await, (0, 1));
    }
}
