//! Copies between local paths and object stores (`atelier obs cp`): what goes where (the
//! seed's `obs-copy` rules, with `--drop-last-dir`), parallel multipart uploads and ranged
//! downloads for big objects, and skipping what is already complete (same size and
//! checksum), so that running a copy again after an interruption resumes it.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_util::{StreamExt, TryStreamExt};
use rustix::fs::FileType;
use sha2::{Digest, Sha256};

use super::ObjectUri;
use crate::confined::{self, Dir};

/// Metadata key of the SHA-256 Atelier records on the objects it uploads.
pub const SHA256_META: &str = "atelier-sha256";

/// A local path or an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    Local(PathBuf),
    Object(ObjectUri),
}

impl Loc {
    pub fn parse(text: &str) -> Result<Loc, String> {
        if text.starts_with("obs://") || text.starts_with("s3://") {
            ObjectUri::parse(text).map(Loc::Object)
        } else if text.contains("://") {
            Err(format!(
                "{text:?}: only local paths, obs:// and s3:// are understood"
            ))
        } else {
            Ok(Loc::Local(absolute(text)))
        }
    }

    /// Written with a trailing `/`: a folder.
    fn says_dir(&self) -> bool {
        match self {
            Loc::Local(p) => p.as_os_str().to_string_lossy().ends_with('/') || p.is_dir(),
            Loc::Object(u) => u.key.is_empty() || u.key.ends_with('/'),
        }
    }

    /// `self` joined with a relative `/`-separated path.
    fn join(&self, rel: &str) -> Loc {
        match self {
            Loc::Local(p) => Loc::Local(p.join(rel)),
            Loc::Object(u) => Loc::Object(ObjectUri {
                bucket: u.bucket.clone(),
                key: format!("{}{rel}", u.dir_prefix()),
            }),
        }
    }
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Local(p) => write!(f, "{}", p.display()),
            Loc::Object(u) => write!(f, "{u}"),
        }
    }
}

/// `~` expanded, relative paths made absolute (a trailing `/` is kept: it means "folder").
pub fn absolute(text: &str) -> PathBuf {
    let expanded = match text.strip_prefix("~") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            // `~` is the user's home, as their shell has it (the CLI's `obs` paths).
            #[allow(clippy::disallowed_methods)]
            let home = std::env::var_os("HOME").unwrap_or_default();
            format!("{}{rest}", Path::new(&home).display())
        }
        _ => text.to_string(),
    };
    let p = PathBuf::from(&expanded);
    let abs = if p.is_absolute() {
        p
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    // Normalize `.` components (`./data/` → `<cwd>/data/`), keeping a trailing slash.
    let mut s: String = abs
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect::<PathBuf>()
        .to_string_lossy()
        .into_owned();
    if expanded.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    PathBuf::from(s)
}

/// One file to copy.
#[derive(Debug, Clone)]
pub struct Item {
    pub src: Loc,
    pub dst: Loc,
    pub size: u64,
}

/// What a copy does: its items, and the folders (empty ones included) to create locally.
#[derive(Debug, Default)]
pub struct Plan {
    pub items: Vec<Item>,
    pub dirs: Vec<PathBuf>,
}

fn last_name(loc: &Loc) -> Option<String> {
    let text = match loc {
        Loc::Local(p) => p.to_string_lossy().into_owned(),
        Loc::Object(u) => u.key.clone(),
    };
    text.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// (relative `/` path, size) of each file under a folder.
type Files = Vec<(String, u64)>;

/// Files under a local folder (regular files only; links are not followed), and the
/// folders (relative `/` paths).
pub fn walk(root: &Path) -> std::io::Result<(Files, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(rel.clone());
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                files.push((rel, entry.metadata()?.len()));
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// Objects under a prefix: (key, size).
pub async fn list_all(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, u64)>, String> {
    list_at_most(client, bucket, prefix, usize::MAX).await
}

/// Like [`list_all`], stopping after the page that reaches `max` objects (enough to tell a
/// folder too big without listing all of it).
pub async fn list_at_most(
    client: &Client,
    bucket: &str,
    prefix: &str,
    max: usize,
) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error(&e, &format!("listing obs://{bucket}/{prefix}")))?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
            }
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// An S3 error in words: the code and message when the store sent them.
pub fn s3_error<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>, doing: &str) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{doing}: {code}: {msg}"),
        (Some(code), None) => format!("{doing}: {code}"),
        _ => format!("{doing}: {}", super::s3::causes(e)),
    }
}

