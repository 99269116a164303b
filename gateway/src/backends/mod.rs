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
//!   ssh_link(handle) -> SshLink    where the SSH front door reaches the notebook's agent
//! ```
//!
//! The handle is opaque JSON persisted in the store, so a restarted gateway re-attaches to
//! notebooks that kept running. Operations a backend cannot do (exec, commit, stats on the
//! process backend) answer [`BackendError::Unsupported`] with a clear message.

pub mod docker;
pub mod external;
pub mod jupyter_env;
pub mod labextension;
pub mod process;
pub mod runconf;
pub mod workdisk;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Flavor;
use crate::events::EventKind;

/// What a backend needs to know to run one notebook.
#[derive(Debug, Clone)]
pub struct NotebookSpec {
    pub id: String,
    pub owner: String,
    pub flavor: Flavor,
    pub image: String,
    /// `/nb/{id}/`: the Jupyter server's base URL, identical through the proxy.
    pub base_url: String,
}

/// The persisted, backend-specific record of a launched notebook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle(pub serde_json::Value);

/// Where the proxy sends a notebook's traffic, and the secret the notebook expects.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Added upstream as `Authorization: token …`; never sent to clients.
    pub token: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Where a notebook's SSH agent listens and the key it accepts from the gateway (made per
/// notebook launch; users never see it).
pub struct SshLink {
    pub socket: std::path::PathBuf,
    pub key: russh::keys::PrivateKey,
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
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &'static str;

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
    async fn wait_ready(
        &self,
        spec: &NotebookSpec,
        handle: &Handle,
        timeout: Duration,
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

    /// The notebook's processes and the CPU they have used so far, for idle detection;
    /// `None` where the backend cannot tell.
    async fn usage(&self, _handle: &Handle) -> Option<Usage> {
        None
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

    /// Run a command inside the notebook.
    async fn exec(
        &self,
        _handle: &Handle,
        _argv: &[String],
    ) -> Result<std::process::Output, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend cannot exec into a notebook",
            self.name()
        )))
    }

    /// Save the notebook as an image.
    async fn commit(&self, _handle: &Handle, _image: &str) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend cannot save a notebook as an image; use the docker or kubernetes backend",
            self.name()
        )))
    }
}
