//! One import: the source checked when the request comes (`resolve`), then, in the
//! background (`run`), its files copied into the version's staging folder (the gateway's
//! own), the package's layout and `config.json` checked, and the files moved into the
//! model store by digest.
//!
//! The sources a user controls are read without trusting them: object storage through
//! the user's own connection, with the listing checked (names, count, sizes) before any
//! byte is copied; a notebook's folder through `confined` (no link followed, no `..`, only
//! regular files, bounded while it is walked).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_inference::config::{ModelConfig, ModelType};
use atelier_inference::package::{self, PackageLayout};

use super::{Inner, ModelError, Source, SourceSpec};
use crate::auth::Principal;
use crate::auth::authz::{self, Access};
use crate::confined::Dir;
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::store::models as rows;
use crate::store::notebooks;
use crate::store::resource_events::{Catalogue, ModelEvent};
use crate::store::storage_connections;
use rustix::fs::FileType;

/// What an import may take.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub package: package::PackageLimits,
    /// The most one file may hold.
    pub max_file: u64,
    /// Entries a notebook folder may list per directory while it is walked.
    pub dir_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            package: package::PackageLimits::default(),
            max_file: package::MAX_FILE_BYTES,
            dir_entries: 100_000,
        }
    }
}

/// A finished import.
pub(super) struct Imported {
    pub manifest: super::Manifest,
    pub size: u64,
    /// The package's `config.json`, checked (none for an image).
    pub config: Option<ModelConfig>,
    /// An event of its own (an image: "Source image size calculated.").
    pub image_event: Option<ModelEvent>,
    /// The package's processor, registered with the plugin host.
    pub processor: Option<super::processor::ProcessorInfo>,
}

/// Why an import failed: the seed's event, its values, and the whole story.
pub(super) struct Failure {
    pub event: ModelEvent,
    pub values: Vec<String>,
    pub message: String,
}

impl Failure {
    fn new(event: ModelEvent, message: impl Into<String>) -> Failure {
        Failure {
            event,
            values: Vec::new(),
            message: message.into(),
        }
    }

    fn with(mut self, value: impl Into<String>) -> Failure {
        self.values.push(value.into());
        self
    }

    fn internal(e: impl std::fmt::Display) -> Failure {
        tracing::error!(error = %e, "model import failed on the gateway's side");
        Failure::new(
            ModelEvent::ImportFailed,
            "the gateway failed to store the model's files; see its log",
        )
    }
}

/// The work dir as notebooks see it; a folder may be named under it or relative to it.
const WORK_INSIDE: &str = "/home/ma-user/work";

/// Checks a request's source for the caller and names it as stored.
pub(super) async fn resolve(
    inner: &Inner,
    who: &Principal,
    spec: &SourceSpec,
) -> Result<Source, ModelError> {
    match spec {
        SourceSpec::Obs { connection, path } => {
            if path.contains(char::is_whitespace) {
                return Err(ModelError::Invalid(format!(
                    "source.path: {path:?} holds a space; the seed's rule: a model's path must not contain spaces"
                )));
            }
            let uri = ObjectUri::parse(path)
                .map_err(|e| ModelError::Invalid(format!("source.path: {e}")))?;
            let mut conn = inner.store.pool.acquire().await?;
            let c = storage_connections::by_name(&mut conn, &who.user_id, connection)
                .await?
                .ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "source.connection: you have no storage connection named {connection:?} (atelier storage list)"
                    ))
                })?;
            Ok(Source::Obs {
                connection: c.name,
                connection_id: c.id,
                path: format!("obs://{}/{}", uri.bucket, uri.dir_prefix()),
            })
        }
        SourceSpec::Notebook { notebook, path } => {
            let mut conn = inner.store.pool.acquire().await?;
            let row = notebooks::get(&mut conn, notebook).await?.ok_or_else(|| {
                ModelError::Invalid(format!("source.notebook: no notebook {notebook}"))
            })?;
            // Reading a notebook's files is opening it: its owner only.
            let nb = authz::authorize(who, row, Access::Open)
                .map_err(|_| {
                    ModelError::Invalid(format!("source.notebook: no notebook {notebook}"))
                })?
                .into_notebook();
            let rel = work_relative(path).map_err(ModelError::Invalid)?;
            Ok(Source::Notebook {
                notebook_id: nb.id,
                path: rel,
            })
        }
        SourceSpec::Image { image } => {
            crate::images::check_reference(image)
                .map_err(|e| ModelError::Invalid(format!("source.image: {}", e.message)))?;
            Ok(Source::Image {
                image: image.clone(),
            })
        }
    }
}

