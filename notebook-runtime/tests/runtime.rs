//! Integration tests: run the real binary against small `sh` children.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_atelier-notebook-runtime");
const DEADLINE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(20);

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "atelier-nbrt-{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running runtime process; stopped (TERM, then KILL) on drop if the test
/// did not wait for it.
struct Runtime {
    child: Child,
    dir: PathBuf,
}

impl Runtime {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill runtime");
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("runtime.stderr")).unwrap_or_default()
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "runtime did not exit in time; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(TICK);
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Polls `cond` until it holds; fails (with the runtime's stderr) at the deadline.
    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; runtime stderr:\n{}",
                self.stderr()
            );
            thread::sleep(TICK);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) on our unreaped child.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(TICK);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn base_spec(dir: &Path, script: &str) -> Value {
    json!({
        "argv": ["/bin/sh", "-c", script],
        "env": {"PATH": "/usr/bin:/bin", "HOME": dir, "ATELIER_SPEC_VAR": "from-spec"},
        "cwd": dir,
        "log_file": dir.join("child.log"),
        "status_file": dir.join("status.json"),
        "grace_seconds": 5
    })
}

fn write_spec(dir: &Path, spec: &Value) -> PathBuf {
    let path = dir.join("spec.json");
    fs::write(&path, serde_json::to_vec_pretty(spec).expect("json")).expect("write spec");
    path
}

fn start(dir: &Path, spec: &Value) -> Runtime {
    let spec_path = write_spec(dir, spec);
    let stderr = fs::File::create(dir.join("runtime.stderr")).expect("stderr file");
    let child = Command::new(BIN)
        .arg("--spec")
        .arg(&spec_path)
        .env("ATELIER_TEST_LEAK", "must-not-reach-child")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn runtime");
    Runtime {
        child,
        dir: dir.to_path_buf(),
    }
}

