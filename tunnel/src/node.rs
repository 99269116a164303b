//! The runtime's end: dial the gateway, prove the launch, then serve every stream the
//! gateway opens by connecting it to the local socket of its target and copying both ways.
//! A session that ends (or never comes up) is dialled again after a pause that doubles up
//! to [`MAX_BACKOFF`], with jitter so that the runtimes of a restarted gateway do not all
//! come back in the same instant.
//!
//! ```text
//! loop: TCP ─► TLS (pinned) ─► hello ─► reply ─► HTTP/2 server
//!         accept stream ─► POST /<target>, target served here? ─► connect locally
//!                       ─► 200 + copy both ways │ 404 unknown target │ 502 no answer
//!       ─► session ends ─► backoff ─► loop
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::keepalive;
use crate::stream::TunnelStream;
use crate::wire::{self, ACCEPTED, Dial, MALFORMED, REFUSED, Target};

/// The first pause after a session ends or a dial fails.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause: a runtime whose gateway was away comes back within this of its return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The copy buffer of each direction of a stream.
const COPY_BUF: usize = 256 * 1024;

/// Where a target is served on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Local {
    async fn connect(&self) -> io::Result<LocalStream> {
        Ok(match self {
            Local::Unix(path) => LocalStream::Unix(connect_unix(path).await?),
            Local::Tcp(addr) => {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                LocalStream::Tcp(tcp)
            }
        })
    }
}

/// Connects to the unix socket at `path` without following a link in its last component:
/// the directory it is in may be the notebook's to write (a sandboxed notebook's agent dir),
/// and this runtime may be root outside the sandbox, so a link planted in the socket's
/// place must never lead the gateway's traffic to another socket of this machine. The
/// socket is opened `O_PATH | O_NOFOLLOW` and reached through its descriptor's
/// `/proc/self/fd` link, which also takes paths past `connect(2)`'s 107 bytes.
async fn connect_unix(path: &std::path::Path) -> io::Result<UnixStream> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::os::fd::AsRawFd;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no socket", path.display()),
        ));
    };
    let fail = |e: rustix::io::Errno| {
        io::Error::new(
            io::Error::from_raw_os_error(e.raw_os_error()).kind(),
            format!("{}: {e}", path.display()),
        )
    };
    let dir = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail)?;
    // O_PATH with O_NOFOLLOW opens a link itself rather than failing.
    let st = rustix::fs::fstat(&fd).map_err(fail)?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::Socket {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a socket (a link or a file planted there?)",
                path.display()
            ),
        ));
    }
    UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd())).await
}

enum LocalStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// The targets this runtime serves; a stream to any other is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locals {
    pub jupyter: Option<Local>,
    pub agent: Option<Local>,
    pub engine: Option<Local>,
}

impl Locals {
    pub fn get(&self, target: Target) -> Option<&Local> {
        match target {
            Target::Jupyter => self.jupyter.as_ref(),
            Target::Agent => self.agent.as_ref(),
            Target::Engine => self.engine.as_ref(),
        }
    }
}

/// Where the runtime's messages go (its log).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// How one attempt ended.
enum Ended {
    /// The gateway accepted the launch; the session ran, then ended for this reason.
    After(String),
    /// It never got that far.
    Before(String),
    Stopped,
}

/// Dials the gateway and serves its streams until `stop`, reconnecting whenever the
/// session ends.
pub async fn run(dial: Dial, locals: Locals, log: Log, stop: CancellationToken) {
    let tls = match crate::tls::client_config(dial.fingerprint) {
        Ok(c) => tokio_rustls::TlsConnector::from(c),
        Err(e) => {
            log(&format!("connect-back: TLS settings: {e}"));
            return;
        }
    };
    let locals = Arc::new(locals);
    let streams = TaskTracker::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ended = session(&dial, &tls, &locals, &streams, &stop).await;
        let why = match ended {
            Ended::Stopped => break,
            Ended::After(why) => {
                backoff = FIRST_BACKOFF;
                why
            }
            Ended::Before(why) => why,
        };
        let pause = jitter(backoff);
        log(&format!(
            "connect-back to {}: {why}; again in {} ms",
            dial.address,
            pause.as_millis()
        ));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    streams.close();
    streams.wait().await;
}

