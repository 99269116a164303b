//! What every backend that runs `atelier-notebook-runtime` writes for it: the Jupyter
//! config dir (server settings with the token, page config, the auto-stop extension), the
//! per-launch SSH link key, and how the runtime's status file and log read back.
//!
//! ```text
//! <data>/notebooks/{id}/run/config       JUPYTER_CONFIG_DIR and JUPYTER_PATH (read-only to Jupyter)
//! <data>/notebooks/{id}/run/ssh_link_key the gateway's key to the notebook's SSH agent
//! <data>/notebooks/{id}/run/agent        the runtime's side: spec, status, jupyter.log, ssh.sock
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::{BackendError, Endpoint, SshLink};

/// Largest WebSocket message Jupyter accepts (tornado's default is 10 MiB); the gateway's
/// own relay has no cap, so this is the end-to-end limit. Jupyter's separate rate limit on
/// printed output (`iopub_data_rate_limit`, which protects browsers from floods) is kept.
const WS_MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// In the run dir: the private key the gateway uses to reach the notebook's SSH agent.
pub const LINK_KEY_FILE: &str = "ssh_link_key";
/// In the agent dir: the agent's socket.
pub const AGENT_SOCKET: &str = "ssh.sock";

/// Where a Jupyter server listens, as Jupyter itself sees it.
pub enum Listen<'a> {
    Tcp {
        ip: &'a str,
        port: u16,
    },
    /// A unix socket (mode 0600: only the notebook's user and the gateway, root, connect).
    Unix(&'a str),
}

/// Where a Jupyter server listens and serves from, as Jupyter itself sees it.
pub struct ServerConf<'a> {
    pub listen: Listen<'a>,
    pub base_url: &'a str,
    pub root_dir: &'a Path,
    pub token: &'a str,
    /// Jupyter refuses to run as root unless told.
    pub allow_root: bool,
}