/// Size of one object; `None` when there is no such object (a folder, say).
async fn head_size(client: &Client, u: &ObjectUri) -> Result<Option<u64>, String> {
    if u.key.is_empty() || u.key.ends_with('/') {
        return Ok(None);
    }
    Ok(head(client, u).await?.map(|(size, _, _)| size))
}

/// Whether anything lies under `key/`.
pub async fn is_folder(client: &Client, u: &ObjectUri) -> bool {
    client
        .list_objects_v2()
        .bucket(&u.bucket)
        .prefix(u.dir_prefix())
        .max_keys(1)
        .send()
        .await
        .is_ok_and(|r| !r.contents().is_empty() || !r.common_prefixes().is_empty())
}

/// Works out what `src` → `dst` copies. A folder source lands in `dst/<its name>/`, or
/// straight in `dst/` with `drop_last_dir`; a file lands in `dst/<its name>` when `dst` is a
/// folder (written with a trailing `/`, or an existing local folder), else at `dst`.
pub async fn plan(
    client: &Client,
    src: &Loc,
    dst: &Loc,
    drop_last_dir: bool,
) -> Result<Plan, String> {
    if let (Loc::Local(_), Loc::Local(_)) = (src, dst) {
        return Err("both paths are local: one of them must be obs:// or s3://".into());
    }
    // A single file?
    let file_size = match src {
        Loc::Local(p) => {
            let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            meta.is_file().then_some(meta.len())
        }
        Loc::Object(u) => head_size(client, u).await?,
    };
    let mut plan = Plan::default();
    if let Some(size) = file_size {
        let name = last_name(src).ok_or_else(|| format!("{src}: no file name"))?;
        let target = if dst.says_dir() {
            dst.join(&name)
        } else {
            dst.clone()
        };
        plan.items.push(Item {
            src: src.clone(),
            dst: target,
            size,
        });
        return Ok(plan);
    }
    // A folder.
    let base = if drop_last_dir {
        dst.clone()
    } else {
        match last_name(src) {
            Some(name) => dst.join(&format!("{name}/")),
            None => dst.clone(),
        }
    };
    match src {
        Loc::Local(p) => {
            let (files, dirs) = walk(p).map_err(|e| format!("{}: {e}", p.display()))?;
            for (rel, size) in files {
                plan.items.push(Item {
                    src: Loc::Local(p.join(&rel)),
                    dst: base.join(&rel),
                    size,
                });
            }
            if let Loc::Local(b) = &base {
                plan.dirs.extend(dirs.iter().map(|d| b.join(d)));
            }
        }
        Loc::Object(u) => {
            let prefix = u.dir_prefix();
            let objects = list_all(client, &u.bucket, &prefix).await?;
            if objects.is_empty() {
                return Err(format!("{src}: no such object or folder"));
            }
            for (key, size) in objects {
                let rel = key[prefix.len()..].to_string();
                if rel.is_empty() {
                    continue;
                }
                if rel.ends_with('/') {
                    // A folder marker: an (empty) folder on a local destination.
                    if let Loc::Local(b) = &base {
                        plan.dirs.push(b.join(rel.trim_end_matches('/')));
                    }
                    continue;
                }
                plan.items.push(Item {
                    src: Loc::Object(ObjectUri {
                        bucket: u.bucket.clone(),
                        key,
                    }),
                    dst: base.join(&rel),
                    size,
                });
            }
        }
    }
    if let Loc::Local(b) = &base {
        plan.dirs.push(b.clone());
    }
    Ok(plan)
}

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files copied at once, and parts of one big file at once.
    pub jobs: usize,
    /// Objects at least this big go in parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 8,
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
        }
    }
}

