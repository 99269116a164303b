//! HTTP/1 connections from the gateway to the servers behind it: notebook servers (the
//! notebook proxy, `proxy/`) and model engines (`api/engine_proxy.rs`).
//!
//! Each downstream (browser or client) connection keeps its own small set of upstream
//! connections, and the task that serves the downstream connection also drives them
//! ([`Driven`]): a proxied request then goes from socket to socket within one task, with no
//! shared pool to lock and no hand-over to a separate connection task. This is most of the
//! difference between a generic client pool and nginx's per-request cost (see
//! docs/benchmarks.md). An upstream connection lives as long as the downstream one that
//! opened it, or until the notebook server closes it.
//!
//! WebSocket upgrades get a fresh connection on a task of their own.
//!
//! A notebook server is reached over TCP (container notebooks: a loopback port the engine
//! publishes) or a unix socket in a directory the notebook writes (process notebooks, which
//! have no network of the host's): that socket is found through [`crate::confined`], so a
//! link planted in its place never redirects the gateway.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::routing::Endpoint;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;

/// How long connecting to a notebook server may take before the request fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle upstream connections kept per downstream connection (HTTP/1 needs one; an HTTP/2
/// client multiplexing several requests to one notebook may use a few).
const MAX_IDLE: usize = 4;

type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The upstream connections of one downstream connection; `server::serve_http` passes it
/// to `proxy::serve` with each request of that connection.
#[derive(Clone)]
pub struct ConnUpstreams(Arc<Inner>);

struct Inner {
    idle: Mutex<Vec<Idle>>,
    /// New connections, to be driven by the downstream connection's task.
    new_conns: Mutex<Vec<ConnFuture>>,
    has_new: AtomicBool,
    /// Set when the driver is gone; connections then get tasks of their own.
    closed: AtomicBool,
    waker: AtomicWaker,
}

struct Idle {
    endpoint: Endpoint,
    sender: http1::SendRequest<Body>,
}

/// Hands the connections a downstream connection's requests open to its task; see [`Driven`].
pub struct UpstreamDriver(Arc<Inner>);

impl UpstreamDriver {
    /// Serves `conn` (the downstream connection) and drives the upstream connections its
    /// requests open, in one task; `shutdown` asks `conn` to finish gracefully.
    pub fn drive<F: GracefulConnection>(self, conn: F, shutdown: Arc<Shutdown>) -> Driven<F> {
        Driven {
            main: Box::pin(conn),
            inner: self.0,
            conns: FuturesUnordered::new(),
            shutdown,
            registered: None,
            stopping: false,
        }
    }
}

impl ConnUpstreams {
    /// The handle for one downstream connection's requests, and its driver.
    pub fn new() -> (ConnUpstreams, UpstreamDriver) {
        let inner = Arc::new(Inner {
            idle: Mutex::new(Vec::new()),
            new_conns: Mutex::new(Vec::new()),
            has_new: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        (ConnUpstreams(inner.clone()), UpstreamDriver(inner))
    }

    /// Gives a new connection to the driver, or a task of its own when the driver is gone.
    fn adopt(&self, conn: ConnFuture) {
        let inner = &self.0;
        let Ok(mut new) = inner.new_conns.lock() else {
            #[allow(clippy::disallowed_methods)]
            // ends with its connection; the driver that would own it is gone
            tokio::spawn(conn);
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            drop(new);
            #[allow(clippy::disallowed_methods)]
            // ends with its connection; the driver that would own it is gone
            tokio::spawn(conn);
            return;
        }
        new.push(conn);
        inner.has_new.store(true, Ordering::Release);
        drop(new);
        inner.waker.wake();
    }

    fn take(&self, endpoint: &Endpoint) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.0.idle.lock().ok()?;
        idle.retain(|i| !i.sender.is_closed());
        let at = idle.iter().position(|i| &i.endpoint == endpoint)?;
        Some(idle.swap_remove(at).sender)
    }

    fn put(&self, endpoint: &Endpoint, sender: http1::SendRequest<Body>) {
        if let Ok(mut idle) = self.0.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle {
                endpoint: endpoint.clone(),
                sender,
            });
        }
    }
}

/// Sends `req` (origin-form URI, `Host` set) to `endpoint`: on a connection of `home` when
/// there is one (reused when idle), else on a fresh connection with a task of its own.
pub async fn send(
    home: Option<&ConnUpstreams>,
    endpoint: &Endpoint,
    mut req: http::Request<Body>,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let Some(home) = home else {
        let mut sender = connect(endpoint, None).await?;
        return Ok(sender.send_request(req).await?);
    };
    if let Some(mut sender) = home.take(endpoint)
        && sender.ready().await.is_ok()
    {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                home.put(endpoint, sender);
                return Ok(resp);
            }
            // The server closed the idle connection before it took the request: the
            // request was not sent, so it goes on a new connection.
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(e.into_error().into()),
            },
        }
    }
    let mut sender = connect(endpoint, Some(home)).await?;
    let resp = sender.send_request(req).await?;
    home.put(endpoint, sender);
    Ok(resp)
}

