//! The append-only audit log (the seed's CTS traces): who did what to which object, and how
//! it ended. Written in the transaction of the change it records.

use serde::Serialize;

use crate::store::{self, Conn};

/// Trace names; the notebook ones are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateNotebook,
    StartNotebook,
    StopNotebook,
    DeleteNotebook,
    UpdateNotebook,
    OpenNotebook,
    CreateUser,
    DeleteUser,
    CreateToken,
    RevokeToken,
    Login,
    CreateKeyPair,
    ImportKeyPair,
    DeleteKeyPair,
    SshLogin,
    SshLoginRefused,
    RenewNotebook,
    SaveImage,
    RegisterImage,
    UnregisterImage,
    RegisterPlugin,
    DeletePlugin,
    CreateStorageConnection,
    DeleteStorageConnection,
    MountNotebookStorage,
    UnmountNotebookStorage,
    UploadToNotebook,
    CreateModel,
    CreateModelVersion,
    DeleteModelVersion,
    UpdateModel,
    DeployService,
    StartService,
    StopService,
    RestartService,
    UpdateService,
    DeleteService,
    DeleteServiceInstance,
    CreateApp,
    DeleteApp,
    ResetAppSecret,
    ViewAppSecret,
    AddAppCode,
    DeleteAppCode,
    BindAppService,
    UnbindAppService,
    CreateAlgorithm,
    DeleteAlgorithm,
    CreateTrainingJob,
    StopTrainingJob,
    DeleteTrainingJob,
    CreateTrainingSearch,
    StopTrainingSearch,
    DeleteTrainingSearch,
    CreateWorkflow,
    PublishWorkflow,
    DeleteWorkflow,
    StartWorkflowRun,
    StopWorkflowRun,
    RetryWorkflowRun,
    ProceedWorkflowRun,
    DeleteWorkflowRun,
    SetWorkflowSchedule,
    DeleteWorkflowSchedule,
    CreateWorkflowTriggerToken,
    RevokeWorkflowTriggerToken,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateNotebook => "createNotebook",
            Action::StartNotebook => "startNotebook",
            Action::StopNotebook => "stopNotebook",
            Action::DeleteNotebook => "deleteNotebook",
            Action::UpdateNotebook => "updateNotebook",
            Action::OpenNotebook => "openNotebook",
            Action::CreateUser => "createUser",
            Action::DeleteUser => "deleteUser",
            Action::CreateToken => "createToken",
            Action::RevokeToken => "revokeToken",
            Action::Login => "login",
            Action::CreateKeyPair => "createKeyPair",
            Action::ImportKeyPair => "importKeyPair",
            Action::DeleteKeyPair => "deleteKeyPair",
            Action::SshLogin => "sshLogin",
            Action::SshLoginRefused => "sshLoginRefused",
            Action::RenewNotebook => "renewNotebook",
            Action::SaveImage => "saveImage",
            Action::RegisterImage => "registerImage",
            Action::UnregisterImage => "unregisterImage",
            Action::RegisterPlugin => "registerPlugin",
            Action::DeletePlugin => "deletePlugin",
            Action::CreateStorageConnection => "createStorageConnection",
            Action::DeleteStorageConnection => "deleteStorageConnection",
            Action::MountNotebookStorage => "mountNotebookStorage",
            Action::UnmountNotebookStorage => "unmountNotebookStorage",
            Action::UploadToNotebook => "uploadToNotebook",
            Action::CreateModel => "createModel",
            Action::CreateModelVersion => "createModelVersion",
            Action::DeleteModelVersion => "deleteModelVersion",
            Action::UpdateModel => "updateModel",
            Action::DeployService => "deployService",
            Action::StartService => "startService",
            Action::StopService => "stopService",
            Action::RestartService => "restartService",
            Action::UpdateService => "updateService",
            Action::DeleteService => "deleteService",
            Action::DeleteServiceInstance => "deleteServiceInstance",
            Action::CreateApp => "createApp",
            Action::DeleteApp => "deleteApp",
            Action::ResetAppSecret => "resetAppSecret",
            Action::ViewAppSecret => "viewAppSecret",
            Action::AddAppCode => "addAppCode",
            Action::DeleteAppCode => "deleteAppCode",
            Action::BindAppService => "bindAppService",
            Action::UnbindAppService => "unbindAppService",
            Action::CreateAlgorithm => "createAlgorithm",
            Action::DeleteAlgorithm => "deleteAlgorithm",
            Action::CreateTrainingJob => "createTrainingJob",
            Action::StopTrainingJob => "stopTrainingJob",
            Action::DeleteTrainingJob => "deleteTrainingJob",
            Action::CreateTrainingSearch => "createTrainingSearch",
            Action::StopTrainingSearch => "stopTrainingSearch",
            Action::DeleteTrainingSearch => "deleteTrainingSearch",
            Action::CreateWorkflow => "createWorkflow",
            Action::PublishWorkflow => "publishWorkflow",
            Action::DeleteWorkflow => "deleteWorkflow",
            Action::StartWorkflowRun => "startWorkflowRun",
            Action::StopWorkflowRun => "stopWorkflowRun",
            Action::RetryWorkflowRun => "retryWorkflowRun",
            Action::ProceedWorkflowRun => "proceedWorkflowRun",
            Action::DeleteWorkflowRun => "deleteWorkflowRun",
            Action::SetWorkflowSchedule => "setWorkflowSchedule",
            Action::DeleteWorkflowSchedule => "deleteWorkflowSchedule",
            Action::CreateWorkflowTriggerToken => "createWorkflowTriggerToken",
            Action::RevokeWorkflowTriggerToken => "revokeWorkflowTriggerToken",
        }
    }
}

/// The user name of rows for what the gateway does by itself (automatic stops).
pub const SYSTEM: &str = "atelier";

/// What an audit row is about.
pub struct Target<'a> {
    pub kind: &'static str,
    pub id: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: String,
    pub time: String,
    #[sqlx(rename = "user_name")]
    pub user: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub resource_name: String,
    pub outcome: String,
    pub detail: Option<String>,
}

pub async fn record(
    conn: &mut Conn,
    user: &str,
    action: Action,
    target: Target<'_>,
    outcome: &str,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit (id, time, user_name, action, resource_type, resource_id, resource_name, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(store::ordered_id())
    .bind(store::now())
    .bind(user)
    .bind(action.as_str())
    .bind(target.kind)
    .bind(target.id)
    .bind(target.name)
    .bind(outcome)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

pub struct AuditFilter {
    pub action: Option<String>,
    pub user: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

pub async fn list(conn: &mut Conn, f: &AuditFilter) -> sqlx::Result<Vec<AuditRecord>> {
    sqlx::query_as(
        "SELECT id, time, user_name, action, resource_type, resource_id, resource_name, outcome, detail \
         FROM audit WHERE ($1 IS NULL OR action = $1) AND ($2 IS NULL OR user_name = $2) \
         ORDER BY id DESC LIMIT $3 OFFSET $4",
    )
    .bind(&f.action)
    .bind(&f.user)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(conn)
    .await
}
