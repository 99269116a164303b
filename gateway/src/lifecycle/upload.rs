//! A staged upload's statuses and the operations its user asks for.
//!
//! ```text
//! QUEUED ──► UPLOADING ──complete──► LANDING ──► DONE | FAILED
//!   └──────────┴──cancel──► CANCELED
//! ```

use super::Operation;

crate::status_enum! {
    /// A staged upload's status.
    pub enum UploadStatus in status {
        /// Waiting for one of the notebook's 10 upload slots.
        Queued = "QUEUED" as QUEUED,
        /// Parts go to the store.
        Uploading = "UPLOADING" as UPLOADING,
        /// The gateway writes the file into the work dir.
        Landing = "LANDING" as LANDING,
        Done = "DONE" as DONE,
        Failed = "FAILED" as FAILED,
        Canceled = "CANCELED" as CANCELED,
    }
}

use status::*;

/// Still using a slot, the store and its connection.
pub const IN_FLIGHT: &[UploadStatus] = &[QUEUED, UPLOADING, LANDING];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOp {
    Complete,
    Cancel,
}

impl Operation for UploadOp {
    type Status = UploadStatus;
    const KIND: &'static str = "upload";
    const ALL: &'static [Self] = &[Self::Complete, Self::Cancel];

    fn verb(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Cancel => "cancel",
        }
    }

    fn allowed_from(self) -> &'static [UploadStatus] {
        match self {
            Self::Complete => &[UPLOADING],
            Self::Cancel => &[QUEUED, UPLOADING],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    #[test]
    fn the_upload_transition_table() {
        assert_eq!(
            UploadStatus::ALL,
            [QUEUED, UPLOADING, LANDING, DONE, FAILED, CANCELED]
        );
        #[rustfmt::skip]
        let expected = [
            //                    QUE UPL LAN DON FAI CAN
            (UploadOp::Complete, [0,  1,  0,  0,  0,  0]),
            (UploadOp::Cancel,   [1,  1,  0,  0,  0,  0]),
        ];
        let want: Vec<_> = expected
            .iter()
            .flat_map(|(op, row)| {
                UploadStatus::ALL
                    .iter()
                    .zip(row)
                    .map(move |(s, a)| (*op, *s, *a == 1))
            })
            .collect();
        assert_eq!(table::<UploadOp>(), want);
        assert_eq!(
            UploadOp::Cancel.check("u1", DONE).unwrap_err().message,
            "cannot cancel upload u1 while it is DONE; allowed when it is QUEUED, UPLOADING"
        );
    }
}
