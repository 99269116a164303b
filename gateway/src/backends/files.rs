//! How the gateway puts object storage and files into a notebook: a connector its backend
//! gives (`Backend::files`), spoken in the notebook's own paths. The services above
//! (`notebooks::mounts`, `notebooks::uploads`) name folders as the notebook sees them and
//! hold [`Place`]s; what a place is on a machine, and how a folder gets mounted there, is
//! the connector's.
//!
//! [`HostFiles`] is the connector of backends whose notebooks keep their files on the
//! gateway's host (process, docker): rclone over FUSE started by the gateway
//! (`backends::fuse`) and bound onto folders opened through `confined`, landings written
//! through `confined`. A backend whose notebooks run elsewhere gives its own (its agent
//! mounting and writing beside the notebook).
//!
//! Invariant: nothing above `backends/` sees a host path of a notebook's files.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::fuse::{self, Serving};
use super::{BackendError, WORK_DIR, workdisk};
use crate::confined::Dir;
use crate::object_storage::ObjectUri;
use crate::object_storage::s3::Target;

/// A folder in a notebook, where an object-storage folder is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place(super::MountPlace);

impl Place {
    /// The folder as the notebook sees it (for messages and the API).
    pub fn inside(&self) -> &str {
        &self.0.inside
    }

    /// Whether this is the notebook's work dir itself (primary storage).
    pub fn is_work_dir(&self) -> bool {
        self.0.rel.as_os_str().is_empty()
    }
}

/// One mount to make.
pub struct Mount<'a> {
    /// Its id: the connector keeps the mount's state (rclone's cache, its log) under it.
    pub id: &'a str,
    pub target: &'a Target,
    pub uri: &'a ObjectUri,
    pub read_only: bool,
    /// The rclone to run.
    pub rclone: &'a Path,
}

/// The notebook's work dir, opened for a landing (an upload).
pub struct WorkDir {
    /// Opened without following a link, named as the notebook sees it.
    pub dir: Dir,
    /// Who owns what lands, as the notebook sees it; `None`: the gateway's own user.
    pub owner: Option<(u32, u32)>,
    /// What the notebook calls it.
    pub inside: String,
}

/// A notebook's files, as its backend lets the gateway reach them.
#[async_trait]
pub trait NotebookFiles: Send + Sync {
    /// Where the object-storage folder chosen at create for `path` (the work dir or a
    /// folder) goes; an error says why this backend cannot put it there.
    fn place(&self, path: &str) -> Result<Place, BackendError>;

    /// `/data/<name>`: where a mount made while the notebook runs goes.
    fn data_place(&self, name: &str) -> Result<Place, BackendError>;

    /// Whether a mount made now reaches the running notebook.
    fn mounts_reach_running(&self) -> bool;

    /// Mounts `m.uri` at `place` (the folder made, the notebook's user's); refuses a
    /// folder that holds files (they would be hidden), except the work dir itself.
    async fn mount(&self, place: &Place, m: &Mount<'_>) -> anyhow::Result<Serving>;

    /// Whether the mount `mount_id` at `place` is up and served by `serving`.
    fn is_serving(&self, place: &Place, mount_id: &str, serving: Serving) -> bool;

    /// Unmounts `mount_id` at `place` and ends what served it. Idempotent.
    async fn unmount(
        &self,
        place: &Place,
        mount_id: &str,
        serving: Option<Serving>,
    ) -> anyhow::Result<()>;

    /// Whether the folder holds anything (`false` when it is not there); an error names a
    /// link on the way.
    fn holds_files(&self, place: &Place) -> std::io::Result<bool>;

    /// Removes the folder if it is empty (never the work dir, never through a link).
    fn remove_folder(&self, place: &Place);

    /// The work dir, opened for a landing.
    fn work(&self) -> std::io::Result<WorkDir>;
}

/// The files of a notebook on this host.
pub struct HostFiles {
    /// `<data>/notebooks/<id>`.
    pub nb: PathBuf,
    /// What the notebook calls its work dir (`<nb>/work` here).
    pub work_inside: String,
    /// Its `/data` (`<nb>/data` here), as the notebook sees it.
    pub data_inside: String,
    /// Who owns the notebook's files as it sees them; `None`: the gateway's own user.
    pub owner: Option<(u32, u32)>,
    /// Whether a mount made now reaches the running notebook: always (`false` here), or
    /// only while `<nb>/data` is a shared mount of its own (`true`; asked of the mount
    /// table when a mount is requested, not when the connector is made).
    pub live_if_data_shared: bool,
    /// Folders outside the work dir: mounted under `<nb>/ext` and bound at their paths by
    /// the engine (`true`), or refused (`false`: the notebook sees the host's filesystem
    /// there).
    pub outside_work: bool,
    /// The backend's name, for messages.
    pub backend: &'static str,
}

impl HostFiles {
    fn state_dir(&self, mount_id: &str) -> PathBuf {
        self.nb.join("mounts").join(mount_id)
    }

