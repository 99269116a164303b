//! Events of resources other than notebooks (`resource_events`): models now, services and
//! batch jobs next. The seed's catalogues for these (spec/inference.md §3.5) are texts with
//! a type (Normal, Abnormal, Warning), some with values in them (`xxx`), and no names.

use serde::Serialize;

use crate::store::{self, Conn};

/// The seed's event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Level {
    Normal,
    Abnormal,
    Warning,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "Normal",
            Level::Abnormal => "Abnormal",
            Level::Warning => "Warning",
        }
    }
}

/// A catalogue of one kind's events: the seed's texts (`xxx` where a value goes) and types.
pub trait Catalogue: Copy {
    /// The kind whose events these are (`model`, `service`), as stored.
    const KIND: &'static str;
    fn text(self) -> &'static str;
    fn level(self) -> Level;

    /// The text with each `xxx` replaced by the next of `values` (left as is when they run
    /// out).
    fn fill(self, values: &[&str]) -> String {
        let mut out = String::new();
        let mut rest = self.text();
        let mut values = values.iter();
        while let Some(at) = rest.find("xxx") {
            let Some(v) = values.next() else { break };
            out.push_str(&rest[..at]);
            out.push_str(v);
            rest = &rest[at + 3..];
        }
        out.push_str(rest);
        out
    }
}

/// The model events the gateway records (seed 9.6.2, verbatim; `xxx` is filled in by
/// [`Catalogue::fill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelEvent {
    ImportStarted,
    FileImported,
    SizeCalculated,
    Imported,
    ImportFailed,
    InvalidConfig,
    SwrLocationNotImage,
    DependenciesOnImage,
    HealthUrl,
    FileTooLarge,
    CopyFailed,
    ImageMissing,
    ImageChecked,
    DescriptionUpdated,
}

impl Catalogue for ModelEvent {
    const KIND: &'static str = "model";

    fn text(self) -> &'static str {
        match self {
            ModelEvent::ImportStarted => "The model starts to import.",
            ModelEvent::FileImported => "Model file imported.",
            ModelEvent::SizeCalculated => "Model size calculated.",
            ModelEvent::Imported => "The model imported.",
            ModelEvent::ImportFailed => "Failed to import the model.",
            ModelEvent::InvalidConfig => {
                "Invalid parameter value xxx exists in the model configuration file."
            }
            ModelEvent::SwrLocationNotImage => "Only custom images support swr_location.",
            ModelEvent::DependenciesOnImage => {
                "The custom image does not support specified dependencies."
            }
            ModelEvent::HealthUrl => "The health check API of a custom image must be xxx.",
            ModelEvent::FileTooLarge => {
                "Failed to import model file xxx because it is larger than 5 GB."
            }
            ModelEvent::CopyFailed => {
                "Failed to copy the model file. Check whether you have the OBS permission."
            }
            ModelEvent::ImageMissing => {
                "Failed to obtain the source image. Check whether the image exists."
            }
            ModelEvent::ImageChecked => "Source image size calculated.",
            ModelEvent::DescriptionUpdated => "Model description updated.",
        }
    }

    fn level(self) -> Level {
        match self {
            ModelEvent::ImportStarted
            | ModelEvent::FileImported
            | ModelEvent::SizeCalculated
            | ModelEvent::Imported
            | ModelEvent::ImageChecked
            | ModelEvent::DescriptionUpdated => Level::Normal,
            ModelEvent::ImportFailed
            | ModelEvent::InvalidConfig
            | ModelEvent::SwrLocationNotImage
            | ModelEvent::DependenciesOnImage
            | ModelEvent::HealthUrl
            | ModelEvent::FileTooLarge
            | ModelEvent::CopyFailed
            | ModelEvent::ImageMissing => Level::Abnormal,
        }
    }
}

/// The service events the gateway records (seed 9.7.2 Table 9-33, verbatim; those marked
/// proposed are ours: the seed names the ALARM status but no event for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceEvent {
    DeployStarted,
    Started,
    StartFailed,
    Failed,
    DeployTimedOut,
    Starting,
    Updating,
    UpdateRolledBack,
    Stopping,
    Stopped,
    StopFailed,
    AutoStopEnabled,
    AutoStopDisabled,
    AutoStopExpired,
    InstancesDeleted,
    /// (proposed) an instance fails its checks while the service runs (ALARM).
    Unhealthy,
    /// (proposed) every instance passes its checks again.
    Recovered,
}

impl Catalogue for ServiceEvent {
    const KIND: &'static str = "service";

