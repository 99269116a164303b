//! Reaping zombies and tearing down every remaining descendant.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use crate::signals::{self, Signals};

/// How often we poll while waiting for processes to go away.
pub const POLL: Duration = Duration::from_millis(50);

/// How long we wait for processes to disappear after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// Upper bound on `waitpid` calls per [`Reaper::reap`].
const MAX_REAPS_PER_CALL: usize = 4096;

/// How the main child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
    /// We lost track of it (no children left, but no status collected).
    Unknown,
}

impl ChildExit {
    pub fn code(self) -> Option<i32> {
        match self {
            ChildExit::Code(code) => Some(code),
            _ => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            ChildExit::Signal(sig) => Some(sig),
            _ => None,
        }
    }

    fn describe(self) -> String {
        match self {
            ChildExit::Code(code) => format!("exited with code {code}"),
            ChildExit::Signal(sig) => format!("was killed by {}", signals::name(sig)),
            ChildExit::Unknown => "disappeared without an exit status".to_string(),
        }
    }
}

fn decode(status: libc::c_int) -> ChildExit {
    if libc::WIFEXITED(status) {
        ChildExit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ChildExit::Signal(libc::WTERMSIG(status))
    } else {
        ChildExit::Unknown
    }
}

/// Collects exit statuses of all our children, remembering the main child's.
pub struct Reaper {
    child_pid: libc::pid_t,
    child_exit: Option<ChildExit>,
}

impl Reaper {
    pub fn new(child_pid: libc::pid_t) -> Reaper {
        Reaper {
            child_pid,
            child_exit: None,
        }
    }

    /// The main child's fate, once it has been reaped.
    pub fn child_exit(&self) -> Option<ChildExit> {
        self.child_exit
    }

    /// Reaps every child that has already terminated. Returns whether we
    /// still have (live or not yet reaped) children afterwards.
    pub fn reap(&mut self) -> bool {
        for _ in 0..MAX_REAPS_PER_CALL {
            let mut status: libc::c_int = 0;
            // SAFETY: plain syscall with a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                let exit = decode(status);
                if pid == self.child_pid {
                    log!("child {pid} {}", exit.describe());
                    self.child_exit = Some(exit);
                } else if !crate::children::reaped(pid, status) {
                    log!("reaped descendant {pid}, which {}", exit.describe());
                }
                continue;
            }
            if pid == 0 {
                return true;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => {
                    if self.child_exit.is_none() {
                        log!("child {} is gone but was never reaped", self.child_pid);
                        self.child_exit = Some(ChildExit::Unknown);
                    }
                    return false;
                }
                _ => {
                    log!("waitpid failed: {err}");
                    return true;
                }
            }
        }
        true
    }
}

/// The fields of `/proc/<pid>/stat` we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: libc::pid_t,
    pub comm: String,
    pub state: char,
    pub ppid: libc::pid_t,
    pub pgid: libc::pid_t,
}

/// Parses a `/proc/<pid>/stat` line. `comm` sits in parentheses and may
/// itself contain spaces and parentheses, so the fixed fields are taken
/// from after the *last* `)`.
pub fn parse_stat(raw: &[u8]) -> Option<ProcStat> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(raw.get(..open)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = String::from_utf8_lossy(raw.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgid,
    })
}

/// Our direct children, found by scanning `/proc/*/stat` for `ppid == parent`.
pub fn direct_children(parent: libc::pid_t) -> io::Result<Vec<ProcStat>> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // The process may vanish between readdir and read: skip it then.
        let Ok(raw) = fs::read(entry.path().join("stat")) else {
            continue;
        };
        if let Some(stat) = parse_stat(&raw)
            && stat.ppid == parent
        {
            children.push(stat);
        }
    }
    Ok(children)
}

/// `now + d`, saturating instead of panicking.
pub fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now)
}

