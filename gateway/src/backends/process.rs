//! The `process` backend, the embedded default: each notebook is a real JupyterLab server in
//! a child process tree on this machine, supervised by `atelier-notebook-runtime`, inside a
//! sandbox (`backends::sandbox`: bubblewrap, its own network namespace, cgroup limits).
//!
//! ```text
//! gateway ──spawn (own session, the notebook's cgroup)──► atelier-notebook-runtime --spec run/spec.json
//!   sandboxed:   └─► bwrap … atelier-notebook-runtime --spec /run/atelier/spec.json (as ma-user)
//!                      ├─► jupyter lab on /run/atelier/jupyter.sock
//!                      └─  SSH agent on /run/atelier/ssh.sock
//!   unconfined (ATELIER_SANDBOX=none): one runtime, Jupyter on a loopback port, the
//!                gateway's user and network
//! <data>/notebooks/{id}/work       the notebook's files (/home/ma-user/work): survive stop,
//!                                  removed by delete; owned by ma-user
//! <data>/notebooks/{id}/data       /data: object-storage mounts
//! <data>/notebooks/{id}/run        root's: specs, the SSH link key, sandbox.log, status.json
//! <data>/notebooks/{id}/run/agent  /run/atelier, ma-user's: the inner status, jupyter.log,
//!                                  the Jupyter and SSH sockets (read only through `confined`),
//!                                  atelier.file's socket (the agent's; the gateway never
//!                                  opens it)
//! <data>/notebooks/{id}/run/config /run/atelier-config (read-only): Jupyter's config, token
//! ```
//!
//! The runtime runs in its own session, so it outlives the gateway (also a `kill -9`); the
//! handle records its pid and start time, which is how a restarted gateway finds it again
//! without being fooled by a reused pid.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use atelier_notebook_runtime::spec::{ForwardSpec, Spec as RuntimeSpec, SshSpec, UserSpec};

use super::files::{HostFiles, NotebookFiles};
use super::jupyter_env::JupyterEnv;
use super::runconf::{self, AGENT_SOCKET, Listen, ServerConf, write_private};
use super::sandbox::{self, Confinement, Sandbox};
use super::{
    Backend, BackendError, Endpoint, EngineSpec, Handle, NotebookSpec, Observed, Progress, SshLink,
    StopMode, Upstream, Usage, WorkerExit, WorkerSpec,
};
use crate::config::Settings;
use crate::lifecycle::handle::ProcessHandle;
use crate::procs::{alive, in_own_session, signal, start_ticks};
use crate::store::events::EventKind;
use rustix::process::{Pid, Signal};

