//! The model registry (spec/inference.md §1.1, §2.1–2.7, §3.1): a user's models and their
//! versions, imported from an object-storage package, a folder of a notebook's work dir,
//! or a container image, and kept in the gateway's own model store (`blobs.rs`) so that a
//! service never reads a folder that changed under it.
//!
//! ```text
//! POST /v1/models ─► check the request ─► model + version 0.0.1 IMPORTING, "The model
//!                    starts to import." (one transaction, with its operation row)
//!                    └─ task: source → staging (import.rs) → layout and config.json
//!                       checked (atelier_inference) → files into the store by digest
//!                       → NORMAL ("Model file imported.", "Model size calculated.",
//!                       "The model imported.") | FAILED (the seed's event for the cause)
//! ```
//!
//! A new version copies the previous one's settings (and, unless given, its source) with
//! the next number. A version that backs a service cannot be deleted. A gateway restarted
//! during an import starts it again; during a delete, finishes it.

pub mod blobs;
mod import;
pub mod processor;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::backends::Backend;
use crate::error::Error;
use crate::lifecycle::model::{ModelOp, ModelStatus};
use crate::lifecycle::{KeyedLocks, Operation};
use crate::secrets::SecretBox;
use crate::store::audit::{self, Action, Target};
use crate::store::models::{self as rows, ModelRow, VersionRow};
use crate::store::resource_events::{self, Catalogue, EventRecord, ModelEvent, Row};
use crate::store::transition::Transition;
use crate::store::{Store, operations};
use atelier_inference::config::{Health, ModelConfig};
use atelier_inference::names;
use blobs::ModelFiles;

/// What a model request fails with.
pub type ModelError = crate::error::ResourceError;

/// Where a version's files come from, as a request names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// The folder holding `model/` in object storage, through one of the caller's storage
    /// connections.
    Obs { connection: String, path: String },
    /// The folder holding `model/` in one of the caller's notebooks' work dir (relative to
    /// it, or under `/home/ma-user/work`).
    Notebook { notebook: String, path: String },
    /// A container image that serves HTTP on 8080 (the custom engine contract).
    Image { image: String },
}

/// Where a version's files came from, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    Obs {
        connection: String,
        connection_id: String,
        path: String,
    },
    Notebook {
        notebook_id: String,
        path: String,
    },
    Image {
        image: String,
    },
}

/// Which kinds of service a version may back (seed: "Deployment Type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentType {
    RealTime,
    Batch,
}

/// A model description: a document's name and where it is (at most 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Doc {
    pub name: String,
    pub url: String,
}

/// What a service runs a version with; a new version copies them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub deployment_types: Vec<DeploymentType>,
    /// Emptied when it holds anything the seed forbids (`$`, `|`, `--privileged`, …).
    pub start_command: String,
    /// `config.json` given with the request: an image model's (it has no package), checked
    /// as a package's would be.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "stored_config"
    )]
    pub config: Option<ModelConfig>,
    pub docs: Vec<Doc>,
    /// The instances' startup, readiness and liveness probes, each set on its own (the
    /// seed's create form); where none is set, `config.json`'s `health` serves as all three.
    #[serde(default, skip_serializing_if = "HealthChecks::is_empty")]
    pub health_checks: HealthChecks,
}

/// A version's probes for the instances of a container or process engine
/// (spec/inference.md §2.5): each an HTTP or command check with `config.json` `health`'s
/// fields. Stored as given and read back through the same checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HealthChecks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Health>,
}

impl HealthChecks {
    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.readiness.is_none() && self.liveness.is_none()
    }

    /// Reads `{"startup": {…}, "readiness": {…}, "liveness": {…}}` (each optional; `null`
    /// or `{}` for none), naming the field of the first problem.
    pub fn parse(v: &serde_json::Value) -> Result<HealthChecks, String> {
        const AT: &str = "health_checks";
        let obj = match v {
            serde_json::Value::Null => return Ok(HealthChecks::default()),
            serde_json::Value::Object(o) => o,
            _ => {
                return Err(format!(
                    "{AT}: an object with startup, readiness and liveness probes"
                ));
            }
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "startup" | "readiness" | "liveness"))
        {
            return Err(format!(
                "{AT}.{:?}: unknown probe; the probes are startup, readiness and liveness",
                k.chars().take(40).collect::<String>()
            ));
        }
        let one = |name: &str| -> Result<Option<Health>, String> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => Health::from_json(&format!("{AT}.{name}"), v).map(Some),
            }
        };
        Ok(HealthChecks {
            startup: one("startup")?,
            readiness: one("readiness")?,
            liveness: one("liveness")?,
        })
    }
}

