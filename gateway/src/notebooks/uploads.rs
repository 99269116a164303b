//! Large uploads staged through object storage (seed 6.3.5.1: above 100 MB and up to
//! 50 GB): the client sends the file's parts straight to the store with presigned URLs of a
//! multipart upload (the gateway is not in the data path and never hands out credentials),
//! then the gateway completes the upload, puts the object into the notebook's work dir
//! (checked against the client's SHA-256) and deletes it from the store.
//!
//! ```text
//! POST /uploads     QUEUED (10 active per notebook already) | UPLOADING + part URLs
//! GET  /uploads/ID  parts done, fresh URLs for the rest (resume after any interruption)
//! POST …/complete   all parts there → LANDING → the file in the work dir → DONE
//! DELETE …          CANCELED; the multipart upload aborted
//! ```
//! Whatever the end (DONE, FAILED, CANCELED), nothing stays in the store, and the oldest
//! QUEUED upload of the notebook starts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use tokio_util::task::TaskTracker;

use super::mounts::Mounts;
use super::{NotebookOp, allow, status::RUNNING, storage_rules::WORK_DIR, target as audit_target};
use crate::auth::authz::NotebookGrant;
use crate::backends::Backend;
use crate::backends::files::WorkDir;
use crate::confined::Dir;
use crate::error::{DomainError, Error, Kind};
use crate::lifecycle::upload::UploadOp;
use crate::lifecycle::{KeyGuard, KeyedLocks, Operation};
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::secrets::SecretBox;
use crate::store::audit::{self, Action};
use crate::store::operations;
use crate::store::transition::Transition;
use crate::store::uploads::{
    self as rows, CANCELED, DONE, FAILED, IN_FLIGHT, LANDING, QUEUED, UPLOADING, UploadRow,
    UploadStatus,
};
use crate::store::{self, Store, storage_connections};

/// The seed's ceiling for uploads through object storage.
pub const MAX_SIZE: u64 = 50 * 1000 * 1000 * 1000;
/// Uploads of one notebook in flight at once (seed: 10; the rest wait).
pub const MAX_ACTIVE: usize = 10;
/// How long a part URL works.
const URL_LIFETIME: Duration = Duration::from_secs(3600);
/// Characters the seed refuses in uploaded file names.
const FORBIDDEN_CHARS: &[char] = &[
    '<', '>', '\'', '"', ';', '`', '=', '#', '$', '%', '^', '&', ',',
];

/// What an upload request fails with.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A field of the request is wrong (path, size, hash, staging folder, parts).
    #[error("{0}")]
    Invalid(String),
    /// The work dir stands in the way: a folder, a link or a file not to overwrite at the
    /// path, or no work dir to land in on this backend.
    #[error("{0}")]
    WorkDir(String),
    /// No such upload of the notebook.
    #[error("{0}")]
    NotFound(String),
    /// The object store did not answer as it should.
    #[error("{0}")]
    Store(String),
    /// A shared check refused: the notebook's status, the owner's connections, the store.
    #[error("{}", .0.message)]
    Common(#[from] Error),
    /// Ours: logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for UploadError {
    fn kind(&self) -> Kind {
        match self {
            UploadError::Invalid(_) => Kind::Invalid,
            UploadError::WorkDir(_) => Kind::Conflict,
            UploadError::NotFound(_) => Kind::NotFound,
            UploadError::Store(_) => Kind::Upstream,
            UploadError::Common(e) => e.kind,
            UploadError::Internal(_) => Kind::Internal,
        }
    }
}

crate::domain_error!(UploadError, common: Common, internal: Internal);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartUpload {
    /// Where the file lands, relative to the work dir (or under /home/ma-user/work).
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the file; the landed file is checked against it.
    pub sha256: Option<String>,
    /// One of the notebook owner's storage connections.
    pub connection: String,
    /// The staging folder (`obs://bucket/prefix/`); default: `atelier-staging/` in the
    /// connection's bucket.
    pub staging: Option<String>,
    #[serde(default)]
    pub overwrite: bool,
}