    fn text(self) -> &'static str {
        match self {
            ServiceEvent::DeployStarted => "The service starts to deploy.",
            ServiceEvent::Started => "Service xxx started.",
            ServiceEvent::StartFailed => "Failed to start service xxx.",
            ServiceEvent::Failed => "Service xxx failed. Error: xxx",
            ServiceEvent::DeployTimedOut => "Service deployment timed out. Error: xxx",
            ServiceEvent::Starting => "The service is being started.",
            ServiceEvent::Updating => "The service is being updated.",
            ServiceEvent::UpdateRolledBack => {
                "Failed to update the service. The update has been rolled back."
            }
            ServiceEvent::Stopping => "The service is being stopped.",
            ServiceEvent::Stopped => "The service has been stopped.",
            ServiceEvent::StopFailed => "Failed to stop the service. Error: xxx",
            ServiceEvent::AutoStopEnabled => {
                "Auto stop has been enabled. The service will stop after xxxs."
            }
            ServiceEvent::AutoStopDisabled => "Auto stop has been disabled.",
            ServiceEvent::AutoStopExpired => "The service stops when the auto stop time expires.",
            ServiceEvent::InstancesDeleted => "Service instances deleted from resource pool xxx.",
            ServiceEvent::Unhealthy => "Service xxx is unhealthy. Error: xxx",
            ServiceEvent::Recovered => "Service xxx recovered.",
        }
    }

    fn level(self) -> Level {
        match self {
            ServiceEvent::StartFailed
            | ServiceEvent::Failed
            | ServiceEvent::DeployTimedOut
            | ServiceEvent::StopFailed
            | ServiceEvent::Unhealthy => Level::Abnormal,
            _ => Level::Normal,
        }
    }
}

/// The batch service events the gateway records (seed 9.8.2 Table 9-39, which is the
/// real-time table; verbatim), stored under the kind `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEvent {
    DeployStarted,
    Started,
    Executed,
    Failed,
    Starting,
    Stopping,
    Stopped,
    Updating,
}

impl Catalogue for BatchEvent {
    const KIND: &'static str = "batch";

    fn text(self) -> &'static str {
        match self {
            BatchEvent::DeployStarted => "The service starts to deploy.",
            BatchEvent::Started => "Service xxx started.",
            BatchEvent::Executed => "The service has been executed.",
            BatchEvent::Failed => "The batch service failed. Try again later. Error: xxx",
            BatchEvent::Starting => "The service is being started.",
            BatchEvent::Stopping => "The service is being stopped.",
            BatchEvent::Stopped => "The service has been stopped.",
            BatchEvent::Updating => "The service is being updated.",
        }
    }

    fn level(self) -> Level {
        match self {
            BatchEvent::Failed => Level::Abnormal,
            _ => Level::Normal,
        }
    }
}

/// The training job events the gateway records (seed 8.11.4, spec/training.md §3.2,
/// verbatim; a worker's with the seed's `[worker-N]` prefix), stored under the kind
/// `training`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingEvent {
    Created,
    Queuing,
    Started,
    Executed,
    Failed,
    Restarted,
    Hanged,
    Stopped,
    AutoStopped,
    Deleted,
    /// The platform could not prepare or run it (`Abnormal`, [proj]).
    Abnormal,
    WorkerCodeDownloading,
    WorkerCodeDownloaded,
    WorkerCodeFailed,
    WorkerInputDownloading,
    WorkerInputDownloaded,
    WorkerInputFailed,
    WorkerRunning,
    WorkerExited,
    WorkerOutputUploading,
    WorkerOutputUploaded,
    WorkerOutputFailed,
}

impl Catalogue for TrainingEvent {
    const KIND: &'static str = "training";