pub struct ProcessBackend {
    data_dir: PathBuf,
    env: JupyterEnv,
    runtime_bin: PathBuf,
    /// Where training jobs without an image run (`training.venv`; none: `env`'s).
    training_venv: Option<PathBuf>,
    confinement: Confinement,
    /// SIGTERM to SIGKILL, applied by the runtime to Jupyter and its kernels.
    grace_secs: u64,
    /// What the host's root holds, read once (the sandbox shows it read-only).
    host_root: sandbox::HostRoot,
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
        Ok(ProcessBackend {
            data_dir: settings.data_dir.clone(),
            env: JupyterEnv::new(
                settings.jupyter_venv(),
                settings.backend.python.clone(),
                settings.backend.jupyterlab_requirement.clone(),
            ),
            runtime_bin,
            training_venv: settings.training.venv.clone(),
            confinement: Confinement::detect(settings)?,
            grace_secs: settings.backend.stop_grace_secs,
            host_root: sandbox::HostRoot::read(),
        })
    }

    fn notebook_dir(&self, id: &str) -> PathBuf {
        runconf::notebook_dir(&self.data_dir, id)
    }

    fn sandbox(&self) -> Option<&Sandbox> {
        match &self.confinement {
            Confinement::Sandboxed(s) => Some(s),
            _ => None,
        }
    }

    fn refused(&self) -> Result<(), BackendError> {
        match &self.confinement {
            Confinement::Refused(why) => Err(BackendError::Start(why.clone())),
            _ => Ok(()),
        }
    }

    fn decode(handle: &Handle) -> Result<ProcessHandle, BackendError> {
        match handle {
            Handle::Process(h) => Ok(h.clone()),
            other => Err(BackendError::Other(anyhow::anyhow!(
                other.not_for("process")
            ))),
        }
    }

    /// An engine instance's directory (`<data>/engines/{id}`: `run/` as a notebook's).
    fn engine_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("engines").join(id)
    }

    /// The directory of what `h` launched: a notebook's or an engine instance's.
    fn dir_of(&self, h: &ProcessHandle) -> PathBuf {
        if h.engine {
            self.engine_dir(&h.notebook_id)
        } else {
            self.notebook_dir(&h.notebook_id)
        }
    }

    /// The runtime's status file, written by the runtime outside the sandbox (root's dir).
    fn runtime_status(&self, dir: &Path) -> Option<serde_json::Value> {
        runconf::runtime_status(&dir.join("run/status.json"))
    }

    /// The end of Jupyter's log (in the notebook's own dir: read through `confined`), or of
    /// the sandbox's when Jupyter wrote nothing (bubblewrap's own errors go there).
    fn log_tail(&self, id: &str) -> String {
        let run = self.notebook_dir(id).join("run");
        let jupyter = crate::confined::Dir::open(&run.join("agent"))
            .map(|d| d.read_tail(OsStr::new("jupyter.log"), 12, 64 * 1024))
            .unwrap_or_default();
        if !jupyter.trim().is_empty() {
            return jupyter;
        }
        runconf::log_tail(&run.join("sandbox.log"), 12)
    }

    fn notebook_id_of(&self, handle: &Handle) -> Option<String> {
        match handle {
            Handle::Process(h) => Some(h.notebook_id.clone()),
            _ => None,
        }
    }

    fn endpoint(&self, id: &str, h: &ProcessHandle) -> Endpoint {
        match h.port {
            Some(port) => Endpoint::Tcp(([127, 0, 0, 1], port).into()),
            None => Endpoint::Unix {
                dir: self.notebook_dir(id).join("run/agent"),
                name: sandbox::JUPYTER_SOCKET.to_owned(),
            },
        }
    }

    /// Gives the work dir to ma-user (a work dir from before notebooks ran as ma-user is
    /// handed over whole, without following its links).
    fn own_work_dir(&self, work: &Path) -> Result<(), BackendError> {
        let dir = crate::confined::Dir::open(work)
            .with_context(|| format!("opening the work dir {}", work.display()))?;
        if dir.owner().context("reading the work dir's owner")? != (sandbox::UID, sandbox::GID) {
            let n = dir
                .chown_tree(sandbox::UID, sandbox::GID)
                .with_context(|| format!("giving {} to ma-user", work.display()))?;
            tracing::info!(work = %work.display(), entries = n, "work dir handed to ma-user");
        }
        Ok(())
    }

    /// Writes the outer runtime spec to `run/spec.json` and starts the runtime; its pid and
    /// start time.
    fn start_runtime(
        &self,
        id: &str,
        flavor: &crate::config::Flavor,
        runtime_spec: &RuntimeSpec,
        run: &Path,
        join: Option<std::os::fd::OwnedFd>,
    ) -> Result<(i32, u64), BackendError> {
        let spec_path = run.join("spec.json");
        write_private(
            &spec_path,
            &serde_json::to_vec_pretty(runtime_spec).context("spec")?,
        )?;
        let pid = self.spawn_runtime(id, flavor, &spec_path, run, join)?;
        let ticks = start_ticks(pid).context("reading the runtime's start time")?;
        Ok((pid, ticks))
    }

    /// Spawns the runtime in a session of its own (and, sandboxed, in the notebook's
    /// cgroup); returns its pid.
    fn spawn_runtime(
        &self,
        id: &str,
        flavor: &crate::config::Flavor,
        spec_path: &Path,
        run: &Path,
        join: Option<std::os::fd::OwnedFd>,
    ) -> Result<i32, BackendError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join("runtime.log"))
            .context("opening runtime.log")?;
        let log2 = log.try_clone().context("runtime.log")?;
        let mut cmd = std::process::Command::new(&self.runtime_bin);
        cmd.arg("--spec")
            .arg(spec_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        in_own_session(&mut cmd);
        if let Some(s) = self.sandbox() {
            let entry = s
                .cgroups
                .prepare(id, flavor)
                .with_context(|| format!("making the notebook's cgroups ({:?})", s.cgroups))?;
            let own_network = s.root;
            // Closed when this function returns (the child has its copy by then).
            let join = join.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
            // SAFETY: Entry::enter only writes to descriptors opened before the fork;
            // enter_new_network makes syscalls on stack data; join_network uses a
            // descriptor opened before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    entry.enter()?;
                    match join {
                        Some(fd) => sandbox::join_network(fd)?,
                        None if own_network => sandbox::enter_new_network()?,
                        None => {}
                    }
                    Ok(())
                });
            }
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {}", self.runtime_bin.display()))?;
        let pid = child.id().context("runtime exited at once")? as i32;
        // Reap it when it exits while we still run; after a gateway restart init does.
        // Untracked: the runtime outlives the gateway, so shutdown waits for nothing here.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(pid)
    }

    /// Everything a sandboxed launch writes: the run dir (root's), the agent dir
    /// (ma-user's), Jupyter's config (read-only to it), the specs. Returns the outer spec.
    fn write_sandboxed(
        &self,
        s: &Sandbox,
        spec: &NotebookSpec,
        dir: &Path,
        token: &str,
    ) -> Result<RuntimeSpec, BackendError> {
        let run = dir.join("run");
        let (config_dir, agent_dir) = (run.join("config"), run.join("agent"));
        for d in [&config_dir, &agent_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let sock = format!("{}/{}", sandbox::AGENT, sandbox::JUPYTER_SOCKET);
        runconf::write_config_dir(
            &config_dir,
            &ServerConf {
                listen: Listen::Unix(&sock),
                base_url: &spec.base_url,
                root_dir: Path::new(sandbox::WORK),
                token,
                allow_root: false,
            },
        )?;
        // Jupyter (ma-user) reads its config and token; the dir is bound read-only.
        chown_fresh_tree(&config_dir).context("handing Jupyter's config to ma-user")?;
        write_accounts(&run)?;

        let venv = self.env.venv().to_path_buf();
        let home = PathBuf::from(sandbox::HOME);
        let mut env = jupyter_env(&Places {
            home: &home,
            venv: &venv,
            config: Path::new(sandbox::CONFIG),
            runtime_dir: &home.join(".local/share/jupyter/runtime"),
            storage_socket: &Path::new(sandbox::AGENT).join(runconf::STORAGE_SOCKET),
            notebook_id: &spec.id,
        });
        env.insert("USER".into(), "ma-user".into());
        env.insert("MA_HOME".into(), text(&home));
        let authorized_key = runconf::new_link_key(&run, &spec.id)?;
        let inner = RuntimeSpec {
            argv: vec![text(&self.env.jupyter()), "lab".into()],
            env,
            cwd: sandbox::WORK.into(),
            log_file: format!("{}/jupyter.log", sandbox::AGENT).into(),
            status_file: format!("{}/status.json", sandbox::AGENT).into(),
            grace_seconds: self.grace_secs,
            ssh: Some(SshSpec {
                socket: format!("{}/{AGENT_SOCKET}", sandbox::AGENT).into(),
                authorized_key,
                file_socket: Some(Path::new(sandbox::AGENT).join(runconf::STORAGE_SOCKET)),
                shell: None,
            }),
            user: s.root.then(|| UserSpec {
                uid: sandbox::UID,
                gid: sandbox::GID,
                home: Some(home.clone()),
            }),
            forward: None,
            connect_back: None,
        };
        // Root's, written before the notebook exists; the runtime inside reads it as root.
        write_private(
            &agent_dir.join("spec.json"),
            &serde_json::to_vec_pretty(&inner).context("spec")?,
        )?;
        crate::confined::Dir::open(&agent_dir)
            .and_then(|d| d.chown_self(sandbox::UID, sandbox::GID))
            .context("handing the agent dir to ma-user")?;

        let python_home = sandbox::python_home(&venv);
        let extra_ro: Vec<PathBuf> = sandbox::resolv_conf_dir().into_iter().collect();
        let hostname = format!("nb-{}", spec.id.chars().take(8).collect::<String>());
        let argv = sandbox::argv(
            s,
            &self.host_root,
            &sandbox::Paths {
                venv: &venv,
                python_home: python_home.as_deref(),
                runtime_bin: &self.runtime_bin,
                work: Some(&dir.join("work")),
                data: Some(&dir.join("data")),
                agent_dir: &agent_dir,
                config_dir: Some(&config_dir),
                model: None,
                passwd: &run.join("passwd"),
                group: &run.join("group"),
                extra_ro: &extra_ro,
                binds: &[],
                ro_binds: &[],
                hosts: None,
                hostname: &hostname,
            },
        );
        Ok(self.outer_spec(argv, &run))
    }

    /// The runtime outside the sandbox: it runs bubblewrap (`argv`, up to `--`) with the
    /// runtime inside reading `/run/atelier/spec.json`.
    fn outer_spec(&self, mut argv: Vec<String>, run: &Path) -> RuntimeSpec {
        argv.extend([
            self.runtime_bin.to_string_lossy().into_owned(),
            "--spec".to_owned(),
            format!("{}/spec.json", sandbox::AGENT),
        ]);
        RuntimeSpec {
            argv,
            env: env_of([
                ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
                ("LANG", "C.UTF-8".into()),
            ]),
            cwd: run.to_path_buf(),
            // bubblewrap's own messages; the server's log is inside.
            log_file: run.join("sandbox.log"),
            status_file: run.join("status.json"),
            // The runtime inside needs a grace period for its child and one for what is
            // left; this one waits for both.
            grace_seconds: self.grace_secs * 2 + 2,
            ssh: None,
            user: None,
            forward: None,
            connect_back: None,
        }
    }

    /// An unconfined launch (`ATELIER_SANDBOX=none`): the gateway's user, a loopback port,
    /// host paths. Returns the spec and the port.
    fn write_unconfined(
        &self,
        spec: &NotebookSpec,
        dir: &Path,
        token: &str,
    ) -> Result<(RuntimeSpec, u16), BackendError> {
        let (work, run) = (dir.join("work"), dir.join("run"));
        let (config_dir, agent_dir) = (run.join("config"), run.join("agent"));
        for d in [&config_dir, &agent_dir, &dir.join("home")] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let port = free_port().context("finding a free loopback port")?;
        runconf::write_config_dir(
            &config_dir,
            &ServerConf {
                listen: Listen::Tcp {
                    ip: "127.0.0.1",
                    port,
                },
                base_url: &spec.base_url,
                root_dir: &work,
                token,
                // SAFETY: no preconditions.
                allow_root: unsafe { libc::geteuid() } == 0,
            },
        )?;
        let venv = self.env.venv().to_path_buf();
        let home = dir.join("home");
        let env = jupyter_env(&Places {
            home: &home,
            venv: &venv,
            config: &config_dir,
            runtime_dir: &run.join("jupyter-runtime"),
            storage_socket: &agent_dir.join(runconf::STORAGE_SOCKET),
            notebook_id: &spec.id,
        });
        let authorized_key = runconf::new_link_key(&run, &spec.id)?;
        Ok((
            RuntimeSpec {
                argv: vec![text(&self.env.jupyter()), "lab".into()],
                env,
                cwd: work,
                log_file: agent_dir.join("jupyter.log"),
                status_file: run.join("status.json"),
                grace_seconds: self.grace_secs,
                ssh: Some(SshSpec {
                    socket: agent_dir.join(AGENT_SOCKET),
                    authorized_key,
                    file_socket: Some(agent_dir.join(runconf::STORAGE_SOCKET)),
                    shell: None,
                }),
                user: None,
                forward: None,
                connect_back: None,
            },
            port,
        ))
    }
}

