//! The `docker` backend: each notebook is a container from the image its user picked, on the
//! Docker Engine API (`bollard`), which Docker and Podman's Docker-compatible service both
//! serve.
//!
//! ```text
//! container atelier-nb-{id}   user 1000:100 (ma-user), labels io.atelier.*
//!   entrypoint  /opt/atelier/atelier-notebook-runtime --spec /run/atelier/spec.json
//!               (static binary, bound read-only; PID 1: reaps, forwards signals, starts
//!               Jupyter, serves the SSH agent)
//!   /home/ma-user/work  ◄── <nb>/work      the work disk (workdisk.rs), survives stops
//!   /data               ◄── <nb>/data      dynamic mounts (rslave)
//!   /run/atelier        ◄── <nb>/run/agent spec, status, jupyter.log, ssh.sock (owned 1000)
//!   /run/atelier-config ◄── <nb>/run/config Jupyter config with the token, read-only
//!   /cache, /dev/shm    tmpfs sized by the flavor
//!   8888/tcp ──► 127.0.0.1:<ephemeral>     where the proxy sends the notebook's traffic
//!   network     atelier-nb-{id}, a bridge (atnb…) of its own; firewall.rs keeps it off
//!               the host and other notebooks, the engine masquerades its way out
//!               (ATELIER_NOTEBOOK_NETWORK=none: no network; Jupyter on
//!               /run/atelier/jupyter.sock, no published port)
//!   no capability (CapDrop ALL), no-new-privileges, pids limited by the flavor
//! ```
//!
//! A stop removes the container and its network (the seed keeps only the work disk and
//! `/data`); a start makes new ones. Containers run on when the gateway stops or dies; the
//! persisted handle (container id, port) finds them again.

use crate::lifecycle::handle::ContainerHandle;
use std::collections::BTreeMap;

