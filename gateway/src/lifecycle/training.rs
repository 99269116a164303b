//! A training job's statuses and the operations its owner asks for (spec/training.md §3.1,
//! seed 8.6, 8.11.8).
//!
//! ```text
//! create ─► CREATING ──code, inputs ready──► PENDING ──a slot──► RUNNING
//!    RUNNING ──every worker exit 0──► COMPLETED
//!    RUNNING ──a worker fails, no restart left──► FAILED
//!    RUNNING ──a fault, restarts left──► PENDING (attempt + 1, "…has been restarted.")
//!    CREATING ──the gateway cannot prepare it──► ABNORMAL
//!    CREATING | PENDING | RUNNING ──stop, auto stop──► TERMINATING ──► TERMINATED
//! any but TERMINATING, DELETING ──delete──► DELETING ──► (gone)
//! ```
//!
//! CREATING, PENDING, RUNNING, TERMINATING and DELETING are transient: a restarted gateway
//! finds a RUNNING job's workers again (never starting an attempt twice), queues a PENDING
//! one, prepares a CREATING one again, and finishes stops and deletes.

use super::Operation;

crate::status_enum! {
    /// A training job's status.
    pub enum JobStatus in status {
        /// Its code and inputs are being fetched.
        Creating = "CREATING" as CREATING,
        /// Waiting for a slot (at first, and before each restart).
        Pending = "PENDING" as PENDING,
        Running = "RUNNING" as RUNNING,
        Completed = "COMPLETED" as COMPLETED,
        Failed = "FAILED" as FAILED,
        /// The platform could not run it (its code or inputs could not be fetched, the
        /// backend refused it).
        Abnormal = "ABNORMAL" as ABNORMAL,
        Terminating = "TERMINATING" as TERMINATING,
        Terminated = "TERMINATED" as TERMINATED,
        Deleting = "DELETING" as DELETING,
    }
}

use status::*;

impl JobStatus {
    /// Completed, Failed, Abnormal, Terminated (seed 8.11.8).
    pub fn is_terminal(self) -> bool {
        matches!(self, COMPLETED | FAILED | ABNORMAL | TERMINATED)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOp {
    Stop,
    Delete,
}

impl Operation for JobOp {
    type Status = JobStatus;
    const KIND: &'static str = "training job";
    const ALL: &'static [Self] = &[Self::Stop, Self::Delete];

    fn verb(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Delete => "delete",
        }
    }

    fn allowed_from(self) -> &'static [JobStatus] {
        match self {
            // Seed 8.11.8: only while creating, pending or running.
            Self::Stop => &[CREATING, PENDING, RUNNING],
            // A job under way is stopped first.
            Self::Delete => &[
                CREATING, PENDING, RUNNING, COMPLETED, FAILED, ABNORMAL, TERMINATED,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_training_transition_table() {
        assert_eq!(
            JobStatus::ALL,
            [
                CREATING,
                PENDING,
                RUNNING,
                COMPLETED,
                FAILED,
                ABNORMAL,
                TERMINATING,
                TERMINATED,
                DELETING
            ]
        );
        #[rustfmt::skip]
        let expected = [
            //                 CRE PEN RUN COM FAI ABN TRG TRD DEL
            (JobOp::Stop,     [1,  1,  1,  0,  0,  0,  0,  0,  0]),
            (JobOp::Delete,   [1,  1,  1,  1,  1,  1,  0,  1,  0]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                JobStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<JobOp>(), want);
        assert_eq!(
            JobOp::Stop.check("j", COMPLETED).unwrap_err().message,
            "cannot stop training job j while it is COMPLETED; allowed when it is CREATING, PENDING, RUNNING"
        );
        assert!(TERMINATED.is_terminal() && !RUNNING.is_terminal());
    }
}