impl ProcessBackend {
    /// The runtime specs of an engine instance (sandboxed only): the inner one runs the start
    /// command as ma-user with the model's files at /home/mind/model, and relays
    /// `/run/atelier/engine.sock` to its loopback's port 8080. Returns the outer spec.
    fn write_engine(
        &self,
        s: &Sandbox,
        spec: &EngineSpec,
        run: &Path,
    ) -> Result<RuntimeSpec, BackendError> {
        let agent_dir = run.join("agent");
        std::fs::create_dir_all(&agent_dir)
            .with_context(|| format!("creating {}", agent_dir.display()))?;
        write_accounts(run)?;
        let venv = self.env.venv().to_path_buf();
        let home = PathBuf::from(sandbox::HOME);
        let mut env = spec.env.clone();
        for (k, v) in [
            (
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", text(&venv.join("bin"))),
            ),
            ("HOME", text(&home)),
            ("USER", "ma-user".into()),
            ("LANG", "C.UTF-8".into()),
            ("PYTHONUNBUFFERED", "1".into()),
            ("MODEL_DIR", super::MODEL_DIR.into()),
            ("MODELARTS_SERVICE_PORT", super::ENGINE_PORT.to_string()),
        ] {
            env.insert(k.into(), v);
        }
        let authorized_key = runconf::new_link_key(run, &spec.id)?;
        let agent = Path::new(sandbox::AGENT);
        let inner = RuntimeSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), spec.command.clone()],
            env,
            cwd: if spec.model_dir.is_some() {
                super::MODEL_DIR.into()
            } else {
                home.clone()
            },
            log_file: agent.join(super::ENGINE_LOG),
            status_file: agent.join("status.json"),
            grace_seconds: self.grace_secs,
            ssh: Some(SshSpec {
                socket: agent.join(AGENT_SOCKET),
                authorized_key,
                file_socket: None,
                shell: None,
            }),
            user: s.root.then(|| UserSpec {
                uid: sandbox::UID,
                gid: sandbox::GID,
                home: Some(home.clone()),
            }),
            forward: Some(ForwardSpec {
                socket: agent.join(super::ENGINE_SOCKET),
                port: super::ENGINE_PORT,
            }),
            connect_back: None,
        };
        write_private(
            &agent_dir.join("spec.json"),
            &serde_json::to_vec_pretty(&inner).context("spec")?,
        )?;
        crate::confined::Dir::open(&agent_dir)
            .and_then(|d| d.chown_self(sandbox::UID, sandbox::GID))
            .context("handing the agent dir to ma-user")?;
        let python_home = sandbox::python_home(&venv);
        let hostname = format!("engine-{}", spec.id.chars().take(8).collect::<String>());
        let argv = sandbox::argv(
            s,
            &self.host_root,
            &sandbox::Paths {
                venv: &venv,
                python_home: python_home.as_deref(),
                runtime_bin: &self.runtime_bin,
                work: None,
                data: None,
                agent_dir: &agent_dir,
                config_dir: None,
                model: spec.model_dir.as_deref(),
                passwd: &run.join("passwd"),
                group: &run.join("group"),
                extra_ro: &[],
                binds: &[],
                ro_binds: &[],
                hosts: None,
                hostname: &hostname,
            },
        );
        Ok(self.outer_spec(argv, run))
    }

    /// [`Backend::launch_engine`].
    /// An engine instance's run dir and specs (see [`Self::start_engine`]): the outer
    /// runtime's spec (not yet written) and the run dir. Shared with the slurm backend.
    pub(super) async fn write_engine_launch(
        &self,
        spec: &EngineSpec,
    ) -> Result<(RuntimeSpec, PathBuf), BackendError> {
        self.refused()?;
        let Some(s) = self.sandbox() else {
            return Err(BackendError::Unsupported(
                "model engines need the sandbox (each instance listens on port 8080 in a network namespace of its own); with ATELIER_SANDBOX=none the process backend serves ONNX models on the built-in engine only".into(),
            ));
        };
        if spec.image.is_some() {
            return Err(BackendError::Unsupported(
                "the process backend runs no container images: a model imported from an image needs the docker backend; on this one, import the model's files with a start command".into(),
            ));
        }
        if spec.command.trim().is_empty() {
            return Err(BackendError::Start(
                "the model has no start command: on the process backend a model engine is the command that serves it on port 8080 (the version's start_command)".into(),
            ));
        }
        if !self.env.is_ready() {
            self.env
                .ensure()
                .await
                .map_err(|e| BackendError::Image(format!("preparing the virtualenv: {e:#}")))?;
        }
        let dir = self.engine_dir(&spec.id);
        let run = dir.join("run");
        let _ = tokio::fs::remove_dir_all(&run).await;
        tokio::fs::create_dir_all(&run)
            .await
            .context("creating the run dir")?;
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .await
            .context("securing the instance's dir")?;
        let runtime_spec = self.write_engine(s, spec, &run)?;
        Ok((runtime_spec, run))
    }

    async fn start_engine(&self, spec: &EngineSpec) -> Result<Handle, BackendError> {
        let (runtime_spec, run) = self.write_engine_launch(spec).await?;
        let (runtime_pid, runtime_start_ticks) =
            self.start_runtime(&spec.id, &spec.flavor, &runtime_spec, &run, None)?;
        Ok(Handle::Process(ProcessHandle {
            notebook_id: spec.id.clone(),
            runtime_pid,
            runtime_start_ticks,
            port: None,
            token: String::new(),
            engine: true,
        }))
    }
}

