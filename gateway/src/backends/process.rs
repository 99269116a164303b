//! The `process` backend, the embedded default: each notebook is a real JupyterLab server in
//! a child process tree on this machine, supervised by `atelier-notebook-runtime`.
//!
//! ```text
//! gateway ──spawn (own session)──► atelier-notebook-runtime --spec run/spec.json
//!            no sandbox:            ├─► jupyter lab   (config in run/config/)
//!                                   └─  SSH agent on run/agent/ssh.sock
//!            with bubblewrap:       └─► bwrap … atelier-notebook-runtime --spec run/agent/spec.json
//!                                         ├─► jupyter lab
//!                                         └─  SSH agent (sessions run inside the sandbox)
//! <data>/notebooks/{id}/work       the notebook's files: survive stop, removed by delete
//! <data>/notebooks/{id}/run        spec, Jupyter config (with its token), status, the SSH
//!                                  link key (ssh_link_key; the gateway's only)
//! <data>/notebooks/{id}/run/agent  the inner spec and status, jupyter.log, ssh.sock: the
//!                                  part of the run dir the sandbox can write
//! ```
//!
//! The runtime runs in its own session, so it outlives the gateway (also a `kill -9`); the
//! handle records its pid and start time, which is how a restarted gateway finds it again
//! without being fooled by a reused pid. Where bubblewrap works, Jupyter runs confined: the
//! filesystem read-only except its own work dir and a private /tmp, the gateway's data dir
//! (other notebooks, the database) hidden.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::jupyter_env::JupyterEnv;
use super::runconf::{self, AGENT_SOCKET, ServerConf, write_private};
use super::{
    Backend, BackendError, DataDir, Handle, MountPlace, NotebookSpec, Observed, Progress, SshLink,
    StopMode, Upstream, Usage,
};
use crate::config::{SandboxMode, Settings};
use crate::events::EventKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProcessHandle {
    runtime_pid: i32,
    /// `/proc/<pid>/stat` field 22: tells our runtime from a process that reused its pid.
    runtime_start_ticks: u64,
    port: u16,
    token: String,
}

pub struct ProcessBackend {
    data_dir: PathBuf,
    env: JupyterEnv,
    runtime_bin: PathBuf,
    sandbox: Option<PathBuf>,
    /// The sandbox binds each notebook's `<nb>/data` at `/data` (the host has a `/data` to
    /// bind over: bubblewrap cannot create it under the read-only root).
    sandbox_data: bool,
    /// SIGTERM to SIGKILL, applied by the runtime to Jupyter and its kernels.
    grace_secs: u64,
    http: reqwest::Client,
}