/// Writes `config_dir`: `jupyter_server_config.json` (with the token: mode 0600),
/// `labconfig/page_config.json` and the auto-stop extension under `labextensions/`.
pub fn write_config_dir(config_dir: &Path, c: &ServerConf) -> Result<(), BackendError> {
    std::fs::create_dir_all(config_dir)
        .with_context(|| format!("creating {}", config_dir.display()))?;
    let mut config = json!({
        "ServerApp": {
            "base_url": c.base_url,
            "root_dir": c.root_dir,
            "open_browser": false,
            // Requests arrive through the gateway with the browser's Host header, which
            // Jupyter must accept. Origin checks stay on.
            "allow_remote_access": true,
            "allow_root": c.allow_root,
            "tornado_settings": {"websocket_max_message_size": WS_MAX_MESSAGE},
        },
        "IdentityProvider": {"token": c.token},
        "LabApp": {"check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
    });
    let server = &mut config["ServerApp"];
    match c.listen {
        Listen::Tcp { ip, port } => {
            server["ip"] = json!(ip);
            server["port"] = json!(port);
            server["port_retries"] = json!(0);
        }
        // Jupyter refuses `port` together with `sock`.
        Listen::Unix(path) => {
            server["sock"] = json!(path);
            server["sock_mode"] = json!("0600");
        }
    }
    write_private(
        &config_dir.join("jupyter_server_config.json"),
        &serde_json::to_vec_pretty(&config).context("config")?,
    )?;
    // jupyter_core "migrates" an existing ~/.ipython into the config dir unless this marker
    // is there; the dir is read-only to Jupyter, so without it Jupyter would fail to start
    // (an image saved from a notebook that ran a kernel has ~/.ipython).
    std::fs::write(config_dir.join("migrated"), b"").context("writing the migration marker")?;
    // No "official Jupyter news?" prompt: a self-hosted notebook may have no way out.
    let labconfig = config_dir.join("labconfig");
    std::fs::create_dir_all(&labconfig).context("creating labconfig")?;
    let page_config =
        json!({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}});
    write_private(
        &labconfig.join("page_config.json"),
        &serde_json::to_vec_pretty(&page_config).context("page config")?,
    )?;
    // `atelier.file` for the notebook's kernels (PYTHONPATH=<config dir>/python).
    let package = config_dir.join(PYTHON_DIR).join("atelier");
    std::fs::create_dir_all(&package).context("creating the atelier package")?;
    for (name, text) in PYTHON_PACKAGE {
        std::fs::write(package.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    // The auto-stop countdown in JupyterLab's top bar: installed where this notebook's
    // Jupyter looks for extensions (JUPYTER_PATH).
    install_labextension(&config_dir.join("labextensions"))
}

/// Where the `atelier` Python package is in the config dir (put on the kernels' PYTHONPATH).
pub const PYTHON_DIR: &str = "python";

/// The `atelier` package notebooks import (`atelier.file`: object storage over the
/// gateway's socket, `notebooks::files`; `atelier.workflow`: workflows over the same socket).
const PYTHON_PACKAGE: [(&str, &str); 4] = [
    ("__init__.py", include_str!("python/atelier/__init__.py")),
    ("__main__.py", include_str!("python/atelier/__main__.py")),
    ("file.py", include_str!("python/atelier/file.py")),
    ("workflow.py", include_str!("python/atelier/workflow.py")),
];

/// The socket `atelier.file` talks to, in the agent dir: the agent listens there while the
/// gateway's file link asks it to (`notebooks::files`).
pub const STORAGE_SOCKET: &str = "storage.sock";

/// Writes the embedded auto-stop extension under `dir/<its name>/`.
fn install_labextension(dir: &Path) -> Result<(), BackendError> {
    let root = dir.join(super::labextension::NAME);
    for (rel, bytes) in super::labextension::FILES {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Creates `path` with mode 0600 (or truncates it) and writes `bytes`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Makes this launch's SSH link key, stores its private half in `run_dir`, and returns the
/// public half for the runtime's spec (`ssh.authorized_key`).
pub fn new_link_key(run_dir: &Path, notebook_id: &str) -> Result<String, BackendError> {
    let key = crate::ssh_keys::generate_ed25519(&format!("atelier-gateway-{notebook_id}"))
        .context("making the notebook's SSH link key")?;
    write_private(&run_dir.join(LINK_KEY_FILE), key.private_openssh.as_bytes())?;
    Ok(crate::ssh_keys::to_openssh(&key.public).context("the SSH link key")?)
}

/// The link to a notebook's SSH agent: the key in `run_dir` and the agent's socket in
/// `run_dir/agent`; `agent_inside` is what the notebook calls that dir (where `atelier.file`'s
/// socket is).
pub async fn ssh_link(run_dir: &Path, agent_inside: &str) -> Result<SshLink, BackendError> {
    let key = match tokio::fs::read_to_string(run_dir.join(LINK_KEY_FILE)).await {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackendError::Unsupported(
                "this notebook was started by an older gateway without SSH sessions; stop and start it once".into(),
            ));
        }
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context("reading the SSH link key")
                .into());
        }
    };
    let key = russh::keys::PrivateKey::from_openssh(key.as_bytes())
        .map_err(|e| anyhow::anyhow!("the notebook's SSH link key is unreadable: {e}"))?;
    Ok(SshLink {
        endpoint: Endpoint::Unix {
            dir: run_dir.join("agent"),
            name: AGENT_SOCKET.into(),
        },
        key,
        file_socket: Some(format!("{agent_inside}/{STORAGE_SOCKET}")),
    })
}

/// The last lines of a log file (empty when it cannot be read). The file may be in a dir
/// the notebook writes (its agent dir): read through `confined`, so a link planted in its
/// place is not followed, and only its last 64 KiB are read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return String::new();
    };
    crate::confined::Dir::open(dir)
        .map(|d| d.read_tail(name, lines, 64 * 1024))
        .unwrap_or_default()
}

/// The largest status file read (the runtime writes a few hundred bytes).
const MAX_STATUS_BYTES: u64 = 64 * 1024;

