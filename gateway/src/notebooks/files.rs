//! Object storage for code inside a notebook (`atelier.file`, the counterpart of MoXing's
//! `mox.file`), the service side. While a notebook runs, the gateway serves a small HTTP API
//! (`api/files.rs`, handed in as a [`FileServer`]) on a unix socket in the notebook's gw dir
//! (`<nb>/run/gw`, the gateway's own, bound read-only into the notebook at
//! `/run/atelier-gw`; `ATELIER_STORAGE_SOCKET` inside). This module owns the sockets and
//! which connection a request acts with: the notebook owner's, so the notebook never holds
//! their credentials, and the socket of one notebook reaches no other user's connections.
//! A request may name `connection=`; without it the owner's connection whose default
//! bucket is the URI's, or their only connection, is used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backends::Backend;
use crate::error::Error;
use crate::object_storage::{connections, s3};
use crate::secrets::SecretBox;
use crate::store::{Store, storage_connections};

/// Writes one notebook runs at once (each may hold a part in memory); more wait.
const WRITES_PER_NOTEBOOK: usize = 4;

/// The front door that answers `atelier.file` requests (`api/files.rs`).
pub trait FileServer: Send + Sync + 'static {
    /// Serves `listener` for `scope` until `stop` is cancelled (then lets the requests in
    /// flight finish). [`Files`] runs it on its task tracker.
    fn serve(
        &self,
        listener: tokio::net::UnixListener,
        scope: FileScope,
        stop: CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()>;
}

/// The file API service: serves `atelier.file` on each running notebook's socket through
/// its [`FileServer`]. It owns the running sockets. Cloning shares it.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    backend: Arc<dyn Backend>,
    /// Opens the owner's storage connections.
    secrets: Arc<SecretBox>,
    /// `None`: no file API (the lifecycle's own tests).
    server: Option<Arc<dyn FileServer>>,
    /// The running sockets, by notebook.
    sockets: std::sync::Mutex<HashMap<String, CancellationToken>>,
    /// Their servers, waited for at shutdown ([`Files::shutdown`]).
    tasks: tokio_util::task::TaskTracker,
}

/// What one notebook's socket acts for: its owner's connections, its turn to write.
#[derive(Clone)]
pub struct FileScope {
    files: Files,
    pub notebook_id: String,
    owner_id: String,
    /// One permit per write in flight ([`WRITES_PER_NOTEBOOK`]).
    pub writes: Arc<tokio::sync::Semaphore>,
}

impl FileScope {
    /// A client for the connection that serves `bucket`.
    /// (A 400 names what is missing; the store's own errors are internal.)
    pub async fn client(
        &self,
        bucket: &str,
        connection: &Option<String>,
    ) -> Result<aws_sdk_s3::Client, Error> {
        let mut conn = self.files.inner.store.pool.acquire().await?;
        let all = storage_connections::list(&mut conn, Some(&self.owner_id)).await?;
        let row = match connection {
            Some(name) => all
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| Error::invalid(format!("no storage connection named {name:?}")))?,
            None => match all
                .iter()
                .find(|c| c.bucket.as_deref() == Some(bucket))
                .or_else(|| (all.len() == 1).then(|| &all[0]))
            {
                Some(c) => c,
                None if all.is_empty() => {
                    return Err(Error::invalid(
                        "the notebook's owner has no storage connection (atelier storage connection create)",
                    ));
                }
                None => {
                    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                    return Err(Error::invalid(format!(
                        "no connection has {bucket:?} as its bucket; name one of {} (connection=...)",
                        names.join(", ")
                    )));
                }
            },
        };
        let t = connections::target(row, &self.files.inner.secrets).map_err(Error::internal)?;
        Ok(s3::client(&t, Duration::from_secs(60), 3))
    }
}

/// Binds a unix socket; a path longer than `bind(2)` takes (a deep data dir) is reached
/// through its directory's descriptor, `/proc/self/fd/N/name` (`atelier.file` connects the
/// same way).
fn bind_long(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::fd::AsRawFd;
    let listener = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if path.as_os_str().len() >= 100 => {
            let dir = std::fs::File::open(dir)?;
            let short = std::path::Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join(name);
            std::os::unix::net::UnixListener::bind(short)?
        }
        _ => std::os::unix::net::UnixListener::bind(path)?,
    };
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

impl Files {
    pub fn new(
        store: Store,
        backend: Arc<dyn Backend>,
        secrets: Arc<SecretBox>,
        server: Option<Arc<dyn FileServer>>,
    ) -> Files {
        Files {
            inner: Arc::new(Inner {
                store,
                backend,
                secrets,
                server,
                sockets: Default::default(),
                tasks: Default::default(),
            }),
        }
    }

    /// Serves `atelier.file` on the notebook's socket (again after a gateway restart).
    /// Idempotent.
    pub(crate) fn serve_files(&self, notebook_id: &str, owner_id: &str) {
        let Some(server) = &self.inner.server else {
            return;
        };
        let Ok(socket) = self.inner.backend.storage_socket(notebook_id) else {
            return;
        };
        let mut running = self.inner.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(notebook_id).is_some_and(|t| !t.is_cancelled()) && socket.exists() {
            return;
        }
        let _ = std::fs::remove_file(&socket);
        let listener = match bind_long(&socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(notebook = %notebook_id, socket = %socket.display(), error = %e, "atelier.file is unavailable in this notebook");
                return;
            }
        };
        use std::os::unix::fs::PermissionsExt;
        // The notebook's user (ma-user, 1000) connects. The socket is in the gateway's own
        // dir (bound read-only into the notebook), so this path is the gateway's alone.
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666));
        let stop = CancellationToken::new();
        if let Some(old) = running.insert(notebook_id.to_owned(), stop.clone()) {
            old.cancel();
        }
        let scope = FileScope {
            files: self.clone(),
            notebook_id: notebook_id.to_owned(),
            owner_id: owner_id.to_owned(),
            writes: Arc::new(tokio::sync::Semaphore::new(WRITES_PER_NOTEBOOK)),
        };
        self.inner.tasks.spawn(server.serve(listener, scope, stop));
    }

    /// At gateway shutdown: every socket stops taking requests and the ones in flight get
    /// up to 10 s. The socket files stay (the notebooks run on); the next gateway serves
    /// them again.
    pub(crate) async fn shutdown(&self) {
        for (_, stop) in self
            .inner
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            stop.cancel();
        }
        self.inner.tasks.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("atelier.file requests still running at shutdown; they are cut");
        }
    }

    /// Stops serving the notebook's socket (stop, delete).
    pub(crate) fn stop_files(&self, notebook_id: &str) {
        if let Some(t) = self
            .inner
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(notebook_id)
        {
            t.cancel();
        }
        if let Ok(socket) = self.inner.backend.storage_socket(notebook_id) {
            let _ = std::fs::remove_file(socket);
        }
    }
}
