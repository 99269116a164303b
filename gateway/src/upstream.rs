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
//! Calls to model engines go on connections that all callers share ([`Shared`], one per
//! engine instance): an engine is one server that many clients call at once, often with a
//! small listen backlog (Python's `http.server`: 5). Opening one upstream connection per
//! client connection put bursts of new connections on it, whose SYNs overflowed that
//! backlog and were retransmitted 1 s later (docs/benchmarks.md, the inference benchmark's
//! caveat). The shared pool keeps connections alive across callers, opens at most
//! [`OPENING`] that have not yet answered at once, caps the connections to one instance
//! (callers beyond it wait for one), closes those idle for [`IDLE_FOR`], and never reuses
//! one whose answer was not read to its end.
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
use hyper::body::Body as _;
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
    #[error("the instance's connections are closed (it is going)")]
    Closed,
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

/// How many connections to one engine instance may be open at once without having answered
/// yet (see [`Shared`]): below Python's default listen backlog (5), so a burst of callers
/// never overflows it. A connection counts as proven at its first answer, or after
/// [`PROVE_AFTER`] (a slow first call does not hold the others back for long).
pub const OPENING: usize = 4;
/// See [`OPENING`].
const PROVE_AFTER: Duration = Duration::from_millis(50);
/// An idle shared connection is closed after this long.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// Kept-alive connections to one server (an engine instance) shared by every caller: at most
/// `cap` open at once, at most [`OPENING`] of them not yet proven, callers beyond that wait
/// (in turn) for a connection to come back, close, or prove itself. A connection goes back
/// only once its answer was read to its end (so one whose caller went away, or that failed,
/// is never reused); one idle for [`IDLE_FOR`] closes. Dropping the pool closes the idle
/// connections; busy ones close when their answers end.
pub struct Shared {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    endpoint: Endpoint,
    cap: usize,
    state: Mutex<SharedState>,
    /// The connections' tasks (each ends with its connection).
    tasks: tokio_util::task::TaskTracker,
}

#[derive(Default)]
struct SharedState {
    idle: Vec<SharedIdle>,
    /// Connections open, or being opened.
    open: usize,
    /// Of those, the ones not yet proven.
    opening: usize,
    /// Callers waiting, first come first served.
    waiters: std::collections::VecDeque<tokio::sync::oneshot::Sender<Grant>>,
    next_id: u64,
    closed: bool,
}

struct SharedIdle {
    id: u64,
    sender: http1::SendRequest<Body>,
    since: std::time::Instant,
}

/// What a waiting caller is given: a connection, or leave to open one.
enum Grant {
    Conn(SharedIdle),
    Open(OpenSlot, Proving),
}

/// One connection counted in `open`, from the decision to open it until it ends.
struct OpenSlot(Option<Arc<SharedInner>>);
/// One connection counted in `opening`, until it answers (or [`PROVE_AFTER`]).
struct Proving(Option<Arc<SharedInner>>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.update(|st| st.open -= 1);
        }
    }
}

impl Drop for Proving {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.update(|st| st.opening -= 1);
        }
    }
}

impl SharedInner {
    /// Changes the counts, then hands what is free to the callers waiting.
    fn update(self: &Arc<Self>, f: impl FnOnce(&mut SharedState)) {
        let mut dropped = Vec::new();
        if let Ok(mut st) = self.state.lock() {
            f(&mut st);
            self.dispatch(&mut st, &mut dropped);
        }
        // Idle connections given up on, dropped outside the lock.
        drop(dropped);
    }

    /// What a caller can have now: an idle connection, or leave to open one (counted).
    fn take(
        self: &Arc<Self>,
        st: &mut SharedState,
        dropped: &mut Vec<SharedIdle>,
    ) -> Option<Grant> {
        while let Some(idle) = st.idle.pop() {
            if idle.sender.is_closed() {
                dropped.push(idle);
            } else {
                return Some(Grant::Conn(idle));
            }
        }
        if st.closed || st.open >= self.cap || st.opening >= OPENING {
            return None;
        }
        st.open += 1;
        st.opening += 1;
        Some(Grant::Open(
            OpenSlot(Some(self.clone())),
            Proving(Some(self.clone())),
        ))
    }

    /// Hands what is free to the waiting callers, first come first served.
    fn dispatch(self: &Arc<Self>, st: &mut SharedState, dropped: &mut Vec<SharedIdle>) {
        while !st.waiters.is_empty() {
            let Some(grant) = self.take(st, dropped) else {
                return;
            };
            let mut grant = Some(grant);
            while let Some(g) = grant.take() {
                let Some(waiter) = st.waiters.pop_front() else {
                    // Nobody left to take it: undo.
                    match g {
                        Grant::Conn(idle) => st.idle.push(idle),
                        Grant::Open(mut slot, mut proving) => {
                            slot.0 = None;
                            proving.0 = None;
                            st.open -= 1;
                            st.opening -= 1;
                        }
                    }
                    return;
                };
                // A waiter that went away (its call timed out) gives it back.
                if let Err(g) = waiter.send(g) {
                    grant = Some(g);
                }
            }
        }
    }

