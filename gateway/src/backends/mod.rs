//! Where notebooks run. One trait shaped like JupyterHub's Spawner, with types:
//!
//! ```text
//!   prepare(spec, progress)        storage + image (or virtualenv) ready
//!   launch(spec) -> Handle         something is running; the handle is persisted at once
//!   wait_ready(handle, deadline)   returns when the notebook really answers
//!   poll(handle) -> Observed       the backend's truth, for the reconciler
//!   stop(handle, grace)            SIGTERM, then SIGKILL after the grace period
//!   delete(id, handle)             everything, including the work dir
//!   upstream(handle) -> Upstream   where the proxy sends a notebook's traffic
//!   ssh_link(handle) -> SshLink    the notebook's agent: SSH sessions, and `atelier.file`
//!                                  relayed back over the same kind of link
//! ```
//!
//! The handle is a typed value per backend persisted in the store
//! (`lifecycle::handle`), so a restarted gateway re-attaches to notebooks that kept running.
//! The gateway reaches a notebook only by dialling the [`Endpoint`]s a backend gives
//! (Jupyter's in [`Upstream`], the agent's in [`SshLink`]). Operations a backend cannot do
//! (save an image, expand a work disk on the process backend) answer
//! [`BackendError::Unsupported`] with a clear message.

pub mod agent;
pub mod cgroups;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod docker;
pub mod external;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod files;
pub mod firewall;
pub mod fuse;
pub mod jupyter_env;
pub mod labextension;
pub mod process;
pub mod routed;
pub mod runconf;
pub mod sandbox;
pub mod slurm;
pub mod workdisk;

/// The seed's image contract, which process notebooks follow too: `ma-user`, uid 1000,
/// gid 100, home `/home/ma-user`.
pub const NOTEBOOK_UID: u32 = 1000;
pub const NOTEBOOK_GID: u32 = 100;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::Flavor;
use crate::store::events::EventKind;

/// What a backend needs to know to run one notebook.
#[derive(Debug, Clone)]
pub struct NotebookSpec {
    pub id: String,
    pub owner: String,
    pub flavor: Flavor,
    pub image: String,
    /// The image's reference in the engine or a registry (built-in images: the settings'
    /// `ref`; registered and saved images: theirs).
    pub image_ref: String,
    /// `/nb/{id}/`: the Jupyter server's base URL, identical through the proxy.
    pub base_url: String,
    /// The work dir is an object-storage folder (mounted by the gateway before launch), not
    /// a work disk.
    pub work_on_object_storage: bool,
    /// Object-storage folders chosen at create outside the work dir (paths in the
    /// notebook), mounted through [`Backend::files`] before launch: the backend shows each at
    /// its path. Those inside the work dir come with it and are not listed.
    pub extended_storage: Vec<String>,
    /// How long it may run before its auto-stop stops it (its lease); `None`: no auto-stop.
    /// A scheduler's time limit (the slurm backend's) is set a little past it.
    pub lease: Option<Duration>,
}

pub use crate::lifecycle::handle::Handle;

/// Where a model engine listens inside its instance: the seed's custom engine contract
/// (spec/inference.md §2.7), `0.0.0.0:8080`; the gateway reaches it through the runtime's
/// relay ([`ENGINE_SOCKET`]), never through a port on the host.
pub const ENGINE_PORT: u16 = 8080;
/// Where an engine instance finds its model's files, read-only (the seed's path).
pub const MODEL_DIR: &str = "/home/mind/model";
/// The runtime's relay to [`ENGINE_PORT`], in the instance's agent dir.
pub const ENGINE_SOCKET: &str = "engine.sock";
/// What the engine's server prints, in the instance's agent dir.
pub const ENGINE_LOG: &str = "engine.log";