/// Sends an upgrade request (WebSocket) on a fresh connection that can be taken over.
pub async fn send_upgrade(
    endpoint: &Endpoint,
    req: http::Request<Body>,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let mut sender = connect(endpoint, None).await?;
    Ok(sender.send_request(req).await?)
}

/// A connected byte stream to a notebook server.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn open(endpoint: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    match endpoint {
        Endpoint::Tcp(authority) => {
            let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
        Endpoint::Unix { dir, name } => {
            Ok(Box::new(crate::confined::connect_unix(dir, name).await?))
        }
    }
}

async fn connect(
    endpoint: &Endpoint,
    home: Option<&ConnUpstreams>,
) -> Result<http1::SendRequest<Body>, UpstreamError> {
    let io = match tokio::time::timeout(CONNECT_TIMEOUT, open(endpoint)).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return Err(UpstreamError::Connect(endpoint.to_string(), e)),
        Err(_) => return Err(UpstreamError::ConnectTimeout(endpoint.to_string())),
    };
    let (sender, conn) = http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(io))
        .await?;
    let endpoint_log = endpoint.to_string();
    let conn = async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %endpoint_log, error = %e, "upstream connection ended");
        }
    };
    let conn: ConnFuture = Box::pin(conn);
    match home {
        Some(home) => home.adopt(conn),
        None => {
            #[allow(clippy::disallowed_methods)]
            // this connection ends with the request that opened it
            tokio::spawn(conn);
        }
    }
    Ok(sender)
}

/// Graceful shutdown for the connections [`Driven`] serves: [`Shutdown::begin`] asks each to
/// finish its request in flight and close. Cheaper per poll than a watch channel: a
/// connection registers its waker once and then only reads a flag.
#[derive(Default)]
pub struct Shutdown {
    begun: AtomicBool,
    next_id: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl Shutdown {
    pub fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        if let Ok(wakers) = self.wakers.lock() {
            for w in wakers.values() {
                w.wake_by_ref();
            }
        }
    }
}

/// A downstream connection's future together with the upstream connections it opened,
/// polled as one task.
pub struct Driven<F> {
    main: Pin<Box<F>>,
    inner: Arc<Inner>,
    conns: FuturesUnordered<ConnFuture>,
    shutdown: Arc<Shutdown>,
    /// This connection's id and waker in `shutdown`.
    registered: Option<(u64, Waker)>,
    stopping: bool,
}

impl<F> Driven<F> {
    fn watch_shutdown(&mut self, cx: &Context<'_>) {
        let current = match &self.registered {
            Some((_, w)) if w.will_wake(cx.waker()) => return,
            Some((id, _)) => *id,
            None => self.shutdown.next_id.fetch_add(1, Ordering::Relaxed),
        };
        if let Ok(mut wakers) = self.shutdown.wakers.lock() {
            wakers.insert(current, cx.waker().clone());
        }
        self.registered = Some((current, cx.waker().clone()));
    }
}

impl<F: GracefulConnection> Future for Driven<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.watch_shutdown(cx);
        if !this.stopping && this.shutdown.begun.load(Ordering::Acquire) {
            this.stopping = true;
            this.main.as_mut().graceful_shutdown();
        }
        this.inner.waker.register(cx.waker());
        loop {
            // Upstream first: a response read here is then written downstream in the same
            // poll.
            while let Poll::Ready(Some(())) = this.conns.poll_next_unpin(cx) {}
            if let Poll::Ready(out) = this.main.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            // A request may just have opened a connection: drive it at once.
            if !this.inner.has_new.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            if let Ok(mut new) = this.inner.new_conns.lock() {
                this.conns.extend(new.drain(..));
            }
        }
    }
}

impl<F> Drop for Driven<F> {
    fn drop(&mut self) {
        // Connections opened from now on (a request still finishing elsewhere) get their own
        // task; those already here close with this one.
        if let Ok(new) = self.inner.new_conns.lock() {
            self.inner.closed.store(true, Ordering::Release);
            drop(new);
        }
        if let Some((id, _)) = self.registered.take()
            && let Ok(mut wakers) = self.shutdown.wakers.lock()
        {
            wakers.remove(&id);
        }
    }
}

