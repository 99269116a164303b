//! A real-time service's statuses and the operations its owner asks for
//! (spec/inference.md §3.2).
//!
//! ```text
//! deploy ─► DEPLOYING ──instances ready──► RUNNING ◄──recovered── ALARM
//!              │  ├─startup failures ≥ max──► ABNORMAL              ▲
//!              │  └─deploy timeout / load failure──► FAILED         │ runtime failures
//!              │                                   RUNNING ─────────┘
//! RUNNING | ALARM | ABNORMAL | FAILED | DEPLOYING ──stop / auto-stop──► STOPPING ──► STOPPED
//! STOPPED | FAILED | ABNORMAL ──start──► DEPLOYING;  RUNNING | ALARM ──restart──► DEPLOYING
//! any but DEPLOYING (settled) ──update──► UPDATING ──► DEPLOYING (or back, rolled back)
//! any settled ──delete──► DELETING ──► (gone)
//! ```
//!
//! DEPLOYING, STOPPING, UPDATING and DELETING are transient: a restarted gateway deploys,
//! stops or deletes again. RUNNING and ALARM services are deployed again at every gateway
//! start (their instances live in the gateway or beside it).

use super::Operation;

crate::status_enum! {
    /// A real-time service's status.
    pub enum ServiceStatus in status {
        Deploying = "DEPLOYING" as DEPLOYING,
        Running = "RUNNING" as RUNNING,
        /// Running, but an instance fails its checks.
        Alarm = "ALARM" as ALARM,
        /// Its instances failed their startup checks.
        Abnormal = "ABNORMAL" as ABNORMAL,
        /// The deployment failed or timed out.
        Failed = "FAILED" as FAILED,
        Stopping = "STOPPING" as STOPPING,
        Stopped = "STOPPED" as STOPPED,
        /// Its settings change (then it deploys again).
        Updating = "UPDATING" as UPDATING,
        Deleting = "DELETING" as DELETING,
    }
}

use status::*;

/// Statuses where the service answers calls.
pub const SERVING: &[ServiceStatus] = &[RUNNING, ALARM];

/// Statuses whose instances are (being) deployed: what a gateway start brings back.
pub const DEPLOYED: &[ServiceStatus] = &[DEPLOYING, RUNNING, ALARM];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOp {
    Start,
    Stop,
    Restart,
    Update,
    Delete,
}

impl Operation for ServiceOp {
    type Status = ServiceStatus;
    const KIND: &'static str = "service";
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

    fn allowed_from(self) -> &'static [ServiceStatus] {
        match self {
            Self::Start => &[STOPPED, FAILED, ABNORMAL],
            Self::Stop => &[DEPLOYING, RUNNING, ALARM, ABNORMAL, FAILED],
            Self::Restart => &[RUNNING, ALARM],
            Self::Update => &[RUNNING, ALARM, ABNORMAL, FAILED, STOPPED],
            Self::Delete => &[DEPLOYING, RUNNING, ALARM, ABNORMAL, FAILED, STOPPED],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_service_transition_table() {
        assert_eq!(
            ServiceStatus::ALL,
            [
                DEPLOYING, RUNNING, ALARM, ABNORMAL, FAILED, STOPPING, STOPPED, UPDATING, DELETING
            ]
        );
        #[rustfmt::skip]
        let expected = [
            //                    DEP RUN ALA ABN FAI STO STD UPD DEL
            (ServiceOp::Start,   [0,  0,  0,  1,  1,  0,  1,  0,  0]),
            (ServiceOp::Stop,    [1,  1,  1,  1,  1,  0,  0,  0,  0]),
            (ServiceOp::Restart, [0,  1,  1,  0,  0,  0,  0,  0,  0]),
            (ServiceOp::Update,  [0,  1,  1,  1,  1,  0,  1,  0,  0]),
            (ServiceOp::Delete,  [1,  1,  1,  1,  1,  0,  1,  0,  0]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                ServiceStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<ServiceOp>(), want);
        // The seed's refusals (§5 item 31).
        assert_eq!(
            ServiceOp::Restart
                .check("svc", STOPPED)
                .unwrap_err()
                .message,
            "cannot restart service svc while it is STOPPED; allowed when it is RUNNING, ALARM"
        );
        assert!(ServiceOp::Start.check("svc", DEPLOYING).is_err());
        assert!(ServiceOp::Update.check("svc", DEPLOYING).is_err());
    }
}