    /// The name in `<nb>/ext` of a folder outside the work dir (its path with `/` as
    /// `--`): mounted there before the engine binds it at its path.
    pub fn ext_name(path: &str) -> String {
        path.trim_start_matches('/').replace('/', "--")
    }
}

#[async_trait]
impl NotebookFiles for HostFiles {
    fn place(&self, path: &str) -> Result<Place, BackendError> {
        let in_work = if path == WORK_DIR {
            Some("")
        } else {
            path.strip_prefix(WORK_DIR)
                .and_then(|r| r.strip_prefix('/'))
        };
        if let Some(rest) = in_work {
            let inside = if rest.is_empty() {
                self.work_inside.clone()
            } else {
                format!("{}/{rest}", self.work_inside)
            };
            return Ok(Place(super::MountPlace {
                root: self.nb.join("work"),
                root_inside: self.work_inside.clone(),
                rel: PathBuf::from(rest),
                inside,
                owner: self.owner,
            }));
        }
        if !self.outside_work {
            return Err(BackendError::Unsupported(format!(
                "{path}: the {} backend places object-storage folders in the work dir, {WORK_DIR} or below (other paths are not supported yet)",
                self.backend
            )));
        }
        // The gateway's: the engine binds each folder at its path, never `<nb>/ext` itself.
        let ext = self.nb.join("ext");
        Ok(Place(super::MountPlace {
            root_inside: ext.to_string_lossy().into_owned(),
            rel: PathBuf::from(Self::ext_name(path)),
            root: ext,
            inside: path.to_owned(),
            owner: self.owner,
        }))
    }

    fn data_place(&self, name: &str) -> Result<Place, BackendError> {
        Ok(Place(super::MountPlace {
            root: self.nb.join("data"),
            root_inside: self.data_inside.clone(),
            rel: PathBuf::from(name),
            inside: format!("{}/{name}", self.data_inside),
            owner: self.owner,
        }))
    }

    fn mounts_reach_running(&self) -> bool {
        !self.live_if_data_shared || workdisk::is_mounted(&self.nb.join("data"))
    }

    async fn mount(&self, place: &Place, m: &Mount<'_>) -> anyhow::Result<Serving> {
        use anyhow::Context;
        let place = &place.0;
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
        fuse::mount(
            m.rclone,
            &fuse::MountSpec {
                target: m.target,
                uri: m.uri,
                at: &at,
                read_only: m.read_only,
                owner: place.owner,
                state_dir: &self.state_dir(m.id),
            },
        )
        .await
    }

    fn is_serving(&self, place: &Place, mount_id: &str, serving: Serving) -> bool {
        fuse::is_serving(&place.0, &self.state_dir(mount_id), serving)
    }

    async fn unmount(
        &self,
        place: &Place,
        mount_id: &str,
        serving: Option<Serving>,
    ) -> anyhow::Result<()> {
        fuse::unmount(&place.0, &self.state_dir(mount_id), serving).await
    }

    fn holds_files(&self, place: &Place) -> std::io::Result<bool> {
        let place = &place.0;
        match place.open_root().and_then(|root| root.open_dir(&place.rel)) {
            Ok(dir) => Ok(!dir.is_empty()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn remove_folder(&self, place: &Place) {
        let place = &place.0;
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

    fn work(&self) -> std::io::Result<WorkDir> {
        Ok(WorkDir {
            dir: Dir::open(&self.nb.join("work"))?.shown_as(&self.work_inside),
            owner: self.owner,
            inside: self.work_inside.clone(),
        })
    }
}