/// Running totals a progress display reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    pub skipped: AtomicU64,
}

/// What became of one item.
#[derive(Debug)]
pub enum Outcome {
    Copied,
    /// Already complete at the destination (same size and checksum).
    Skipped,
}

fn hex_digest(d: impl AsRef<[u8]>) -> String {
    hex::encode(d)
}

/// SHA-256 and MD5 of a local file (read once).
async fn local_digests(path: &Path) -> Result<(String, String), String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    file_digests(f).await
}

/// SHA-256 and MD5 of an open file, read from where it stands (once).
async fn file_digests(mut f: std::fs::File) -> Result<(String, String), String> {
    tokio::task::spawn_blocking(move || -> std::io::Result<(String, String)> {
        use std::io::Read;
        let mut sha = Sha256::new();
        let mut md5 = md5::Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            md5.update(&buf[..n]);
        }
        Ok((hex_digest(sha.finalize()), hex_digest(md5.finalize())))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// An object's size, recorded SHA-256 and ETag, if it exists.
async fn head(
    client: &Client,
    u: &ObjectUri,
) -> Result<Option<(u64, Option<String>, String)>, String> {
    match client
        .head_object()
        .bucket(&u.bucket)
        .key(&u.key)
        .send()
        .await
    {
        Ok(h) => Ok(Some((
            h.content_length().unwrap_or(0).max(0) as u64,
            h.metadata().and_then(|m| m.get(SHA256_META).cloned()),
            h.e_tag().unwrap_or_default().trim_matches('"').to_string(),
        ))),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
        // Some stores answer a HEAD of a folder's name with an error rather than 404.
        Err(_) if is_folder(client, u).await => Ok(None),
        Err(e) => Err(s3_error(&e, &format!("reading {u}"))),
    }
}

/// Whether an object holds exactly the local file: same size, and the same SHA-256 (that
/// Atelier recorded) or MD5 (a single-part ETag).
fn same_content(size: u64, object: &(u64, Option<String>, String), sha: &str, md5: &str) -> bool {
    let (osize, osha, etag) = object;
    *osize == size
        && match osha {
            Some(s) => s == sha,
            None => etag == md5,
        }
}

/// Copies one item.
pub async fn copy_item(
    client: &Client,
    item: &Item,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, String> {
    match (&item.src, &item.dst) {
        (Loc::Local(p), Loc::Object(u)) => upload(client, p, u, item.size, opts, progress).await,
        (Loc::Object(u), Loc::Local(p)) => {
            download(client, u, Dest::Path(p), item.size, opts, progress).await
        }
        (Loc::Object(s), Loc::Object(d)) => copy_object(client, s, d, item.size, progress).await,
        (Loc::Local(_), Loc::Local(_)) => Err("local to local copies are not handled".into()),
    }
}

/// Uploads one local file to `u` (in parts when large), or skips it when the object already
/// holds the same content.
pub async fn upload(
    client: &Client,
    path: &Path,
    u: &ObjectUri,
    size: u64,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, String> {
    let (sha, md5) = local_digests(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if let Some(existing) = head(client, u).await?
        && same_content(size, &existing, &sha, &md5)
    {
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(Outcome::Skipped);
    }
    if size < opts.multipart_threshold {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        client
            .put_object()
            .bucket(&u.bucket)
            .key(&u.key)
            .metadata(SHA256_META, &sha)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error(&e, &format!("writing {u}")))?;
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(Outcome::Copied);
    }
    let created = client
        .create_multipart_upload()
        .bucket(&u.bucket)
        .key(&u.key)
        .metadata(SHA256_META, &sha)
        .send()
        .await
        .map_err(|e| s3_error(&e, &format!("starting the upload of {u}")))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let part_size = opts
        .part_size
        .max(size.div_ceil(10_000))
        .max(5 * 1024 * 1024);
    let parts = size.div_ceil(part_size);
    let file = Arc::new(
        std::fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
    );
    let result: Result<Vec<CompletedPart>, String> = futures_util::stream::iter(0..parts)
        .map(|i| {
            let file = file.clone();
            let upload_id = upload_id.clone();
            async move {
                let offset = i * part_size;
                let len = part_size.min(size - offset) as usize;
                let data = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, offset).map(|_| buf)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
                let out = client
                    .upload_part()
                    .bucket(&u.bucket)
                    .key(&u.key)
                    .upload_id(&upload_id)
                    .part_number((i + 1) as i32)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map_err(|e| s3_error(&e, &format!("writing part {} of {u}", i + 1)))?;
                progress.bytes.fetch_add(len as u64, Ordering::Relaxed);
                Ok(CompletedPart::builder()
                    .part_number((i + 1) as i32)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            }
        })
        .buffered(opts.jobs.max(1))
        .try_collect()
        .await;
    let parts = match result {
        Ok(p) => p,
        Err(e) => {
            let _ = client
                .abort_multipart_upload()
                .bucket(&u.bucket)
                .key(&u.key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
    };
    client
        .complete_multipart_upload()
        .bucket(&u.bucket)
        .key(&u.key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| s3_error(&e, &format!("finishing the upload of {u}")))?;
    Ok(Outcome::Copied)
}

/// Why [`upload_stream`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("more than {0} bytes")]
    TooLarge(u64),
    /// The bytes could not be read from their source (the client's request).
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Store(String),
}

/// Writes what `chunks` yields to `u` as it arrives, holding at most one part
/// (`part_size`, at least 5 MiB as S3 asks) in memory and nothing on disk: one PutObject
/// when everything fits in one part (with its SHA-256 recorded), else a multipart upload,
/// aborted on any failure so nothing half-written stays. More than `max_bytes` is refused.
/// Returns the size written.
pub async fn upload_stream<S>(
    client: &Client,
    u: &ObjectUri,
    mut chunks: S,
    part_size: usize,
    max_bytes: u64,
) -> Result<u64, StreamError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin,
{
    let part_size = part_size.max(5 * 1024 * 1024);
    let mut buf = bytes::BytesMut::new();
    let mut total = 0u64;
    let mut sha = Sha256::new();
    let mut upload: Option<String> = None;
    let mut parts: Vec<CompletedPart> = Vec::new();
    let result: Result<(), StreamError> = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(StreamError::Source)?;
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(StreamError::TooLarge(max_bytes));
            }
            sha.update(&chunk);
            buf.extend_from_slice(&chunk);
            while buf.len() >= part_size {
                let id = match &upload {
                    Some(id) => id.clone(),
                    None => upload.insert(start_multipart(client, u).await?).clone(),
                };
                let part = buf.split_to(part_size).freeze();
                put_part(client, u, &id, &mut parts, part).await?;
            }
        }
        match &upload {
            None => {
                client
                    .put_object()
                    .bucket(&u.bucket)
                    .key(&u.key)
                    .metadata(SHA256_META, hex_digest(sha.clone().finalize()))
                    .body(ByteStream::from(std::mem::take(&mut buf).freeze()))
                    .send()
                    .await
                    .map_err(|e| StreamError::Store(s3_error(&e, &format!("writing {u}"))))?;
            }
            Some(id) => {
                if !buf.is_empty() {
                    let last = std::mem::take(&mut buf).freeze();
                    put_part(client, u, id, &mut parts, last).await?;
                }
                client
                    .complete_multipart_upload()
                    .bucket(&u.bucket)
                    .key(&u.key)
                    .upload_id(id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(std::mem::take(&mut parts)))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        StreamError::Store(s3_error(&e, &format!("finishing the upload of {u}")))
                    })?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        if let Some(id) = upload {
            let _ = client
                .abort_multipart_upload()
                .bucket(&u.bucket)
                .key(&u.key)
                .upload_id(id)
                .send()
                .await;
        }
        return Err(e);
    }
    Ok(total)
}

async fn start_multipart(client: &Client, u: &ObjectUri) -> Result<String, StreamError> {
    let created = client
        .create_multipart_upload()
        .bucket(&u.bucket)
        .key(&u.key)
        .send()
        .await
        .map_err(|e| StreamError::Store(s3_error(&e, &format!("starting the upload of {u}"))))?;
    Ok(created.upload_id().unwrap_or_default().to_string())
}

async fn put_part(
    client: &Client,
    u: &ObjectUri,
    upload_id: &str,
    parts: &mut Vec<CompletedPart>,
    part: bytes::Bytes,
) -> Result<(), StreamError> {
    let number = parts.len() as i32 + 1;
    let out = client
        .upload_part()
        .bucket(&u.bucket)
        .key(&u.key)
        .upload_id(upload_id)
        .part_number(number)
        .body(ByteStream::from(part))
        .send()
        .await
        .map_err(|e| StreamError::Store(s3_error(&e, &format!("writing part {number} of {u}"))))?;
    parts.push(
        CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build(),
    );
    Ok(())
}

/// Where [`download`] writes a file.
#[derive(Debug, Clone, Copy)]
pub enum Dest<'a> {
    /// A path of the caller's own (`atelier obs cp` on the user's files): resolved as any
    /// program would, links included; missing folders are made.
    Path(&'a Path),
    /// The file `name` in a directory opened through [`crate::confined`] (a notebook's work
    /// dir, which the notebook writes): nothing there is followed, the partial file is a new
    /// one given to `owner` through its descriptor and renamed within that directory.
    Confined {
        dir: &'a Dir,
        name: &'a OsStr,
        owner: confined::Owner,
    },
}

impl Dest<'_> {
    /// Where it is, for messages.
    fn shown(&self) -> PathBuf {
        match self {
            Dest::Path(p) => p.to_path_buf(),
            Dest::Confined { dir, name, .. } => dir.path().join(name),
        }
    }

    /// The partial file's name beside it.
    fn partial_name(&self) -> OsString {
        let name = match self {
            Dest::Path(p) => p.file_name().unwrap_or_default(),
            Dest::Confined { name, .. } => name,
        };
        let mut partial = OsString::from(".");
        partial.push(name);
        partial.push(".atelier-partial");
        partial
    }

    /// The size of the regular file already there, if one is (a link is not followed).
    fn existing_size(&self) -> Option<u64> {
        match self {
            Dest::Path(p) => std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            Dest::Confined { dir, name, .. } => match dir.file_type(name) {
                Ok(Some((FileType::RegularFile, size))) => Some(size),
                _ => None,
            },
        }
    }

    fn open_existing(&self) -> std::io::Result<std::fs::File> {
        match self {
            Dest::Path(p) => std::fs::File::open(p),
            Dest::Confined { dir, name, .. } => dir.open_read(name),
        }
    }

    /// Makes the partial file (empty) and returns it with its path for messages.
    fn create_partial(&self) -> Result<(std::fs::File, PathBuf), String> {
        let partial = self.partial_name();
        match self {
            Dest::Path(p) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                let path = p.with_file_name(&partial);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((f, path))
            }
            Dest::Confined { dir, owner, .. } => {
                let shown = dir.path().join(&partial);
                // What an interrupted landing left goes; a link there is the notebook's
                // doing and is refused, named.
                match dir.file_type(&partial).map_err(|e| e.to_string())? {
                    Some((FileType::Symlink, _)) => {
                        return Err(format!(
                            "{} is a symbolic link, which is not followed here",
                            shown.display()
                        ));
                    }
                    Some((FileType::RegularFile, _)) => {
                        dir.remove_file(&partial).map_err(|e| e.to_string())?;
                    }
                    Some(_) => {
                        return Err(format!("{} is in the way", shown.display()));
                    }
                    None => {}
                }
                let f = dir
                    .create_new(&partial, 0o644, *owner)
                    .map_err(|e| e.to_string())?;
                Ok((f, shown))
            }
        }
    }

    fn remove_partial(&self) {
        let partial = self.partial_name();
        match self {
            Dest::Path(p) => {
                let _ = std::fs::remove_file(p.with_file_name(&partial));
            }
            Dest::Confined { dir, .. } => {
                let _ = dir.remove_file(&partial);
            }
        }
    }

    /// Puts the complete partial file in place (replacing what is there; a link there is
    /// replaced, not followed).
    fn commit(&self) -> Result<(), String> {
        let partial = self.partial_name();
        match self {
            Dest::Path(p) => std::fs::rename(p.with_file_name(&partial), p)
                .map_err(|e| format!("{}: {e}", p.display())),
            Dest::Confined { dir, name, .. } => {
                dir.rename(&partial, name).map_err(|e| e.to_string())
            }
        }
    }
}