use atelier_notebook_runtime::spec::{ForwardSpec, Spec as RuntimeSpec, SshSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use serde_json::json;
use tokio::sync::OnceCell;

use super::files::{HostFiles, NotebookFiles};
use super::runconf::{self, ServerConf, write_private};
use super::{
    Backend, BackendError, EngineSpec, Handle, NotebookSpec, Observed, Progress, SaveImage,
    SaveImageError, SshLink, StopMode, Upstream, Usage, WorkerExit, WorkerSpec, firewall, workdisk,
};
use crate::config::{Flavor, NetworkMode, Settings};
use crate::store::events::EventKind;

pub use super::{NOTEBOOK_GID, NOTEBOOK_UID};
const HOME: &str = "/home/ma-user";
const WORK: &str = "/home/ma-user/work";
/// Where Jupyter is looked for after the image's own `PATH` (seed images, conda images).
const JUPYTER_FALLBACK_PATH: &str = "/home/ma-user/anaconda3/bin:/opt/conda/bin";
const RUNTIME_IN_CONTAINER: &str = "/opt/atelier/atelier-notebook-runtime";
const AGENT_IN_CONTAINER: &str = "/run/atelier";
const CONFIG_IN_CONTAINER: &str = "/run/atelier-config";
const JUPYTER_PORT: u16 = 8888;
/// Jupyter's socket in the agent dir when the container has no network.
const JUPYTER_SOCKET: &str = "jupyter.sock";
/// How long a commit may take (the seed's limit is 35 GB of container).
const COMMIT_TIME_LIMIT: Duration = Duration::from_secs(3600);
/// Labels that mark Atelier's containers.
pub const LABEL_NOTEBOOK: &str = "io.atelier.notebook";
pub const LABEL_OWNER: &str = "io.atelier.owner";
/// The data dir of the gateway that made the container (several gateways may share an engine).
pub const LABEL_GATEWAY: &str = "io.atelier.gateway";
/// The accelerators the container was given (GPU UUIDs or NPU device paths, comma-separated):
/// how a restarted gateway learns which devices are taken.
pub const LABEL_ACCELERATORS: &str = "io.atelier.accelerators";

/// A connected engine, and whether it is Podman (whose tmpfs options differ from Docker's).
struct Engine {
    client: Docker,
    podman: bool,
    /// Plain JSON requests for what bollard's typed models cannot read from every engine:
    /// Podman 4 reports states such as `stopped` that Docker's API schema does not have.
    raw: reqwest::Client,
    /// `http://engine/v1.41` (the agreed API version).
    base: String,
}

/// What the backend reads of a container (from the engine's inspect JSON).
#[derive(Debug, Default)]
struct Inspect {
    running: bool,
    pid: Option<i64>,
    exit_code: Option<i64>,
    oom_killed: bool,
    /// The host port Jupyter's port is published on.
    port: Option<u16>,
}

impl Inspect {
    fn from_json(v: &serde_json::Value) -> Inspect {
        let state = &v["State"];
        Inspect {
            running: state["Running"].as_bool().unwrap_or(false),
            pid: state["Pid"].as_i64().filter(|p| *p > 0),
            exit_code: state["ExitCode"].as_i64(),
            oom_killed: state["OOMKilled"].as_bool().unwrap_or(false),
            port: v["NetworkSettings"]["Ports"][format!("{JUPYTER_PORT}/tcp")]
                .as_array()
                .and_then(|bs| {
                    bs.iter()
                        .find_map(|b| b["HostPort"].as_str()?.parse::<u16>().ok())
                }),
        }
    }
}

pub struct DockerBackend {
    host: String,
    docker: OnceCell<Engine>,
    data_dir: PathBuf,
    runtime_bin: PathBuf,
    grace_secs: u64,
    work_disk_gb: u32,
    /// `egress`: a network of its own per notebook; `none`: no network, only loopback.
    network: NetworkMode,
    /// notebook id → the accelerators its container has; no device is in two entries.
    allocated: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Image reference → its environment, filled when [`Self::pull_if_missing`] inspects it.
    image_envs: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Why the host's firewall for notebooks could not be installed at the last try (at
    /// warm-up and every launch): notebooks are refused while it is set.
    firewall_error: std::sync::Mutex<Option<String>>,
    /// The default notebook image: what a model engine runs in when its model has no image
    /// of its own (a package with a start command).
    default_image: String,
}

/// The container name of a notebook.
pub fn container_name(id: &str) -> String {
    format!("atelier-nb-{id}")
}

/// The container name of a model engine's instance.
pub fn engine_container_name(id: &str) -> String {
    format!("atelier-engine-{id}")
}

/// The container name of a training job's worker.
pub fn worker_container_name(id: &str) -> String {
    format!("atelier-train-{id}")
}

/// The label naming the training job a worker's container runs.
pub const LABEL_TRAINING: &str = "io.atelier.training-job";
/// The label naming a training worker (`<job id>-<rank>`), which holds its accelerators.
pub const LABEL_WORKER: &str = "io.atelier.training-worker";

/// The label naming the service an engine instance serves.
pub const LABEL_SERVICE: &str = "io.atelier.service";
/// The engine instance a container is (its id), on model engines' containers.
pub const LABEL_ENGINE: &str = "io.atelier.engine";

/// The name of a notebook's network on the engine (its only container is the notebook's).
pub fn network_name(id: &str) -> String {
    format!("atelier-nb-{id}")
}

/// Where the engine is: the setting (config.rs falls back to `DOCKER_HOST`), else Docker's
/// socket, else Podman's.
fn engine_address(settings: &Settings) -> String {
    if let Some(h) = &settings.backend.docker_host {
        return h.clone();
    }
    for sock in ["/var/run/docker.sock", "/run/podman/podman.sock"] {
        if Path::new(sock).exists() {
            return format!("unix://{sock}");
        }
    }
    "unix:///var/run/docker.sock".into()
}

/// Whether the ELF file at `path` needs no dynamic loader (no `PT_INTERP` program header):
/// it then runs in any image, whatever C library the image has.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let le16 = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let le32 = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let le64 = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only (the runtime is built for x86_64).
    if bytes.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (le64(0x20), le16(0x36), le16(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        le32(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// The statically linked runtime containers start with: the setting, else next to the
/// `atelier` binary as `atelier-notebook-runtime-static` or (when static)
/// `atelier-notebook-runtime`, else where `cargo build --target x86_64-unknown-linux-gnu`
/// puts it beside this build's target dir.
fn find_static_runtime(settings: &Settings) -> anyhow::Result<PathBuf> {
    const HOW: &str = "build it with scripts/build-static-runtime.sh, or set backend.container_runtime_bin / ATELIER_CONTAINER_RUNTIME_BIN";
    if let Some(p) = &settings.backend.container_runtime_bin {
        if !p.is_file() {
            anyhow::bail!("{} not found: {HOW}", p.display());
        }
        if !is_static_elf(p) {
            anyhow::bail!(
                "{} is linked dynamically; containers need a static build: {HOW}",
                p.display()
            );
        }
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating the atelier binary")?;
    let dir = exe.parent().context("the atelier binary's directory")?;
    let mut tried = vec![
        dir.join("atelier-notebook-runtime-static"),
        dir.join("atelier-notebook-runtime"),
    ];
    if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
        tried.push(
            target
                .join("x86_64-unknown-linux-gnu")
                .join(profile)
                .join("atelier-notebook-runtime"),
        );
    }
    if let Some(p) = tried.iter().find(|p| p.is_file() && is_static_elf(p)) {
        return Ok(p.clone());
    }
    anyhow::bail!(
        "no statically linked atelier-notebook-runtime (looked at {}): {HOW}",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn engine_error(host: &str, e: bollard::errors::Error) -> BackendError {
    BackendError::Other(anyhow::anyhow!(
        "the container engine at {host} failed: {e}"
    ))
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerBackend {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let runtime_bin = find_static_runtime(settings)?;
        let host = engine_address(settings);
        tracing::info!(engine = %host, runtime = %runtime_bin.display(), "docker backend");
        Ok(DockerBackend {
            host,
            docker: OnceCell::new(),
            data_dir: settings.data_dir.clone(),
            runtime_bin,
            grace_secs: settings.backend.stop_grace_secs,
            work_disk_gb: settings.backend.work_disk_gb,
            network: settings.backend.network,
            allocated: Default::default(),
            image_envs: Default::default(),
            firewall_error: Default::default(),
            default_image: {
                let i = settings.default_image();
                i.reference.clone().unwrap_or_else(|| i.id.clone())
            },
        })
    }

    /// The engine client, connected and with the API version agreed on first use (so a
    /// gateway started before the engine still works once the engine is up).
    async fn docker(&self) -> Result<&Docker, BackendError> {
        Ok(&self.engine().await?.client)
    }

    async fn engine(&self) -> Result<&Engine, BackendError> {
        self.docker
            .get_or_try_init(|| async {
                let h = self.host.as_str();
                let socket = h.strip_prefix("unix://").or(h.starts_with('/').then_some(h));
                let client = match socket {
                    Some(path) => {
                        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
                    }
                    None => Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION),
                }
                .map_err(|e| engine_error(h, e))?;
                let unreachable = |e: bollard::errors::Error| {
                    BackendError::Other(anyhow::anyhow!(
                        "cannot reach the container engine at {h}: {e} (start Docker, or `podman system service`, or set ATELIER_DOCKER_HOST)"
                    ))
                };
                let client = client.negotiate_version().await.map_err(unreachable)?;
                let version = client.version().await.map_err(unreachable)?;
                let podman = version.components.unwrap_or_default().iter().any(|c| {
                    c.name.to_ascii_lowercase().contains("podman")
                });
                let mut raw = reqwest::Client::builder().no_proxy();
                let origin = match socket {
                    Some(path) => {
                        raw = raw.unix_socket(path);
                        "http://engine".to_owned()
                    }
                    None => format!(
                        "http://{}",
                        h.trim_start_matches("tcp://").trim_start_matches("http://")
                    ),
                };
                let v = client.client_version();
                Ok(Engine {
                    client,
                    podman,
                    raw: raw
                        .build()
                        .map_err(|e| BackendError::Other(anyhow::anyhow!("HTTP client: {e}")))?,
                    base: format!("{origin}/v{}.{}", v.major_version, v.minor_version),
                })
            })
            .await
    }

    fn notebook_dir(&self, id: &str) -> PathBuf {
        runconf::notebook_dir(&self.data_dir, id)
    }

    fn decode(handle: &Handle) -> Result<ContainerHandle, BackendError> {
        match handle {
            Handle::Docker(h) => Ok(h.clone()),
            other => Err(BackendError::Other(anyhow::anyhow!(
                other.not_for("docker")
            ))),
        }
    }

    fn agent_dir(&self, id: &str) -> PathBuf {
        self.notebook_dir(id).join("run/agent")
    }

    /// An engine instance's directory (`<data>/engines/{id}`: `run/` as a notebook's).
    fn engine_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("engines").join(id)
    }

    /// The run dir of what `h` launched.
    fn run_dir_of(&self, h: &ContainerHandle) -> PathBuf {
        if h.engine {
            self.engine_dir(&h.notebook_id).join("run")
        } else {
            self.notebook_dir(&h.notebook_id).join("run")
        }
    }

    /// Why a container that is gone (or going) did not serve, from the runtime's status and
    /// Jupyter's log, with the "no Jupyter in this image" case spelled out.
    fn failure_text(&self, id: &str, image: &str) -> String {
        let agent = self.agent_dir(id);
        let status = runconf::runtime_status(&agent.join("status.json"));
        if let Some(err) = status
            .as_ref()
            .and_then(|s| s.get("error"))
            .and_then(|e| e.as_str())
            && err.contains("not found on PATH")
        {
            return format!(
                "the image {image} has no Jupyter: looked for `jupyter` on the image's PATH, then in {}",
                JUPYTER_FALLBACK_PATH.replace(':', " and ")
            );
        }
        let tail = runconf::log_tail(&agent.join("jupyter.log"), 12);
        let how = runconf::how_it_ended(status);
        if tail.is_empty() {
            how
        } else {
            format!("{how}: {tail}")
        }
    }

    /// Reserves the flavor's accelerators for notebook or engine instance `id` (replacing
    /// what it had): GPU UUIDs or NPU device paths nothing else holds.
    fn allocate(&self, id: &str, flavor: &Flavor) -> Result<Vec<String>, BackendError> {
        let n = flavor.accelerator_count() as usize;
        let mut map = self.allocated.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
        if n == 0 {
            return Ok(Vec::new());
        }
        let (all, what): (Vec<String>, &str) = match flavor.kind.as_str() {
            "gpu" => (
                crate::gpu::inventory()
                    .into_iter()
                    .map(|g| g.uuid)
                    .collect(),
                "GPU",
            ),
            _ => (crate::gpu::npu_devices(), "NPU"),
        };
        let taken: std::collections::HashSet<String> = map.values().flatten().cloned().collect();
        let Some(picked) = crate::gpu::allocate(&all, &taken, n) else {
            let free = all.iter().filter(|d| !taken.contains(*d)).count();
            return Err(BackendError::Start(format!(
                "flavor {} needs {n} {what}(s); this host has {} and {free} of them are free (the others run other notebooks or model instances)",
                flavor.id,
                all.len()
            )));
        };
        map.insert(id.to_owned(), picked.clone());
        Ok(picked)
    }

    fn release(&self, id: &str) {
        if let Ok(mut map) = self.allocated.lock() {
            map.remove(id);
        }
    }

    /// Relearns which containers of this gateway hold which accelerators (after a restart).
    async fn relearn_allocations(&self) {
        let filters =
            json!({"label": [format!("{LABEL_GATEWAY}={}", self.data_dir.display())]}).to_string();
        let Ok(Some(list)) = self
            .raw(
                reqwest::Method::GET,
                "/containers/json",
                &[("all", "true"), ("filters", filters.as_str())],
            )
            .await
        else {
            return;
        };
        let mut map = self.allocated.lock().unwrap_or_else(|e| e.into_inner());
        for c in list.as_array().into_iter().flatten() {
            let labels = &c["Labels"];
            // A notebook's container, or a model engine instance's.
            let holder = labels[LABEL_NOTEBOOK]
                .as_str()
                .or_else(|| labels[LABEL_ENGINE].as_str())
                .or_else(|| labels[LABEL_WORKER].as_str());
            if let (Some(id), Some(devs)) = (holder, labels[LABEL_ACCELERATORS].as_str())
                && !devs.is_empty()
            {
                map.insert(id.to_owned(), devs.split(',').map(str::to_owned).collect());
            }
        }
    }

    /// Pulls `reference` unless the engine has it, telling `progress` (PullingImage, then
    /// PulledImage or PullImageFailed).
    async fn pull_if_missing(
        &self,
        reference: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<(), BackendError> {
        let docker = self.docker().await?;
        match docker.inspect_image(reference).await {
            Ok(i) => {
                // The launch that follows needs its environment.
                if let Ok(mut m) = self.image_envs.lock() {
                    m.insert(
                        reference.to_owned(),
                        i.config.and_then(|c| c.env).unwrap_or_default(),
                    );
                }
                return Ok(());
            }
            Err(e) if !not_found(&e) => return Err(engine_error(&self.host, e)),
            Err(_) => {}
        }
        if let Some(p) = progress {
            p.event(EventKind::PullingImage, Some(reference)).await;
        }
        let opts = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let mut pull = docker.create_image(Some(opts), None, None);
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                let msg = format!("pulling the image {reference}: {e}");
                if let Some(p) = progress {
                    p.event(EventKind::PullImageFailed, Some(&msg)).await;
                }
                return Err(BackendError::Image(msg));
            }
        }
        if let Some(p) = progress {
            p.event(EventKind::PulledImage, Some(reference)).await;
        }
        Ok(())
    }

    /// The image's own environment (`KEY=value`): what `prepare` just read when it checked
    /// the image (it refreshes the entry every start, so a re-tagged image is seen), else
    /// asked from the engine.
    async fn image_env(&self, reference: &str) -> Result<Vec<String>, BackendError> {
        if let Some(env) = self
            .image_envs
            .lock()
            .ok()
            .and_then(|m| m.get(reference).cloned())
        {
            return Ok(env);
        }
        let docker = self.docker().await?;
        let inspect = docker
            .inspect_image(reference)
            .await
            .map_err(|e| engine_error(&self.host, e))?;
        let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
        if let Ok(mut m) = self.image_envs.lock() {
            m.insert(reference.to_owned(), env.clone());
        }
        Ok(env)
    }

    async fn remove_container(&self, name: &str) -> Result<(), BackendError> {
        let docker = self.docker().await?;
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(&self.host, e)),
        }
    }

    /// Installs (replaces) the host's firewall for notebooks, remembering the outcome for
    /// [`Backend::refusal`].
    async fn install_firewall(&self) -> Result<(), String> {
        let outcome = tokio::task::spawn_blocking(firewall::install)
            .await
            .unwrap_or_else(|e| Err(format!("installing the firewall: {e}")));
        self.remember_firewall(&outcome);
        outcome
    }

    fn remember_firewall(&self, outcome: &Result<(), String>) {
        if let Ok(mut e) = self.firewall_error.lock() {
            *e = outcome.as_ref().err().cloned();
        }
    }

    /// Makes notebook `id`'s network, replacing one a crash left: a bridge of its own, named
    /// for the firewall's rules, isolated from other isolated networks (Podman's `isolate`;
    /// Docker isolates its bridge networks from each other anyway). Not `internal`: that
    /// would take the way out (and, on Podman 4, the published port).
    async fn make_network(
        &self,
        id: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), BackendError> {
        let name = network_name(id);
        self.remove_network(&name).await?;
        let mut options = HashMap::from([(
            "com.docker.network.bridge.name".to_owned(),
            firewall::bridge_name(id),
        )]);
        if self.engine().await?.podman {
            options.insert("isolate".into(), "true".into());
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            internal: Some(false),
            labels: Some(labels.clone()),
            options: Some(options),
            ..Default::default()
        };
        let body = serde_json::to_value(&request).context("network request")?;
        // Raw: engines differ in what the answer holds (Podman 4 warns that it does not know
        // `isolate`, then applies it; netavark does).
        let created = self
            .raw_request(
                reqwest::Method::POST,
                "/networks/create",
                &[],
                Some(&body),
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| BackendError::Start(format!("creating the network {name}: {e}")))?;
        if let Some(w) = created
            .as_ref()
            .and_then(|v| v["Warning"].as_str())
            .filter(|w| !w.is_empty())
        {
            tracing::debug!(network = %name, warning = %w, "the engine's warning");
        }
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), BackendError> {
        match self.docker().await?.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(BackendError::Other(anyhow::anyhow!(
                "removing the network {name} at {}: {e}",
                self.host
            ))),
        }
    }

    /// A plain JSON request to the engine (`path` after the API version, query included):
    /// `Ok(None)` for 404, the engine's message for other errors.
    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<serde_json::Value>, String> {
        self.raw_within(method, path, query, Duration::from_secs(30))
            .await
    }

    /// [`Self::raw`] with its own time limit (a commit of gigabytes takes minutes).
    async fn raw_within(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        limit: Duration,
    ) -> Result<Option<serde_json::Value>, String> {
        self.raw_request(method, path, query, None, limit).await
    }

    /// [`Self::raw_within`] with a JSON body (POSTs without one send `{}`).
    async fn raw_request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        limit: Duration,
    ) -> Result<Option<serde_json::Value>, String> {
        let engine = self.engine().await.map_err(|e| e.to_string())?;
        let mut req = engine
            .raw
            .request(method.clone(), format!("{}{path}", engine.base))
            .query(query)
            .timeout(limit);
        if let Some(body) = body {
            req = req.json(body);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let reply = req
            .send()
            .await
            .map_err(|e| format!("the container engine at {}: {e}", self.host))?;
        if reply.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(format!("{status}: {message}"));
        }
        if text.trim().is_empty() {
            return Ok(Some(serde_json::Value::Null));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("unreadable answer from the engine: {e}"))
    }

    /// The container as the engine sees it: `None` when it is gone.
    async fn state(&self, container: &str) -> Result<Option<Inspect>, BackendError> {
        let v = self
            .raw(
                reqwest::Method::GET,
                &format!("/containers/{container}/json"),
                &[],
            )
            .await
            .map_err(|e| {
                BackendError::Other(anyhow::anyhow!("inspecting the container {container}: {e}"))
            })?;
        Ok(v.map(|v| Inspect::from_json(&v)))
    }

    /// Where Jupyter answers: its published loopback port, or its socket in the agent dir
    /// (reached through `confined`, which follows no link the container plants there).
    fn endpoint(&self, h: &ContainerHandle) -> super::Endpoint {
        match h.port {
            Some(port) => super::Endpoint::Tcp(([127, 0, 0, 1], port).into()),
            None => super::Endpoint::Unix {
                dir: self.agent_dir(&h.notebook_id),
                name: JUPYTER_SOCKET.to_owned(),
            },
        }
    }

    async fn answers(&self, h: &ContainerHandle) -> Result<(), String> {
        runconf::jupyter_answers(&self.endpoint(h), &h.notebook_id, &h.token).await
    }
}

