//! A hyperparameter search's statuses and the operations its owner asks for (spec/training.md
//! §1.4, §2.10; Katib's experiment), and its trials' statuses.
//!
//! ```text
//! create ─► PENDING ──its runner starts──► RUNNING
//!    RUNNING ──every trial ended, one with an objective──► COMPLETED (the best trial)
//!    RUNNING ──every trial failed──► FAILED
//!    PENDING | RUNNING ──stop──► STOPPING ──its trials stopped──► STOPPED
//! any but STOPPING, DELETING ──delete──► DELETING ──trial jobs deleted──► (gone)
//! ```
//!
//! PENDING, RUNNING, STOPPING and DELETING are transient: a restarted gateway runs the
//! search on from its stored trials (never creating a trial number twice), and finishes
//! stops and deletes.

use super::Operation;

crate::status_enum! {
    /// A search's status.
    pub enum SearchStatus in status {
        /// Created; its runner has not started.
        Pending = "PENDING" as PENDING,
        Running = "RUNNING" as RUNNING,
        /// Ended with a best trial.
        Completed = "COMPLETED" as COMPLETED,
        /// Every trial failed (or reported no objective).
        Failed = "FAILED" as FAILED,
        Stopping = "STOPPING" as STOPPING,
        Stopped = "STOPPED" as STOPPED,
        Deleting = "DELETING" as DELETING,
    }
}

crate::status_enum! {
    /// One trial of a search: a training job with the sampled parameters.
    pub enum TrialStatus in trial {
        /// Numbered and sampled; its job is being created.
        Creating = "CREATING" as CREATING,
        /// Its job is under way.
        Running = "RUNNING" as RUNNING,
        /// Its job completed and reported the objective.
        Completed = "COMPLETED" as COMPLETED,
        /// Its job failed, could not be created, or reported no objective.
        Failed = "FAILED" as FAILED,
        /// Stopped by the median rule.
        EarlyStopped = "EARLY_STOPPED" as EARLY_STOPPED,
        /// Stopped with its search (or its job stopped by hand).
        Stopped = "STOPPED" as STOPPED,
    }
}

use status::*;

impl SearchStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, COMPLETED | FAILED | STOPPED)
    }
}

impl TrialStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, TrialStatus::Creating | TrialStatus::Running)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOp {
    Stop,
    Delete,
}

impl Operation for SearchOp {
    type Status = SearchStatus;
    const KIND: &'static str = "training search";
    const ALL: &'static [Self] = &[Self::Stop, Self::Delete];

    fn verb(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Delete => "delete",
        }
    }

    fn allowed_from(self) -> &'static [SearchStatus] {
        match self {
            Self::Stop => &[PENDING, RUNNING],
            // A search under way is stopped first.
            Self::Delete => &[PENDING, RUNNING, COMPLETED, FAILED, STOPPED],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_search_transition_table() {
        assert_eq!(
            SearchStatus::ALL,
            [
                PENDING, RUNNING, COMPLETED, FAILED, STOPPING, STOPPED, DELETING
            ]
        );
        #[rustfmt::skip]
        let expected = [
            //                 PEN RUN COM FAI STG STD DEL
            (SearchOp::Stop,   [1,  1,  0,  0,  0,  0,  0]),
            (SearchOp::Delete, [1,  1,  1,  1,  0,  1,  0]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                SearchStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<SearchOp>(), want);
        assert_eq!(
            SearchOp::Stop.check("s", COMPLETED).unwrap_err().message,
            "cannot stop training search s while it is COMPLETED; allowed when it is PENDING, RUNNING"
        );
        assert!(STOPPED.is_terminal() && !STOPPING.is_terminal());
        assert!(TrialStatus::EarlyStopped.is_terminal() && !TrialStatus::Running.is_terminal());
    }
}
