//! The SSH front door: one port for all notebooks, where the user name picks the notebook
//! (its name or id) among the notebooks of the user who holds the offered key, and each SSH
//! notebook's own port, where the user is `ma-user`. It authenticates with the notebooks' key
//! pairs (`ssh::login` has the rules), checks the whitelist, throttles and records refusals
//! (`ssh::failures`), records every login in the audit log, relays the channels into the
//! notebook (`ssh::relay`), and closes a connection when what let it in is revoked
//! (`auth::revoke`).
//!
//! ```text
//! client ──TCP──► accept ──► throttled? ──► handshake (host key: ssh::host_key) ──► publickey
//!                   login::resolve(door, user, key) ──► Login | refusal (failures, audit)
//!        ──► logged in: registered for revocation (user, notebook, key pair)
//!        ──► to a RUNNING notebook: link to its agent opened in the background
//!        ◄──► channels: session, direct-tcpip, tcpip-forward relayed over the link
//!        ◄── revoked (notebook stopped, key pair removed, ...): disconnect with the reason
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Sig};

use crate::auth::revoke::{Registration, Subject, Watch};
use crate::notebooks::status::RUNNING;
use crate::ssh::SshDoor;
use crate::ssh::failures::{Failures, Verdict};
use crate::ssh::login::{self, Concerned, Denied, Door, Login, Refusal};
use crate::ssh::relay::{self, Activity, Link, Request};
use crate::store::audit::{self, Action, Target};
use crate::store::notebooks::{self as rows, SshLookup, SshTarget};
use crate::whitelist;

pub use crate::ssh::login::MA_USER;

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
pub async fn serve(door: SshDoor, listener: tokio::net::TcpListener, notebook: Option<String>) {
    let sessions = tokio_util::task::TaskTracker::new();
    let (config, stop, failures) = (
        door.config.clone(),
        door.stop.clone(),
        door.failures.clone(),
    );
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
        // An address that failed too often in its window: closed before the key exchange.
        if let Some(verdict) = failures.admit(peer.ip(), Instant::now()) {
            drop(tcp);
            tracing::debug!(%peer, "SSH connection throttled");
            if verdict == Verdict::Record {
                let door = door.clone();
                // Tracked with the sessions, so a shutdown waits for the audit row.
                sessions.spawn(async move { audit_throttled(&door, peer).await });
            }
            continue;
        }
        // russh applies its `nodelay` setting only in its own accept loop; without it the
        // last packets of an exchange wait ~40 ms for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let front = Arc::new(OnceLock::new());
        let watch = Watch::new();
        let mut handler = Conn {
            door: door.clone(),
            failures: failures.clone(),
            peer,
            notebook: notebook.clone(),
            login: None,
            watch: watch.clone(),
            _registration: None,
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
                Err(OwnPort::Store(e)) => {
                    tracing::error!(notebook = %id, %peer, error = %e, "SSH connection refused: the store failed");
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
            let goodbye = tokio::select! {
                r = session => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "SSH session ended with an error");
                    }
                    return;
                }
                _ = stop.cancelled() => "the gateway is shutting down".to_owned(),
                why = watch.revoked() => {
                    tracing::info!(%peer, reason = why.as_str(), "SSH connection cut: access revoked");
                    format!("atelier: the session ended: {}", why.as_str())
                }
            };
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, goodbye, "en".into())
                .await;
        });
    }
    sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
}

/// The audit row that says an address is throttled (the first of its window).
async fn audit_throttled(door: &SshDoor, peer: SocketAddr) {
    let detail = format!(
        "ssh from {}: {} ({} failed logins in {} s); its connections are closed unanswered until the window ends",
        crate::ssh::failures::Peer::of(peer.ip()),
        Refusal::Throttled.as_str(),
        crate::ssh::failures::MAX_FAILURES,
        crate::ssh::failures::WINDOW.as_secs()
    );
    tracing::warn!(%peer, "SSH logins throttled: too many failures");
    let result = async {
        let mut conn = door.store.pool.acquire().await?;
        let ip = peer.ip().to_string();
        audit::record(
            &mut conn,
            "-",
            Action::SshLoginRefused,
            Target {
                kind: "peer",
                id: &ip,
                name: &ip,
            },
            "refused",
            Some(&detail),
        )
        .await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "recording a throttled SSH address in the audit log failed");
    }
}