impl ProcessBackend {
    /// The sandbox a training worker runs in, or why it cannot run here.
    fn worker_sandbox(&self, spec: &WorkerSpec) -> Result<&Sandbox, BackendError> {
        self.refused()?;
        let Some(s) = self.sandbox() else {
            return Err(BackendError::Unsupported(
                "training jobs need the sandbox (each job runs in a network namespace of its own, as ma-user); with ATELIER_SANDBOX=none the process backend runs no training jobs".into(),
            ));
        };
        if spec.image.is_some() {
            return Err(BackendError::Unsupported(
                "the process backend runs no container images: leave the job's image out (it runs in the training environment, training.venv) or use the docker backend".into(),
            ));
        }
        Ok(s)
    }

    /// A training worker's run dir, specs and sandbox (see [`Self::start_worker`]), its
    /// command prefixed with `prefix`: the outer runtime's spec (not yet written) and the
    /// run dir. Shared with the slurm backend.
    pub(super) async fn write_worker(
        &self,
        spec: &WorkerSpec,
        prefix: &str,
    ) -> Result<(RuntimeSpec, PathBuf), BackendError> {
        let s = self.worker_sandbox(spec)?;
        let venv = match &self.training_venv {
            Some(v) => v.clone(),
            None => {
                if !self.env.is_ready() {
                    self.env.ensure().await.map_err(|e| {
                        BackendError::Image(format!("preparing the virtualenv: {e:#}"))
                    })?;
                }
                self.env.venv().to_path_buf()
            }
        };
        let dir = self.engine_dir(&spec.id);
        let run = dir.join("run");
        let _ = tokio::fs::remove_dir_all(&run).await;
        tokio::fs::create_dir_all(&run)
            .await
            .context("creating the run dir")?;
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .await
            .context("securing the worker's dir")?;
        let agent_dir = run.join("agent");
        std::fs::create_dir_all(&agent_dir)
            .with_context(|| format!("creating {}", agent_dir.display()))?;
        write_accounts(&run)?;
        let home = PathBuf::from(sandbox::HOME);
        let mut env = spec.env.clone();
        let path = match env.get("PATH") {
            Some(p) => format!("{}:{p}", text(&venv.join("bin"))),
            None => format!("{}:/usr/local/bin:/usr/bin:/bin", text(&venv.join("bin"))),
        };
        for (k, v) in [
            ("PATH", path),
            ("HOME", text(&home)),
            ("USER", "ma-user".into()),
            ("LANG", "C.UTF-8".into()),
            ("PYTHONUNBUFFERED", "1".into()),
            ("HOSTNAME", spec.hostname.clone()),
        ] {
            env.insert(k.into(), v);
        }
        let agent = Path::new(sandbox::AGENT);
        let inner = RuntimeSpec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{prefix}{}", spec.command),
            ],
            env,
            cwd: home.clone(),
            log_file: agent.join(super::WORKER_LOG),
            status_file: agent.join("status.json"),
            grace_seconds: self.grace_secs,
            ssh: None,
            user: s.root.then(|| UserSpec {
                uid: sandbox::UID,
                gid: sandbox::GID,
                home: Some(home.clone()),
            }),
            forward: None,
            connect_back: None,
        };
        write_private(
            &agent_dir.join("spec.json"),
            &serde_json::to_vec_pretty(&inner).context("spec")?,
        )?;
        crate::confined::Dir::open(&agent_dir)
            .and_then(|d| d.chown_self(sandbox::UID, sandbox::GID))
            .context("handing the agent dir to ma-user")?;
        let python_home = sandbox::python_home(&venv);
        let extra_ro: Vec<PathBuf> = sandbox::resolv_conf_dir().into_iter().collect();
        let binds = [(spec.mount.clone(), super::TRAINING_MOUNT.to_string())];
        let argv = sandbox::argv(
            s,
            &self.host_root,
            &sandbox::Paths {
                venv: &venv,
                python_home: python_home.as_deref(),
                runtime_bin: &self.runtime_bin,
                work: None,
                data: None,
                agent_dir: &agent_dir,
                config_dir: None,
                model: None,
                passwd: &run.join("passwd"),
                group: &run.join("group"),
                extra_ro: &extra_ro,
                binds: &binds,
                ro_binds: &spec.read_only,
                hosts: spec.hosts.as_deref(),
                hostname: &spec.hostname,
            },
        );
        Ok((self.outer_spec(argv, &run), run))
    }

    /// [`Backend::launch_worker`]: the worker's run dir (root's), its agent dir (ma-user's:
    /// the log), the specs; then the runtime, in worker 0's network when it is a later one.
    async fn start_worker(&self, spec: &WorkerSpec) -> Result<Handle, BackendError> {
        let s = self.worker_sandbox(spec)?;
        let join = match &spec.network_of {
            Some(first) => {
                let h = Self::decode(first)?;
                if !alive(h.runtime_pid, h.runtime_start_ticks) {
                    return Err(BackendError::Start(
                        "worker 0 ended before this worker started".into(),
                    ));
                }
                Some(
                    sandbox::open_network_of(h.runtime_pid)
                        .context("opening worker 0's network namespace")?,
                )
            }
            None => None,
        };
        let (runtime_spec, run) = self.write_worker(spec, "").await?;
        let first = join.is_none();
        let (runtime_pid, runtime_start_ticks) =
            self.start_runtime(&spec.id, &spec.flavor, &runtime_spec, &run, join)?;
        let handle = Handle::Process(ProcessHandle {
            notebook_id: spec.id.clone(),
            runtime_pid,
            runtime_start_ticks,
            port: None,
            token: String::new(),
            engine: true,
        });
        // The job's network gets egress once, through worker 0 (the others share it).
        if first && s.root {
            let entry = s
                .cgroups
                .prepare(&spec.id, &spec.flavor)
                .context("opening the worker's cgroups")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            if let Err(e) =
                sandbox::attach_network(s, &spec.id, runtime_pid, &run, entry, deadline).await
            {
                let _ = self
                    .stop(
                        &handle,
                        StopMode {
                            grace: Duration::from_secs(1),
                        },
                    )
                    .await;
                return Err(BackendError::Start(format!(
                    "giving the job its network: {e}"
                )));
            }
        }
        Ok(handle)
    }
}