/// Terminates every remaining descendant: repeatedly finds our direct
/// children (orphans are re-parented to us as subreaper), sends SIGTERM to
/// each and to its process group, waits up to `grace` in total, then
/// SIGKILLs survivors. Returns when no children are left or after
/// `grace + KILL_WAIT`.
pub fn terminate_descendants(reaper: &mut Reaper, signals: &Signals, grace: Duration) {
    // SAFETY: getpid cannot fail.
    let own_pid = unsafe { libc::getpid() };
    let term_deadline = deadline_after(grace);
    let hard_deadline = term_deadline
        .checked_add(KILL_WAIT)
        .unwrap_or(term_deadline);
    let mut termed: HashSet<libc::pid_t> = HashSet::new();
    let mut killed: HashSet<libc::pid_t> = HashSet::new();
    let mut scan_failed = false;
    loop {
        if !reaper.reap() {
            if !termed.is_empty() || !killed.is_empty() {
                log!("all descendants are gone");
            }
            return;
        }
        let children = match direct_children(own_pid) {
            Ok(children) => children,
            Err(e) => {
                if !scan_failed {
                    log!("cannot scan /proc for descendants: {e}");
                    scan_failed = true;
                }
                Vec::new()
            }
        };
        let now = Instant::now();
        if now >= hard_deadline {
            let pids: Vec<String> = children.iter().map(|c| c.pid.to_string()).collect();
            log!(
                "giving up on descendants that survived SIGKILL: [{}]",
                pids.join(", ")
            );
            return;
        }
        let kill_phase = now >= term_deadline;
        for child in children.iter().filter(|c| c.state != 'Z') {
            let sig = if kill_phase {
                if killed.insert(child.pid) {
                    log!(
                        "descendant {} ({}) still running; sending SIGKILL",
                        child.pid,
                        child.comm
                    );
                }
                libc::SIGKILL
            } else if termed.insert(child.pid) {
                log!(
                    "sending SIGTERM to descendant {} ({}) and its process group {}",
                    child.pid,
                    child.comm,
                    child.pgid
                );
                libc::SIGTERM
            } else {
                continue;
            };
            let _ = signals::send(child.pid, sig);
            let _ = signals::send_group(child.pgid, sig);
        }
        let next = if kill_phase {
            hard_deadline
        } else {
            term_deadline
        };
        let step = next.saturating_duration_since(Instant::now()).min(POLL);
        signals.pause(step.max(Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_stat() {
        let line = b"1234 (sleep) S 1000 1234 1234 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        let stat = parse_stat(line).expect("parse");
        assert_eq!(
            stat,
            ProcStat {
                pid: 1234,
                comm: "sleep".into(),
                state: 'S',
                ppid: 1000,
                pgid: 1234
            }
        );
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line = b"77 (a) b (c) d) Z 5 9 9 0 -1\n";
        let stat = parse_stat(line).expect("parse");
        assert_eq!(stat.pid, 77);
        assert_eq!(stat.comm, "a) b (c) d");
        assert_eq!(stat.state, 'Z');
        assert_eq!(stat.ppid, 5);
        assert_eq!(stat.pgid, 9);
    }

    #[test]
    fn parses_non_utf8_comm() {
        let mut line = b"8 (x\xff)".to_vec();
        line.extend_from_slice(b" R 2 8 8");
        let stat = parse_stat(&line).expect("parse");
        assert_eq!((stat.pid, stat.state, stat.ppid, stat.pgid), (8, 'R', 2, 8));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b"12 sleep S 1 1"), None);
        assert_eq!(parse_stat(b"12 (sleep) S"), None);
        assert_eq!(parse_stat(b"x (sleep) S 1 1"), None);
        assert_eq!(parse_stat(b"1 )( S 1 1"), None);
    }

    #[test]
    fn reads_own_stat() {
        let raw = fs::read("/proc/self/stat").expect("read /proc/self/stat");
        let stat = parse_stat(&raw).expect("parse");
        assert_eq!(stat.pid, i32::try_from(std::process::id()).expect("pid"));
        // SAFETY: getppid cannot fail.
        assert_eq!(stat.ppid, unsafe { libc::getppid() });
    }

    #[test]
    fn decodes_wait_status() {
        assert_eq!(decode(3 << 8), ChildExit::Code(3));
        assert_eq!(decode(9), ChildExit::Signal(9));
    }
}
