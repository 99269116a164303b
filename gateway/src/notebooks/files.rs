//! Object storage for code inside a notebook (`atelier.file`, the counterpart of MoXing's
//! `mox.file`), the service side. While a notebook runs, the gateway keeps a link to its
//! agent (`backends::agent`, the same SSH link the SSH front door uses) and asks the agent
//! to listen on `atelier.file`'s socket inside the notebook (`ATELIER_STORAGE_SOCKET`,
//! `SshLink::file_socket`); each connection there comes back over the link as a
//! `forwarded-streamlocal` channel and is served by a small HTTP API (`api/files.rs`, handed
//! in as a [`FileServer`]). The gateway opens no path and no port on the notebook's
//! machine, so this works wherever a backend runs the notebook.
//!
//! This module owns the links and which connection a request acts with: the notebook
//! owner's, so the notebook never holds their credentials, and one notebook's link reaches
//! no other user's connections.
//! A request may name `connection=`; without it the owner's connection whose default
//! bucket is the URI's, or their only connection, is used.
//!
//! Invariant: what arrives on a notebook's link is served with that notebook's scope only;
//! the link is opened by the gateway, with the key of that notebook's launch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backends::{Backend, BackendError, Handle, Stream, agent};
use crate::error::Error;
use crate::object_storage::{connections, s3};
use crate::secrets::SecretBox;
use crate::store::{Store, storage_connections};

/// Writes one notebook runs at once (each may hold a part in memory); more wait.
const WRITES_PER_NOTEBOOK: usize = 4;
/// Connections one notebook holds open to the file API at once; more are refused (the
/// client sees its connection closed) until one ends.
const CONNECTIONS_PER_NOTEBOOK: usize = 64;
/// How long one attempt to open a notebook's file link may take.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between attempts while a running notebook's agent does not answer.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Failed attempts in a row before the log says so (about 3 s of pauses).
const QUIET_FAILURES: u32 = 5;
/// Logged when an agent refuses to serve the file API (not asked again until the notebook
/// is launched again).
const REFUSED: &str = "the notebook's agent refused to serve atelier.file (a notebook started by an older gateway has no such socket: stop and start it); not asked again until the notebook starts again";

/// The front door that answers `atelier.file` requests (`api/files.rs`).
pub trait FileServer: Send + Sync + 'static {
    /// Serves the connections of `incoming` for `scope` until `stop` is cancelled (then
    /// lets the requests in flight finish). [`Files`] runs it on its task tracker.
    fn serve(
        &self,
        incoming: Incoming,
        scope: FileScope,
        stop: CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()>;
}

/// One notebook's `atelier.file` connections, as they arrive over its link.
pub struct Incoming {
    rx: mpsc::Receiver<Connection>,
}

impl Incoming {
    /// The next connection; `None` once the notebook's link is gone for good.
    pub async fn next(&mut self) -> Option<Connection> {
        self.rx.recv().await
    }
}

/// A byte stream from a program in the notebook to the file API; it holds one of the
/// notebook's [`CONNECTIONS_PER_NOTEBOOK`] places until dropped.
pub struct Connection {
    stream: Box<dyn Stream>,
    _place: OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The link's client side: takes the agent's `forwarded-streamlocal` channels for the one
/// socket it asked for, and nothing else.
struct LinkClient {
    socket: String,
    connections: mpsc::Sender<Connection>,
    places: Arc<Semaphore>,
}

impl client::Handler for LinkClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Reached through the backend's endpoint for this notebook; whatever answers there
        // gets the notebook's own scope and nothing more.
        Ok(true)
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: russh::Channel<client::Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let place = match self.places.clone().try_acquire_owned() {
            Ok(p) if socket_path == self.socket => p,
            _ => {
                reply
                    .reject(russh::ChannelOpenFailure::ResourceShortage)
                    .await;
                return Ok(());
            }
        };
        reply.accept().await;
        let connection = Connection {
            stream: Box::new(channel.into_stream()),
            _place: place,
        };
        // A full queue: the server is not taking connections; this one is dropped.
        let _ = self.connections.try_send(connection);
        Ok(())
    }
}

