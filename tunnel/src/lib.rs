//! The connect-back tunnel: how the gateway reaches a notebook (or an engine instance)
//! whose runtime runs on another machine, such as a Slurm compute node, without reaching
//! any port or path of that machine. The runtime dials the gateway; that one connection
//! carries every stream the gateway opens to it.
//!
//! ```text
//!  gateway                                        node
//!  proxy / SSH front door / file API              atelier-notebook-runtime
//!    └─ Endpoint::Tunnel ─► hub::TunnelHub ◄──TCP── node::run   (dials out, reconnects)
//!                           TLS 1.3 server          pins the gateway's certificate
//!                           checks launch + secret  sends launch id + secret
//!                           HTTP/2 client ────────► HTTP/2 server
//!                           POST /jupyter|/agent|/engine ─► local socket, copied both ways
//! ```
//!
//! [`wire`] is what both ends agree on, [`stream::TunnelStream`] a stream of a session as
//! bytes, [`tls`] the pinned TLS configs; [`hub`] is the gateway's end (feature `gateway`),
//! [`node`] the runtime's.

pub mod node;
pub mod stream;
pub mod tls;
pub mod wire;

#[cfg(feature = "gateway")]
pub mod hub;
#[cfg(feature = "gateway")]
pub mod identity;

pub use stream::TunnelStream;
pub use wire::{ConnectBack, Fingerprint, LaunchId, SecretHash, Target};

use std::time::Duration;

/// Pings every `every` and returns when a ping is not answered within `every` (or the
/// connection cannot ping): the session is then taken as dead.
pub(crate) async fn keepalive(pings: Option<h2::PingPong>, every: Duration) {
    let Some(mut pings) = pings else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}
