//! The notebook's SSH agent: an SSH server on a unix socket, for the gateway only.
//!
//! The gateway terminates users' SSH connections (their keys, the whitelist, audit) and
//! opens one connection here per user connection, authenticated with a key made for this
//! notebook that users never see; every channel maps one to one. Programs run here, inside
//! the notebook (its sandbox, or its container where this runtime is PID 1), so `127.0.0.1`
//! in a port forward is the notebook's own loopback.
//!
//! ```text
//! gateway ──unix socket──► accept ──► publickey (spec.ssh.authorized_key only)
//!   session       ──► session::run   pty-req, env, shell | exec | subsystem sftp
//!   direct-tcpip  ──► forward::direct   TCP connect from inside the notebook
//!   tcpip-forward ──► forward::Remote   listen on loopback, open forwarded-tcpip back
//!   streamlocal-forward (spec.ssh.file_socket only)
//!                 ──► forward::Remote   listen there, open forwarded-streamlocal back
//! ```
//!
//! It runs on its own thread with a small tokio runtime; the supervisor's main thread keeps
//! reaping, and hands exit statuses of the agent's programs over through `children`.

mod conn;
mod forward;
mod pty;
mod session;
pub mod sftp;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use russh::keys::{PrivateKey, PublicKey};

use crate::spec::{Spec, SshSpec};

/// What every session needs to start programs.
pub struct Ctx {
    /// The notebook's environment (the same as Jupyter's).
    pub env: BTreeMap<String, String>,
    /// Where sessions and sftp start: the notebook's work directory.
    pub cwd: PathBuf,
    pub shell: String,
    /// The one path a gateway may ask the agent to serve `atelier.file` on.
    pub file_socket: Option<PathBuf>,
}

fn pick_shell(ssh: &SshSpec, env: &BTreeMap<String, String>) -> String {
    if let Some(shell) = &ssh.shell {
        return shell.clone();
    }
    if let Some(shell) = env.get("SHELL").filter(|s| Path::new(s).is_file()) {
        return shell.clone();
    }
    if Path::new("/bin/bash").is_file() {
        "/bin/bash".into()
    } else {
        "/bin/sh".into()
    }
}

/// The agent's own host key: made at start, kept in memory. The gateway reaches the agent
/// through a socket only it and the notebook can open, and the notebook is the user's own.
fn host_key() -> Result<PrivateKey> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    let mut filled = 0;
    while filled < seed.len() {
        // SAFETY: writing into the unfilled part of a valid buffer.
        let n =
            unsafe { libc::getrandom(seed[filled..].as_mut_ptr().cast(), seed.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("getrandom");
        }
        filled += n as usize;
    }
    let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    Ok(PrivateKey::new(
        russh::keys::ssh_key::private::KeypairData::from(pair),
        "atelier-notebook-agent",
    )?)
}

