//! Object-storage folders mounted into notebooks (seed 6.7.6, "dynamic mounts"): a running
//! notebook gets `obs://bucket/prefix/` at `/data/<name>/`. The backend's files connector
//! (`backends::files`; on this host: rclone over the user's stored connection, in the
//! directory the backend binds at `/data` with slave propagation) makes the mount, so the
//! notebook sees it at once and never holds the credentials or `CAP_SYS_ADMIN`. This
//! module names folders as the notebook sees them and keeps the rows, locks and events.
//!
//! ```text
//! POST /mounts   RUNNING: check the store → row MOUNTING → rclone → MOUNTED + DynamicMountStorage
//! DELETE         unmount (objects stay) → row gone + DynamicUnmountStorage
//! stop           every mount unmounted, rows UNMOUNTED (kept)
//! start          every row mounted again before Jupyter starts (MountVolumeFailed if not)
//! restart        mounts whose rclone died are made again (resume, health loop)
//! delete         unmounted, rows go with the notebook
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{NotebookOp, allow, storage_rules, target as audit_target};
use crate::auth::authz::NotebookGrant;
use crate::backends::files::{Mount, NotebookFiles, Place};
use crate::backends::fuse::{self, Serving};
use crate::backends::{Backend, BackendError};
use crate::config::Settings;
use crate::error::{DomainError, Error, Kind};
use crate::lifecycle::Status as _;
use crate::lifecycle::{KeyGuard, KeyedLocks};
use crate::object_storage::{ObjectUri, connections, s3};
use crate::secrets::SecretBox;
use crate::store::audit::{self, Action};
use crate::store::events::{self, EventKind};
use crate::store::mounts::{
    self as rows, FAILED, MOUNTED, MOUNTING, MountRow, MountStatus, UNMOUNTED,
};
use crate::store::transition::Transition;
use crate::store::{self, Store, storage_connections};

/// Dynamic mounts one notebook may have.
pub const MAX_DYNAMIC: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMount {
    /// The folder under `/data`.
    pub name: String,
    /// `obs://bucket/prefix/` or `s3://…`.
    pub uri: String,
    /// One of the notebook owner's storage connections.
    pub connection: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A mount as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MountView {
    #[serde(flatten)]
    pub row: MountRow,
    /// Where the notebook sees it (`/data/<name>/`).
    pub path: String,
}

/// Dynamic mount names become a directory under `/data`: one plain path segment.
pub fn validate_name(name: &str) -> Result<(), String> {
    if crate::lifecycle::is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} is not a folder name under /data; use 1-64 of A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit (no '/' or '..')"
        ))
    }
}

/// What a mount request fails with.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A field of the request is wrong (name, URI, a storage path), or a limit is reached.
    #[error("{0}")]
    Invalid(String),
    /// Mounts cannot be made here: the gateway (root, rclone, FUSE) or the backend (no
    /// place for the folder, `/data` not shared) lacks what they need.
    #[error("{0}")]
    CannotMount(String),
    /// Something is in the way: the name is taken, the folder holds files, the mount is
    /// busy.
    #[error("{0}")]
    InTheWay(String),
    /// No such mount.
    #[error("{0}")]
    NotFound(String),
    /// rclone did not mount the folder (the store, FUSE); the text has its reason.
    #[error("{0}")]
    Failed(String),
    /// A shared check refused: the notebook's status, the owner's connections, the store.
    #[error("{}", .0.message)]
    Common(#[from] Error),
    /// Ours: logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for MountError {
    fn kind(&self) -> Kind {
        match self {
            MountError::Invalid(_) => Kind::Invalid,
            MountError::CannotMount(_) | MountError::InTheWay(_) => Kind::Conflict,
            MountError::NotFound(_) => Kind::NotFound,
            MountError::Failed(_) => Kind::Upstream,
            MountError::Common(e) => e.kind,
            MountError::Internal(_) => Kind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            MountError::Failed(_) => "mount_failed",
            other => other.kind().code(),
        }
    }
}