impl DockerBackend {
    /// [`Backend::launch`]; the caller releases the accelerators when it fails.
    async fn create_and_start(&self, spec: &NotebookSpec) -> Result<Handle, BackendError> {
        let reference = spec.image_ref.clone();
        // `prepare`, which runs before every launch, made the work disk and /data ready.
        let nb = self.notebook_dir(&spec.id);
        let run = nb.join("run");
        let _ = tokio::fs::remove_dir_all(&run).await;
        let config_dir = run.join("config");
        let agent_dir = run.join("agent");
        for d in [&config_dir, &agent_dir] {
            tokio::fs::create_dir_all(d)
                .await
                .with_context(|| format!("creating {}", d.display()))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
                .context("securing the run dir")?;
        }
        let token = hex::encode(rand::random::<[u8; 32]>());
        let egress = self.network == NetworkMode::Egress;
        let socket_inside = format!("{AGENT_IN_CONTAINER}/{JUPYTER_SOCKET}");
        runconf::write_config_dir(
            &config_dir,
            &ServerConf {
                listen: if egress {
                    runconf::Listen::Tcp {
                        ip: "0.0.0.0",
                        port: JUPYTER_PORT,
                    }
                } else {
                    runconf::Listen::Unix(&socket_inside)
                },
                base_url: &spec.base_url,
                root_dir: Path::new(WORK),
                token: &token,
                allow_root: false,
            },
        )?;
        let authorized_key = runconf::new_link_key(&run, &spec.id)?;

        // The image's environment, then ours; Jupyter is looked for on the image's PATH
        // first, then where seed and conda images keep it.
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for kv in self.image_env(&reference).await? {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        let image_path = env
            .get("PATH")
            .map(String::as_str)
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_owned();
        let devices = self.allocate(&spec.id, &spec.flavor)?;
        let (gpus, npus) = accelerator_kinds(&spec.flavor, &devices);
        for (k, v) in [
            ("PATH", format!("{image_path}:{JUPYTER_FALLBACK_PATH}")),
            ("HOME", HOME.to_owned()),
            ("USER", "ma-user".to_owned()),
            ("SHELL", "/bin/bash".to_owned()),
            ("LANG", "C.UTF-8".to_owned()),
            ("PYTHONUNBUFFERED", "1".to_owned()),
            ("JUPYTER_CONFIG_DIR", CONFIG_IN_CONTAINER.to_owned()),
            ("JUPYTER_PATH", CONFIG_IN_CONTAINER.to_owned()),
            // JupyterLab keeps these under the config dir by default, which is read-only.
            (
                "JUPYTERLAB_SETTINGS_DIR",
                format!("{HOME}/.jupyter/lab/user-settings"),
            ),
            (
                "JUPYTERLAB_WORKSPACES_DIR",
                format!("{HOME}/.jupyter/lab/workspaces"),
            ),
            ("ATELIER_NOTEBOOK_ID", spec.id.clone()),
            (
                "ATELIER_STORAGE_SOCKET",
                format!("{AGENT_IN_CONTAINER}/{}", runconf::STORAGE_SOCKET),
            ),
            (
                "PYTHONPATH",
                format!("{CONFIG_IN_CONTAINER}/{}", runconf::PYTHON_DIR),
            ),
            // The seed's notebook environment (spec/platform.md: images, training).
            ("MA_HOME", HOME.to_owned()),
            ("CURRENT_IMAGE_NAME", reference.clone()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env.extend(accelerator_env(gpus, npus, &devices));
        let runtime_spec = RuntimeSpec {
            argv: vec!["jupyter".into(), "lab".into()],
            env,
            cwd: WORK.into(),
            log_file: format!("{AGENT_IN_CONTAINER}/jupyter.log").into(),
            status_file: format!("{AGENT_IN_CONTAINER}/status.json").into(),
            grace_seconds: self.grace_secs,
            ssh: Some(SshSpec {
                socket: format!("{AGENT_IN_CONTAINER}/{}", runconf::AGENT_SOCKET).into(),
                authorized_key,
                file_socket: Some(
                    format!("{AGENT_IN_CONTAINER}/{}", runconf::STORAGE_SOCKET).into(),
                ),
                shell: None,
            }),
            user: None,
            forward: None,
            connect_back: None,
        };
        write_private(
            &agent_dir.join("spec.json"),
            &serde_json::to_vec_pretty(&runtime_spec).context("spec")?,
        )?;
        chown_tree(&config_dir).context("handing the Jupyter config to ma-user")?;
        chown_tree(&agent_dir).context("handing the agent dir to ma-user")?;

        let podman = self.engine().await?.podman;
        let npu_control = npu_control_devices();
        let visible_gpus = visible_gpus(gpus, &devices);
        let body = plan(&Plan {
            spec,
            reference: &reference,
            runtime_bin: &self.runtime_bin,
            run: &run,
            work: &workdisk::work_dir(&nb),
            data: &nb.join("data"),
            ext: &nb.join("ext"),
            egress,
            podman,
            gpus: gpus.then_some(&devices[..]),
            npus: npus.then_some(&devices[..]),
            npu_control: &npu_control,
            visible_gpus: &visible_gpus,
            gateway: &self.data_dir,
            stop_timeout: i64::try_from(self.grace_secs * 2 + 2).unwrap_or(30),
        });
        let name = container_name(&spec.id);
        let network_labels = labels_of(spec, &self.data_dir);
        // A container left from an earlier start (a crash between stop steps) has the name,
        // and holds the network a crash may have left too: both go.
        self.remove_container(&name).await?;
        if egress {
            // The host's firewall first: no notebook runs on a bridge it does not cover.
            self.install_firewall().await.map_err(BackendError::Start)?;
            self.make_network(&spec.id, &network_labels).await?;
        } else {
            self.remove_network(&network_name(&spec.id)).await?;
        }
        let docker = self.docker().await?;
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let started = async {
            // The engine picks the published port when it creates the container and binds
            // it only at start: another program can take it in between ("address already
            // in use"). A new container gets a new port; a few tries, then the error.
            let mut tries = 0;
            let created = loop {
                tries += 1;
                let created = docker
                    .create_container(Some(opts.clone()), body.clone())
                    .await
                    .map_err(|e| BackendError::Start(format!("creating the container: {e}")))?;
                match docker.start_container(&created.id, None).await {
                    Ok(()) => break created,
                    Err(e) if egress && tries < 3 && e.to_string().contains("address already in use") => {
                        tracing::warn!(notebook = %spec.id, error = %e, "the published port was taken before the container started; creating it again");
                        self.remove_container(&name).await?;
                    }
                    Err(e) => {
                        return Err(BackendError::Start(format!("starting the container: {e}")));
                    }
                }
            };
            if !egress {
                return Ok((created.id, None));
            }
            // The rules apply to the bridge only where the gateway sees it (the engine's
            // network namespace); Podman makes it at the first start, Docker at create.
            let bridge = firewall::bridge_name(&spec.id);
            if !firewall::bridge_visible(&bridge) {
                return Err(BackendError::Start(format!(
                    "the notebook's bridge {bridge} is not in the gateway's network namespace, so the firewall that keeps notebooks off the host cannot cover it: run the gateway on the engine's host, in the host's network namespace"
                )));
            }
            let port = self
                .state(&created.id)
                .await?
                .and_then(|i| i.port)
                .ok_or_else(|| {
                    BackendError::Start("the engine published no port for Jupyter".into())
                })?;
            Ok::<_, BackendError>((created.id, Some(port)))
        }
        .await;
        let (container, port) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = self.remove_container(&name).await;
                let _ = self.remove_network(&network_name(&spec.id)).await;
                return Err(e);
            }
        };
        Ok(Handle::Docker(ContainerHandle {
            notebook_id: spec.id.clone(),
            container,
            port,
            token,
            engine: false,
        }))
    }
}

impl DockerBackend {
    /// [`Backend::launch_engine`]: the model's image (or the default notebook image) as
    /// ma-user, with the runtime as PID 1 running the start command (or the image's own
    /// command), the model's files read-only at /home/mind/model, no network but its
    /// loopback, and the runtime relaying `/run/atelier/engine.sock` to port 8080.
    async fn create_engine(&self, spec: &EngineSpec) -> Result<Handle, BackendError> {
        let reference = spec
            .image
            .clone()
            .unwrap_or_else(|| self.default_image.clone());
        self.pull_if_missing(&reference, None).await?;
        let docker = self.docker().await?;
        let image = docker
            .inspect_image(&reference)
            .await
            .map_err(|e| engine_error(&self.host, e))?;
        let config = image.config.unwrap_or_default();
        let argv: Vec<String> = if spec.command.trim().is_empty() {
            config
                .entrypoint
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(config.cmd.clone().unwrap_or_default())
                .collect()
        } else {
            vec!["/bin/sh".into(), "-c".into(), spec.command.clone()]
        };
        if argv.is_empty() {
            return Err(BackendError::Start(format!(
                "the image {reference} has no command (CMD or ENTRYPOINT) and the model gives no start command: nothing would serve on port 8080"
            )));
        }
        let run = self.engine_dir(&spec.id).join("run");
        let _ = tokio::fs::remove_dir_all(&run).await;
        let agent_dir = run.join("agent");
        tokio::fs::create_dir_all(&agent_dir)
            .await
            .with_context(|| format!("creating {}", agent_dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
                .context("securing the run dir")?;
        }
        let authorized_key = runconf::new_link_key(&run, &spec.id)?;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for kv in config.env.clone().unwrap_or_default() {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        env.extend(spec.env.clone());
        let devices = self.allocate(&spec.id, &spec.flavor)?;
        let (gpus, npus) = accelerator_kinds(&spec.flavor, &devices);
        env.extend(accelerator_env(gpus, npus, &devices));
        for (k, v) in [
            ("HOME", HOME.to_owned()),
            ("USER", "ma-user".to_owned()),
            ("MODEL_DIR", super::MODEL_DIR.to_owned()),
            ("MODELARTS_SERVICE_PORT", super::ENGINE_PORT.to_string()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env.entry("PATH".into()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let cwd = match config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => w.to_owned(),
            _ if spec.model_dir.is_some() => super::MODEL_DIR.to_owned(),
            _ => "/".to_owned(),
        };
        let runtime_spec = RuntimeSpec {
            argv,
            env,
            cwd: cwd.into(),
            log_file: format!("{AGENT_IN_CONTAINER}/{}", super::ENGINE_LOG).into(),
            status_file: format!("{AGENT_IN_CONTAINER}/status.json").into(),
            grace_seconds: self.grace_secs,
            ssh: Some(SshSpec {
                socket: format!("{AGENT_IN_CONTAINER}/{}", runconf::AGENT_SOCKET).into(),
                authorized_key,
                file_socket: None,
                shell: None,
            }),
            user: None,
            forward: Some(ForwardSpec {
                socket: format!("{AGENT_IN_CONTAINER}/{}", super::ENGINE_SOCKET).into(),
                port: super::ENGINE_PORT,
            }),
            connect_back: None,
        };
        write_private(
            &agent_dir.join("spec.json"),
            &serde_json::to_vec_pretty(&runtime_spec).context("spec")?,
        )?;
        chown_tree(&agent_dir).context("handing the agent dir to ma-user")?;
        let podman = self.engine().await?.podman;
        let npu_control = npu_control_devices();
        let body = engine_plan(&EnginePlan {
            spec,
            reference: &reference,
            runtime_bin: &self.runtime_bin,
            agent_dir: &agent_dir,
            podman,
            gpus: gpus.then_some(&devices[..]),
            npus: npus.then_some(&devices[..]),
            npu_control: &npu_control,
            gateway: &self.data_dir,
            stop_timeout: i64::try_from(self.grace_secs * 2 + 2).unwrap_or(30),
        });
        let name = engine_container_name(&spec.id);
        self.remove_container(&name).await?;
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| BackendError::Start(format!("creating the container: {e}")))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = self.remove_container(&name).await;
            return Err(BackendError::Start(format!("starting the container: {e}")));
        }
        Ok(Handle::Docker(ContainerHandle {
            notebook_id: spec.id.clone(),
            container: created.id,
            port: None,
            token: String::new(),
            engine: true,
        }))
    }
}

impl DockerBackend {
    /// [`Backend::launch_worker`]: a container of the job's image (the default image when it
    /// has none) running the runtime as PID 1 with the worker's command; worker 0 on a
    /// network of its own (egress as notebooks have it, or none), the others in worker 0's.
    async fn create_worker(&self, spec: &WorkerSpec) -> Result<Handle, BackendError> {
        let reference = spec
            .image
            .clone()
            .unwrap_or_else(|| self.default_image.clone());
        self.pull_if_missing(&reference, None).await?;
        let image_env = self.image_env(&reference).await?;
        let run = self.engine_dir(&spec.id).join("run");
        let _ = tokio::fs::remove_dir_all(&run).await;
        let agent_dir = run.join("agent");
        tokio::fs::create_dir_all(&agent_dir)
            .await
            .with_context(|| format!("creating {}", agent_dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
                .context("securing the run dir")?;
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for kv in image_env {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        let image_path = env.get("PATH").cloned();
        env.extend(spec.env.clone());
        let devices = self.allocate(&spec.id, &spec.flavor)?;
        let (gpus, npus) = accelerator_kinds(&spec.flavor, &devices);
        env.extend(accelerator_env(gpus, npus, &devices));
        env.insert("HOME".into(), HOME.into());
        env.insert("USER".into(), "ma-user".into());
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
        env.insert(
            "PATH".into(),
            image_path.unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        );
        let runtime_spec = RuntimeSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), spec.command.clone()],
            env,
            cwd: HOME.into(),
            log_file: format!("{AGENT_IN_CONTAINER}/{}", super::WORKER_LOG).into(),
            status_file: format!("{AGENT_IN_CONTAINER}/status.json").into(),
            grace_seconds: self.grace_secs,
            ssh: None,
            user: None,
            forward: None,
            connect_back: None,
        };
        write_private(
            &agent_dir.join("spec.json"),
            &serde_json::to_vec_pretty(&runtime_spec).context("spec")?,
        )?;
        chown_tree(&agent_dir).context("handing the agent dir to ma-user")?;
        let network = match &spec.network_of {
            Some(first) => WorkerNetwork::Of(Self::decode(first)?.container),
            None if self.network == NetworkMode::Egress => {
                self.make_network(
                    &spec.id,
                    &HashMap::from([
                        (LABEL_TRAINING.to_owned(), spec.job_id.clone()),
                        (
                            LABEL_GATEWAY.to_owned(),
                            self.data_dir.display().to_string(),
                        ),
                    ]),
                )
                .await?;
                WorkerNetwork::Own(network_name(&spec.id))
            }
            None => WorkerNetwork::None,
        };
        let podman = self.engine().await?.podman;
        let npu_control = npu_control_devices();
        let body = worker_plan(&WorkerPlan {
            spec,
            reference: &reference,
            runtime_bin: &self.runtime_bin,
            agent_dir: &agent_dir,
            network: &network,
            podman,
            gpus: gpus.then_some(&devices[..]),
            npus: npus.then_some(&devices[..]),
            npu_control: &npu_control,
            gateway: &self.data_dir,
            stop_timeout: i64::try_from(self.grace_secs * 2 + 2).unwrap_or(30),
        });
        let docker = self.docker().await?;
        let name = worker_container_name(&spec.id);
        self.remove_container(&name).await?;
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| BackendError::Start(format!("creating the container: {e}")))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = self.remove_container(&name).await;
            return Err(BackendError::Start(format!("starting the container: {e}")));
        }
        Ok(Handle::Docker(ContainerHandle {
            notebook_id: spec.id.clone(),
            container: created.id,
            port: None,
            token: String::new(),
            engine: true,
        }))
    }
}

/// Where a worker's container is on the network.
enum WorkerNetwork {
    /// A network of its own (worker 0, egress).
    Own(String),
    /// Worker 0's (its container id): one loopback for the job.
    Of(String),
    None,
}

struct WorkerPlan<'a> {
    spec: &'a WorkerSpec,
    reference: &'a str,
    runtime_bin: &'a Path,
    agent_dir: &'a Path,
    network: &'a WorkerNetwork,
    podman: bool,
    gpus: Option<&'a [String]>,
    npus: Option<&'a [String]>,
    npu_control: &'a [String],
    gateway: &'a Path,
    stop_timeout: i64,
}