impl<'de> Deserialize<'de> for HealthChecks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        HealthChecks::parse(&v).map_err(serde::de::Error::custom)
    }
}

/// A `config.json` the gateway stored (its normalised form), read back through its checks.
fn stored_config<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ModelConfig>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    v.map(|v| parse_config(&v.to_string()).map_err(serde::de::Error::custom))
        .transpose()
}

fn parse_config(text: &str) -> Result<ModelConfig, String> {
    ModelConfig::parse(text.as_bytes())
        .map(|p| p.config)
        .map_err(|e| e.to_string())
}

/// `POST /v1/models`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The first version's number (`0.0.1` when absent).
    #[serde(default)]
    pub version: Option<String>,
    pub source: SourceSpec,
    #[serde(default)]
    pub deployment_types: Option<Vec<DeploymentType>>,
    #[serde(default)]
    pub start_command: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub docs: Option<Vec<Doc>>,
    /// Startup, readiness and liveness probes (see [`HealthChecks`]).
    #[serde(default)]
    pub health_checks: Option<serde_json::Value>,
}

/// `POST /v1/models/{model}/versions`: whatever is absent is the previous version's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub source: Option<SourceSpec>,
    #[serde(default)]
    pub deployment_types: Option<Vec<DeploymentType>>,
    #[serde(default)]
    pub start_command: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub docs: Option<Vec<Doc>>,
    /// Startup, readiness and liveness probes (see [`HealthChecks`]).
    #[serde(default)]
    pub health_checks: Option<serde_json::Value>,
}

/// Settings a request gives (absent: the previous version's, or the defaults).
#[derive(Debug, Default)]
struct SettingsSpec {
    deployment_types: Option<Vec<DeploymentType>>,
    start_command: Option<String>,
    config: Option<serde_json::Value>,
    docs: Option<Vec<Doc>>,
    health_checks: Option<serde_json::Value>,
}

/// `PATCH /v1/models/{model}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    pub description: String,
}