/// The link is a local socket: no cipher or MAC is needed (the `none` algorithms), only the
/// gateway's key, which the key exchange still proves.
pub fn preferred() -> russh::Preferred {
    russh::Preferred {
        kex: std::borrow::Cow::Borrowed(&[
            russh::kex::CURVE25519,
            russh::kex::EXTENSION_SUPPORT_AS_SERVER,
            russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        cipher: std::borrow::Cow::Borrowed(&[russh::cipher::NONE]),
        mac: std::borrow::Cow::Borrowed(&[russh::mac::NONE]),
        ..Default::default()
    }
}

fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    bind_with_mode(path, 0o600)
}

/// Binds a unix socket at `path` with `mode`, replacing what is there: a stale socket, or a
/// link planted in its place (removed itself; what it points to is never touched).
pub(crate) fn bind_with_mode(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener = bind_long(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("securing {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `bind(2)` takes at most 107 bytes of path; a longer one (a deep data dir) is reached
/// through its directory's descriptor, `/proc/self/fd/N/name`. The gateway connects the
/// same way.
fn bind_long(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::AsRawFd;
    if path.as_os_str().len() < 100 {
        return std::os::unix::net::UnixListener::bind(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return std::os::unix::net::UnixListener::bind(path);
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    std::os::unix::net::UnixListener::bind(short)
}

/// What the connect-back serves: Jupyter where the spec says, the agent on its socket, the
/// engine on its loopback port.
fn connect_back(
    spec: &Spec,
    c: &crate::spec::ConnectBackSpec,
) -> Result<(atelier_tunnel::wire::Dial, atelier_tunnel::node::Locals)> {
    use atelier_tunnel::node::Local;
    let dial = c.gateway.validate()?;
    let locals = atelier_tunnel::node::Locals {
        jupyter: c.jupyter.as_ref().map(|j| match j {
            crate::spec::LocalSpec::Unix(path) => Local::Unix(path.clone()),
            crate::spec::LocalSpec::Port(port) => Local::Tcp(([127, 0, 0, 1], *port).into()),
        }),
        agent: c
            .agent
            .clone()
            .or_else(|| spec.ssh.as_ref().map(|s| s.socket.clone()))
            .map(Local::Unix),
        engine: match &c.engine {
            Some(path) => Some(Local::Unix(path.clone())),
            None => spec
                .forward
                .as_ref()
                .map(|f| Local::Tcp(([127, 0, 0, 1], f.port).into())),
        },
    };
    Ok((dial, locals))
}

/// Binds the agent's socket (and the engine relay's, [`Spec::forward`]) and serves them on
/// a thread of its own, with the connect-back to the gateway ([`Spec::connect_back`]). Call it after the supervisor blocked its signals (the agent's
/// threads inherit the mask, so SIGCHLD keeps going to the reaper).
pub fn start(spec: &Spec) -> Result<()> {
    let ssh = match &spec.ssh {
        None => None,
        Some(ssh) => {
            let key = PublicKey::from_openssh(ssh.authorized_key.trim())
                .context("ssh.authorized_key is not an OpenSSH public key")?;
            let listener = bind(&ssh.socket)?;
            let ctx = Arc::new(Ctx {
                env: spec.env.clone(),
                cwd: spec.cwd.clone(),
                shell: pick_shell(ssh, &spec.env),
                file_socket: ssh.file_socket.clone(),
            });
            let config = Arc::new(russh::server::Config {
                server_id: russh::SshId::Standard("SSH-2.0-AtelierNotebookAgent".into()),
                methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
                auth_rejection_time: Duration::from_millis(100),
                auth_rejection_time_initial: Some(Duration::ZERO),
                keys: vec![host_key()?],
                preferred: preferred(),
                inactivity_timeout: None,
                keepalive_interval: None,
                channel_buffer_size: 256,
                ..Default::default()
            });
            Some((listener, ssh.socket.clone(), config, ctx, key))
        }
    };
    let relay = match &spec.forward {
        None => None,
        Some(f) => Some((bind(&f.socket)?, f.clone())),
    };
    let tunnel = match &spec.connect_back {
        None => None,
        Some(c) => Some(connect_back(spec, c)?),
    };
    if ssh.is_none() && relay.is_none() && tunnel.is_none() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("ssh-agent".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ssh-agent")
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    log!("SSH agent cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                if let Some((dial, locals)) = tunnel {
                    log!("connecting back to the gateway at {}", dial.address);
                    let log: atelier_tunnel::node::Log = Arc::new(|m| log!("{m}"));
                    // Runs as long as the runtime: it reconnects whenever its session ends.
                    let stop = tokio_util::sync::CancellationToken::new();
                    tokio::spawn(atelier_tunnel::node::run(dial, locals, log, stop));
                }
                if let Some((listener, f)) = relay {
                    match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => {
                            log!("relaying {} to 127.0.0.1:{}", f.socket.display(), f.port);
                            tokio::spawn(forward::relay_port(l, f.port));
                        }
                        Err(e) => log!("the engine relay cannot use its socket: {e}"),
                    }
                }
                let Some((listener, socket, config, ctx, key)) = ssh else {
                    std::future::pending::<()>().await;
                    return;
                };
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log!("SSH agent cannot use its socket: {e}");
                        return;
                    }
                };
                log!("SSH agent listening on {}", socket.display());
                conn::serve(listener, config, ctx, key).await;
            });
        })
        .context("starting the SSH agent thread")?;
    Ok(())
}
