//! SSH: user key pairs, notebook whitelists and the gateway host key; the SSH front door
//! (server, relay into notebooks) builds on them.

pub mod host_key;
pub mod keys;
pub mod ports;
pub mod relay;
pub mod server;
pub mod whitelist;
