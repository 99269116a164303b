//! Notebook rows. Status changes go through [`transition`], a compare-and-set on the status
//! column, so two requests can never both move a notebook out of the same state.

use super::Conn;
use crate::lifecycle::handle::Handle;
use crate::lifecycle::notebook::NotebookStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotebookRow {
    pub id: String,
    pub owner_id: String,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub flavor: String,
    pub image: String,
    pub status: NotebookStatus,
    pub status_reason: Option<String>,
    pub unhealthy: bool,
    pub auto_stop_enabled: bool,
    pub auto_stop_hours: i64,
    pub backend: String,
    /// Decoded once here (see `lifecycle::handle`).
    pub handle: Option<Handle>,
    pub created_at: String,
    pub updated_at: String,
    pub last_activity_at: Option<String>,
    pub ssh_enabled: bool,
    /// Comma-separated IPs and CIDRs; empty: any address.
    pub ssh_whitelist: String,
    /// The notebook's own SSH port (user `ma-user`), once SSH is on.
    pub ssh_port: Option<i64>,
    /// The auto-stop deadline while running with auto-stop on.
    pub stop_at: Option<String>,
    /// When the warning before `stop_at` was given.
    pub stop_warned_at: Option<String>,
    /// Idle timeout in seconds; `None`: the gateway's default; 0: off.
    pub idle_timeout_seconds: Option<i64>,
    /// The last activity per source, as JSON (see `activity::activity_json`).
    pub activity: Option<String>,
    /// When the idle warning of the current idle period was given.
    pub idle_warned_at: Option<String>,
    /// Names of the key pairs SSH accepts (filled by [`get`] and [`list`]).
    #[sqlx(skip)]
    pub ssh_key_pairs: Vec<String>,
}

const SELECT: &str = "SELECT n.id, n.owner_id, u.name AS owner, n.name, n.description, n.flavor, n.image, \
    n.status, n.status_reason, n.unhealthy, n.auto_stop_enabled, n.auto_stop_hours, n.backend, n.handle, \
    n.created_at, n.updated_at, n.last_activity_at, n.ssh_enabled, n.ssh_whitelist, \
    n.ssh_port, n.stop_at, n.stop_warned_at, n.idle_timeout_seconds, n.activity, n.idle_warned_at \
    FROM notebooks n JOIN users u ON u.id = n.owner_id";