/// What a notebook's launch wrote before anything runs (see [`ProcessBackend::write_launch`]).
pub(super) struct Written {
    /// The outer runtime's spec (not yet written: the caller may add to it).
    pub runtime: RuntimeSpec,
    /// The run dir (root's, 0700).
    pub run: PathBuf,
    /// Jupyter's loopback port (unconfined); `None`: its socket in the agent dir.
    pub port: Option<u16>,
    pub token: String,
}

impl ProcessBackend {
    /// A fresh run dir with Jupyter's config, token and the inner spec, for a notebook
    /// prepared already; the outer runtime's spec is returned, not yet written. Shared with
    /// the slurm backend, whose nodes run the same runtime from the shared dir.
    pub(super) async fn write_launch(&self, spec: &NotebookSpec) -> Result<Written, BackendError> {
        self.refused()?;
        if !self.env.is_ready() {
            return Err(BackendError::Image(format!(
                "no JupyterLab in {}; it is created when a notebook is created",
                self.env.venv().display()
            )));
        }
        let dir = self.notebook_dir(&spec.id);
        let run = dir.join("run");
        tokio::fs::create_dir_all(dir.join("work"))
            .await
            .context("creating the work dir")?;
        // The run dir holds nothing of the notebook's that outlives a run (its agent dir
        // is the notebook's to write: removed without following anything in it).
        let _ = tokio::fs::remove_dir_all(&run).await;
        tokio::fs::create_dir_all(&run)
            .await
            .context("creating the run dir")?;
        tokio::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
            .await
            .context("securing the run dir")?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let (runtime, port) = match self.sandbox() {
            Some(s) => (self.write_sandboxed(s, spec, &dir, &token)?, None),
            None => {
                let (spec, port) = self.write_unconfined(spec, &dir, &token)?;
                (spec, Some(port))
            }
        };
        Ok(Written {
            runtime,
            run,
            port,
            token,
        })
    }

