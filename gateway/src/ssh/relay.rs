//! Relaying a user's SSH channels to the notebook's SSH agent (`notebook-runtime`).
//!
//! ```text
//! user ──SSH──► front door (ssh::server::Conn) ──link: SSH over a unix socket──► agent
//!   session channel  requests answered in order: forwarded, the agent's reply awaited
//!                    input  ─► queue ─► writer task ─► agent channel
//!                    output ◄─ reader task ◄─ agent channel (data, stderr, exit, close)
//!   direct-tcpip     both channels as byte streams, copied both ways
//!   tcpip-forward    forwarded to the agent; its forwarded-tcpip channels come back here
//! ```
//!
//! One link per user connection, opened when the user logs in to a running notebook and
//! authenticated with the notebook's link key (made per launch, never shown to anyone).
//! The link is opened by `backends::agent` (a local one negotiates the `none` cipher: no
//! second encryption).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use russh::client;
use russh::server::{self, ChannelOpenHandle};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::activity::{ActivityClocks, Source};
use crate::backends::{Handle as BackendHandle, agent};
use crate::notebooks::status::RUNNING;
use crate::routing::RouteTable;
use crate::ssh::SshDoor;
use crate::store::notebooks as rows;

/// How long opening the link may take before the user is told.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Input chunks queued per channel before the user's connection waits for the notebook.
const INPUT_QUEUE: usize = 256;

/// Told to a session ended by the notebook stopping.
const STOPPED_NOTE: Bytes =
    Bytes::from_static(b"\r\natelier: the session ended: the notebook stopped or restarted\r\n");

/// An open link to one notebook's agent.
pub struct Link {
    handle: client::Handle<LinkClient>,
}

/// The agent's side calls back here to open `forwarded-tcpip` channels to the user.
struct LinkClient {
    front: server::Handle,
    activity: Activity,
}