crate::domain_error!(MountError, common: Common, internal: Internal);

fn unsupported(e: BackendError) -> MountError {
    MountError::CannotMount(e.to_string())
}

/// The mounts service: a notebook's object-storage mounts (the storage chosen at create and
/// the dynamic mounts under `/data`), and the user's storage connections opened for them.
/// It owns the per-notebook mount lock. Cloning shares it.
#[derive(Clone)]
pub struct Mounts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    backend: Arc<dyn Backend>,
    /// Opens stored storage connections.
    secrets: Arc<SecretBox>,
    /// `rclone`, which serves the mounts; `None` where it is not installed.
    rclone: Option<PathBuf>,
    /// One mount operation at a time per notebook (requests, start, stop, the health loop).
    mount_locks: KeyedLocks,
}

impl Mounts {
    pub fn new(
        store: Store,
        backend: Arc<dyn Backend>,
        settings: &Settings,
        secrets: Arc<SecretBox>,
    ) -> Mounts {
        let rclone = fuse::find_rclone(settings.backend.rclone_bin.as_deref());
        Mounts {
            inner: Arc::new(Inner {
                store,
                backend,
                secrets,
                rclone,
                mount_locks: KeyedLocks::default(),
            }),
        }
    }

    /// Held across every change to a notebook's mounts, so that the health loop never makes
    /// again a mount a request is removing (or the other way round).
    async fn mount_lock(&self, notebook_id: &str) -> KeyGuard {
        self.inner.mount_locks.lock(notebook_id).await
    }