/// Downloads one object to `dest` (through `.NAME.atelier-partial`, checked against the
/// object's recorded SHA-256), or skips it when `dest` already holds the same content.
pub async fn download(
    client: &Client,
    u: &ObjectUri,
    dest: Dest<'_>,
    size: u64,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, String> {
    let object = head(client, u)
        .await?
        .ok_or_else(|| format!("{u}: no such object"))?;
    if dest.existing_size() == Some(object.0) {
        let read = |e: String| format!("reading {}: {e}", dest.shown().display());
        let f = dest.open_existing().map_err(|e| read(e.to_string()))?;
        let (sha, md5) = file_digests(f).await.map_err(read)?;
        if same_content(object.0, &object, &sha, &md5) {
            progress.bytes.fetch_add(size, Ordering::Relaxed);
            return Ok(Outcome::Skipped);
        }
    }
    let size = object.0;
    // Written beside the target and renamed when complete: an interrupted download never
    // leaves a short file under the real name.
    let (file, partial) = dest.create_partial()?;
    let file = Arc::new(file);
    if let Err(e) = file.set_len(size) {
        dest.remove_partial();
        return Err(format!("{}: {e}", partial.display()));
    }
    let part_size = if size < opts.multipart_threshold {
        size.max(1)
    } else {
        opts.part_size
    };
    let parts = size.div_ceil(part_size);
    // Parts arrive `jobs` at a time but are handed on in order, so the SHA-256 is computed
    // as the bytes come (no second read of the file to check it).
    let mut parts_in_order = futures_util::stream::iter(0..parts)
        .map(|i| {
            let file = file.clone();
            let partial = partial.clone();
            async move {
                let offset = i * part_size;
                let end = (offset + part_size).min(size) - 1;
                let mut req = client.get_object().bucket(&u.bucket).key(&u.key);
                if parts > 1 {
                    req = req.range(format!("bytes={offset}-{end}"));
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| s3_error(&e, &format!("reading {u}")))?;
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| format!("reading {u}: {e}"))?
                    .into_bytes();
                if data.len() as u64 != end + 1 - offset {
                    return Err(format!(
                        "{u}: the store sent {} bytes of {}",
                        data.len(),
                        end + 1 - offset
                    ));
                }
                let written = data.clone();
                tokio::task::spawn_blocking(move || file.write_all_at(&written, offset))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{}: {e}", partial.display()))?;
                progress
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(data)
            }
        })
        .buffered(opts.jobs.max(1));
    let mut sha = Sha256::new();
    let mut failed = None;
    while let Some(part) = parts_in_order.next().await {
        match part {
            Ok(data) => sha.update(&data),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(parts_in_order);
    if let Some(e) = failed {
        dest.remove_partial();
        return Err(e);
    }
    if let Err(e) = file.sync_all() {
        dest.remove_partial();
        return Err(format!("{}: {e}", partial.display()));
    }
    // Objects Atelier uploaded carry their SHA-256: check what arrived.
    if let Some(want) = &object.1
        && &hex_digest(sha.finalize()) != want
    {
        dest.remove_partial();
        return Err(format!(
            "{u}: the downloaded bytes do not match the object's recorded SHA-256"
        ));
    }
    if let Err(e) = dest.commit() {
        dest.remove_partial();
        return Err(e);
    }
    Ok(Outcome::Copied)
}

async fn copy_object(
    client: &Client,
    s: &ObjectUri,
    d: &ObjectUri,
    size: u64,
    progress: &Progress,
) -> Result<Outcome, String> {
    let source = head(client, s)
        .await?
        .ok_or_else(|| format!("{s}: no such object"))?;
    if let Some(existing) = head(client, d).await?
        && existing.0 == source.0
        && match (&existing.1, &source.1) {
            (Some(a), Some(b)) => a == b,
            _ => !existing.2.is_empty() && existing.2 == source.2,
        }
    {
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(Outcome::Skipped);
    }
    const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
    if source.0 > MAX_SINGLE_COPY {
        return Err(format!(
            "{s}: objects over 5 GiB cannot be copied store-side in one request; download and upload it instead"
        ));
    }
    let copy_source = format!("{}/{}", s.bucket, crate::urls::encode_path(&s.key));
    client
        .copy_object()
        .bucket(&d.bucket)
        .key(&d.key)
        .copy_source(copy_source)
        .send()
        .await
        .map_err(|e| s3_error(&e, &format!("copying {s} to {d}")))?;
    progress.bytes.fetch_add(size, Ordering::Relaxed);
    Ok(Outcome::Copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(matches!(
            Loc::parse("obs://bkt/a/").unwrap(),
            Loc::Object(_)
        ));
        assert!(Loc::parse("http://x/y").is_err());
        let Loc::Local(p) = Loc::parse("./data/").unwrap() else {
            panic!()
        };
        assert!(
            p.is_absolute() && p.to_string_lossy().ends_with("/data/"),
            "{p:?}"
        );
        assert_eq!(
            last_name(&Loc::parse("obs://bkt/t/data/").unwrap()).as_deref(),
            Some("data")
        );
        assert_eq!(last_name(&Loc::parse("obs://bkt/").unwrap()), None);
        let dst = Loc::parse("obs://bkt/copy").unwrap();
        assert_eq!(dst.join("a/b.txt").to_string(), "obs://bkt/copy/a/b.txt");
    }

    #[test]
    fn content_is_the_same_by_size_and_checksum() {
        let with_sha = (3, Some("s".to_string()), "etag".to_string());
        assert!(same_content(3, &with_sha, "s", "m"));
        assert!(!same_content(3, &with_sha, "other", "etag"));
        let etag_only = (3, None, "m".to_string());
        assert!(same_content(3, &etag_only, "s", "m"));
        assert!(!same_content(4, &etag_only, "s", "m"));
    }

    /// The partial file of a landing in a notebook's directory: a link planted at its name
    /// is refused and named, a stale one (even a hard link to a file elsewhere) is replaced
    /// by a new file, never written through; the finished file replaces a link at the
    /// target's name instead of following it.
    #[test]
    fn confined_landings_write_only_new_files_in_their_directory() {
        let base = std::env::temp_dir().join(format!("landing-{}", uuid::Uuid::new_v4()));
        let (work, outside) = (base.join("work"), base.join("outside"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "the host's").unwrap();
        let dir = Dir::open(&work).unwrap().shown_as("/home/ma-user/work");
        let dest = |name: &'static str| Dest::Confined {
            dir: &dir,
            name: OsStr::new(name),
            owner: None,
        };

        std::os::unix::fs::symlink(outside.join("victim"), work.join(".a.atelier-partial"))
            .unwrap();
        let e = dest("a").create_partial().unwrap_err();
        assert_eq!(
            e,
            "/home/ma-user/work/.a.atelier-partial is a symbolic link, which is not followed here"
        );

        std::fs::hard_link(outside.join("victim"), work.join(".b.atelier-partial")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), work.join("b")).unwrap();
        let (mut f, shown) = dest("b").create_partial().unwrap();
        assert_eq!(shown, Path::new("/home/ma-user/work/.b.atelier-partial"));
        std::io::Write::write_all(&mut f, b"landed").unwrap();
        drop(f);
        dest("b").commit().unwrap();
        assert_eq!(std::fs::read(work.join("b")).unwrap(), b"landed");
        assert!(!work.join(".b.atelier-partial").exists());
        assert_eq!(
            std::fs::read(outside.join("victim")).unwrap(),
            b"the host's"
        );
        assert_eq!(dest("b").existing_size(), Some(6));
        assert_eq!(dest("a").existing_size(), None);

        std::fs::create_dir(work.join(".c.atelier-partial")).unwrap();
        let e = dest("c").create_partial().unwrap_err();
        assert!(e.contains("in the way"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
