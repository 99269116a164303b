//! Durable operations (`operations` table): the work a resource's transient status stands
//! for, which a restarted gateway resumes, or gives up with an event after it survived
//! [`MAX_RESUMES`] starts. [`super::transition::Transition`] keeps the table in step with
//! the statuses: a transition into a transient status begins an operation, one out of it
//! ends it, in the same transaction.
//!
//! Invariant: a resource has an operation row if and only if it is in one of its kind's
//! transient statuses (`Stored::TRANSIENT`); rows of resources that are gone are dropped
//! at resume.

use super::Conn;
use super::transition::Stored;

/// Gateway starts an operation may survive before it is given up.
pub const MAX_RESUMES: i64 = 3;

/// Work a previous gateway left unfinished.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<S> {
    pub resource_id: String,
    /// The transient status it stands for.
    pub status: S,
    /// Gateway starts that resumed it, this one included.
    pub attempts: i64,
}

impl<S> Pending<S> {
    /// Whether it has been resumed too often to try again.
    pub fn exhausted(&self) -> bool {
        self.attempts > MAX_RESUMES
    }
}

/// Records that `id` entered its transient status `status` (a new operation, attempts 0).
pub async fn begin<S: Stored>(conn: &mut Conn, id: &str, status: S) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO operations (kind, resource_id, status, attempts, started_at) \
         VALUES ($1, $2, $3, 0, $4) \
         ON CONFLICT (kind, resource_id) DO UPDATE SET status = $3, attempts = 0, started_at = $4",
    )
    .bind(S::KIND)
    .bind(id)
    .bind(status)
    .bind(super::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `id`'s operation ended (whatever its outcome); nothing if it had none.
pub async fn end<S: Stored>(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM operations WHERE kind = $1 AND resource_id = $2")
        .bind(S::KIND)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that `id`'s operation made progress: the starts it survived so far count no
/// more (a long job outlives restarts; only work that gets nowhere is given up). Nothing
/// if it has none.
pub async fn progressed<S: Stored>(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE operations SET attempts = 0 WHERE kind = $1 AND resource_id = $2")
        .bind(S::KIND)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// At a gateway start: the kind's unfinished operations, each counted as resumed once more.
pub async fn resume<S: Stored>(store: &super::Store) -> sqlx::Result<Vec<Pending<S>>> {
    let mut tx = store.write().await?;
    let rows: Vec<(String, S, i64)> = sqlx::query_as(
        "UPDATE operations SET attempts = attempts + 1 WHERE kind = $1 \
         RETURNING resource_id, status, attempts",
    )
    .bind(S::KIND)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(resource_id, status, attempts)| Pending {
            resource_id,
            status,
            attempts,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::batch::BatchStatus;

    #[tokio::test]
    async fn progress_clears_the_count_of_resumes() {
        let dir = std::env::temp_dir().join(format!("atelier-op-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::Store::open(&dir).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        begin(&mut conn, "b1", BatchStatus::Running).await.unwrap();
        drop(conn);
        for n in 1..=3 {
            let p = resume::<BatchStatus>(&store).await.unwrap();
            assert_eq!(p[0].attempts, n);
        }
        let mut conn = store.pool.acquire().await.unwrap();
        progressed::<BatchStatus>(&mut conn, "b1").await.unwrap();
        // Nothing for a resource without an operation.
        progressed::<BatchStatus>(&mut conn, "gone").await.unwrap();
        drop(conn);
        let p = resume::<BatchStatus>(&store).await.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].attempts, p[0].status), (1, BatchStatus::Running));
        assert!(!p[0].exhausted());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