    /// A connection whose answer was read to its end: to the next caller, or idle.
    fn give_back(self: &Arc<Self>, id: u64, sender: http1::SendRequest<Body>) {
        let mut dropped = Vec::new();
        if let Ok(mut st) = self.state.lock()
            && !st.closed
            && !sender.is_closed()
        {
            st.idle.push(SharedIdle {
                id,
                sender,
                since: std::time::Instant::now(),
            });
            self.dispatch(&mut st, &mut dropped);
        }
        drop(dropped);
    }

    /// Closes connection `id` if it has been idle for [`IDLE_FOR`].
    fn expire(&self, id: u64) {
        let gone = self.state.lock().ok().and_then(|mut st| {
            let at = st
                .idle
                .iter()
                .position(|i| i.id == id && i.since.elapsed() >= IDLE_FOR)?;
            Some(st.idle.swap_remove(at))
        });
        drop(gone);
    }
}

impl Shared {
    /// A pool of at most `cap` (at least 1) connections to `endpoint`.
    pub fn new(endpoint: Endpoint, cap: usize) -> Shared {
        Shared {
            inner: Arc::new(SharedInner {
                endpoint,
                cap: cap.max(1),
                state: Mutex::new(SharedState::default()),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on a shared connection, waiting for one
    /// when the cap is reached. The answer's body gives the connection back at its end.
    pub async fn send(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Body>, UpstreamError> {
        let inner = &self.inner;
        loop {
            let grant = {
                let mut dropped = Vec::new();
                let (grant, waiting) = match inner.state.lock() {
                    Ok(mut st) => match inner.take(&mut st, &mut dropped) {
                        Some(g) => (Some(g), None),
                        None => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            st.waiters.push_back(tx);
                            (None, Some(rx))
                        }
                    },
                    Err(_) => return Err(UpstreamError::Closed),
                };
                drop(dropped);
                match (grant, waiting) {
                    (Some(g), _) => g,
                    (None, Some(rx)) => rx.await.map_err(|_| UpstreamError::Closed)?,
                    (None, None) => return Err(UpstreamError::Closed),
                }
            };
            match grant {
                Grant::Conn(SharedIdle { id, mut sender, .. }) => {
                    if sender.ready().await.is_err() {
                        continue;
                    }
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(self.returning(resp, id, sender)),
                        // The server closed the idle connection before it took the request:
                        // the request was not sent, so it goes on another connection.
                        Err(mut e) => match e.take_message() {
                            Some(r) => req = r,
                            None => return Err(e.into_error().into()),
                        },
                    }
                }
                Grant::Open(slot, proving) => {
                    let (id, mut sender) = self.open_conn(slot).await?;
                    let send = sender.send_request(req);
                    tokio::pin!(send);
                    let mut proving = Some(proving);
                    let resp = loop {
                        tokio::select! {
                            r = &mut send => break r,
                            _ = tokio::time::sleep(PROVE_AFTER), if proving.is_some() => {
                                proving = None;
                            }
                        }
                    };
                    drop(proving);
                    return Ok(self.returning(resp?, id, sender));
                }
            }
        }
    }

    /// Connects, and drives the connection on a task of the pool's that holds `slot` (so
    /// the connection counts until it ends) and closes it once idle too long.
    async fn open_conn(
        &self,
        slot: OpenSlot,
    ) -> Result<(u64, http1::SendRequest<Body>), UpstreamError> {
        let endpoint = &self.inner.endpoint;
        let (sender, conn) = handshake(endpoint).await?;
        let id = self
            .inner
            .state
            .lock()
            .map(|mut st| {
                st.next_id += 1;
                st.next_id
            })
            .unwrap_or_default();
        let inner = Arc::downgrade(&self.inner);
        let endpoint_log = endpoint.to_string();
        self.inner.tasks.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    end = &mut conn => {
                        if let Err(e) = end {
                            tracing::debug!(upstream = %endpoint_log, error = %e, "engine connection ended");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(IDLE_FOR) => match inner.upgrade() {
                        Some(inner) => inner.expire(id),
                        None => return,
                    },
                }
            }
        });
        Ok((id, sender))
    }

    fn returning(
        &self,
        resp: http::Response<Incoming>,
        id: u64,
        sender: http1::SendRequest<Body>,
    ) -> http::Response<Body> {
        if resp.body().is_end_stream() {
            self.inner.give_back(id, sender);
            return resp.map(Body::new);
        }
        let back = GiveBack {
            inner: self.inner.clone(),
            id,
            sender: Some(sender),
        };
        resp.map(|body| Body::new(Returning { body, back }))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let idle = self.inner.state.lock().ok().map(|mut st| {
            st.closed = true;
            st.waiters.clear();
            std::mem::take(&mut st.idle)
        });
        drop(idle);
        self.inner.tasks.close();
    }
}

/// The connection an answer came on, given back to the pool when the body ends; dropped
/// (the connection closes) when the body is dropped early or fails.
struct GiveBack {
    inner: Arc<SharedInner>,
    id: u64,
    sender: Option<http1::SendRequest<Body>>,
}

impl GiveBack {
    fn done(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.inner.give_back(self.id, sender);
        }
    }
}