/// A part still to send: PUT its bytes to `url`.
#[derive(Debug, Serialize)]
pub struct PartUrl {
    pub number: i32,
    pub offset: u64,
    pub size: u64,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct UploadView {
    #[serde(flatten)]
    pub row: UploadRow,
    pub parts_total: u64,
    /// Parts the store holds (while UPLOADING).
    pub parts_done: Vec<i32>,
    /// URLs for the parts still to send (while UPLOADING, on `POST` and `GET` of one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartUrl>>,
}

fn part_size_for(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let min = 16 * MIB;
    // At most 10,000 parts, S3's limit.
    min.max(size.div_ceil(10_000).div_ceil(MIB) * MIB)
}

fn parts_total(row: &UploadRow) -> u64 {
    (row.size as u64).div_ceil(row.part_size as u64).max(1)
}

/// A relative path in the work dir: plain parts, no names the seed refuses.
pub fn validate_path(path: &str) -> Result<String, UploadError> {
    // `/home/ma-user/work/x` is `x`; `/home/ma-user/workx` is not in the work dir.
    let rel = path
        .strip_prefix(WORK_DIR)
        .filter(|r| r.starts_with('/'))
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(path);
    let bad = |why: String| UploadError::Invalid(format!("path: {path:?} {why}"));
    if rel.is_empty() || rel.starts_with('/') || rel.ends_with('/') {
        return Err(bad(format!(
            "must name a file in the work dir (relative, or under {WORK_DIR}/)"
        )));
    }
    if rel
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad("has an empty, '.' or '..' part".into()));
    }
    if let Some(c) = rel
        .chars()
        .find(|c| FORBIDDEN_CHARS.contains(c) || c.is_control())
    {
        return Err(bad(format!(
            "has {c:?}; file names may not hold < > ' \" ; ` = # $ % ^ & , or control characters"
        )));
    }
    if rel.len() > 1024 {
        return Err(bad("is longer than 1024 bytes".into()));
    }
    Ok(rel.to_owned())
}

/// What is at `rel` below `root`, without following a link: `None` when nothing is there
/// (its folder missing too). A link on the way is an error that names it.
fn existing(root: &Dir, rel: &str) -> std::io::Result<Option<FileType>> {
    let (dir, name) = match root.parent_of(Path::new(rel), false, None) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(dir.file_type(&name)?.map(|(t, _)| t))
}

/// Why an upload does not go where a link is.
fn link_message(work: &WorkDir, rel: &str) -> String {
    format!(
        "{}/{rel} is a symbolic link; an upload never writes through or replaces one",
        work.inside
    )
}

/// The uploads service: large files staged through object storage into a notebook's work
/// dir. It owns the per-notebook upload-queue lock and runs landings on the lifecycle's
/// task tracker. Cloning shares it.
#[derive(Clone)]
pub struct Uploads {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    backend: Arc<dyn Backend>,
    secrets: Arc<SecretBox>,
    tasks: TaskTracker,
    /// Opens the owner's storage connection an upload names.
    mounts: Mounts,
    /// One change to a notebook's upload queue at a time.
    upload_locks: KeyedLocks,
}

impl Uploads {
    pub fn new(
        store: Store,
        backend: Arc<dyn Backend>,
        secrets: Arc<SecretBox>,
        tasks: TaskTracker,
        mounts: Mounts,
    ) -> Uploads {
        Uploads {
            inner: Arc::new(Inner {
                store,
                backend,
                secrets,
                tasks,
                mounts,
                upload_locks: KeyedLocks::default(),
            }),
        }
    }

    /// The notebook's work dir: where uploads land, and who owns what lands.
    fn work(&self, notebook_id: &str) -> Result<WorkDir, UploadError> {
        self.inner
            .backend
            .files(notebook_id)
            .map_err(|e| UploadError::WorkDir(e.to_string()))?
            .work()
            .map_err(|e| UploadError::WorkDir(e.to_string()))
    }

    async fn upload_client(&self, row: &UploadRow) -> anyhow::Result<aws_sdk_s3::Client> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let c = storage_connections::by_id(&mut conn, &row.connection_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the upload's storage connection is gone"))?;
        let t = connections::target(&c, &self.inner.secrets)?;
        Ok(s3::client(&t, Duration::from_secs(60), 3))
    }

