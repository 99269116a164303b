//! Atelier's gateway: the control plane and front door for notebooks.
//!
//! ```text
//!  browser / CLI ──HTTP──► api (axum) ──► auth ──► notebooks (lifecycle) ──► backends
//!                 └─/nb/─► proxy ──► auth ──► authz ──► routes ──► Jupyter server
//!                                      store (SQLite): state + events + audit
//! ```
//!
//! See the repository's ARCHITECTURE.md for the flows and where to add things.

pub mod activity;
pub mod api;
pub mod auth;
pub mod backends;
pub mod cache;
pub mod cli;
pub mod config;
pub mod confined;
pub mod error;
pub mod gpu;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod notebooks;
pub mod plugins;
pub mod procs;
pub mod proxy;
pub mod routing;
pub mod secrets;
pub mod server;
pub mod ssh;
pub mod ssh_keys;
pub mod storage;
pub mod store;
pub mod urls;
pub mod whitelist;

#[cfg(test)]
mod layers;
