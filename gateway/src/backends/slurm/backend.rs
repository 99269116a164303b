//! The `slurm` backend: each notebook is a batch job on the cluster, running the same
//! `atelier-notebook-runtime` (and, where the gateway is root, the same sandbox) as the
//! process backend, from a directory every node sees at the same path
//! (`slurm.shared_dir`). The runtime on the node dials the gateway back through the tunnel
//! (`atelier_tunnel`); Jupyter, the SSH agent and `atelier.file` are reached over that one
//! connection, so the gateway never dials a node.
//!
//! ```text
//! gateway ──sbatch (script on stdin)──► slurmctld ──► slurmd on a node
//!                                                    └─► atelier-notebook-runtime --spec <shared>/notebooks/{id}/run/spec.json
//!                                                         ├─ connect-back ──TLS──► gateway's tunnel (Jupyter, agent)
//!                                                         └─► bwrap … runtime (as ma-user) ─► jupyter lab, SSH agent
//! ```
//!
//! The handle keeps the job id and the tunnel registration's secret hash: a restarted
//! gateway asks Slurm about the job and takes the runtime's connection back. States come
//! from Slurm: PENDING (and a requeue) is the notebook waiting with the scheduler's reason
//! as an event; an ended job (cancelled from outside, preempted, out of time, its node
//! failed) is the notebook stopped with an event that says which. Stop sends SIGTERM to the
//! job (the runtime stops Jupyter within its grace period) and cancels it if it outlives
//! that. Slurm's own limits (CPUs, memory, GPUs with `--gres`, its cgroups where the
//! cluster has them) replace the process backend's cgroups; a sandboxed notebook on a node
//! has its own network namespace with loopback only (no egress: the process backend's
//! pasta runs beside the gateway, not on nodes).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use atelier_notebook_runtime::spec::{ConnectBackSpec, LocalSpec};
use atelier_tunnel::Target;
use atelier_tunnel::hub::TunnelHub;

use super::{JobInfo, JobState, SlurmCli, Submission, quote};
use crate::backends::files::NotebookFiles;
use crate::backends::process::ProcessBackend;
use crate::backends::runconf::{self, AGENT_SOCKET};
use crate::backends::{
    Backend, BackendError, Endpoint, Handle, NotebookSpec, Observed, Progress, SshLink, StopMode,
    Upstream, sandbox,
};
use crate::config::{Settings, SlurmSettings};
use crate::lifecycle::handle::SlurmHandle;
use crate::store::events::EventKind;

/// How often a queued job is asked about (a running one that does not answer yet: more
/// often).
const QUEUED_EVERY: Duration = Duration::from_secs(1);
const STARTING_EVERY: Duration = Duration::from_millis(250);
/// A job's time limit is its notebook's lease and this much more: the gateway's auto-stop
/// stops it first, Slurm only if the gateway could not.
const TIME_LIMIT_MARGIN_MINUTES: u64 = 10;

pub struct SlurmBackend {
    cli: SlurmCli,
    /// Writes each notebook's dirs and specs under the shared dir, as the process backend
    /// does under its data dir.
    local: ProcessBackend,
    hub: TunnelHub,
    slurm: SlurmSettings,
}

impl SlurmBackend {
    pub fn new(settings: &Settings, hub: Option<TunnelHub>) -> anyhow::Result<SlurmBackend> {
        let hub = hub.context(
            "the slurm backend needs the connect-back tunnel: set tunnel.listen (ATELIER_TUNNEL_ADDR)",
        )?;
        let shared = settings
            .slurm
            .shared_dir
            .clone()
            .unwrap_or_else(|| settings.data_dir.join("slurm"));
        std::fs::create_dir_all(&shared)
            .with_context(|| format!("creating the shared dir {}", shared.display()))?;
        // It holds every notebook's run dir (tokens, link keys): the service user's alone.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("securing the shared dir {}", shared.display()))?;
        let mut local = settings.clone();
        local.data_dir = shared;
        // The virtualenv stays where the settings put it (on the shared filesystem, for a
        // cluster: every node runs Jupyter from it at the same path).
        local.backend.jupyter_venv = Some(settings.jupyter_venv());
        Ok(SlurmBackend {
            cli: SlurmCli {
                conf: settings.slurm.conf.clone(),
                bin_dir: settings.slurm.bin_dir.clone(),
            },
            local: ProcessBackend::new(&local)?,
            hub,
            slurm: settings.slurm.clone(),
        })
    }