/// The file API service: serves `atelier.file` in each running notebook through its
/// [`FileServer`]. It owns the notebooks' file links. Cloning shares it.
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
    /// The running links, by notebook.
    links: std::sync::Mutex<HashMap<String, Running>>,
    /// Their tasks and servers, waited for at shutdown ([`Files::shutdown`]).
    tasks: tokio_util::task::TaskTracker,
}

/// One notebook's file link while it runs.
struct Running {
    stop: CancellationToken,
    /// `true` while the agent listens on the notebook's socket for the gateway; closed when
    /// the notebook has no file API.
    serving: watch::Receiver<bool>,
}

/// What one notebook's link acts for: its owner's connections, its turn to write.
#[derive(Clone)]
pub struct FileScope {
    files: Files,
    pub notebook_id: String,
    owner_id: String,
    /// One permit per write in flight ([`WRITES_PER_NOTEBOOK`]).
    pub writes: Arc<tokio::sync::Semaphore>,
}

impl FileScope {
    /// The notebook's owner: whom what arrives on its link acts for.
    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }

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
                links: Default::default(),
                tasks: Default::default(),
            }),
        }
    }

    /// Serves `atelier.file` in the notebook: keeps a link to its agent (opened again
    /// whenever it drops, until [`Files::stop_files`]) and serves what arrives over it.
    /// Idempotent: a notebook already served keeps its link.
    pub(crate) fn serve_files(&self, notebook_id: &str, owner_id: &str, handle: &Handle) {
        let Some(server) = &self.inner.server else {
            return;
        };
        let mut running = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
        if running
            .get(notebook_id)
            .is_some_and(|r| !r.stop.is_cancelled())
        {
            return;
        }
        let stop = CancellationToken::new();
        let (serving_tx, serving) = watch::channel(false);
        let (connections, rx) = mpsc::channel(16);
        if let Some(old) = running.insert(
            notebook_id.to_owned(),
            Running {
                stop: stop.clone(),
                serving,
            },
        ) {
            old.stop.cancel();
        }
        let scope = FileScope {
            files: self.clone(),
            notebook_id: notebook_id.to_owned(),
            owner_id: owner_id.to_owned(),
            writes: Arc::new(tokio::sync::Semaphore::new(WRITES_PER_NOTEBOOK)),
        };
        // The server ends with the notebook's link, or as soon as the link knows no
        // connection will ever come (no file API here, an agent that refuses); the entry
        // stays, so the health loop does not ask again.
        let server_stop = stop.child_token();
        self.inner
            .tasks
            .spawn(server.serve(Incoming { rx }, scope, server_stop.clone()));
        self.inner.tasks.spawn(keep_link(
            self.inner.backend.clone(),
            handle.clone(),
            notebook_id.to_owned(),
            connections,
            serving_tx,
            stop,
            server_stop,
        ));
    }

    /// Waits until the agent serves `atelier.file` in the notebook (at most `timeout`), so a
    /// notebook is shown RUNNING only once its first kernel can use it. `false`: not served
    /// (no file API on this backend, the agent did not answer in time).
    pub(crate) async fn wait_serving(&self, notebook_id: &str, timeout: Duration) -> bool {
        let serving = self
            .inner
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(notebook_id)
            .map(|r| r.serving.clone());
        let Some(mut serving) = serving else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, serving.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }

    /// At gateway shutdown: every link closes (the agents stop listening) and the requests
    /// in flight get up to 10 s. The notebooks run on; the next gateway serves them again.
    pub(crate) async fn shutdown(&self) {
        for (_, r) in self
            .inner
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            r.stop.cancel();
        }
        self.inner.tasks.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("atelier.file requests still running at shutdown; they are cut");
        }
    }

    /// Stops serving the notebook (stop, delete): its link closes.
    pub(crate) fn stop_files(&self, notebook_id: &str) {
        if let Some(r) = self
            .inner
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(notebook_id)
        {
            r.stop.cancel();
        }
    }
}

