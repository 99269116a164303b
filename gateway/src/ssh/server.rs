//! The SSH front door: one port for all notebooks, where the user name picks the notebook
//! (its name or id), and each SSH notebook's own port, where the user is `ma-user`. It
//! authenticates with the notebook's key pairs, checks the whitelist, records every login
//! and refusal in the audit log, and relays the channels into the notebook (`ssh::relay`).
//!
//! ```text
//! client ──TCP──► accept ──► handshake (host key: ssh::host_key) ──► publickey auth
//!                                 user = notebook name or id ──► candidates (store)
//!                                 offered key ∈ notebook's key pairs? whitelist? enabled?
//!        ──► logged in to a RUNNING notebook: link to its agent opened in the background
//!        ◄──► channels: session, direct-tcpip, tcpip-forward relayed over the link
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Sig};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Action, Target};
use crate::notebooks::status::RUNNING;
use crate::server::AppState;
use crate::ssh::relay::{self, Activity, Link, Request};
use crate::ssh::whitelist;
use crate::store::notebooks::{self as rows, SshTarget};

/// The russh settings of the front door.
pub fn config(host_key: PrivateKey) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-Atelier".into()),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    })
}

/// Accepts SSH connections until `stop` is cancelled. With `notebook`, this is that
/// notebook's own port: the user is `ma-user`, the whitelist is checked at accept, and the
/// loop ends when the notebook is gone.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    config: Arc<russh::server::Config>,
    stop: CancellationToken,
    notebook: Option<String>,
) {
    let sessions = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an SSH connection failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        // russh applies its `nodelay` setting only in its own accept loop; without it the
        // last packets of an exchange wait ~40 ms for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let front = Arc::new(OnceLock::new());
        let mut handler = Conn {
            state: state.clone(),
            peer,
            notebook: notebook.clone(),
            login: None,
            audited: HashSet::new(),
            front: front.clone(),
            link: None,
            activity: None,
            sessions: HashMap::new(),
        };
        if let Some(id) = &notebook {
            match handler.own_port_target(id).await {
                Err(OwnPort::Gone) => break,
                Err(OwnPort::Refused(refusal, target)) => {
                    handler.refuse(MA_USER, refusal, target).await;
                    continue;
                }
                Ok(()) => {}
            }
        }
        let config = config.clone();
        let stop = stop.clone();
        sessions.spawn(async move {
            let session = match russh::server::run_stream(config, tcp, handler).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "SSH handshake failed");
                    return;
                }
            };
            let handle = session.handle();
            let _ = front.set(handle.clone());
            tokio::select! {
                r = session => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "SSH session ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "the gateway is shutting down".into(), "en".into())
                        .await;
                }
            }
        });
    }
    sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
}

/// The user name on a notebook's own port, as in the seed.
pub const MA_USER: &str = "ma-user";

enum OwnPort {
    Gone,
    Refused(Refusal, Option<SshTarget>),
}

/// Why a login was refused; the text goes to the audit log, never to the client (which only
/// learns that its key was not accepted, so a notebook's existence is not revealed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refusal {
    UnknownNotebook,
    KeyNotAccepted,
    NotWhitelisted,
    SshDisabled,
    WrongUser,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownNotebook => "no such notebook",
            Refusal::KeyNotAccepted => "the key is not one of the notebook's key pairs",
            Refusal::NotWhitelisted => "the source address is not in the notebook's whitelist",
            Refusal::SshDisabled => "SSH is not enabled for the notebook",
            Refusal::WrongUser => "a notebook's own port takes the user ma-user",
        }
    }
}

/// One client connection.
struct Conn {
    state: AppState,
    peer: SocketAddr,
    /// Set on a notebook's own port.
    notebook: Option<String>,
    login: Option<SshTarget>,
    /// Refusals already written to the audit log on this connection (a client tries each of
    /// its keys in turn).
    audited: HashSet<(String, Refusal)>,
    /// This connection's own session, to open channels towards the client.
    front: Arc<OnceLock<russh::server::Handle>>,
    /// The link to the notebook's agent: opened at login, shared by every channel.
    link: Option<LinkFuture>,
    activity: Option<Activity>,
    sessions: HashMap<ChannelId, Slot>,
}

type LinkFuture = Shared<BoxFuture<'static, Result<Arc<Link>, String>>>;

/// A session channel: relayed, or failed with the message its shell or command gets.
enum Slot {
    Relay(relay::Session),
    Failed(String),
}

