//! A notebook's statuses and the operations its users ask for, with where each is allowed.

use super::Operation;

crate::status_enum! {
    /// A notebook's status (spec/notebook.md §3.1, the ones the gateway uses).
    pub enum NotebookStatus in status {
        Creating = "CREATING" as CREATING,
        Starting = "STARTING" as STARTING,
        Running = "RUNNING" as RUNNING,
        Stopping = "STOPPING" as STOPPING,
        Stopped = "STOPPED" as STOPPED,
        Deleting = "DELETING" as DELETING,
        CreateFailed = "CREATE_FAILED" as CREATE_FAILED,
        StartFailed = "START_FAILED" as START_FAILED,
        Error = "ERROR" as ERROR,
        /// Being saved as an image (`notebooks::save`); back to RUNNING when that ends.
        Snapshotting = "SNAPSHOTTING" as SNAPSHOTTING,
    }
}

use status::*;

/// What a user asks of a notebook, and where each is allowed (spec/notebook.md §3.1, with a
/// retry from the failed states). Table-tested below, cell by cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotebookOp {
    Start,
    Stop,
    Delete,
    ChangeFlavor,
    ChangeImage,
    /// SSH on (the seed: only while stopped; the whitelist changes any time).
    EnableSsh,
    /// The key pairs SSH accepts (only while stopped).
    ChangeSshKeys,
    SaveImage,
    /// A staged upload: started, and landed in the work dir.
    Upload,
    LandUpload,
    /// A dynamic object-storage mount under /data.
    Mount,
    /// More time before auto-stop.
    Renew,
    /// A bigger work disk (online).
    ExpandStorage,
}

impl Operation for NotebookOp {
    type Status = NotebookStatus;
    const KIND: &'static str = "notebook";
    const ALL: &'static [Self] = &[
        Self::Start,
        Self::Stop,
        Self::Delete,
        Self::ChangeFlavor,
        Self::ChangeImage,
        Self::EnableSsh,
        Self::ChangeSshKeys,
        Self::SaveImage,
        Self::Upload,
        Self::LandUpload,
        Self::Mount,
        Self::Renew,
        Self::ExpandStorage,
    ];

    fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Delete => "delete",
            Self::ChangeFlavor => "change the flavor of",
            Self::ChangeImage => "change the image of",
            Self::EnableSsh => "turn on SSH for",
            Self::ChangeSshKeys => "change the SSH key pairs of",
            Self::SaveImage => "save an image of",
            Self::Upload => "upload into",
            Self::LandUpload => "land an upload in",
            Self::Mount => "mount storage into",
            Self::Renew => "renew",
            Self::ExpandStorage => "expand the storage of",
        }
    }

    fn allowed_from(self) -> &'static [NotebookStatus] {
        match self {
            Self::Start => &[STOPPED, START_FAILED, ERROR],
            Self::Stop => &[RUNNING, ERROR],
            Self::Delete => &[RUNNING, STOPPED, CREATE_FAILED, START_FAILED, ERROR],
            Self::ChangeFlavor => &[STOPPED, RUNNING, START_FAILED],
            Self::ChangeImage | Self::EnableSsh | Self::ChangeSshKeys => &[STOPPED],
            Self::SaveImage
            | Self::Upload
            | Self::LandUpload
            | Self::Mount
            | Self::Renew
            | Self::ExpandStorage => &[RUNNING],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Status, table};

    /// Every operation × status, written out: a new status or operation fails this test
    /// until someone decides each of its cells.
    #[test]
    fn the_notebook_transition_table() {
        const S: [NotebookStatus; 10] = [
            CREATING,
            STARTING,
            RUNNING,
            STOPPING,
            STOPPED,
            DELETING,
            CREATE_FAILED,
            START_FAILED,
            ERROR,
            SNAPSHOTTING,
        ];
        assert_eq!(
            S,
            NotebookStatus::ALL,
            "the columns below follow this order"
        );
        #[rustfmt::skip]
        let expected: [(NotebookOp, [u8; 10]); 10] = [
            //                          CRE STA RUN STO STD DEL CRF STF ERR SNA
            (NotebookOp::Start,         [0,  0,  0,  0,  1,  0,  0,  1,  1,  0]),
            (NotebookOp::Stop,          [0,  0,  1,  0,  0,  0,  0,  0,  1,  0]),
            (NotebookOp::Delete,        [0,  0,  1,  0,  1,  0,  1,  1,  1,  0]),
            (NotebookOp::ChangeFlavor,  [0,  0,  1,  0,  1,  0,  0,  1,  0,  0]),
            (NotebookOp::ChangeImage,   [0,  0,  0,  0,  1,  0,  0,  0,  0,  0]),
            (NotebookOp::EnableSsh,     [0,  0,  0,  0,  1,  0,  0,  0,  0,  0]),
            (NotebookOp::ChangeSshKeys, [0,  0,  0,  0,  1,  0,  0,  0,  0,  0]),
            (NotebookOp::SaveImage,     [0,  0,  1,  0,  0,  0,  0,  0,  0,  0]),
            (NotebookOp::Upload,        [0,  0,  1,  0,  0,  0,  0,  0,  0,  0]),
            (NotebookOp::LandUpload,    [0,  0,  1,  0,  0,  0,  0,  0,  0,  0]),
        ];
        let mut want = Vec::new();
        for (op, row) in expected {
            for (s, allowed) in S.iter().zip(row) {
                want.push((op, *s, allowed == 1));
            }
        }
        // The rest: only while running.
        for op in [
            NotebookOp::Mount,
            NotebookOp::Renew,
            NotebookOp::ExpandStorage,
        ] {
            for &s in &S {
                want.push((op, s, s == RUNNING));
            }
        }
        assert_eq!(table::<NotebookOp>(), want);
    }

    #[test]
    fn refusals_say_where_an_operation_is_allowed() {
        assert_eq!(
            NotebookOp::Start.check("dev", RUNNING).unwrap_err().message,
            "cannot start notebook dev while it is RUNNING; allowed when it is STOPPED, \
             START_FAILED, ERROR"
        );
        assert_eq!(
            NotebookOp::ChangeSshKeys
                .check("dev", RUNNING)
                .unwrap_err()
                .message,
            "cannot change the SSH key pairs of notebook dev while it is RUNNING; allowed when \
             it is STOPPED"
        );
    }
}