    fn decode(handle: &Handle) -> Result<SlurmHandle, BackendError> {
        match handle {
            Handle::Slurm(h) => Ok(h.clone()),
            other => Err(BackendError::Other(anyhow::anyhow!(other.not_for("slurm")))),
        }
    }

    /// Makes the handle's launch known to the tunnel (again, after a gateway restart), so its
    /// runtime's connection is taken back.
    fn attach(&self, h: &SlurmHandle) -> Result<(), BackendError> {
        let hash = atelier_tunnel::wire::SecretHash::from_hex(&h.secret_hash)
            .map_err(|e| anyhow::anyhow!("the notebook's handle holds no secret hash: {e}"))?;
        self.hub
            .restore(&h.launch, hash)
            .map_err(|e| anyhow::anyhow!("the tunnel refused the notebook's launch: {e}"))?;
        Ok(())
    }

    fn endpoint(&self, h: &SlurmHandle, target: Target) -> Result<Endpoint, BackendError> {
        self.attach(h)?;
        let e = self
            .hub
            .endpoint(&h.launch, target)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Endpoint::Tunnel(e))
    }

    async fn job(&self, id: u64) -> Result<Option<JobInfo>, BackendError> {
        self.cli
            .job(id)
            .await
            .map_err(|e| BackendError::Other(anyhow::anyhow!("asking Slurm about job {id}: {e}")))
    }

    /// The batch job of one notebook.
    fn submission(&self, spec: &NotebookSpec, run: &std::path::Path) -> Submission {
        let f = &spec.flavor;
        let short: String = spec.id.chars().take(8).collect();
        let own = f.slurm.clone().unwrap_or_default();
        Submission {
            name: format!("atelier-nb-{short}"),
            partition: own.partition.or_else(|| self.slurm.partition.clone()),
            account: own.account.or_else(|| self.slurm.account.clone()),
            qos: own.qos.or_else(|| self.slurm.qos.clone()),
            nodes: 1,
            ntasks: 1,
            cpus_per_task: f.vcpus.max(1),
            mem_mb: Some(u64::from(f.memory_gib) * 1024),
            gpus: if f.kind == "gpu" {
                f.accelerator_count()
            } else {
                0
            },
            time_limit_minutes: spec
                .lease
                .map(|d| d.as_secs().div_ceil(60) + TIME_LIMIT_MARGIN_MINUTES),
            workdir: run.to_path_buf(),
            output: run.join("slurm.out"),
            // A preempted notebook stops (its work dir stays); the user starts it again.
            requeue: false,
            array: None,
            signal: None,
            env: Vec::new(),
            body: format!(
                "exec {} --spec {}\n",
                quote(&self.local.runtime_bin().to_string_lossy()),
                quote(&run.join("spec.json").to_string_lossy())
            ),
        }
    }

    /// How an ended job ended, for the notebook's event and status.
    fn ended(&self, j: &JobInfo, notebook: &str) -> String {
        let id = j.id;
        let node = if j.nodes.is_empty() {
            String::new()
        } else {
            format!(" on {}", j.nodes)
        };
        let reason = j
            .reason
            .as_deref()
            .map(|r| format!(" (Slurm: {r})"))
            .unwrap_or_default();
        match &j.state {
            JobState::Cancelled => format!(
                "the Slurm job {id}{node} was cancelled outside Atelier (scancel, or an administrator){reason}"
            ),
            JobState::Preempted => format!(
                "the Slurm job {id}{node} was preempted by a job of higher priority; the work dir is untouched"
            ),
            JobState::Timeout => format!("the Slurm job {id}{node} reached its time limit"),
            JobState::NodeFail => format!("the node of Slurm job {id}{node} failed"),
            JobState::OutOfMemory => {
                format!("the Slurm job {id}{node} ran out of memory (its flavor's limit)")
            }
            JobState::BootFail | JobState::Deadline | JobState::Revoked => {
                format!("the Slurm job {id}{node} ended: {:?}{reason}", j.state)
            }
            _ => {
                let status = runconf::how_it_ended(runconf::runtime_status(
                    &self.local.notebook_dir_of(notebook).join("run/status.json"),
                ));
                format!("the notebook's runtime in Slurm job {id}{node} ended: {status}")
            }
        }
    }
}

#[async_trait]
impl Backend for SlurmBackend {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn refusal(&self) -> Option<String> {
        self.local.refusal()
    }

    fn warnings(&self) -> Vec<String> {
        self.local.warnings()
    }

    async fn warm_up(&self) {
        self.local.warm_up().await
    }

    async fn prepare(
        &self,
        spec: &NotebookSpec,
        progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        self.local.prepare(spec, progress).await
    }

