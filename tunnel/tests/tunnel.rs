//! Both ends of the tunnel on 127.0.0.1: attacks first (each refused with nothing
//! reachable), then a runtime serving real streams, reconnecting, and being replaced.
//!
//! Timeouts in the hubs' settings are short so that refusals show quickly; the waits of the
//! tests themselves are deadlines sized in minutes that only catch hangs.

// Test code throughout (the workspace lints are for product code).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use atelier_tunnel::hub::{HubSettings, Registration, TunnelHub};
use atelier_tunnel::node::{self, Local, Locals};
use atelier_tunnel::wire::{self, ConnectBack, Fingerprint, LaunchId, Secret};
use atelier_tunnel::{Target, tls};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Only catches hangs.
const DEADLINE: Duration = Duration::from_secs(300);

fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "atelier-tunnel-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn settings(state: &std::path::Path) -> HubSettings {
    let mut s = HubSettings::new("127.0.0.1:0".parse().unwrap(), state.to_owned());
    s.handshake_timeout = Duration::from_secs(1);
    s.session_wait = Duration::from_millis(300);
    s
}

async fn hub(name: &str) -> TunnelHub {
    TunnelHub::start(settings(&temp_dir(name))).await.unwrap()
}

/// Bounded: polls `cond` until it holds or [`DEADLINE`] passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next connection, or an error once `stop` is cancelled.
async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    tokio::select! {
        a = listener.accept() => a,
        _ = stop.cancelled() => Err(std::io::ErrorKind::Interrupted.into()),
    }
}

