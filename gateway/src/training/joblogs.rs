//! A training job's logs (spec/training.md §2.12): one file per worker and attempt in the
//! gateway's data dir (`training/<job>/logs/attempt-<a>/worker-<r>.log`), holding the
//! platform's own lines (tagged `[ModelArts Service Log]`) and what the worker printed,
//! copied from the worker's own log (a file the worker can write: read only through
//! `confined`, from where the last copy stopped) and cut at the configured size.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::launch::{SERVICE_TAG, parse_metric_line};

/// Bytes copied from a worker's log per read.
const CHUNK: usize = 256 * 1024;
/// The longest line looked at for a metric; longer ones are copied, never parsed.
const MAX_LINE: usize = 4096;

/// Where a job's logs are.
pub fn job_dir(root: &Path, job_id: &str) -> PathBuf {
    root.join(job_id)
}

pub fn file(root: &Path, job_id: &str, attempt: i64, rank: i64) -> PathBuf {
    root.join(job_id)
        .join(format!("attempt-{attempt}"))
        .join(format!("worker-{rank}.log"))
}

/// One worker's log of one attempt, as the gateway writes it.
pub struct WorkerLog {
    file: std::fs::File,
    written: u64,
    cap: u64,
    cut: bool,
    /// Where the copy of the worker's own log stopped.
    offset: u64,
    /// The start of a line the worker has not finished yet (for metrics).
    partial: Vec<u8>,
    partial_too_long: bool,
}

/// A metric line's values, as the pump found them.
pub type Found = Vec<super::launch::MetricLine>;

impl WorkerLog {
    /// Opens (appending) the log of `rank` in `attempt`; `offset` is how much of the
    /// worker's own log was copied before (a restarted gateway goes on from its end).
    pub fn open(
        root: &Path,
        job_id: &str,
        attempt: i64,
        rank: i64,
        cap: u64,
    ) -> std::io::Result<WorkerLog> {
        let path = file(root, job_id, attempt, rank);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let written = file.metadata()?.len();
        let offset = std::fs::read_to_string(path.with_extension("offset"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Ok(WorkerLog {
            file,
            written,
            cap,
            cut: written >= cap,
            offset,
            partial: Vec::new(),
            partial_too_long: false,
        })
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.cut {
            return;
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let take = bytes.len().min(room);
        if self.file.write_all(&bytes[..take]).is_ok() {
            self.written += take as u64;
        }
        if take < bytes.len() {
            self.cut = true;
            let note = format!(
                "\n{SERVICE_TAG} the log is cut here: it reached {} MiB (training.log_mb)\n",
                self.cap / (1024 * 1024)
            );
            let _ = self.file.write_all(note.as_bytes());
        }
    }

    /// What the job printed (a Wasm algorithm's lines), cut at the cap.
    pub fn user(&mut self, bytes: &[u8]) {
        self.append(bytes);
    }

    /// A line of the platform's.
    pub fn platform(&mut self, line: &str) {
        let t = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        // Written whatever the cap (a few lines per attempt), so the end is always told.
        let text = format!("{SERVICE_TAG} {t} {line}\n");
        if self.file.write_all(text.as_bytes()).is_ok() {
            self.written += text.len() as u64;
        }
    }

    /// Copies what the worker printed since the last call from `name` in `agent_dir` (the
    /// worker's: opened through `confined`, a link there is not followed). Returns the
    /// bytes copied and the metric lines found.
    pub fn pump(
        &mut self,
        agent_dir: &Path,
        name: &str,
        root: &Path,
        job_id: &str,
        attempt: i64,
        rank: i64,
    ) -> (u64, Found) {
        let Ok(dir) = crate::confined::Dir::open(agent_dir) else {
            return (0, Vec::new());
        };
        let Ok(mut f) = dir.open_read(OsStr::new(name)) else {
            return (0, Vec::new());
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated by the worker: go on from its new end.
            self.offset = len;
        }
        let mut copied = 0u64;
        let mut found = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        // Bounded: at most 64 chunks (16 MiB) per call; the rest comes at the next.
        for _ in 0..64 {
            if f.seek(SeekFrom::Start(self.offset)).is_err() {
                break;
            }
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.append(&buf[..n]);
            self.offset += n as u64;
            copied += n as u64;
            self.scan(&buf[..n], &mut found);
        }
        if copied > 0 {
            let _ = std::fs::write(
                file(root, job_id, attempt, rank).with_extension("offset"),
                self.offset.to_string(),
            );
        }
        (copied, found)
    }

    fn scan(&mut self, bytes: &[u8], found: &mut Found) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let complete = chunk.ends_with(b"\n");
            if !self.partial_too_long {
                if self.partial.len() + chunk.len() > MAX_LINE {
                    self.partial_too_long = true;
                    self.partial.clear();
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            if complete {
                if !self.partial_too_long
                    && let Ok(line) = std::str::from_utf8(&self.partial)
                    && let Some(m) = parse_metric_line(line)
                {
                    found.push(m);
                }
                self.partial.clear();
                self.partial_too_long = false;
            }
        }
    }
}

/// What `GET …/logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Without the platform's lines.
    pub user_only: bool,
    /// Only lines containing this.
    pub contains: Option<String>,
}

/// The text of a log from byte `from` on (at most `max` bytes, ending at a line's end when
/// it can), filtered; and where the next read starts.
pub fn read(path: &Path, from: u64, max: u64, q: &Query) -> std::io::Result<(String, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), from)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    // Whole lines only (unless one line is longer than max).
    let end = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if buf.len() as u64 >= max => buf.len(),
        None => 0,
    };
    buf.truncate(end);
    let text = String::from_utf8_lossy(&buf);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if q.user_only && line.starts_with(SERVICE_TAG) {
            continue;
        }
        if let Some(c) = &q.contains
            && !line.contains(c.as_str())
        {
            continue;
        }
        out.push_str(line);
    }
    Ok((out, from + end as u64))
}