/// The engine's create body for a training worker: a pure function of the plan.
fn worker_plan(p: &WorkerPlan) -> ContainerCreateBody {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut binds = vec![
        format!("{}:{RUNTIME_IN_CONTAINER}:ro", s(p.runtime_bin)),
        format!("{}:{AGENT_IN_CONTAINER}", s(p.agent_dir)),
        format!("{}:{}", s(&p.spec.mount), super::TRAINING_MOUNT),
    ];
    for (src, dest) in &p.spec.read_only {
        binds.push(format!("{}:{dest}:ro", s(src)));
    }
    if let Some(h) = &p.spec.hosts {
        binds.push(format!("{}:/etc/hosts:ro", s(h)));
    }
    let (network_mode, hostname) = match p.network {
        WorkerNetwork::Own(n) => (n.clone(), Some(p.spec.hostname.clone())),
        WorkerNetwork::Of(c) => (format!("container:{c}"), None),
        WorkerNetwork::None => ("none".to_owned(), Some(p.spec.hostname.clone())),
    };
    let mut host = HostConfig {
        binds: Some(binds),
        network_mode: Some(network_mode),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        // PyTorch's data loaders share memory through /dev/shm (seed T8-4).
        shm_size: Some(1 << 30),
        ..Default::default()
    };
    resources(&p.spec.flavor, p.podman, &mut host);
    let mut labels = HashMap::from([
        (LABEL_TRAINING.to_owned(), p.spec.job_id.clone()),
        (LABEL_WORKER.to_owned(), p.spec.id.clone()),
        (LABEL_OWNER.to_owned(), p.spec.owner.clone()),
        (LABEL_GATEWAY.to_owned(), s(p.gateway)),
    ]);
    attach_accelerators(
        &mut host,
        &mut labels,
        p.gpus,
        p.npus,
        p.npu_control,
        p.podman,
    );
    let visible = visible_gpus(p.gpus.is_some(), p.gpus.unwrap_or_default());
    ContainerCreateBody {
        image: Some(p.reference.to_owned()),
        hostname,
        user: Some(format!("{NOTEBOOK_UID}:{NOTEBOOK_GID}")),
        entrypoint: Some(runtime_entrypoint()),
        cmd: Some(vec![]),
        env: Some(vec![format!("NVIDIA_VISIBLE_DEVICES={visible}")]),
        working_dir: Some(HOME.into()),
        labels: Some(labels),
        stop_timeout: Some(p.stop_timeout),
        host_config: Some(host),
        ..Default::default()
    }
}