/// `d` ± 25 %, from the system's random source (`d` itself if it fails).
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return d;
    }
    // 0.75 to 1.25 of d.
    let factor = 0.75 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
    d.mul_f64(factor)
}

async fn session(
    dial: &Dial,
    tls: &tokio_rustls::TlsConnector,
    locals: &Arc<Locals>,
    streams: &TaskTracker,
    stop: &CancellationToken,
) -> Ended {
    let shake = async {
        let tcp = TcpStream::connect(dial.address.as_str())
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tcp = tokio::io::BufReader::with_capacity(wire::READ_BUF, tcp);
        let name = rustls::pki_types::ServerName::try_from(wire::SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let mut tls = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        wire::write_hello(&mut tls, &dial.launch, &dial.secret)
            .await
            .map_err(|e| format!("sending the hello: {e}"))?;
        let reply = tls
            .read_u8()
            .await
            .map_err(|e| format!("reading the gateway's answer: {e}"))?;
        match reply {
            ACCEPTED => {}
            REFUSED => {
                return Err(format!(
                    "the gateway refused launch {} (not registered, or another secret)",
                    dial.launch
                ));
            }
            MALFORMED => return Err("the gateway did not understand the hello".to_owned()),
            other => return Err(format!("unknown answer {other} from the gateway")),
        }
        h2::server::Builder::new()
            .initial_window_size(wire::STREAM_WINDOW)
            .initial_connection_window_size(wire::SESSION_WINDOW)
            .max_frame_size(wire::MAX_FRAME)
            .max_header_list_size(wire::MAX_HEADER_LIST)
            .max_concurrent_streams(wire::MAX_STREAMS)
            .max_send_buffer_size(wire::STREAM_WINDOW as usize)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))
    };
    let shaken = tokio::select! {
        r = tokio::time::timeout(wire::HANDSHAKE_TIMEOUT, shake) => r,
        _ = stop.cancelled() => return Ended::Stopped,
    };
    let mut conn = match shaken {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Ended::Before(e),
        Err(_) => return Ended::Before("no answer within the handshake time".to_owned()),
    };
    let pinger = keepalive(conn.ping_pong(), wire::KEEPALIVE);
    tokio::pin!(pinger);
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    streams.spawn(serve(req, respond, locals.clone()));
                }
                Some(Err(e)) => return Ended::After(format!("session ended: {e}")),
                None => return Ended::After("the gateway closed the session".to_owned()),
            },
            _ = &mut pinger => return Ended::After("no answer to a ping".to_owned()),
            _ = stop.cancelled() => return Ended::Stopped,
        }
    }
}

fn answer(respond: &mut SendResponse<Bytes>, status: http::StatusCode) {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let _ = respond.send_response(response, true);
}

/// One stream: its target's local socket, or a refusal.
async fn serve(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    locals: Arc<Locals>,
) {
    let target = (req.method() == http::Method::POST && req.uri().query().is_none())
        .then(|| Target::from_path(req.uri().path()))
        .flatten();
    let Some(local) = target.and_then(|t| locals.get(t)) else {
        answer(&mut respond, http::StatusCode::NOT_FOUND);
        return;
    };
    let connected = tokio::time::timeout(wire::LOCAL_CONNECT_TIMEOUT, local.connect()).await;
    let Ok(Ok(mut local)) = connected else {
        answer(&mut respond, http::StatusCode::BAD_GATEWAY);
        return;
    };
    let Ok(send) = respond.send_response(http::Response::new(()), false) else {
        return;
    };
    let mut stream = TunnelStream::new(send, req.into_body());
    // Larger buffers than copy's 8 KiB: a bulk transfer (scp through the agent) makes a
    // thirtieth of the system calls.
    let _ = match &mut local {
        LocalStream::Unix(u) => {
            tokio::io::copy_bidirectional_with_sizes(&mut stream, u, COPY_BUF, COPY_BUF).await
        }
        LocalStream::Tcp(t) => {
            tokio::io::copy_bidirectional_with_sizes(&mut stream, t, COPY_BUF, COPY_BUF).await
        }
    };
}
