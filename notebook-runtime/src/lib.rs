//! The notebook runtime's launch contract: [`spec::Spec`], what the gateway writes to
//! `spec.json` and the runtime (`src/main.rs`) reads with `--spec`. Both sides use these
//! types, so a field the gateway sets is a field the runtime knows.

pub mod spec;