    /// Starts a staged upload (or queues it behind 10 others of the notebook).
    pub async fn start_upload(
        &self,
        grant: NotebookGrant,
        req: StartUpload,
    ) -> Result<UploadView, UploadError> {
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        let path = validate_path(&req.path)?;
        if req.size == 0 || req.size > MAX_SIZE {
            return Err(UploadError::Invalid(format!(
                "size: {} bytes; uploads through object storage take 1 byte to 50 GB (larger files: copy them from object storage inside the notebook)",
                req.size
            )));
        }
        if let Some(h) = &req.sha256
            && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(UploadError::Invalid("sha256: 64 hex digits".into()));
        }
        allow(&nb, NotebookOp::Upload)?;
        // What is there now, seen without following links (the notebook may have planted
        // some); the landing looks again.
        let work = self.work(&nb.id)?;
        let there = existing(&work.dir, &path).map_err(|e| UploadError::WorkDir(e.to_string()))?;
        match there {
            Some(FileType::Directory) => {
                return Err(UploadError::WorkDir(format!(
                    "{path} is a folder in the work dir"
                )));
            }
            Some(FileType::Symlink) => {
                return Err(UploadError::WorkDir(link_message(&work, &path)));
            }
            Some(_) if !req.overwrite => {
                return Err(UploadError::WorkDir(format!(
                    "{path} exists in the work dir; overwrite it (\"overwrite\": true) or pick another name"
                )));
            }
            _ => {}
        }
        let (connection, t) = self
            .inner
            .mounts
            .connection_of(&nb.owner_id, &req.connection, "connection")
            .await?;
        let staging = match (&req.staging, &connection.bucket) {
            (Some(s), _) => {
                ObjectUri::parse(s).map_err(|e| UploadError::Invalid(format!("staging: {e}")))?
            }
            (None, Some(b)) => ObjectUri {
                bucket: b.clone(),
                key: "atelier-staging/".into(),
            },
            (None, None) => {
                return Err(UploadError::Invalid(format!(
                    "staging: connection {} has no default bucket; give a staging folder (obs://bucket/prefix/)",
                    connection.name
                )));
            }
        };
        s3::check(&t, Some(&staging.bucket))
            .await
            .map_err(Error::from)?;
        let id = store::ordered_id();
        let file_name = path.rsplit('/').next().unwrap_or(&path);
        let now = store::now();
        let mut row = UploadRow {
            id: id.clone(),
            notebook_id: nb.id.clone(),
            path: path.clone(),
            size: req.size as i64,
            sha256: req.sha256.map(|h| h.to_ascii_lowercase()),
            overwrite: req.overwrite,
            connection_id: connection.id.clone(),
            bucket: staging.bucket.clone(),
            key: format!("{}{id}/{file_name}", staging.dir_prefix()),
            upload_id: None,
            part_size: part_size_for(req.size) as i64,
            status: QUEUED,
            error: None,
            created_by: user.clone(),
            created_at: now.clone(),
            updated_at: now,
        };
        {
            let _lock = self.upload_lock(&nb.id).await;
            let mut tx = self.inner.store.write().await?;
            rows::insert(&mut tx, &row).await?;
            audit::record(
                &mut tx,
                &user,
                Action::UploadToNotebook,
                audit_target(&nb),
                "accepted",
                Some(&format!("{path} ({} bytes)", req.size)),
            )
            .await?;
            tx.commit().await?;
        }
        self.start_queued(&nb.id).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        row = rows::get(&mut conn, &nb.id, &id)
            .await?
            .ok_or_else(|| UploadError::Internal(anyhow::anyhow!("the upload vanished")))?;
        drop(conn);
        self.upload_view(row, true).await
    }

    async fn upload_lock(&self, notebook_id: &str) -> KeyGuard {
        self.inner.upload_locks.lock(notebook_id).await
    }

    /// Starts the oldest queued uploads while fewer than [`MAX_ACTIVE`] are in flight.
    async fn start_queued(&self, notebook_id: &str) -> Result<(), UploadError> {
        let _lock = self.upload_lock(notebook_id).await;
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, notebook_id).await?
        };
        let active = list
            .iter()
            .filter(|u| u.status == UPLOADING || u.status == LANDING)
            .count();
        for row in list
            .into_iter()
            .filter(|u| u.status == QUEUED)
            .take(MAX_ACTIVE.saturating_sub(active))
        {
            let started = async {
                let client = self.upload_client(&row).await?;
                let out = client
                    .create_multipart_upload()
                    .bucket(&row.bucket)
                    .key(&row.key)
                    .set_metadata(row.sha256.as_ref().map(|h| {
                        std::iter::once(("atelier-sha256".to_string(), h.clone())).collect()
                    }))
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!(transfer::s3_error(&e, "starting the upload")))?;
                out.upload_id
                    .ok_or_else(|| anyhow::anyhow!("the store gave no upload id"))
            }
            .await;
            let mut tx = self.inner.store.write().await?;
            match started {
                Ok(upload_id) => {
                    if Transition::new(&row.id, &[QUEUED], UPLOADING)
                        .apply(&mut tx)
                        .await?
                    {
                        rows::set_upload_id(&mut tx, &row.id, &upload_id).await?;
                    }
                }
                Err(e) => {
                    Transition::new(&row.id, &[QUEUED], FAILED)
                        .reason(Some(&format!("{e:#}")))
                        .apply(&mut tx)
                        .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// The parts the store holds: number → (size, etag).
    async fn parts_in_store(
        &self,
        client: &aws_sdk_s3::Client,
        row: &UploadRow,
    ) -> anyhow::Result<Vec<(i32, i64, Option<String>)>> {
        let Some(upload_id) = &row.upload_id else {
            return Ok(Vec::new());
        };
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = client
                .list_parts()
                .bucket(&row.bucket)
                .key(&row.key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(transfer::s3_error(&e, "listing the parts")))?;
            for p in out.parts() {
                if let Some(n) = p.part_number {
                    parts.push((n, p.size.unwrap_or(0), p.e_tag.clone()));
                }
            }
            match (out.is_truncated, out.next_part_number_marker) {
                (Some(true), Some(m)) => marker = Some(m),
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.0);
        Ok(parts)
    }

    async fn upload_view(
        &self,
        row: UploadRow,
        with_urls: bool,
    ) -> Result<UploadView, UploadError> {
        let total = parts_total(&row);
        let mut view = UploadView {
            parts_total: total,
            parts_done: Vec::new(),
            parts: None,
            row,
        };
        if view.row.status != UPLOADING {
            return Ok(view);
        }
        let client = self
            .upload_client(&view.row)
            .await
            .map_err(UploadError::Internal)?;
        let done = self
            .parts_in_store(&client, &view.row)
            .await
            .map_err(|e| UploadError::Store(format!("{e:#}")))?;
        let size = view.row.size as u64;
        let part = view.row.part_size as u64;
        let expected = |n: u64| part.min(size - (n - 1) * part);
        view.parts_done = done
            .iter()
            .filter(|(n, s, _)| *s as u64 == expected(*n as u64))
            .map(|p| p.0)
            .collect();
        if with_urls {
            let mut urls = Vec::new();
            let presign = PresigningConfig::expires_in(URL_LIFETIME)
                .map_err(|e| UploadError::Internal(anyhow::anyhow!(e)))?;
            for n in 1..=total {
                if view.parts_done.contains(&(n as i32)) {
                    continue;
                }
                let req = client
                    .upload_part()
                    .bucket(&view.row.bucket)
                    .key(&view.row.key)
                    .upload_id(view.row.upload_id.clone().unwrap_or_default())
                    .part_number(n as i32)
                    .presigned(presign.clone())
                    .await
                    .map_err(|e| UploadError::Internal(anyhow::anyhow!("presigning: {e}")))?;
                urls.push(PartUrl {
                    number: n as i32,
                    offset: (n - 1) * part,
                    size: expected(n),
                    url: req.uri().to_string(),
                });
            }
            view.parts = Some(urls);
        }
        Ok(view)
    }

    pub async fn uploads(&self, grant: &NotebookGrant) -> Result<Vec<UploadView>, UploadError> {
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, &grant.notebook().id).await?
        };
        Ok(list
            .into_iter()
            .map(|row| UploadView {
                parts_total: parts_total(&row),
                parts_done: Vec::new(),
                parts: None,
                row,
            })
            .collect())
    }

    async fn upload_row(&self, grant: &NotebookGrant, id: &str) -> Result<UploadRow, UploadError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        rows::get(&mut conn, &grant.notebook().id, id)
            .await?
            .ok_or_else(|| {
                UploadError::NotFound(format!(
                    "notebook {} has no upload {id}",
                    grant.notebook().name
                ))
            })
    }

    /// One upload; while UPLOADING with the parts done and URLs for the rest.
    pub async fn upload(&self, grant: &NotebookGrant, id: &str) -> Result<UploadView, UploadError> {
        let row = self.upload_row(grant, id).await?;
        self.upload_view(row, true).await
    }

    /// All parts sent: the gateway completes the upload and lands the file (in the
    /// background; poll the upload until DONE or FAILED).
    pub async fn complete_upload(
        &self,
        grant: NotebookGrant,
        id: &str,
    ) -> Result<UploadView, UploadError> {
        let nb = grant.notebook().clone();
        let row = self.upload_row(&grant, id).await?;
        UploadOp::Complete.check(id, row.status)?;
        allow(&nb, NotebookOp::LandUpload)?;
        let view = self.upload_view(row, false).await?;
        let missing: Vec<String> = (1..=view.parts_total as i32)
            .filter(|n| !view.parts_done.contains(n))
            .map(|n| n.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(UploadError::Invalid(format!(
                "parts missing or of the wrong size: {} (GET the upload for their URLs)",
                missing.join(", ")
            )));
        }
        let mut tx = self.inner.store.write().await?;
        Transition::of(id, UploadOp::Complete, LANDING)
            .request(&mut tx, UploadOp::Complete, id)
            .await?;
        tx.commit().await?;
        self.spawn_landing(nb.id.clone(), id.to_owned());
        let row = self.upload_row(&grant, id).await?;
        self.upload_view(row, false).await
    }

    /// Stops an upload: the store forgets its parts.
    pub async fn cancel_upload(&self, grant: NotebookGrant, id: &str) -> Result<(), UploadError> {
        let nb = grant.notebook().clone();
        let row = self.upload_row(&grant, id).await?;
        UploadOp::Cancel.check(id, row.status)?;
        let mut tx = self.inner.store.write().await?;
        Transition::of(id, UploadOp::Cancel, CANCELED)
            .request(&mut tx, UploadOp::Cancel, id)
            .await?;
        tx.commit().await?;
        self.discard_staged(&row).await;
        self.start_queued(&nb.id).await
    }

    /// Aborts the multipart upload and deletes the staged object (best effort: logged).
    async fn discard_staged(&self, row: &UploadRow) {
        let Ok(client) = self.upload_client(row).await else {
            return;
        };
        if let Some(upload_id) = &row.upload_id {
            let _ = client
                .abort_multipart_upload()
                .bucket(&row.bucket)
                .key(&row.key)
                .upload_id(upload_id)
                .send()
                .await;
        }
        if let Err(e) = client
            .delete_object()
            .bucket(&row.bucket)
            .key(&row.key)
            .send()
            .await
        {
            tracing::warn!(upload = %row.id, error = %transfer::s3_error(&e, "deleting the staged object"), "a staged upload stays in the store");
        }
    }

    pub(crate) fn spawn_landing(&self, notebook_id: String, id: String) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.land(&notebook_id, &id).await {
                tracing::error!(upload = %id, error = format!("{e:#}"), "landing an upload failed");
            }
        });
    }

    /// Completes the multipart upload, writes the object into the work dir, deletes it from
    /// the store; DONE or FAILED, and the next queued upload starts.
    async fn land(&self, notebook_id: &str, id: &str) -> anyhow::Result<()> {
        let row = {
            let mut conn = self.inner.store.pool.acquire().await?;
            match rows::get(&mut conn, notebook_id, id).await? {
                Some(r) if r.status == LANDING => r,
                _ => return Ok(()),
            }
        };
        let outcome: anyhow::Result<()> = async {
            let client = self.upload_client(&row).await?;
            let uri = ObjectUri {
                bucket: row.bucket.clone(),
                key: row.key.clone(),
            };
            // Completed already when a restart cut the landing short.
            let exists = client
                .head_object()
                .bucket(&row.bucket)
                .key(&row.key)
                .send()
                .await
                .is_ok();
            if !exists {
                let parts = self.parts_in_store(&client, &row).await?;
                let completed = CompletedMultipartUpload::builder()
                    .set_parts(Some(
                        parts
                            .iter()
                            .map(|(n, _, e)| {
                                CompletedPart::builder()
                                    .part_number(*n)
                                    .set_e_tag(e.clone())
                                    .build()
                            })
                            .collect(),
                    ))
                    .build();
                client
                    .complete_multipart_upload()
                    .bucket(&row.bucket)
                    .key(&row.key)
                    .upload_id(row.upload_id.clone().unwrap_or_default())
                    .multipart_upload(completed)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(transfer::s3_error(&e, "completing the upload"))
                    })?;
            }
            let nb_running = {
                let mut conn = self.inner.store.pool.acquire().await?;
                crate::store::notebooks::get(&mut conn, notebook_id)
                    .await?
                    .is_some_and(|n| n.status == RUNNING)
            };
            if !nb_running {
                anyhow::bail!("the notebook stopped before the file landed; upload it again");
            }
            // Landed through the work dir's descriptor: parents made (ma-user's) and
            // opened one at a time, the partial file new and given to ma-user through its
            // own descriptor, renamed within its folder. A link anywhere fails the landing.
            let work = self.work(notebook_id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (dir, name) = work.dir.parent_of(Path::new(&row.path), true, work.owner)?;
            match dir.file_type(&name)? {
                Some((FileType::Symlink, _)) => {
                    anyhow::bail!("{}", link_message(&work, &row.path))
                }
                Some((FileType::Directory, _)) => {
                    anyhow::bail!("{} is a folder in the work dir", row.path)
                }
                Some(_) if !row.overwrite => anyhow::bail!(
                    "{} appeared in the work dir meanwhile; not overwritten",
                    row.path
                ),
                _ => {}
            }
            let progress = transfer::Progress::default();
            transfer::download(
                &client,
                &uri,
                transfer::Dest::Confined {
                    dir: &dir,
                    name: &name,
                    owner: work.owner,
                },
                row.size as u64,
                &transfer::Options::default(),
                &progress,
            )
            .await
            .map_err(anyhow::Error::msg)?;
            Ok(())
        }
        .await;
        // Nothing stays in the store, whatever happened.
        self.discard_staged(&row).await;
        let mut tx = self.inner.store.write().await?;
        let (to, error, result) = match &outcome {
            Ok(()) => (DONE, None, "ok"),
            Err(e) => (FAILED, Some(format!("{e:#}")), "failed"),
        };
        let nb = crate::store::notebooks::get(&mut tx, notebook_id).await?;
        let detail = match &error {
            None => format!("{} landed ({} bytes)", row.path, row.size),
            Some(e) => format!("{}: {e}", row.path),
        };
        let mut landed = Transition::new(id, &[LANDING], to).reason(error.as_deref());
        if let Some(nb) = &nb {
            landed = landed.audit(
                &row.created_by,
                Action::UploadToNotebook,
                audit_target(nb),
                result,
                Some(&detail),
            );
        }
        landed.apply(&mut tx).await?;
        tx.commit().await?;
        self.start_queued(notebook_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// After a restart: landings that were cut short run again.
    pub(crate) async fn resume_uploads(&self) -> anyhow::Result<()> {
        let pending = operations::resume::<UploadStatus>(&self.inner.store).await?;
        for op in pending {
            let mut tx = self.inner.store.write().await?;
            let row = rows::by_id(&mut tx, &op.resource_id).await?;
            match row {
                Some(row) if row.status == op.status && op.exhausted() => {
                    let reason = format!(
                        "landing was cut short by {} gateway restarts in a row and is given up; upload the file again",
                        op.attempts - 1
                    );
                    Transition::new(&row.id, &[LANDING], FAILED)
                        .reason(Some(&reason))
                        .apply(&mut tx)
                        .await?;
                    tx.commit().await?;
                    self.discard_staged(&row).await;
                }
                Some(row) if row.status == op.status => {
                    drop(tx);
                    self.spawn_landing(row.notebook_id, row.id);
                }
                _ => {
                    operations::end::<UploadStatus>(&mut tx, &op.resource_id).await?;
                    tx.commit().await?;
                }
            }
        }
        Ok(())
    }

    /// A deleted notebook's uploads in flight: their parts go from the store.
    pub(crate) async fn discard_uploads(&self, notebook_id: &str) -> anyhow::Result<()> {
        let list = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::of_notebook(&mut conn, notebook_id).await?
        };
        for row in list.into_iter().filter(|u| IN_FLIGHT.contains(&u.status)) {
            let mut tx = self.inner.store.write().await?;
            Transition::new(&row.id, IN_FLIGHT, CANCELED)
                .reason(Some("the notebook was deleted"))
                .apply(&mut tx)
                .await?;
            tx.commit().await?;
            self.discard_staged(&row).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths_stay_in_the_work_dir() {
        assert_eq!(validate_path("data/big.bin").unwrap(), "data/big.bin");
        assert_eq!(
            validate_path("/home/ma-user/work/data/big.bin").unwrap(),
            "data/big.bin"
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "dir/",
            "a;b",
            "a,b",
            "x=1",
            "100%",
            "/home/ma-user/work/",
            "/home/ma-user/work",
            // Found by the property test below: outside the work dir, not `x/a` in it.
            "/home/ma-user/workx/a",
        ] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }

    /// Property tests: generated paths (`..`, absolute, NUL, control and other unicode
    /// characters, near misses of the work dir) are refused or name a file inside it.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::path::{Component, Path};

        fn part() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just(String::new()),
                Just("work".to_owned()),
                Just("a\0b".to_owned()),
                Just("\u{202e}txt.exe".to_owned()),
                "[a-z0-9_.-]{1,8}",
                "\\PC{1,6}",
                "[\\x00-\\x7f]{1,4}",
            ]
        }

        fn path() -> impl Strategy<Value = String> {
            let prefix = prop::sample::select(vec![
                "",
                "/",
                "//",
                "/home/ma-user/work",
                "/home/ma-user/work/",
                "/home/ma-user/work//",
                "/home/ma-user/workx/",
                "/home/ma-user/",
                "/etc/",
                "./",
                "../",
            ]);
            (prefix, prop::collection::vec(part(), 0..6), any::<bool>()).prop_map(
                |(prefix, parts, trailing)| {
                    let mut p = format!("{prefix}{}", parts.join("/"));
                    if trailing {
                        p.push('/');
                    }
                    p
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn accepted_upload_paths_name_a_file_inside_the_work_dir(p in path()) {
                let Ok(rel) = validate_path(&p) else {
                    return Ok(());
                };
                prop_assert!(rel.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{rel:?}");
                prop_assert!(!rel.chars().any(|c| c.is_control()), "{rel:?}");
                let file = Path::new(WORK_DIR).join(&rel);
                prop_assert!(file.starts_with(WORK_DIR) && file != Path::new(WORK_DIR));
                prop_assert!(Path::new(&rel).components().all(|c| matches!(c, Component::Normal(_))));
                if p.starts_with('/') {
                    prop_assert!(p.starts_with(&format!("{WORK_DIR}/")), "{p:?} is outside the work dir");
                }
                // The same file whether written relative or absolute.
                prop_assert_eq!(validate_path(&format!("{WORK_DIR}/{rel}")).ok(), Some(rel.clone()));
            }
        }
    }

    #[test]
    fn parts_stay_within_ten_thousand() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size_for(300 * 1000 * 1000), 16 * MIB);
        let big = part_size_for(MAX_SIZE);
        assert!(
            MAX_SIZE.div_ceil(big) <= 10_000 && big.is_multiple_of(MIB),
            "{big}"
        );
    }

    /// What the start of an upload sees at its path: nothing, a file, a folder, or a link
    /// (the target itself or a folder on the way), never what a link leads to.
    #[test]
    fn what_is_at_an_upload_path_is_seen_without_following_links() {
        let base = std::env::temp_dir().join(format!("upload-at-{}", uuid::Uuid::new_v4()));
        let work = base.join("work");
        std::fs::create_dir_all(work.join("dir")).unwrap();
        std::fs::create_dir_all(base.join("outside/sub")).unwrap();
        std::fs::write(base.join("outside/f"), "x").unwrap();
        std::fs::write(work.join("dir/f"), "x").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), work.join("r")).unwrap();
        std::os::unix::fs::symlink(base.join("outside/f"), work.join("l")).unwrap();
        let place = WorkDir {
            dir: crate::confined::Dir::open(&work)
                .unwrap()
                .shown_as(WORK_DIR),
            owner: None,
            inside: WORK_DIR.into(),
        };
        let root = &place.dir;
        assert_eq!(existing(root, "nope/x").unwrap(), None);
        assert_eq!(existing(root, "dir/new").unwrap(), None);
        assert_eq!(
            existing(root, "dir/f").unwrap(),
            Some(FileType::RegularFile)
        );
        assert_eq!(existing(root, "dir").unwrap(), Some(FileType::Directory));
        assert_eq!(existing(root, "l").unwrap(), Some(FileType::Symlink));
        for through in ["r/f", "r/sub/x"] {
            let e = existing(root, through).unwrap_err().to_string();
            assert_eq!(
                e, "/home/ma-user/work/r is a symbolic link, which is not followed here",
                "{through}"
            );
        }
        assert_eq!(
            link_message(&place, "l"),
            "/home/ma-user/work/l is a symbolic link; an upload never writes through or replaces one"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
