//! Object-storage folders mounted into notebooks (seed 6.7.6, "dynamic mounts"): a running
//! notebook gets `obs://bucket/prefix/` at `/data/<name>/`. The gateway makes the mount on
//! the host (`object_storage::fuse`, rclone over the user's stored connection) in the directory the
//! backend binds at `/data` with slave propagation, so the notebook sees it at once and never
//! holds the credentials or `CAP_SYS_ADMIN`.
//!
//! ```text
//! POST /mounts   RUNNING: check the store → row MOUNTING → rclone → MOUNTED + DynamicMountStorage
//! DELETE         unmount (objects stay) → row gone + DynamicUnmountStorage
//! stop           every mount unmounted, rows UNMOUNTED (kept)
//! start          every row mounted again before Jupyter starts (MountVolumeFailed if not)
//! restart        mounts whose rclone died are made again (resume, health loop)
//! delete         unmounted, rows go with the notebook
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{NotebookOp, allow, storage_rules, target as audit_target};
use crate::auth::authz::NotebookGrant;
use crate::backends::{Backend, BackendError, DataDir, MountPlace, runconf};
use crate::config::Settings;
use crate::error::{DomainError, Error, Kind};
use crate::lifecycle::Status as _;
use crate::lifecycle::{KeyGuard, KeyedLocks};
use crate::object_storage::fuse::{self, Serving};
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
    settings: Arc<Settings>,
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
        settings: Arc<Settings>,
        secrets: Arc<SecretBox>,
    ) -> Mounts {
        let rclone = fuse::find_rclone(settings.backend.rclone_bin.as_deref());
        Mounts {
            inner: Arc::new(Inner {
                store,
                backend,
                settings,
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

    fn mount_state_dir(&self, notebook_id: &str, mount_id: &str) -> PathBuf {
        runconf::notebook_dir(&self.inner.settings.data_dir, notebook_id)
            .join("mounts")
            .join(mount_id)
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
    pub(crate) fn place(
        &self,
        notebook_id: &str,
        row: &MountRow,
    ) -> Result<MountPlace, BackendError> {
        if row.kind == "dynamic" {
            let d = self.inner.backend.data_dir(notebook_id)?;
            Ok(dynamic_place(&d, &row.name))
        } else {
            self.inner.backend.mount_place(notebook_id, &row.name)
        }
    }

    /// The notebook's mounts with their status (a MOUNTED one whose process is gone shows as
    /// FAILED until the health loop makes it again).
    pub async fn mounts(&self, grant: &NotebookGrant) -> Result<Vec<MountView>, MountError> {
        let nb = grant.notebook();
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, &nb.id).await?
        };
        // /data once for all rows (it reads the mount table).
        let data = self.inner.backend.data_dir(&nb.id).ok();
        Ok(list
            .into_iter()
            .map(|mut row| {
                let place = if row.kind == "dynamic" {
                    data.as_ref().map(|d| dynamic_place(d, &row.name))
                } else {
                    self.inner.backend.mount_place(&nb.id, &row.name).ok()
                };
                if row.status == MOUNTED
                    && let Some(p) = &place
                    && !serving(&row).is_some_and(|s| {
                        fuse::is_serving(p, &self.mount_state_dir(&nb.id, &row.id), s)
                    })
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
        let mut out = Vec::new();
        let mut checked = std::collections::HashSet::new();
        for m in mounts {
            let field = if m.kind == "primary" {
                "storage"
            } else {
                "extended_storage"
            };
            self.inner
                .backend
                .mount_place(notebook_id, &m.path)
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

    /// Folders chosen at create that the backend places outside the work dir: the backend
    /// binds them at their paths when it launches the notebook.
    pub(crate) async fn extra_binds(
        &self,
        notebook_id: &str,
    ) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let Ok(work) = self
            .inner
            .backend
            .mount_place(notebook_id, storage_rules::WORK_DIR)
        else {
            return Ok(Vec::new());
        };
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(rows::of_notebook(&mut conn, notebook_id)
            .await?
            .iter()
            .filter(|m| m.kind == "extended")
            .filter_map(|m| self.inner.backend.mount_place(notebook_id, &m.name).ok())
            .filter(|p| !p.host().starts_with(work.host()))
            .map(|p| (p.host(), p.inside))
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
        let data = self.inner.backend.data_dir(&nb.id).map_err(unsupported)?;
        if !data.live {
            return Err(MountError::CannotMount(format!(
                "mounts cannot reach notebook {} while it runs: its /data is not a shared mount (the gateway needs root for that); the mount would only appear after a restart",
                nb.name
            )));
        }
        let rclone = self.rclone()?;
        let (connection, target) = self
            .connection_of(&nb.owner_id, &req.connection, "connection")
            .await?;
        let place = dynamic_place(&data, &req.name);
        // Seen without following links: a link there is the notebook's and is refused.
        match holds_files(&place) {
            Ok(false) => {}
            Ok(true) => {
                return Err(MountError::InTheWay(format!(
                    "{}/ already holds files; mounting over them would hide them: pick another name",
                    place.inside
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
                    data.inside.join(&req.name).display()
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
        let made = self
            .mount_at(&nb.id, &id, &place, &target, &uri, req.read_only, &rclone)
            .await;
        let mut tx = self.inner.store.write().await?;
        let detail = format!(
            "{uri} at {}/{}",
            data.inside.join(&req.name).display(),
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
                remove_folder(&place);
                return Err(MountError::Failed(format!(
                    "mounting {uri} at {}/ failed: {e:#}",
                    data.inside.join(&req.name).display()
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
        if let Ok(p) = self.place(&nb.id, &row) {
            fuse::unmount(&p, &self.mount_state_dir(&nb.id, &row.id), serving(&row))
                .await
                .map_err(|e| {
                    MountError::InTheWay(format!("unmounting {}/ failed: {e:#}", p.inside))
                })?;
            // Only an empty folder goes; anything written beside the mount stays.
            remove_folder(&p);
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
                let place = place.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                let state_dir = self.mount_state_dir(notebook_id, &row.id);
                if row.status == MOUNTED
                    && serving(&row).is_some_and(|s| fuse::is_serving(place, &state_dir, s))
                {
                    return Ok(None);
                }
                // A mount left by a process that died: clear it before mounting again.
                fuse::unmount(place, &state_dir, serving(&row)).await?;
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
                if row.kind != "primary" && holds_files(place)? {
                    anyhow::bail!(
                        "{}/ holds files written while the folder was not mounted; move them away and start again",
                        place.inside
                    );
                }
                let s = self
                    .mount_at(notebook_id, &row.id, place, &target, &uri, row.read_only, &rclone)
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
                        Ok(p) => p.inside.clone(),
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
            if let Ok(p) = self.place(&row.notebook_id, &row) {
                fuse::unmount(&p, &self.mount_state_dir(&row.notebook_id, &row.id), None).await?;
                remove_folder(&p);
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
            if let Ok(p) = self.place(notebook_id, &row) {
                fuse::unmount(
                    &p,
                    &self.mount_state_dir(notebook_id, &row.id),
                    serving(&row),
                )
                .await?;
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

    #[allow(clippy::too_many_arguments)]
    async fn mount_at(
        &self,
        notebook_id: &str,
        mount_id: &str,
        place: &MountPlace,
        target: &s3::Target,
        uri: &ObjectUri,
        read_only: bool,
        rclone: &Path,
    ) -> anyhow::Result<Serving> {
        // The folder, made (the notebook's user's) and opened one directory at a time from
        // a root the notebook cannot replace; a link on the way is refused, named.
        tokio::fs::create_dir_all(&place.root)
            .await
            .with_context(|| format!("creating {}", place.root.display()))?;
        let at = place.open_root()?.create_dir_all(&place.rel, place.owner)?;
        if let Some((uid, gid)) = place.owner {
            at.chown_self(uid, gid)?;
        }
        // Never over files (they would be hidden); the work dir of primary storage is the
        // notebook's files' place itself.
        if !place.rel.as_os_str().is_empty() && !at.is_empty()? {
            anyhow::bail!(
                "{}/ holds files; mounting over them would hide them",
                place.inside
            );
        }
        let state_dir = self.mount_state_dir(notebook_id, mount_id);
        fuse::mount(
            rclone,
            &fuse::MountSpec {
                target,
                uri,
                at: &at,
                read_only,
                owner: place.owner,
                state_dir: &state_dir,
            },
        )
        .await
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

/// A dynamic mount's place under the notebook's `/data`.
fn dynamic_place(d: &DataDir, name: &str) -> MountPlace {
    MountPlace {
        root: d.host.clone(),
        root_inside: d.inside.to_string_lossy().into_owned(),
        rel: PathBuf::from(name),
        inside: d.inside.join(name).to_string_lossy().into_owned(),
        owner: d.owner,
    }
}

/// A mount as the API shows it, `path` from its place (where known).
fn view(row: MountRow, place: Option<&MountPlace>) -> MountView {
    let path = match place {
        Some(p) => format!("{}/", p.inside),
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

/// Whether the place's folder holds anything, looked at through `confined`: `false` when it
/// is not there yet, an error naming the link when a link is on the way.
fn holds_files(place: &MountPlace) -> std::io::Result<bool> {
    match place.open_root().and_then(|root| root.open_dir(&place.rel)) {
        Ok(dir) => Ok(!dir.is_empty()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the place's folder if it is empty (never through a link; the work dir of
/// primary storage stays).
fn remove_folder(place: &MountPlace) {
    if place.rel.as_os_str().is_empty() {
        return;
    }
    if let Ok((dir, name)) = place
        .open_root()
        .and_then(|root| root.parent_of(&place.rel, false, None))
    {
        let _ = dir.remove_dir(&name);
    }
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
