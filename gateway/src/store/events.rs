//! The event catalogue: the seed's names, texts and severities (spec/notebook.md §2.9),
//! written in the same transaction as the state change they describe.

use serde::Serialize;

use crate::store::{self, Conn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "Warning",
            Severity::Major => "Major",
            Severity::Critical => "Critical",
        }
    }
}

/// One entry of the catalogue. Names and descriptions are verbatim from the seed except
/// where marked (proposed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Scheduled,
    /// (proposed) the notebook's job waits in a cluster scheduler's queue (the slurm
    /// backend); the detail names the scheduler's reason.
    Queued,
    PullingImage,
    PulledImage,
    NotebookHealthy,
    CreateNotebookFailed,
    PullImageFailed,
    StopNotebook,
    /// (proposed) the seed names "Startup failed" as a state but no event for it.
    StartNotebookFailed,
    UpdateName,
    UpdateDescription,
    UpdateFlavor,
    UpdateImage,
    /// `UpdateKeyPair` when a notebook gets its first key pairs ("Configured …").
    ConfigureKeyPair,
    UpdateKeyPair,
    UpdateWhitelist,
    NotebookUnhealthy,
    JupyterProcessKilled,
    /// `NotebookHealthy` with the "restored" text of seed table 6-16.
    NotebookRestored,
    /// The seed's idle-stop event: the warning before, and the stop.
    StopNotebookResourceIdle,
    /// (proposed) the lease's equivalent of `StopNotebookResourceIdle`.
    StopNotebookLeaseExpired,
    /// (proposed) the auto-stop deadline moved (renew).
    RenewNotebook,
    /// `UpdateStorageSize` "is being updated" (the work disk grows).
    UpdatingStorageSize,
    /// `UpdateStorageSize` "has been updated".
    UpdateStorageSize,
    /// `UpdateStorageSizeFailed` for an internal error.
    UpdateStorageSizeFailed,
    /// Saving a notebook as an image (seed §2.8): the pre-checks, the commit, the push, the
    /// outcome. The two checks and the failure carry their own text ([`record_text`]).
    CheckImageSize,
    CheckImageLayer,
    ContainerCommitStarted,
    ContainerCommitSuccess,
    ContainerCommitFailed,
    ImagePushStarted,
    ImagePushSuccess,
    ImagePushFailed,
    SaveImage,
    SavedImageFailed,
    /// An object-storage folder mounted under `/data` of a running notebook (seed T6-17).
    DynamicMountStorage,
    DynamicUnmountStorage,
    /// A mount the notebook has could not be made again at its start.
    MountVolumeFailed,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Scheduled => "Scheduled",
            EventKind::Queued => "Queued",
            EventKind::PullingImage => "PullingImage",
            EventKind::PulledImage => "PulledImage",
            EventKind::NotebookHealthy | EventKind::NotebookRestored => "NotebookHealthy",
            EventKind::CreateNotebookFailed => "CreateNotebookFailed",
            EventKind::PullImageFailed => "PullImageFailed",
            EventKind::StopNotebook => "StopNotebook",
            EventKind::StartNotebookFailed => "StartNotebookFailed",
            EventKind::UpdateName => "UpdateName",
            EventKind::UpdateDescription => "UpdateDescription",
            EventKind::UpdateFlavor => "UpdateFlavor",
            EventKind::UpdateImage => "UpdateImage",
            EventKind::ConfigureKeyPair | EventKind::UpdateKeyPair => "UpdateKeyPair",
            EventKind::UpdateWhitelist => "UpdateWhitelist",
            EventKind::NotebookUnhealthy => "NotebookUnhealthy",
            EventKind::JupyterProcessKilled => "JupyterProcessKilled",
            EventKind::StopNotebookResourceIdle => "StopNotebookResourceIdle",
            EventKind::StopNotebookLeaseExpired => "StopNotebookLeaseExpired",
            EventKind::RenewNotebook => "RenewNotebook",
            EventKind::UpdatingStorageSize | EventKind::UpdateStorageSize => "UpdateStorageSize",
            EventKind::UpdateStorageSizeFailed => "UpdateStorageSizeFailed",
            EventKind::CheckImageSize => "CheckImageSize",
            EventKind::CheckImageLayer => "CheckImageLayer",
            EventKind::ContainerCommitStarted => "ContainerCommitStarted",
            EventKind::ContainerCommitSuccess => "ContainerCommitSuccess",
            EventKind::ContainerCommitFailed => "ContainerCommitFailed",
            EventKind::ImagePushStarted => "ImagePushStarted",
            EventKind::ImagePushSuccess => "ImagePushSuccess",
            EventKind::ImagePushFailed => "ImagePushFailed",
            EventKind::SaveImage => "SaveImage",
            EventKind::SavedImageFailed => "SavedImageFailed",
            EventKind::DynamicMountStorage => "DynamicMountStorage",
            EventKind::DynamicUnmountStorage => "DynamicUnmountStorage",
            EventKind::MountVolumeFailed => "MountVolumeFailed",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            EventKind::Scheduled => "The instance has been scheduled.",
            EventKind::Queued => "The instance is waiting in the cluster's queue.",
            EventKind::PullingImage => "The image is being pulled.",
            EventKind::PulledImage => "The image has been pulled.",
            EventKind::NotebookHealthy => "The instance is running and healthy.",
            EventKind::NotebookRestored => "The instance has been restored to the healthy state.",
            EventKind::CreateNotebookFailed => "Creating an instance failed.",
            EventKind::PullImageFailed => "Pulling the image failed.",
            EventKind::StopNotebook => "The instance has been stopped.",
            EventKind::StartNotebookFailed => "Starting the instance failed.",
            EventKind::UpdateName => "Updating the instance name",
            EventKind::UpdateDescription => "Updating the instance description",
            EventKind::UpdateFlavor => "Updating the instance flavor",
            EventKind::UpdateImage => "Updating the instance image",
            EventKind::ConfigureKeyPair => "Configured the instance key pair.",
            EventKind::UpdateKeyPair => "Updating the instance key pair",
            EventKind::UpdateWhitelist => "Updating the instance access whitelist",
            EventKind::NotebookUnhealthy => "The instance is unhealthy.",
            EventKind::JupyterProcessKilled => "The Jupyter process has been stopped.",
            EventKind::StopNotebookResourceIdle => {
                "The notebook instance will automatically stop or has automatically stopped because resources are idle."
            }
            EventKind::StopNotebookLeaseExpired => {
                "The notebook instance will automatically stop or has automatically stopped because its auto-stop time has been reached."
            }
            EventKind::RenewNotebook => "The auto-stop time of the instance has been extended.",
            EventKind::UpdatingStorageSize => "The instance storage size is being updated.",
            EventKind::UpdateStorageSize => "The instance storage size has been updated.",
            EventKind::UpdateStorageSizeFailed => {
                "Updating the storage size failed due to an internal error."
            }
            EventKind::CheckImageSize => "The notebook container image size is checked.",
            EventKind::CheckImageLayer => "The number of notebook image layers is checked.",
            EventKind::ContainerCommitStarted => "Start to commit notebook container.",
            EventKind::ContainerCommitSuccess => "Notebook container commit successfully.",
            EventKind::ContainerCommitFailed => {
                "Failed to commit notebook container. Please contact SRE to check node {node_name}."
            }
            EventKind::ImagePushStarted => "Start to push notebook image.",
            EventKind::ImagePushSuccess => "Notebook image push successfully.",
            EventKind::ImagePushFailed => {
                "Failed to push Notebook image. Please contact SRE to check node {node_name}."
            }
            EventKind::SaveImage => "The image has been saved.",
            EventKind::SavedImageFailed => "Saving the image failed.",
            EventKind::DynamicMountStorage => "The OBS storage is mounted.",
            EventKind::DynamicUnmountStorage => "The OBS storage is unmounted.",
            EventKind::MountVolumeFailed => {
                "Mount volume failed; Check whether the DEW secret is correct if the instance cannot change to running in five minutes"
            }
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            EventKind::Scheduled
            | EventKind::Queued
            | EventKind::PullingImage
            | EventKind::PulledImage
            | EventKind::UpdateName
            | EventKind::UpdateDescription
            | EventKind::RenewNotebook
            | EventKind::CheckImageSize
            | EventKind::CheckImageLayer
            | EventKind::ContainerCommitStarted
            | EventKind::ContainerCommitSuccess
            | EventKind::ContainerCommitFailed
            | EventKind::ImagePushStarted
            | EventKind::ImagePushSuccess
            | EventKind::ImagePushFailed => Severity::Warning,
            EventKind::NotebookHealthy
            | EventKind::NotebookRestored
            | EventKind::StopNotebook
            | EventKind::UpdateFlavor
            | EventKind::UpdateImage
            | EventKind::ConfigureKeyPair
            | EventKind::UpdateKeyPair
            | EventKind::UpdateWhitelist
            | EventKind::StopNotebookResourceIdle
            | EventKind::StopNotebookLeaseExpired
            | EventKind::UpdatingStorageSize
            | EventKind::UpdateStorageSize
            | EventKind::SaveImage
            | EventKind::DynamicMountStorage
            | EventKind::DynamicUnmountStorage => Severity::Major,
            EventKind::CreateNotebookFailed
            | EventKind::PullImageFailed
            | EventKind::StartNotebookFailed
            | EventKind::NotebookUnhealthy
            | EventKind::JupyterProcessKilled
            | EventKind::UpdateStorageSizeFailed
            | EventKind::SavedImageFailed
            | EventKind::MountVolumeFailed => Severity::Critical,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRecord {
    pub event: String,
    pub description: String,
    pub severity: String,
    pub detail: Option<String>,
    pub time: String,
    pub notebook_id: String,
}

