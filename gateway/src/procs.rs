//! The processes the gateway starts and outlives (notebook runtimes, mount servers): started
//! in sessions of their own, recognised later by pid and start time (a pid alone may have
//! been reused), and signalled through rustix.

use std::os::unix::process::CommandExt;

use rustix::process::{Pid, Signal};

/// Starts `cmd` in a session of its own: no signal from the gateway's terminal or process
/// group reaches it, and it survives the gateway (notebook runtimes, mount servers).
pub fn in_own_session(cmd: &mut std::process::Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| Ok(rustix::process::setsid().map(drop)?));
    }
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Sends `sig` to process `pid` (one the caller verified, by its start time or its cgroup);
/// a process that is gone already is no error.
pub fn signal(pid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Whether `pid` is still the process that started at `start_ticks` (not a reused pid).
pub fn alive(pid: i32, started: u64) -> bool {
    start_ticks(pid) == Some(started)
}