enum OwnPort {
    Gone,
    Refused(Refusal, Option<Concerned>),
    Store(sqlx::Error),
}

/// One client connection.
struct Conn {
    door: SshDoor,
    failures: Arc<Failures>,
    peer: SocketAddr,
    /// Set on a notebook's own port.
    notebook: Option<String>,
    login: Option<SshTarget>,
    /// Fires when what let this connection in is revoked; the session task selects on it.
    watch: Watch,
    /// Held while logged in, for its `Drop`: this connection's place in the revocation
    /// registry, left when the connection ends.
    _registration: Option<Registration>,
    /// Refusals already counted on this connection (a client tries each of its keys in
    /// turn).
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
        let targets = async {
            let mut conn = self.door.store.pool.acquire().await?;
            rows::ssh_targets(&mut conn, SshLookup::Notebook(id)).await
        }
        .await
        .map_err(OwnPort::Store)?;
        let Some(t) = targets.into_iter().find(|t| t.id == id) else {
            return Err(OwnPort::Gone);
        };
        if !whitelist::allows(&t.whitelist, self.peer.ip()) {
            return Err(OwnPort::Refused(Refusal::NotWhitelisted, Some(t.into())));
        }
        Ok(())
    }

    /// The login `user` with `key` gets from this peer at this door.
    async fn check(&self, user: &str, key: &PublicKey) -> Result<Login, Denied> {
        let door = match &self.notebook {
            Some(id) => Door::Own(id),
            None => Door::Shared,
        };
        let fingerprint = crate::ssh::keys::fingerprint(key);
        let mut conn = self.door.store.pool.acquire().await?;
        login::resolve(&mut conn, door, user, &fingerprint, self.peer.ip()).await
    }

    /// Answers a denied login: a refusal is counted (and audited, the first of its kind per
    /// address and window); a store failure is logged as the gateway's error.
    async fn deny(&mut self, user: &str, denied: Denied) {
        match denied {
            Denied::Refused(refusal, target) => self.refuse(user, refusal, target).await,
            Denied::Store(e) => {
                tracing::error!(peer = %self.peer, user, error = %e, "SSH login refused: the store failed");
            }
        }
    }

    async fn refuse(&mut self, user: &str, refusal: Refusal, target: Option<Concerned>) {
        if !self.audited.insert((user.to_owned(), refusal)) {
            return;
        }
        let verdict = self
            .failures
            .failed(self.peer.ip(), refusal, user, Instant::now());
        if verdict == Verdict::Counted {
            tracing::debug!(peer = %self.peer, user, reason = refusal.as_str(), "SSH login refused (counted)");
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
            let mut conn = self.door.store.pool.acquire().await?;
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
                    #[allow(clippy::disallowed_methods)]
                    // kept in the connection (its result is shared); ends with it
                    let task = tokio::spawn(relay::open(
                        self.door.clone(),
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

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, offer.public_key).await {
            Ok(_) => Ok(Auth::Accept),
            Err(denied) => {
                self.deny(user, denied).await;
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let since = Instant::now();
        let Login {
            target,
            key_pair_id,
        } = match self.check(user, key.public_key).await {
            Ok(login) => login,
            Err(denied) => {
                self.deny(user, denied).await;
                return Ok(Auth::reject());
            }
        };
        // From now on, revoking the user, the notebook or the key pair (on it) cuts this
        // connection (a revocation since `since` at once).
        self._registration = Some(self.door.revocations.register(
            self.watch.clone(),
            vec![
                Subject::User(target.owner_id.clone()),
                Subject::Notebook(target.id.clone()),
                Subject::KeyPair(key_pair_id.clone()),
                Subject::NotebookKeyPair(target.id.clone(), key_pair_id),
            ],
            since,
        ));
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
        let activity = Activity::new(
            self.door.routes.clone(),
            self.door.activity.clone(),
            &target.id,
        );
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
        #[allow(clippy::disallowed_methods)] // ends with the forwarded channel
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