/// The runtime's status file (written by the runtime itself, maybe inside the notebook), if
/// readable: through `confined`, never through a link.
pub fn runtime_status(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    let (dir, name) = (path.parent()?, path.file_name()?);
    let file = crate::confined::Dir::open(dir).ok()?.open_read(name).ok()?;
    let mut text = String::new();
    file.take(MAX_STATUS_BYTES).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// How a notebook whose runtime is gone ended, from its status file.
pub fn how_it_ended(status: Option<serde_json::Value>) -> String {
    let Some(s) = status else {
        return "the notebook runtime is gone".to_owned();
    };
    let state = s
        .get("state")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned();
    match (
        s.get("exit_code").and_then(|v| v.as_i64()),
        s.get("signal").and_then(|v| v.as_i64()),
    ) {
        (Some(code), _) => format!("JupyterLab {state} with exit code {code}"),
        (_, Some(sig)) => format!("JupyterLab {state} by signal {sig}"),
        _ => match s.get("error").and_then(|v| v.as_str()) {
            Some(err) => format!("the notebook runtime failed: {err}"),
            None => format!("the notebook runtime is gone (last state: {state})"),
        },
    }
}

/// How a training worker ended, from its outer runtime's status file (`None`: there is
/// none, the runtime was killed).
pub fn worker_exit(status: Option<&serde_json::Value>) -> super::WorkerExit {
    let Some(s) = status else {
        return super::WorkerExit::Lost;
    };
    match s.get("state").and_then(|v| v.as_str()) {
        Some("stopped") => super::WorkerExit::Stopped,
        Some("exited") => match (
            s.get("exit_code").and_then(|v| v.as_i64()),
            s.get("signal").and_then(|v| v.as_i64()),
        ) {
            (Some(code), _) => super::WorkerExit::Code(code as i32),
            (_, Some(sig)) => super::WorkerExit::Code(128 + sig as i32),
            _ => super::WorkerExit::Lost,
        },
        _ => super::WorkerExit::Lost,
    }
}

/// Removes a notebook's dir and everything in it (gone already is fine). Refuses while
/// anything is mounted below it: removing through a mount (a work disk, an object-storage
/// folder) would delete files that are not the notebook dir's to remove.
pub async fn remove_notebook_dir(dir: &Path) -> Result<(), BackendError> {
    let mounted = super::workdisk::mounted_under(dir);
    if !mounted.is_empty() {
        return Err(BackendError::Other(anyhow::anyhow!(
            "still mounted under the notebook's dir, not deleting through them: {}",
            mounted.join(", ")
        )));
    }
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackendError::Other(anyhow::anyhow!(
            "removing {}: {e}",
            dir.display()
        ))),
    }
}

/// Whether the Jupyter server of notebook `id` at `endpoint` answers `api/status`; the
/// error says how it does not.
pub async fn jupyter_answers(endpoint: &Endpoint, id: &str, token: &str) -> Result<(), String> {
    match jupyter_get(endpoint, &format!("/nb/{id}/api/status"), token, 64 * 1024).await {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, _)) => Err(format!("JupyterLab answered {status}")),
        Err(e) => Err(format!("JupyterLab does not answer: {e}")),
    }
}

/// How long the gateway's own questions to a notebook server (is it up, are its kernels
/// busy) may take.
const JUPYTER_GET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A GET of `path` on the Jupyter server at `endpoint` with its token, on a connection of
/// its own: the status and the body (at most `max_body` bytes). A unix socket is reached
/// through `confined` (the notebook writes the directory it is in).
pub async fn jupyter_get(
    endpoint: &Endpoint,
    path: &str,
    token: &str,
    max_body: usize,
) -> Result<(http::StatusCode, bytes::Bytes), String> {
    tokio::time::timeout(JUPYTER_GET_TIMEOUT, async {
        let req = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::AUTHORIZATION, format!("token {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let io: Box<dyn AsyncIo> = match endpoint {
            Endpoint::Tcp(addr) => Box::new(
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connecting to {addr}: {e}"))?,
            ),
            Endpoint::Unix { dir, name } => Box::new(
                crate::confined::connect_unix(dir, std::ffi::OsStr::new(name))
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Endpoint::Tunnel(t) => Box::new(
                t.dial()
                    .await
                    .map_err(|e| format!("connecting to {t}: {e}"))?,
            ),
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        // Drives this one request's connection; aborted below.
        #[allow(clippy::disallowed_methods)]
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| e.to_string());
        let out = match resp {
            Ok(resp) => {
                let status = resp.status();
                use http_body_util::BodyExt;
                http_body_util::Limited::new(resp.into_body(), max_body)
                    .collect()
                    .await
                    .map(|b| (status, b.to_bytes()))
                    .map_err(|e| format!("reading the answer: {e}"))
            }
            Err(e) => Err(e),
        };
        conn.abort();
        out
    })
    .await
    .map_err(|_| format!("no answer within {} s", JUPYTER_GET_TIMEOUT.as_secs()))?
}

trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> AsyncIo for T {}

/// `<data>/notebooks/{id}`.
pub fn notebook_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("notebooks").join(id)
}
