//! A model version's statuses and the operations its owner asks for (spec/inference.md
//! §3.1).
//!
//! ```text
//! IMPORTING ──(files copied by digest, config checked)──► NORMAL
//!     └──(any import failure: an Abnormal event says which)──► FAILED
//! NORMAL | FAILED ──delete (no service uses it)──► DELETING ──► (gone)
//! ```
//!
//! Only a NORMAL version can back a service. A restarted gateway imports an IMPORTING
//! version again from the start (the staging dir is the gateway's own) and finishes a
//! DELETING one.

use super::Operation;

crate::status_enum! {
    /// A model version's status.
    pub enum ModelStatus in status {
        /// Its files are being copied into the model store and checked.
        Importing = "IMPORTING" as IMPORTING,
        /// Ready: services and batch jobs may use it.
        Normal = "NORMAL" as NORMAL,
        /// The import failed; the version's events say why.
        Failed = "FAILED" as FAILED,
        /// Its files are being removed.
        Deleting = "DELETING" as DELETING,
    }
}

use status::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOp {
    /// Deploy it as a real-time or batch service.
    Deploy,
    Delete,
}

impl Operation for ModelOp {
    type Status = ModelStatus;
    const KIND: &'static str = "model version";
    const ALL: &'static [Self] = &[Self::Deploy, Self::Delete];

    fn verb(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Delete => "delete",
        }
    }

    fn allowed_from(self) -> &'static [ModelStatus] {
        match self {
            Self::Deploy => &[NORMAL],
            Self::Delete => &[NORMAL, FAILED],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_model_version_transition_table() {
        assert_eq!(ModelStatus::ALL, [IMPORTING, NORMAL, FAILED, DELETING]);
        #[rustfmt::skip]
        let expected = [
            //               IMP NOR FAI DEL
            (ModelOp::Deploy, [0,  1,  0,  0]),
            (ModelOp::Delete, [0,  1,  1,  0]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                ModelStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<ModelOp>(), want);
        assert_eq!(
            ModelOp::Delete
                .check("iris 0.0.1", IMPORTING)
                .unwrap_err()
                .message,
            "cannot delete model version iris 0.0.1 while it is IMPORTING; allowed when it is NORMAL, FAILED"
        );
    }
}