/// A folder of the work dir as a relative path ("" for the work dir itself): under
/// `/home/ma-user/work` or relative to it, plain names only.
fn work_relative(path: &str) -> Result<String, String> {
    let rel = match path.strip_prefix(WORK_INSIDE) {
        Some(r) if r.is_empty() || r.starts_with('/') => r.trim_start_matches('/'),
        Some(_) | None if path.starts_with('/') => {
            return Err(format!(
                "source.path: {path:?} is outside the work dir; name a folder under {WORK_INSIDE}"
            ));
        }
        _ => path,
    };
    let rel = rel.trim_end_matches('/');
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains('\0') {
            return Err(format!(
                "source.path: {path:?}: plain folder names only (no . or ..)"
            ));
        }
    }
    Ok(rel
        .split('/')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/"))
}

/// An image model's config (from the request): `model_type` Image, a health check on
/// `/health` (the custom engine contract), no dependencies.
pub(super) fn check_image_config(config: Option<&ModelConfig>) -> Result<(), String> {
    let Some(c) = config else {
        return Err(
            "config: an image model needs its config.json in the request (model_type \"Image\", apis, health on /health)".into(),
        );
    };
    if !c.model_type().is_image() {
        return Err(format!(
            "config.model_type: an image model's is \"Image\" (got \"{}\")",
            c.model_type()
        ));
    }
    if c.dependencies_misplaced() {
        return Err(format!(
            "config.dependencies: {}",
            ModelEvent::DependenciesOnImage.text()
        ));
    }
    if !c.health_url_ok_for_custom_engine() {
        return Err(format!(
            "config.health: {}",
            ModelEvent::HealthUrl.fill(&["an HTTP check of /health"])
        ));
    }
    Ok(())
}

/// Checks a package source before anything is created: its listing (the layout, names,
/// count, sizes) and its `config.json` (a 400 naming the field). The import checks its own
/// copy again: the source may change in between.
pub(super) async fn preflight(inner: &Inner, source: &Source) -> Result<(), ModelError> {
    let (listing, config) = match source {
        Source::Image { .. } => return Ok(()),
        Source::Obs {
            connection_id,
            path,
            ..
        } => {
            let (client, uri, prefix) = obs_client(inner, connection_id, path)
                .await
                .map_err(|f| ModelError::Invalid(format!("source: {}", f.message)))?;
            let listing = obs_listing(&client, &uri, &prefix)
                .await
                .map_err(|f| ModelError::Invalid(format!("source: {}", f.message)))?;
            let layout = PackageLayout::check(&listing, &inner.limits.package)
                .map_err(|e| ModelError::Invalid(e.to_string()))?;
            let key = format!("{prefix}{}", layout.config());
            let bytes = obs_small(&client, &uri.bucket, &key, MAX_CONFIG_READ)
                .await
                .map_err(|e| ModelError::Invalid(format!("source: {e}")))?;
            (listing, bytes)
        }
        Source::Notebook { notebook_id, path } => {
            let backend = inner.backend.clone();
            let limits = inner.limits.clone();
            let (nb, rel) = (notebook_id.clone(), path.clone());
            tokio::task::spawn_blocking(move || -> Result<_, String> {
                let (work, inside) = work_dir(&*backend, &nb, &rel)?;
                let listing = walk_notebook(&work, &rel, &inside, &limits, None)?;
                let layout =
                    PackageLayout::check(&listing, &limits.package).map_err(|e| e.to_string())?;
                let config = read_small(&work, &rel, layout.config(), MAX_CONFIG_READ)
                    .map_err(|e| format!("{}: {e}", inside.join(layout.config()).display()))?;
                Ok((listing, config))
            })
            .await
            .map_err(anyhow::Error::from)?
            .map_err(ModelError::Invalid)?
        }
    };
    drop(listing);
    ModelConfig::parse(&config).map_err(|e| ModelError::Invalid(e.to_string()))?;
    Ok(())
}

/// `config.json` is read whole up to this (the parser refuses bigger ones).
const MAX_CONFIG_READ: u64 = 1024 * 1024;