/// Why an attempt to open a file link failed.
enum LinkFailed {
    /// The agent refused to serve the socket: not asked again.
    Refused,
    /// It may work next time (the agent starting, a dropped connection); the text says why.
    Retry(String),
}

/// Keeps one notebook's file link open until `stop`: dials the agent, asks it to listen on
/// the notebook's `atelier.file` socket, hands each connection that comes back to the
/// server; when the link drops (the agent restarted, a network), dials again after a pause
/// that grows to [`RETRY_MAX`]. A backend without an agent or a file socket: nothing to do.
async fn keep_link(
    backend: Arc<dyn Backend>,
    handle: Handle,
    notebook_id: String,
    connections: mpsc::Sender<Connection>,
    serving: watch::Sender<bool>,
    stop: CancellationToken,
    server_stop: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(CONNECTIONS_PER_NOTEBOOK));
    let mut pause = Duration::from_millis(100);
    // Failures in a row; a notebook's agent starts a moment after its launch, so the first
    // few are not worth a warning.
    let mut failures = 0u32;
    let mut told = false;
    loop {
        let attempt = async {
            let link = match backend.ssh_link(&handle).await {
                Ok(l) => l,
                Err(BackendError::Unsupported(_)) => return Ok(None),
                Err(e) => return Err(LinkFailed::Retry(e.to_string())),
            };
            let Some(socket) = link.file_socket.clone() else {
                return Ok(None);
            };
            let client = LinkClient {
                socket: socket.clone(),
                connections: connections.clone(),
                places: places.clone(),
            };
            let link = agent::connect(link, client)
                .await
                .map_err(LinkFailed::Retry)?;
            match link.streamlocal_forward(socket).await {
                Ok(()) => Ok(Some(link)),
                // The agent said no: that does not change until the notebook is launched
                // again (which serves it anew).
                Err(russh::Error::RequestDenied) => Err(LinkFailed::Refused),
                Err(e) => Err(LinkFailed::Retry(format!(
                    "the notebook's agent link failed ({e})"
                ))),
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(LINK_TIMEOUT, attempt) => r,
            _ = stop.cancelled() => return,
        };
        match outcome {
            // No file API here: `wait_serving` stops waiting, the server ends.
            Ok(Ok(None)) => {
                server_stop.cancel();
                return;
            }
            Ok(Ok(Some(mut link))) => {
                serving.send_replace(true);
                if told {
                    tracing::info!(notebook = %notebook_id, "atelier.file is served again");
                }
                told = false;
                failures = 0;
                pause = Duration::from_millis(100);
                tokio::select! {
                    _ = &mut link => {}
                    _ = stop.cancelled() => {
                        let _ = link
                            .disconnect(russh::Disconnect::ByApplication, "", "")
                            .await;
                        return;
                    }
                }
                serving.send_replace(false);
            }
            Ok(Err(LinkFailed::Refused)) => {
                tracing::warn!(notebook = %notebook_id, "{REFUSED}");
                server_stop.cancel();
                return;
            }
            Ok(Err(LinkFailed::Retry(why))) => {
                failures += 1;
                if !told && failures >= QUIET_FAILURES {
                    tracing::warn!(notebook = %notebook_id, error = %why, "atelier.file is unavailable in this notebook; trying again");
                    told = true;
                }
            }
            Err(_) => {
                failures += 1;
                if !told && failures >= QUIET_FAILURES {
                    tracing::warn!(notebook = %notebook_id, "atelier.file: the notebook's agent did not answer within {} s; trying again", LINK_TIMEOUT.as_secs());
                    told = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}