fn read_status(dir: &Path) -> Option<Value> {
    let text = fs::read_to_string(dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn state_of(dir: &Path) -> Option<String> {
    read_status(dir)?.get("state")?.as_str().map(str::to_string)
}

fn pid_field(status: &Value, field: &str) -> i32 {
    let n = status
        .get(field)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{field} missing in {status}"));
    i32::try_from(n).expect("pid fits")
}

/// `(state, ppid, starttime)` from `/proc/<pid>/stat`, if the process exists.
fn proc_info(pid: i32) -> Option<(char, i32, u64)> {
    let raw = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = String::from_utf8_lossy(&raw[close + 1..]).into_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    // Field 22 (starttime) is the 20th after the comm.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// A process identity that survives pid reuse.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: i32,
    start: u64,
}

impl Proc {
    fn get(pid: i32) -> Proc {
        let (state, _, start) = proc_info(pid).unwrap_or_else(|| panic!("process {pid} missing"));
        assert_ne!(state, 'Z', "process {pid} is a zombie");
        Proc { pid, start }
    }

    fn alive(self) -> bool {
        matches!(proc_info(self.pid), Some((state, _, start)) if start == self.start && state != 'Z')
    }

    /// Gone for good: no /proc entry any more (not even a zombie).
    fn gone(self) -> bool {
        !matches!(proc_info(self.pid), Some((_, _, start)) if start == self.start)
    }

    fn ppid(self) -> Option<i32> {
        match proc_info(self.pid) {
            Some((_, ppid, start)) if start == self.start => Some(ppid),
            _ => None,
        }
    }
}

fn read_pid_file(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits for the running status and returns the child process.
fn wait_running(rt: &Runtime, dir: &Path) -> Proc {
    rt.wait_until("running status", || {
        state_of(dir).as_deref() == Some("running")
    });
    let status = read_status(dir).expect("status");
    assert_eq!(pid_field(&status, "runtime_pid"), rt.pid());
    assert!(status.get("started_at").and_then(Value::as_u64).is_some());
    let child = Proc::get(pid_field(&status, "child_pid"));
    assert!(child.alive());
    child
}

const LOOP: &str = "while true; do sleep 0.1; done";

#[test]
fn sigterm_stops_child_and_reports_stopped() {
    let tmp = TempDir::new("term");
    let dir = tmp.path();
    let script = format!("trap 'exit 0' TERM; echo ready > ready; {LOOP}");
    let mut rt = start(dir, &base_spec(dir, &script));
    let child = wait_running(&rt, dir);
    rt.wait_until("child ready", || dir.join("ready").exists());

    rt.signal(libc::SIGTERM);
    let code = rt.wait();
    assert_eq!(code.code(), Some(0), "stderr:\n{}", rt.stderr());

    let status = read_status(dir).expect("status");
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(pid_field(&status, "child_pid"), child.pid);
    assert_eq!(pid_field(&status, "runtime_pid"), rt.pid());
    assert!(status["ended_at"].as_u64().is_some());
    rt.wait_until("child gone", || child.gone());
    assert!(!dir.join("status.json.tmp").exists());
}

#[test]
fn sigint_also_stops() {
    let tmp = TempDir::new("int");
    let dir = tmp.path();
    let mut rt = start(dir, &base_spec(dir, LOOP));
    let child = wait_running(&rt, dir);
    rt.signal(libc::SIGINT);
    assert_eq!(rt.wait().code(), Some(0), "stderr:\n{}", rt.stderr());
    assert_eq!(state_of(dir).as_deref(), Some("stopped"));
    rt.wait_until("child gone", || child.gone());
}

#[test]
fn child_ignoring_sigterm_is_killed() {
    let tmp = TempDir::new("ignore");
    let dir = tmp.path();
    let script = format!("trap '' TERM; echo ready > ready; {LOOP}");
    let mut spec = base_spec(dir, &script);
    spec["grace_seconds"] = json!(1);
    let mut rt = start(dir, &spec);
    let child = wait_running(&rt, dir);
    rt.wait_until("child ready", || dir.join("ready").exists());

    rt.signal(libc::SIGTERM);
    assert_eq!(rt.wait().code(), Some(0), "stderr:\n{}", rt.stderr());
    assert_eq!(state_of(dir).as_deref(), Some("stopped"));
    rt.wait_until("child gone", || child.gone());
    assert!(rt.stderr().contains("SIGKILL"), "stderr:\n{}", rt.stderr());
}

const GRANDCHILD: &str = "setsid sh -c 'echo $$ > gc.tmp && mv gc.tmp gc.pid; exec sleep 1000' &";

fn wait_grandchild(rt: &Runtime, dir: &Path) -> Proc {
    let pid_file = dir.join("gc.pid");
    rt.wait_until("grandchild pid file", || read_pid_file(&pid_file).is_some());
    let pid = read_pid_file(&pid_file).expect("grandchild pid");
    rt.wait_until("grandchild to exec sleep", || {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    Proc::get(pid)
}

#[test]
fn grandchild_in_own_session_is_terminated_on_stop() {
    let tmp = TempDir::new("grandchild");
    let dir = tmp.path();
    let script = format!("{GRANDCHILD} trap 'exit 0' TERM; {LOOP}");
    let mut rt = start(dir, &base_spec(dir, &script));
    let child = wait_running(&rt, dir);
    let grandchild = wait_grandchild(&rt, dir);
    assert!(grandchild.alive());

    rt.signal(libc::SIGTERM);
    assert_eq!(rt.wait().code(), Some(0), "stderr:\n{}", rt.stderr());
    assert_eq!(state_of(dir).as_deref(), Some("stopped"));
    rt.wait_until("grandchild gone", || grandchild.gone());
    rt.wait_until("child gone", || child.gone());
}

#[test]
fn descendants_are_terminated_when_child_exits() {
    let tmp = TempDir::new("leftover");
    let dir = tmp.path();
    // The child leaves a grandchild in its own session behind and exits
    // once the test has seen the grandchild.
    let script = format!("{GRANDCHILD} while [ ! -e go ]; do sleep 0.05; done; exit 0");
    let mut rt = start(dir, &base_spec(dir, &script));
    wait_running(&rt, dir);
    let grandchild = wait_grandchild(&rt, dir);
    fs::write(dir.join("go"), "").expect("write go");

    let code = rt.wait();
    assert_eq!(code.code(), Some(0), "stderr:\n{}", rt.stderr());
    let status = read_status(dir).expect("status");
    assert_eq!(status["state"], "exited", "{status}");
    assert_eq!(status["exit_code"], 0);
    assert!(status["signal"].is_null());
    rt.wait_until("grandchild gone", || grandchild.gone());
    assert!(
        rt.stderr().contains("sending SIGTERM to descendant"),
        "stderr:\n{}",
        rt.stderr()
    );
}

#[test]
fn child_exit_code_is_reported() {
    let tmp = TempDir::new("exit3");
    let dir = tmp.path();
    let mut rt = start(dir, &base_spec(dir, "exit 3"));
    let code = rt.wait();
    // The runtime exits with its child's code.
    assert_eq!(code.code(), Some(3), "stderr:\n{}", rt.stderr());

    let status = read_status(dir).expect("status");
    assert_eq!(status["state"], "exited", "{status}");
    assert_eq!(status["exit_code"], 3);
    assert!(status["signal"].is_null());
    assert_eq!(pid_field(&status, "runtime_pid"), rt.pid());
    assert!(pid_field(&status, "child_pid") > 0);
    assert!(status["started_at"].as_u64().is_some());
    assert!(status["ended_at"].as_u64().is_some());
    assert!(
        rt.stderr().contains("exited with code 3"),
        "{}",
        rt.stderr()
    );
}

#[test]
fn child_killed_by_signal_is_reported() {
    let tmp = TempDir::new("sigkill");
    let dir = tmp.path();
    let mut rt = start(dir, &base_spec(dir, "kill -KILL $$"));
    // 128 + the signal, as a shell says it.
    assert_eq!(rt.wait().code(), Some(137), "stderr:\n{}", rt.stderr());
    let status = read_status(dir).expect("status");
    assert_eq!(status["state"], "exited", "{status}");
    assert!(status["exit_code"].is_null());
    assert_eq!(status["signal"], libc::SIGKILL);
}

#[test]
fn orphans_are_reaped_while_running() {
    let tmp = TempDir::new("orphan");
    let dir = tmp.path();
    let script = format!("(sleep 1 & echo $! > o.tmp && mv o.tmp orphan.pid); {LOOP}");
    let mut rt = start(dir, &base_spec(dir, &script));
    wait_running(&rt, dir);
    let pid_file = dir.join("orphan.pid");
    rt.wait_until("orphan pid file", || read_pid_file(&pid_file).is_some());
    let orphan = Proc::get(read_pid_file(&pid_file).expect("orphan pid"));
    // The subshell exited, so the orphan is re-parented to the subreaper...
    rt.wait_until("orphan re-parented to the runtime", || {
        orphan.ppid() == Some(rt.pid())
    });
    // ...which reaps it when it exits: no zombie is left behind.
    rt.wait_until("orphan reaped", || orphan.gone());
    assert!(rt.is_running(), "stderr:\n{}", rt.stderr());

    rt.signal(libc::SIGTERM);
    assert_eq!(rt.wait().code(), Some(0), "stderr:\n{}", rt.stderr());
}

#[test]
fn child_env_is_exactly_the_spec_env_and_output_goes_to_log() {
    let tmp = TempDir::new("env");
    let dir = tmp.path();
    let script = "env > env.txt; echo to-stdout; echo to-stderr >&2";
    let mut rt = start(dir, &base_spec(dir, script));
    assert_eq!(rt.wait().code(), Some(0), "stderr:\n{}", rt.stderr());

    let env = fs::read_to_string(dir.join("env.txt")).expect("env.txt in cwd");
    let lines: Vec<&str> = env.lines().collect();
    assert!(lines.contains(&"ATELIER_SPEC_VAR=from-spec"), "{env}");
    assert!(lines.contains(&"PATH=/usr/bin:/bin"), "{env}");
    assert!(!env.contains("ATELIER_TEST_LEAK"), "{env}");
    assert!(!env.contains("CARGO"), "{env}");

    let log = fs::read_to_string(dir.join("child.log")).expect("child log");
    assert!(log.contains("to-stdout"), "{log}");
    assert!(log.contains("to-stderr"), "{log}");
    let mode = fs::metadata(dir.join("child.log"))
        .expect("log metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(state_of(dir).as_deref(), Some("exited"));
}

#[test]
fn log_file_is_appended() {
    let tmp = TempDir::new("append");
    let dir = tmp.path();
    fs::write(dir.join("child.log"), "earlier\n").expect("seed log");
    let mut rt = start(dir, &base_spec(dir, "echo later"));
    assert_eq!(rt.wait().code(), Some(0), "stderr:\n{}", rt.stderr());
    let log = fs::read_to_string(dir.join("child.log")).expect("child log");
    assert_eq!(log, "earlier\nlater\n");
}

#[test]
fn unstartable_program_reports_failed() {
    let tmp = TempDir::new("nostart");
    let dir = tmp.path();
    let mut spec = base_spec(dir, "");
    spec["argv"] = json!(["/nonexistent/jupyter", "lab"]);
    let mut rt = start(dir, &spec);
    assert_eq!(rt.wait().code(), Some(1), "stderr:\n{}", rt.stderr());
    let status = read_status(dir).expect("status");
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().expect("error string");
    assert!(error.contains("/nonexistent/jupyter"), "{error}");
}

fn run_bad(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runtime");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_bad_spec(dir: &Path, spec: &Value) -> (Option<i32>, String) {
    let path = write_spec(dir, spec);
    let path = path.to_str().expect("utf-8 path");
    run_bad(&["--spec", path])
}

#[test]
fn missing_spec_file_exits_2() {
    let tmp = TempDir::new("missing");
    let path = tmp.path().join("nope.json");
    let (code, stderr) = run_bad(&["--spec", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot read spec file"), "{stderr}");
    assert!(stderr.contains("nope.json"), "{stderr}");
}

#[test]
fn unknown_field_exits_2() {
    let tmp = TempDir::new("unknown");
    let dir = tmp.path();
    let mut spec = base_spec(dir, "true");
    spec["colour"] = json!("blue");
    let (code, stderr) = run_bad_spec(dir, &spec);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
    assert!(!dir.join("status.json").exists());
}

#[test]
fn empty_argv_exits_2() {
    let tmp = TempDir::new("emptyargv");
    let dir = tmp.path();
    let mut spec = base_spec(dir, "true");
    spec["argv"] = json!([]);
    let (code, stderr) = run_bad_spec(dir, &spec);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("argv must not be empty"), "{stderr}");
}

#[test]
fn malformed_json_exits_2() {
    let tmp = TempDir::new("malformed");
    let path = tmp.path().join("spec.json");
    fs::write(&path, "{not json").expect("write");
    let (code, stderr) = run_bad(&["--spec", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("invalid spec file"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2() {
    let (code, stderr) = run_bad(&[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing --spec"), "{stderr}");
    let (code, stderr) = run_bad(&["--frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--frobnicate"), "{stderr}");
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("atelier-notebook-runtime "), "{text}");
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--spec"));
}
