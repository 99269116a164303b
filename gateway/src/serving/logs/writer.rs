//! Appends lines to services' log files: `<root>/<service id>/logs/gateway.log`, renamed
//! to `gateway.log.1` (replacing the older one) when the next line would take it past
//! [`MAX_FILE_BYTES`], so a service's log never holds more than two files' worth.
//!
//! Runs on a blocking thread, a batch of lines at a time (`ServiceLog::run`); the files
//! stay open between batches, a bounded number of them.
//!
//! **Invariant:** a service's directory is created only while its id is not in `removed`,
//! checked under that lock, and a removal inserts the id and deletes the directory under
//! it: a line that comes after the removal never brings the directory back.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::sources::{FILES, Line};

/// One file's most: with the rotated one, 16 MiB a service, enough for days of failures and
/// a processor's chatter, small beside the model files a service already has on disk.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Open files kept between batches (each service that logs holds one).
const MAX_OPEN: usize = 256;

/// The ids of services deleted since this gateway started (a few bytes each).
pub type Removed = Arc<Mutex<HashSet<Uuid>>>;

struct Open {
    file: BufWriter<File>,
    size: u64,
}

pub struct Writer {
    root: PathBuf,
    max_file_bytes: u64,
    removed: Removed,
    open: HashMap<Uuid, Open>,
}

/// `<root>/<id>/logs`: the id is always a UUID the gateway made, shown the one way.
pub fn dir_of(root: &Path, id: Uuid) -> PathBuf {
    root.join(id.hyphenated().to_string()).join("logs")
}

impl Writer {
    pub fn new(root: PathBuf, max_file_bytes: u64, removed: Removed) -> Writer {
        Writer {
            root,
            max_file_bytes,
            removed,
            open: HashMap::new(),
        }
    }

    /// Appends `line` to `id`'s log; nothing for a removed service.
    pub fn write(&mut self, id: Uuid, line: &Line) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let len = bytes.len() as u64;
        let full = self
            .open
            .get(&id)
            .is_some_and(|o| o.size > 0 && o.size + len > self.max_file_bytes);
        if full {
            self.rotate(id)?;
        }
        if !self.open.contains_key(&id) {
            let Some(o) = self.open_file(id)? else {
                return Ok(());
            };
            if o.size > 0 && o.size + len > self.max_file_bytes {
                drop(o);
                self.rotate(id)?;
                return self.write(id, line);
            }
            if self.open.len() >= MAX_OPEN {
                self.flush();
                self.open.clear();
            }
            self.open.insert(id, o);
        }
        if let Some(o) = self.open.get_mut(&id) {
            o.file.write_all(&bytes)?;
            o.size += len;
        }
        Ok(())
    }

    /// `gateway.log` → `gateway.log.1`; the next line opens a new one.
    fn rotate(&mut self, id: Uuid) -> io::Result<()> {
        if let Some(mut o) = self.open.remove(&id) {
            o.file.flush()?;
        }
        let dir = dir_of(&self.root, id);
        std::fs::rename(dir.join(FILES[1]), dir.join(FILES[0]))
    }

    fn open_file(&self, id: Uuid) -> io::Result<Option<Open>> {
        let removed = self
            .removed
            .lock()
            .map_err(|_| io::Error::other("the removed services' lock is poisoned"))?;
        if removed.contains(&id) {
            return Ok(None);
        }
        let dir = dir_of(&self.root, id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(FILES[1]))?;
        let size = file.metadata()?.len();
        Ok(Some(Open {
            file: BufWriter::new(file),
            size,
        }))
    }

    /// Closes `id`'s file (its service is removed).
    pub fn forget(&mut self, id: Uuid) {
        self.open.remove(&id);
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        for (id, o) in &mut self.open {
            if let Err(e) = o.file.flush() {
                tracing::warn!(service = %id, error = %e, "writing a service's log failed");
            }
        }
    }
}

/// Deletes `id`'s directory (its logs) for good: no line written later brings it back.
pub fn remove(root: &Path, removed: &Removed, id: Uuid) -> io::Result<()> {
    let mut removed = removed
        .lock()
        .map_err(|_| io::Error::other("the removed services' lock is poisoned"))?;
    removed.insert(id);
    match std::fs::remove_dir_all(root.join(id.hyphenated().to_string())) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::logs::TempRoot;

    fn line(n: usize) -> Line {
        Line {
            time: format!("2025-03-01T12:00:00.{n:06}Z"),
            source: "processor".into(),
            text: format!("line {n} {}", "x".repeat(80)),
        }
    }

    #[test]
    fn files_rotate_by_size_and_two_are_kept() {
        let root = TempRoot::new();
        let id = Uuid::new_v4();
        let mut w = Writer::new(root.0.as_path().into(), 4096, Removed::default());
        for n in 0..1000 {
            w.write(id, &line(n)).unwrap();
        }
        w.flush();
        let dir = dir_of(root.0.as_path(), id);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["gateway.log", "gateway.log.1"]);
        let mut lines = Vec::new();
        for name in FILES {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.len() as u64 <= 4096, "{name}: {}", text.len());
            for l in text.lines() {
                lines.push(serde_json::from_str::<Line>(l).unwrap());
            }
        }
        // The newest lines, in order, none cut.
        assert_eq!(lines.last(), Some(&line(999)));
        let first: usize = lines[0].text["line ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(lines, (first..1000).map(line).collect::<Vec<_>>());
        assert!(lines.len() > 40, "{}", lines.len());

        // A writer started later (a gateway restart) goes on from the files' sizes.
        let mut again = Writer::new(root.0.as_path().into(), 4096, Removed::default());
        for n in 1000..1100 {
            again.write(id, &line(n)).unwrap();
        }
        again.flush();
        for name in FILES {
            assert!(std::fs::metadata(dir.join(name)).unwrap().len() <= 4096);
        }
    }

    #[test]
    fn a_removed_service_gets_no_directory_back() {
        let root = TempRoot::new();
        let id = Uuid::new_v4();
        let removed = Removed::default();
        let mut w = Writer::new(root.0.as_path().into(), 4096, removed.clone());
        w.write(id, &line(1)).unwrap();
        w.flush();
        assert!(dir_of(root.0.as_path(), id).exists());
        remove(root.0.as_path(), &removed, id).unwrap();
        w.forget(id);
        w.write(id, &line(2)).unwrap();
        w.flush();
        assert!(!root.0.as_path().join(id.to_string()).exists());
        // Removing what is not there is fine.
        remove(root.0.as_path(), &removed, Uuid::new_v4()).unwrap();
    }

    #[test]
    fn a_link_in_place_of_the_log_is_not_followed() {
        let root = TempRoot::new();
        let id = Uuid::new_v4();
        let dir = dir_of(root.0.as_path(), id);
        std::fs::create_dir_all(&dir).unwrap();
        let elsewhere = root.0.as_path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("gateway.log")).unwrap();
        let mut w = Writer::new(root.0.as_path().into(), 4096, Removed::default());
        assert!(w.write(id, &line(1)).is_err());
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
    }
}
