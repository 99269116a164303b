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

use super::{JobInfo, JobState, SlurmCli, Submission, quote, rendezvous_prelude};
use crate::backends::files::NotebookFiles;
use crate::backends::process::ProcessBackend;
use crate::backends::runconf::{self, AGENT_SOCKET};
use crate::backends::{
    Backend, BackendError, Endpoint, EngineSpec, Handle, NotebookSpec, Observed, Progress, SshLink,
    StopMode, Upstream, WorkerExit, WorkerSpec, sandbox,
};
use crate::config::{Settings, SlurmSettings};
use crate::lifecycle::handle::SlurmHandle;
use crate::store::events::EventKind;

/// How often a queued job is asked about: often in its first seconds (most jobs start
/// then on an idle cluster), then each second. A running one whose Jupyter does not answer
/// yet is tried more often still (bench/slurm.sh: the check interval was most of what
/// Atelier added to a start).
const QUEUED_FIRST: Duration = Duration::from_millis(200);
const QUEUED_EVERY: Duration = Duration::from_secs(1);
const QUEUED_FIRST_FOR: Duration = Duration::from_secs(5);
const STARTING_EVERY: Duration = Duration::from_millis(50);
/// How long a start waits for slurmctld to answer again before it fails.
const SLURM_PATIENCE: Duration = Duration::from_secs(60);
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

    /// A job on `nodes` nodes with the flavor's CPUs, memory and GPUs per node, where the
    /// flavor (else `[slurm]`) puts it, writing Slurm's output to `run/slurm.out`. Never
    /// requeued: a preempted notebook stops (its work dir stays) and a training job's
    /// restart is its next attempt.
    fn job_of(
        &self,
        f: &crate::config::Flavor,
        name: String,
        nodes: u32,
        run: &std::path::Path,
        body: String,
    ) -> Submission {
        let own = f.slurm.clone().unwrap_or_default();
        Submission {
            name,
            partition: own.partition.or_else(|| self.slurm.partition.clone()),
            account: own.account.or_else(|| self.slurm.account.clone()),
            qos: own.qos.or_else(|| self.slurm.qos.clone()),
            nodes,
            ntasks: nodes,
            cpus_per_task: f.vcpus.max(1),
            mem_mb: Some(u64::from(f.memory_gib) * 1024),
            gpus: if f.kind == "gpu" {
                f.accelerator_count()
            } else {
                0
            },
            time_limit_minutes: None,
            workdir: run.to_path_buf(),
            output: run.join("slurm.out"),
            requeue: false,
            array: None,
            signal: None,
            env: Vec::new(),
            body,
        }
    }

    /// `exec` of the runtime with `run/spec.json`: a notebook's or an engine instance's job.
    fn runtime_job(
        &self,
        f: &crate::config::Flavor,
        name: String,
        run: &std::path::Path,
    ) -> Submission {
        let body = format!(
            "exec {} --spec {}\n",
            quote(&self.local.runtime_bin().to_string_lossy()),
            quote(&run.join("spec.json").to_string_lossy())
        );
        self.job_of(f, name, 1, run, body)
    }

    /// Registers a launch of `id` with the tunnel, puts its connect-back section (made by
    /// `connect` from the tunnel's part) into the outer runtime's spec, writes the spec into
    /// `sub`'s work dir and submits `sub`: the job id, the launch id and its secret's hash.
    /// Nothing stays registered when it fails. `own_network`: the sandbox's network
    /// namespace is made by bubblewrap on the node (the process backend's gateway makes it
    /// before bubblewrap runs); the runtime outside stays on the node's network, to dial
    /// the gateway.
    async fn submit_connected(
        &self,
        id: &str,
        mut outer: atelier_notebook_runtime::spec::Spec,
        own_network: bool,
        sub: &Submission,
        connect: impl FnOnce(atelier_tunnel::ConnectBack) -> ConnectBackSpec,
    ) -> Result<(u64, String, String), BackendError> {
        let launch = format!("{id}-{}", hex::encode(rand::random::<[u8; 4]>()));
        let reg = self
            .hub
            .register(&launch)
            .map_err(|e| anyhow::anyhow!("registering {id} with the tunnel: {e}"))?;
        if own_network && outer.argv.len() > 1 {
            outer.argv.insert(1, "--unshare-net".into());
        }
        outer.connect_back = Some(connect(reg.connect_back));
        let submitted = async {
            let bytes = serde_json::to_vec_pretty(&outer).context("spec")?;
            runconf::write_private(&sub.workdir.join("spec.json"), &bytes)?;
            self.cli
                .submit(sub)
                .await
                .map_err(|e| BackendError::Start(format!("submitting {} to Slurm: {e}", sub.name)))
        }
        .await;
        match submitted {
            Ok(job_id) => Ok((job_id, launch, reg.hash.to_hex())),
            Err(e) => {
                self.hub.unregister(&launch);
                Err(e)
            }
        }
    }

    /// The one Slurm job of a training job's attempt: a task per worker, one per node
    /// (`srun`), each waiting for its worker's spec (written by this worker's
    /// `launch_worker`), filling the rendezvous variables from Slurm's
    /// ([`rendezvous_prelude`]) into `rendezvous.env` in its agent dir (read by the
    /// worker's command first), then running the worker's runtime.
    fn training_submission(&self, ws: &WorkerSpec, workers: u32) -> Submission {
        let engines = self
            .local
            .worker_dir_of("x")
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let names = "RANK WORLD_SIZE MASTER_ADDR LOCAL_RANK VC_WORKER_HOSTS VC_WORKER_NUM \
                     VC_TASK_INDEX VK_TASK_INDEX MA_TASK_INDEX MA_NUM_HOSTS MA_CURRENT_IP";
        let task = format!(
            "set -eu\n\
             w={engines}/{job}-$SLURM_PROCID/run\n\
             i=0\n\
             while [ ! -e \"$w/spec.json\" ]; do\n\
               i=$((i + 1)); [ \"$i\" -le 1200 ] || {{ echo \"no spec for worker $SLURM_PROCID\" >&2; exit 97; }}\n\
               sleep 0.1\n\
             done\n\
             {prelude}\
             set -C\n\
             for v in {names}; do eval \"printf 'export %s=%s\\n' $v \\\"\\${{$v}}\\\"\"; done > \"$w/agent/rendezvous.env\"\n\
             exec {runtime} --spec \"$w/spec.json\"\n",
            engines = quote(&engines),
            job = ws.job_id,
            prelude = rendezvous_prelude(),
            runtime = quote(&self.local.runtime_bin().to_string_lossy()),
        );
        let run = self.local.worker_dir_of(&ws.id);
        let body = format!(
            "exec srun --kill-on-bad-exit=0 --ntasks={workers} --ntasks-per-node=1 sh -c {}\n",
            quote(&task)
        );
        let name = format!(
            "atelier-train-{}",
            ws.job_id.chars().take(8).collect::<String>()
        );
        self.job_of(&ws.flavor, name, workers, &run, body)
    }

    /// Signals the job, waits for its runtimes' grace periods, then cancels it.
    async fn end_job(&self, job_id: u64, grace: Duration) -> Result<(), BackendError> {
        let gone = |j: &Option<JobInfo>| j.as_ref().is_none_or(|j| j.state.is_final());
        let mut job = self.job(job_id).await?;
        if gone(&job) {
            return Ok(());
        }
        let queued = job.as_ref().is_some_and(|j| j.state.is_queued());
        if !queued {
            // The runtimes stop what they run within their grace periods.
            self.cli
                .signal(job_id, "TERM")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let deadline = Instant::now() + grace * 2 + Duration::from_secs(10);
            while !gone(&job) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                job = self.job(job_id).await?;
            }
        }
        if gone(&job) {
            return Ok(());
        }
        if !queued {
            tracing::warn!(job = job_id, "a Slurm job outlived SIGTERM; cancelling it");
        }
        self.cli
            .cancel(job_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Slurm's own SIGTERM, then SIGKILL after its KillWait.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !gone(&job) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            job = self.job(job_id).await?;
        }
        if gone(&job) {
            Ok(())
        } else {
            Err(BackendError::Other(anyhow::anyhow!(
                "the Slurm job {job_id} is still running 90 s after it was cancelled"
            )))
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
        let w = self.local.write_launch(spec).await?;
        let agent_dir = w.run.join("agent");
        let sandboxed = self.local.sandboxed();
        let short: String = spec.id.chars().take(8).collect();
        let mut sub = self.runtime_job(&spec.flavor, format!("atelier-nb-{short}"), &w.run);
        sub.time_limit_minutes = spec
            .lease
            .map(|d| d.as_secs().div_ceil(60) + TIME_LIMIT_MARGIN_MINUTES);
        let jupyter = match w.port {
            Some(port) => LocalSpec::Port(port),
            None => LocalSpec::Unix(agent_dir.join(sandbox::JUPYTER_SOCKET)),
        };
        let (job_id, launch, secret_hash) = self
            .submit_connected(&spec.id, w.runtime, sandboxed, &sub, |gateway| {
                ConnectBackSpec {
                    gateway,
                    jupyter: Some(jupyter),
                    agent: sandboxed.then(|| agent_dir.join(AGENT_SOCKET)),
                    engine: None,
                }
            })
            .await?;
        tracing::info!(notebook = %spec.id, job = job_id, "notebook submitted to Slurm");
        Ok(Handle::Slurm(SlurmHandle {
            notebook_id: spec.id.clone(),
            job_id,
            launch,
            secret_hash,
            port: w.port,
            token: w.token,
            rank: None,
            engine: false,
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
        let waiting_since = Instant::now();
        // slurmctld restarting or busy: asked again, for a while.
        let mut unanswered: Option<Instant> = None;
        loop {
            let job = match self.job(h.job_id).await {
                Ok(j) => {
                    unanswered = None;
                    j
                }
                Err(e)
                    if unanswered.get_or_insert_with(Instant::now).elapsed() < SLURM_PATIENCE =>
                {
                    tracing::warn!(notebook = %spec.id, error = %e, "Slurm did not answer; asking again");
                    tokio::time::sleep(QUEUED_EVERY).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
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
                tokio::time::sleep(if waiting_since.elapsed() < QUEUED_FIRST_FOR {
                    QUEUED_FIRST
                } else {
                    QUEUED_EVERY
                })
                .await;
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
        if h.engine {
            // Whether it serves is for the gateway's probes.
            return Observed::Running;
        }
        match runconf::jupyter_answers(&endpoint, &h.notebook_id, &h.token).await {
            Ok(()) => Observed::Running,
            Err(e) => Observed::Unhealthy(e),
        }
    }

    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        self.end_job(h.job_id, mode.grace).await?;
        if h.rank.is_none() {
            self.hub.unregister(&h.launch);
        }
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
        let run = if h.engine {
            self.local.worker_dir_of(&h.notebook_id).join("run")
        } else {
            self.local.notebook_dir_of(&h.notebook_id).join("run")
        };
        let agent_inside = if h.engine || self.local.sandboxed() {
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

    async fn launch_worker(&self, ws: &WorkerSpec) -> Result<Handle, BackendError> {
        let workers: u32 = ws
            .env
            .get("WORLD_SIZE")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| BackendError::Start("the worker's WORLD_SIZE is missing".into()))?;
        // Rank 0 submits the attempt's one job; the others are its tasks.
        let job_id = match (&ws.network_of, ws.rank) {
            (None, 0) => None,
            (Some(Handle::Slurm(first)), r) if r > 0 => Some(first.job_id),
            _ => {
                return Err(BackendError::Start(format!(
                    "worker {} of a job on Slurm needs worker 0's handle",
                    ws.rank
                )));
            }
        };
        let (outer, run) = self
            .local
            .write_worker(ws, &format!(". {}/rendezvous.env; ", sandbox::AGENT))
            .await?;
        let job_id = match job_id {
            Some(id) => id,
            None => self
                .cli
                .submit(&self.training_submission(ws, workers))
                .await
                .map_err(|e| {
                    BackendError::Start(format!("submitting the training job to Slurm: {e}"))
                })?,
        };
        // Last, and whole at once: its task starts on seeing it.
        let bytes = serde_json::to_vec_pretty(&outer).context("spec")?;
        let partial = run.join("spec.json.partial");
        runconf::write_private(&partial, &bytes)?;
        std::fs::rename(&partial, run.join("spec.json")).context("placing the worker's spec")?;
        tracing::info!(worker = %ws.id, job = job_id, "training worker is a task of a Slurm job");
        Ok(Handle::Slurm(SlurmHandle {
            notebook_id: ws.id.clone(),
            job_id,
            launch: String::new(),
            secret_hash: String::new(),
            port: None,
            token: String::new(),
            rank: Some(ws.rank),
            engine: false,
        }))
    }

    async fn launch_engine(&self, spec: &EngineSpec) -> Result<Handle, BackendError> {
        let (outer, run) = self.local.write_engine_launch(spec).await?;
        let agent_dir = run.join("agent");
        let short: String = spec.id.chars().take(8).collect();
        let sub = self.runtime_job(&spec.flavor, format!("atelier-engine-{short}"), &run);
        let (job_id, launch, secret_hash) = self
            .submit_connected(&spec.id, outer, true, &sub, |gateway| ConnectBackSpec {
                gateway,
                jupyter: None,
                agent: Some(agent_dir.join(AGENT_SOCKET)),
                engine: Some(agent_dir.join(crate::backends::ENGINE_SOCKET)),
            })
            .await?;
        Ok(Handle::Slurm(SlurmHandle {
            notebook_id: spec.id.clone(),
            job_id,
            launch,
            secret_hash,
            port: None,
            token: String::new(),
            rank: None,
            engine: true,
        }))
    }

    fn engine_endpoint(&self, handle: &Handle) -> Result<Endpoint, BackendError> {
        let h = Self::decode(handle)?;
        self.endpoint(&h, Target::Engine)
    }

    async fn remove_engine(&self, id: &str) -> Result<(), BackendError> {
        self.local.remove_engine(id).await
    }

    async fn worker_exit(&self, handle: &Handle) -> Option<WorkerExit> {
        let Ok(h) = Self::decode(handle) else {
            return Some(WorkerExit::Lost);
        };
        let status = runconf::runtime_status(
            &self
                .local
                .worker_dir_of(&h.notebook_id)
                .join("run/status.json"),
        );
        let ended = status
            .as_ref()
            .and_then(|s| s.get("state"))
            .and_then(|s| s.as_str())
            .is_some_and(|s| matches!(s, "exited" | "stopped"));
        if ended {
            return Some(runconf::worker_exit(status.as_ref()));
        }
        match self.job(h.job_id).await {
            // slurmctld unreachable: nothing is known to have ended.
            Err(_) => None,
            Ok(Some(j)) if !j.state.is_final() => None,
            // The job ended and this task's runtime said nothing: it was killed.
            Ok(_) => Some(runconf::worker_exit(status.as_ref())),
        }
    }

    async fn remove_worker(&self, id: &str) -> Result<(), BackendError> {
        self.local.remove_worker(id).await
    }

    fn engine_log_dir(&self, handle: &Handle) -> Option<std::path::PathBuf> {
        let h = Self::decode(handle).ok()?;
        Some(self.local.worker_dir_of(&h.notebook_id).join("run/agent"))
    }
}