impl Conn {
    /// At accept on a notebook's own port: is the notebook still there, and may this peer
    /// connect at all (the whitelist)?
    async fn own_port_target(&self, id: &str) -> Result<(), OwnPort> {
        let targets = match self.state.store.pool.acquire().await {
            Ok(mut conn) => rows::ssh_targets(&mut conn, id).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let Some(t) = targets.into_iter().find(|t| t.id == id) else {
            return Err(OwnPort::Gone);
        };
        if !whitelist::allows(&t.whitelist, self.peer.ip()) {
            return Err(OwnPort::Refused(Refusal::NotWhitelisted, Some(t)));
        }
        Ok(())
    }

    /// The notebook `user` names (or this port's notebook) that accepts `key` from this
    /// peer.
    async fn check(
        &self,
        user: &str,
        key: &PublicKey,
    ) -> Result<SshTarget, (Refusal, Option<SshTarget>)> {
        let lookup = match &self.notebook {
            Some(_) if user != MA_USER => return Err((Refusal::WrongUser, None)),
            Some(id) => id.as_str(),
            None => user,
        };
        let candidates = {
            let Ok(mut conn) = self.state.store.pool.acquire().await else {
                return Err((Refusal::UnknownNotebook, None));
            };
            let all = rows::ssh_targets(&mut conn, lookup)
                .await
                .unwrap_or_default();
            match &self.notebook {
                Some(id) => all.into_iter().filter(|t| &t.id == id).collect(),
                None => all,
            }
        };
        if candidates.is_empty() {
            return Err((Refusal::UnknownNotebook, None));
        }
        let Some(target) = candidates
            .iter()
            .find(|c| c.public_keys.iter().any(|k| same_key(k, key)))
            .cloned()
        else {
            return Err((Refusal::KeyNotAccepted, candidates.into_iter().next()));
        };
        if !whitelist::allows(&target.whitelist, self.peer.ip()) {
            return Err((Refusal::NotWhitelisted, Some(target)));
        }
        if !target.ssh_enabled {
            return Err((Refusal::SshDisabled, Some(target)));
        }
        Ok(target)
    }

    async fn refuse(&mut self, user: &str, refusal: Refusal, target: Option<SshTarget>) {
        if !self.audited.insert((user.to_owned(), refusal)) {
            return;
        }
        let detail = format!(
            "ssh user {:?} from {}: {}",
            user,
            self.peer.ip(),
            refusal.as_str()
        );
        tracing::info!(peer = %self.peer, user, reason = refusal.as_str(), "SSH login refused");
        let (owner, id, name) = match &target {
            Some(t) => (t.owner.as_str(), t.id.as_str(), t.name.as_str()),
            None => ("-", "-", user),
        };
        self.audit(owner, Action::SshLoginRefused, id, name, "refused", &detail)
            .await;
    }

    async fn audit(
        &self,
        who: &str,
        action: Action,
        id: &str,
        name: &str,
        outcome: &str,
        detail: &str,
    ) {
        let result = async {
            let mut conn = self.state.store.pool.acquire().await?;
            audit::record(
                &mut conn,
                who,
                action,
                Target {
                    kind: "notebook",
                    id,
                    name,
                },
                outcome,
                Some(detail),
            )
            .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "recording an SSH login in the audit log failed");
        }
    }