    async fn launch(&self, spec: &NotebookSpec) -> Result<Handle, BackendError> {
        let mut w = self.local.write_launch(spec).await?;
        let agent_dir = w.run.join("agent");
        let launch = format!("{}-{}", spec.id, hex::encode(rand::random::<[u8; 4]>()));
        let reg = self
            .hub
            .register(&launch)
            .map_err(|e| anyhow::anyhow!("registering the notebook with the tunnel: {e}"))?;
        let sandboxed = self.local.sandboxed();
        if sandboxed && w.runtime.argv.len() > 1 {
            // On the node nothing gives the sandbox its network namespace before bubblewrap
            // runs (the process backend's gateway does): bubblewrap makes it. The runtime
            // outside stays on the node's network, to dial the gateway.
            w.runtime.argv.insert(1, "--unshare-net".into());
        }
        w.runtime.connect_back = Some(ConnectBackSpec {
            gateway: reg.connect_back,
            jupyter: Some(match w.port {
                Some(port) => LocalSpec::Port(port),
                None => LocalSpec::Unix(agent_dir.join(sandbox::JUPYTER_SOCKET)),
            }),
            agent: sandboxed.then(|| agent_dir.join(AGENT_SOCKET)),
        });
        let written = serde_json::to_vec_pretty(&w.runtime)
            .context("spec")
            .map_err(BackendError::Other)
            .and_then(|bytes| runconf::write_private(&w.run.join("spec.json"), &bytes));
        if let Err(e) = written {
            self.hub.unregister(&launch);
            return Err(e);
        }
        let job_id = match self.cli.submit(&self.submission(spec, &w.run)).await {
            Ok(id) => id,
            Err(e) => {
                self.hub.unregister(&launch);
                return Err(BackendError::Start(format!(
                    "submitting the notebook's job to Slurm: {e}"
                )));
            }
        };
        tracing::info!(notebook = %spec.id, job = job_id, "notebook submitted to Slurm");
        Ok(Handle::Slurm(SlurmHandle {
            notebook_id: spec.id.clone(),
            job_id,
            launch,
            secret_hash: reg.hash.to_hex(),
            port: w.port,
            token: w.token,
        }))
    }

    async fn wait_ready(
        &self,
        spec: &NotebookSpec,
        handle: &Handle,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let endpoint = self.endpoint(&h, Target::Jupyter)?;
        let mut told: Option<String> = None;
        // When the job started running (the start timeout counts from there, not from the
        // submission: the queue's wait is the scheduler's).
        let mut started: Option<Instant> = None;
        loop {
            let job = self.job(h.job_id).await?;
            let Some(j) = job else {
                return Err(BackendError::Start(format!(
                    "the Slurm job {} is gone from the cluster before JupyterLab answered",
                    h.job_id
                )));
            };
            if j.state.is_final() {
                return Err(BackendError::Start(format!(
                    "{} before JupyterLab answered: {}",
                    self.ended(&j, &spec.id),
                    self.local.notebook_log_tail(&spec.id)
                )));
            }
            if j.state.is_queued() || j.state == JobState::Suspended {
                started = None;
                let why = j
                    .waiting_for()
                    .unwrap_or_else(|| format!("{:?} in Slurm", j.state).to_lowercase());
                if told.as_deref() != Some(why.as_str()) {
                    let detail = format!("Slurm job {}: {why}", j.id);
                    progress.event(EventKind::Queued, Some(&detail)).await;
                    told = Some(why);
                }
                tokio::time::sleep(QUEUED_EVERY).await;
                continue;
            }
            let since = match started {
                Some(t) => t,
                None => {
                    let detail = format!("Slurm job {} runs on {}", j.id, j.nodes);
                    progress.event(EventKind::Scheduled, Some(&detail)).await;
                    told = None;
                    *started.insert(Instant::now())
                }
            };
            if self.hub.wait_connected(&h.launch, STARTING_EVERY).await
                && runconf::jupyter_answers(&endpoint, &spec.id, &h.token)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if since.elapsed() >= timeout {
                let connected = if self.hub.connected(&h.launch) {
                    "its runtime connected back"
                } else {
                    "its runtime never connected back (can the node reach the tunnel's address?)"
                };
                return Err(BackendError::Start(format!(
                    "JupyterLab did not answer within {} s of Slurm job {} starting on {} ({connected}): {}",
                    timeout.as_secs(),
                    j.id,
                    j.nodes,
                    self.local.notebook_log_tail(&spec.id)
                )));
            }
            tokio::time::sleep(STARTING_EVERY).await;
        }
    }