/// The runtime as a container's PID 1, reading the spec the gateway wrote to the agent dir.
fn runtime_entrypoint() -> Vec<String> {
    vec![
        RUNTIME_IN_CONTAINER.into(),
        "--spec".into(),
        format!("{AGENT_IN_CONTAINER}/spec.json"),
    ]
}

/// What one engine instance's container is made of (see [`engine_plan`]).
struct EnginePlan<'a> {
    spec: &'a EngineSpec,
    reference: &'a str,
    runtime_bin: &'a Path,
    agent_dir: &'a Path,
    podman: bool,
    /// The GPUs (UUIDs) or NPUs (device paths) allocated to the instance, if any.
    gpus: Option<&'a [String]>,
    npus: Option<&'a [String]>,
    npu_control: &'a [String],
    gateway: &'a Path,
    stop_timeout: i64,
}

/// The engine's create body for a model engine's instance: a pure function of the plan.
fn engine_plan(p: &EnginePlan) -> ContainerCreateBody {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut binds = vec![
        format!("{}:{RUNTIME_IN_CONTAINER}:ro", s(p.runtime_bin)),
        format!("{}:{AGENT_IN_CONTAINER}", s(p.agent_dir)),
    ];
    if let Some(model) = &p.spec.model_dir {
        binds.push(format!("{}:{}:ro", s(model), super::MODEL_DIR));
    }
    let mut host = HostConfig {
        binds: Some(binds),
        // No network but its loopback: the gateway reaches it through the runtime's relay.
        network_mode: Some("none".to_owned()),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ..Default::default()
    };
    resources(&p.spec.flavor, p.podman, &mut host);
    let mut labels = HashMap::from([
        (LABEL_SERVICE.to_owned(), p.spec.service_id.clone()),
        (LABEL_ENGINE.to_owned(), p.spec.id.clone()),
        (LABEL_OWNER.to_owned(), p.spec.owner.clone()),
        (LABEL_GATEWAY.to_owned(), s(p.gateway)),
    ]);
    attach_accelerators(
        &mut host,
        &mut labels,
        p.gpus,
        p.npus,
        p.npu_control,
        p.podman,
    );
    let visible = visible_gpus(p.gpus.is_some(), p.gpus.unwrap_or_default());
    ContainerCreateBody {
        image: Some(p.reference.to_owned()),
        user: Some(format!("{NOTEBOOK_UID}:{NOTEBOOK_GID}")),
        entrypoint: Some(runtime_entrypoint()),
        cmd: Some(vec![]),
        env: Some(vec![format!("NVIDIA_VISIBLE_DEVICES={visible}")]),
        working_dir: Some("/".into()),
        labels: Some(labels),
        stop_timeout: Some(p.stop_timeout),
        host_config: Some(host),
        ..Default::default()
    }
}

/// What one notebook's container is made of, as [`plan`] needs it: all decided before, so
/// the plan itself reads nothing and writes nothing.
struct Plan<'a> {
    spec: &'a NotebookSpec,
    /// The image, as the engine knows it.
    reference: &'a str,
    /// The static runtime, bound read-only as the entrypoint.
    runtime_bin: &'a Path,
    /// The notebook's run dir on the host (`config/`, `agent/`, `gw/` in it).
    run: &'a Path,
    /// The work dir, `/data` and the folders outside the work dir (`ext`) on the host.
    work: &'a Path,
    data: &'a Path,
    ext: &'a Path,
    /// Its own network with a published Jupyter port, or none (only its loopback).
    egress: bool,
    podman: bool,
    /// The GPUs (UUIDs) or NPUs (device paths) allocated to it, if any.
    gpus: Option<&'a [String]>,
    npus: Option<&'a [String]>,
    /// The NPU control devices present on the host.
    npu_control: &'a [String],
    /// `NVIDIA_VISIBLE_DEVICES`: the GPUs, or `void`.
    visible_gpus: &'a str,
    /// The gateway's data dir, in a label (whose notebooks these are).
    gateway: &'a Path,
    stop_timeout: i64,
}

/// The labels every object of a notebook carries (its container, its network).
fn labels_of(spec: &NotebookSpec, gateway: &Path) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_NOTEBOOK.to_owned(), spec.id.clone()),
        (LABEL_OWNER.to_owned(), spec.owner.clone()),
        (
            LABEL_GATEWAY.to_owned(),
            gateway.to_string_lossy().into_owned(),
        ),
    ])
}