    /// Ends a session channel with a message on stderr and exit status 1.
    fn fail_channel(
        session: &mut Session,
        channel: ChannelId,
        message: &str,
    ) -> Result<(), russh::Error> {
        session.channel_success(channel)?;
        session.extended_data(channel, 1, format!("{message}\r\n").into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    /// Starts opening the link to the logged-in notebook's agent (once per connection).
    fn link(&mut self) -> LinkFuture {
        if let Some(link) = &self.link {
            return link.clone();
        }
        let future: BoxFuture<'static, Result<Arc<Link>, String>> =
            match (&self.login, self.front.get(), &self.activity) {
                (Some(t), Some(front), Some(activity)) => {
                    let task = tokio::spawn(relay::open(
                        self.state.clone(),
                        t.id.clone(),
                        front.clone(),
                        activity.clone(),
                    ));
                    async move {
                        task.await
                            .unwrap_or_else(|_| Err("atelier: the gateway is shutting down".into()))
                    }
                    .boxed()
                }
                _ => async { Err("atelier: not logged in".to_owned()) }.boxed(),
            };
        let shared = future.shared();
        self.link = Some(shared.clone());
        shared
    }

    /// Relays a request of a session channel, or ends the channel with its failure.
    async fn request(
        &mut self,
        channel: ChannelId,
        request: Request<'_>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let starts = matches!(
            request,
            Request::Shell | Request::Exec(_) | Request::Subsystem(_)
        );
        match self.sessions.get(&channel) {
            Some(Slot::Relay(s)) => {
                if s.request(request).await {
                    session.channel_success(channel)
                } else {
                    session.channel_failure(channel)
                }
            }
            // The message comes with the shell or command; setup requests pass.
            Some(Slot::Failed(message)) if starts => {
                let message = message.clone();
                Self::fail_channel(session, channel, &message)
            }
            Some(Slot::Failed(_)) => session.channel_success(channel),
            None => session.channel_failure(channel),
        }
    }

    fn relayed(&self, channel: ChannelId) -> Option<&relay::Session> {
        match self.sessions.get(&channel) {
            Some(Slot::Relay(s)) => Some(s),
            _ => None,
        }
    }
}

fn same_key(stored: &str, offered: &PublicKey) -> bool {
    PublicKey::from_openssh(stored).is_ok_and(|k| k.key_data() == offered.key_data())
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, offer.public_key).await {
            Ok(_) => Ok(Auth::Accept),
            Err((refusal, target)) => {
                self.refuse(user, refusal, target).await;
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, key.public_key).await {
            Ok(target) => {
                let fp = crate::ssh::keys::fingerprint(key.public_key);
                let (outcome, detail) = if target.status == RUNNING {
                    (
                        "ok",
                        format!("ssh user {user:?} from {} with key {fp}", self.peer.ip()),
                    )
                } else {
                    (
                        "refused",
                        format!(
                            "ssh user {user:?} from {} with key {fp}: notebook is {}",
                            self.peer.ip(),
                            target.status
                        ),
                    )
                };
                let action = if outcome == "ok" {
                    Action::SshLogin
                } else {
                    Action::SshLoginRefused
                };
                self.audit(
                    &target.owner,
                    action,
                    &target.id,
                    &target.name,
                    outcome,
                    &detail,
                )
                .await;
                let running = target.status == RUNNING;
                let activity = Activity::new(self.state.routes.clone(), &target.id);
                if running {
                    activity.touch();
                }
                self.activity = Some(activity);
                self.login = Some(target);
                if running {
                    // Open the link while the client sets up its channels.
                    drop(self.link());
                }
                Ok(Auth::Accept)
            }
            Err((refusal, target)) => {
                self.refuse(user, refusal, target).await;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        let slot = match self.link().await {
            Ok(link) => {
                let activity = self.activity.clone();
                match activity {
                    Some(activity) => match link.session(channel, session.handle(), activity).await
                    {
                        Ok(s) => Slot::Relay(s),
                        Err(e) => Slot::Failed(format!(
                            "atelier: the notebook's SSH agent refused a session ({e})"
                        )),
                    },
                    None => Slot::Failed("atelier: not logged in".into()),
                }
            }
            Err(message) => Slot::Failed(message),
        };
        self.sessions.insert(id, slot);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Ok(link), Some(activity)) = (self.link().await, self.activity.clone()) else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        tokio::spawn(link.direct_tcpip(
            channel,
            reply,
            host_to_connect.to_owned(),
            port_to_connect,
            (originator_address.to_owned(), originator_port),
            activity,
        ));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(link) = self.link().await else {
            return Ok(false);
        };
        match link.tcpip_forward(address, *port).await {
            Some(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(link) = self.link().await else {
            return Ok(false);
        };
        Ok(link.cancel_tcpip_forward(address, port).await)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = Request::Pty {
            term,
            cols: col_width,
            rows: row_height,
            px_width: pix_width,
            px_height: pix_height,
            modes,
        };
        self.request(channel, request, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(
            channel,
            Request::Env(variable_name, variable_value),
            session,
        )
        .await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Exec(data), session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Subsystem(name), session)
            .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(s) = self.relayed(channel) {
            s.window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(s) = self.relayed(channel) {
            s.signal(signal).await;
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(s) = self.relayed(channel) {
            s.data(Bytes::copy_from_slice(data)).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(s) = self.relayed(channel) {
            s.eof().await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(Slot::Relay(s)) = self.sessions.remove(&channel) {
            s.close().await;
        }
        Ok(())
    }
}