    fn text(self) -> &'static str {
        match self {
            TrainingEvent::Created => "Training job created.",
            TrainingEvent::Queuing => {
                "The training job is queuing and awaiting resource allocation."
            }
            TrainingEvent::Started => "The training job starts to run.",
            TrainingEvent::Executed => "Training job executed.",
            TrainingEvent::Failed => "Failed to run the training job.",
            TrainingEvent::Restarted => "The training job has been restarted.",
            TrainingEvent::Hanged => {
                "The system detects that your training job may be suspended. Go to the job details page to view the cause and handle the issue."
            }
            TrainingEvent::Stopped => "The training job has been manually stopped.",
            TrainingEvent::AutoStopped => {
                "The training job has been stopped. (Maximum running duration: xxx)"
            }
            TrainingEvent::Deleted => "The training job has been manually deleted.",
            TrainingEvent::Abnormal => "The training job cannot run. Error: xxx",
            TrainingEvent::WorkerCodeDownloading => {
                "[worker-xxx] The training code is being downloaded."
            }
            TrainingEvent::WorkerCodeDownloaded => {
                "[worker-xxx] [Duration: xxx] Training code downloaded."
            }
            TrainingEvent::WorkerCodeFailed => {
                "[worker-xxx] Failed to download the training code. Failure cause: xxx"
            }
            TrainingEvent::WorkerInputDownloading => {
                "[worker-xxx] The training input is being downloaded."
            }
            TrainingEvent::WorkerInputDownloaded => {
                "[worker-xxx] [Duration: xxx] Training input (parameter: xxx) downloaded."
            }
            TrainingEvent::WorkerInputFailed => {
                "[worker-xxx] Failed to download the training input (parameter: xxx). Failure cause: xxx"
            }
            TrainingEvent::WorkerRunning => "[worker-xxx] The training job starts to run.",
            TrainingEvent::WorkerExited => "[worker-xxx] Training finished. Exit code xxx.",
            TrainingEvent::WorkerOutputUploading => {
                "[worker-xxx] The training output is being uploaded."
            }
            TrainingEvent::WorkerOutputUploaded => {
                "[worker-xxx] Training output (parameter: xxx) uploaded."
            }
            TrainingEvent::WorkerOutputFailed => {
                "[worker-xxx] Failed to upload the training output (parameter: xxx). Failure cause: xxx"
            }
        }
    }

    fn level(self) -> Level {
        match self {
            TrainingEvent::Failed
            | TrainingEvent::Abnormal
            | TrainingEvent::WorkerCodeFailed
            | TrainingEvent::WorkerInputFailed
            | TrainingEvent::WorkerOutputFailed => Level::Abnormal,
            TrainingEvent::Hanged | TrainingEvent::Restarted => Level::Warning,
            _ => Level::Normal,
        }
    }
}

/// A hyperparameter search's events ([proj]: the seed has none; Katib's experiment and trial
/// conditions, in the seed's style), stored under the kind `training_search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchEvent {
    Created,
    Started,
    TrialCreated,
    TrialFailed,
    TrialEarlyStopped,
    Completed,
    Failed,
    Stopped,
    Deleted,
}

impl Catalogue for SearchEvent {
    const KIND: &'static str = "training_search";

    fn text(self) -> &'static str {
        match self {
            SearchEvent::Created => "Search created.",
            SearchEvent::Started => "The search starts to run.",
            SearchEvent::TrialCreated => "Trial xxx started (training job xxx) with xxx.",
            SearchEvent::TrialFailed => "Trial xxx failed. Error: xxx",
            SearchEvent::TrialEarlyStopped => {
                "Trial xxx stopped early: its best value xxx is worse than the median xxx at step xxx."
            }
            SearchEvent::Completed => "Search completed. Best trial xxx: xxx = xxx.",
            SearchEvent::Failed => "Search failed. Error: xxx",
            SearchEvent::Stopped => "The search has been manually stopped.",
            SearchEvent::Deleted => "The search has been manually deleted.",
        }
    }

    fn level(self) -> Level {
        match self {
            SearchEvent::Failed => Level::Abnormal,
            SearchEvent::TrialFailed | SearchEvent::TrialEarlyStopped => Level::Warning,
            _ => Level::Normal,
        }
    }
}

/// One event to write.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub subject_kind: &'static str,
    pub subject_id: &'a str,
    /// The part of the subject it is about (a model's version).
    pub part: Option<&'a str>,
    pub level: Level,
    pub text: std::borrow::Cow<'a, str>,
    pub detail: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// An event of `subject_id` (about its `part`, a model's version), with the
    /// catalogue's text.
    pub fn of<E: Catalogue>(subject_id: &'a str, part: Option<&'a str>, e: E) -> Row<'a> {
        Row {
            subject_kind: E::KIND,
            subject_id,
            part,
            level: e.level(),
            text: e.text().into(),
            detail: None,
        }
    }

    /// [`Row::of`] with the text's `xxx` filled in.
    pub fn filled<E: Catalogue>(
        subject_id: &'a str,
        part: Option<&'a str>,
        e: E,
        values: &[&str],
    ) -> Row<'a> {
        Row {
            text: e.fill(values).into(),
            ..Row::of(subject_id, part, e)
        }
    }

    /// A model event about `version` of model `model_id`.
    pub fn model(model_id: &'a str, version: &'a str, e: ModelEvent) -> Row<'a> {
        Row::of(model_id, Some(version), e)
    }

    /// [`Row::model`] with the text's `xxx` filled in.
    pub fn model_filled(
        model_id: &'a str,
        version: &'a str,
        e: ModelEvent,
        values: &[&str],
    ) -> Row<'a> {
        Row::filled(model_id, Some(version), e, values)
    }

    pub fn detail(mut self, detail: Option<&'a str>) -> Self {
        self.detail = detail;
        self
    }
}

