//! The status file the gateway reads to learn what the runtime is doing.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One snapshot of the runtime's state, serialised with a `"state"` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    /// The child has been started and is being supervised.
    Running {
        runtime_pid: i32,
        child_pid: i32,
        started_at: u64,
    },
    /// The child exited on its own; exactly one of `exit_code` / `signal` is
    /// set, or neither when the status could not be collected.
    Exited {
        runtime_pid: i32,
        child_pid: i32,
        started_at: u64,
        exit_code: Option<i32>,
        signal: Option<i32>,
        ended_at: u64,
    },
    /// The runtime was asked to stop (SIGTERM/SIGINT/SIGHUP) and did so.
    Stopped {
        runtime_pid: i32,
        child_pid: i32,
        started_at: u64,
        ended_at: u64,
    },
    /// The child could not be started (or supervised) at all.
    Failed {
        runtime_pid: i32,
        error: String,
        ended_at: u64,
    },
}

/// Seconds since the Unix epoch (0 if the clock is before the epoch).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `status` to `path` atomically: `<path>.tmp`, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, status: &Status) -> io::Result<()> {
    let mut json = serde_json::to_vec(status)?;
    json.push(b'\n');
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Best effort: make the rename itself durable.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_running() {
        let s = Status::Running {
            runtime_pid: 10,
            child_pid: 11,
            started_at: 100,
        };
        let v: serde_json::Value = serde_json::to_value(&s).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!({"state": "running", "runtime_pid": 10, "child_pid": 11, "started_at": 100})
        );
    }

    #[test]
    fn serialises_exited_with_nulls() {
        let s = Status::Exited {
            runtime_pid: 10,
            child_pid: 11,
            started_at: 100,
            exit_code: None,
            signal: Some(9),
            ended_at: 200,
        };
        let v: serde_json::Value = serde_json::to_value(&s).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!({"state": "exited", "runtime_pid": 10, "child_pid": 11,
                "started_at": 100, "exit_code": null, "signal": 9, "ended_at": 200})
        );
    }

    #[test]
    fn serialises_stopped_and_failed() {
        let s = Status::Stopped {
            runtime_pid: 1,
            child_pid: 2,
            started_at: 3,
            ended_at: 4,
        };
        let v: serde_json::Value = serde_json::to_value(&s).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!({"state": "stopped", "runtime_pid": 1, "child_pid": 2, "started_at": 3, "ended_at": 4})
        );
        let s = Status::Failed {
            runtime_pid: 1,
            error: "boom".into(),
            ended_at: 4,
        };
        let v: serde_json::Value = serde_json::to_value(&s).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!({"state": "failed", "runtime_pid": 1, "error": "boom", "ended_at": 4})
        );
    }

    #[test]
    fn tmp_path_appends_suffix() {
        assert_eq!(
            tmp_path(Path::new("/a/status.json")),
            PathBuf::from("/a/status.json.tmp")
        );
    }
}