/// Whether the request asks to switch protocols (a WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), and those the `Connection` header names;
/// `keep_upgrade` keeps `Connection` and `Upgrade` for an upgrade.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass to find what is there (usually little or nothing), then remove just that.
    let mut doomed: Vec<header::HeaderName> = Vec::new();
    // Headers that the Connection header names are hop-by-hop too.
    for v in headers.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for token in v.split(',').map(str::trim) {
            // The usual values name no header ("keep-alive" is removed below anyway).
            let usual = ["", "upgrade", "keep-alive", "close"];
            if !usual.iter().any(|u| token.eq_ignore_ascii_case(u))
                && let Ok(name) = header::HeaderName::from_bytes(token.as_bytes())
            {
                doomed.push(name);
            }
        }
    }
    for name in headers.keys() {
        let strip = HOP_BY_HOP[1..].contains(name)
            || name.as_str() == "keep-alive"
            || (!keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE));
        if strip {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http::uri::Authority;
    use http_body_util::{BodyExt, Empty};
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;

    use super::*;

    /// A notebook-server stand-in on loopback: answers every request with the number of
    /// connections it has accepted so far; `keep_alive: false` closes each connection after
    /// one response, as a server that times out idle connections does.
    async fn upstream(keep_alive: bool) -> (Endpoint, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                serve_counted(tcp, &count, keep_alive);
            }
        });
        (Endpoint::Tcp(authority), accepted)
    }

    fn serve_counted<S>(io: S, count: &AtomicUsize, keep_alive: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(
            server::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(
                    TokioIo::new(io),
                    service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(
                            n.to_string(),
                        )))
                    }),
                ),
        );
    }

    /// A notebook server on a unix socket in `dir`.
    fn unix_upstream(dir: &std::path::Path) -> (Endpoint, Arc<AtomicUsize>) {
        let listener = tokio::net::UnixListener::bind(dir.join("jupyter.sock")).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                serve_counted(io, &count, true);
            }
        });
        let endpoint = Endpoint::Unix {
            dir: Arc::from(dir),
            name: Arc::from(std::ffi::OsStr::new("jupyter.sock")),
        };
        (endpoint, accepted)
    }

    #[tokio::test]
    async fn unix_socket_upstreams_are_reused_and_never_reached_through_a_link() {
        let base = std::env::temp_dir().join(format!("atelier-up-{}", uuid::Uuid::new_v4()));
        let (mine, other) = (base.join("mine"), base.join("other"));
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let (endpoint, accepted) = unix_upstream(&mine);
        let (mut client, _task) = proxy_conn(endpoint.clone(), Arc::default()).await;
        for _ in 0..3 {
            assert_eq!(get(&mut client).await, "1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // The notebook replaces its socket with a link to another server's socket.
        let (_, other_accepted) = unix_upstream(&other);
        std::fs::remove_file(mine.join("jupyter.sock")).unwrap();
        std::os::unix::fs::symlink(other.join("jupyter.sock"), mine.join("jupyter.sock")).unwrap();
        let req = http::Request::get("/").body(Body::empty()).unwrap();
        let err = send(None, &endpoint, req).await.unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(other_accepted.load(Ordering::SeqCst), 0);
        let _ = std::fs::remove_dir_all(&base);
    }

    /// One downstream connection (an in-memory pipe) whose requests go upstream through
    /// [`send`]; returns the client's end of it and the task serving it.
    async fn proxy_conn(
        endpoint: Endpoint,
        shutdown: Arc<Shutdown>,
    ) -> (
        http1::SendRequest<Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (home, driver) = ConnUpstreams::new();
        let service = service_fn(move |req: http::Request<Incoming>| {
            let (home, endpoint) = (home.clone(), endpoint.clone());
            async move {
                let (mut parts, _) = req.into_parts();
                parts
                    .headers
                    .insert(http::header::HOST, "localhost".parse().unwrap());
                let req = http::Request::from_parts(parts, Body::empty());
                let mut resp = send(Some(&home), &endpoint, req).await?;
                // As the proxy does: the upstream's `Connection: close` is not the client's.
                resp.headers_mut().remove(http::header::CONNECTION);
                Ok::<_, UpstreamError>(resp.map(Body::new))
            }
        });
        let conn = server::Builder::new().serve_connection(TokioIo::new(server_io), service);
        let task = tokio::spawn(driver.drive(conn, shutdown));
        let (sender, conn) = http1::handshake(TokioIo::new(client_io)).await.unwrap();
        tokio::spawn(conn);
        (sender, task)
    }

    async fn get(sender: &mut http1::SendRequest<Empty<bytes::Bytes>>) -> String {
        sender.ready().await.unwrap();
        let req = http::Request::get("/x").body(Empty::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_downstream_connection_reuses_its_upstream_connection() {
        let (endpoint, accepted) = upstream(true).await;
        let (mut client, _task) = proxy_conn(endpoint, Arc::default()).await;
        for _ in 0..5 {
            assert_eq!(get(&mut client).await, "1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn requests_survive_upstream_connections_closing_between_them() {
        let (endpoint, accepted) = upstream(false).await;
        let (mut client, _task) = proxy_conn(endpoint, Arc::default()).await;
        for i in 1..=5 {
            assert_eq!(get(&mut client).await, i.to_string());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn shutdown_closes_idle_downstream_connections() {
        let (endpoint, _) = upstream(true).await;
        let shutdown = Arc::new(Shutdown::default());
        let (mut client, task) = proxy_conn(endpoint, shutdown.clone()).await;
        assert_eq!(get(&mut client).await, "1");
        shutdown.begin();
        // Bounded only so that a regression fails instead of hanging the suite.
        let ended = tokio::time::timeout(Duration::from_secs(60), task).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "the idle connection ends cleanly after shutdown: {ended:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let req = http::Request::get("/").body(Body::empty()).unwrap();
        let err = send(None, &Endpoint::Tcp(authority.clone()), req)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(..)), "{err}");
        assert!(err.to_string().contains(authority.as_str()), "{err}");
    }
}