impl client::Handler for LinkClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // The socket sits in the notebook's run dir, which only the gateway and that
        // notebook reach; the notebook is its owner's own.
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let front = self.front.clone();
        let activity = self.activity.clone();
        let (address, origin) = (connected_address.to_owned(), originator_address.to_owned());
        #[allow(clippy::disallowed_methods)] // ends with the forwarded channel
        tokio::spawn(async move {
            match front
                .channel_open_forwarded_tcpip(address, connected_port, origin, originator_port)
                .await
            {
                Ok(user) => {
                    reply.accept().await;
                    activity.touch();
                    bridge(user, channel).await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
        Ok(())
    }
}

/// Counts SSH traffic as notebook activity, at most once a second.
#[derive(Clone)]
pub struct Activity {
    routes: RouteTable,
    clocks: ActivityClocks,
    notebook_id: Arc<str>,
    last: Arc<AtomicI64>,
}

impl Activity {
    pub fn new(routes: RouteTable, clocks: ActivityClocks, notebook_id: &str) -> Activity {
        Activity {
            routes,
            clocks,
            notebook_id: notebook_id.into(),
            last: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Whether the notebook is still RUNNING (not stopping, stopped or gone).
    async fn notebook_running(&self) -> bool {
        matches!(self.routes.get(&self.notebook_id).await, Ok(Some(r)) if r.status == RUNNING)
    }

    pub fn touch(&self) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if self.last.swap(now, Ordering::Relaxed) != now {
            self.clocks.touch_notebook(&self.notebook_id, Source::Ssh);
        }
    }
}

/// Opens the link to a running notebook's agent. The error is the text the user sees.
pub async fn open(
    door: SshDoor,
    notebook_id: String,
    front: server::Handle,
    activity: Activity,
) -> Result<Arc<Link>, String> {
    let unavailable =
        |why: String| format!("atelier: cannot open a session in the notebook: {why}");
    let row =
        {
            let mut conn =
                door.store.pool.acquire().await.map_err(|e| {
                    unavailable(format!("the gateway's store is unavailable ({e})"))
                })?;
            rows::get(&mut conn, &notebook_id)
                .await
                .map_err(|e| unavailable(format!("the gateway's store is unavailable ({e})")))?
        };
    let Some(row) = row else {
        return Err("atelier: the notebook no longer exists".into());
    };
    if row.status != RUNNING {
        return Err(format!(
            "atelier: notebook {} is {}, not RUNNING; start it first (atelier notebook start {})",
            row.name, row.status, row.name
        ));
    }
    let handle: BackendHandle = row
        .handle
        .clone()
        .ok_or_else(|| unavailable("it has no runtime handle yet; try again in a moment".into()))?;
    let link = door
        .backend
        .ssh_link(&handle)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let connect = async {
        let handle = agent::connect(link, LinkClient { front, activity }).await?;
        Ok(Arc::new(Link { handle }))
    };
    match tokio::time::timeout(LINK_TIMEOUT, connect).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(unavailable(format!(
            "its SSH agent did not answer within {} s",
            LINK_TIMEOUT.as_secs()
        ))),
    }
}

impl Link {
    pub async fn tcpip_forward(&self, address: &str, port: u32) -> Option<u32> {
        self.handle.tcpip_forward(address, port).await.ok()
    }

    pub async fn cancel_tcpip_forward(&self, address: &str, port: u32) -> bool {
        self.handle
            .cancel_tcpip_forward(address, port)
            .await
            .is_ok()
    }

    /// Opens a `direct-tcpip` channel from inside the notebook and relays `user` to it.
    pub async fn direct_tcpip(
        self: Arc<Self>,
        user: Channel<server::Msg>,
        reply: ChannelOpenHandle,
        host: String,
        port: u32,
        originator: (String, u32),
        activity: Activity,
    ) {
        match self
            .handle
            .channel_open_direct_tcpip(host, port, originator.0, originator.1)
            .await
        {
            Ok(agent) => {
                reply.accept().await;
                activity.touch();
                bridge(user, agent).await;
            }
            Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
        }
    }

    /// Opens the agent's side of a session channel and starts relaying its output to the
    /// user's side.
    pub async fn session(
        &self,
        user: Channel<server::Msg>,
        front: server::Handle,
        activity: Activity,
    ) -> Result<Session, russh::Error> {
        let agent = self.handle.channel_open_session().await?;
        let user_id = user.id();
        // Requests and input arrive through the handler's callbacks; only the write half
        // of the user's channel is kept (its reader would fill up unread).
        let (_, user_out) = user.split();
        let (agent_in, agent_out) = agent.split();
        let agent_out = Arc::new(agent_out);
        let (replies_tx, replies_rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let exec = Arc::new(AtomicBool::new(false));
        #[allow(clippy::disallowed_methods)] // ends with the channel
        tokio::spawn(feed(agent_out.clone(), input_rx, activity.clone()));
        #[allow(clippy::disallowed_methods)] // ends with the channel
        tokio::spawn(pump(
            agent_in,
            user_out,
            front,
            user_id,
            replies_rx,
            activity.clone(),
            exec.clone(),
        ));
        Ok(Session {
            agent: agent_out,
            replies: replies_tx,
            input: input_tx,
            exec,
            activity,
        })
    }
}

enum Input {
    Data(Bytes),
    Eof,
}

/// The gateway's view of one relayed session channel.
pub struct Session {
    agent: Arc<ChannelWriteHalf<client::Msg>>,
    /// Waiters for the agent's replies to requests, in order.
    replies: mpsc::UnboundedSender<oneshot::Sender<bool>>,
    input: mpsc::Sender<Input>,
    /// An `exec` command runs on this channel (counted as work until it ends, even when
    /// silent; an idle shell is not).
    exec: Arc<AtomicBool>,
    activity: Activity,
}

/// A channel request relayed to the agent.
pub enum Request<'a> {
    Pty {
        term: &'a str,
        cols: u32,
        rows: u32,
        px_width: u32,
        px_height: u32,
        modes: &'a [(russh::Pty, u32)],
    },
    Env(&'a str, &'a str),
    Shell,
    Exec(&'a [u8]),
    Subsystem(&'a str),
}

impl Session {
    /// Sends a request and waits for the agent's answer (requests are answered in order,
    /// so each reply reaches the user paired with the request it answers).
    pub async fn request(&self, request: Request<'_>) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.replies.send(tx).is_err() {
            return false;
        }
        let a = &self.agent;
        let is_exec = matches!(request, Request::Exec(_));
        let sent = match request {
            Request::Pty {
                term,
                cols,
                rows,
                px_width,
                px_height,
                modes,
            } => {
                a.request_pty(true, term, cols, rows, px_width, px_height, modes)
                    .await
            }
            Request::Env(name, value) => a.set_env(true, name, value).await,
            Request::Shell => a.request_shell(true).await,
            Request::Exec(command) => a.exec(true, command.to_vec()).await,
            Request::Subsystem(name) => a.request_subsystem(true, name).await,
        };
        if sent.is_err() {
            return false;
        }
        let ok = rx.await.unwrap_or(false);
        if ok && is_exec && !self.exec.swap(true, Ordering::Relaxed) {
            self.activity
                .clocks
                .ssh_exec_started(&self.activity.notebook_id);
        }
        ok
    }

    pub async fn window_change(&self, cols: u32, rows: u32, px_width: u32, px_height: u32) {
        let _ = self
            .agent
            .window_change(cols, rows, px_width, px_height)
            .await;
    }

    pub async fn signal(&self, signal: russh::Sig) {
        let _ = self.agent.signal(signal).await;
    }

    pub async fn data(&self, data: Bytes) {
        let _ = self.input.send(Input::Data(data)).await;
    }

    pub async fn eof(&self) {
        let _ = self.input.send(Input::Eof).await;
    }

    pub async fn close(&self) {
        let _ = self.agent.close().await;
    }
}

/// User input to the agent, in order, waiting for the agent's window.
async fn feed(
    agent: Arc<ChannelWriteHalf<client::Msg>>,
    mut input: mpsc::Receiver<Input>,
    activity: Activity,
) {
    while let Some(item) = input.recv().await {
        match item {
            Input::Data(data) => {
                activity.touch();
                if agent.data_bytes(data).await.is_err() {
                    break;
                }
            }
            Input::Eof => {
                let _ = agent.eof().await;
            }
        }
    }
    while input.recv().await.is_some() {}
}

/// The agent's side of a session channel back to the user: output, replies, exit, close.
async fn pump(
    mut agent: russh::ChannelReadHalf,
    user: ChannelWriteHalf<server::Msg>,
    front: server::Handle,
    user_id: ChannelId,
    mut replies: mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
    activity: Activity,
    exec: Arc<AtomicBool>,
) {
    let mut eof_pending = false;
    loop {
        let msg = agent.wait().await;
        let Some(msg) = msg else {
            // The link went away without the channel closing: the notebook stopped.
            let _ = user.extended_data_bytes(1, STOPPED_NOTE).await;
            break;
        };
        match msg {
            ChannelMsg::Data { data } => {
                activity.touch();
                if user.data_bytes(data).await.is_err() {
                    break;
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                activity.touch();
                if user.extended_data_bytes(ext, data).await.is_err() {
                    break;
                }
            }
            ChannelMsg::Success | ChannelMsg::Failure => {
                let ok = matches!(msg, ChannelMsg::Success);
                if let Ok(waiter) = replies.try_recv() {
                    let _ = waiter.send(ok);
                }
            }
            // Held back until the exit status: a note about a stopping notebook must come
            // before it (the agent sends its EOF right before the status anyway).
            ChannelMsg::Eof => eof_pending = true,
            ChannelMsg::ExitStatus { exit_status } => {
                if std::mem::take(&mut eof_pending) {
                    let _ = user.eof().await;
                }
                let _ = user.exit_status(exit_status).await;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                // Killed because the notebook is stopping: say so, not just "signal TERM".
                if !activity.notebook_running().await {
                    let _ = user.extended_data_bytes(1, STOPPED_NOTE).await;
                }
                if std::mem::take(&mut eof_pending) {
                    let _ = user.eof().await;
                }
                let _ = front
                    .exit_signal_request(user_id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if eof_pending {
        let _ = user.eof().await;
    }
    if exec.swap(false, Ordering::Relaxed) {
        activity.clocks.ssh_exec_ended(&activity.notebook_id);
    }
    // Requests still waiting get a failure.
    replies.close();
    while let Ok(waiter) = replies.try_recv() {
        let _ = waiter.send(false);
    }
    let _ = user.close().await;
}

/// Copies two byte-stream channels (port forwards) into each other until both are done.
async fn bridge(user: Channel<server::Msg>, agent: Channel<client::Msg>) {
    let mut user = user.into_stream();
    let mut agent = agent.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut user, &mut agent).await;
}