/// What a backend needs to run one instance of a model's engine: a server that answers HTTP
/// on [`ENGINE_PORT`] with the model's files at [`MODEL_DIR`] (spec/inference.md §2.7), as
/// uid 1000, gid 100, with no network but its own loopback.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// The instance's id (a UUID the gateway made): names its directory and container.
    pub id: String,
    /// The owner's user id and the service's id (labels, logs).
    pub owner: String,
    pub service_id: String,
    pub flavor: Flavor,
    /// The image to run (the docker backend); `None`: the backend's own environment (the
    /// default notebook image on docker, the host's programs and the JupyterLab
    /// virtualenv on the process backend).
    pub image: Option<String>,
    /// Run with `/bin/sh -c`; empty: the image's own command.
    pub command: String,
    /// The version's `model/` folder in the model store, shown at [`MODEL_DIR`]; the
    /// gateway's, read-only. `None`: an image model, whose files are in its image.
    pub model_dir: Option<std::path::PathBuf>,
    /// The service's variables for this version.
    pub env: std::collections::BTreeMap<String, String>,
}

/// What a training job's worker prints (stdout and stderr), in the worker's agent dir.
pub const WORKER_LOG: &str = "worker.log";

/// What a backend needs to run one worker of a training job (spec/training.md §2.6,
/// §2.7): `command` under `/bin/sh -c` as uid 1000, gid 100, with `mount` (the gateway's
/// dir for this worker, already ma-user's) at `/home/ma-user/modelarts` read-write and each
/// of `read_only` at its path.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The worker's id (`<job id>-<rank>`): names its directory, cgroup and container.
    pub id: String,
    pub owner: String,
    pub job_id: String,
    pub rank: u32,
    pub flavor: Flavor,
    /// The image (docker backend); `None`: the backend's own environment (the training
    /// virtualenv on the process backend).
    pub image: Option<String>,
    pub command: String,
    pub env: std::collections::BTreeMap<String, String>,
    /// Shown read-write at [`TRAINING_MOUNT`].
    pub mount: std::path::PathBuf,
    /// Host directories (the gateway's) shown read-only at the paths given.
    pub read_only: Vec<(std::path::PathBuf, String)>,
    /// Shown at `/etc/hosts`: the job's worker names.
    pub hosts: Option<std::path::PathBuf>,
    /// Worker 0's handle: a later worker shares its network (one loopback for the job),
    /// so the workers reach each other at 127.0.0.1.
    pub network_of: Option<Handle>,
    pub hostname: String,
}

/// `MA_MOUNT_PATH`: where a training worker sees its [`WorkerSpec::mount`].
pub const TRAINING_MOUNT: &str = "/home/ma-user/modelarts";

/// How a training worker ended, as the backend saw it (never from anything the worker
/// could write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// Its command exited with this code (128 + N: killed by signal N).
    Code(i32),
    /// Stopped by the backend (a stop asked for).
    Stopped,
    /// Gone with no status (its runtime killed, the host restarted).
    Lost,
}

/// Where a notebook's server listens, as seen from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address (a container's published loopback port, an external server).
    Tcp(SocketAddr),
    /// The unix socket `name` in `dir`, a directory the notebook can write: reached only
    /// through `confined` (no link followed).
    Unix {
        dir: std::path::PathBuf,
        name: String,
    },
    /// A target of a runtime on another machine, reached over the connection that runtime
    /// opened to the gateway (`atelier_tunnel`): the gateway dials nothing on that machine.
    Tunnel(atelier_tunnel::hub::TunnelEndpoint),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix { dir, name } => write!(f, "unix:{}", dir.join(name).display()),
            Endpoint::Tunnel(t) => write!(f, "{t}"),
        }
    }
}

/// Where the proxy sends a notebook's traffic, and the secret the notebook expects.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    pub endpoint: Endpoint,
    /// Added upstream as `Authorization: token …`; never sent to clients.
    pub token: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Where a notebook's SSH agent listens and the key it accepts from the gateway (made per
/// notebook launch; users never see it). Opened by [`agent::connect`].
pub struct SshLink {
    pub endpoint: Endpoint,
    pub key: russh::keys::PrivateKey,
    /// Where, inside the notebook, the agent serves `atelier.file` (its
    /// `ATELIER_STORAGE_SOCKET`) once a link asks it to; `None`: no file API there.
    pub file_socket: Option<String>,
}