pub async fn insert(conn: &mut Conn, n: &NotebookRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO notebooks (id, owner_id, name, description, flavor, image, status, status_reason, \
         unhealthy, auto_stop_enabled, auto_stop_hours, backend, handle, created_at, updated_at, \
         ssh_enabled, ssh_whitelist, idle_timeout_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(&n.id)
    .bind(&n.owner_id)
    .bind(&n.name)
    .bind(&n.description)
    .bind(&n.flavor)
    .bind(&n.image)
    .bind(n.status)
    .bind(&n.status_reason)
    .bind(n.unhealthy)
    .bind(n.auto_stop_enabled)
    .bind(n.auto_stop_hours)
    .bind(&n.backend)
    .bind(&n.handle)
    .bind(&n.created_at)
    .bind(&n.updated_at)
    .bind(n.ssh_enabled)
    .bind(&n.ssh_whitelist)
    .bind(n.idle_timeout_seconds)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, id: &str) -> sqlx::Result<Option<NotebookRow>> {
    let row: Option<NotebookRow> = sqlx::query_as(&format!("{SELECT} WHERE n.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(mut row) = row else { return Ok(None) };
    row.ssh_key_pairs = key_pair_names(conn, &row.id).await?;
    Ok(Some(row))
}

/// Names of the key pairs a notebook accepts, sorted.
pub async fn key_pair_names(conn: &mut Conn, notebook_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT k.name FROM notebook_key_pairs nk JOIN key_pairs k ON k.id = nk.key_pair_id \
         WHERE nk.notebook_id = $1 ORDER BY k.name",
    )
    .bind(notebook_id)
    .fetch_all(conn)
    .await
}

/// Fills `ssh_key_pairs` of a page of rows with one query.
async fn fill_key_pair_names(conn: &mut Conn, rows: &mut [NotebookRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let placeholders = (1..=rows.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT nk.notebook_id, k.name FROM notebook_key_pairs nk \
         JOIN key_pairs k ON k.id = nk.key_pair_id \
         WHERE nk.notebook_id IN ({placeholders}) ORDER BY k.name"
    );
    let mut q = sqlx::query_as::<_, (String, String)>(&sql);
    for r in rows.iter() {
        q = q.bind(&r.id);
    }
    for (id, name) in q.fetch_all(conn).await? {
        if let Some(r) = rows.iter_mut().find(|r| r.id == id) {
            r.ssh_key_pairs.push(name);
        }
    }
    Ok(())
}

/// Replaces the key pairs a notebook accepts.
/// Sets the key pairs a notebook accepts; returns the ids of those it no longer accepts.
pub async fn set_key_pairs(
    conn: &mut Conn,
    notebook_id: &str,
    key_pair_ids: &[String],
) -> sqlx::Result<Vec<String>> {
    let before: Vec<String> =
        sqlx::query_scalar("SELECT key_pair_id FROM notebook_key_pairs WHERE notebook_id = $1")
            .bind(notebook_id)
            .fetch_all(&mut *conn)
            .await?;
    sqlx::query("DELETE FROM notebook_key_pairs WHERE notebook_id = $1")
        .bind(notebook_id)
        .execute(&mut *conn)
        .await?;
    for k in key_pair_ids {
        sqlx::query("INSERT INTO notebook_key_pairs (notebook_id, key_pair_id) VALUES ($1, $2)")
            .bind(notebook_id)
            .bind(k)
            .execute(&mut *conn)
            .await?;
    }
    Ok(before
        .into_iter()
        .filter(|k| !key_pair_ids.contains(k))
        .collect())
}

pub async fn count_for_owner(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notebooks WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

pub async fn name_taken(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
    except_id: &str,
) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notebooks WHERE owner_id = $1 AND name = $2 AND id <> $3",
    )
    .bind(owner_id)
    .bind(name)
    .bind(except_id)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

#[derive(Debug, Default)]
pub struct ListFilter {
    /// None: everyone's (admins only).
    pub owner_id: Option<String>,
    pub name_contains: Option<String>,
    pub status: Option<NotebookStatus>,
    pub image: Option<String>,
    pub flavor: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Newest first, and the total that matched before paging.
pub async fn list(conn: &mut Conn, f: &ListFilter) -> sqlx::Result<(Vec<NotebookRow>, i64)> {
    let pattern = f.name_contains.as_ref().map(|s| {
        let escaped = s
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let cond = "($1 IS NULL OR n.owner_id = $1) AND ($2 IS NULL OR n.name LIKE $2 ESCAPE '\\') \
        AND ($3 IS NULL OR n.status = $3) AND ($4 IS NULL OR n.image = $4) AND ($5 IS NULL OR n.flavor = $5)";
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM notebooks n WHERE {cond}"))
        .bind(&f.owner_id)
        .bind(&pattern)
        .bind(f.status)
        .bind(&f.image)
        .bind(&f.flavor)
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query_as(&format!(
        "{SELECT} WHERE {cond} ORDER BY n.created_at DESC, n.id DESC LIMIT $6 OFFSET $7"
    ))
    .bind(&f.owner_id)
    .bind(&pattern)
    .bind(f.status)
    .bind(&f.image)
    .bind(&f.flavor)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: Vec<NotebookRow> = rows;
    fill_key_pair_names(conn, &mut rows).await?;
    Ok((rows, total))
}

/// Notebooks in any of `statuses`, for the reconciler.
pub async fn in_statuses(
    conn: &mut Conn,
    statuses: &[NotebookStatus],
) -> sqlx::Result<Vec<NotebookRow>> {
    let list = super::placeholders(1, statuses.len());
    let sql = format!("{SELECT} WHERE n.status IN ({list}) ORDER BY n.created_at");
    let mut q = sqlx::query_as(&sql);
    for s in statuses {
        q = q.bind(*s);
    }
    q.fetch_all(conn).await
}

/// Sets (or clears) the auto-stop deadline; a new deadline gets a new warning.
pub async fn set_stop_at(conn: &mut Conn, id: &str, stop_at: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE notebooks SET stop_at = $1, stop_warned_at = NULL WHERE id = $2")
        .bind(stop_at)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that the warning for the current deadline was given; false if it already was.
pub async fn mark_stop_warned(conn: &mut Conn, id: &str, now: &str) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE notebooks SET stop_warned_at = $1 WHERE id = $2 AND stop_warned_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Sets the auto-stop choice (at start).
pub async fn set_auto_stop(
    conn: &mut Conn,
    id: &str,
    enabled: bool,
    hours: i64,
    idle_timeout_seconds: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notebooks SET auto_stop_enabled = $1, auto_stop_hours = $2, \
         idle_timeout_seconds = COALESCE($3, idle_timeout_seconds) WHERE id = $4",
    )
    .bind(enabled)
    .bind(hours)
    .bind(idle_timeout_seconds)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_handle(conn: &mut Conn, id: &str, handle: Option<&Handle>) -> sqlx::Result<()> {
    sqlx::query("UPDATE notebooks SET handle = $1 WHERE id = $2")
        .bind(handle)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_unhealthy(conn: &mut Conn, id: &str, unhealthy: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE notebooks SET unhealthy = $1 WHERE id = $2")
        .bind(unhealthy)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn update_fields(conn: &mut Conn, n: &NotebookRow, now: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notebooks SET name = $1, description = $2, flavor = $3, image = $4, updated_at = $5, \
         ssh_enabled = $6, ssh_whitelist = $7 WHERE id = $8",
    )
    .bind(&n.name)
    .bind(&n.description)
    .bind(&n.flavor)
    .bind(&n.image)
    .bind(now)
    .bind(n.ssh_enabled)
    .bind(&n.ssh_whitelist)
    .bind(&n.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the activity per source (JSON) and the newest of them as `last_activity_at`.
pub async fn set_activity(conn: &mut Conn, id: &str, at: &str, sources: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notebooks SET activity = $3, last_activity_at = CASE \
         WHEN last_activity_at IS NULL OR last_activity_at < $1 THEN $1 ELSE last_activity_at END \
         WHERE id = $2",
    )
    .bind(at)
    .bind(id)
    .bind(sources)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that the idle warning of the current idle period was given (NULL: not yet).
pub async fn set_idle_warned(conn: &mut Conn, id: &str, at: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE notebooks SET idle_warned_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM notebooks WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What the SSH front door needs to decide a login to a notebook.
#[derive(Debug, Clone, PartialEq)]
pub struct SshTarget {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub owner: String,
    pub status: NotebookStatus,
    pub ssh_enabled: bool,
    pub whitelist: String,
    /// The key pairs the notebook accepts (its owner's): id and `SHA256:…` fingerprint.
    pub keys: Vec<(String, String)>,
}

/// Claims `port` for a notebook that has none; false when another notebook holds it or
/// this one already has a port.
pub async fn claim_ssh_port(conn: &mut Conn, id: &str, port: u16) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE notebooks SET ssh_port = $1 WHERE id = $2 AND ssh_port IS NULL")
        .bind(i64::from(port))
        .bind(id)
        .execute(conn)
        .await;
    match r {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Notebooks with SSH on and no port of their own yet (SSH ports were off, or none was free).
pub async fn ssh_without_port(conn: &mut Conn) -> sqlx::Result<Vec<NotebookRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE n.ssh_enabled = 1 AND n.ssh_port IS NULL"
    ))
    .fetch_all(conn)
    .await
}

/// Ports held by notebooks.
pub async fn ssh_ports(conn: &mut Conn) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT id, ssh_port FROM notebooks WHERE ssh_port IS NOT NULL")
        .fetch_all(conn)
        .await
}

/// Which notebooks an SSH login can mean.
#[derive(Debug, Clone, Copy)]
pub enum SshLookup<'a> {
    /// At the shared port: the notebooks of the user who holds the offered key, whose id or
    /// name is the SSH user name.
    OwnersNotebook { owner_id: &'a str, user: &'a str },
    /// At a notebook's own port: that notebook.
    Notebook(&'a str),
}

/// id, name, owner id, owner, status, ssh_enabled, whitelist, one accepted key pair (id,
/// fingerprint) if any.
type SshRow = (
    String,
    String,
    String,
    String,
    NotebookStatus,
    bool,
    String,
    Option<String>,
    Option<String>,
);

/// The notebooks a login can mean, with the key pairs each accepts; an id match comes
/// before a name match (names are unique per owner).
pub async fn ssh_targets(conn: &mut Conn, lookup: SshLookup<'_>) -> sqlx::Result<Vec<SshTarget>> {
    const SELECT: &str = "SELECT n.id, n.name, u.id, u.name, n.status, n.ssh_enabled, \
         n.ssh_whitelist, k.id, k.fingerprint \
         FROM notebooks n JOIN users u ON u.id = n.owner_id \
         LEFT JOIN notebook_key_pairs nk ON nk.notebook_id = n.id \
         LEFT JOIN key_pairs k ON k.id = nk.key_pair_id";
    let rows: Vec<SshRow> = match lookup {
        SshLookup::OwnersNotebook { owner_id, user } => {
            sqlx::query_as(&format!(
                "{SELECT} WHERE n.owner_id = $1 AND (n.id = $2 OR n.name = $2) \
                 ORDER BY n.id = $2 DESC, n.id, k.id"
            ))
            .bind(owner_id)
            .bind(user)
            .fetch_all(conn)
            .await?
        }
        SshLookup::Notebook(id) => {
            sqlx::query_as(&format!("{SELECT} WHERE n.id = $1 ORDER BY n.id, k.id"))
                .bind(id)
                .fetch_all(conn)
                .await?
        }
    };
    let mut out: Vec<SshTarget> = Vec::new();
    for (id, name, owner_id, owner, status, ssh_enabled, whitelist, key_id, fingerprint) in rows {
        if out.last().is_none_or(|t| t.id != id) {
            out.push(SshTarget {
                id,
                name,
                owner_id,
                owner,
                status,
                ssh_enabled,
                whitelist,
                keys: Vec::new(),
            });
        }
        if let (Some(k), Some(f), Some(t)) = (key_id, fingerprint, out.last_mut()) {
            t.keys.push((k, f));
        }
    }
    Ok(out)
}

#[cfg(test)]
impl NotebookRow {
    /// A STOPPED notebook with default settings, for tests.
    pub fn example(id: &str, owner_id: &str, name: &str) -> NotebookRow {
        NotebookRow {
            id: id.into(),
            owner_id: owner_id.into(),
            owner: owner_id.into(),
            name: name.into(),
            description: String::new(),
            flavor: "cpu-2-8".into(),
            image: "jupyterlab".into(),
            status: NotebookStatus::Stopped,
            status_reason: None,
            unhealthy: false,
            auto_stop_enabled: true,
            auto_stop_hours: 1,
            backend: "process".into(),
            handle: None,
            created_at: crate::store::now(),
            updated_at: crate::store::now(),
            last_activity_at: None,
            ssh_enabled: false,
            ssh_whitelist: String::new(),
            ssh_port: None,
            stop_at: None,
            stop_warned_at: None,
            idle_timeout_seconds: None,
            activity: None,
            idle_warned_at: None,
            ssh_key_pairs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::notebook::status::*;
    use crate::store::{Store, now, users};

    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("atelier-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir).await.unwrap(), dir)
    }

    fn row(id: &str, owner: &str, name: &str) -> NotebookRow {
        NotebookRow::example(id, owner, name)
    }

    #[tokio::test]
    async fn transitions_are_compare_and_set() {
        let (store, dir) = store().await;
        let mut c = store.pool.acquire().await.unwrap();
        users::insert_user(&mut c, "u1", "alice", "user", &now())
            .await
            .unwrap();
        insert(&mut c, &row("n1", "u1", "nb")).await.unwrap();
        drop(c);
        use crate::store::transition::Transition;
        for (from, to, moved) in [
            (&[RUNNING][..], STOPPING, false),
            (&[STOPPED, ERROR][..], STARTING, true),
            (&[STOPPED][..], STARTING, false),
        ] {
            let mut tx = store.write().await.unwrap();
            let applied = Transition::new("n1", from, to)
                .apply(&mut tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(applied, moved, "{from:?} -> {to}");
        }
        let mut c = store.pool.acquire().await.unwrap();
        let got = get(&mut c, "n1").await.unwrap().unwrap();
        assert_eq!((got.status, got.owner.as_str()), (STARTING, "alice"));
        drop(c);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn name_filter_is_a_literal_substring() {
        let (store, dir) = store().await;
        let mut c = store.pool.acquire().await.unwrap();
        users::insert_user(&mut c, "u1", "alice", "user", &now())
            .await
            .unwrap();
        users::insert_user(&mut c, "u2", "bob", "user", &now())
            .await
            .unwrap();
        for (id, owner, name) in [
            ("a", "u1", "nb_1"),
            ("b", "u1", "nbx1"),
            ("c", "u1", "other"),
            ("d", "u2", "nb_1"),
        ] {
            insert(&mut c, &row(id, owner, name)).await.unwrap();
        }
        let f = ListFilter {
            owner_id: Some("u1".into()),
            name_contains: Some("b_1".into()),
            limit: 10,
            ..Default::default()
        };
        let (rows, total) = list(&mut c, &f).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(rows[0].id, "a");
        let all = ListFilter {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(list(&mut c, &all).await.unwrap().1, 4);
        assert!(name_taken(&mut c, "u1", "nb_1", "").await.unwrap());
        assert!(!name_taken(&mut c, "u1", "nb_1", "a").await.unwrap());
        drop(c);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
