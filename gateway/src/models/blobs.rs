//! The gateway's model store: every imported file kept once by its SHA-256, and each
//! version's `model/` folder as a tree of hard links to those files.
//!
//! ```text
//! <data>/models/staging/<version id>/model/…   an import in progress (the gateway's own)
//! <data>/models/blobs/<sha256>                 content, read-only, one per digest
//! <data>/models/trees/<version id>/model/…     hard links into blobs/, read-only
//! ```
//!
//! Invariant: a tree is complete or absent (built beside, renamed into place), and a blob
//! is removed only when no tree links it (its link count is 1), under the store's lock, so
//! a service never reads a file that changed or vanished under it. Nothing here reads a
//! path a user can write: sources are copied into `staging/` first.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the version's folder (`model/config.json`), `/`-separated.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// The store under `<data>/models`.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    root: PathBuf,
}

impl ModelFiles {
    pub fn new(data_dir: &Path) -> ModelFiles {
        ModelFiles {
            root: data_dir.join("models"),
        }
    }

    /// Where an import of `version_id` copies its files (made empty).
    pub fn fresh_staging(&self, version_id: &str) -> io::Result<PathBuf> {
        let dir = self.root.join("staging").join(version_id);
        remove_tree(&dir)?;
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Drops an import's staging folder (done or failed).
    pub fn drop_staging(&self, version_id: &str) -> io::Result<()> {
        remove_tree(&self.root.join("staging").join(version_id))
    }

    /// The version's folder (`…/trees/<id>`, holding `model/`), if it was built.
    pub fn tree(&self, version_id: &str) -> Option<PathBuf> {
        let t = self.root.join("trees").join(version_id);
        t.is_dir().then_some(t)
    }

    /// Moves the staged files into the store by digest and builds the version's tree.
    /// Blocking; the caller holds the store's lock.
    pub fn commit(&self, version_id: &str, staging: &Path) -> io::Result<Vec<Entry>> {
        let blobs = self.root.join("blobs");
        let trees = self.root.join("trees");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&trees)?;
        let files = walk(staging)?;
        let partial = trees.join(format!(".{version_id}.partial"));
        remove_tree(&partial)?;
        let mut entries = Vec::with_capacity(files.len());
        for rel in files {
            let src = staging.join(&rel);
            let (sha256, size) = digest(&src)?;
            let blob = blobs.join(&sha256);
            if !blob.exists() {
                fs::set_permissions(&src, fs::Permissions::from_mode(0o444))?;
                fs::rename(&src, &blob)?;
            }
            let dst = partial.join(&rel);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::hard_link(&blob, &dst)?;
            entries.push(Entry {
                path: rel,
                sha256,
                size,
            });
        }
        fs::create_dir_all(&partial)?;
        let tree = trees.join(version_id);
        remove_tree(&tree)?;
        fs::rename(&partial, &tree)?;
        read_only_dirs(&tree)?;
        Ok(entries)
    }

    /// Removes a version's tree and every blob no other tree links. Blocking; the caller
    /// holds the store's lock.
    pub fn remove(&self, version_id: &str) -> io::Result<()> {
        let tree = self.root.join("trees").join(version_id);
        let entries = if tree.is_dir() {
            walk(&tree)?
        } else {
            Vec::new()
        };
        let mut digests = Vec::new();
        for rel in &entries {
            if let Ok(m) = fs::symlink_metadata(tree.join(rel)) {
                digests.push((m.dev(), m.ino()));
            }
        }
        remove_tree(&tree)?;
        self.drop_staging(version_id)?;
        let blobs = self.root.join("blobs");
        let Ok(dir) = fs::read_dir(&blobs) else {
            return Ok(());
        };
        for b in dir {
            let b = b?;
            let m = b.metadata()?;
            if m.nlink() == 1 && digests.contains(&(m.dev(), m.ino())) {
                fs::remove_file(b.path())?;
            }
        }
        Ok(())
    }
}

/// SHA-256 (hex) and size of a file.
fn digest(path: &Path) -> io::Result<(String, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

/// The regular files under `root` (relative `/` paths, sorted); anything else is an error
/// (staging holds only what the import wrote).
fn walk(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().into_string().map_err(|n| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a name that is not UTF-8", Path::new(&n).display()),
                )
            })?;
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push((e.path(), rel));
            } else if t.is_file() {
                out.push(rel);
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{rel}: neither a file nor a folder"),
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Folders of a finished tree: read and enter only.
fn read_only_dirs(root: &Path) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
        dirs.push(d);
    }
    for d in dirs {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

/// Removes a tree this store made (folders made writable again first); absent is fine.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = remove_tree(&self.0);
        }
    }

    fn stage(store: &ModelFiles, id: &str, files: &[(&str, &str)]) -> PathBuf {
        let s = store.fresh_staging(id).unwrap();
        for (p, body) in files {
            let f = s.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, body).unwrap();
        }
        s
    }

    #[test]
    fn versions_share_blobs_and_a_blob_goes_with_its_last_tree() {
        let tmp = Tmp(std::env::temp_dir().join(format!("atelier-mf-{}", uuid::Uuid::new_v4())));
        let store = ModelFiles::new(&tmp.0);
        let s1 = stage(
            &store,
            "v1",
            &[("model/config.json", "{}"), ("model/w.onnx", "weights-1")],
        );
        let e1 = store.commit("v1", &s1).unwrap();
        store.drop_staging("v1").unwrap();
        let s2 = stage(
            &store,
            "v2",
            &[("model/config.json", "{}"), ("model/w.onnx", "weights-2")],
        );
        let e2 = store.commit("v2", &s2).unwrap();
        store.drop_staging("v2").unwrap();
        assert_eq!(e1[0].path, "model/config.json");
        assert_eq!(e1[0].sha256, e2[0].sha256, "same content, one blob");
        assert_ne!(e1[1].sha256, e2[1].sha256);
        let blobs = || fs::read_dir(tmp.0.join("models/blobs")).unwrap().count();
        assert_eq!(blobs(), 3);
        let t1 = store.tree("v1").unwrap();
        assert_eq!(
            fs::read_to_string(t1.join("model/w.onnx")).unwrap(),
            "weights-1"
        );
        let mode = fs::metadata(t1.join("model/w.onnx"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "read-only");

        store.remove("v1").unwrap();
        assert!(store.tree("v1").is_none());
        assert_eq!(
            blobs(),
            2,
            "v1's own weights went, the shared config stayed"
        );
        let t2 = store.tree("v2").unwrap();
        assert_eq!(
            fs::read_to_string(t2.join("model/config.json")).unwrap(),
            "{}"
        );
        store.remove("v2").unwrap();
        assert_eq!(blobs(), 0);
    }

    #[test]
    fn a_link_in_staging_is_refused() {
        let tmp = Tmp(std::env::temp_dir().join(format!("atelier-mf-{}", uuid::Uuid::new_v4())));
        let store = ModelFiles::new(&tmp.0);
        let s = stage(&store, "v", &[("model/config.json", "{}")]);
        std::os::unix::fs::symlink("/etc/passwd", s.join("model/p")).unwrap();
        let err = store.commit("v", &s).unwrap_err();
        assert!(err.to_string().contains("model/p"), "{err}");
        assert!(store.tree("v").is_none());
    }
}