/// A connected byte stream to something in a notebook.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Endpoint {
    /// Connects. A unix socket sits in a directory the notebook writes: it is reached
    /// through `confined`, so a link planted in its place never leads elsewhere. A tunnel
    /// target waits (boundedly) for its runtime to connect back.
    pub async fn dial(&self) -> std::io::Result<Box<dyn Stream>> {
        match self {
            Endpoint::Tcp(addr) => {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                Ok(Box::new(tcp))
            }
            Endpoint::Unix { dir, name } => Ok(Box::new(
                crate::confined::connect_unix(dir, name.as_ref()).await?,
            )),
            Endpoint::Tunnel(t) => Ok(Box::new(t.dial().await?)),
        }
    }
}

/// The backend's view of a launched notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Its server answers.
    Running,
    /// Its processes live but the server does not answer.
    Unhealthy(String),
    /// It is gone; the text says how it ended.
    Exited(String),
}

#[derive(Debug, Clone, Copy)]
pub struct StopMode {
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The notebook's image or environment could not be prepared.
    #[error("{0}")]
    Image(String),
    /// It did not start or did not become ready.
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Where an object-storage folder (or an upload) goes: a directory `root` that only the
/// gateway can replace, and the folder `rel` below it, which the notebook may have written
/// (planted links, swapped directories) and which is therefore resolved only through
/// [`crate::confined`], from `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountPlace {
    /// Every component of this path is the gateway's: the notebook's work dir, its `/data`,
    /// `<nb>/ext`.
    pub root: std::path::PathBuf,
    /// What the notebook calls `root` (messages name paths as the notebook sees them).
    pub root_inside: String,
    /// Below `root`; empty for `root` itself.
    pub rel: std::path::PathBuf,
    /// Where the notebook sees the folder.
    pub inside: String,
    /// Who owns the mounted files in the notebook; `None`: the gateway's own user.
    pub owner: Option<(u32, u32)>,
}

impl MountPlace {
    /// `root`, opened without following a link, named as the notebook sees it.
    fn open_root(&self) -> std::io::Result<crate::confined::Dir> {
        Ok(crate::confined::Dir::open(&self.root)?.shown_as(&self.root_inside))
    }
}

/// GB for the seed's texts: whole numbers as such (`35`), smaller ones with decimals.
fn gb_text(bytes: f64) -> String {
    let gb = bytes / 1e9;
    if gb >= 1.0 {
        format!("{}", gb.ceil() as u64)
    } else {
        format!("{gb:.3}")
    }
}

/// The engine's `SizeRootFs` and the limit in the seed's `%dG` words.
pub fn size_texts(size: u64, limit: u64) -> (String, String) {
    (gb_text(size as f64), gb_text(limit as f64))
}

/// Where primary storage is mounted in every notebook.
pub const WORK_DIR: &str = "/home/ma-user/work";

/// What a notebook's processes use, as seen from the host (idle detection reads it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// CPU seconds used so far by all of them, reaped children included.
    pub cpu_seconds: f64,
    /// Their process IDs in the host's PID namespace (the ones NVML reports GPU use for).
    pub pids: Vec<u32>,
}

/// Progress shown to the user as events.
#[async_trait]
pub trait Progress: Send + Sync {
    async fn event(&self, kind: EventKind, detail: Option<&str>);

    /// An event whose description carries values (see `events::record_text`).
    async fn event_text(&self, kind: EventKind, description: &str, detail: Option<&str>) {
        let _ = description;
        self.event(kind, detail).await;
    }
}

/// A save of a running notebook as an image: what to call it and the limits it must meet.
#[derive(Debug, Clone)]
pub struct SaveImage {
    /// Where the image goes: `registry/namespace/name:tag`, or a local reference.
    pub reference: String,
    /// Push `reference` to its registry after the commit.
    pub push: bool,
    pub max_bytes: u64,
    pub max_layers: u32,
    pub comment: String,
}

/// Why a save failed, with the seed's `SavedImageFailed` texts.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveImageError {
    DState(Vec<u32>),
    TooLarge { size_gb: String, limit_gb: String },
    TooManyLayers { layers: u32, limit: u32 },
    Commit(String),
    Push(String),
    Other(String),
}

