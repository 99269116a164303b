//! The gateway's side of a notebook's agent link: SSH over the [`Endpoint`] a backend
//! gives in its [`SshLink`], authenticated with the notebook's link key (made per launch,
//! never shown to anyone). The SSH front door opens one per user connection and relays the
//! user's channels over it; the file service (`notebooks::files`) keeps one per running
//! notebook and asks the agent to relay `atelier.file`'s connections back over it, so
//! neither needs a path or a port on the notebook's machine.
//!
//! Invariant: the gateway reaches a notebook's agent only through here.

use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::PrivateKeyWithHashAlg;

use super::SshLink;

/// How often an idle link is probed, so a link whose other end vanished is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The link's SSH settings. The agent listens on a unix socket (never a network), so the
/// link negotiates the `none` cipher and MAC: no second encryption on a connection that
/// never leaves the host; the key exchange still proves the gateway's key. A backend that
/// reaches agents over a network needs the agent to listen there with ciphers and the
/// gateway to pin the agent's host key first.
pub fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred: russh::Preferred {
            kex: std::borrow::Cow::Borrowed(&[
                russh::kex::CURVE25519,
                russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
                russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
            ]),
            cipher: std::borrow::Cow::Borrowed(&[russh::cipher::NONE]),
            mac: std::borrow::Cow::Borrowed(&[russh::mac::NONE]),
            ..Default::default()
        },
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE),
        channel_buffer_size: 256,
        ..Default::default()
    })
}

/// Dials the agent and authenticates with the link key. The error is a sentence for the
/// user (or the log) that says what failed.
pub async fn connect<H: client::Handler<Error = russh::Error> + Send + 'static>(
    link: SshLink,
    handler: H,
) -> Result<client::Handle<H>, String> {
    let stream = link.endpoint.dial().await.map_err(|e| {
        format!(
            "the notebook's SSH agent does not answer ({e}); if the notebook was started by an older gateway, stop and start it"
        )
    })?;
    let mut handle = client::connect_stream(config(), stream, handler)
        .await
        .map_err(|e| format!("the notebook's SSH agent failed the handshake ({e})"))?;
    let auth = handle
        .authenticate_publickey(
            "atelier-gateway",
            PrivateKeyWithHashAlg::new(Arc::new(link.key), None),
        )
        .await
        .map_err(|e| format!("the notebook's SSH agent failed the handshake ({e})"))?;
    if !auth.success() {
        return Err(
            "the notebook's SSH agent refused the gateway's key; stop and start the notebook"
                .to_owned(),
        );
    }
    Ok(handle)
}

/// The gateway's side of a link that only runs commands: the agent is the one the backend
/// launched (its socket is the gateway's to reach), so its host key is taken as it is.
struct CommandClient;

impl client::Handler for CommandClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// The most of a command's output [`run`] keeps (its end).
const OUTPUT_KEPT: usize = 4096;

/// Runs `command` with `sh -c` inside what the link leads to (as its user) and returns its
/// exit status (`None`: killed by a signal) and the end of its output, stdout and stderr
/// together; the error says why it could not run.
pub async fn run(link: SshLink, command: &str) -> Result<(Option<u32>, String), String> {
    let client = connect(link, CommandClient).await?;
    let mut channel = client
        .channel_open_session()
        .await
        .map_err(|e| format!("opening a session: {e}"))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("running the command: {e}"))?;
    let (mut out, mut code) = (Vec::new(), None);
    while let Some(msg) = channel.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } | russh::ChannelMsg::ExtendedData { data, .. } => {
                out.extend_from_slice(&data);
                if out.len() > 2 * OUTPUT_KEPT {
                    out.drain(..out.len() - OUTPUT_KEPT);
                }
            }
            russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            _ => {}
        }
    }
    let _ = client
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    let start = out.len().saturating_sub(OUTPUT_KEPT);
    Ok((code, String::from_utf8_lossy(&out[start..]).into_owned()))
}