/// Imports version `version_id` from its source.
pub(super) async fn run(inner: &Inner, version_id: &str) -> Result<Imported, Failure> {
    let mut conn = inner
        .store
        .pool
        .acquire()
        .await
        .map_err(Failure::internal)?;
    let v = rows::version_by_id(&mut conn, version_id)
        .await
        .map_err(Failure::internal)?
        .ok_or_else(|| Failure::new(ModelEvent::ImportFailed, "the version is gone"))?;
    drop(conn);
    let source: Source = serde_json::from_str(&v.source).map_err(Failure::internal)?;
    let settings: super::Settings = serde_json::from_str(&v.settings).map_err(Failure::internal)?;
    if let Source::Image { image } = &source {
        return match inner.backend.ensure_image(image).await {
            Ok(()) => Ok(Imported {
                manifest: Vec::new(),
                size: 0,
                config: settings.config,
                image_event: Some(ModelEvent::ImageChecked),
                processor: None,
            }),
            Err(e) => Err(Failure::new(ModelEvent::ImageMissing, e.to_string())),
        };
    }
    let staging = inner
        .files
        .fresh_staging(version_id)
        .map_err(Failure::internal)?;
    match &source {
        Source::Obs {
            connection_id,
            path,
            ..
        } => from_obs(inner, connection_id, path, &staging).await?,
        Source::Notebook { notebook_id, path } => {
            let backend = inner.backend.clone();
            let limits = inner.limits.clone();
            let (nb, rel, dst) = (notebook_id.clone(), path.clone(), staging.clone());
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                let (work, inside) = work_dir(&*backend, &nb, &rel)?;
                walk_notebook(&work, &rel, &inside, &limits, Some(&dst))?;
                Ok(())
            })
            .await
            .map_err(Failure::internal)?
            .map_err(|e| Failure::new(ModelEvent::ImportFailed, e))?
        }
        Source::Image { .. } => {}
    }
    let (config, layout) = check_staged(&staging, &inner.limits)?;
    let processor = match layout.processor() {
        Some(p) => Some(
            super::processor::register(
                &inner.host,
                &inner.host_settings,
                &staging.join(&p.component),
                p.manifest.as_ref().map(|m| staging.join(m)).as_deref(),
            )
            .await
            .map_err(|e| {
                Failure::new(ModelEvent::InvalidConfig, e).with("customize_service.wasm")
            })?,
        ),
        None => None,
    };
    let _held = inner.files_lock.lock().await;
    let files = inner.files.clone();
    let id = version_id.to_string();
    let manifest = tokio::task::spawn_blocking(move || files.commit(&id, &staging))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    let size = manifest.iter().map(|e| e.size).sum();
    Ok(Imported {
        manifest,
        size,
        config: Some(config),
        image_event: None,
        processor,
    })
}

/// The staged package: its layout, then its `config.json` and what the seed refuses in it.
fn check_staged(staging: &Path, limits: &Limits) -> Result<(ModelConfig, PackageLayout), Failure> {
    let (listing, _) = transfer::walk(staging).map_err(Failure::internal)?;
    let layout =
        PackageLayout::check(&listing, &limits.package).map_err(|e| package_failure(&e))?;
    let text = std::fs::read(staging.join(layout.config())).map_err(Failure::internal)?;
    let config = ModelConfig::parse(&text)
        .map_err(|e| {
            let field = e.field().unwrap_or("config.json").to_string();
            Failure::new(ModelEvent::InvalidConfig, e.to_string()).with(field)
        })?
        .config;
    if config.swr_location_misplaced() {
        return Err(Failure::new(
            ModelEvent::SwrLocationNotImage,
            "config.json: swr_location is only for model_type Image",
        ));
    }
    if config.dependencies_misplaced() {
        return Err(Failure::new(
            ModelEvent::DependenciesOnImage,
            "config.json: dependencies are not installed into a custom image",
        ));
    }
    if config.model_type().is_image() && !config.health_url_ok_for_custom_engine() {
        return Err(Failure::new(
            ModelEvent::HealthUrl,
            "config.json: a custom engine's health check is an HTTP check of /health",
        )
        .with("/health"));
    }
    if config.model_type() == ModelType::Onnx {
        let onnx: Vec<_> = listing
            .iter()
            .filter(|(p, _)| p.ends_with(".onnx"))
            .map(|(p, _)| p.as_str())
            .collect();
        if onnx.len() != 1 {
            return Err(Failure::new(
                ModelEvent::ImportFailed,
                format!(
                    "an ONNX model's package holds exactly one .onnx file under model/; found {}",
                    if onnx.is_empty() {
                        "none".to_string()
                    } else {
                        onnx.join(", ")
                    }
                ),
            ));
        }
    }
    Ok((config, layout))
}

