//! Starting the child and supervising it until it exits or we are told to stop.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::reap::{self, ChildExit, Reaper};
use crate::signals::{self, Signals};
use crate::spec::Spec;
use crate::status::{self, Status};

/// How long one `sigtimedwait` in the main loop may block.
const MAIN_LOOP_TICK: Duration = Duration::from_secs(1);

/// Exit code when the child could not be started or supervised.
const EXIT_FAILURE: u8 = 1;

/// Starts the child described by `spec`. The caller must already have
/// blocked the handled signals; the child gets an empty mask back.
fn spawn(spec: &Spec) -> Result<libc::pid_t> {
    let Some((program, args)) = spec.argv.split_first() else {
        bail!("argv is empty");
    };
    let meta = fs::metadata(&spec.cwd)
        .with_context(|| format!("cannot use cwd {}", spec.cwd.display()))?;
    if !meta.is_dir() {
        bail!("cwd {} is not a directory", spec.cwd.display());
    }
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&spec.log_file)
        .with_context(|| format!("cannot open log file {}", spec.log_file.display()))?;
    let log_err = log_file
        .try_clone()
        .with_context(|| format!("cannot duplicate log file {}", spec.log_file.display()))?;

    // A bare name is looked up on the spec's PATH (as the child will see it); saying so
    // beats a bare "No such file or directory" (an image without Jupyter, say).
    if !program.contains('/') {
        let path = spec
            .env
            .get("PATH")
            .map(String::as_str)
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        let found = std::env::split_paths(path).any(|dir| {
            fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        if !found {
            bail!("{program:?} not found on PATH {path}");
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0);
    // SAFETY: `reset_for_exec` only calls async-signal-safe functions
    // (sigemptyset, pthread_sigmask, signal) and allocates nothing.
    unsafe {
        cmd.pre_exec(signals::reset_for_exec);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    // We reap with waitpid(-1) ourselves; the std handle is never waited on.
    let pid = child.id();
    libc::pid_t::try_from(pid).with_context(|| format!("child pid {pid} out of range"))
}

/// Waits (reaping, polling every [`reap::POLL`]) up to `timeout` for the
/// main child to be reaped. Returns whether it was.
fn wait_for_child(reaper: &mut Reaper, signals: &Signals, timeout: Duration) -> bool {
    let deadline = reap::deadline_after(timeout);
    loop {
        reaper.reap();
        if reaper.child_exit().is_some() {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        signals.pause(left.min(reap::POLL));
    }
}

/// SIGTERM to the child's process group, up to `grace` to exit, then SIGKILL.
fn stop_child(reaper: &mut Reaper, signals: &Signals, child_pid: libc::pid_t, grace: Duration) {
    reaper.reap();
    if reaper.child_exit().is_some() {
        return;
    }
    // The child is not reaped yet, so its pid (= its process group id) is
    // still ours and cannot have been reused.
    log!("sending SIGTERM to process group {child_pid}");
    if let Err(e) = signals::send_group(child_pid, libc::SIGTERM) {
        log!("cannot signal process group {child_pid}: {e}");
    }
    if wait_for_child(reaper, signals, grace) {
        return;
    }
    log!(
        "child {child_pid} still running after {}s; sending SIGKILL to process group {child_pid}",
        grace.as_secs()
    );
    if let Err(e) = signals::send_group(child_pid, libc::SIGKILL) {
        log!("cannot signal process group {child_pid}: {e}");
    }
    if !wait_for_child(reaper, signals, reap::KILL_WAIT) {
        log!("child {child_pid} did not exit after SIGKILL");
    }
}

fn write_status(spec: &Spec, status: &Status) -> bool {
    match status::write_atomic(&spec.status_file, status) {
        Ok(()) => true,
        Err(e) => {
            log!(
                "cannot write status file {}: {e}",
                spec.status_file.display()
            );
            false
        }
    }
}

enum Outcome {
    Exited(ChildExit),
    Stop(libc::c_int),
}

/// Runs the whole supervision; returns the process exit code.
pub fn run(spec: &Spec) -> u8 {
    // SAFETY: getpid cannot fail.
    let runtime_pid = unsafe { libc::getpid() };
    let grace = Duration::from_secs(spec.grace_seconds);

    signals::default_dispositions();
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        log!(
            "cannot become child subreaper: {}",
            std::io::Error::last_os_error()
        );
    }
    let signals = Signals::new();
    if let Err(e) = signals.block() {
        log!("cannot block signals: {e}");
        write_status(
            spec,
            &Status::Failed {
                runtime_pid,
                error: format!("cannot block signals: {e}"),
                ended_at: status::unix_now(),
            },
        );
        return EXIT_FAILURE;
    }

    // After blocking: the agent's threads inherit the mask, so SIGCHLD stays ours. A broken
    // agent costs SSH only; Jupyter still starts.
    if let Err(e) = crate::agent::start(spec) {
        log!("SSH agent not started: {e:#}");
    }

    let started_at = status::unix_now();
    let child_pid = match spawn(spec) {
        Ok(pid) => pid,
        Err(e) => {
            log!("{e:#}");
            write_status(
                spec,
                &Status::Failed {
                    runtime_pid,
                    error: format!("{e:#}"),
                    ended_at: status::unix_now(),
                },
            );
            return EXIT_FAILURE;
        }
    };
    log!(
        "started child {child_pid}: {:?} in {}",
        spec.argv,
        spec.cwd.display()
    );
    let mut reaper = Reaper::new(child_pid);

    let running = Status::Running {
        runtime_pid,
        child_pid,
        started_at,
    };
    if !write_status(spec, &running) {
        // Without a status file the gateway cannot see this child; do not
        // leave an invisible server behind.
        log!("stopping child {child_pid} because the status file cannot be written");
        stop_child(&mut reaper, &signals, child_pid, grace);
        reap::terminate_descendants(&mut reaper, &signals, grace);
        return EXIT_FAILURE;
    }

    let outcome = loop {
        reaper.reap();
        if let Some(exit) = reaper.child_exit() {
            break Outcome::Exited(exit);
        }
        match signals.wait(MAIN_LOOP_TICK) {
            Ok(Some(libc::SIGCHLD)) | Ok(None) => {}
            Ok(Some(sig)) => break Outcome::Stop(sig),
            Err(e) => {
                log!("sigtimedwait failed: {e}");
                std::thread::sleep(MAIN_LOOP_TICK);
            }
        }
    };

    match outcome {
        Outcome::Stop(sig) => {
            log!("received {}; stopping", signals::name(sig));
            stop_child(&mut reaper, &signals, child_pid, grace);
            reap::terminate_descendants(&mut reaper, &signals, grace);
            write_status(
                spec,
                &Status::Stopped {
                    runtime_pid,
                    child_pid,
                    started_at,
                    ended_at: status::unix_now(),
                },
            );
            log!("stopped");
            0
        }
        Outcome::Exited(exit) => {
            reap::terminate_descendants(&mut reaper, &signals, grace);
            write_status(
                spec,
                &Status::Exited {
                    runtime_pid,
                    child_pid,
                    started_at,
                    exit_code: exit.code(),
                    signal: exit.signal(),
                    ended_at: status::unix_now(),
                },
            );
            // The child's own status, as a shell reports it (a signal as 128 + its number):
            // what launched the runtime (a training job's attempt) tells how it ended from
            // this alone, even through bubblewrap.
            let code = match exit {
                ChildExit::Code(c) => u8::try_from(c).unwrap_or(EXIT_FAILURE),
                ChildExit::Signal(s) => u8::try_from(128 + s).unwrap_or(EXIT_FAILURE),
                ChildExit::Unknown => EXIT_FAILURE,
            };
            log!("exiting with code {code}");
            code
        }
    }
}