    /// A training worker's or engine instance's dir (`<data>/engines/{id}`).
    pub(super) fn worker_dir_of(&self, id: &str) -> PathBuf {
        self.engine_dir(id)
    }

    /// The notebook's dir (`<data>/notebooks/{id}`).
    pub(super) fn notebook_dir_of(&self, id: &str) -> PathBuf {
        self.notebook_dir(id)
    }

    /// Whether notebooks run in the sandbox (else unconfined).
    pub(super) fn sandboxed(&self) -> bool {
        self.sandbox().is_some()
    }

    /// The runtime binary every launch runs.
    pub(super) fn runtime_bin(&self) -> &Path {
        &self.runtime_bin
    }

    /// The end of the notebook's logs (Jupyter's, else the sandbox's).
    pub(super) fn notebook_log_tail(&self, id: &str) -> String {
        self.log_tail(id)
    }
}

/// `passwd` and `group` naming ma-user, in a run dir the gateway just made (bound read-only
/// at `/etc/passwd` and `/etc/group`).
fn write_accounts(run: &Path) -> Result<(), BackendError> {
    let (passwd, group) = sandbox::passwd_files();
    std::fs::write(run.join("passwd"), passwd).context("writing passwd")?;
    std::fs::write(run.join("group"), group).context("writing group")?;
    Ok(())
}

/// Gives a tree the gateway just made (nothing of a notebook's in it) to ma-user.
fn chown_fresh_tree(path: &Path) -> std::io::Result<()> {
    crate::confined::Dir::open(path)?
        .chown_tree(sandbox::UID, sandbox::GID)
        .map(|_| ())
}

