//! A batch service's statuses and the operations its owner asks for (spec/inference.md
//! §3.3, seed 9.5, 9.8).
//!
//! ```text
//! deploy ─► DEPLOYING ──model loaded──► RUNNING ──every item done──► COMPLETED
//!              └──────────────┬───────────┘ └──cannot run (load, output)──► FAILED
//!                             └──stop──► STOPPING ──► STOPPED
//! STOPPED | COMPLETED | FAILED ──start──► DEPLOYING   (restart: never)
//! any but DELETING, STOPPING ──delete──► DELETING ──► (gone)
//! ```
//!
//! DEPLOYING, RUNNING, STOPPING and DELETING are transient: a restarted gateway runs the
//! job on from its pending items, finishes the stop or the delete.

use super::Operation;

crate::status_enum! {
    /// A batch service's status.
    pub enum BatchStatus in status {
        /// Its model version is being loaded.
        Deploying = "DEPLOYING" as DEPLOYING,
        /// Its items are being processed.
        Running = "RUNNING" as RUNNING,
        /// Every item is done and the result manifest written.
        Completed = "COMPLETED" as COMPLETED,
        /// The job could not run (the model did not load, the output is not writable).
        Failed = "FAILED" as FAILED,
        Stopping = "STOPPING" as STOPPING,
        Stopped = "STOPPED" as STOPPED,
        Deleting = "DELETING" as DELETING,
    }
}

use status::*;

/// The seed's refusal of a restart, whatever the status (seed 9.8.3).
pub const NO_RESTART: &str = "Batch services cannot be restarted.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    Start,
    Stop,
    /// Never allowed (the seed's batch services have no restart).
    Restart,
    Update,
    Delete,
}

impl Operation for BatchOp {
    type Status = BatchStatus;
    const KIND: &'static str = "batch service";
    const ALL: &'static [Self] = &[
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Update,
        Self::Delete,
    ];

    fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn allowed_from(self) -> &'static [BatchStatus] {
        match self {
            Self::Start => &[STOPPED, COMPLETED, FAILED],
            Self::Stop => &[DEPLOYING, RUNNING],
            Self::Restart => &[],
            // Seed 9.8.4: not while deploying; a running job reads the new settings at its
            // next start.
            Self::Update => &[RUNNING, COMPLETED, FAILED, STOPPED],
            Self::Delete => &[DEPLOYING, RUNNING, COMPLETED, FAILED, STOPPED],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_batch_transition_table() {
        assert_eq!(
            BatchStatus::ALL,
            [
                DEPLOYING, RUNNING, COMPLETED, FAILED, STOPPING, STOPPED, DELETING
            ]
        );
        #[rustfmt::skip]
        let expected = [
            //                  DEP RUN COM FAI STO STD DEL
            (BatchOp::Start,   [0,  0,  1,  1,  0,  1,  0]),
            (BatchOp::Stop,    [1,  1,  0,  0,  0,  0,  0]),
            (BatchOp::Restart, [0,  0,  0,  0,  0,  0,  0]),
            (BatchOp::Update,  [0,  1,  1,  1,  0,  1,  0]),
            (BatchOp::Delete,  [1,  1,  1,  1,  0,  1,  0]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                BatchStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<BatchOp>(), want);
        assert_eq!(
            BatchOp::Start.check("b", DEPLOYING).unwrap_err().message,
            "cannot start batch service b while it is DEPLOYING; allowed when it is STOPPED, COMPLETED, FAILED"
        );
        assert!(BatchOp::Update.check("b", DEPLOYING).is_err());
    }
}
