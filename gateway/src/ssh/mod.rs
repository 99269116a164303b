//! SSH: user key pairs, notebook whitelists and the gateway host key; the SSH front door
//! (server: who may log in where in `login`, failed logins in `failures`, relay into
//! notebooks) builds on them.
//!
//! The front door gets what it uses in one [`SshDoor`] (the store, the backend, the route table,
//! the activity clocks, the revocation registry), not the HTTP side's state.

pub mod failures;
pub mod host_key;
pub use crate::ssh_keys as keys;
pub mod login;
pub mod ports;
pub mod relay;
pub mod server;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::activity::ActivityClocks;
use crate::auth::revoke::Revocations;
use crate::backends::Backend;
use crate::routing::RouteTable;
use crate::store::Store;

/// The SSH front door: where it listens, who it is, and the services it uses. One pointer,
/// cloned for every connection.
#[derive(Clone)]
pub struct SshDoor(Arc<DoorParts>);

impl std::ops::Deref for SshDoor {
    type Target = DoorParts;
    fn deref(&self) -> &DoorParts {
        &self.0
    }
}

impl SshDoor {
    pub fn new(parts: DoorParts) -> SshDoor {
        SshDoor(Arc::new(parts))
    }
}

pub struct DoorParts {
    pub addr: std::net::SocketAddr,
    pub config: Arc<russh::server::Config>,
    /// Notebooks' own ports.
    pub ports: ports::Ports,
    /// Cancelled at shutdown: every SSH listener and session ends.
    pub stop: CancellationToken,
    /// `SHA256:…` of the host key.
    pub fingerprint: String,
    /// The host key's public half, one OpenSSH line (for `known_hosts`).
    pub public_key: String,
    /// Failed logins before authentication, per client address: throttle and audit rows.
    pub failures: Arc<failures::Failures>,
    pub store: Store,
    /// Opens the link to a notebook's agent.
    pub backend: Arc<dyn Backend>,
    /// Whether a notebook is still running, cached.
    pub routes: RouteTable,
    /// SSH traffic counts as activity.
    pub activity: ActivityClocks,
    /// Cuts sessions whose user, key or notebook is revoked.
    pub revocations: Revocations,
}
