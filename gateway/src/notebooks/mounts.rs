//! Object-storage folders mounted into notebooks (seed 6.7.6, "dynamic mounts"): a running
//! notebook gets `obs://bucket/prefix/` at `/data/<name>/`. The gateway makes the mount on
//! the host (`storage::fuse`, rclone over the user's stored connection) in the directory the
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

use serde::{Deserialize, Serialize};

use super::{Lifecycle, state_error, status::RUNNING, target as audit_target};
use crate::api::error::ApiError;
use crate::audit::{self, Action};
use crate::auth::authz::NotebookGrant;
use crate::backends::{BackendError, DataDir, runconf};
use crate::events::{self, EventKind};
use crate::storage::fuse::{self, Serving};
use crate::storage::{ObjectUri, connections, s3};
use crate::store::mounts::{self as rows, FAILED, MOUNTED, MountRow, UNMOUNTED};
use crate::store::{self, storage};

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
    if crate::api::is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} is not a folder name under /data; use 1-64 of A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit (no '/' or '..')"
        ))
    }
}

fn unsupported(e: BackendError) -> ApiError {
    ApiError::conflict(e.to_string())
}

impl Lifecycle {
    fn mount_state_dir(&self, notebook_id: &str, mount_id: &str) -> PathBuf {
        runconf::notebook_dir(&self.inner.settings.data_dir, notebook_id)
            .join("mounts")
            .join(mount_id)
    }

    fn rclone(&self) -> Result<PathBuf, ApiError> {
        let Some(rclone) = self.inner.rclone.clone() else {
            return Err(ApiError::conflict(
                "object-storage mounts need rclone on the gateway's host (apt-get install rclone fuse3)",
            ));
        };
        if !fuse::fuse_available() {
            return Err(ApiError::conflict(
                "object-storage mounts need FUSE: /dev/fuse cannot be opened on the gateway's host",
            ));
        }
        Ok(rclone)
    }

    fn view(&self, data: Option<&DataDir>, row: MountRow) -> MountView {
        let inside = data.map_or_else(|| PathBuf::from("/data"), |d| d.inside.clone());
        MountView {
            path: format!("{}/", inside.join(&row.name).display()),
            row,
        }
    }