    /// A user's storage connection by name, opened; a 400 on `field` when there is none.
    pub(crate) async fn connection_of(
        &self,
        owner_id: &str,
        name: &str,
        field: &str,
    ) -> Result<(storage_connections::ConnectionRow, s3::Target), Error> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let Some(c) = storage_connections::by_name(&mut conn, owner_id, name).await? else {
            return Err(Error::invalid(format!(
                "{field}: the notebook's owner has no storage connection named {name:?} (atelier storage connection list)"
            )));
        };
        let t = connections::target(&c, &self.inner.secrets)
            .map_err(|e| Error::internal(e.context("opening the connection's secret")))?;
        Ok((c, t))
    }

    fn rclone(&self) -> Result<PathBuf, MountError> {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(MountError::CannotMount(
                "object-storage mounts need the gateway to run as root: it binds each folder onto the notebook's directory it opened, so that no link the notebook plants is ever followed"
                    .into(),
            ));
        }
        let Some(rclone) = self.inner.rclone.clone() else {
            return Err(MountError::CannotMount(
                "object-storage mounts need rclone on the gateway's host (apt-get install rclone fuse3)"
                    .into(),
            ));
        };
        if !fuse::fuse_available() {
            return Err(MountError::CannotMount(
                "object-storage mounts need FUSE: /dev/fuse cannot be opened on the gateway's host"
                    .into(),
            ));
        }
        Ok(rclone)
    }

    /// Where a mount goes: dynamic ones under the notebook's `/data`, those chosen at create
    /// at their path (`name` holds it).
    fn place(
        &self,
        notebook_id: &str,
        row: &MountRow,
    ) -> Result<(Box<dyn NotebookFiles>, Place), BackendError> {
        let files = self.inner.backend.files(notebook_id)?;
        let place = place_in(files.as_ref(), row)?;
        Ok((files, place))
    }

    /// The notebook's mounts with their status (a MOUNTED one whose process is gone shows as
    /// FAILED until the health loop makes it again).
    pub async fn mounts(&self, grant: &NotebookGrant) -> Result<Vec<MountView>, MountError> {
        let nb = grant.notebook();
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, &nb.id).await?
        };
        let files = self.inner.backend.files(&nb.id).ok();
        Ok(list
            .into_iter()
            .map(|mut row| {
                let place = files.as_ref().and_then(|f| place_in(f.as_ref(), &row).ok());
                if row.status == MOUNTED
                    && let (Some(f), Some(p)) = (&files, &place)
                    && !serving(&row).is_some_and(|s| f.is_serving(p, &row.id, s))
                {
                    row.status = FAILED;
                    row.error =
                        Some("the mount's rclone process is gone; it is being made again".into());
                }
                view(row, place.as_ref())
            })
            .collect())
    }

    /// Checks the storage a create asks for: the seed's rules, a place for each path on this
    /// backend, the owner's connections, and the stores themselves. Returns the mounts with
    /// their connection ids, for [`Mounts::insert_create_storage`].
    pub(crate) async fn check_create_storage(
        &self,
        who: &crate::auth::Principal,
        notebook_id: &str,
        primary: Option<&storage_rules::PrimaryRequest>,
        extended: &[storage_rules::ExtendedRequest],
    ) -> Result<Vec<(storage_rules::CreateMount, String)>, MountError> {
        let mounts = storage_rules::validate(primary, extended)?;
        if mounts.is_empty() {
            return Ok(Vec::new());
        }
        self.rclone()?;
        let files = self
            .inner
            .backend
            .files(notebook_id)
            .map_err(|e| MountError::Invalid(format!("storage: {e}")))?;
        let mut out = Vec::new();
        let mut checked = std::collections::HashSet::new();
        for m in mounts {
            let field = if m.kind == "primary" {
                "storage"
            } else {
                "extended_storage"
            };
            files
                .place(&m.path)
                .map_err(|e| MountError::Invalid(format!("{field}: {e}")))?;
            let (c, target) = self
                .connection_of(&who.user_id, &m.connection, field)
                .await?;
            if checked.insert((c.id.clone(), m.uri.bucket.clone())) {
                s3::check(&target, Some(&m.uri.bucket))
                    .await
                    .map_err(Error::from)?;
            }
            out.push((m, c.id));
        }
        Ok(out)
    }

    /// Records the storage chosen at create (in the create's transaction); it is mounted at
    /// every start, before Jupyter.
    pub(crate) async fn insert_create_storage(
        &self,
        conn: &mut crate::store::Conn,
        notebook_id: &str,
        mounts: &[(storage_rules::CreateMount, String)],
    ) -> sqlx::Result<()> {
        for (m, connection_id) in mounts {
            rows::insert(
                conn,
                rows::NewMount {
                    id: &store::ordered_id(),
                    notebook_id,
                    kind: m.kind,
                    name: &m.path,
                    uri: &m.uri.to_string(),
                    connection_id,
                    read_only: m.read_only,
                    status: UNMOUNTED,
                    now: &store::now(),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the notebook's work dir is an object-storage folder (no work disk).
    pub(crate) async fn work_on_object_storage(&self, notebook_id: &str) -> anyhow::Result<bool> {
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(rows::of_notebook(&mut conn, notebook_id)
            .await?
            .iter()
            .any(|m| m.kind == "primary"))
    }

    /// Folders chosen at create outside the work dir (paths in the notebook): the backend
    /// shows them at their paths when it launches the notebook.
    pub(crate) async fn extended_storage(&self, notebook_id: &str) -> anyhow::Result<Vec<String>> {
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(rows::of_notebook(&mut conn, notebook_id)
            .await?
            .into_iter()
            .filter(|m| m.kind == "extended" && !storage_rules::in_work_dir(&m.name))
            .map(|m| m.name)
            .collect())
    }

    /// Mounts an object-storage folder at `/data/<name>/` of a running notebook.
    pub async fn add_mount(
        &self,
        grant: NotebookGrant,
        req: AddMount,
    ) -> Result<MountView, MountError> {
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        validate_name(&req.name).map_err(MountError::Invalid)?;
        let uri =
            ObjectUri::parse(&req.uri).map_err(|e| MountError::Invalid(format!("uri: {e}")))?;
        // A mount is a folder: always written with its trailing '/'.
        let uri = ObjectUri {
            key: uri.dir_prefix(),
            ..uri
        };
        allow(&nb, NotebookOp::Mount)?;
        let files = self.inner.backend.files(&nb.id).map_err(unsupported)?;
        if !files.mounts_reach_running() {
            return Err(MountError::CannotMount(format!(
                "mounts cannot reach notebook {} while it runs: its /data is not a shared mount (the gateway needs root for that); the mount would only appear after a restart",
                nb.name
            )));
        }
        let rclone = self.rclone()?;
        let (connection, target) = self
            .connection_of(&nb.owner_id, &req.connection, "connection")
            .await?;
        let place = files.data_place(&req.name).map_err(unsupported)?;
        // Seen without following links: a link there is the notebook's and is refused.
        match files.holds_files(&place) {
            Ok(false) => {}
            Ok(true) => {
                return Err(MountError::InTheWay(format!(
                    "{}/ already holds files; mounting over them would hide them: pick another name",
                    place.inside()
                )));
            }
            Err(e) => return Err(MountError::InTheWay(e.to_string())),
        }
        // The store answers for these credentials and this bucket before anything is made.
        s3::check(&target, Some(&uri.bucket))
            .await
            .map_err(Error::from)?;

        let _lock = self.mount_lock(&nb.id).await;
        let id = store::ordered_id();
        {
            let mut tx = self.inner.store.write().await?;
            let existing = rows::of_notebook(&mut tx, &nb.id).await?;
            if existing.iter().any(|m| m.name == req.name) {
                return Err(MountError::InTheWay(format!(
                    "notebook {} already has a mount named {:?} at {}/",
                    nb.name,
                    req.name,
                    place.inside()
                )));
            }
            let dynamic = existing.iter().filter(|m| m.kind == "dynamic").count();
            if dynamic >= MAX_DYNAMIC {
                return Err(MountError::Invalid(format!(
                    "notebook {} has {dynamic} mounts under /data, the most it may have; unmount one first",
                    nb.name
                )));
            }
            rows::insert(
                &mut tx,
                rows::NewMount {
                    id: &id,
                    notebook_id: &nb.id,
                    kind: "dynamic",
                    name: &req.name,
                    uri: &uri.to_string(),
                    connection_id: &connection.id,
                    read_only: req.read_only,
                    status: rows::MOUNTING,
                    now: &store::now(),
                },
            )
            .await?;
            tx.commit().await?;
        }
        let made = files
            .mount(
                &place,
                &Mount {
                    id: &id,
                    target: &target,
                    uri: &uri,
                    read_only: req.read_only,
                    rclone: &rclone,
                },
            )
            .await;
        let mut tx = self.inner.store.write().await?;
        let detail = format!(
            "{uri} at {}/{}",
            place.inside(),
            if req.read_only { " (read-only)" } else { "" }
        );
        match made {
            Ok(serving) => {
                Transition::new(&id, &[MOUNTING], MOUNTED)
                    .event(&nb.id, EventKind::DynamicMountStorage, Some(&detail))
                    .audit(
                        &user,
                        Action::MountNotebookStorage,
                        audit_target(&nb),
                        "ok",
                        Some(&detail),
                    )
                    .apply(&mut tx)
                    .await?;
                rows::set_process(&mut tx, &id, Some((serving.pid, serving.start_ticks))).await?;
                tx.commit().await?;
            }
            Err(e) => {
                // Nothing half-made stays: no row, no empty folder under /data.
                rows::delete(&mut tx, &id).await?;
                audit::record(
                    &mut tx,
                    &user,
                    Action::MountNotebookStorage,
                    audit_target(&nb),
                    "failed",
                    Some(&format!("{detail}: {e:#}")),
                )
                .await?;
                tx.commit().await?;
                files.remove_folder(&place);
                return Err(MountError::Failed(format!(
                    "mounting {uri} at {}/ failed: {e:#}",
                    place.inside()
                )));
            }
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let row = rows::by_name(&mut conn, &nb.id, &req.name)
            .await?
            .ok_or_else(|| MountError::Internal(anyhow::anyhow!("the mount vanished")))?;
        Ok(view(row, Some(&place)))
    }

    /// Unmounts `/data/<name>/` (the objects stay) and forgets the mount.
    pub async fn remove_mount(&self, grant: NotebookGrant, name: &str) -> Result<(), MountError> {
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        let _lock = self.mount_lock(&nb.id).await;
        let row = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::by_name(&mut conn, &nb.id, name).await?
        };
        let Some(row) = row.filter(|r| r.kind == "dynamic") else {
            return Err(MountError::NotFound(format!(
                "notebook {} has no mount named {name:?} under /data",
                nb.name
            )));
        };
        if let Ok((files, p)) = self.place(&nb.id, &row) {
            files
                .unmount(&p, &row.id, serving(&row))
                .await
                .map_err(|e| {
                    MountError::InTheWay(format!("unmounting {}/ failed: {e:#}", p.inside()))
                })?;
            // Only an empty folder goes; anything written beside the mount stays.
            files.remove_folder(&p);
        }
        let mut tx = self.inner.store.write().await?;
        rows::delete(&mut tx, &row.id).await?;
        let detail = format!("{} at /data/{}/", row.uri, row.name);
        events::record(
            &mut tx,
            &nb.id,
            EventKind::DynamicUnmountStorage,
            Some(&detail),
        )
        .await?;
        audit::record(
            &mut tx,
            &user,
            Action::UnmountNotebookStorage,
            audit_target(&nb),
            "ok",
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes every mount of the notebook that is not being served (at start, after a gateway
    /// restart, when a mount's process died): primary storage first, then parents before
    /// the folders nested in them. A mount that fails is FAILED with the reason and a
    /// `MountVolumeFailed` event. Returns why the storage chosen at create (primary,
    /// extended) could not be mounted: the notebook must not start without it, or files
    /// written meanwhile would later be hidden under the mount.
    pub(crate) async fn ensure_mounts(&self, notebook_id: &str) -> anyhow::Result<Vec<String>> {
        let _lock = self.mount_lock(notebook_id).await;
        let mut list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, notebook_id).await?
        };
        list.sort_by_key(mount_order);
        let mut required_failed = Vec::new();
        for row in list {
            // Being made by a request right now.
            if row.status == rows::MOUNTING {
                continue;
            }
            let place = self.place(notebook_id, &row);
            let outcome: anyhow::Result<Option<Serving>> = async {
                let (files, place) = place.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                if row.status == MOUNTED
                    && serving(&row).is_some_and(|s| files.is_serving(place, &row.id, s))
                {
                    return Ok(None);
                }
                // A mount left by a process that died: clear it before mounting again.
                files.unmount(place, &row.id, serving(&row)).await?;
                let rclone = self
                    .rclone()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let (target, uri) = {
                    let mut conn = self.inner.store.pool.acquire().await?;
                    let c = storage_connections::by_id(&mut conn, &row.connection_id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("its storage connection is gone"))?;
                    (
                        connections::target(&c, &self.inner.secrets)?,
                        ObjectUri::parse(&row.uri).map_err(anyhow::Error::msg)?,
                    )
                };
                // rclone mounts even with keys the store refuses (it fails on first use):
                // ask the store first, so the reason is the store's.
                s3::check(&target, Some(&uri.bucket))
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                // Files written where a folder was not mounted would be hidden by it (not lost,
                // but out of sight): refuse and say so. Primary storage is the work dir itself.
                if row.kind != "primary" && files.holds_files(place)? {
                    anyhow::bail!(
                        "{}/ holds files written while the folder was not mounted; move them away and start again",
                        place.inside()
                    );
                }
                let s = files
                    .mount(
                        place,
                        &Mount {
                            id: &row.id,
                            target: &target,
                            uri: &uri,
                            read_only: row.read_only,
                            rclone: &rclone,
                        },
                    )
                    .await?;
                Ok(Some(s))
            }
            .await;
            let mut tx = self.inner.store.write().await?;
            match outcome {
                Ok(None) => {}
                Ok(Some(s)) => {
                    // From whatever it was: the mount lock serialises every change.
                    Transition::new(&row.id, MountStatus::ALL, MOUNTED)
                        .apply(&mut tx)
                        .await?;
                    rows::set_process(&mut tx, &row.id, Some((s.pid, s.start_ticks))).await?;
                }
                Err(e) => {
                    let at = match &place {
                        Ok((_, p)) => p.inside().to_owned(),
                        Err(_) => row.name.clone(),
                    };
                    let why = format!("{} at {at}/: {e:#}", row.uri);
                    if row.kind != "dynamic" {
                        required_failed.push(why.clone());
                    }
                    tracing::warn!(notebook = %notebook_id, mount = %row.name, error = %why, "mounting object storage failed");
                    let failed =
                        Transition::new(&row.id, MountStatus::ALL, FAILED).reason(Some(&why));
                    // One event per failure, not one per retry of the health loop.
                    let failed = if row.status == FAILED {
                        failed
                    } else {
                        failed.event(notebook_id, EventKind::MountVolumeFailed, Some(&why))
                    };
                    failed.apply(&mut tx).await?;
                    rows::set_process(&mut tx, &row.id, None).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(required_failed)
    }

    /// Mounts a gateway stopped in the middle of making (their request failed from the
    /// caller's side): undone, so that the name can be used again.
    pub(crate) async fn forget_interrupted_mounts(&self) -> anyhow::Result<()> {
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::in_status(&mut conn, rows::MOUNTING).await?
        };
        for row in list {
            if let Ok((files, p)) = self.place(&row.notebook_id, &row) {
                files.unmount(&p, &row.id, None).await?;
                files.remove_folder(&p);
            }
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::delete(&mut conn, &row.id).await?;
        }
        Ok(())
    }

    /// Unmounts every mount of the notebook (stop, delete). Rows stay, UNMOUNTED, to be made
    /// again at the next start. The objects are never touched.
    pub(crate) async fn release_mounts(&self, notebook_id: &str) -> anyhow::Result<()> {
        let _lock = self.mount_lock(notebook_id).await;
        let mut list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, notebook_id).await?
        };
        // Nested folders before the folders they are in.
        list.sort_by_key(mount_order);
        list.reverse();
        for row in list {
            if let Ok((files, p)) = self.place(notebook_id, &row) {
                files.unmount(&p, &row.id, serving(&row)).await?;
            }
            let mut tx = self.inner.store.write().await?;
            Transition::new(&row.id, MountStatus::ALL, UNMOUNTED)
                .apply(&mut tx)
                .await?;
            rows::set_process(&mut tx, &row.id, None).await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Primary storage first, then by depth (a folder before those nested in it), dynamic
/// mounts (under /data) last.
fn mount_order(row: &MountRow) -> (u8, usize) {
    let rank = match row.kind.as_str() {
        "primary" => 0,
        "extended" => 1,
        _ => 2,
    };
    (rank, row.name.matches('/').count())
}

/// Where a mount goes: dynamic ones under the notebook's `/data`, those chosen at create
/// at their path (`name` holds it).
fn place_in(files: &dyn NotebookFiles, row: &MountRow) -> Result<Place, BackendError> {
    if row.kind == "dynamic" {
        files.data_place(&row.name)
    } else {
        files.place(&row.name)
    }
}

/// A mount as the API shows it, `path` from its place (where known).
fn view(row: MountRow, place: Option<&Place>) -> MountView {
    let path = match place {
        Some(p) => format!("{}/", p.inside()),
        None if row.kind == "dynamic" => format!("/data/{}/", row.name),
        None => format!("{}/", row.name),
    };
    MountView { path, row }
}

fn serving(row: &MountRow) -> Option<Serving> {
    Some(Serving {
        pid: i32::try_from(row.pid?).ok()?,
        start_ticks: u64::try_from(row.start_ticks?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_names_are_one_folder_under_data() {
        assert!(validate_name("demo").is_ok());
        assert!(validate_name("train-set_2.v1").is_ok());
        for bad in ["", "../etc", "/abs", "a/b", "..", ".hidden", "x y"] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.starts_with("name:"), "{bad}: {e}");
        }
    }
}