fn package_failure(e: &package::PackageError) -> Failure {
    match e {
        package::PackageError::FileTooLarge { path, .. } => {
            Failure::new(ModelEvent::FileTooLarge, e.to_string()).with(path.clone())
        }
        _ => Failure::new(ModelEvent::ImportFailed, e.to_string()),
    }
}

/// A client for the stored connection, the folder's URI and its key prefix.
async fn obs_client(
    inner: &Inner,
    connection_id: &str,
    path: &str,
) -> Result<(aws_sdk_s3::Client, ObjectUri, String), Failure> {
    let mut conn = inner
        .store
        .pool
        .acquire()
        .await
        .map_err(Failure::internal)?;
    let c = storage_connections::by_id(&mut conn, connection_id)
        .await
        .map_err(Failure::internal)?
        .ok_or_else(|| {
            Failure::new(
                ModelEvent::CopyFailed,
                "the storage connection the model is imported through is gone",
            )
        })?;
    drop(conn);
    let target = connections::target(&c, &inner.secrets).map_err(Failure::internal)?;
    let client = s3::client(&target, Duration::from_secs(60), 3);
    let uri = ObjectUri::parse(path).map_err(|e| Failure::new(ModelEvent::ImportFailed, e))?;
    let prefix = uri.dir_prefix();
    Ok((client, uri, prefix))
}

/// The files under the folder: (path relative to it, size); folder markers left out.
async fn obs_listing(
    client: &aws_sdk_s3::Client,
    uri: &ObjectUri,
    prefix: &str,
) -> Result<Vec<(String, u64)>, Failure> {
    let objects = transfer::list_all(client, &uri.bucket, prefix)
        .await
        .map_err(|e| Failure::new(ModelEvent::CopyFailed, e))?;
    Ok(objects
        .iter()
        .filter_map(|(k, size)| {
            let rel = k.strip_prefix(prefix)?;
            (!rel.is_empty() && !rel.ends_with('/')).then(|| (rel.to_string(), *size))
        })
        .collect())
}

/// A small object read whole (at most `max` bytes; more is an error).
async fn obs_small(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    max: u64,
) -> Result<Vec<u8>, String> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| transfer::s3_error(&e, &format!("reading obs://{bucket}/{key}")))?;
    if out.content_length().unwrap_or(0) as u64 > max {
        return Err(format!("obs://{bucket}/{key} is larger than {max} bytes"));
    }
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| format!("reading obs://{bucket}/{key}: {e}"))?
        .into_bytes();
    if body.len() as u64 > max {
        return Err(format!("obs://{bucket}/{key} is larger than {max} bytes"));
    }
    Ok(body.to_vec())
}

/// Copies the folder holding `model/` from object storage: listed and checked first.
async fn from_obs(
    inner: &Inner,
    connection_id: &str,
    path: &str,
    staging: &Path,
) -> Result<(), Failure> {
    let (client, uri, prefix) = obs_client(inner, connection_id, path).await?;
    let listing = obs_listing(&client, &uri, &prefix).await?;
    let layout =
        PackageLayout::check(&listing, &inner.limits.package).map_err(|e| package_failure(&e))?;
    let opts = transfer::Options::default();
    let progress = transfer::Progress::default();
    for f in layout.files() {
        let (rel, size) = (&f.path, &f.size);
        let object = ObjectUri {
            bucket: uri.bucket.clone(),
            key: format!("{prefix}{rel}"),
        };
        let dest = staging.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(Failure::internal)?;
        }
        transfer::download(
            &client,
            &object,
            transfer::Dest::Path(&dest),
            *size,
            &opts,
            &progress,
        )
        .await
        .map_err(|e| Failure::new(ModelEvent::CopyFailed, format!("{rel}: {e}")))?;
    }
    Ok(())
}

/// The notebook's work dir (opened through `confined`) and the folder as the notebook
/// names it.
fn work_dir(
    backend: &dyn crate::backends::Backend,
    notebook_id: &str,
    rel: &str,
) -> Result<(Dir, PathBuf), String> {
    let work = backend
        .files(notebook_id)
        .map_err(|e| format!("the notebook's work dir: {e}"))?
        .work()
        .map_err(|e| format!("the notebook's work dir: {e}"))?;
    let inside = if rel.is_empty() {
        PathBuf::from(&work.inside)
    } else {
        Path::new(&work.inside).join(rel)
    };
    Ok((work.dir, inside))
}

