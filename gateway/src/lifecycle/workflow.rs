//! A workflow run's statuses, its steps' statuses, and the operations its owner asks for
//! (spec/workflow.md §3.1, §3.2; the seed's phases and execution records, seed 5.2).
//!
//! ```text
//! a run:  start ─► RUNNING (one active run per workflow; a new record, a new number)
//!    RUNNING ──a step waits for delayed input──► AWAITING_INPUT ──proceed──► RUNNING
//!    RUNNING ──every step ended, none failed──► COMPLETED (the seed's "Executed")
//!    RUNNING ──a step failed, nothing else can run──► FAILED ──retry a step──► RUNNING
//!    RUNNING | AWAITING_INPUT ──stop──► STOPPING ──its jobs and services stopped──► STOPPED
//!    COMPLETED | FAILED | STOPPED ──delete the record──► (gone)
//!
//! a step: PENDING ──its dependencies ended──► RUNNING, or SKIPPED (the other branch of a
//!         condition, its skip conditions, or every dependency skipped), or
//!         AWAITING_INPUT (a delayed parameter without a value) ──proceed──► RUNNING
//!    RUNNING ──done──► COMPLETED · ──an error, or past max_execution_minutes──► FAILED
//!    RUNNING | AWAITING_INPUT ──stop──► STOPPING ──► STOPPED
//!    FAILED | STOPPED ──retry──► PENDING (the same run; finished steps are not run again)
//! ```
//!
//! A run's RUNNING, AWAITING_INPUT and STOPPING are transient: a restarted gateway goes on
//! with it from its stored steps, never running a finished step again nor one step twice
//! at once. A step downstream of a failed one stays PENDING, so a retry resumes it.

use super::Operation;

crate::status_enum! {
    /// A workflow run's status (the seed's execution record).
    pub enum RunStatus in status {
        Running = "RUNNING" as RUNNING,
        /// A step waits for values given with proceed.
        AwaitingInput = "AWAITING_INPUT" as AWAITING_INPUT,
        /// Every step completed or was skipped (the seed's "Executed").
        Completed = "COMPLETED" as COMPLETED,
        /// A step failed and nothing else can run; retry the step to go on.
        Failed = "FAILED" as FAILED,
        Stopping = "STOPPING" as STOPPING,
        Stopped = "STOPPED" as STOPPED,
    }
}

crate::status_enum! {
    /// One step of a run (the seed's phase).
    pub enum StepStatus in step {
        /// Its dependencies have not all ended.
        Pending = "PENDING" as PENDING,
        /// It needs a delayed parameter's value (the seed's "Awaiting input").
        AwaitingInput = "AWAITING_INPUT" as AWAITING_INPUT,
        Running = "RUNNING" as RUNNING,
        Completed = "COMPLETED" as COMPLETED,
        /// It failed, or ran past its `max_execution_minutes`.
        Failed = "FAILED" as FAILED,
        Stopping = "STOPPING" as STOPPING,
        Stopped = "STOPPED" as STOPPED,
        /// Not run: the other branch of a condition, its skip conditions, every dependency
        /// skipped, or not among the steps a partial run selected.
        Skipped = "SKIPPED" as SKIPPED,
    }
}

use status::*;

impl RunStatus {
    /// A run that has ended (its record may be deleted; another run may start).
    pub fn is_terminal(self) -> bool {
        matches!(self, COMPLETED | FAILED | STOPPED)
    }

    /// A run under way: at most one per workflow.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

impl StepStatus {
    /// A step that will not change again unless retried.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            step::COMPLETED | step::FAILED | step::STOPPED | step::SKIPPED
        )
    }
}

/// What a run's owner asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOp {
    Stop,
    /// Go on from a failed or stopped step (the same record).
    Retry,
    /// Give an awaiting step its values.
    Proceed,
    /// Remove the record.
    Delete,
}

impl Operation for RunOp {
    type Status = RunStatus;
    const KIND: &'static str = "workflow run";
    const ALL: &'static [Self] = &[Self::Stop, Self::Retry, Self::Proceed, Self::Delete];

    fn verb(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Retry => "retry",
            Self::Proceed => "proceed with",
            Self::Delete => "delete",
        }
    }

    fn allowed_from(self) -> &'static [RunStatus] {
        match self {
            // Seed 5.2.3: only while it runs.
            Self::Stop => &[RUNNING, AWAITING_INPUT],
            // Seed 5.2.4: a failed phase is retried; a stopped run goes on the same way.
            Self::Retry => &[FAILED, STOPPED],
            // A step may wait while a parallel branch runs.
            Self::Proceed => &[RUNNING, AWAITING_INPUT],
            // A record under way is stopped first.
            Self::Delete => &[COMPLETED, FAILED, STOPPED],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_workflow_run_transition_table() {
        assert_eq!(
            RunStatus::ALL,
            [
                RUNNING,
                AWAITING_INPUT,
                COMPLETED,
                FAILED,
                STOPPING,
                STOPPED
            ]
        );
        #[rustfmt::skip]
        let expected = [
            //                 RUN AWA COM FAI STG STD
            (RunOp::Stop,     [1,  1,  0,  0,  0,  0]),
            (RunOp::Retry,    [0,  0,  0,  1,  0,  1]),
            (RunOp::Proceed,  [1,  1,  0,  0,  0,  0]),
            (RunOp::Delete,   [0,  0,  1,  1,  0,  1]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                RunStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<RunOp>(), want);
        assert_eq!(
            RunOp::Delete.check("r", RUNNING).unwrap_err().message,
            "cannot delete workflow run r while it is RUNNING; allowed when it is COMPLETED, FAILED, STOPPED"
        );
        assert!(COMPLETED.is_terminal() && !AWAITING_INPUT.is_terminal());
        assert!(STOPPING.is_active() && !STOPPED.is_active());
        assert!(step::SKIPPED.is_terminal() && !step::AWAITING_INPUT.is_terminal());
        assert_eq!(
            "AWAITING_INPUT".parse::<StepStatus>(),
            Ok(step::AWAITING_INPUT)
        );
    }
}
