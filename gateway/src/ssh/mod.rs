//! SSH: user key pairs, notebook whitelists and the gateway host key; the SSH front door
//! (server: who may log in where in `login`, failed logins in `failures`, relay into
//! notebooks) builds on them.

pub mod failures;
pub mod host_key;
pub use crate::ssh_keys as keys;
pub mod login;
pub mod ports;
pub mod relay;
pub mod server;
pub mod whitelist;
