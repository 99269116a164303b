//! Scoped object storage backed by a directory: a call sees only the prefixes it was
//! granted. (An S3 backend replaces the directory in the object storage issue.)

use std::path::{Path, PathBuf};

use crate::bindings::storage::{Grant as WitGrant, ObjectInfo, StorageError};
use crate::bindings::training::atelier::plugin::training_types::CheckpointInfo;

/// The prefixes one call may use, under one root directory.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub root: Option<PathBuf>,
    /// (prefix, writable). A prefix ends with `/` or is empty (the whole root).
    pub prefixes: Vec<(String, bool)>,
    pub max_object_bytes: u64,
}

/// Checks an object key: relative, `/`-separated, no empty, `.` or `..` parts.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.len() > 1024 {
        return Err("the path is longer than 1024 bytes".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path}: paths are relative to the storage root (no leading /)"
        ));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(format!("{path}: NUL and \\ are not allowed"));
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{path}: empty, . and .. parts are not allowed"));
        }
    }
    Ok(())
}

/// A prefix as grants hold it: empty or ending with `/`.
pub fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    check_path(prefix)?;
    Ok(if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    })
}

impl Grant {
    pub fn new(root: PathBuf, max_object_bytes: u64) -> Self {
        Grant {
            root: Some(root),
            prefixes: Vec::new(),
            max_object_bytes,
        }
    }

    pub fn allow(&mut self, prefix: &str, writable: bool) -> Result<(), String> {
        let p = normalize_prefix(prefix)?;
        if let Some(existing) = self.prefixes.iter_mut().find(|(q, _)| *q == p) {
            existing.1 |= writable;
        } else {
            self.prefixes.push((p, writable));
        }
        Ok(())
    }

    pub fn grants(&self) -> Vec<WitGrant> {
        self.prefixes
            .iter()
            .map(|(p, w)| WitGrant {
                prefix: p.clone(),
                writable: *w,
            })
            .collect()
    }

    fn allowed(&self, path: &str, write: bool) -> bool {
        self.prefixes
            .iter()
            .any(|(p, w)| path.starts_with(p.as_str()) && (*w || !write))
    }

    fn resolve(&self, path: &str, write: bool) -> Result<PathBuf, StorageError> {
        check_path(path).map_err(StorageError::InvalidPath)?;
        let Some(root) = &self.root else {
            return Err(StorageError::Denied(format!(
                "{path}: this call was granted no storage"
            )));
        };
        if !self.allowed(path, write) {
            let what = if write { "write" } else { "read" };
            return Err(StorageError::Denied(format!(
                "{path}: this call may not {what} there (granted: {})",
                self.describe()
            )));
        }
        Ok(root.join(path))
    }

