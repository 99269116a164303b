//! Atelier's gateway: the control plane and front door for notebooks.
//!
//! ```text
//!  browser / CLI ──HTTP──► api (axum) ──► auth ──► notebooks (lifecycle) ──► backends
//!                 └─/nb/─► proxy ──► auth ──► authz ──► routes ──► Jupyter server
//!                                      store (SQLite): state + events + audit
//! ```
//!
//! See the repository's ARCHITECTURE.md for the flows and where to add things.

// Tests may spawn freely and read the environment (clippy.toml forbids both elsewhere).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod activity;
pub mod api;
pub mod auth;
pub mod backends;
pub mod batch;
pub mod cache;
// The CLI is a client: its settings are its environment (profiles, AWS_*, caches), and its
// tasks end with the command.
#[allow(clippy::disallowed_methods)]
pub mod cli;
pub mod config;
pub mod confined;
pub mod error;
pub mod gpu;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod models;
pub mod notebooks;
pub mod notify;
pub mod object_storage;
pub mod plugins;
pub mod procs;
pub mod proxy;
pub mod routing;
pub mod secrets;
pub mod server;
pub mod serving;
pub mod ssh;
pub mod ssh_keys;
pub mod store;
pub mod training;
pub mod upstream;
pub mod urls;
pub mod whitelist;
pub mod workflows;

#[cfg(test)]
mod layers;