pub async fn record(
    conn: &mut Conn,
    notebook_id: &str,
    kind: EventKind,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    record_text(conn, notebook_id, kind, kind.description(), detail).await
}

/// [`record`] with a description of its own: the seed's texts with values in them
/// (`The notebook container image size is 3G.`) or with several variants
/// (`SavedImageFailed`).
pub async fn record_text(
    conn: &mut Conn,
    notebook_id: &str,
    kind: EventKind,
    description: &str,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO events (id, notebook_id, name, description, severity, detail, time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(store::ordered_id())
    .bind(notebook_id)
    .bind(kind.name())
    .bind(description)
    .bind(kind.severity().as_str())
    .bind(detail)
    .bind(store::now())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list(
    conn: &mut Conn,
    notebook_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<EventRecord>> {
    sqlx::query_as(
        "SELECT name AS event, description, severity, detail, time, notebook_id FROM events \
         WHERE notebook_id = $1 ORDER BY id LIMIT $2",
    )
    .bind(notebook_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_matches_the_seed() {
        // (kind, name, severity) from spec/notebook.md §2.9
        let table = [
            (EventKind::Scheduled, "Scheduled", "Warning"),
            (EventKind::PullingImage, "PullingImage", "Warning"),
            (EventKind::PulledImage, "PulledImage", "Warning"),
            (EventKind::NotebookHealthy, "NotebookHealthy", "Major"),
            (EventKind::NotebookRestored, "NotebookHealthy", "Major"),
            (
                EventKind::CreateNotebookFailed,
                "CreateNotebookFailed",
                "Critical",
            ),
            (EventKind::PullImageFailed, "PullImageFailed", "Critical"),
            (EventKind::StopNotebook, "StopNotebook", "Major"),
            (EventKind::UpdateName, "UpdateName", "Warning"),
            (EventKind::UpdateDescription, "UpdateDescription", "Warning"),
            (EventKind::UpdateFlavor, "UpdateFlavor", "Major"),
            (EventKind::UpdateImage, "UpdateImage", "Major"),
            (EventKind::ConfigureKeyPair, "UpdateKeyPair", "Major"),
            (EventKind::UpdateKeyPair, "UpdateKeyPair", "Major"),
            (EventKind::UpdateWhitelist, "UpdateWhitelist", "Major"),
            (
                EventKind::NotebookUnhealthy,
                "NotebookUnhealthy",
                "Critical",
            ),
            (
                EventKind::JupyterProcessKilled,
                "JupyterProcessKilled",
                "Critical",
            ),
            (
                EventKind::StopNotebookResourceIdle,
                "StopNotebookResourceIdle",
                "Major",
            ),
        ];
        for (kind, name, severity) in table {
            assert_eq!(kind.name(), name);
            assert_eq!(kind.severity().as_str(), severity, "{name}");
        }
        assert_eq!(
            EventKind::StopNotebook.description(),
            "The instance has been stopped."
        );
        assert_eq!(
            EventKind::StopNotebookResourceIdle.description(),
            "The notebook instance will automatically stop or has automatically stopped because resources are idle."
        );
    }
}
