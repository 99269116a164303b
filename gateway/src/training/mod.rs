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

pub mod algorithms;
pub mod runtime;
pub mod schema;

use crate::error::{DomainError, Error, Kind};
use crate::store::Conn;

/// What an algorithm request fails with.
#[derive(Debug, thiserror::Error)]
pub enum AlgorithmError {
    /// A field of the request is wrong (the message names it), or the component is.
    #[error("{0}")]
    Invalid(String),
    /// No such algorithm of the caller's.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, or the algorithm is in use.
    #[error("{0}")]
    Conflict(String),
    /// A shared check refused: the plugin registry, the quota, the store.
    #[error("{}", .0.message)]
    Common(#[from] Error),
    /// Ours: logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for AlgorithmError {
    fn kind(&self) -> Kind {
        match self {
            AlgorithmError::Invalid(_) => Kind::Invalid,
            AlgorithmError::NotFound(_) => Kind::NotFound,
            AlgorithmError::Conflict(_) => Kind::Conflict,
            AlgorithmError::Common(e) => e.kind,
            AlgorithmError::Internal(_) => Kind::Internal,
        }
    }
}

crate::domain_error!(AlgorithmError, common: Common, internal: Internal);

/// The training jobs (their names) that use the algorithm `algorithm_id`: while there is
/// any, the algorithm cannot be deleted. The hook of the jobs module, which does not exist
/// yet: no job can use an algorithm, so this answers none. The jobs module answers here
/// from its own table, inside the caller's transaction.
pub async fn jobs_using_algorithm(
    _tx: &mut Conn,
    _algorithm_id: &str,
) -> sqlx::Result<Vec<String>> {
    Ok(Vec::new())
}