    /// The notebook's mounts with their status (a MOUNTED one whose process is gone shows as
    /// FAILED until the health loop makes it again).
    pub async fn mounts(&self, grant: &NotebookGrant) -> Result<Vec<MountView>, ApiError> {
        let nb = grant.notebook();
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, &nb.id).await?
        };
        let data = self.inner.backend.data_dir(&nb.id).ok();
        Ok(list
            .into_iter()
            .map(|mut row| {
                if row.status == MOUNTED
                    && let Some(d) = &data
                    && !serving(&row).is_some_and(|s| fuse::is_serving(&d.host.join(&row.name), s))
                {
                    row.status = FAILED.into();
                    row.error =
                        Some("the mount's rclone process is gone; it is being made again".into());
                }
                self.view(data.as_ref(), row)
            })
            .collect())
    }

    /// Mounts an object-storage folder at `/data/<name>/` of a running notebook.
    pub async fn add_mount(
        &self,
        grant: NotebookGrant,
        req: AddMount,
    ) -> Result<MountView, ApiError> {
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        validate_name(&req.name).map_err(ApiError::invalid)?;
        let uri = ObjectUri::parse(&req.uri).map_err(|e| ApiError::invalid(format!("uri: {e}")))?;
        if nb.status != RUNNING {
            return Err(state_error(&nb, "mount storage into", &[RUNNING]));
        }
        let data = self.inner.backend.data_dir(&nb.id).map_err(unsupported)?;
        if !data.live {
            return Err(ApiError::conflict(format!(
                "mounts cannot reach notebook {} while it runs: its /data is not a shared mount (the gateway needs root for that); the mount would only appear after a restart",
                nb.name
            )));
        }
        let rclone = self.rclone()?;
        let (connection, target) = {
            let mut conn = self.inner.store.pool.acquire().await?;
            let Some(c) = storage::by_name(&mut conn, &nb.owner_id, &req.connection).await? else {
                return Err(ApiError::invalid(format!(
                    "connection: the notebook's owner has no storage connection named {:?} (atelier storage connection list)",
                    req.connection
                )));
            };
            let t = connections::target(&c, &self.inner.secrets)
                .map_err(|e| ApiError::internal(e.context("opening the connection's secret")))?;
            (c, t)
        };
        let host = data.host.join(&req.name);
        if dir_has_entries(&host) {
            return Err(ApiError::conflict(format!(
                "{}/ already holds files; mounting over them would hide them: pick another name",
                data.inside.join(&req.name).display()
            )));
        }
        // The store answers for these credentials and this bucket before anything is made.
        s3::check(&target, Some(&uri.bucket))
            .await
            .map_err(crate::api::storage::refused)?;

        let id = store::ordered_id();
        {
            let mut tx = self.inner.store.write().await?;
            let existing = rows::of_notebook(&mut tx, &nb.id).await?;
            if existing.iter().any(|m| m.name == req.name) {
                return Err(ApiError::conflict(format!(
                    "notebook {} already has a mount named {:?} at {}/",
                    nb.name,
                    req.name,
                    data.inside.join(&req.name).display()
                )));
            }
            if existing.len() >= MAX_DYNAMIC {
                return Err(ApiError::invalid(format!(
                    "notebook {} has {} mounts, the most it may have; unmount one first",
                    nb.name,
                    existing.len()
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
                    now: &store::now(),
                },
            )
            .await?;
            tx.commit().await?;
        }
        let made = self
            .mount_at(
                &nb.id,
                &id,
                &data,
                &target,
                &uri,
                &req.name,
                req.read_only,
                &rclone,
            )
            .await;
        let mut tx = self.inner.store.write().await?;
        let detail = format!(
            "{uri} at {}/{}",
            data.inside.join(&req.name).display(),
            if req.read_only { " (read-only)" } else { "" }
        );
        match made {
            Ok(serving) => {
                rows::set_state(
                    &mut tx,
                    &id,
                    MOUNTED,
                    None,
                    Some((serving.pid, serving.start_ticks)),
                    &store::now(),
                )
                .await?;
                events::record(
                    &mut tx,
                    &nb.id,
                    EventKind::DynamicMountStorage,
                    Some(&detail),
                )
                .await?;
                audit::record(
                    &mut tx,
                    &user,
                    Action::MountNotebookStorage,
                    audit_target(&nb),
                    "ok",
                    Some(&detail),
                )
                .await?;
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
                let _ = std::fs::remove_dir(&host);
                return Err(ApiError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    "mount_failed",
                    format!(
                        "mounting {uri} at {}/ failed: {e:#}",
                        data.inside.join(&req.name).display()
                    ),
                ));
            }
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let row = rows::by_name(&mut conn, &nb.id, &req.name)
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the mount vanished")))?;
        Ok(self.view(Some(&data), row))
    }

    /// Unmounts `/data/<name>/` (the objects stay) and forgets the mount.
    pub async fn remove_mount(&self, grant: NotebookGrant, name: &str) -> Result<(), ApiError> {
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        let row = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::by_name(&mut conn, &nb.id, name).await?
        };
        let Some(row) = row else {
            return Err(ApiError::not_found(format!(
                "notebook {} has no mount named {name:?}",
                nb.name
            )));
        };
        if let Ok(data) = self.inner.backend.data_dir(&nb.id) {
            let host = data.host.join(&row.name);
            fuse::unmount(&host, serving(&row)).await.map_err(|e| {
                ApiError::conflict(format!(
                    "unmounting {}/ failed: {e:#}",
                    data.inside.join(&row.name).display()
                ))
            })?;
            // Only an empty folder goes; anything written beside the mount stays.
            let _ = std::fs::remove_dir(&host);
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
    /// restart, when a mount's process died). A mount that fails is FAILED with the reason
    /// and a `MountVolumeFailed` event; the notebook still starts.
    pub(crate) async fn ensure_mounts(&self, notebook_id: &str) -> anyhow::Result<()> {
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, notebook_id).await?
        };
        if list.is_empty() {
            return Ok(());
        }
        let data = self.inner.backend.data_dir(notebook_id);
        for row in list {
            // Being made by a request right now.
            if row.status == rows::MOUNTING {
                continue;
            }
            let outcome: anyhow::Result<Option<Serving>> = async {
                let data = data.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                let host = data.host.join(&row.name);
                if row.status == MOUNTED
                    && serving(&row).is_some_and(|s| fuse::is_serving(&host, s))
                {
                    return Ok(None);
                }
                // A mount left by a process that died: clear it before mounting again.
                fuse::unmount(&host, serving(&row)).await?;
                let rclone = self
                    .rclone()
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                let (target, uri) = {
                    let mut conn = self.inner.store.pool.acquire().await?;
                    let c = storage::by_id(&mut conn, &row.connection_id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("its storage connection is gone"))?;
                    (
                        connections::target(&c, &self.inner.secrets)?,
                        ObjectUri::parse(&row.uri).map_err(anyhow::Error::msg)?,
                    )
                };
                let s = self
                    .mount_at(
                        notebook_id,
                        &row.id,
                        data,
                        &target,
                        &uri,
                        &row.name,
                        row.read_only,
                        &rclone,
                    )
                    .await?;
                Ok(Some(s))
            }
            .await;
            let mut tx = self.inner.store.write().await?;
            match outcome {
                Ok(None) => {}
                Ok(Some(s)) => {
                    rows::set_state(
                        &mut tx,
                        &row.id,
                        MOUNTED,
                        None,
                        Some((s.pid, s.start_ticks)),
                        &store::now(),
                    )
                    .await?;
                }
                Err(e) => {
                    let why = format!("{} at /data/{}/: {e:#}", row.uri, row.name);
                    tracing::warn!(notebook = %notebook_id, mount = %row.name, error = %why, "mounting object storage failed");
                    rows::set_state(&mut tx, &row.id, FAILED, Some(&why), None, &store::now())
                        .await?;
                    if row.status != FAILED {
                        events::record(
                            &mut tx,
                            notebook_id,
                            EventKind::MountVolumeFailed,
                            Some(&why),
                        )
                        .await?;
                    }
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Mounts a gateway stopped in the middle of making (their request failed from the
    /// caller's side): undone, so that the name can be used again.
    pub(crate) async fn forget_interrupted_mounts(&self) -> anyhow::Result<()> {
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::in_status(&mut conn, rows::MOUNTING).await?
        };
        for row in list {
            if let Ok(data) = self.inner.backend.data_dir(&row.notebook_id) {
                let host = data.host.join(&row.name);
                fuse::unmount(&host, None).await?;
                let _ = std::fs::remove_dir(&host);
            }
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::delete(&mut conn, &row.id).await?;
        }
        Ok(())
    }

    /// Unmounts every mount of the notebook (stop, delete). Rows stay, UNMOUNTED, to be made
    /// again at the next start. The objects are never touched.
    pub(crate) async fn release_mounts(&self, notebook_id: &str) -> anyhow::Result<()> {
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, notebook_id).await?
        };
        let Ok(data) = self.inner.backend.data_dir(notebook_id) else {
            return Ok(());
        };
        for row in list {
            let host = data.host.join(&row.name);
            fuse::unmount(&host, serving(&row)).await?;
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::set_state(&mut conn, &row.id, UNMOUNTED, None, None, &store::now()).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn mount_at(
        &self,
        notebook_id: &str,
        mount_id: &str,
        data: &DataDir,
        target: &s3::Target,
        uri: &ObjectUri,
        name: &str,
        read_only: bool,
        rclone: &Path,
    ) -> anyhow::Result<Serving> {
        let host = data.host.join(name);
        std::fs::create_dir_all(&host)?;
        if let Some((uid, gid)) = data.owner {
            let _ = std::os::unix::fs::chown(&host, Some(uid), Some(gid));
        }
        let state_dir = self.mount_state_dir(notebook_id, mount_id);
        fuse::mount(
            rclone,
            &fuse::MountSpec {
                target,
                uri,
                mountpoint: &host,
                read_only,
                owner: data.owner,
                state_dir: &state_dir,
            },
        )
        .await
    }
}

fn serving(row: &MountRow) -> Option<Serving> {
    Some(Serving {
        pid: i32::try_from(row.pid?).ok()?,
        start_ticks: u64::try_from(row.start_ticks?).ok()?,
    })
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
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