/// A model as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub latest_version: Option<String>,
    pub status: Option<ModelStatus>,
    pub versions: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<ModelRow> for ModelView {
    fn from(r: ModelRow) -> Self {
        ModelView {
            id: r.id,
            name: r.name,
            owner: r.owner,
            description: r.description,
            latest_version: r.latest_version,
            status: r.latest_status,
            versions: r.versions,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A version as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub id: String,
    pub model_id: String,
    pub model: String,
    pub version: String,
    pub status: ModelStatus,
    /// Why it is FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub description: String,
    pub source: Source,
    #[serde(flatten)]
    pub settings: Settings,
    /// The package's `config.json`, checked (package models, once imported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_config: Option<ModelConfig>,
    /// The package's processor component, once imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<processor::ProcessorInfo>,
    /// Bytes of its files.
    pub size: i64,
    /// Its files, once imported.
    pub files: usize,
    pub created_at: String,
    pub updated_at: String,
}

/// A version's files as the import recorded them.
pub type Manifest = Vec<blobs::Entry>;

/// The registry.
#[derive(Clone)]
pub struct Models {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    backend: Arc<dyn Backend>,
    secrets: Arc<SecretBox>,
    files: ModelFiles,
    tasks: TaskTracker,
    /// One version created at a time per model (the next number, the copy of settings).
    model_locks: KeyedLocks,
    /// The model store's own lock: commits and removals of trees and blobs.
    files_lock: tokio::sync::Mutex<()>,
    limits: import::Limits,
    /// The plugin host that checks (and later runs) packages' processors.
    host: Arc<atelier_plugins::Host>,
    host_settings: atelier_plugins::HostSettings,
}

/// What the registry is built from.
pub struct ModelsParts {
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub secrets: Arc<SecretBox>,
    pub data_dir: std::path::PathBuf,
    pub tasks: TaskTracker,
    pub host: Arc<atelier_plugins::Host>,
    pub host_settings: atelier_plugins::HostSettings,
}

impl Models {
    pub fn new(parts: ModelsParts) -> Models {
        Models {
            inner: Arc::new(Inner {
                store: parts.store,
                backend: parts.backend,
                secrets: parts.secrets,
                files: ModelFiles::new(&parts.data_dir),
                tasks: parts.tasks,
                model_locks: KeyedLocks::default(),
                files_lock: tokio::sync::Mutex::new(()),
                limits: import::Limits::default(),
                host: parts.host,
                host_settings: parts.host_settings,
            }),
        }
    }

    /// The model store (services read versions' trees from it).
    pub fn files(&self) -> &ModelFiles {
        &self.inner.files
    }

    /// Creates a model and imports its first version.
    pub async fn create(
        &self,
        who: &Principal,
        req: CreateModel,
    ) -> Result<(ModelView, VersionView), ModelError> {
        names::validate_model_name(&req.name).map_err(|e| ModelError::Invalid(e.to_string()))?;
        check_description(&req.description)?;
        let version = match &req.version {
            Some(v) => {
                names::validate_version(v).map_err(|e| ModelError::Invalid(e.to_string()))?;
                v.clone()
            }
            None => "0.0.1".to_string(),
        };
        let source = self.resolve_source(who, &req.source).await?;
        let spec = SettingsSpec {
            deployment_types: req.deployment_types,
            start_command: req.start_command,
            config: req.config,
            docs: req.docs,
            health_checks: req.health_checks,
        };
        let settings = settings_of(None, spec, &source)?;
        let model_id = uuid::Uuid::new_v4().to_string();
        let version_id = uuid::Uuid::new_v4().to_string();
        let now = crate::store::now();
        let mut tx = self.inner.store.write().await?;
        if rows::model_by_name(&mut tx, &who.user_id, &req.name)
            .await?
            .is_some()
        {
            return Err(ModelError::Conflict(format!(
                "you already have a model named {:?}; add a version to it (POST /v1/models/{}/versions) or pick another name",
                req.name, req.name
            )));
        }
        rows::insert_model(
            &mut tx,
            &model_id,
            &who.user_id,
            &req.name,
            &req.description,
            &now,
        )
        .await?;
        self.insert_version(
            &mut tx,
            who,
            &model_id,
            &req.name,
            &version_id,
            &version,
            &req.description,
            &source,
            &settings,
            Action::CreateModel,
        )
        .await?;
        tx.commit().await?;
        self.spawn_import(version_id.clone());
        let model = self.model_view(&model_id).await?;
        let v = self.version_view_by_id(&version_id).await?;
        Ok((model, v))
    }

    /// Adds a version to a model: the next number unless given, the previous version's
    /// settings and source where the request gives none.
    pub async fn create_version(
        &self,
        who: &Principal,
        model: &str,
        req: CreateVersion,
    ) -> Result<VersionView, ModelError> {
        let m = self.find(who, model).await?;
        let _held = self.inner.model_locks.lock(&m.id).await;
        let mut conn = self.inner.store.pool.acquire().await?;
        let previous = rows::versions(&mut conn, &m.id).await?.pop();
        let taken = rows::version_numbers(&mut conn, &m.id).await?;
        drop(conn);
        let version = match &req.version {
            Some(v) => {
                names::validate_version(v).map_err(|e| ModelError::Invalid(e.to_string()))?;
                if taken.contains(v) {
                    return Err(ModelError::Conflict(format!(
                        "model {} already has version {v}",
                        m.name
                    )));
                }
                v.clone()
            }
            None => next_free(&taken)?,
        };
        let description = req.description.unwrap_or_default();
        check_description(&description)?;
        let (prev_source, prev_settings) = match &previous {
            Some(p) => (Some(decode_source(p)?), Some(decode_settings(p)?)),
            None => (None, None),
        };
        let source = match (&req.source, prev_source) {
            (Some(s), _) => self.resolve_source(who, s).await?,
            (None, Some(p)) => self.recheck_source(who, p).await?,
            (None, None) => {
                return Err(ModelError::Invalid(
                    "source: required (the model has no version to copy it from)".into(),
                ));
            }
        };
        let spec = SettingsSpec {
            deployment_types: req.deployment_types,
            start_command: req.start_command,
            config: req.config,
            docs: req.docs,
            health_checks: req.health_checks,
        };
        let settings = settings_of(prev_settings, spec, &source)?;
        let version_id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.inner.store.write().await?;
        self.insert_version(
            &mut tx,
            who,
            &m.id,
            &m.name,
            &version_id,
            &version,
            &description,
            &source,
            &settings,
            Action::CreateModelVersion,
        )
        .await?;
        tx.commit().await?;
        self.spawn_import(version_id.clone());
        self.version_view_by_id(&version_id).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_version(
        &self,
        tx: &mut crate::store::Conn,
        who: &Principal,
        model_id: &str,
        model_name: &str,
        version_id: &str,
        version: &str,
        description: &str,
        source: &Source,
        settings: &Settings,
        action: Action,
    ) -> Result<(), ModelError> {
        let source_json = serde_json::to_string(source).map_err(anyhow::Error::from)?;
        let settings_json = serde_json::to_string(settings).map_err(anyhow::Error::from)?;
        rows::insert_version(
            tx,
            rows::NewVersion {
                id: version_id,
                model_id,
                version,
                description,
                source: &source_json,
                settings: &settings_json,
                now: &crate::store::now(),
            },
        )
        .await?;
        operations::begin(tx, version_id, ModelStatus::Importing).await?;
        resource_events::record(
            tx,
            &Row::model(model_id, version, ModelEvent::ImportStarted),
        )
        .await?;
        let name = format!("{model_name} {version}");
        audit::record(
            tx,
            &who.name,
            action,
            Target {
                kind: "model",
                id: version_id,
                name: &name,
            },
            "accepted",
            None,
        )
        .await?;
        Ok(())
    }

    /// The caller's model `key` (its id or its name); another user's is "not found" (an
    /// admin finds it by id).
    async fn find(&self, who: &Principal, key: &str) -> Result<ModelRow, ModelError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        if let Some(m) = rows::model_by_id(&mut conn, key).await?
            && (m.owner_id == who.user_id || who.is_admin())
        {
            return Ok(m);
        }
        rows::model_by_name(&mut conn, &who.user_id, key)
            .await?
            .ok_or_else(|| ModelError::NotFound(format!("model {key} not found")))
    }

    async fn find_version(
        &self,
        who: &Principal,
        model: &str,
        version: &str,
    ) -> Result<(ModelRow, VersionRow), ModelError> {
        let m = self.find(who, model).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let v = rows::version_of(&mut conn, &m.id, version)
            .await?
            .ok_or_else(|| {
                ModelError::NotFound(format!("model {} has no version {version}", m.name))
            })?;
        Ok((m, v))
    }

    pub async fn list(&self, who: &Principal, all: bool) -> Result<Vec<ModelView>, ModelError> {
        if all && !who.is_admin() {
            return Err(Error::forbidden("listing every user's models is for admins").into());
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let owner = (!all).then_some(who.user_id.as_str());
        Ok(rows::list_models(&mut conn, owner)
            .await?
            .into_iter()
            .map(ModelView::from)
            .collect())
    }

    pub async fn get(&self, who: &Principal, model: &str) -> Result<ModelView, ModelError> {
        Ok(self.find(who, model).await?.into())
    }

    pub async fn versions(
        &self,
        who: &Principal,
        model: &str,
    ) -> Result<Vec<VersionView>, ModelError> {
        let m = self.find(who, model).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        rows::versions(&mut conn, &m.id)
            .await?
            .into_iter()
            .map(|v| version_view(&m.name, v))
            .collect()
    }

    pub async fn version(
        &self,
        who: &Principal,
        model: &str,
        version: &str,
    ) -> Result<VersionView, ModelError> {
        let (m, v) = self.find_version(who, model, version).await?;
        version_view(&m.name, v)
    }

    /// The model's events (all versions', or one's), oldest first.
    pub async fn events(
        &self,
        who: &Principal,
        model: &str,
        version: Option<&str>,
    ) -> Result<Vec<EventRecord>, ModelError> {
        let m = self.find(who, model).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(resource_events::list(&mut conn, "model", &m.id, version, 1000).await?)
    }

    pub async fn update(
        &self,
        who: &Principal,
        model: &str,
        req: UpdateModel,
    ) -> Result<ModelView, ModelError> {
        check_description(&req.description)?;
        let m = self.find(who, model).await?;
        let mut tx = self.inner.store.write().await?;
        if !rows::set_description(&mut tx, &m.id, &req.description, &crate::store::now()).await? {
            return Err(ModelError::NotFound(format!("model {model} not found")));
        }
        let latest = m.latest_version.clone().unwrap_or_default();
        resource_events::record(
            &mut tx,
            &Row::model(&m.id, &latest, ModelEvent::DescriptionUpdated),
        )
        .await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::UpdateModel,
            Target {
                kind: "model",
                id: &m.id,
                name: &m.name,
            },
            "succeeded",
            None,
        )
        .await?;
        tx.commit().await?;
        self.model_view(&m.id).await
    }

    /// Deletes one version (NORMAL or FAILED, used by no service); the model goes with its
    /// last version.
    pub async fn delete_version(
        &self,
        who: &Principal,
        model: &str,
        version: &str,
    ) -> Result<(), ModelError> {
        let (m, v) = self.find_version(who, model, version).await?;
        let name = format!("{} {}", m.name, v.version);
        ModelOp::Delete.check(&name, v.status)?;
        let mut tx = self.inner.store.write().await?;
        // In the transaction that moves it: a deploy that commits first is seen here.
        let users = crate::store::services::using_version(&mut tx, &v.id).await?;
        if !users.is_empty() {
            return Err(ModelError::Conflict(format!(
                "model version {name} backs service {}; delete the service first",
                users.join(", ")
            )));
        }
        Transition::of(&v.id, ModelOp::Delete, ModelStatus::Deleting)
            .audit(
                &who.name,
                Action::DeleteModelVersion,
                Target {
                    kind: "model",
                    id: &v.id,
                    name: &name,
                },
                "accepted",
                None,
            )
            .request(&mut tx, ModelOp::Delete, &name)
            .await?;
        tx.commit().await?;
        self.finish_delete(&v.id).await
    }

    /// Deletes every version of a model (each as [`Self::delete_version`]) and the model.
    pub async fn delete(&self, who: &Principal, model: &str) -> Result<(), ModelError> {
        let m = self.find(who, model).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let versions = rows::versions(&mut conn, &m.id).await?;
        drop(conn);
        // Check them all before deleting any: a refusal deletes nothing.
        let mut conn = self.inner.store.pool.acquire().await?;
        for v in &versions {
            let name = format!("{} {}", m.name, v.version);
            ModelOp::Delete.check(&name, v.status)?;
            let users = crate::store::services::using_version(&mut conn, &v.id).await?;
            if !users.is_empty() {
                return Err(ModelError::Conflict(format!(
                    "model version {name} backs service {}; delete the service first",
                    users.join(", ")
                )));
            }
        }
        drop(conn);
        for v in &versions {
            self.delete_version(who, &m.id, &v.version).await?;
        }
        let mut tx = self.inner.store.write().await?;
        rows::delete_model_if_empty(&mut tx, &m.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a DELETING version's files, then its row (and the model with its last one).
    async fn finish_delete(&self, version_id: &str) -> Result<(), ModelError> {
        {
            let _g = self.inner.files_lock.lock().await;
            let files = self.inner.files.clone();
            let id = version_id.to_string();
            tokio::task::spawn_blocking(move || files.remove(&id))
                .await
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from)?;
        }
        let mut tx = self.inner.store.write().await?;
        let v = rows::version_by_id(&mut tx, version_id).await?;
        rows::delete_version(&mut tx, version_id).await?;
        operations::end::<ModelStatus>(&mut tx, version_id).await?;
        if let Some(v) = &v {
            rows::delete_model_if_empty(&mut tx, &v.model_id).await?;
        }
        tx.commit().await?;
        if let Some(p) = v.as_ref().and_then(|v| v.processor.as_deref()) {
            let info: processor::ProcessorInfo =
                serde_json::from_str(p).map_err(anyhow::Error::from)?;
            self.forget_processor(version_id, info).await?;
        }
        Ok(())
    }

    /// Drops a deleted version's processor from the plugin host: its instances, and its
    /// files when no plugin and no other version has the same component.
    async fn forget_processor(
        &self,
        version_id: &str,
        info: processor::ProcessorInfo,
    ) -> Result<(), ModelError> {
        let host = &self.inner.host;
        let _digest = host
            .lock_key(&crate::plugins::digest_key(&info.digest))
            .await;
        let mut conn = self.inner.store.pool.acquire().await?;
        let users = crate::store::plugins::digest_users(&mut conn, &info.digest).await?
            + i64::from(rows::processor_in_use(&mut conn, &info.digest).await?);
        drop(conn);
        host.forget(
            &atelier_plugins::PluginRef {
                key: processor::plugin_key(version_id),
                digest: info.digest,
                world: atelier_plugins::World::InferenceProcessor,
                limits: info.limits,
                model_dir: None,
            },
            users == 0,
        );
        Ok(())
    }

    /// At a gateway start: imports cut short start again; deletes finish.
    pub async fn resume(&self) -> anyhow::Result<()> {
        for p in operations::resume::<ModelStatus>(&self.inner.store).await? {
            match p.status {
                ModelStatus::Importing if p.exhausted() => {
                    self.fail(
                        &p.resource_id,
                        ModelEvent::ImportFailed,
                        &[],
                        "the import was cut short by gateway restarts too often; create a new version to try again",
                    )
                    .await;
                }
                ModelStatus::Importing => self.spawn_import(p.resource_id),
                ModelStatus::Deleting => {
                    if let Err(e) = self.finish_delete(&p.resource_id).await {
                        tracing::warn!(version = %p.resource_id, error = %Error::from(e), "finishing a model version's delete failed; the next start tries again");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn spawn_import(&self, version_id: String) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            this.import(&version_id).await;
        });
    }

    /// Runs one import to its end: NORMAL or FAILED.
    async fn import(&self, version_id: &str) {
        let outcome = import::run(&self.inner, version_id).await;
        let _ = self.inner.files.drop_staging(version_id);
        match outcome {
            Ok(done) => {
                if let Err(e) = self.finish_import(version_id, done).await {
                    tracing::error!(version = %version_id, error = ?e, "recording a finished model import failed");
                    self.fail(
                        version_id,
                        ModelEvent::ImportFailed,
                        &[],
                        "recording the import failed",
                    )
                    .await;
                }
            }
            Err(f) => {
                let values: Vec<&str> = f.values.iter().map(String::as_str).collect();
                self.fail(version_id, f.event, &values, &f.message).await;
            }
        }
    }

    async fn finish_import(&self, version_id: &str, done: import::Imported) -> anyhow::Result<()> {
        let mut tx = self.inner.store.write().await?;
        let Some(v) = rows::version_by_id(&mut tx, version_id).await? else {
            return Ok(());
        };
        let config = done
            .config
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let manifest = serde_json::to_string(&done.manifest)?;
        let processor = done
            .processor
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        rows::set_imported(
            &mut tx,
            version_id,
            config.as_deref(),
            &manifest,
            processor.as_deref(),
            done.size as i64,
        )
        .await?;
        if !done.manifest.is_empty() {
            resource_events::record(
                &mut tx,
                &Row::model(&v.model_id, &v.version, ModelEvent::FileImported),
            )
            .await?;
            resource_events::record(
                &mut tx,
                &Row::model(&v.model_id, &v.version, ModelEvent::SizeCalculated),
            )
            .await?;
        }
        if let Some(e) = done.image_event {
            resource_events::record(&mut tx, &Row::model(&v.model_id, &v.version, e)).await?;
        }
        let applied = Transition::new(version_id, &[ModelStatus::Importing], ModelStatus::Normal)
            .resource_event(Row::model(&v.model_id, &v.version, ModelEvent::Imported))
            .apply(&mut tx)
            .await?;
        if applied {
            tx.commit().await?;
        }
        Ok(())
    }

    /// IMPORTING → FAILED with the seed's event for the cause and the message kept.
    async fn fail(&self, version_id: &str, event: ModelEvent, values: &[&str], message: &str) {
        let result: anyhow::Result<()> = async {
            let mut tx = self.inner.store.write().await?;
            let Some(v) = rows::version_by_id(&mut tx, version_id).await? else {
                return Ok(());
            };
            let mut row = Row::model_filled(&v.model_id, &v.version, event, values);
            row.detail = Some(message);
            let applied =
                Transition::new(version_id, &[ModelStatus::Importing], ModelStatus::Failed)
                    .reason(Some(message))
                    .resource_event(row)
                    .apply(&mut tx)
                    .await?;
            if applied {
                tx.commit().await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(version = %version_id, error = ?e, "recording a failed model import failed");
        }
    }

    async fn resolve_source(
        &self,
        who: &Principal,
        spec: &SourceSpec,
    ) -> Result<Source, ModelError> {
        let source = import::resolve(&self.inner, who, spec).await?;
        import::preflight(&self.inner, &source).await?;
        Ok(source)
    }

    /// The previous version's source, checked again for this caller (the connection or
    /// notebook may be gone).
    async fn recheck_source(&self, who: &Principal, prev: Source) -> Result<Source, ModelError> {
        let spec = match prev {
            Source::Obs {
                connection, path, ..
            } => SourceSpec::Obs { connection, path },
            Source::Notebook { notebook_id, path } => SourceSpec::Notebook {
                notebook: notebook_id,
                path,
            },
            Source::Image { image } => SourceSpec::Image { image },
        };
        self.resolve_source(who, &spec).await
    }

    async fn model_view(&self, id: &str) -> Result<ModelView, ModelError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        rows::model_by_id(&mut conn, id)
            .await?
            .map(ModelView::from)
            .ok_or_else(|| ModelError::NotFound(format!("model {id} not found")))
    }

    async fn version_view_by_id(&self, id: &str) -> Result<VersionView, ModelError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let v = rows::version_by_id(&mut conn, id)
            .await?
            .ok_or_else(|| ModelError::NotFound(format!("model version {id} not found")))?;
        let m = rows::model_by_id(&mut conn, &v.model_id)
            .await?
            .ok_or_else(|| ModelError::NotFound(format!("model {} not found", v.model_id)))?;
        version_view(&m.name, v)
    }

    /// A version by id with its files' folder, for a service that runs it (the service
    /// checked the caller when it was deployed).
    pub async fn version_for_service(
        &self,
        version_id: &str,
    ) -> Result<(VersionView, Option<std::path::PathBuf>), ModelError> {
        let v = self.version_view_by_id(version_id).await?;
        let tree = self.inner.files.tree(&v.id);
        Ok((v, tree))
    }

    /// A NORMAL version of the caller's model, with its files' folder: what a service
    /// deploys.
    pub async fn deployable(
        &self,
        who: &Principal,
        model: &str,
        version: &str,
    ) -> Result<(VersionView, Option<std::path::PathBuf>), ModelError> {
        let (m, v) = self.find_version(who, model, version).await?;
        // A user's models are theirs to serve: an admin manages them but runs none.
        if m.owner_id != who.user_id {
            return Err(ModelError::NotFound(format!("model {model} not found")));
        }
        ModelOp::Deploy.check(&format!("{} {}", m.name, v.version), v.status)?;
        let tree = self.inner.files.tree(&v.id);
        Ok((version_view(&m.name, v)?, tree))
    }
}

fn check_description(d: &str) -> Result<(), ModelError> {
    if d.chars().count() > 512 {
        return Err(ModelError::Invalid(
            "description: at most 512 characters".into(),
        ));
    }
    Ok(())
}

/// The number after the newest taken one (`0.0.1` for none).
fn next_free(taken: &[String]) -> Result<String, ModelError> {
    match taken
        .iter()
        .filter_map(|t| names::validate_version(t).ok())
        .max()
    {
        Some(newest) => names::next_version(&newest.to_string())
            .map_err(|e| ModelError::Conflict(e.to_string())),
        None => Ok("0.0.1".to_string()),
    }
}

/// The settings of a new version: the request's, else the previous version's, else the
/// defaults.
fn settings_of(
    previous: Option<Settings>,
    spec: SettingsSpec,
    source: &Source,
) -> Result<Settings, ModelError> {
    let prev = previous.unwrap_or(Settings {
        deployment_types: vec![DeploymentType::RealTime, DeploymentType::Batch],
        start_command: String::new(),
        config: None,
        docs: Vec::new(),
        health_checks: HealthChecks::default(),
    });
    let deployment_types = spec.deployment_types.unwrap_or(prev.deployment_types);
    if deployment_types.is_empty() {
        return Err(ModelError::Invalid(
            "deployment_types: at least one of real-time, batch".into(),
        ));
    }
    let start_command = match spec.start_command {
        Some(c) => names::sanitize_start_command(&c),
        None => prev.start_command,
    };
    let docs = spec.docs.unwrap_or(prev.docs);
    if docs.len() > 3 {
        return Err(ModelError::Invalid(
            "docs: at most 3 model descriptions".into(),
        ));
    }
    for (i, d) in docs.iter().enumerate() {
        if d.name.is_empty() || d.name.chars().count() > 64 {
            return Err(ModelError::Invalid(format!(
                "docs[{i}].name: 1 to 64 characters"
            )));
        }
        if !(d.url.starts_with("https://") || d.url.starts_with("http://")) || d.url.len() > 2048 {
            return Err(ModelError::Invalid(format!(
                "docs[{i}].url: an http(s) URL of at most 2048 characters"
            )));
        }
    }
    let config = match spec.config {
        Some(v) => Some(parse_config(&v.to_string()).map_err(ModelError::Invalid)?),
        None => prev.config,
    };
    let health_checks = match spec.health_checks {
        Some(v) => HealthChecks::parse(&v).map_err(ModelError::Invalid)?,
        None => prev.health_checks,
    };
    if let Source::Image { .. } = source {
        import::check_image_config(config.as_ref()).map_err(ModelError::Invalid)?;
        for (name, h) in [
            ("startup", &health_checks.startup),
            ("readiness", &health_checks.readiness),
            ("liveness", &health_checks.liveness),
        ] {
            if h.as_ref().is_some_and(|h| !h.ok_for_custom_engine()) {
                return Err(ModelError::Invalid(format!(
                    "health_checks.{name}: {}",
                    ModelEvent::HealthUrl.fill(&["an HTTP check of /health"])
                )));
            }
        }
    } else if config.is_some() {
        return Err(ModelError::Invalid(
            "config: only an image model takes its config.json in the request; a package's is its model/config.json".into(),
        ));
    }
    Ok(Settings {
        deployment_types,
        start_command,
        config,
        docs,
        health_checks,
    })
}

fn decode_source(v: &VersionRow) -> Result<Source, ModelError> {
    serde_json::from_str(&v.source)
        .map_err(|e| ModelError::Internal(anyhow::anyhow!("model version {}: source: {e}", v.id)))
}

fn decode_settings(v: &VersionRow) -> Result<Settings, ModelError> {
    serde_json::from_str(&v.settings)
        .map_err(|e| ModelError::Internal(anyhow::anyhow!("model version {}: settings: {e}", v.id)))
}

fn version_view(model: &str, v: VersionRow) -> Result<VersionView, ModelError> {
    let source = decode_source(&v)?;
    let settings = decode_settings(&v)?;
    let model_config = match &v.config {
        Some(c) => Some(parse_config(c).map_err(|e| {
            ModelError::Internal(anyhow::anyhow!("model version {}: config: {e}", v.id))
        })?),
        None => None,
    };
    let processor = match &v.processor {
        Some(p) => Some(serde_json::from_str(p).map_err(|e| {
            ModelError::Internal(anyhow::anyhow!("model version {}: processor: {e}", v.id))
        })?),
        None => None,
    };
    let files = match &v.manifest {
        Some(m) => serde_json::from_str::<Manifest>(m)
            .map_err(|e| {
                ModelError::Internal(anyhow::anyhow!("model version {}: manifest: {e}", v.id))
            })?
            .len(),
        None => 0,
    };
    Ok(VersionView {
        id: v.id,
        model_id: v.model_id,
        model: model.to_string(),
        version: v.version,
        status: v.status,
        error: v.error,
        description: v.description,
        source,
        settings,
        model_config,
        processor,
        size: v.size,
        files,
        created_at: v.created_at,
        updated_at: v.updated_at,
    })
}
