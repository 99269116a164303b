//! The gateway's end: [`TunnelHub`] listens for runtimes, checks each one's launch and
//! secret, keeps the newest session per launch and opens streams over it
//! ([`TunnelHub::dial`], or a [`TunnelEndpoint`] a backend hands out).
//!
//! ```text
//! accept ─► (≤ max_handshakes at once, each ≤ handshake_timeout)
//!             TLS 1.3 ─► ALPN ─► hello ─► secret hash compared (constant time)
//!           ─► HTTP/2 client handshake ─► session installed (an older one of the
//!              launch ended) ─► driven with pings until it ends, is replaced,
//!              its launch unregistered, or the hub shut down
//! dial(launch, target) ─► wait (≤ session_wait) for a session ─► POST /<target>
//!                       ─► 200: a TunnelStream; else a refusal
//! ```
//!
//! Invariants: the hub keeps only hashes of secrets; a connection holds no launch until its
//! hello is proven; the runtime can open no stream towards the gateway (push is off, and
//! the gateway is the HTTP/2 client); every task is on the hub's tracker.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::{self, IdentityError};
use crate::keepalive;
use crate::stream::{TunnelStream, io_error};
use crate::wire::{
    self, ACCEPTED, ConnectBack, Fingerprint, HelloError, LaunchId, MALFORMED, REFUSED, Secret,
    SecretHash, Target,
};

/// How the hub runs. [`HubSettings::new`] has the production values.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Where it listens (`0.0.0.0:7443` to take runtimes from other machines).
    pub listen: SocketAddr,
    /// The `host:port` runtimes dial (what goes into their spec); `None`: the listen
    /// address, which must then not be unspecified.
    pub public_address: Option<String>,
    /// Where the certificate is kept (`<data dir>/tunnel`).
    pub state_dir: PathBuf,
    /// TLS and the hello, per connection.
    pub handshake_timeout: Duration,
    /// How long a dial waits for a launch's runtime to connect (a job still starting).
    pub session_wait: Duration,
    pub keepalive: Duration,
    /// Connections in TLS or hello at once; more are closed at accept (a flood of
    /// connections that never finish costs at most this many sockets for
    /// `handshake_timeout`).
    pub max_handshakes: usize,
}

