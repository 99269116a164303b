//! Workflows (issue 19, spec/workflow.md): DAGs of steps with parameters, storages and
//! branches. This module is the pure layer: the definition and what can be decided from it
//! without a database, a clock or a network.
//!
//! ```text
//! JSON | YAML ─► definition::parse ─► Workflow (typed; shapes checked, field named)
//!             ─► validate::validate ─► names, limits, DAG (cycles named), references,
//!                                       ancestors, branches, placeholder types
//!             ─► canonical_json / digest (a changed definition = a new version)
//! run request ─► params::resolve_parameters / resolve_storages ─► RunValues
//! each step   ─► dag::plan (statuses so far ─► runnable | skipped | failed)
//!             ─► params::resolve_step (references substituted, directories to create)
//! condition   ─► condition::evaluate_all (parameters, metrics given as numbers)
//! ```
//!
//! [`load`] is parse + normalise + validate: what `POST /v1/workflows` calls.

pub mod condition;
pub mod cron;
pub mod dag;
pub mod definition;
pub mod params;
pub mod runner;
pub mod runs;
pub mod schedule;
pub mod schema;
pub mod service;
pub mod triggers;
pub mod validate;

use serde::Serialize;

pub use condition::{Condition, ConditionType, Facts, MetricRef, Operand};
pub use dag::{Plan, SkipReason, StepOutcome};
pub use definition::{Format, Step, StepKind, StepType, Workflow};
pub use params::{Produced, ResolvedStep, RunValues, Scope};

/// A definition (or run input) refused: the field (`steps[3] (train).properties.flavor`,
/// `parameters[0] (lr).default`, `name`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

impl DefinitionError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
        DefinitionError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses, normalises (identical repeated parameters become one, AC-05) and validates a
/// definition. Every problem found is returned, each naming its field.
pub fn load(bytes: &[u8], format: Format) -> Result<Workflow, Vec<DefinitionError>> {
    let mut wf = definition::parse(bytes, format).map_err(|e| vec![e])?;
    validate::normalize(&mut wf);
    validate::validate(&wf)?;
    Ok(wf)
}

#[cfg(test)]
mod tests;
