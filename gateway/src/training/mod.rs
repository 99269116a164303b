//! Training (spec/training.md): for now its algorithm assets (§1.2, §2.1), the recipes a
//! training job runs. Jobs, their runner, restarts and search come next (issue 18).
//!
//! ```text
//! POST /v1/algorithms ─► name, description checked ─► kind:
//!   wasm       plugin {name, version} of world training-algorithm (crate::plugins)
//!              └─ describe() through the plugin host, under the plugin's limits
//!                 └─ its hyperparameters, inputs, outputs, metrics checked (schema.rs)
//!   container  image (none: the notebook environment on the process backend),
//!              code dir on object storage through one of the caller's connections
//!              (listed: it exists, ≤1,000 entries, depth ≤32, ≤5 GiB, holds the boot
//!              file), boot file (.py) xor boot command, channels, hyperparameters
//! ─► one transaction: the name free (409), the quota, the row and its audit row
//! ```
//!
//! `GET /v1/algorithms/{algo}/runtime` shows what a job of it will see (`runtime.rs`: the
//! same function the job runner will use). An algorithm a training job uses cannot be
//! deleted ([`jobs_using_algorithm`]); a plugin an algorithm runs cannot be deleted either.
//!
//! Hyperparameter searches (`search.rs`, `search_runner.rs`, `samplers.rs`) run trials of a
//! job template as training jobs of their owner.

pub mod algorithms;
pub mod joblogs;
pub mod jobs;
pub mod launch;
pub(crate) mod runner;
pub mod runtime;
pub mod samplers;
pub mod schema;
pub mod search;
mod search_runner;
mod wake;

use crate::store::Conn;

/// What an algorithm request fails with.
pub type AlgorithmError = crate::error::ResourceError;

/// The training jobs (their names) that use the algorithm `algorithm_id`: while there is
/// any, the algorithm cannot be deleted (asked inside the delete's transaction).
pub async fn jobs_using_algorithm(tx: &mut Conn, algorithm_id: &str) -> sqlx::Result<Vec<String>> {
    jobs::using_algorithm(tx, algorithm_id).await
}
