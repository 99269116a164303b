//! Port forwarding from inside the notebook: `direct-tcpip` (`ssh -L`, VS Code's tunnels)
//! connects from here, `tcpip-forward` (`ssh -R`) listens here on loopback, and
//! `streamlocal-forward` (the gateway's file link) listens on `atelier.file`'s socket.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinHandle;

/// How long a `direct-tcpip` connect may take before the channel is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `host:port` from inside the notebook and relays the channel to it.
pub async fn direct(channel: Channel<Msg>, host: String, port: u32, reply: ChannelOpenHandle) {
    let Ok(port) = u16::try_from(port) else {
        reply.reject(ChannelOpenFailure::ConnectFailed).await;
        return;
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&host, port)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(_)) | Err(_) => {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    reply.accept().await;
    relay(channel, tcp).await;
}

/// Connects to `host:port`. IP literals and `localhost` need no resolver, which matters in
/// containers: the runtime is linked statically there, and glibc's resolver of a static
/// binary may not work with the image's own libraries. Other names go to the resolver.
async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    if host.eq_ignore_ascii_case("localhost") {
        let mut last = None;
        for ip in [
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ] {
            match TcpStream::connect((ip, port)).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        return Err(last.unwrap_or_else(|| io::Error::other("localhost")));
    }
    TcpStream::connect((host, port)).await
}

/// Copies between the channel and a local stream (TCP or unix) until both ends close.
async fn relay(
    channel: Channel<Msg>,
    mut local: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) {
    let mut stream = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut local).await;
}

/// The remote forwards of one connection. Every listener stops when this is dropped.
#[derive(Default)]
pub struct Remote {
    listeners: HashMap<(String, u32), JoinHandle<()>>,
    /// Unix-socket forwards by path; the socket file goes with them.
    unix: HashMap<std::path::PathBuf, JoinHandle<()>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        for (_, task) in self.listeners.drain() {
            task.abort();
        }
        for (path, task) in self.unix.drain() {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Remote {
    /// Listens on the notebook's loopback (as sshd with `GatewayPorts no`) and opens a
    /// `forwarded-tcpip` channel back for every connection. Returns the bound port.
    pub async fn listen(&mut self, address: &str, port: u32, handle: Handle) -> io::Result<u32> {
        let wanted = u16::try_from(port)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "port out of range"))?;
        let listener = TcpListener::bind(("127.0.0.1", wanted)).await?;
        let bound = u32::from(listener.local_addr()?.port());
        // The client matches forwarded connections by the address and port it asked for
        // (port 0 becomes the one we chose).
        let key = (address.to_owned(), if port == 0 { bound } else { port });
        let (connected_address, connected_port) = key.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let handle = handle.clone();
                let address = connected_address.clone();
                tokio::spawn(async move {
                    let channel = handle
                        .channel_open_forwarded_tcpip(
                            address,
                            connected_port,
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    if let Ok(channel) = channel {
                        let _ = tcp.set_nodelay(true);
                        relay(channel, tcp).await;
                    }
                });
            }
        });
        if let Some(old) = self.listeners.insert(key, task) {
            old.abort();
        }
        Ok(bound)
    }

    /// Listens on the unix socket `path` (mode 0666: any program of the notebook may
    /// connect; what was at the path, a link included, is replaced) and opens a
    /// `forwarded-streamlocal` channel back for every connection.
    pub fn listen_unix(&mut self, path: &std::path::Path, handle: Handle) -> io::Result<()> {
        let listener = super::bind_with_mode(path, 0o666).map_err(io::Error::other)?;
        let listener = UnixListener::from_std(listener)?;
        let name = path.to_string_lossy().into_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((local, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let handle = handle.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    if let Ok(channel) = handle.channel_open_forwarded_streamlocal(name).await {
                        relay(channel, local).await;
                    }
                });
            }
        });
        if let Some(old) = self.unix.insert(path.to_path_buf(), task) {
            old.abort();
        }
        Ok(())
    }

    pub fn cancel_unix(&mut self, path: &std::path::Path) -> bool {
        match self.unix.remove(path) {
            Some(task) => {
                task.abort();
                let _ = std::fs::remove_file(path);
                true
            }
            None => false,
        }
    }

    pub fn cancel(&mut self, address: &str, port: u32) -> bool {
        match self.listeners.remove(&(address.to_owned(), port)) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

/// The engine relay ([`crate::spec::ForwardSpec`]): every connection to `listener` is
/// relayed to `127.0.0.1:port` here, inside the instance; one that cannot connect (the
/// engine is not listening yet) is closed at once, which the gateway's probes read as "not
/// up".
pub async fn relay_port(listener: UnixListener, port: u16) {
    loop {
        let Ok((mut local, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect("127.0.0.1", port)).await;
            if let Ok(Ok(mut tcp)) = connected {
                let _ = tcp.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut local, &mut tcp).await;
            }
        });
    }
}