impl SaveImageError {
    /// (description, detail) of the `SavedImageFailed` event.
    pub fn seed_text(&self) -> (String, String) {
        match self {
            SaveImageError::DState(pids) => (
                "Saving the image failed due to processes in D status.".into(),
                format!(
                    "There are processes in 'D' status. Check process status using 'ps -aux' and kill all the processes in 'D' status. (pids {pids:?})"
                ),
            ),
            SaveImageError::TooLarge { size_gb, limit_gb } => (
                "Saving the image failed because the image is too large.".into(),
                format!(
                    "The container size ({size_gb}G) is greater than the threshold ({limit_gb}G)."
                ),
            ),
            SaveImageError::TooManyLayers { layers, limit } => (
                "Saving the image failed due to the limit on the number of layers.".into(),
                format!(
                    "There are too many layers in your image. ({layers} layers; the limit is {limit})"
                ),
            ),
            SaveImageError::Commit(e) => (
                "Saving the image failed because the container could not be committed.".into(),
                e.clone(),
            ),
            SaveImageError::Push(e) => (
                "Saving the image failed due to SWR service issues.".into(),
                format!("The image registry refused the push: {e}"),
            ),
            SaveImageError::Other(e) => ("Saving the image failed.".into(), e.clone()),
        }
    }
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Why notebooks cannot run here at all (no working sandbox, say), said to whoever
    /// creates or starts one; `None` when they can.
    fn refusal(&self) -> Option<String> {
        None
    }

    /// What every user of a notebook should know about how it runs (unconfined, say).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Called once at gateway start, in the background: fetch what the first notebook will
    /// need (an image, a virtualenv) so it starts quickly.
    async fn warm_up(&self) {}

    /// Storage and image ready; idempotent.
    async fn prepare(
        &self,
        spec: &NotebookSpec,
        progress: &dyn Progress,
    ) -> Result<(), BackendError>;

    /// Start the notebook's server; returns as soon as there is something to re-attach to.
    async fn launch(&self, spec: &NotebookSpec) -> Result<Handle, BackendError>;