    async fn poll(&self, handle: &Handle) -> Observed {
        let h = match Self::decode(handle) {
            Ok(h) => h,
            Err(e) => return Observed::Exited(e.to_string()),
        };
        let endpoint = match self.endpoint(&h, Target::Jupyter) {
            Ok(e) => e,
            Err(e) => return Observed::Exited(e.to_string()),
        };
        let j = match self.job(h.job_id).await {
            // slurmctld down or slow: nothing is known to have ended.
            Err(e) => return Observed::Unhealthy(e.to_string()),
            Ok(None) => {
                return Observed::Exited(format!(
                    "the Slurm job {} is gone from the cluster",
                    h.job_id
                ));
            }
            Ok(Some(j)) => j,
        };
        if j.state.is_final() {
            return Observed::Exited(self.ended(&j, &h.notebook_id));
        }
        if j.state.is_queued() || j.state == JobState::Suspended {
            let why = j.waiting_for().unwrap_or_else(|| format!("{:?}", j.state));
            return Observed::Unhealthy(format!("the Slurm job {} waits: {why}", j.id));
        }
        if !self.hub.connected(&h.launch) {
            return Observed::Unhealthy(format!(
                "the runtime of Slurm job {} on {} is not connected to the gateway",
                j.id, j.nodes
            ));
        }
        match runconf::jupyter_answers(&endpoint, &h.notebook_id, &h.token).await {
            Ok(()) => Observed::Running,
            Err(e) => Observed::Unhealthy(e),
        }
    }

    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let gone = |j: &Option<JobInfo>| j.as_ref().is_none_or(|j| j.state.is_final());
        let mut job = self.job(h.job_id).await?;
        if !gone(&job) {
            let queued = job.as_ref().is_some_and(|j| j.state.is_queued());
            if !queued {
                // The runtime stops Jupyter and its kernels within its grace periods.
                self.cli
                    .signal(h.job_id, "TERM")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let deadline = Instant::now() + mode.grace * 2 + Duration::from_secs(10);
                while !gone(&job) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    job = self.job(h.job_id).await?;
                }
            }
            if !gone(&job) {
                if !queued {
                    tracing::warn!(notebook = %h.notebook_id, job = h.job_id, "the notebook's job outlived SIGTERM; cancelling it");
                }
                self.cli
                    .cancel(h.job_id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                // Slurm's own SIGTERM, then SIGKILL after its KillWait.
                let deadline = Instant::now() + Duration::from_secs(90);
                while !gone(&job) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    job = self.job(h.job_id).await?;
                }
                if !gone(&job) {
                    return Err(BackendError::Other(anyhow::anyhow!(
                        "the Slurm job {} is still running 90 s after it was cancelled",
                        h.job_id
                    )));
                }
            }
        }
        self.hub.unregister(&h.launch);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        self.local.delete(id).await
    }

    async fn extend(&self, handle: &Handle, left: Duration) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let Some(j) = self.job(h.job_id).await? else {
            return Ok(());
        };
        if j.state.is_final() {
            return Ok(());
        }
        let ran = j.run_time().unwrap_or_default();
        let minutes = (ran + left).as_secs().div_ceil(60) + TIME_LIMIT_MARGIN_MINUTES;
        self.cli
            .set_time_limit(h.job_id, minutes)
            .await
            .map_err(|e| {
                BackendError::Other(anyhow::anyhow!(
                    "extending Slurm job {}'s time limit to {minutes} minutes: {e}",
                    h.job_id
                ))
            })
    }

    fn upstream(&self, handle: &Handle) -> Result<Upstream, BackendError> {
        let h = Self::decode(handle)?;
        Ok(Upstream {
            endpoint: self.endpoint(&h, Target::Jupyter)?,
            token: h.token,
        })
    }

    async fn ssh_link(&self, handle: &Handle) -> Result<SshLink, BackendError> {
        let h = Self::decode(handle)?;
        let run = self.local.notebook_dir_of(&h.notebook_id).join("run");
        let agent_inside = if self.local.sandboxed() {
            sandbox::AGENT.to_owned()
        } else {
            run.join("agent").to_string_lossy().into_owned()
        };
        let mut link = runconf::ssh_link(&run, &agent_inside).await?;
        link.endpoint = self.endpoint(&h, Target::Agent)?;
        Ok(link)
    }

    fn files(&self, id: &str) -> Result<Box<dyn NotebookFiles>, BackendError> {
        self.local.files(id)
    }
}
