//! Signal plumbing: the blocked set we wait on, safe `kill` wrappers, and
//! the reset that gives the child a normal signal state.

use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::time::Duration;

/// Signals the runtime blocks and consumes synchronously with `sigtimedwait`.
pub const HANDLED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];

/// Highest signal number we reset in the child (covers real-time signals).
const MAX_SIGNAL: libc::c_int = 64;

fn empty_sigset() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set; it cannot fail for a
    // valid pointer.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    }
}

/// The blocked signal set ([`HANDLED`]).
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    pub fn new() -> Signals {
        let mut set = empty_sigset();
        for sig in HANDLED {
            // SAFETY: `set` is an initialised sigset and `sig` a valid signal.
            unsafe {
                libc::sigaddset(&mut set, sig);
            }
        }
        Signals { set }
    }

    /// Blocks the set for the (single-threaded) process.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: valid pointer to an initialised set; old set not requested.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.set, ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    /// Waits up to `timeout` for one of the blocked signals; `None` on timeout
    /// (or interruption).
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<libc::c_int>> {
        // SAFETY: timespec is plain data; all-zero is a valid value.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        ts.tv_sec = libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX);
        ts.tv_nsec = timeout.subsec_nanos().into();
        // SAFETY: valid set and timespec pointers; info may be NULL.
        let rc = unsafe { libc::sigtimedwait(&self.set, ptr::null_mut(), &ts) };
        if rc > 0 {
            return Ok(Some(rc));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(err),
        }
    }

    /// Like [`Signals::wait`] but for use while already shutting down: stop
    /// requests are logged and otherwise ignored, errors degrade to a sleep.
    pub fn pause(&self, timeout: Duration) {
        match self.wait(timeout) {
            Ok(Some(sig)) if sig != libc::SIGCHLD => {
                log!("received {} while stopping; already stopping", name(sig));
            }
            Ok(_) => {}
            Err(e) => {
                log!("sigtimedwait failed: {e}");
                std::thread::sleep(timeout);
            }
        }
    }
}

/// Puts the dispositions of the signals we handle back to `SIG_DFL` in the
/// runtime itself. An inherited `SIG_IGN` for SIGCHLD would make the kernel
/// auto-reap children and hide their exit status from us.
pub fn default_dispositions() {
    for sig in HANDLED {
        // SAFETY: installing SIG_DFL for a catchable signal has no preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Runs in the forked child before `exec`: empty signal mask and default
/// dispositions for every signal. Only async-signal-safe calls.
pub fn reset_for_exec() -> io::Result<()> {
    let set = empty_sigset();
    // SAFETY: valid pointer to an initialised set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    for sig in 1..=MAX_SIGNAL {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL is always allowed; invalid or reserved
        // signal numbers just fail with EINVAL, which we ignore.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    Ok(())
}

/// Sends `sig` to one process. Refuses pids that would address groups or
/// every process (`<= 1`, `0`, negative).
pub fn send(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: plain syscall with a positive pid.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` to the process group `pgid`, unless that is our own group or
/// not a real group id.
pub fn send_group(pgid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: getpgrp cannot fail.
    let own = unsafe { libc::getpgrp() };
    if pgid <= 1 || pgid == own {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: plain syscall; `-pgid` is < -1 so it addresses exactly one group.
    if unsafe { libc::kill(-pgid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Human-readable signal name for logs.
pub fn name(sig: libc::c_int) -> String {
    let known = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {sig}"),
    };
    known.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_dangerous_targets() {
        assert!(send(0, 0).is_err());
        assert!(send(1, 0).is_err());
        assert!(send(-5, 0).is_err());
        assert!(send_group(0, 0).is_err());
        assert!(send_group(1, 0).is_err());
        // SAFETY: getpgrp cannot fail.
        let own = unsafe { libc::getpgrp() };
        assert!(send_group(own, 0).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(40), "signal 40");
    }
}