impl HubSettings {
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> HubSettings {
        HubSettings {
            listen,
            public_address: None,
            state_dir,
            handshake_timeout: wire::HANDSHAKE_TIMEOUT,
            session_wait: Duration::from_secs(30),
            keepalive: wire::KEEPALIVE,
            max_handshakes: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the tunnel listener on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(
        "the tunnel listens on {0}, which runtimes on other machines cannot dial: set the tunnel's public address (ATELIER_TUNNEL_PUBLIC_ADDR)"
    )]
    NoPublicAddress(SocketAddr),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the tunnel's TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("launch {0} is already registered")]
    AlreadyRegistered(LaunchId),
}

/// What [`TunnelHub::register`] gives: the spec section for the runtime, and the hash to
/// keep with the launch's handle (for [`TunnelHub::restore`] after a gateway restart).
#[derive(Debug, Clone)]
pub struct Registration {
    pub connect_back: ConnectBack,
    pub hash: SecretHash,
}

#[derive(Clone)]
struct Session {
    id: u64,
    sender: h2::client::SendRequest<Bytes>,
    end: CancellationToken,
}

struct Launch {
    hash: SecretHash,
    session: watch::Sender<Option<Session>>,
}

impl Launch {
    fn new(hash: SecretHash) -> Launch {
        Launch {
            hash,
            session: watch::Sender::new(None),
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some(s) = self.session.borrow().as_ref() {
            s.end.cancel();
        }
    }
}

struct Inner {
    launches: Mutex<HashMap<LaunchId, Launch>>,
    address: String,
    local: SocketAddr,
    fingerprint: Fingerprint,
    settings: HubSettings,
    tls: tokio_rustls::TlsAcceptor,
    handshakes: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
    next_session: AtomicU64,
}

/// The gateway's tunnel listener and its sessions. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct TunnelHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TunnelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelHub")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

fn launch_id(launch: &str) -> io::Result<LaunchId> {
    launch
        .parse()
        .map_err(|e: wire::WireError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

impl TunnelHub {
    /// Loads (or makes) the certificate, binds the listener and starts accepting.
    pub async fn start(settings: HubSettings) -> Result<TunnelHub, HubError> {
        let address = match &settings.public_address {
            Some(a) => a.clone(),
            None if settings.listen.ip().is_unspecified() => {
                return Err(HubError::NoPublicAddress(settings.listen));
            }
            None => String::new(),
        };
        let id = identity::load_or_create(&settings.state_dir)?;
        let tls = crate::tls::server_config(id.cert, id.key)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| HubError::Listen {
                    addr: settings.listen,
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| HubError::Listen {
            addr: settings.listen,
            source,
        })?;
        let address = if address.is_empty() {
            local.to_string()
        } else {
            address
        };
        // A public address must be one a runtime can dial.
        ConnectBack {
            address: address.clone(),
            fingerprint: id.fingerprint.to_string(),
            launch: "check".into(),
            secret: "00".repeat(wire::SECRET_LEN),
        }
        .validate()?;
        let inner = Arc::new(Inner {
            launches: Mutex::new(HashMap::new()),
            address,
            local,
            fingerprint: id.fingerprint,
            handshakes: Arc::new(Semaphore::new(settings.max_handshakes)),
            settings,
            tls: tokio_rustls::TlsAcceptor::from(tls),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            next_session: AtomicU64::new(1),
        });
        inner.tasks.spawn(accept_loop(inner.clone(), listener));
        tracing::info!(%local, address = %inner.address, fingerprint = %inner.fingerprint, "connect-back tunnel listening");
        Ok(TunnelHub { inner })
    }

    /// The address runtimes dial.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Where the listener is bound (its port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.inner.fingerprint
    }

    /// Makes a launch known with a fresh secret; the result goes into the runtime's spec
    /// (`connect_back`) and the hash into the launch's persisted handle.
    pub fn register(&self, launch: &str) -> Result<Registration, HubError> {
        let id: LaunchId = launch.parse()?;
        let secret = Secret::random()?;
        let hash = secret.hash();
        {
            let mut launches = self.lock();
            if launches.contains_key(&id) {
                return Err(HubError::AlreadyRegistered(id));
            }
            launches.insert(id.clone(), Launch::new(hash));
        }
        Ok(Registration {
            connect_back: ConnectBack {
                address: self.inner.address.clone(),
                fingerprint: self.inner.fingerprint.to_string(),
                launch: id.to_string(),
                secret: secret.to_hex().to_string(),
            },
            hash,
        })
    }

    /// Makes a launch known again from its persisted hash (a gateway restarted while its
    /// runtime kept running: the runtime reconnects with the secret it has). Idempotent;
    /// a different hash replaces the one kept and ends the launch's session.
    pub fn restore(&self, launch: &str, hash: SecretHash) -> Result<(), HubError> {
        let id: LaunchId = launch.parse()?;
        let mut launches = self.lock();
        if launches.get(&id).is_some_and(|l| l.hash == hash) {
            return Ok(());
        }
        launches.insert(id, Launch::new(hash));
        Ok(())
    }

    /// Forgets a launch: its session ends, dials to it fail. Idempotent.
    pub fn unregister(&self, launch: &str) {
        if let Ok(id) = launch.parse::<LaunchId>() {
            let gone = self.lock().remove(&id);
            drop(gone);
        }
    }

    /// Whether the launch's runtime is connected now.
    pub fn connected(&self, launch: &str) -> bool {
        let Ok(id) = launch.parse::<LaunchId>() else {
            return false;
        };
        self.lock()
            .get(&id)
            .is_some_and(|l| l.session.borrow().is_some())
    }

    /// Waits up to `timeout` for the launch's runtime to connect; whether it is.
    pub async fn wait_connected(&self, launch: &str, timeout: Duration) -> bool {
        self.session(launch, timeout).await.is_ok()
    }

    /// A connector to `target` of `launch`, for a backend's endpoints.
    pub fn endpoint(&self, launch: &str, target: Target) -> Result<TunnelEndpoint, HubError> {
        Ok(TunnelEndpoint {
            hub: self.clone(),
            launch: launch.parse()?,
            target,
        })
    }

    /// Opens a stream to `target` on `launch`'s node, waiting up to the settings'
    /// `session_wait` for its runtime to connect.
    pub async fn dial(&self, launch: &str, target: Target) -> io::Result<TunnelStream> {
        let session = self
            .session(launch, self.inner.settings.session_wait)
            .await?;
        let opened = async {
            let mut sender = session.sender.ready().await.map_err(io_error)?;
            let req = http::Request::post(format!("http://{}{}", wire::SERVER_NAME, target.path()))
                .body(())
                .map_err(io::Error::other)?;
            let (response, send) = sender.send_request(req, false).map_err(io_error)?;
            let response = response.await.map_err(io_error)?;
            if response.status() != http::StatusCode::OK {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "launch {launch}: its runtime refused the {target} stream ({})",
                        response.status()
                    ),
                ));
            }
            Ok(TunnelStream::new(send, response.into_body()))
        };
        // The runtime connects locally within LOCAL_CONNECT_TIMEOUT; a session that
        // stopped answering gets as long again.
        tokio::time::timeout(wire::LOCAL_CONNECT_TIMEOUT * 2, opened)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("launch {launch}: its runtime did not answer a {target} stream"),
                )
            })?
    }

    async fn session(&self, launch: &str, wait: Duration) -> io::Result<Session> {
        let id = launch_id(launch)?;
        let rx = self.lock().get(&id).map(|l| l.session.subscribe());
        let Some(mut rx) = rx else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("launch {launch} is not registered with the tunnel"),
            ));
        };
        match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => s.clone().ok_or_else(|| io::Error::other("no session")),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("launch {launch} was unregistered"),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "launch {launch}: its runtime has not connected back (waited {} s)",
                    wait.as_secs()
                ),
            )),
        }
    }

    /// Connections now between accept and a proven hello.
    pub fn handshakes_in_progress(&self) -> usize {
        self.inner.settings.max_handshakes - self.inner.handshakes.available_permits()
    }

    /// Tasks alive now: the accept loop, handshakes and sessions.
    pub fn tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Stops accepting, ends every session and waits for the hub's tasks.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LaunchId, Launch>> {
        self.inner
            .launches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// A stream target of one launch: what a backend's `Endpoint::Tunnel` holds. Equal when