    /// Returns when the server answers, or fails (and the caller stops what was launched).
    /// `timeout` counts from when the notebook's processes start; a backend whose launches
    /// wait in a scheduler's queue first tells `progress` why they wait.
    async fn wait_ready(
        &self,
        spec: &NotebookSpec,
        handle: &Handle,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<(), BackendError>;

    async fn poll(&self, handle: &Handle) -> Observed;

    /// Stop; returns when nothing of the notebook runs any more. Idempotent.
    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError>;

    /// Remove everything of the notebook, its work dir included. Idempotent.
    async fn delete(&self, id: &str) -> Result<(), BackendError>;

    fn upstream(&self, handle: &Handle) -> Result<Upstream, BackendError>;

    /// How the SSH front door reaches the notebook's SSH agent (`notebook-runtime`).
    async fn ssh_link(&self, _handle: &Handle) -> Result<SshLink, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend has no SSH sessions into notebooks",
            self.name()
        )))
    }

    /// The notebook's lease was renewed: it may now run `left` more. A scheduler's time
    /// limit (the slurm backend's) follows; others have none.
    async fn extend(&self, _handle: &Handle, _left: Duration) -> Result<(), BackendError> {
        Ok(())
    }

    /// The notebook's processes and the CPU they have used so far, for idle detection;
    /// `None` where the backend cannot tell.
    async fn usage(&self, _handle: &Handle) -> Option<Usage> {
        None
    }

    /// The notebook's files: where object storage is mounted into it and uploads land
    /// (`files::NotebookFiles`, in the notebook's own paths).
    fn files(&self, _id: &str) -> Result<Box<dyn files::NotebookFiles>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend cannot mount object storage into notebooks",
            self.name()
        )))
    }

    /// The notebook's work disk as the API shows it; `None` where the backend has none
    /// (the process backend keeps files in a plain directory).
    fn work_disk(&self, _id: &str) -> Option<workdisk::DiskInfo> {
        None
    }

    /// Grows a running notebook's work disk to `size_gb`.
    async fn expand_work_disk(
        &self,
        _handle: &Handle,
        _size_gb: u32,
    ) -> Result<workdisk::DiskInfo, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend keeps notebook files in a plain directory, which has no size to expand",
            self.name()
        )))
    }

    /// Makes sure the engine has image `reference` (pulling it if needed): registration
    /// checks that an image exists before notebooks may name it.
    async fn ensure_image(&self, _reference: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend runs notebooks from its JupyterLab virtualenv; registering images needs the docker backend",
            self.name()
        )))
    }

    /// Starts one instance of a model's engine ([`EngineSpec`]); returns as soon as there
    /// is something to re-attach to. Its handle works with [`Backend::poll`] (whether its
    /// processes run; whether it serves is for the gateway's probes), [`Backend::stop`],
    /// [`Backend::ssh_link`] (command probes) and [`Backend::engine_endpoint`].
    async fn launch_engine(&self, _spec: &EngineSpec) -> Result<Handle, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend runs no model engines: serve ONNX models on the built-in engine, or use the process or docker backend",
            self.name()
        )))
    }

    /// Where an engine instance's server is reached (the runtime's relay).
    fn engine_endpoint(&self, _handle: &Handle) -> Result<Endpoint, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend runs no model engines",
            self.name()
        )))
    }

    /// The directory holding an engine instance's log ([`ENGINE_LOG`]); the instance
    /// writes there, so it is read only through `confined`.
    fn engine_log_dir(&self, _handle: &Handle) -> Option<std::path::PathBuf> {
        None
    }

    /// Removes what is left of a stopped engine instance (its directory). Idempotent.
    async fn remove_engine(&self, _id: &str) -> Result<(), BackendError> {
        Ok(())
    }

    /// Starts one worker of a training job ([`WorkerSpec`]); returns as soon as there is
    /// something to re-attach to. Its handle works with [`Backend::stop`],
    /// [`Backend::usage`], [`Backend::worker_exit`] and [`Backend::engine_log_dir`] (where
    /// [`WORKER_LOG`] is).
    async fn launch_worker(&self, _spec: &WorkerSpec) -> Result<Handle, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend runs no training jobs: use the process or docker backend",
            self.name()
        )))
    }

    /// `None` while the worker runs; how it ended once it has.
    async fn worker_exit(&self, _handle: &Handle) -> Option<WorkerExit> {
        Some(WorkerExit::Lost)
    }

    /// Removes what is left of a worker (its directory, its container). Idempotent.
    async fn remove_worker(&self, _id: &str) -> Result<(), BackendError> {
        Ok(())
    }

    /// Accelerators (GPU UUIDs, NPU device paths) given to notebooks now, by notebook id.
    /// Whether model engine instances get their flavor's GPUs or NPUs here.
    fn engine_accelerators(&self) -> bool {
        false
    }

    fn accelerators_in_use(&self) -> std::collections::HashMap<String, Vec<String>> {
        Default::default()
    }

    /// Whether [`Backend::save_image`] works here.
    fn saves_images(&self) -> bool {
        false
    }

    /// Saves the running notebook as an image: checks size, layers and processes in D
    /// state, commits (without mounted paths), pushes; events through `progress`. Returns
    /// the image's size in bytes.
    async fn save_image(
        &self,
        _handle: &Handle,
        _save: &SaveImage,
        _progress: &dyn Progress,
    ) -> Result<u64, SaveImageError> {
        Err(SaveImageError::Other(format!(
            "the {} backend cannot save a notebook as an image; use the docker backend",
            self.name()
        )))
    }
}

#[cfg(test)]
mod size_tests {
    use super::size_texts;

    #[test]
    fn sizes_in_the_seeds_words() {
        assert_eq!(
            size_texts(36_000_000_000, 35_000_000_000),
            ("36".into(), "35".into())
        );
        assert_eq!(
            size_texts(338_699_408, 1_000_000),
            ("0.339".into(), "0.001".into())
        );
    }
}