impl ProcessBackend {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let runtime_bin = match &settings.backend.runtime_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("locating the atelier binary")?
                .with_file_name("atelier-notebook-runtime"),
        };
        if !runtime_bin.is_file() {
            anyhow::bail!(
                "{} not found: build it (cargo build --workspace) or set backend.runtime_bin / ATELIER_RUNTIME_BIN",
                runtime_bin.display()
            );
        }
        let sandbox = match settings.backend.sandbox {
            SandboxMode::None => None,
            SandboxMode::Auto => find_bwrap(),
            SandboxMode::Bwrap => Some(find_bwrap().context(
                "sandbox = \"bwrap\" but bubblewrap is missing or does not work here (apt-get install bubblewrap)",
            )?),
        };
        match &sandbox {
            Some(b) => tracing::info!(bwrap = %b.display(), "notebooks run confined by bubblewrap"),
            None => tracing::warn!("notebooks run without a sandbox (bubblewrap not used)"),
        }
        // The seed's /data (object-storage mounts): an empty host dir the sandbox binds over.
        let sandbox_data = sandbox.is_some() && {
            let data = Path::new("/data");
            data.is_dir() || std::fs::create_dir(data).is_ok()
        };
        if sandbox.is_some() && !sandbox_data {
            tracing::warn!(
                "no /data on this host and it cannot be created: notebooks get no /data for object-storage mounts (create an empty /data as root)"
            );
        }
        Ok(ProcessBackend {
            data_dir: settings.data_dir.clone(),
            env: JupyterEnv::new(
                settings.jupyter_venv(),
                settings.backend.python.clone(),
                settings.backend.jupyterlab_requirement.clone(),
            ),
            runtime_bin,
            sandbox,
            sandbox_data,
            grace_secs: settings.backend.stop_grace_secs,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .context("HTTP client")?,
        })
    }

    fn notebook_dir(&self, id: &str) -> PathBuf {
        runconf::notebook_dir(&self.data_dir, id)
    }

    fn decode(handle: &Handle) -> Result<ProcessHandle, BackendError> {
        serde_json::from_value(handle.0.clone())
            .map_err(|e| BackendError::Other(anyhow::anyhow!("unreadable process handle: {e}")))
    }

    /// The runtime's status file, written by the runtime itself.
    fn runtime_status(&self, id: &str) -> Option<serde_json::Value> {
        runconf::runtime_status(&self.notebook_dir(id).join("run/status.json"))
    }

    fn log_tail(&self, id: &str) -> String {
        runconf::log_tail(&self.notebook_dir(id).join("run/agent/jupyter.log"), 12)
    }

    fn notebook_id_of(&self, handle: &Handle) -> Option<String> {
        handle
            .0
            .get("notebook_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

#[async_trait]
impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn warm_up(&self) {
        match self.env.ensure().await {
            Ok(true) => tracing::info!(venv = %self.env.venv().display(), "JupyterLab is ready"),
            Ok(false) => {}
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "preparing JupyterLab failed; notebooks cannot start until it works"
            ),
        }
    }

    async fn prepare(
        &self,
        spec: &NotebookSpec,
        progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        let dir = self.notebook_dir(&spec.id);
        tokio::fs::create_dir_all(dir.join("work"))
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        tokio::fs::create_dir_all(dir.join("data"))
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        if self.sandbox_data {
            // Mounts made under it later then reach the running sandbox.
            super::workdisk::ensure_shared(&dir.join("data")).await;
        }
        // The image of a process notebook is the JupyterLab virtualenv.
        progress.event(EventKind::PullingImage, None).await;
        match self.env.ensure().await {
            Ok(built) => {
                let detail = built.then(|| format!("created {}", self.env.venv().display()));
                progress
                    .event(EventKind::PulledImage, detail.as_deref())
                    .await;
                Ok(())
            }
            Err(e) => {
                let msg = format!("preparing JupyterLab: {e:#}");
                progress.event(EventKind::PullImageFailed, Some(&msg)).await;
                Err(BackendError::Image(msg))
            }
        }
    }

    async fn launch(&self, spec: &NotebookSpec) -> Result<Handle, BackendError> {
        if !self.env.is_ready() {
            return Err(BackendError::Image(format!(
                "no JupyterLab in {}; it is created when a notebook is created",
                self.env.venv().display()
            )));
        }
        let dir = self.notebook_dir(&spec.id);
        let work = dir.join("work");
        let run = dir.join("run");
        tokio::fs::create_dir_all(&work)
            .await
            .context("creating the work dir")?;
        let _ = tokio::fs::remove_dir_all(&run).await;
        let config_dir = run.join("config");
        tokio::fs::create_dir_all(&config_dir)
            .await
            .context("creating the run dir")?;
        tokio::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
            .await
            .context("securing the run dir")?;

        let port = free_port().context("finding a free loopback port")?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        // Jupyter listens on loopback only. It refuses root unless told; the sandbox (no
        // capabilities), not the uid, confines it here.
        runconf::write_config_dir(
            &config_dir,
            &ServerConf {
                ip: "127.0.0.1",
                port,
                base_url: &spec.base_url,
                root_dir: &work,
                token: &token,
                allow_root: unsafe { libc::geteuid() } == 0,
            },
        )?;

        let venv = self.env.venv().to_path_buf();
        let jupyter = self.env.jupyter();
        let (home, runtime_dir) = match self.sandbox {
            Some(_) => (
                PathBuf::from("/tmp/home"),
                PathBuf::from("/tmp/jupyter-runtime"),
            ),
            None => (dir.join("home"), run.join("jupyter-runtime")),
        };
        if self.sandbox.is_none() {
            tokio::fs::create_dir_all(&home)
                .await
                .context("creating HOME")?;
        }
        let agent_dir = run.join("agent");
        tokio::fs::create_dir_all(&agent_dir)
            .await
            .context("creating the agent dir")?;
        let authorized_key = runconf::new_link_key(&run, &spec.id)?;
        let jupyter_argv = vec![jupyter.to_string_lossy().into_owned(), "lab".to_owned()];
        let path_var = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            venv.join("bin").display()
        );
        let env = json!({
            "PATH": path_var,
            "HOME": home,
            "LANG": "C.UTF-8",
            "SHELL": "/bin/bash",
            "VIRTUAL_ENV": venv,
            "PYTHONUNBUFFERED": "1",
            "JUPYTER_CONFIG_DIR": config_dir,
            "JUPYTER_PATH": config_dir,
            "JUPYTER_RUNTIME_DIR": runtime_dir,
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTERLAB_SETTINGS_DIR": home.join(".jupyter/lab/user-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": home.join(".jupyter/lab/workspaces"),
            "ATELIER_NOTEBOOK_ID": spec.id,
            "ATELIER_STORAGE_SOCKET": agent_dir.join(runconf::STORAGE_SOCKET),
            "PYTHONPATH": config_dir.join(runconf::PYTHON_DIR),
        });
        let log_file = agent_dir.join("jupyter.log");
        let ssh = json!({
            "socket": agent_dir.join(AGENT_SOCKET),
            "authorized_key": authorized_key,
        });
        // Without a sandbox one runtime does everything. With one, the runtime outside
        // supervises bwrap, and a second runtime inside it runs Jupyter and the SSH agent, so
        // SSH sessions share Jupyter's confinement (its /tmp, its processes).
        let runtime_spec = match &self.sandbox {
            None => json!({
                "argv": jupyter_argv,
                "env": env,
                "cwd": work,
                "log_file": log_file,
                "status_file": run.join("status.json"),
                "grace_seconds": self.grace_secs,
                "ssh": ssh,
            }),
            Some(bwrap) => {
                let inner = json!({
                    "argv": jupyter_argv,
                    "env": env,
                    "cwd": work,
                    "log_file": log_file,
                    "status_file": agent_dir.join("status.json"),
                    "grace_seconds": self.grace_secs,
                    "ssh": ssh,
                });
                let inner_path = agent_dir.join("spec.json");
                write_private(
                    &inner_path,
                    &serde_json::to_vec_pretty(&inner).context("spec")?,
                )?;
                let mut argv = sandbox_argv(
                    bwrap,
                    &SandboxPaths {
                        data_dir: &self.data_dir,
                        venv: &venv,
                        config_dir: &config_dir,
                        work: &work,
                        data: self.sandbox_data.then(|| dir.join("data")).as_deref(),
                        agent_dir: &agent_dir,
                        runtime_bin: &self.runtime_bin,
                    },
                );
                argv.extend([
                    self.runtime_bin.to_string_lossy().into_owned(),
                    "--spec".to_owned(),
                    inner_path.to_string_lossy().into_owned(),
                ]);
                json!({
                    "argv": argv,
                    "env": env,
                    "cwd": work,
                    "log_file": log_file,
                    "status_file": run.join("status.json"),
                    // The runtime inside needs a grace period for Jupyter and one for what
                    // is left; this one waits for both.
                    "grace_seconds": self.grace_secs * 2 + 2,
                })
            }
        };
        let spec_path = run.join("spec.json");
        write_private(
            &spec_path,
            &serde_json::to_vec_pretty(&runtime_spec).context("spec")?,
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join("runtime.log"))
            .context("opening runtime.log")?;
        let log2 = log.try_clone().context("runtime.log")?;

        let mut cmd = std::process::Command::new(&self.runtime_bin);
        cmd.arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        in_own_session(&mut cmd);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {}", self.runtime_bin.display()))?;
        let pid = child.id().context("runtime exited at once")? as i32;
        // Reap it when it exits while we still run; after a gateway restart init does.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let runtime_start_ticks =
            proc_start_ticks(pid).context("reading the runtime's start time")?;
        let handle = ProcessHandle {
            runtime_pid: pid,
            runtime_start_ticks,
            port,
            token,
        };
        let mut value = serde_json::to_value(&handle).context("handle")?;
        value["notebook_id"] = json!(spec.id);
        Ok(Handle(value))
    }

    async fn wait_ready(
        &self,
        spec: &NotebookSpec,
        handle: &Handle,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let url = format!("http://127.0.0.1:{}{}api/status", h.port, spec.base_url);
        let deadline = Instant::now() + timeout;
        loop {
            if !alive(h.runtime_pid, h.runtime_start_ticks) {
                return Err(BackendError::Start(format!(
                    "JupyterLab exited while starting: {}",
                    self.log_tail(&spec.id)
                )));
            }
            let answer = self
                .http
                .get(&url)
                .header("Authorization", format!("token {}", h.token))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BackendError::Start(format!(
                    "JupyterLab did not answer within {} s: {}",
                    timeout.as_secs(),
                    self.log_tail(&spec.id)
                )));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn poll(&self, handle: &Handle) -> Observed {
        let h = match Self::decode(handle) {
            Ok(h) => h,
            Err(e) => return Observed::Exited(e.to_string()),
        };
        let id = self.notebook_id_of(handle).unwrap_or_default();
        if !alive(h.runtime_pid, h.runtime_start_ticks) {
            return Observed::Exited(runconf::how_it_ended(self.runtime_status(&id)));
        }
        match runconf::jupyter_answers(&self.http, h.port, &id, &h.token).await {
            Ok(()) => Observed::Running,
            Err(e) => Observed::Unhealthy(e),
        }
    }

    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let id = self.notebook_id_of(handle).unwrap_or_default();
        if !alive(h.runtime_pid, h.runtime_start_ticks) {
            return Ok(());
        }
        // SAFETY: plain syscall; the pid was verified above by its start time.
        unsafe { libc::kill(h.runtime_pid, libc::SIGTERM) };
        // The runtime escalates to SIGKILL itself: grace for Jupyter, grace for leftover
        // kernels, then a few seconds to reap. Allow for all of that before stepping in.
        let deadline = Instant::now() + mode.grace * 2 + Duration::from_secs(10);
        while alive(h.runtime_pid, h.runtime_start_ticks) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if alive(h.runtime_pid, h.runtime_start_ticks) {
            tracing::warn!(notebook = %id, "runtime ignored SIGTERM; killing it and its process group");
            let child_pgid = self
                .runtime_status(&id)
                .and_then(|s| s.get("child_pid").and_then(|v| v.as_i64()))
                .map(|p| p as i32);
            // SAFETY: plain syscalls on verified pids.
            unsafe {
                libc::kill(h.runtime_pid, libc::SIGKILL);
                if let Some(pg) = child_pgid.filter(|p| *p > 1) {
                    libc::kill(-pg, libc::SIGKILL);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(h.runtime_pid, h.runtime_start_ticks) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        let nb = self.notebook_dir(id);
        let _ = super::workdisk::unmount_all(&nb.join("data")).await;
        runconf::remove_notebook_dir(&nb).await
    }

    fn storage_socket(&self, id: &str) -> Result<PathBuf, BackendError> {
        Ok(self
            .notebook_dir(id)
            .join("run/agent")
            .join(runconf::STORAGE_SOCKET))
    }

    fn mount_place(&self, id: &str, path: &str) -> Result<MountPlace, BackendError> {
        // The notebook sees its work dir at the host path (also inside the sandbox).
        let nb = self.notebook_dir(id);
        let inside = nb.join("work").to_string_lossy().into_owned();
        super::place_in_work_dir(&nb, path, &inside, None, self.name())
    }

    fn data_dir(&self, id: &str) -> Result<DataDir, BackendError> {
        let host = self.notebook_dir(id).join("data");
        if self.sandbox.is_none() {
            // Unconfined: the notebook sees the host's files and mounts as they are.
            return Ok(DataDir {
                inside: host.clone(),
                host,
                owner: None,
                live: true,
            });
        }
        if !self.sandbox_data {
            return Err(BackendError::Unsupported(
                "notebooks have no /data here: the host has no /data directory for the sandbox to bind over; create an empty one (as root: mkdir /data) and restart the gateway".into(),
            ));
        }
        Ok(DataDir {
            live: super::workdisk::is_mounted(&host),
            host,
            inside: PathBuf::from("/data"),
            owner: None,
        })
    }

    async fn ssh_link(&self, handle: &Handle) -> Result<SshLink, BackendError> {
        let id = self.notebook_id_of(handle).unwrap_or_default();
        runconf::ssh_link(&self.notebook_dir(&id).join("run")).await
    }

    async fn usage(&self, handle: &Handle) -> Option<Usage> {
        let h = Self::decode(handle).ok()?;
        if !alive(h.runtime_pid, h.runtime_start_ticks) {
            return None;
        }
        tokio::task::spawn_blocking(move || tree_usage(h.runtime_pid))
            .await
            .ok()
            .flatten()
    }

    fn upstream(&self, handle: &Handle) -> Result<Upstream, BackendError> {
        let h = Self::decode(handle)?;
        Ok(Upstream {
            addr: ([127, 0, 0, 1], h.port).into(),
            token: h.token,
        })
    }
}

/// bubblewrap around Jupyter: the filesystem read-only but for the work dir and a private
/// `/tmp`; the gateway's data dir (database, other notebooks) hidden under an empty tmpfs with
/// only the virtualenv and this notebook's Jupyter config put back; its own PID namespace and
/// `/proc`, so no other process (and no other process's root) can be reached; and no
/// capabilities, so a notebook running as root cannot undo any of it.
/// What the sandbox puts back into the hidden data dir.
struct SandboxPaths<'a> {
    data_dir: &'a Path,
    venv: &'a Path,
    config_dir: &'a Path,
    work: &'a Path,
    /// `<nb>/data`, bound at `/data` (object-storage mounts).
    data: Option<&'a Path>,
    /// The runtime's side of the run dir (its spec, status, log and SSH socket), writable.
    agent_dir: &'a Path,
    runtime_bin: &'a Path,
}

fn sandbox_argv(bwrap: &Path, p: &SandboxPaths) -> Vec<String> {
    let SandboxPaths {
        data_dir,
        venv,
        config_dir,
        work,
        data,
        agent_dir,
        runtime_bin,
    } = *p;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut a: Vec<String> = vec![s(bwrap)];
    let mut push = |args: &[&str]| a.extend(args.iter().map(|x| x.to_string()));
    push(&[
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--unshare-pid",
        "--proc",
        "/proc",
    ]);
    push(&["--cap-drop", "ALL", "--tmpfs", "/tmp", "--dir", "/tmp/home"]);
    push(&["--tmpfs", &s(data_dir)]);
    push(&["--ro-bind", &s(venv), &s(venv)]);
    push(&["--ro-bind", &s(config_dir), &s(config_dir)]);
    push(&["--ro-bind", &s(runtime_bin), &s(runtime_bin)]);
    push(&["--bind", &s(agent_dir), &s(agent_dir)]);
    if let Some(data) = data {
        push(&["--bind", &s(data), "/data"]);
    }
    push(&["--bind", &s(work), &s(work), "--chdir", &s(work), "--"]);
    a
}

/// `root` and all its descendants: their PIDs and CPU time (`utime + stime + cutime +
/// cstime` from `/proc/<pid>/stat`, so children that were reaped still count), in seconds.
pub(super) fn tree_usage(root: i32) -> Option<Usage> {
    let mut parent: std::collections::HashMap<i32, i32> = std::collections::HashMap::new();
    let mut ticks: std::collections::HashMap<i32, u64> = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces and parentheses).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] = state (field 3), f[1] = ppid (4), f[11..15] = utime, stime, cutime, cstime.
        let (Some(ppid), Some(cpu)) = (
            f.get(1).and_then(|v| v.parse::<i32>().ok()),
            f.get(11..15)
                .map(|t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum::<u64>()),
        ) else {
            continue;
        };
        parent.insert(pid, ppid);
        ticks.insert(pid, cpu);
    }
    if !ticks.contains_key(&root) {
        return None;
    }
    let mut total = 0u64;
    let mut pids = Vec::new();
    for (&pid, &cpu) in &ticks {
        let mut p = pid;
        // Walk up to the root (bounded: pid chains are short, loops impossible but cheap to
        // guard against).
        for _ in 0..64 {
            if p == root {
                total += cpu;
                pids.push(pid as u32);
                break;
            }
            match parent.get(&p) {
                Some(&pp) if pp > 0 => p = pp,
                _ => break,
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Usage {
        cpu_seconds: total as f64 / hz,
        pids,
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// A process's state letter (`R`, `S`, `D`, `Z`, …) from `/proc/<pid>/stat`.
pub(super) fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
/// Starts `cmd` in a session of its own: no signal from the gateway's terminal or process
/// group reaches it, and it survives the gateway (notebook runtimes, mount servers).
pub(crate) fn in_own_session(cmd: &mut std::process::Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub(crate) fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub(crate) fn alive(pid: i32, start_ticks: u64) -> bool {
    proc_start_ticks(pid) == Some(start_ticks)
}

fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let bwrap = std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())?;
    let works = std::process::Command::new(&bwrap)
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        tracing::warn!(bwrap = %bwrap.display(), "bubblewrap is installed but cannot create a sandbox here");
    }
    works.then_some(bwrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_hides_the_data_dir_and_drops_privileges() {
        let p = |x: &str| PathBuf::from(x);
        let argv = sandbox_argv(
            &p("/usr/bin/bwrap"),
            &SandboxPaths {
                data_dir: &p("/d"),
                venv: &p("/d/venv"),
                config_dir: &p("/d/nb/1/run/config"),
                work: &p("/d/nb/1/work"),
                data: Some(&p("/d/nb/1/data")),
                agent_dir: &p("/d/nb/1/run/agent"),
                runtime_bin: &p("/opt/atelier/atelier-notebook-runtime"),
            },
        );
        let joined = argv.join(" ");
        for needed in [
            "--unshare-pid",
            "--proc /proc",
            "--cap-drop ALL",
            "--tmpfs /d",
            "--bind /d/nb/1/work /d/nb/1/work",
            "--bind /d/nb/1/run/agent /d/nb/1/run/agent",
            "--bind /d/nb/1/data /data",
            "--ro-bind /opt/atelier/atelier-notebook-runtime /opt/atelier/atelier-notebook-runtime",
        ] {
            assert!(joined.contains(needed), "{needed} missing from {joined}");
        }
        // Order matters: the data dir is hidden before the pieces are put back.
        let hide = joined.find("--tmpfs /d").unwrap();
        assert!(hide < joined.find("--ro-bind /d/venv").unwrap());
        assert!(hide < joined.find("--bind /d/nb/1/work").unwrap());
        assert!(hide < joined.find("--bind /d/nb/1/run/agent").unwrap());
        assert!(hide < joined.find("--bind /d/nb/1/data /data").unwrap());
        assert_eq!(argv.last().map(String::as_str), Some("--"));
    }

    #[test]
    fn cpu_time_of_a_process_tree_grows_with_work() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let first = tree_usage(me).unwrap();
        assert!(first.pids.contains(&(me as u32)));
        assert!(first.pids.contains(&child.id()), "{:?}", first.pids);
        let _ = child.kill();
        let _ = child.wait();
        let before = first.cpu_seconds;
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = tree_usage(me).unwrap().cpu_seconds;
        assert!(after > before, "{before} -> {after}");
        assert_eq!(tree_usage(i32::MAX - 1), None);
    }

    #[test]
    fn start_ticks_identify_live_processes() {
        let me = std::process::id() as i32;
        let ticks = proc_start_ticks(me).unwrap();
        assert!(alive(me, ticks));
        assert!(!alive(me, ticks + 1));
        assert!(!alive(i32::MAX - 1, ticks));
    }
}