/// An event as the API lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRecord {
    /// `Normal`, `Abnormal` or `Warning`.
    #[sqlx(rename = "level")]
    #[serde(rename = "type")]
    pub level: String,
    pub text: String,
    /// The version it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub time: String,
}

pub async fn record(conn: &mut Conn, row: &Row<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO resource_events (id, subject_kind, subject_id, part, level, text, detail, time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(store::ordered_id())
    .bind(row.subject_kind)
    .bind(row.subject_id)
    .bind(row.part)
    .bind(row.level.as_str())
    .bind(row.text.as_ref())
    .bind(row.detail)
    .bind(store::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// The subject's events, oldest first, optionally only those about `part`.
pub async fn list(
    conn: &mut Conn,
    subject_kind: &str,
    subject_id: &str,
    part: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<EventRecord>> {
    sqlx::query_as(
        "SELECT level, text, part AS version, detail, time FROM resource_events \
         WHERE subject_kind = $1 AND subject_id = $2 AND ($3 IS NULL OR part = $3) \
         ORDER BY id LIMIT $4",
    )
    .bind(subject_kind)
    .bind(subject_id)
    .bind(part)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How long each kind's events are kept (seed 9.6.2: model events 3 months; 9.7.1:
/// service events 1 month, batch services' too).
pub const RETENTION_DAYS: &[(&str, i64)] = &[
    ("model", 90),
    ("service", 30),
    ("batch", 30),
    ("training", 30),
];

/// Removes the events older than their kind's retention, as of `now`; how many went.
pub async fn purge(conn: &mut Conn, now: time::OffsetDateTime) -> sqlx::Result<u64> {
    let mut gone = 0;
    for (kind, days) in RETENTION_DAYS {
        let before = store::format_time(now - time::Duration::days(*days));
        gone += sqlx::query("DELETE FROM resource_events WHERE subject_kind = $1 AND time < $2")
            .bind(kind)
            .bind(before)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_older_than_their_kinds_retention_are_purged() {
        let dir = std::env::temp_dir().join(format!("atelier-ev-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::Store::open(&dir).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        record(&mut conn, &Row::model("m1", "0.0.1", ModelEvent::Imported))
            .await
            .unwrap();
        record(&mut conn, &Row::of("s1", None, ServiceEvent::Stopped))
            .await
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        // 31 days on: the service's event is past its month, the model's is kept.
        assert_eq!(
            purge(&mut conn, now + time::Duration::days(31))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            list(&mut conn, "model", "m1", None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            list(&mut conn, "service", "s1", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // 91 days on: the model's goes too.
        assert_eq!(
            purge(&mut conn, now + time::Duration::days(91))
                .await
                .unwrap(),
            1
        );
        assert!(
            list(&mut conn, "model", "m1", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn texts_are_the_seeds_with_values_filled_in() {
        assert_eq!(
            ModelEvent::FileTooLarge.fill(&["model/w.bin"]),
            "Failed to import model file model/w.bin because it is larger than 5 GB."
        );
        assert_eq!(
            ModelEvent::InvalidConfig.fill(&["model_type"]),
            "Invalid parameter value model_type exists in the model configuration file."
        );
        // No value: the text stays as the catalogue has it.
        assert_eq!(
            ModelEvent::HealthUrl.fill(&[]),
            "The health check API of a custom image must be xxx."
        );
        assert_eq!(ModelEvent::Imported.level(), Level::Normal);
        assert_eq!(
            ServiceEvent::AutoStopEnabled.fill(&["3600"]),
            "Auto stop has been enabled. The service will stop after 3600s."
        );
        assert_eq!(
            ServiceEvent::Failed.fill(&["iris", "the model did not load"]),
            "Service iris failed. Error: the model did not load"
        );
        assert_eq!(ModelEvent::ImportFailed.level(), Level::Abnormal);
        assert_eq!(
            BatchEvent::Failed.fill(&["the model did not load"]),
            "The batch service failed. Try again later. Error: the model did not load"
        );
        assert_eq!(BatchEvent::Failed.level(), Level::Abnormal);
    }
}