/// The attempts and workers a job has logs of: attempt → ranks.
pub fn listing(root: &Path, job_id: &str) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(root.join(job_id)) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(a) = name
            .to_str()
            .and_then(|n| n.strip_prefix("attempt-"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let mut ranks: Vec<i64> = std::fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|w| {
                w.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("worker-"))
                    .and_then(|n| n.strip_suffix(".log"))
                    .and_then(|n| n.parse::<i64>().ok())
            })
            .collect();
        ranks.sort();
        out.insert(a, ranks);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pumps_what_the_worker_prints_never_through_a_link() {
        let tmp = std::env::temp_dir().join(format!("atelier-joblogs-{}", uuid::Uuid::new_v4()));
        let root = tmp.join("logs");
        let agent = tmp.join("agent");
        std::fs::create_dir_all(&agent).unwrap();
        let mut log = WorkerLog::open(&root, "j", 0, 0, 1024).unwrap();
        log.platform("starting");
        std::fs::write(
            agent.join("worker.log"),
            "hello\n[metric] loss=0.5 step=1\npart",
        )
        .unwrap();
        let (n, found) = log.pump(&agent, "worker.log", &root, "j", 0, 0);
        assert_eq!(n, 35);
        assert_eq!(found, vec![(vec![("loss".into(), 0.5)], Some(1))]);
        // The rest of the line, then a cut at the cap.
        std::fs::write(
            agent.join("worker.log"),
            format!(
                "hello\n[metric] loss=0.5 step=1\npartial\n{}",
                "x".repeat(2000)
            ),
        )
        .unwrap();
        log.pump(&agent, "worker.log", &root, "j", 0, 0);
        let text = std::fs::read_to_string(file(&root, "j", 0, 0)).unwrap();
        assert!(
            text.starts_with(SERVICE_TAG)
                && text.contains("hello\n")
                && text.contains("the log is cut here"),
            "{text}"
        );
        let (user, next) = read(
            &file(&root, "j", 0, 0),
            0,
            1 << 20,
            &Query {
                user_only: true,
                contains: None,
            },
        )
        .unwrap();
        assert!(!user.contains("starting") && user.contains("hello"));
        assert!(next > 0);
        // A link planted in the log's place is not followed.
        let secret = tmp.join("secret");
        std::fs::write(&secret, "gateway secret\n").unwrap();
        let mut other = WorkerLog::open(&root, "j", 1, 0, 1024).unwrap();
        std::fs::remove_file(agent.join("worker.log")).unwrap();
        std::os::unix::fs::symlink(&secret, agent.join("worker.log")).unwrap();
        assert_eq!(other.pump(&agent, "worker.log", &root, "j", 1, 0).0, 0);
        assert_eq!(
            listing(&root, "j"),
            BTreeMap::from([(0, vec![0]), (1, vec![0])])
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