/// The engine's create body for a notebook's container: a pure function of the [`Plan`], so
/// another engine's spec (a pod, a batch job) can be made from the same decisions and each
/// case is tested without an engine.
fn plan(p: &Plan) -> ContainerCreateBody {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let spec = p.spec;
    let mut binds = vec![
        format!("{}:{RUNTIME_IN_CONTAINER}:ro", s(p.runtime_bin)),
        format!("{}:{AGENT_IN_CONTAINER}", s(&p.run.join("agent"))),
        format!("{}:{CONFIG_IN_CONTAINER}:ro", s(&p.run.join("config"))),
        format!("{}:{WORK}", s(p.work)),
        format!("{}:/data:rslave", s(p.data)),
    ];
    // Object-storage folders chosen at create outside the work dir, mounted under <nb>/ext.
    binds.extend(
        spec.extended_storage
            .iter()
            .map(|path| format!("{}:{path}", s(&p.ext.join(HostFiles::ext_name(path))))),
    );
    let mut host = HostConfig {
        binds: Some(binds),
        port_bindings: p.egress.then(|| {
            HashMap::from([(
                format!("{JUPYTER_PORT}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])
        }),
        // Its own network (made by the caller), whose bridge firewall.rs keeps off the
        // host; or none at all (only its loopback).
        network_mode: Some(if p.egress {
            network_name(&spec.id)
        } else {
            "none".to_owned()
        }),
        // The runtime starts as ma-user and needs no capability, nor does Jupyter; none can
        // be gained back (setuid binaries, file capabilities).
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ..Default::default()
    };
    resources(&spec.flavor, p.podman, &mut host);
    let mut labels = labels_of(spec, p.gateway);
    attach_accelerators(
        &mut host,
        &mut labels,
        p.gpus,
        p.npus,
        p.npu_control,
        p.podman,
    );
    ContainerCreateBody {
        image: Some(p.reference.to_owned()),
        user: Some(format!("{NOTEBOOK_UID}:{NOTEBOOK_GID}")),
        entrypoint: Some(runtime_entrypoint()),
        cmd: Some(vec![]),
        env: Some(vec![format!("NVIDIA_VISIBLE_DEVICES={}", p.visible_gpus)]),
        working_dir: Some(HOME.into()),
        exposed_ports: p.egress.then(|| vec![format!("{JUPYTER_PORT}/tcp")]),
        labels: Some(labels),
        stop_timeout: Some(p.stop_timeout),
        host_config: Some(host),
        ..Default::default()
    }
}

/// Whether a container's accelerators are GPUs or NPUs (neither without devices).
fn accelerator_kinds(flavor: &Flavor, devices: &[String]) -> (bool, bool) {
    let any = !devices.is_empty();
    (any && flavor.kind == "gpu", any && flavor.kind == "npu")
}

/// `NVIDIA_VISIBLE_DEVICES`: the GPUs, or `void`. Said in the container's own environment
/// too: an image saved from a CPU notebook carries `void`, which a GPU container from it
/// must not inherit.
fn visible_gpus(gpus: bool, devices: &[String]) -> String {
    if gpus {
        devices.join(",")
    } else {
        "void".to_owned()
    }
}

/// The environment that tells a container's programs their accelerators (the seed's
/// `MA_NUM_GPUS`, NVIDIA's and Ascend's visible devices).
fn accelerator_env(gpus: bool, npus: bool, devices: &[String]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "MA_NUM_GPUS".to_owned(),
            if gpus { devices.len() } else { 0 }.to_string(),
        ),
        (
            "NVIDIA_VISIBLE_DEVICES".to_owned(),
            visible_gpus(gpus, devices),
        ),
    ];
    if npus {
        let ids: Vec<&str> = devices
            .iter()
            .filter_map(|d| d.strip_prefix("/dev/davinci"))
            .collect();
        env.push(("ASCEND_VISIBLE_DEVICES".to_owned(), ids.join(",")));
    }
    env
}

/// The NPU control devices present on this host (they go with any NPU).
fn npu_control_devices() -> Vec<String> {
    crate::gpu::NPU_CONTROL_DEVICES
        .iter()
        .filter(|d| Path::new(d).exists())
        .map(|d| d.to_string())
        .collect()
}

/// Gives a container its GPUs (CDI names on Podman, a device request on Docker) or NPUs
/// (the devices and the control devices), and labels it with them so a restarted gateway
/// knows which are taken.
fn attach_accelerators(
    host: &mut HostConfig,
    labels: &mut HashMap<String, String>,
    gpus: Option<&[String]>,
    npus: Option<&[String]>,
    npu_control: &[String],
    podman: bool,
) {
    match (gpus, podman) {
        // Podman: the NVIDIA container toolkit's CDI names.
        (Some(gpus), true) => {
            host.devices = Some(
                gpus.iter()
                    .map(|uuid| device(&format!("nvidia.com/gpu={uuid}")))
                    .collect(),
            );
        }
        (Some(gpus), false) => {
            host.device_requests = Some(vec![bollard::models::DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(gpus.to_vec()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]);
        }
        (None, _) => {}
    }
    if let Some(npus) = npus {
        host.devices = Some(npus.iter().chain(npu_control).map(|d| device(d)).collect());
    }
    let accelerators = gpus.or(npus).unwrap_or_default();
    if !accelerators.is_empty() {
        labels.insert(LABEL_ACCELERATORS.to_owned(), accelerators.join(","));
    }
}

/// The engine's resource settings for a flavor: CPUs, memory, `/dev/shm` and `/cache`
/// (owned by the notebook user: Podman's tmpfs says so with `U`, Docker's with uid/gid).
fn resources(flavor: &Flavor, podman: bool, host: &mut HostConfig) {
    let gib = 1024 * 1024 * 1024_i64;
    host.nano_cpus = Some(i64::from(flavor.vcpus) * 1_000_000_000);
    host.memory = Some(i64::from(flavor.memory_gib) * gib);
    // A fork bomb stops here (the engine's own default, Podman's 2048, is not the flavor's).
    host.pids_limit = Some(i64::from(flavor.pids()));
    // Shared memory for PyTorch's data loaders: an eighth of the memory, at least 64 MiB.
    host.shm_size = Some((i64::from(flavor.memory_gib) * gib / 8).max(64 * 1024 * 1024));
    // Scratch space, gone with the container (seed: host NVMe on bigger flavors).
    host.tmpfs = Some(HashMap::from([(
        "/cache".to_owned(),
        format!(
            // Memory-backed: it counts against the memory limit, so half of it at most.
            "rw,nosuid,nodev,size={}m,{}",
            (flavor.memory_gib * 1024 / 2).max(256),
            if podman {
                "U".to_owned()
            } else {
                format!("uid={NOTEBOOK_UID},gid={NOTEBOOK_GID},mode=0755")
            }
        ),
    )]));
}

/// `chown -R` to the notebook user (the runtime inside the container runs as that user),
/// never following a link (the agent dir is the container's to write).
fn chown_tree(path: &Path) -> std::io::Result<()> {
    crate::confined::Dir::open(path)?
        .chown_tree(NOTEBOOK_UID, NOTEBOOK_GID)
        .map(|_| ())
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn refusal(&self) -> Option<String> {
        // Tried again while it fails (a few milliseconds, only then), so a fixed host serves
        // the next request without a restart.
        self.firewall_error.lock().ok()?.as_ref()?;
        let outcome = firewall::install();
        self.remember_firewall(&outcome);
        outcome.err()
    }

    async fn warm_up(&self) {
        if self.network == NetworkMode::Egress
            && let Err(e) = self.install_firewall().await
        {
            tracing::error!(error = %e, "container notebooks are refused until this is fixed");
        }
        self.relearn_allocations().await;
        match self.docker().await {
            Ok(d) => match d.version().await {
                Ok(v) => tracing::info!(
                    engine = %self.host,
                    version = v.version.as_deref().unwrap_or("?"),
                    api = v.api_version.as_deref().unwrap_or("?"),
                    "container engine ready"
                ),
                Err(e) => tracing::error!(engine = %self.host, error = %e, "container engine"),
            },
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "the container engine is unreachable; notebooks cannot start until it answers"
            ),
        }
    }

    async fn prepare(
        &self,
        spec: &NotebookSpec,
        progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        self.pull_if_missing(&spec.image_ref, Some(progress))
            .await?;
        let nb = self.notebook_dir(&spec.id);
        let data = nb.join("data");
        tokio::fs::create_dir_all(&data)
            .await
            .with_context(|| format!("creating {}", data.display()))?;
        let _ = std::os::unix::fs::chown(&data, Some(NOTEBOOK_UID), Some(NOTEBOOK_GID));
        workdisk::ensure_shared(&data).await;
        if spec.work_on_object_storage {
            // The gateway mounts the folder at <nb>/work next; no disk under it.
            let work = workdisk::work_dir(&nb);
            tokio::fs::create_dir_all(&work)
                .await
                .with_context(|| format!("creating {}", work.display()))?;
        } else {
            workdisk::ensure(&nb, self.work_disk_gb, (NOTEBOOK_UID, NOTEBOOK_GID))
                .await
                .map_err(|e| BackendError::Start(format!("preparing the work disk: {e:#}")))?;
        }
        Ok(())
    }

    async fn launch(&self, spec: &NotebookSpec) -> Result<Handle, BackendError> {
        let launched = self.create_and_start(spec).await;
        if launched.is_err() {
            self.release(&spec.id);
        }
        launched
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
        loop {
            match self.state(&h.container).await? {
                Some(s) if s.running => {}
                _ => {
                    return Err(BackendError::Start(
                        self.failure_text(&spec.id, &spec.image_ref.clone()),
                    ));
                }
            }
            if self.answers(&h).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BackendError::Start(format!(
                    "JupyterLab did not answer within {} s: {}",
                    timeout.as_secs(),
                    runconf::log_tail(&self.agent_dir(&spec.id).join("jupyter.log"), 12)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn poll(&self, handle: &Handle) -> Observed {
        let h = match Self::decode(handle) {
            Ok(h) => h,
            Err(e) => return Observed::Exited(e.to_string()),
        };
        match self.state(&h.container).await {
            // The engine is unreachable: say so, but do not call the notebook dead.
            Err(e) => Observed::Unhealthy(e.to_string()),
            Ok(None) => Observed::Exited("its container is gone".into()),
            Ok(Some(s)) if !s.running => {
                let code = s
                    .exit_code
                    .map(|c| format!(" (container exit code {c})"))
                    .unwrap_or_default();
                let oom = if s.oom_killed {
                    " — out of memory: the flavor's memory limit was reached"
                } else {
                    ""
                };
                let status =
                    runconf::runtime_status(&self.run_dir_of(&h).join("agent/status.json"));
                Observed::Exited(format!("{}{code}{oom}", runconf::how_it_ended(status)))
            }
            // Whether an engine serves is for the gateway's probes.
            Ok(Some(_)) if h.engine => Observed::Running,
            Ok(Some(_)) => match self.answers(&h).await {
                Ok(()) => Observed::Running,
                Err(e) => Observed::Unhealthy(e),
            },
        }
    }

    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError> {
        let h = Self::decode(handle)?;
        let docker = self.docker().await?;
        // The runtime (PID 1) stops Jupyter and the kernels within two grace periods.
        let t = i32::try_from(mode.grace.as_secs() * 2 + 2).unwrap_or(60);
        let opts = StopContainerOptionsBuilder::default().t(t).build();
        match docker.stop_container(&h.container, Some(opts)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(engine_error(&self.host, e)),
        }
        if h.engine {
            self.remove_container(&h.container).await?;
            self.release(&h.notebook_id);
            return Ok(());
        }
        // Only the work disk and /data outlive a stop (seed); the next start makes a new
        // container from the image, on a new network.
        self.remove_container(&h.container).await?;
        self.remove_network(&network_name(&h.notebook_id)).await?;
        self.release(&h.notebook_id);
        let nb = self.notebook_dir(&h.notebook_id);
        // The work disk and any object-storage folders mounted in it (deepest first).
        if let Err(e) = workdisk::unmount_all(&workdisk::work_dir(&nb)).await {
            tracing::warn!(notebook = %h.notebook_id, error = format!("{e:#}"), "unmounting the work disk");
        }
        // Mounts under /data are made again at the next start.
        if let Err(e) = workdisk::unmount_all(&nb.join("data")).await {
            tracing::warn!(notebook = %h.notebook_id, error = format!("{e:#}"), "unmounting /data");
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        self.remove_container(&container_name(id)).await?;
        self.remove_network(&network_name(id)).await?;
        self.release(id);
        let nb = self.notebook_dir(id);
        workdisk::remove(&nb)
            .await
            .map_err(|e| BackendError::Other(e.context("removing the work disk")))?;
        let _ = workdisk::unmount_all(&nb.join("data")).await;
        // Refuses to delete through anything still mounted (a work disk, an object-store
        // folder): the files behind it are not the notebook dir's to remove.
        runconf::remove_notebook_dir(&nb).await
    }

    fn upstream(&self, handle: &Handle) -> Result<Upstream, BackendError> {
        let h = Self::decode(handle)?;
        Ok(Upstream {
            endpoint: self.endpoint(&h),
            token: h.token,
        })
    }

    async fn ssh_link(&self, handle: &Handle) -> Result<SshLink, BackendError> {
        let h = Self::decode(handle)?;
        runconf::ssh_link(&self.run_dir_of(&h), AGENT_IN_CONTAINER).await
    }

    async fn launch_engine(&self, spec: &EngineSpec) -> Result<Handle, BackendError> {
        let launched = self.create_engine(spec).await;
        if launched.is_err() {
            self.release(&spec.id);
        }
        launched
    }

    fn engine_endpoint(&self, handle: &Handle) -> Result<super::Endpoint, BackendError> {
        let h = Self::decode(handle)?;
        Ok(super::Endpoint::Unix {
            dir: self.engine_dir(&h.notebook_id).join("run/agent"),
            name: super::ENGINE_SOCKET.to_owned(),
        })
    }

    fn engine_log_dir(&self, handle: &Handle) -> Option<PathBuf> {
        let h = Self::decode(handle).ok()?;
        Some(self.engine_dir(&h.notebook_id).join("run/agent"))
    }

    async fn launch_worker(&self, spec: &WorkerSpec) -> Result<Handle, BackendError> {
        let launched = self.create_worker(spec).await;
        if launched.is_err() {
            self.release(&spec.id);
        }
        launched
    }

    async fn worker_exit(&self, handle: &Handle) -> Option<WorkerExit> {
        let Ok(h) = Self::decode(handle) else {
            return Some(WorkerExit::Lost);
        };
        match self.state(&h.container).await {
            // The engine does not answer: not an exit.
            Err(_) => None,
            Ok(None) => Some(WorkerExit::Lost),
            Ok(Some(s)) if s.running => None,
            // The runtime is PID 1 and exits with the command's code.
            Ok(Some(s)) => Some(match s.exit_code {
                Some(c) => WorkerExit::Code(c as i32),
                None => WorkerExit::Lost,
            }),
        }
    }

    async fn remove_worker(&self, id: &str) -> Result<(), BackendError> {
        self.remove_container(&worker_container_name(id)).await?;
        self.remove_network(&network_name(id)).await?;
        self.release(id);
        runconf::remove_notebook_dir(&self.engine_dir(id)).await
    }

    async fn remove_engine(&self, id: &str) -> Result<(), BackendError> {
        self.remove_container(&engine_container_name(id)).await?;
        self.release(id);
        runconf::remove_notebook_dir(&self.engine_dir(id)).await
    }

    fn saves_images(&self) -> bool {
        true
    }

    fn engine_accelerators(&self) -> bool {
        true
    }

    fn accelerators_in_use(&self) -> HashMap<String, Vec<String>> {
        self.allocated.lock().map(|m| m.clone()).unwrap_or_default()
    }

    async fn save_image(
        &self,
        handle: &Handle,
        save: &SaveImage,
        progress: &dyn Progress,
    ) -> Result<u64, SaveImageError> {
        let h = Self::decode(handle).map_err(|e| SaveImageError::Other(e.to_string()))?;
        let gone = || SaveImageError::Other("the notebook's container is gone".into());
        let container = self
            .raw(
                reqwest::Method::GET,
                &format!("/containers/{}/json", h.container),
                &[("size", "true")],
            )
            .await
            .map_err(SaveImageError::Other)?
            .ok_or_else(gone)?;

        // The container's size: its image plus what it wrote (mounts are not in it).
        let size = container["SizeRootFs"].as_u64().unwrap_or(0);
        let (size_gb, limit_gb) = super::size_texts(size, save.max_bytes);
        progress
            .event_text(
                EventKind::CheckImageSize,
                &format!("The notebook container image size is {size_gb}G."),
                None,
            )
            .await;
        if size > save.max_bytes {
            return Err(SaveImageError::TooLarge { size_gb, limit_gb });
        }

        // Its image's layers; the commit adds one.
        let image = container["Image"].as_str().unwrap_or_default().to_owned();
        let layers = self
            .raw(reqwest::Method::GET, &format!("/images/{image}/json"), &[])
            .await
            .map_err(SaveImageError::Other)?
            .and_then(|v| v["RootFS"]["Layers"].as_array().map(Vec::len))
            .unwrap_or(0) as u32;
        progress
            .event_text(
                EventKind::CheckImageLayer,
                &format!("The number of original notebook image layers is {layers}."),
                None,
            )
            .await;
        if layers + 1 > save.max_layers {
            return Err(SaveImageError::TooManyLayers {
                layers: layers + 1,
                limit: save.max_layers,
            });
        }

        // Processes in uninterruptible sleep (D) would stall the commit's freeze.
        if let Some(pid) = container["State"]["Pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
        {
            let stuck = tokio::task::spawn_blocking(move || {
                super::process::tree_usage(pid)
                    .map(|u| {
                        u.pids
                            .into_iter()
                            .filter(|p| super::process::proc_state(*p as i32) == Some('D'))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            if !stuck.is_empty() {
                return Err(SaveImageError::DState(stuck));
            }
        }

        // Commit: the container's own filesystem; binds and tmpfs mounts (work disk, /data,
        // /cache, /dev/shm, the runtime) are not part of it. The entrypoint that pointed at
        // the bound runtime goes; the image starts a shell, like a plain base image.
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let (repo, tag) = split_reference(&save.reference);
        progress
            .event(EventKind::ContainerCommitStarted, None)
            .await;
        let committed = self
            .raw_within(
                reqwest::Method::POST,
                "/commit",
                &[
                    ("container", h.container.as_str()),
                    ("repo", repo),
                    ("tag", tag),
                    ("comment", save.comment.as_str()),
                    ("pause", "true"),
                    ("changes", "ENTRYPOINT []"),
                    ("changes", r#"CMD ["/bin/bash"]"#),
                ],
                COMMIT_TIME_LIMIT,
            )
            .await
            .and_then(|v| v.ok_or_else(|| "the container is gone".to_owned()));
        if let Err(e) = committed {
            progress
                .event_text(
                    EventKind::ContainerCommitFailed,
                    &format!(
                        "Failed to commit notebook container. Please contact SRE to check node {node}."
                    ),
                    Some(&e),
                )
                .await;
            return Err(SaveImageError::Commit(e));
        }
        progress
            .event(EventKind::ContainerCommitSuccess, None)
            .await;

        if save.push {
            progress.event(EventKind::ImagePushStarted, None).await;
            let docker = self
                .docker()
                .await
                .map_err(|e| SaveImageError::Other(e.to_string()))?;
            let opts = bollard::query_parameters::PushImageOptionsBuilder::default()
                .tag(tag)
                .build();
            let mut push = docker.push_image(repo, Some(opts), None);
            let mut failure = None;
            while let Some(step) = push.next().await {
                if let Err(e) = step {
                    failure = Some(e.to_string());
                    break;
                }
            }
            if let Some(e) = failure {
                progress
                    .event_text(
                        EventKind::ImagePushFailed,
                        &format!(
                            "Failed to push Notebook image. Please contact SRE to check node {node}."
                        ),
                        Some(&e),
                    )
                    .await;
                // The commit is of no use unpushed; keep the engine's disk clean.
                let _ = self
                    .raw(
                        reqwest::Method::DELETE,
                        &format!("/images/{}", save.reference),
                        &[],
                    )
                    .await;
                return Err(SaveImageError::Push(e));
            }
            progress.event(EventKind::ImagePushSuccess, None).await;
        }
        let size = self
            .raw(
                reqwest::Method::GET,
                &format!("/images/{}/json", save.reference),
                &[],
            )
            .await
            .ok()
            .flatten()
            .and_then(|v| v["Size"].as_u64())
            .unwrap_or(size);
        Ok(size)
    }

    async fn ensure_image(&self, reference: &str) -> Result<(), BackendError> {
        self.pull_if_missing(reference, None)
            .await
            .map_err(|e| match e {
                BackendError::Image(m) => BackendError::Image(format!(
                    "the engine does not have {reference} and could not pull it ({m})"
                )),
                other => other,
            })
    }

    fn work_disk(&self, id: &str) -> Option<workdisk::DiskInfo> {
        workdisk::info(&self.notebook_dir(id))
    }

    fn files(&self, id: &str) -> Result<Box<dyn NotebookFiles>, BackendError> {
        let nb = self.notebook_dir(id);
        Ok(Box::new(HostFiles {
            // In the work dir: mounted under <nb>/work before the container starts; its
            // bind of the work dir is recursive, so the mounts come with it. Elsewhere:
            // under <nb>/ext, bound at the path (NotebookSpec::extended_storage).
            work_inside: WORK.into(),
            data_inside: "/data".into(),
            owner: Some((NOTEBOOK_UID, NOTEBOOK_GID)),
            // `prepare` made <nb>/data a shared mount of its own, bound rslave.
            live_if_data_shared: true,
            outside_work: true,
            backend: self.name(),
            nb,
        }))
    }

    async fn expand_work_disk(
        &self,
        handle: &Handle,
        size_gb: u32,
    ) -> Result<workdisk::DiskInfo, BackendError> {
        let h = Self::decode(handle)?;
        workdisk::expand(&self.notebook_dir(&h.notebook_id), size_gb)
            .await
            .map_err(BackendError::Other)
    }

    async fn usage(&self, handle: &Handle) -> Option<Usage> {
        let h = Self::decode(handle).ok()?;
        let pid = self.state(&h.container).await.ok()??.pid?;
        let pid = i32::try_from(pid).ok()?;
        tokio::task::spawn_blocking(move || super::process::tree_usage(pid))
            .await
            .ok()
            .flatten()
    }
}

/// A device passed into the container at the same path, read-write.
fn device(path: &str) -> bollard::models::DeviceMapping {
    bollard::models::DeviceMapping {
        path_on_host: Some(path.to_owned()),
        path_in_container: Some(path.to_owned()),
        cgroup_permissions: Some("rwm".into()),
    }
}

/// `registry/path/name:tag` → (`registry/path/name`, `tag`); `latest` without a tag.
fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("127.0.0.1:5000/atelier/alice/env:v1"),
            ("127.0.0.1:5000/atelier/alice/env", "v1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/atelier/env"),
            ("127.0.0.1:5000/atelier/env", "latest")
        );
        assert_eq!(split_reference("env:1"), ("env", "1"));
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // This test binary is linked dynamically (a normal cargo build).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        let not_elf = std::env::temp_dir().join(format!("not-elf-{}", std::process::id()));
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&not_elf));
        std::fs::remove_file(&not_elf).unwrap();
    }

    #[test]
    fn flavors_size_cpus_memory_shm_and_cache() {
        let f = Flavor {
            id: "cpu-2-8".into(),
            kind: "cpu".into(),
            vcpus: 2,
            memory_gib: 8,
            accelerators: None,
            max_pids: None,
            description: String::new(),
            backend: None,
            slurm: None,
        };
        let mut h = HostConfig::default();
        resources(&f, true, &mut h);
        assert_eq!(h.nano_cpus, Some(2_000_000_000));
        assert_eq!(h.memory, Some(8 << 30));
        assert_eq!(h.pids_limit, Some(i64::from(Flavor::DEFAULT_MAX_PIDS)));
        assert_eq!(h.shm_size, Some(1 << 30));
        assert!(h.tmpfs.unwrap()["/cache"].contains("size=4096m"));
        let small = Flavor {
            max_pids: Some(128),
            ..f
        };
        let mut h = HostConfig::default();
        resources(&small, true, &mut h);
        assert_eq!(h.pids_limit, Some(128));
    }

    fn spec(kind: &str) -> NotebookSpec {
        NotebookSpec {
            id: "nb1".into(),
            owner: "alice".into(),
            flavor: Flavor {
                id: format!("{kind}-2-8"),
                kind: kind.into(),
                vcpus: 2,
                memory_gib: 8,
                accelerators: None,
                max_pids: None,
                description: String::new(),
                backend: None,
                slurm: None,
            },
            image: "img".into(),
            image_ref: "localhost/img:1".into(),
            base_url: "/nb/nb1/".into(),
            work_on_object_storage: false,
            extended_storage: vec!["/opt/data".into()],
            lease: None,
        }
    }

    fn plan_for(
        spec: &NotebookSpec,
        egress: bool,
        podman: bool,
        gpus: Option<&[String]>,
    ) -> ContainerCreateBody {
        plan(&Plan {
            spec,
            reference: &spec.image_ref,
            runtime_bin: Path::new("/opt/rt"),
            run: Path::new("/d/nb1/run"),
            work: Path::new("/d/nb1/work"),
            data: Path::new("/d/nb1/data"),
            ext: Path::new("/d/nb1/ext"),
            egress,
            podman,
            gpus,
            npus: None,
            npu_control: &[],
            visible_gpus: if gpus.is_some() { "GPU-1" } else { "void" },
            gateway: Path::new("/d"),
            stop_timeout: 22,
        })
    }

    #[test]
    fn a_container_plan_confines_the_notebook_and_binds_its_folders() {
        let s = spec("cpu");
        let body = plan_for(&s, false, true, None);
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(body.user.as_deref(), Some("1000:100"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        // No network: no published port, nothing exposed.
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(host.port_bindings.is_none() && body.exposed_ports.is_none());
        let binds = host.binds.as_ref().unwrap();
        for b in [
            "/opt/rt:/opt/atelier/atelier-notebook-runtime:ro",
            "/d/nb1/run/agent:/run/atelier",
            "/d/nb1/run/config:/run/atelier-config:ro",
            "/d/nb1/work:/home/ma-user/work",
            "/d/nb1/data:/data:rslave",
            "/d/nb1/ext/opt--data:/opt/data",
        ] {
            assert!(binds.contains(&b.to_string()), "{b} missing from {binds:?}");
        }
        assert_eq!(body.stop_timeout, Some(22));
        assert_eq!(body.labels.as_ref().unwrap()[LABEL_NOTEBOOK], "nb1");
        assert_eq!(
            body.env,
            Some(vec!["NVIDIA_VISIBLE_DEVICES=void".to_string()])
        );
    }

    #[test]
    fn egress_publishes_jupyter_on_loopback_only_on_the_notebooks_own_network() {
        let s = spec("cpu");
        let body = plan_for(&s, true, false, None);
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode, Some(network_name("nb1")));
        let ports = host.port_bindings.unwrap();
        let bound = ports["8888/tcp"].as_ref().unwrap();
        assert_eq!(bound[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(body.exposed_ports, Some(vec!["8888/tcp".to_string()]));
    }

    #[test]
    fn gpus_go_through_cdi_on_podman_and_device_requests_on_docker() {
        let s = spec("gpu");
        let gpus = vec!["GPU-1".to_string()];
        let podman = plan_for(&s, false, true, Some(&gpus));
        let host = podman.host_config.unwrap();
        let devices = host.devices.unwrap();
        assert_eq!(
            devices[0].path_on_host.as_deref(),
            Some("nvidia.com/gpu=GPU-1")
        );
        assert!(host.device_requests.is_none());
        assert_eq!(podman.labels.unwrap()[LABEL_ACCELERATORS], "GPU-1");
        let docker = plan_for(&s, false, false, Some(&gpus));
        let host = docker.host_config.unwrap();
        assert!(host.devices.is_none());
        let req = &host.device_requests.unwrap()[0];
        assert_eq!(req.device_ids, Some(gpus.clone()));
        assert_eq!(
            docker.env,
            Some(vec!["NVIDIA_VISIBLE_DEVICES=GPU-1".to_string()])
        );
    }

    fn engine_body(
        kind: &str,
        podman: bool,
        gpus: Option<&[String]>,
        npus: Option<&[String]>,
    ) -> ContainerCreateBody {
        let nb = spec(kind);
        let spec = EngineSpec {
            id: "inst1".into(),
            owner: "alice".into(),
            service_id: "svc1".into(),
            flavor: nb.flavor,
            image: Some("localhost/engine:1".into()),
            command: String::new(),
            model_dir: Some("/d/models/v1/model".into()),
            env: Default::default(),
        };
        engine_plan(&EnginePlan {
            spec: &spec,
            reference: "localhost/engine:1",
            runtime_bin: Path::new("/opt/rt"),
            agent_dir: Path::new("/d/engines/inst1/run/agent"),
            podman,
            gpus,
            npus,
            npu_control: &["/dev/davinci_manager".to_string()],
            gateway: Path::new("/d"),
            stop_timeout: 22,
        })
    }

    #[test]
    fn an_engine_instance_gets_its_flavors_accelerators_as_a_notebook_does() {
        // A CPU instance: no device, no GPU visible even if the image says otherwise.
        let cpu = engine_body("cpu", true, None, None);
        let host = cpu.host_config.as_ref().unwrap();
        assert!(host.devices.is_none() && host.device_requests.is_none());
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(
            cpu.env,
            Some(vec!["NVIDIA_VISIBLE_DEVICES=void".to_string()])
        );
        let labels = cpu.labels.unwrap();
        assert_eq!(labels[LABEL_ENGINE], "inst1");
        assert!(!labels.contains_key(LABEL_ACCELERATORS));

        // GPUs: CDI names on Podman, a device request on Docker; labelled for a restart.
        let gpus = vec!["GPU-1".to_string(), "GPU-2".to_string()];
        let podman = engine_body("gpu", true, Some(&gpus), None);
        let devices = podman
            .host_config
            .as_ref()
            .unwrap()
            .devices
            .clone()
            .unwrap();
        assert_eq!(
            devices
                .iter()
                .map(|d| d.path_on_host.clone().unwrap())
                .collect::<Vec<_>>(),
            vec!["nvidia.com/gpu=GPU-1", "nvidia.com/gpu=GPU-2"]
        );
        assert_eq!(podman.labels.unwrap()[LABEL_ACCELERATORS], "GPU-1,GPU-2");
        let docker = engine_body("gpu", false, Some(&gpus), None);
        let host = docker.host_config.unwrap();
        assert!(host.devices.is_none());
        assert_eq!(host.device_requests.unwrap()[0].device_ids, Some(gpus));
        assert_eq!(
            docker.env,
            Some(vec!["NVIDIA_VISIBLE_DEVICES=GPU-1,GPU-2".to_string()])
        );

        // NPUs: the devices and the control devices.
        let npus = vec!["/dev/davinci3".to_string()];
        let npu = engine_body("npu", true, None, Some(&npus));
        let devices = npu.host_config.unwrap().devices.unwrap();
        assert_eq!(
            devices
                .iter()
                .map(|d| d.path_on_host.clone().unwrap())
                .collect::<Vec<_>>(),
            vec!["/dev/davinci3", "/dev/davinci_manager"]
        );
    }

    #[test]
    fn a_training_worker_mounts_its_dirs_and_later_workers_share_worker_0s_network() {
        let nb = spec("gpu");
        let w = |rank: u32| WorkerSpec {
            id: format!("job1-{rank}"),
            owner: "alice".into(),
            job_id: "job1".into(),
            rank,
            flavor: nb.flavor.clone(),
            image: None,
            command: "python train.py".into(),
            env: Default::default(),
            mount: format!("/d/training/job1/w{rank}").into(),
            read_only: vec![(
                "/d/training/job1/inputs/data_url_0".into(),
                "/home/ma-user/modelarts/inputs/data_url_0".into(),
            )],
            hosts: Some("/d/training/job1/hosts".into()),
            network_of: None,
            hostname: format!("ma-job-job1-worker-{rank}"),
        };
        let gpus = vec!["GPU-1".to_string()];
        let plan = |spec: &WorkerSpec, network: &WorkerNetwork| {
            worker_plan(&WorkerPlan {
                spec,
                reference: "img:1",
                runtime_bin: Path::new("/opt/rt"),
                agent_dir: Path::new("/d/engines/job1-0/run/agent"),
                network,
                podman: true,
                gpus: Some(&gpus),
                npus: None,
                npu_control: &[],
                gateway: Path::new("/d"),
                stop_timeout: 22,
            })
        };
        let first = plan(&w(0), &WorkerNetwork::Own("atelier-nb-job1-0".into()));
        let host = first.host_config.clone().unwrap();
        let binds = host.binds.clone().unwrap();
        assert!(binds.contains(&"/d/training/job1/w0:/home/ma-user/modelarts".to_string()));
        assert!(
            binds.contains(
                &"/d/training/job1/inputs/data_url_0:/home/ma-user/modelarts/inputs/data_url_0:ro"
                    .to_string()
            )
        );
        assert!(binds.contains(&"/d/training/job1/hosts:/etc/hosts:ro".to_string()));
        assert_eq!(host.network_mode.as_deref(), Some("atelier-nb-job1-0"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(first.user.as_deref(), Some("1000:100"));
        assert_eq!(first.hostname.as_deref(), Some("ma-job-job1-worker-0"));
        let labels = first.labels.unwrap();
        assert_eq!(
            (
                labels[LABEL_TRAINING].as_str(),
                labels[LABEL_WORKER].as_str()
            ),
            ("job1", "job1-0")
        );
        assert_eq!(labels[LABEL_ACCELERATORS], "GPU-1");
        let second = plan(&w(1), &WorkerNetwork::Of("c0ffee".into()));
        assert_eq!(
            second.host_config.unwrap().network_mode.as_deref(),
            Some("container:c0ffee")
        );
        // A container sharing another's network cannot have a host name of its own.
        assert!(second.hostname.is_none());
    }

    #[test]
    fn the_accelerator_environment_names_what_a_container_got() {
        let gpus = vec!["GPU-1".to_string(), "GPU-2".to_string()];
        let env: HashMap<String, String> =
            accelerator_env(true, false, &gpus).into_iter().collect();
        assert_eq!(env["MA_NUM_GPUS"], "2");
        assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "GPU-1,GPU-2");
        assert!(!env.contains_key("ASCEND_VISIBLE_DEVICES"));
        let npus = vec!["/dev/davinci0".to_string(), "/dev/davinci5".to_string()];
        let env: HashMap<String, String> =
            accelerator_env(false, true, &npus).into_iter().collect();
        assert_eq!(env["MA_NUM_GPUS"], "0");
        assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "void");
        assert_eq!(env["ASCEND_VISIBLE_DEVICES"], "0,5");
        let none: HashMap<String, String> =
            accelerator_env(false, false, &[]).into_iter().collect();
        assert_eq!(none["NVIDIA_VISIBLE_DEVICES"], "void");
        let flavor = spec("gpu").flavor;
        assert_eq!(accelerator_kinds(&flavor, &[]), (false, false));
        assert_eq!(accelerator_kinds(&flavor, &gpus), (true, false));
    }
}