/// Walks the folder `rel` of a notebook's work dir through `confined`: regular files and
/// folders only (a link or a special file is refused by name), within the package limits
/// as it goes; copies each file below `copy_to` when given. Its listing: (path relative to
/// the folder, size).
fn walk_notebook(
    work: &Dir,
    rel: &str,
    inside: &Path,
    limits: &Limits,
    copy_to: Option<&Path>,
) -> Result<Vec<(String, u64)>, String> {
    let named = |e: io::Error| e.to_string();
    let folder = work.open_dir(Path::new(rel)).map_err(named)?;
    let model = OsStr::new("model");
    match folder.file_type(model).map_err(named)? {
        None => {
            return Err(format!(
                "the package has no model/ folder: {} holds none; point at the folder that holds model/",
                inside.display()
            ));
        }
        Some((FileType::Directory, _)) => {}
        Some(_) => {
            return Err(format!(
                "{} is a link or a file; a model package's model/ is a folder",
                inside.join("model").display()
            ));
        }
    }
    let top = folder.open_dir(Path::new("model")).map_err(named)?;
    let mut listing = Vec::new();
    let mut total = 0u64;
    let mut stack: Vec<(Dir, String)> = vec![(top, "model".to_string())];
    while let Some((dir, at)) = stack.pop() {
        for name in dir.entries(limits.dir_entries).map_err(named)? {
            let Some(name) = name.to_str().map(str::to_string) else {
                return Err(format!(
                    "{}: a name that is not UTF-8",
                    inside.join(&at).join(&name).display()
                ));
            };
            let shown = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            let Some((kind, size)) = dir.file_type(OsStr::new(&name)).map_err(named)? else {
                continue;
            };
            if kind == FileType::Directory {
                stack.push((dir.open_dir(Path::new(&name)).map_err(named)?, shown));
            } else if kind == FileType::RegularFile {
                total += size;
                if listing.len() >= limits.package.max_files
                    || total > limits.package.max_total_bytes
                {
                    return Err(format!(
                        "{} holds more than {} files or {} bytes: a model package is at most that",
                        inside.display(),
                        limits.package.max_files,
                        limits.package.max_total_bytes
                    ));
                }
                if let Some(dst) = copy_to {
                    copy_one(&dir, OsStr::new(&name), &dst.join(&shown), limits)
                        .map_err(|e| format!("{}: {e}", inside.join(&shown).display()))?;
                }
                listing.push((shown, size));
            } else {
                return Err(format!(
                    "{} is a link or a special file; a model package holds only files and folders",
                    inside.join(&shown).display()
                ));
            }
        }
    }
    listing.sort();
    Ok(listing)
}

/// A small file of the folder `rel` (its `config.json`), at most `max` bytes.
fn read_small(work: &Dir, rel: &str, file: &str, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let path = Path::new(rel).join(file);
    let (dir_rel, name) = (
        path.parent().unwrap_or(Path::new("")),
        path.file_name().unwrap_or_default(),
    );
    let f = work.open_dir(dir_rel)?.open_read(name)?;
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(out)
}

/// One regular file into staging, cut off as an error past the per-file limit (a file
/// growing while it is read).
fn copy_one(dir: &Dir, name: &OsStr, dst: &Path, limits: &Limits) -> io::Result<()> {
    use std::io::Read;
    let src = dir.open_read(name)?;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = std::fs::File::create(dst)?;
    let copied = io::copy(&mut src.take(limits.max_file + 1), &mut out)?;
    if copied > limits.max_file {
        return Err(io::Error::other(format!(
            "larger than the {} bytes one file may have",
            limits.max_file
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_folders_are_named_relative_to_it() {
        assert_eq!(work_relative("iris/").unwrap(), "iris");
        assert_eq!(work_relative("/home/ma-user/work/a/b").unwrap(), "a/b");
        assert_eq!(work_relative("/home/ma-user/work").unwrap(), "");
        assert_eq!(work_relative("a//b/").unwrap(), "a/b");
        for bad in [
            "../x",
            "a/../../etc",
            "/etc",
            "/home/ma-user/workx/a",
            "./a",
        ] {
            assert!(work_relative(bad).is_err(), "{bad}");
        }
    }
}
