//! Exit statuses of processes the SSH agent starts.
//!
//! The supervisor reaps every child with `waitpid(-1)` (it is a subreaper, and PID 1 in
//! containers), so the agent cannot wait for its own children. Instead it registers each one
//! here while it spawns it, and the reaper hands the status over. The registry lock is held
//! across `spawn`, so a child that exits at once is still found when it is reaped.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// A raw `waitpid` status.
pub type WaitStatus = libc::c_int;

static WAITERS: Mutex<Option<HashMap<libc::pid_t, oneshot::Sender<WaitStatus>>>> = Mutex::new(None);

/// Spawns `cmd` and returns the child with a receiver for its wait status.
pub fn spawn(cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<WaitStatus>)> {
    let mut waiters = WAITERS.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::other("child pid out of range"))?;
    let (tx, rx) = oneshot::channel();
    waiters.get_or_insert_with(HashMap::new).insert(pid, tx);
    Ok((child, rx))
}

/// Called by the reaper for every reaped pid; returns whether the agent was waiting for it.
pub fn reaped(pid: libc::pid_t, status: WaitStatus) -> bool {
    let waiter = WAITERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|w| w.remove(&pid));
    match waiter {
        Some(tx) => {
            let _ = tx.send(status);
            true
        }
        None => false,
    }
}