/// launch and target are (the hub is the gateway's one).
#[derive(Clone)]
pub struct TunnelEndpoint {
    hub: TunnelHub,
    launch: LaunchId,
    target: Target,
}

impl TunnelEndpoint {
    pub async fn dial(&self) -> io::Result<TunnelStream> {
        self.hub.dial(self.launch.as_str(), self.target).await
    }

    pub fn launch(&self) -> &str {
        self.launch.as_str()
    }

    pub fn target(&self) -> Target {
        self.target
    }
}

impl PartialEq for TunnelEndpoint {
    fn eq(&self, other: &Self) -> bool {
        self.launch == other.launch
            && self.target == other.target
            && Arc::ptr_eq(&self.hub.inner, &other.hub.inner)
    }
}

impl Eq for TunnelEndpoint {}

impl std::fmt::Debug for TunnelEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TunnelEndpoint({self})")
    }
}

impl std::fmt::Display for TunnelEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tunnel:{}/{}", self.launch, self.target)
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = inner.stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = inner.handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "tunnel: too many handshakes at once; connection closed");
            continue;
        };
        let task = inner.clone();
        inner.tasks.spawn(async move {
            let limit = task.settings.handshake_timeout;
            let shaken = tokio::select! {
                r = tokio::time::timeout(limit, handshake(&task, tcp)) => r,
                _ = task.stop.cancelled() => return,
            };
            drop(permit);
            match shaken {
                Ok(Ok((launch, sender, conn))) => run_session(task, launch, sender, conn).await,
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "tunnel connection refused"),
                Err(_) => tracing::info!(%peer, "tunnel handshake not finished in time; closed"),
            }
        });
    }
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::io::BufReader<TcpStream>>;

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("the client did not negotiate {}", String::from_utf8_lossy(wire::ALPN))]
    Alpn,
    #[error("hello: {0}")]
    Hello(HelloError),
    #[error("launch {0}: unknown launch or wrong secret")]
    Refused(LaunchId),
    #[error("HTTP/2: {0}")]
    H2(h2::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

async fn refuse(tls: &mut TlsConn, code: u8) {
    let _ = tls.write_all(&[code]).await;
    let _ = tls.shutdown().await;
}

async fn handshake(
    inner: &Inner,
    tcp: TcpStream,
) -> Result<
    (
        LaunchId,
        h2::client::SendRequest<Bytes>,
        h2::client::Connection<TlsConn, Bytes>,
    ),
    HandshakeError,
> {
    let _ = tcp.set_nodelay(true);
    let tcp = tokio::io::BufReader::with_capacity(wire::READ_BUF, tcp);
    let mut tls = inner.tls.accept(tcp).await.map_err(HandshakeError::Tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(wire::ALPN) {
        refuse(&mut tls, MALFORMED).await;
        return Err(HandshakeError::Alpn);
    }
    let (launch, secret) = match wire::read_hello(&mut tls).await {
        Ok(h) => h,
        Err(HelloError::Io(e)) => return Err(e.into()),
        Err(e) => {
            refuse(&mut tls, MALFORMED).await;
            return Err(HandshakeError::Hello(e));
        }
    };
    let proven = {
        let launches = inner.launches.lock().unwrap_or_else(|p| p.into_inner());
        launches
            .get(&launch)
            .is_some_and(|l| l.hash.matches(&secret))
    };
    if !proven {
        refuse(&mut tls, REFUSED).await;
        return Err(HandshakeError::Refused(launch));
    }
    tls.write_all(&[ACCEPTED]).await?;
    tls.flush().await?;
    let (sender, conn) = h2::client::Builder::new()
        .initial_window_size(wire::STREAM_WINDOW)
        .initial_connection_window_size(wire::SESSION_WINDOW)
        .max_frame_size(wire::MAX_FRAME)
        .max_header_list_size(wire::MAX_HEADER_LIST)
        .max_send_buffer_size(wire::STREAM_WINDOW as usize)
        .enable_push(false)
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(HandshakeError::H2)?;
    Ok((launch, sender, conn))
}

async fn run_session(
    inner: Arc<Inner>,
    launch: LaunchId,
    sender: h2::client::SendRequest<Bytes>,
    mut conn: h2::client::Connection<TlsConn, Bytes>,
) {
    let id = inner.next_session.fetch_add(1, Ordering::Relaxed);
    let end = CancellationToken::new();
    let installed = {
        let launches = inner.launches.lock().unwrap_or_else(|p| p.into_inner());
        match launches.get(&launch) {
            Some(l) => {
                let old = l.session.send_replace(Some(Session {
                    id,
                    sender,
                    end: end.clone(),
                }));
                if let Some(old) = old {
                    old.end.cancel();
                }
                true
            }
            None => false,
        }
    };
    if !installed {
        return;
    }
    tracing::info!(%launch, session = id, "tunnel session up");
    let pings = conn.ping_pong();
    let why = tokio::select! {
        r = &mut conn => match r {
            Ok(()) => "closed by the runtime".to_owned(),
            Err(e) => format!("ended: {e}"),
        },
        _ = keepalive(pings, inner.settings.keepalive) => "no answer to a ping".to_owned(),
        _ = end.cancelled() => "replaced or unregistered".to_owned(),
        _ = inner.stop.cancelled() => "the gateway is stopping".to_owned(),
    };
    tracing::info!(%launch, session = id, why, "tunnel session down");
    let launches = inner.launches.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = launches.get(&launch) {
        l.session.send_if_modified(|s| {
            if s.as_ref().is_some_and(|s| s.id == id) {
                *s = None;
                true
            } else {
                false
            }
        });
    }
}