/// An answer's body that gives its connection back at its end.
struct Returning {
    body: Incoming,
    back: GiveBack,
}

impl Drop for Returning {
    fn drop(&mut self) {
        // Read to its end: the connection can take the next request.
        if self.body.is_end_stream() {
            self.back.done();
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            // The end, or the last of a body of known length (the server writing the answer
            // downstream may not poll again after it).
            Poll::Ready(None) => this.back.done(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.back.done(),
            Poll::Ready(Some(Err(_))) => this.back.sender = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The WebSocket relays to model engines: each ends with either side, or when what it
/// runs on goes (the caller's own select), or at the gateway's shutdown ([`Relays::shutdown`]).
#[derive(Clone, Default)]
pub struct Relays {
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

impl Relays {
    pub fn spawn(&self, relay: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = relay => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Relays open now.
    pub fn live(&self) -> usize {
        self.tasks.len()
    }

    /// Cuts every relay and waits until they are gone.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
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
        Endpoint::Tunnel(t) => Ok(Box::new(t.dial().await?)),
    }
}

/// An HTTP/1 connection to `endpoint`, within [`CONNECT_TIMEOUT`]: its sender, and the
/// connection to drive.
async fn handshake(
    endpoint: &Endpoint,
) -> Result<
    (
        http1::SendRequest<Body>,
        http1::Connection<TokioIo<Box<dyn Io>>, Body>,
    ),
    UpstreamError,
> {
    let io = match tokio::time::timeout(CONNECT_TIMEOUT, open(endpoint)).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return Err(UpstreamError::Connect(endpoint.to_string(), e)),
        Err(_) => return Err(UpstreamError::ConnectTimeout(endpoint.to_string())),
    };
    Ok(http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(io))
        .await?)
}

async fn connect(
    endpoint: &Endpoint,
    home: Option<&ConnUpstreams>,
) -> Result<http1::SendRequest<Body>, UpstreamError> {
    let (sender, conn) = handshake(endpoint).await?;
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
        text(sender.send_request(req).await.unwrap()).await
    }

    /// A 200 answer's body.
    async fn text<B: hyper::body::Body>(resp: http::Response<B>) -> String
    where
        B::Error: std::fmt::Debug,
    {
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

    async fn shared_get(pool: &Shared) -> String {
        let req = http::Request::get("/x")
            .header(http::header::HOST, "localhost")
            .body(Body::empty())
            .unwrap();
        text(pool.send(req).await.unwrap()).await
    }

    #[tokio::test]
    async fn shared_connections_are_capped_and_kept_for_the_next_callers() {
        let (endpoint, accepted) = upstream(true).await;
        let pool = Arc::new(Shared::new(endpoint, 3));
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { shared_get(&pool).await })
            })
            .collect();
        for c in calls {
            let n: usize = c.await.unwrap().parse().unwrap();
            assert!(n <= 3, "answered on connection {n}");
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!(opened <= 3, "{opened} connections");
        for _ in 0..5 {
            shared_get(&pool).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), opened);
    }

    #[tokio::test]
    async fn a_shared_connection_whose_answer_was_not_read_is_not_reused() {
        let (endpoint, accepted) = upstream(true).await;
        let pool = Shared::new(endpoint, 1);
        let req = http::Request::get("/x")
            .header(http::header::HOST, "localhost")
            .body(Body::empty())
            .unwrap();
        drop(pool.send(req).await.unwrap());
        // The one connection allowed closes, and the next caller gets a new one.
        assert_eq!(shared_get(&pool).await, "2");
        assert_eq!(shared_get(&pool).await, "2");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn shared_connections_survive_the_server_closing_them() {
        let (endpoint, accepted) = upstream(false).await;
        let pool = Shared::new(endpoint, 1);
        for i in 1..=3 {
            assert_eq!(shared_get(&pool).await, i.to_string());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
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
