//! One gateway connection: key check, then channels handed to `session` and `forward`.

use std::sync::Arc;
use std::time::Duration;

use russh::Channel;
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};

use super::Ctx;
use super::forward::{self, Remote};

/// Accepts gateway connections until the process ends.
pub async fn serve(
    listener: tokio::net::UnixListener,
    config: Arc<russh::server::Config>,
    ctx: Arc<Ctx>,
    key: PublicKey,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log!("SSH agent: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let handler = Conn {
            ctx: ctx.clone(),
            key: key.clone(),
            remote: Remote::default(),
        };
        let config = config.clone();
        tokio::spawn(async move {
            match russh::server::run_stream(config, stream, handler).await {
                Ok(session) => {
                    let _ = session.await;
                }
                Err(e) => log!("SSH agent: handshake failed: {e}"),
            }
        });
    }
}

struct Conn {
    ctx: Arc<Ctx>,
    key: PublicKey,
    /// Remote forwards (`ssh -R`) of this connection; closed when it ends.
    remote: Remote,
}

impl Conn {
    fn accepts(&self, key: &PublicKey) -> Auth {
        if key.key_data() == self.key.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.accepts(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.accepts(key.public_key))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(super::session::run(
            channel,
            session.handle(),
            self.ctx.clone(),
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        tokio::spawn(forward::direct(
            channel,
            host_to_connect.to_owned(),
            port_to_connect,
            reply,
        ));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        match self.remote.listen(address, *port, session.handle()).await {
            Ok(bound) => {
                *port = bound;
                Ok(true)
            }
            Err(e) => {
                log!("SSH agent: cannot forward {address}:{port}: {e}");
                Ok(false)
            }
        }
    }

    /// Only the path of `spec.ssh.file_socket`: the gateway's file link. Any other path
    /// (a user's `ssh -R /path:…` relayed by mistake, a forged request) is refused.
    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(path) = self
            .ctx
            .file_socket
            .as_deref()
            .filter(|p| p.as_os_str() == socket_path)
        else {
            log!("SSH agent: refused to listen on {socket_path:?} (not atelier.file's socket)");
            return Ok(false);
        };
        match self.remote.listen_unix(path, session.handle()) {
            Ok(()) => Ok(true),
            Err(e) => {
                log!("SSH agent: cannot serve atelier.file on {socket_path}: {e:#}");
                Ok(false)
            }
        }
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.remote.cancel_unix(std::path::Path::new(socket_path)))
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.remote.cancel(address, port))
    }
}
