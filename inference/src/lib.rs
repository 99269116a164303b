//! Inference without the gateway: what a model package must hold and what its
//! `config.json` may say (`package`, `config`), the create form's names (`names`), and the
//! engines that run a model in the gateway's own process (`tensor`, and the ONNX engine).
//!
//! Importing a model, as the gateway drives these checks:
//!
//! ```text
//! form ──► names::validate_model_name, validate_version, sanitize_start_command
//! source listing [(path, size)] ──► package::PackageLayout::check ──► PackageLayout
//! bytes of model/config.json ──► config::ModelConfig::parse ──► ParsedConfig {config, warnings}
//!                                  └─► config.refusals() (fail the import with the seed's event)
//! ```
//!
//! Nothing here touches the database, the network or a user's files: the gateway reads a
//! package into memory or a staging directory of its own and hands it to these checks.

pub mod config;
pub mod names;
pub mod onnx;
pub mod package;
pub mod tensor;