    fn describe(&self) -> String {
        if self.prefixes.is_empty() {
            return "nothing".into();
        }
        self.prefixes
            .iter()
            .map(|(p, w)| {
                format!(
                    "{}{}",
                    if p.is_empty() { "<root>/" } else { p },
                    if *w { " (rw)" } else { " (ro)" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn read(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, StorageError> {
        use std::io::{Read, Seek, SeekFrom};
        let file = self.resolve(path, false)?;
        let mut f = match std::fs::File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(path.into()));
            }
            Err(e) => return Err(StorageError::Backend(format!("{path}: {e}"))),
        };
        let meta = f
            .metadata()
            .map_err(|e| StorageError::Backend(format!("{path}: {e}")))?;
        if meta.is_dir() {
            return Err(StorageError::NotFound(format!(
                "{path} is a prefix, not an object"
            )));
        }
        let available = meta.len().saturating_sub(offset);
        let want = length.map_or(available, |l| l.min(available));
        if want > self.max_object_bytes {
            return Err(StorageError::TooLarge(self.max_object_bytes));
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        let mut buf = Vec::with_capacity(want as usize);
        f.take(want)
            .read_to_end(&mut buf)
            .map_err(|e| StorageError::Backend(format!("{path}: {e}")))?;
        Ok(buf)
    }

    /// Whether an object exists at `path` (readable by this grant).
    fn exists(&self, path: &str) -> Result<bool, StorageError> {
        let file = self.resolve(path, false)?;
        Ok(file.is_file())
    }

    pub fn write(&self, path: &str, data: &[u8]) -> Result<(), StorageError> {
        if path.ends_with('/') {
            return Err(StorageError::InvalidPath(format!(
                "{path}: an object path cannot end with /"
            )));
        }
        let file = self.resolve(path, true)?;
        if data.len() as u64 > self.max_object_bytes {
            return Err(StorageError::TooLarge(self.max_object_bytes));
        }
        let parent = file.parent().expect("joined path has a parent");
        std::fs::create_dir_all(parent)
            .map_err(|e| StorageError::Backend(format!("{path}: {e}")))?;
        // Write then rename, so readers never see half an object.
        let tmp = parent.join(format!(".{}.partial", uuid::Uuid::new_v4()));
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                StorageError::Backend(format!("{path}: {e}"))
            })
    }

    pub fn delete(&self, path: &str) -> Result<(), StorageError> {
        let file = self.resolve(path, true)?;
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(path.into()))
            }
            Err(e) => Err(StorageError::Backend(format!("{path}: {e}"))),
        }
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let Some(root) = &self.root else {
            return Err(StorageError::Denied(
                "this call was granted no storage".into(),
            ));
        };
        let prefix = normalize_prefix(prefix).map_err(StorageError::InvalidPath)?;
        if !self
            .prefixes
            .iter()
            .any(|(p, _)| prefix.starts_with(p.as_str()))
        {
            return Err(StorageError::Denied(format!(
                "{prefix}: this call may not read there (granted: {})",
                self.describe()
            )));
        }
        let mut out = Vec::new();
        walk(root, &root.join(&prefix), &mut out)
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".partial") {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(root, &entry.path(), out)?;
        } else if ty.is_file() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push(ObjectInfo {
                path: rel,
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

/// The checkpoints under `prefix`: objects named `step-<n>` (whatever the zero padding).
fn checkpoints(grant: &Grant, prefix: &str) -> Vec<CheckpointInfo> {
    let Ok(objects) = grant.list(prefix) else {
        return Vec::new();
    };
    objects
        .into_iter()
        .filter_map(|o| {
            let step = o
                .path
                .rsplit('/')
                .next()?
                .strip_prefix("step-")?
                .parse::<u64>()
                .ok()?;
            Some(CheckpointInfo {
                step,
                path: o.path,
                size: o.size,
            })
        })
        .collect()
}

/// How many checkpoints `checkpoints.save` keeps under a prefix: the newest by step; older
/// ones are removed as newer ones are saved, so a long run neither fills the disk nor goes
/// past its output channel's file limit.
pub const KEEP_CHECKPOINTS: usize = 5;

/// Removes all but the `keep` newest checkpoints under `prefix` (by step number), never
/// `saved` (the one just written, even when its step is lower: a run started over).
pub fn prune_checkpoints(
    grant: &Grant,
    prefix: &str,
    keep: usize,
    saved: &str,
) -> Result<(), StorageError> {
    let mut all = checkpoints(grant, prefix);
    all.sort_by_key(|c| std::cmp::Reverse(c.step));
    for c in all.into_iter().skip(keep).filter(|c| c.path != saved) {
        match grant.delete(&c.path) {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The newest checkpoint under `prefix`, by step number (`step-10` after `step-9`).
pub fn latest_checkpoint(grant: &Grant, prefix: &str) -> Option<CheckpointInfo> {
    checkpoints(grant, prefix)
        .into_iter()
        .max_by_key(|c| c.step)
}

/// The checkpoint of `step` under `prefix`, if there is one.
pub fn find_checkpoint(grant: &Grant, prefix: &str, step: u64) -> Option<CheckpointInfo> {
    let path = checkpoint_path(grant, prefix, step);
    checkpoints(grant, prefix)
        .into_iter()
        .find(|c| c.path == path)
}

/// The checkpoint of `step` under `prefix`: `checkpoints.save`'s name, or another object of
/// that step number (`step-10`, as an earlier run may have written it).
pub fn checkpoint_path(grant: &Grant, prefix: &str, step: u64) -> String {
    let saved = format!("{prefix}step-{step:012}");
    if matches!(grant.exists(&saved), Ok(true)) {
        return saved;
    }
    checkpoints(grant, prefix)
        .into_iter()
        .filter(|c| c.step == step)
        .map(|c| c.path)
        .min()
        .unwrap_or(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(check_path("a/b.csv").is_ok());
        assert!(check_path("../etc/passwd").is_err());
        assert!(check_path("/etc/passwd").is_err());
        assert!(check_path("a//b").is_err());
        assert!(check_path("a/./b").is_err());
        assert!(check_path("").is_err());
    }

    #[test]
    fn grants_scope_reads_and_writes() {
        let dir = std::env::temp_dir().join(format!("atelier-grant-{}", uuid::Uuid::new_v4()));
        let mut g = Grant::new(dir.clone(), 1024);
        g.allow("in", false).unwrap();
        g.allow("out/", true).unwrap();
        std::fs::create_dir_all(dir.join("in")).unwrap();
        std::fs::write(dir.join("in/x.txt"), b"hello").unwrap();
        std::fs::create_dir_all(dir.join("secret")).unwrap();
        std::fs::write(dir.join("secret/k"), b"k").unwrap();
        assert_eq!(g.read("in/x.txt", 0, None).unwrap(), b"hello");
        assert_eq!(g.read("in/x.txt", 1, Some(3)).unwrap(), b"ell");
        assert!(matches!(
            g.read("secret/k", 0, None),
            Err(StorageError::Denied(_))
        ));
        assert!(matches!(
            g.write("in/y", b"no"),
            Err(StorageError::Denied(_))
        ));
        assert!(matches!(
            g.read("in/../secret/k", 0, None),
            Err(StorageError::InvalidPath(_))
        ));
        g.write("out/a/b.bin", b"data").unwrap();
        assert!(matches!(
            g.write("out/big", &[0u8; 2048]),
            Err(StorageError::TooLarge(1024))
        ));
        let listed = g.list("out").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "out/a/b.bin");
        assert!(matches!(g.list("secret"), Err(StorageError::Denied(_))));
        g.delete("out/a/b.bin").unwrap();
        assert!(matches!(
            g.read("out/a/b.bin", 0, None),
            Err(StorageError::NotFound(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn checkpoints_are_ordered_by_step_number_whatever_their_padding() {
        let dir = std::env::temp_dir().join(format!("atelier-ckpt-{}", uuid::Uuid::new_v4()));
        let mut g = Grant::new(dir.clone(), 1024);
        g.allow("out/", true).unwrap();
        assert!(latest_checkpoint(&g, "out/checkpoints/").is_none());
        g.write("out/checkpoints/step-9", b"9").unwrap();
        g.write("out/checkpoints/step-10", b"10").unwrap();
        g.write("out/checkpoints/step-000000000002", b"2").unwrap();
        g.write("out/checkpoints/notes.txt", b"x").unwrap();
        let latest = latest_checkpoint(&g, "out/checkpoints/").unwrap();
        assert_eq!(
            (latest.step, latest.path.as_str()),
            (10, "out/checkpoints/step-10")
        );
        assert_eq!(
            checkpoint_path(&g, "out/checkpoints/", 10),
            "out/checkpoints/step-10"
        );
        assert_eq!(
            checkpoint_path(&g, "out/checkpoints/", 2),
            "out/checkpoints/step-000000000002"
        );
        // Unknown steps name save's object (which is not found when read).
        assert_eq!(
            checkpoint_path(&g, "out/checkpoints/", 3),
            "out/checkpoints/step-000000000003"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_newest_checkpoints_are_kept() {
        let dir = std::env::temp_dir().join(format!("atelier-ckpt-{}", uuid::Uuid::new_v4()));
        let mut g = Grant::new(dir.clone(), 1 << 20);
        g.allow("out/", true).unwrap();
        let p = "out/checkpoints/";
        for step in 1..=200u64 {
            let path = format!("{p}step-{step:012}");
            g.write(&path, b"w").unwrap();
            prune_checkpoints(&g, p, 3, &path).unwrap();
        }
        g.write("out/checkpoints/notes.txt", b"x").unwrap();
        let mut steps: Vec<u64> = checkpoints(&g, p).iter().map(|c| c.step).collect();
        steps.sort();
        assert_eq!(steps, [198, 199, 200]);
        // A run started over saves step 1: kept besides the 3 newest.
        let one = format!("{p}step-{:012}", 1);
        g.write(&one, b"again").unwrap();
        prune_checkpoints(&g, p, 3, &one).unwrap();
        let mut steps: Vec<u64> = checkpoints(&g, p).iter().map(|c| c.step).collect();
        steps.sort();
        assert_eq!(steps, [1, 198, 199, 200]);
        // Other objects there are the guest's: untouched.
        assert!(g.exists("out/checkpoints/notes.txt").unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Property tests: object paths a plugin passes are refused or stay under the root.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::path::Component;

        fn part() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just(String::new()),
                Just("a\0b".to_owned()),
                Just("a\\..".to_owned()),
                "[a-z0-9_.-]{1,8}",
                "\\PC{1,6}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn accepted_object_paths_stay_under_the_root(
                absolute in any::<bool>(),
                parts in prop::collection::vec(part(), 0..6),
                trailing in any::<bool>(),
            ) {
                let mut path = parts.join("/");
                if absolute {
                    path.insert(0, '/');
                }
                if trailing {
                    path.push('/');
                }
                let root = Path::new("/srv/storage/u1");
                let checked = check_path(&path);
                let prefix = normalize_prefix(&path);
                if checked.is_ok() {
                    let file = root.join(&path);
                    prop_assert!(file.starts_with(root) && file != root, "{path:?}");
                    prop_assert!(file.strip_prefix(root).unwrap().components().all(|c| matches!(c, Component::Normal(_))), "{path:?}");
                    prop_assert!(!path.contains('\0') && !path.contains('\\'));
                } else {
                    prop_assert!(prefix.is_err() || path.is_empty());
                }
                if let Ok(p) = prefix {
                    prop_assert!(p.is_empty() || p.ends_with('/'));
                    prop_assert!(root.join(&p).starts_with(root));
                }
            }
        }
    }
}
