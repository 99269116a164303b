//! The Wasm component host for Atelier plugins: workflow steps, training algorithms and
//! inference pre/post-processors, written against the WIT contracts in `wit/`.
//!
//! - [`Host::register`]: bytes → sha256 digest → type check (one of our worlds, no imports
//!   we do not grant) → compile once, stored on disk by digest and engine settings →
//!   pre-instantiated in memory.
//! - Calls ([`Host::prepost`], [`Host::run_step`], [`Host::train`], [`Host::invoke`]) run on
//!   a fresh instance from the pooling allocator or a warm one, under the plugin's limits
//!   (memory, deadline, output size, concurrency), with nothing from the host granted but
//!   what the call names; every limit hit is a [`CallError::Limit`]. The deadline bounds wasm
//!   code (epoch interruption) and every host call a guest can wait in ([`waits`]).
//! - [`Host::train_run`] ([`training`]): a training job's run of `train`, on a fresh
//!   instance, under the run's time limit instead of the call deadline, stopped through a
//!   [`TrainWatch`] (interrupted after a grace) that also shows what the guest reports while
//!   it runs.

// Tests may spawn freely and read the environment (clippy.toml forbids both elsewhere).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod bindings;
pub mod calls;
pub mod dto;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod host;
pub mod limits;
pub mod locks;
pub mod state;
pub mod storage;
pub mod tensors;
pub mod training;
pub mod waits;
pub mod world;

pub use host::{
    CallContext, CallReport, Host, InstanceUse, KeyGuard, LoadSource, PluginRef, RegisterError,
    Registered, Timings,
};
pub use limits::{CallError, HostSettings, InstancePolicy, LimitKind, Limits, LimitsSpec};
pub use training::{
    Drained, FailureKind, Liveness, StopReason, TrainOutcome, TrainReport, TrainRun, TrainWatch,
    WatchLimits,
};
pub use wasmtime;
pub use world::World;