/// A tiny HTTP server: one answer per connection.
async fn http_server(tasks: &TaskTracker, stop: &CancellationToken) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (inner, stop) = (tasks.clone(), stop.clone());
    tasks.spawn(async move {
        while let Ok((mut tcp, _)) = accept(&listener, &stop).await {
            inner.spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = b"hello from the node";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(body).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// Echoes every byte back; half-closes when the other side does.
async fn echo_server(tasks: &TaskTracker, stop: &CancellationToken) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (inner, stop) = (tasks.clone(), stop.clone());
    tasks.spawn(async move {
        while let Ok((tcp, _)) = accept(&listener, &stop).await {
            inner.spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// The runtime's loop for `reg`, serving `locals`, until `stop`.
fn runtime(tasks: &TaskTracker, reg: &Registration, locals: Locals, stop: &CancellationToken) {
    let dial = reg.connect_back.validate().unwrap();
    let log: node::Log = Arc::new(|m| eprintln!("runtime: {m}"));
    tasks.spawn(node::run(dial, locals, log, stop.clone()));
}

/// TLS to the hub with the right pin, then the given hello bytes; the hub's answer byte
/// (`None`: closed without one).
async fn raw_hello(hub: &TunnelHub, hello: &[u8]) -> Option<u8> {
    let mut tls = tls_to(hub, hub.fingerprint()).await.unwrap();
    tls.write_all(hello).await.unwrap();
    let answer = tls.read_u8().await.ok();
    // Whatever the answer, the hub closes a refused connection.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "nothing follows a refusal");
    answer
}

async fn tls_to(
    hub: &TunnelHub,
    pin: Fingerprint,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(hub.local_addr()).await?;
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(pin).unwrap());
    let name = rustls::pki_types::ServerName::try_from(wire::SERVER_NAME).unwrap();
    connector.connect(name, tcp).await
}

async fn hello_bytes(launch: &str, secret: &Secret) -> Vec<u8> {
    let mut buf = Vec::new();
    wire::write_hello(&mut buf, &launch.parse::<LaunchId>().unwrap(), secret)
        .await
        .unwrap();
    buf
}

/// Nothing of `launch` can be reached: no session, and a dial fails.
async fn unreachable(hub: &TunnelHub, launch: &str) {
    assert!(!hub.connected(launch));
    for target in Target::ALL {
        let err = hub.dial(launch, target).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    }
}

// ---- attacks ----

#[tokio::test]
async fn a_wrong_secret_is_refused_and_reaches_nothing() {
    let hub = hub("wrong-secret").await;
    hub.register("nb-a").unwrap();
    let answer = raw_hello(&hub, &hello_bytes("nb-a", &Secret::random().unwrap()).await).await;
    assert_eq!(answer, Some(wire::REFUSED));
    unreachable(&hub, "nb-a").await;
    hub.shutdown().await;
}

#[tokio::test]
async fn the_secret_of_another_launch_is_refused() {
    let hub = hub("other-launch").await;
    hub.register("nb-a").unwrap();
    let b = hub.register("nb-b").unwrap();
    let b_secret = Secret::from_hex(&b.connect_back.secret).unwrap();
    let answer = raw_hello(&hub, &hello_bytes("nb-a", &b_secret).await).await;
    assert_eq!(answer, Some(wire::REFUSED));
    unreachable(&hub, "nb-a").await;
    // An unregistered launch with any secret: the same refusal.
    let answer = raw_hello(&hub, &hello_bytes("nb-c", &b_secret).await).await;
    assert_eq!(answer, Some(wire::REFUSED));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_runtime_pinning_another_certificate_never_sends_its_secret() {
    let hub = hub("wrong-pin").await;
    let reg = hub.register("nb-a").unwrap();
    // A gateway impersonator's certificate is not the pinned one: TLS fails at the runtime,
    // before the hello.
    let err = tls_to(&hub, Fingerprint([7; 32])).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // The runtime's own loop with a wrong pin never connects.
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut wrong = reg.clone();
    wrong.connect_back.fingerprint = Fingerprint([7; 32]).to_string();
    runtime(&tasks, &wrong, Locals::default(), &stop);
    unreachable(&hub, "nb-a").await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped_holding_nothing() {
    let hub = hub("stall").await;
    hub.register("nb-a").unwrap();
    let idle_tasks = hub.tasks();
    // One that never starts TLS, one that stops halfway through its hello.
    let mut silent = TcpStream::connect(hub.local_addr()).await.unwrap();
    let mut half = tls_to(&hub, hub.fingerprint()).await.unwrap();
    half.write_all(&wire::MAGIC).await.unwrap();
    eventually("both handshakes under way", || {
        hub.handshakes_in_progress() == 2
    })
    .await;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, silent.read_to_end(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the hub closes it"
    );
    let closed = tokio::time::timeout(DEADLINE, half.read_to_end(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the hub closes it"
    );
    assert!(buf.is_empty(), "no answer to a hello never finished");
    eventually("no handshake left", || hub.handshakes_in_progress() == 0).await;
    eventually("no task left", || hub.tasks() == idle_tasks).await;
    unreachable(&hub, "nb-a").await;
    hub.shutdown().await;
}

#[tokio::test]
async fn an_oversize_or_malformed_hello_is_refused_unread() {
    let hub = hub("oversize").await;
    let reg = hub.register("nb-a").unwrap();
    let secret = Secret::from_hex(&reg.connect_back.secret).unwrap();
    // A length past the limit: refused before the id (or the secret after it) is read.
    let mut big = wire::MAGIC.to_vec();
    big.push(wire::VERSION);
    big.extend_from_slice(&60000u16.to_be_bytes());
    big.extend_from_slice(&[b'a'; 4096]);
    assert_eq!(raw_hello(&hub, &big).await, Some(wire::MALFORMED));
    // Another version, with the right credential after it.
    let mut other = hello_bytes("nb-a", &secret).await;
    other[4] = 2;
    assert_eq!(raw_hello(&hub, &other).await, Some(wire::MALFORMED));
    unreachable(&hub, "nb-a").await;
    hub.shutdown().await;
}

/// A gateway of the test's own, to send the runtime streams the hub never would.
async fn rogue_gateway(
    tasks: &TaskTracker,
    locals: Locals,
    stop: &CancellationToken,
) -> h2::client::SendRequest<Bytes> {
    let state = temp_dir("rogue");
    let id = atelier_tunnel::identity::load_or_create(&state).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secret = Secret::random().unwrap();
    let cb = ConnectBack {
        address: listener.local_addr().unwrap().to_string(),
        fingerprint: id.fingerprint.to_string(),
        launch: "nb-a".into(),
        secret: secret.to_hex().to_string(),
    };
    let log: node::Log = Arc::new(|m| eprintln!("runtime: {m}"));
    tasks.spawn(node::run(cb.validate().unwrap(), locals, log, stop.clone()));
    let (tcp, _) = listener.accept().await.unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(id.cert, id.key).unwrap());
    let mut tls = acceptor.accept(tcp).await.unwrap();
    let (launch, got) = wire::read_hello(&mut tls).await.unwrap();
    assert_eq!(launch.as_str(), "nb-a");
    assert!(secret.hash().matches(&got));
    tls.write_all(&[wire::ACCEPTED]).await.unwrap();
    let (sender, conn) = h2::client::handshake(tls).await.unwrap();
    tasks.spawn(conn);
    sender
}

async fn status_of(
    sender: &h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
) -> Result<http::StatusCode, h2::Error> {
    let mut sender = sender.clone().ready().await?;
    let (response, _send) = sender.send_request(req, false)?;
    Ok(response.await?.status())
}

#[tokio::test]
async fn the_runtime_refuses_unknown_targets_and_oversize_headers() {
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let echo = echo_server(&tasks, &stop).await;
    let locals = Locals {
        jupyter: Some(Local::Tcp(echo)),
        ..Locals::default()
    };
    let gw = rogue_gateway(&tasks, locals, &stop).await;
    let post = |path: &str| {
        http::Request::post(format!("http://atelier-gateway{path}"))
            .body(())
            .unwrap()
    };
    // Served: the one target configured.
    assert_eq!(status_of(&gw, post("/jupyter")).await.unwrap(), 200);
    // Refused: unknown names, other forms of a known one, a target not served here.
    for path in [
        "/files",
        "/Jupyter",
        "/jupyter/",
        "/jupyter?x=1",
        "/../jupyter",
        "/engine",
        "/agent",
    ] {
        assert_eq!(status_of(&gw, post(path)).await.unwrap(), 404, "{path}");
    }
    let get = http::Request::get("http://atelier-gateway/jupyter")
        .body(())
        .unwrap();
    assert_eq!(status_of(&gw, get).await.unwrap(), 404);
    // A header block past the runtime's limit never reaches a target.
    let big = http::Request::post("http://atelier-gateway/jupyter")
        .header("x-pad", "a".repeat(wire::MAX_HEADER_LIST as usize * 2))
        .body(())
        .unwrap();
    match status_of(&gw, big).await {
        Ok(status) => assert_ne!(status, 200),
        Err(e) => assert!(e.is_reset() || e.is_go_away() || e.is_io(), "{e}"),
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

// ---- a runtime with its credential ----

async fn read_all(mut s: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn a_runtime_with_its_credential_serves_http_and_a_two_way_stream() {
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let (http, echo) = (
        http_server(&tasks, &stop).await,
        echo_server(&tasks, &stop).await,
    );
    let hub = hub("serve").await;
    let reg = hub.register("nb-a").unwrap();
    let locals = Locals {
        jupyter: Some(Local::Tcp(http)),
        agent: Some(Local::Tcp(echo)),
        engine: None,
    };
    runtime(&tasks, &reg, locals, &stop);
    assert!(hub.wait_connected("nb-a", DEADLINE).await);

    // HTTP through an endpoint, as the proxy dials it.
    let endpoint = hub.endpoint("nb-a", Target::Jupyter).unwrap();
    assert_eq!(endpoint.to_string(), "tunnel:nb-a/jupyter");
    let mut s = endpoint.dial().await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("hello from the node"), "{answer}");

    // Both ways at once, as a WebSocket: every message answered before the next, then
    // a large one (past one flow-control window), then a half-close.
    let mut s = hub.dial("nb-a", Target::Agent).await.unwrap();
    for i in 0..50u32 {
        let msg = format!("message {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    let big: Vec<u8> = (0..(5 * wire::STREAM_WINDOW as usize))
        .map(|i| i as u8)
        .collect();
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async {
        w.write_all(&big).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let (_, back) = tokio::join!(writer, read_all(&mut r));
    assert!(
        back == big,
        "the echo is the bytes sent ({} of {})",
        back.len(),
        big.len()
    );

    // Not served on that node: refused, not hung.
    let err = hub.dial("nb-a", Target::Engine).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // Unregistered: the session ends and nothing is reachable.
    hub.unregister("nb-a");
    let err = hub.dial("nb-a", Target::Jupyter).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn the_runtime_reconnects_after_its_session_drops_and_a_restarted_gateway_takes_it_back() {
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let http = http_server(&tasks, &stop).await;
    let state = temp_dir("reconnect");
    let first = TunnelHub::start(settings(&state)).await.unwrap();
    let port = first.local_addr();
    let reg = first.register("nb-a").unwrap();
    let locals = Locals {
        jupyter: Some(Local::Tcp(http)),
        ..Locals::default()
    };
    runtime(&tasks, &reg, locals, &stop);
    assert!(first.wait_connected("nb-a", DEADLINE).await);
    // The gateway goes away: every session ends with it.
    first.shutdown().await;
    drop(first);

    // A new gateway on the same address and data dir (same certificate), told of the launch
    // by the hash kept with its handle.
    let mut again = settings(&state);
    again.listen = port;
    let second = TunnelHub::start(again).await.unwrap();
    assert_eq!(
        second.fingerprint(),
        reg.connect_back.fingerprint.parse().unwrap()
    );
    second.restore("nb-a", reg.hash).unwrap();
    assert!(
        second.wait_connected("nb-a", DEADLINE).await,
        "the runtime came back"
    );
    let mut s = second.dial("nb-a", Target::Jupyter).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(answer.ends_with("hello from the node"), "{answer}");
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    second.shutdown().await;
}

/// A runtime of the test's own: connects once with `reg`'s credential and answers every
/// stream with `reply`. Returns when the gateway ends the session.
async fn one_session(
    reg: &Registration,
    hub: &TunnelHub,
    reply: &'static [u8],
) -> impl std::future::Future<Output = ()> + use<> {
    let mut tls = tls_to(hub, hub.fingerprint()).await.unwrap();
    let secret = Secret::from_hex(&reg.connect_back.secret).unwrap();
    tls.write_all(&hello_bytes(&reg.connect_back.launch, &secret).await)
        .await
        .unwrap();
    assert_eq!(tls.read_u8().await.unwrap(), wire::ACCEPTED);
    let mut conn = h2::server::handshake(tls).await.unwrap();
    async move {
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            let mut send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            send.send_data(Bytes::from_static(reply), true).unwrap();
        }
    }
}

#[tokio::test]
async fn a_newer_session_of_the_same_launch_replaces_the_older() {
    let hub = hub("replace").await;
    let reg = hub.register("nb-a").unwrap();
    let tasks = TaskTracker::new();
    let older = tasks.spawn(one_session(&reg, &hub, b"older").await);
    let answer = read_all(hub.dial("nb-a", Target::Jupyter).await.unwrap()).await;
    assert_eq!(answer, b"older");

    let newer = tasks.spawn(one_session(&reg, &hub, b"newer").await);
    // The older session is closed by the gateway…
    tokio::time::timeout(DEADLINE, older)
        .await
        .unwrap()
        .unwrap();
    // …and every dial goes to the newer.
    for _ in 0..3 {
        let answer = read_all(hub.dial("nb-a", Target::Jupyter).await.unwrap()).await;
        assert_eq!(answer, b"newer");
    }
    hub.unregister("nb-a");
    tokio::time::timeout(DEADLINE, newer)
        .await
        .unwrap()
        .unwrap();
    tasks.close();
    tasks.wait().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_target_on_a_unix_socket_with_a_path_past_the_kernels_limit_is_served() {
    use std::os::fd::AsRawFd;
    let dir = temp_dir("long").join("d".repeat(120));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jupyter.sock");
    assert!(path.as_os_str().len() > 108);
    // Bound as the runtime's agent binds such a path: through the directory's descriptor.
    let handle = std::fs::File::open(&dir).unwrap();
    let short = format!("/proc/self/fd/{}/jupyter.sock", handle.as_raw_fd());
    let listener = tokio::net::UnixListener::bind(short).unwrap();
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            Ok((mut s, _)) = listener.accept() => { let _ = s.write_all(b"over unix").await; }
            _ = server_stop.cancelled() => {}
        }
    });
    let hub = hub("long").await;
    let reg = hub.register("nb-a").unwrap();
    let locals = Locals {
        jupyter: Some(Local::Unix(path)),
        ..Locals::default()
    };
    runtime(&tasks, &reg, locals, &stop);
    assert!(hub.wait_connected("nb-a", DEADLINE).await);
    let answer = read_all(hub.dial("nb-a", Target::Jupyter).await.unwrap()).await;
    assert_eq!(answer, b"over unix");
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    hub.shutdown().await;
}

/// A notebook writes the directory its sockets are in: a link planted where Jupyter's
/// socket was must not lead the runtime (root, outside the sandbox) to another socket on
/// its machine (a container engine's, munge's) with the gateway's traffic.
#[tokio::test]
async fn a_link_planted_in_place_of_a_socket_is_not_followed() {
    let dir = temp_dir("planted");
    std::fs::create_dir_all(&dir).unwrap();
    let elsewhere = dir.join("engine.sock");
    let listener = tokio::net::UnixListener::bind(&elsewhere).unwrap();
    let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let (server_stop, seen) = (stop.clone(), reached.clone());
    tasks.spawn(async move {
        tokio::select! {
            Ok((mut s, _)) = listener.accept() => {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = s.write_all(b"the engine").await;
            }
            _ = server_stop.cancelled() => {}
        }
    });
    let agent = dir.join("agent");
    std::fs::create_dir_all(&agent).unwrap();
    std::os::unix::fs::symlink(&elsewhere, agent.join("jupyter.sock")).unwrap();
    // The long-path way too (through the directory's descriptor).
    let deep = dir.join("d".repeat(110));
    std::fs::create_dir_all(&deep).unwrap();
    std::os::unix::fs::symlink(&elsewhere, deep.join("ssh.sock")).unwrap();
    let hub = hub("planted").await;
    let reg = hub.register("nb-p").unwrap();
    let locals = Locals {
        jupyter: Some(Local::Unix(agent.join("jupyter.sock"))),
        agent: Some(Local::Unix(deep.join("ssh.sock"))),
        ..Locals::default()
    };
    runtime(&tasks, &reg, locals, &stop);
    assert!(hub.wait_connected("nb-p", DEADLINE).await);
    for target in [Target::Jupyter, Target::Agent] {
        if let Ok(s) = hub.dial("nb-p", target).await {
            let answer = read_all(s).await;
            assert!(answer.is_empty(), "{target:?}: {answer:?}");
        }
    }
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "the runtime followed the planted link"
    );
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    hub.shutdown().await;
}