#[async_trait]
impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn refusal(&self) -> Option<String> {
        match &self.confinement {
            Confinement::Refused(why) => Some(why.clone()),
            _ => None,
        }
    }

    fn warnings(&self) -> Vec<String> {
        match &self.confinement {
            Confinement::Unconfined => vec![sandbox::UNCONFINED_WARNING.to_owned()],
            _ => Vec::new(),
        }
    }

    async fn warm_up(&self) {
        if self.refusal().is_some() {
            return;
        }
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
        self.refused()?;
        let dir = self.notebook_dir(&spec.id);
        for d in [dir.join("work"), dir.join("data")] {
            tokio::fs::create_dir_all(&d)
                .await
                .with_context(|| format!("creating {}", d.display()))?;
        }
        if self.sandbox().is_some() {
            self.own_work_dir(&dir.join("work"))?;
            crate::confined::Dir::open(&dir.join("data"))
                .and_then(|d| d.chown_self(sandbox::UID, sandbox::GID))
                .context("handing /data to ma-user")?;
            if self.sandbox().is_some_and(|s| s.root) {
                // Mounts made under it later then reach the running sandbox.
                super::workdisk::ensure_shared(&dir.join("data")).await;
            }
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
        let w = self.write_launch(spec).await?;
        let (runtime_pid, runtime_start_ticks) =
            self.start_runtime(&spec.id, &spec.flavor, &w.runtime, &w.run, None)?;
        Ok(Handle::Process(ProcessHandle {
            notebook_id: spec.id.clone(),
            runtime_pid,
            runtime_start_ticks,
            port: w.port,
            token: w.token,
            engine: false,
        }))
    }

    async fn wait_ready(
        &self,
        spec: &NotebookSpec,
        handle: &Handle,
        timeout: Duration,
        _progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let deadline = Instant::now() + timeout;
        if let Some(s) = self.sandbox()
            && h.port.is_none()
        {
            let entry = s
                .cgroups
                .prepare(&spec.id, &spec.flavor)
                .context("opening the notebook's cgroups")?;
            sandbox::attach_network(
                s,
                &spec.id,
                h.runtime_pid,
                &self.notebook_dir(&spec.id).join("run"),
                entry,
                deadline,
            )
            .await
            .map_err(|e| BackendError::Start(format!("giving the notebook its network: {e}")))?;
        }
        let endpoint = self.endpoint(&spec.id, &h);
        loop {
            if !alive(h.runtime_pid, h.runtime_start_ticks) {
                return Err(BackendError::Start(format!(
                    "JupyterLab exited while starting: {}",
                    self.log_tail(&spec.id)
                )));
            }
            if runconf::jupyter_answers(&endpoint, &spec.id, &h.token)
                .await
                .is_ok()
            {
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
            return Observed::Exited(runconf::how_it_ended(self.runtime_status(&self.dir_of(&h))));
        }
        if h.engine {
            // Whether it serves is for the gateway's probes.
            return Observed::Running;
        }
        match runconf::jupyter_answers(&self.endpoint(&id, &h), &id, &h.token).await {
            Ok(()) => Observed::Running,
            Err(e) => Observed::Unhealthy(e),
        }
    }

    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let id = self.notebook_id_of(handle).unwrap_or_default();
        if alive(h.runtime_pid, h.runtime_start_ticks) {
            // The pid was verified above by its start time.
            signal(h.runtime_pid, Signal::TERM);
            // The runtime escalates to SIGKILL itself: grace for Jupyter, grace for leftover
            // kernels, then a few seconds to reap. Allow for all of that before stepping in.
            let deadline = Instant::now() + mode.grace * 2 + Duration::from_secs(10);
            while alive(h.runtime_pid, h.runtime_start_ticks) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if alive(h.runtime_pid, h.runtime_start_ticks) {
                tracing::warn!(notebook = %id, "runtime ignored SIGTERM; killing it and its process group");
                let child_pgid = self
                    .runtime_status(&self.dir_of(&h))
                    .and_then(|s| s.get("child_pid").and_then(|v| v.as_i64()))
                    .map(|p| p as i32);
                signal(h.runtime_pid, Signal::KILL);
                if let Some(pg) = child_pgid.filter(|p| *p > 1)
                    && let Some(pg) = Pid::from_raw(pg)
                {
                    let _ = rustix::process::kill_process_group(pg, Signal::KILL);
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                while alive(h.runtime_pid, h.runtime_start_ticks) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Whatever escaped the runtime's tree (a daemonised process, pasta) is still in the
        // notebook's cgroup: it ends here.
        if let Some(s) = self.sandbox()
            && !id.is_empty()
        {
            s.cgroups.remove(&id).await;
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        let nb = self.notebook_dir(id);
        if let Some(s) = self.sandbox() {
            s.cgroups.remove(id).await;
        }
        let _ = super::workdisk::unmount_all(&nb.join("data")).await;
        runconf::remove_notebook_dir(&nb).await
    }

    fn files(&self, id: &str) -> Result<Box<dyn NotebookFiles>, BackendError> {
        let nb = self.notebook_dir(id);
        Ok(Box::new(match self.sandbox() {
            // Without root, the sandbox maps the gateway's user to ma-user: its files are
            // the gateway user's on the host.
            Some(s) => HostFiles {
                work_inside: sandbox::WORK.into(),
                data_inside: "/data".into(),
                owner: s.root.then_some((sandbox::UID, sandbox::GID)),
                live_if_data_shared: true,
                outside_work: false,
                backend: self.name(),
                nb,
            },
            // Unconfined: the notebook sees the host's files and mounts as they are.
            None => HostFiles {
                work_inside: nb.join("work").to_string_lossy().into_owned(),
                data_inside: nb.join("data").to_string_lossy().into_owned(),
                owner: None,
                live_if_data_shared: false,
                outside_work: false,
                backend: self.name(),
                nb,
            },
        }))
    }

    async fn ssh_link(&self, handle: &Handle) -> Result<SshLink, BackendError> {
        let h = Self::decode(handle)?;
        let run = self.dir_of(&h).join("run");
        // Unconfined, the notebook sees the agent dir at its host path.
        let agent_inside = match self.sandbox() {
            Some(_) => sandbox::AGENT.to_owned(),
            None => run.join("agent").to_string_lossy().into_owned(),
        };
        runconf::ssh_link(&run, &agent_inside).await
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

    async fn launch_engine(&self, spec: &EngineSpec) -> Result<Handle, BackendError> {
        self.start_engine(spec).await
    }

    async fn launch_worker(&self, spec: &WorkerSpec) -> Result<Handle, BackendError> {
        self.start_worker(spec).await
    }

    async fn worker_exit(&self, handle: &Handle) -> Option<WorkerExit> {
        let Ok(h) = Self::decode(handle) else {
            return Some(WorkerExit::Lost);
        };
        if alive(h.runtime_pid, h.runtime_start_ticks) {
            return None;
        }
        // The outer runtime's status, in the worker's run dir (root's, outside the
        // sandbox): the inner runtime exits with the command's code, and so does bubblewrap.
        let status = self.runtime_status(&self.dir_of(&h));
        Some(runconf::worker_exit(status.as_ref()))
    }

    async fn remove_worker(&self, id: &str) -> Result<(), BackendError> {
        if let Some(s) = self.sandbox() {
            s.cgroups.remove(id).await;
        }
        runconf::remove_notebook_dir(&self.engine_dir(id)).await
    }

    fn engine_endpoint(&self, handle: &Handle) -> Result<Endpoint, BackendError> {
        let h = Self::decode(handle)?;
        Ok(Endpoint::Unix {
            dir: self.engine_dir(&h.notebook_id).join("run/agent"),
            name: super::ENGINE_SOCKET.to_owned(),
        })
    }

    fn engine_log_dir(&self, handle: &Handle) -> Option<PathBuf> {
        let h = Self::decode(handle).ok()?;
        Some(self.engine_dir(&h.notebook_id).join("run/agent"))
    }

    async fn remove_engine(&self, id: &str) -> Result<(), BackendError> {
        if let Some(s) = self.sandbox() {
            s.cgroups.remove(id).await;
        }
        runconf::remove_notebook_dir(&self.engine_dir(id)).await
    }

    fn upstream(&self, handle: &Handle) -> Result<Upstream, BackendError> {
        let h = Self::decode(handle)?;
        let id = self.notebook_id_of(handle).unwrap_or_default();
        Ok(Upstream {
            endpoint: self.endpoint(&id, &h),
            token: h.token,
        })
    }
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

/// Where a notebook's Jupyter finds its things, as it sees them (inside the sandbox, or on
/// the host when unconfined).
struct Places<'a> {
    home: &'a Path,
    venv: &'a Path,
    config: &'a Path,
    runtime_dir: &'a Path,
    storage_socket: &'a Path,
    notebook_id: &'a str,
}

/// The environment of a notebook's Jupyter server and kernels (both ways of running it).
fn jupyter_env(p: &Places) -> BTreeMap<String, String> {
    env_of([
        (
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                p.venv.join("bin").display()
            ),
        ),
        ("HOME", text(p.home)),
        ("LANG", "C.UTF-8".into()),
        ("SHELL", "/bin/bash".into()),
        ("VIRTUAL_ENV", text(p.venv)),
        ("PYTHONUNBUFFERED", "1".into()),
        ("JUPYTER_CONFIG_DIR", text(p.config)),
        ("JUPYTER_PATH", text(p.config)),
        ("JUPYTER_RUNTIME_DIR", text(p.runtime_dir)),
        ("JUPYTER_PLATFORM_DIRS", "1".into()),
        // JupyterLab keeps these under the config dir by default, which is read-only.
        (
            "JUPYTERLAB_SETTINGS_DIR",
            text(&p.home.join(".jupyter/lab/user-settings")),
        ),
        (
            "JUPYTERLAB_WORKSPACES_DIR",
            text(&p.home.join(".jupyter/lab/workspaces")),
        ),
        ("ATELIER_NOTEBOOK_ID", p.notebook_id.to_owned()),
        ("ATELIER_STORAGE_SOCKET", text(p.storage_socket)),
        ("PYTHONPATH", text(&p.config.join(runconf::PYTHON_DIR))),
    ])
}

/// A path as the text an environment variable holds.
fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The runtime's environment for the notebook, from `(name, value)` pairs.
fn env_of<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ticks = start_ticks(me).unwrap();
        assert!(alive(me, ticks));
        assert!(!alive(me, ticks + 1));
        assert!(!alive(i32::MAX - 1, ticks));
    }
}
