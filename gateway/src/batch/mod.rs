//! Batch services (spec/inference.md §1.6, §2.13, §3.3): one NORMAL model version run over
//! every file of an object storage folder or `.manifest`, each file's answer written into
//! an output folder, with `infer-result-{task_id}.manifest` saying how each went.
//!
//! ```text
//! POST /v1/batch-services ─► checks (model version, request path, mapping, connection,
//!     output empty, input listed or manifest read: every line checked, quota 1,000)
//!     ─► DEPLOYING + one row per input file, "The service starts to deploy." (one
//!        transaction, with its operation)
//!     └─ task (`job.rs`): load the version (serving::runtime, as a real-time service)
//!        ─► RUNNING ("Service x started.") ─► N workers over the pending items:
//!             size ≤ 12 MB ─► download ─► request (file, or a CSV's rows by the mapping)
//!             ─► processor + engine (serving::call::run_loaded) ─► result object
//!             ─► item row succeeded | failed (never a job failure)
//!        ─► manifests from the rows ─► COMPLETED ("The service has been executed.")
//!        | FAILED ("The batch service failed. Try again later. Error: …") when it
//!          cannot run at all (the model does not load, the output is not writable)
//! ```
//!
//! Invariant: an item's result object is written under its deterministic key before its
//! row leaves `pending`, and a pending item whose result object exists is marked done
//! without running again: a gateway killed mid-job (RUNNING is transient: resumed at
//! start) or a stop and start never does a finished item twice.

pub mod input;
mod job;
pub mod mapping;
pub mod output;
pub mod request;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::error::Error;
use crate::lifecycle::batch::{BatchOp, BatchStatus, NO_RESTART};
use crate::lifecycle::{KeyedLocks, Operation};
use crate::models::{DeploymentType, Models};
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::secrets::SecretBox;
use crate::serving::Services;
use crate::serving::logs::LogParams;
use crate::serving::logs::sources::Found;
use crate::store::audit::{self, Action, Target};
use crate::store::batch_services::{self as rows, BatchRow, NewItem};
use crate::store::resource_events::{self, BatchEvent, EventRecord, Row};
use crate::store::storage_connections;
use crate::store::transition::Transition;
use crate::store::{Store, operations};
use input::{Input, Source};
use output::Output;

/// The seed's timeout: 20 minutes by default, 3 to 120 (here: the model's load).
pub const TIMEOUT_MINUTES: (u32, u32, u32) = (20, 3, 120);
/// Instances working in parallel: as a real-time version's.
pub const MAX_INSTANCES: u32 = crate::serving::spec::MAX_INSTANCES;
/// One item's call: the seed's 40 s of a real-time call.
const CALL_TIMEOUT: Duration = Duration::from_secs(40);
/// The most of one item's answer (a file's, or a CSV's rows' together) that is read and
/// written as its result: the 12 MB an input may be. Past it the item FAILED; with
/// `MAX_INSTANCES` workers the answers in memory stay under 200 MB whatever an engine sends.
pub const MAX_ANSWER_BYTES: u64 = input::MAX_ITEM_BYTES;

/// What a batch request fails with.
pub type BatchError = crate::error::ResourceError;

/// `POST /v1/batch-services`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBatch {
    /// Generated (`service-1a2b`) when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// The model: its id, or your model's name.
    pub model: String,
    pub version: String,
    /// `obs://bucket/folder/` or `obs://bucket/list.manifest`.
    pub input: String,
    /// An empty folder: `obs://bucket/folder/`.
    pub output: String,
    /// Your storage connection the input and output are read and written through.
    pub connection: String,
    /// One of the model's `apis[].url`; `/` by default.
    #[serde(default)]
    pub request_path: Option<String>,
    /// CSV column index per request field (for `.csv` inputs of a JSON API).
    #[serde(default)]
    pub mapping: Option<BTreeMap<String, i64>>,
    #[serde(default)]
    pub instances: Option<u32>,
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
}

/// `PATCH /v1/batch-services/{batch}`: what is given replaces what the service has; a
/// running job reads it at its next start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBatch {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub instances: Option<u32>,
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
}

/// A batch service's settings as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSpec {
    pub model_id: String,
    pub model: String,
    pub version: String,
    /// As given.
    pub input: String,
    /// `obs://bucket/folder/`.
    pub output: String,
    /// The storage connection's name.
    pub connection: String,
    pub request_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<BTreeMap<String, i64>>,
    pub instances: u32,
    pub envs: BTreeMap<String, String>,
    pub timeout_minutes: u32,
}

/// How far a job is.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub total: i64,
    pub pending: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// Where a COMPLETED service's results are (seed 9.5: viewed only when completed).
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The results folder: `obs://bucket/out/infer-result-{task_id}/`.
    pub folder: String,
    pub manifests: Vec<String>,
}

/// A batch service as the API shows it (seed Table 9-37).
#[derive(Debug, Clone, Serialize)]
pub struct BatchView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub status: BatchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The seed's Job ID: names the results (`infer-result-{task_id}`).
    pub task_id: String,
    #[serde(flatten)]
    pub spec: BatchSpec,
    pub progress: Progress,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Results>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The batch services.
#[derive(Clone)]
pub struct Batches {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    models: Models,
    /// Where models are loaded and processors run (shared with real-time services).
    services: Services,
    secrets: Arc<SecretBox>,
    tasks: TaskTracker,
    /// One lifecycle operation at a time per batch service.
    locks: KeyedLocks,
    /// Creates one at a time: the quota check and the insert cannot interleave.
    create: tokio::sync::Mutex<()>,
    /// The running jobs, to stop them: by service, with the run's number.
    jobs: Mutex<HashMap<String, (u64, CancellationToken)>>,
    generation: AtomicU64,
    quota: u32,
    manifest_lines: usize,
}

pub struct BatchesParts {
    pub store: Store,
    pub models: Models,
    pub services: Services,
    pub secrets: Arc<SecretBox>,
    pub tasks: TaskTracker,
    /// Batch services a user may have (seed 9.5: 1,000).
    pub quota: u32,
    /// Lines of one output manifest before it is split.
    pub manifest_lines: usize,
}

impl Batches {
    pub fn new(p: BatchesParts) -> Batches {
        Batches {
            inner: Arc::new(Inner {
                store: p.store,
                models: p.models,
                services: p.services,
                secrets: p.secrets,
                tasks: p.tasks,
                locks: KeyedLocks::default(),
                create: tokio::sync::Mutex::new(()),
                jobs: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                quota: p.quota,
                manifest_lines: p.manifest_lines,
            }),
        }
    }

    /// Deploys a batch service: everything is checked and every input file listed before
    /// anything is written.
    pub async fn deploy(&self, who: &Principal, req: DeployBatch) -> Result<BatchView, BatchError> {
        let name = match &req.name {
            Some(n) => n.clone(),
            None => format!(
                "service-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..4]
            ),
        };
        crate::serving::spec::check_name(&name).map_err(BatchError::Invalid)?;
        crate::serving::spec::check_description(&req.description).map_err(BatchError::Invalid)?;
        let (t, tmin, tmax) = TIMEOUT_MINUTES;
        let timeout_minutes =
            crate::serving::spec::bounded("timeout_minutes", req.timeout_minutes, t, tmin, tmax)
                .map_err(BatchError::Invalid)?;
        let instances =
            crate::serving::spec::bounded("instances", req.instances, 1, 1, MAX_INSTANCES)
                .map_err(BatchError::Invalid)?;
        check_envs(&req.envs)?;

        // The caller's storage connection.
        let mut conn = self.inner.store.pool.acquire().await?;
        let c = storage_connections::by_name(&mut conn, &who.user_id, &req.connection)
            .await?
            .ok_or_else(|| {
                BatchError::Invalid(format!(
                    "connection: you have no storage connection named {:?} (atelier storage list)",
                    req.connection
                ))
            })?;
        drop(conn);

        // The model version, its API and the mapping.
        let (v, _) = self
            .inner
            .models
            .deployable(who, &req.model, &req.version)
            .await
            .map_err(|e| BatchError::Invalid(format!("model: {}", Error::from(e).message)))?;
        if !v.settings.deployment_types.contains(&DeploymentType::Batch) {
            return Err(BatchError::Invalid(format!(
                "model {} version {} may not be deployed as a batch service (its deployment_types)",
                v.model, v.version
            )));
        }
        let (target, schema) = if crate::serving::runtime::runs_builtin(&v) {
            let config = v.model_config.as_ref().ok_or_else(|| {
                BatchError::Invalid(format!(
                    "model {} version {} has no config.json",
                    v.model, v.version
                ))
            })?;
            let path = req.request_path.as_deref().unwrap_or("/");
            request::Target::of(config.apis(), path).map_err(BatchError::Invalid)?
        } else {
            // A model with its own server: its instances are launched as a real-time
            // service's, without a processor.
            if v.processor.is_some() {
                return Err(BatchError::Invalid(engine_with_processor(&format!(
                    "model {} version {}",
                    v.model, v.version
                ))));
            }
            let config = v.model_config.as_ref().or(v.settings.config.as_ref());
            let apis = config.map(|c| c.apis()).unwrap_or_default();
            request::Target::for_engine(apis, req.request_path.as_deref())
                .map_err(BatchError::Invalid)?
        };
        let request_path = target.path.clone();
        if let Some(m) = &req.mapping {
            if target.form != request::Form::Json {
                return Err(BatchError::Invalid(
                    "mapping: only for a model whose API takes application/json (seed 9.5)".into(),
                ));
            }
            let schema = schema.as_ref().ok_or_else(|| {
                BatchError::Invalid(format!(
                    "mapping: the model's API {request_path} has no request schema (apis[].request.data) to map CSV columns to"
                ))
            })?;
            mapping::Mapping::resolve(schema, m).map_err(BatchError::Invalid)?;
        }

        // The input and the output.
        let only_bucket = c.bucket.clone();
        let in_bucket = |field: &str, b: &str| match &only_bucket {
            Some(only) if only != b => Err(BatchError::Invalid(format!(
                "{field}: bucket {b:?} is not the connection's bucket {only:?}"
            ))),
            _ => Ok(()),
        };
        let input = Input::parse(&req.input).map_err(BatchError::Invalid)?;
        in_bucket("input", input.bucket())?;
        let out_uri = ObjectUri::parse(req.output.trim())
            .map_err(|e| BatchError::Invalid(format!("output: {e}")))?;
        if out_uri.key.ends_with(".manifest") {
            return Err(BatchError::Invalid(
                "output: name a folder (obs://BUCKET/FOLDER/), not a file".into(),
            ));
        }
        let out_uri = ObjectUri {
            key: out_uri.dir_prefix(),
            bucket: out_uri.bucket,
        };
        in_bucket("output", &out_uri.bucket)?;
        let target_conn = connections::target(&c, &self.inner.secrets)?;
        let client = s3::client(&target_conn, Duration::from_secs(60), 3);
        let storage = |e: String| BatchError::Invalid(e);
        let existing = transfer::list_all(&client, &out_uri.bucket, &out_uri.key)
            .await
            .map_err(|e| storage(format!("output: {e}")))?;
        if let Some((k, _)) = existing.iter().find(|(k, _)| *k != out_uri.key) {
            return Err(BatchError::Invalid(format!(
                "output: {out_uri} is not empty (it holds {} objects, such as obs://{}/{k}); name an empty folder",
                existing.len(),
                out_uri.bucket
            )));
        }
        let sources = match &input {
            Input::Folder(u) => {
                let listing = transfer::list_all(&client, &u.bucket, &u.key)
                    .await
                    .map_err(|e| storage(format!("input: {e}")))?;
                let skip = (u.bucket == out_uri.bucket).then_some(out_uri.key.as_str());
                input::folder_items(&u.bucket, &listing, skip).map_err(BatchError::Invalid)?
            }
            Input::Manifest(u) => {
                let text = job::read_small(&client, u, input::MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|e| storage(format!("input: {e}")))?;
                let text = String::from_utf8(text)
                    .map_err(|_| BatchError::Invalid(format!("input: {u} is not UTF-8 text")))?;
                input::manifest_items(&text, only_bucket.as_deref()).map_err(BatchError::Invalid)?
            }
        };
        if sources.is_empty() {
            return Err(BatchError::Invalid(format!(
                "input: {} names no files",
                req.input.trim()
            )));
        }
        let items = new_items(sources);

        let spec = BatchSpec {
            model_id: v.model_id.clone(),
            model: v.model.clone(),
            version: v.version.clone(),
            input: req.input.trim().to_string(),
            output: out_uri.to_string(),
            connection: c.name.clone(),
            request_path,
            mapping: req.mapping.clone(),
            instances,
            envs: req.envs.clone(),
            timeout_minutes,
        };
        let spec_json = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
        let id = uuid::Uuid::new_v4().to_string();
        let task_id = new_task_id();
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &name).await?.is_some() {
            return Err(BatchError::Conflict(format!(
                "you already have a batch service named {name:?}"
            )));
        }
        let count = rows::count_for_owner(&mut tx, &who.user_id).await?;
        if count >= i64::from(self.inner.quota) {
            return Err(BatchError::Conflict(format!(
                "you have {count} batch services, the most allowed ({}; ATELIER_BATCH_QUOTA); delete one first",
                self.inner.quota
            )));
        }
        rows::insert(
            &mut tx,
            rows::NewBatch {
                id: &id,
                owner_id: &who.user_id,
                name: &name,
                description: &req.description,
                model_version_id: &v.id,
                connection_id: &c.id,
                task_id: &task_id,
                spec: &spec_json,
                now: &crate::store::now(),
            },
        )
        .await?;
        rows::insert_items(&mut tx, &id, &items).await?;
        // The version must still be NORMAL now (a delete may have begun meanwhile).
        let still = crate::store::models::version_by_id(&mut tx, &v.id).await?;
        if still.is_none_or(|x| x.status != crate::lifecycle::model::ModelStatus::Normal) {
            return Err(BatchError::Invalid(format!(
                "model {} version {} is no longer NORMAL",
                v.model, v.version
            )));
        }
        operations::begin(&mut tx, &id, BatchStatus::Deploying).await?;
        resource_events::record(&mut tx, &Row::of(&id, None, BatchEvent::DeployStarted)).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::DeployService,
            Target {
                kind: "batch",
                id: &id,
                name: &name,
            },
            "accepted",
            None,
        )
        .await?;
        tx.commit().await?;
        self.spawn_job(id.clone());
        self.view_by_id(&id).await
    }

    /// The caller's batch service `key` (its id or their service's name); another user's
    /// is "not found" (an admin finds it by id).
    async fn find(&self, who: &Principal, key: &str) -> Result<BatchRow, BatchError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        if let Some(b) = rows::by_id(&mut conn, key).await?
            && (b.owner_id == who.user_id || who.is_admin())
        {
            return Ok(b);
        }
        rows::by_name(&mut conn, &who.user_id, key)
            .await?
            .ok_or_else(|| BatchError::NotFound(format!("batch service {key} not found")))
    }

    pub async fn list(&self, who: &Principal, all: bool) -> Result<Vec<BatchView>, BatchError> {
        if all && !who.is_admin() {
            return Err(
                Error::forbidden("listing every user's batch services is for admins").into(),
            );
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let owner = (!all).then_some(who.user_id.as_str());
        let list = rows::list(&mut conn, owner).await?;
        drop(conn);
        let mut out = Vec::with_capacity(list.len());
        for b in list {
            out.push(self.view(b).await?);
        }
        Ok(out)
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<BatchView, BatchError> {
        let b = self.find(who, key).await?;
        self.view(b).await
    }

    pub async fn events(&self, who: &Principal, key: &str) -> Result<Vec<EventRecord>, BatchError> {
        let b = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(resource_events::list(&mut conn, "batch", &b.id, None, 1000).await?)
    }

    /// The service's log (`GET …/logs`): what its engine instances printed and the job's
    /// own lines (its failed items, its end), as a real-time service's.
    pub async fn logs(
        &self,
        who: &Principal,
        key: &str,
        params: &LogParams,
    ) -> Result<Found, BatchError> {
        let b = self.find(who, key).await?;
        let log = self.inner.services.log();
        let req = params.check(log.now_time()).map_err(BatchError::Invalid)?;
        let sources: Vec<_> = log.own_source(&b.id).into_iter().collect();
        Ok(log.search(sources, req).await?)
    }

    async fn view_by_id(&self, id: &str) -> Result<BatchView, BatchError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let row = rows::by_id(&mut conn, id)
            .await?
            .ok_or_else(|| BatchError::NotFound(format!("batch service {id} not found")))?;
        drop(conn);
        self.view(row).await
    }

    async fn view(&self, b: BatchRow) -> Result<BatchView, BatchError> {
        let spec = decode(&b)?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let (pending, succeeded, failed) = rows::progress(&mut conn, &b.id).await?;
        let total = pending + succeeded + failed;
        let results = (b.status == BatchStatus::Completed)
            .then(|| {
                let out = ObjectUri::parse(&spec.output).ok()?;
                let o = Output::new(&out, &b.task_id);
                Some(Results {
                    folder: format!("obs://{}/{}infer-result-{}/", o.bucket, o.prefix, o.task_id),
                    manifests: o
                        .manifest_keys(total as usize, self.inner.manifest_lines)
                        .into_iter()
                        .map(|k| format!("obs://{}/{k}", o.bucket))
                        .collect(),
                })
            })
            .flatten();
        Ok(BatchView {
            id: b.id,
            name: b.name,
            owner: b.owner,
            description: b.description,
            status: b.status,
            status_reason: b.status_reason,
            task_id: b.task_id,
            spec,
            progress: Progress {
                total,
                pending,
                succeeded,
                failed,
            },
            results,
            started_at: b.started_at,
            ended_at: b.ended_at,
            created_at: b.created_at,
            updated_at: b.updated_at,
        })
    }

    /// Starts a stopped, failed or completed service: a stopped or failed one goes on with
    /// its pending items; a completed one runs again from the start, into a new results
    /// folder (a new task id).
    pub async fn start(&self, who: &Principal, key: &str) -> Result<BatchView, BatchError> {
        let b = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&b.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&b.id, BatchOp::Start, BatchStatus::Deploying)
            .resource_event(Row::of(&b.id, None, BatchEvent::Starting))
            .audit(
                &who.name,
                Action::StartService,
                target(&b),
                "accepted",
                None,
            )
            .request(&mut tx, BatchOp::Start, &b.name)
            .await?;
        if b.status == BatchStatus::Completed {
            rows::rerun(&mut tx, &b.id, &new_task_id()).await?;
        }
        rows::set_started(&mut tx, &b.id, &crate::store::now()).await?;
        tx.commit().await?;
        self.spawn_job(b.id.clone());
        self.view_by_id(&b.id).await
    }

    /// Never: the seed's batch services cannot be restarted (409).
    pub async fn restart(&self, who: &Principal, key: &str) -> Result<BatchView, BatchError> {
        self.find(who, key).await?;
        Err(BatchError::Conflict(NO_RESTART.into()))
    }

    /// Stops a job: its workers end, its pending items stay for a start.
    pub async fn stop(&self, who: &Principal, key: &str) -> Result<BatchView, BatchError> {
        let b = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&b.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&b.id, BatchOp::Stop, BatchStatus::Stopping)
            .resource_event(Row::of(&b.id, None, BatchEvent::Stopping))
            .audit(&who.name, Action::StopService, target(&b), "accepted", None)
            .request(&mut tx, BatchOp::Stop, &b.name)
            .await?;
        tx.commit().await?;
        // A running job sees the status and finishes the stop when its workers are done;
        // with none, it is finished here.
        let job = self.job_token(&b.id);
        match job {
            Some(token) => token.cancel(),
            None => self.finish_stop(&b.id).await?,
        }
        self.view_by_id(&b.id).await
    }

    async fn finish_stop(&self, id: &str) -> Result<(), BatchError> {
        // A job's own end stopped its engine instances; these are a stop a gateway restart
        // cut short.
        self.inner.services.stop_engine_instances(id).await;
        let mut tx = self.inner.store.write().await?;
        let moved = Transition::new(id, &[BatchStatus::Stopping], BatchStatus::Stopped)
            .resource_event(Row::of(id, None, BatchEvent::Stopped))
            .apply(&mut tx)
            .await?;
        if moved {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Changes a service's description, instances, variables or timeout (not while it
    /// deploys, seed 9.8.4).
    pub async fn update(
        &self,
        who: &Principal,
        key: &str,
        req: UpdateBatch,
    ) -> Result<BatchView, BatchError> {
        let b = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&b.id).await;
        BatchOp::Update.check(&b.name, b.status)?;
        let mut spec = decode(&b)?;
        let description = match &req.description {
            Some(d) => {
                crate::serving::spec::check_description(d).map_err(BatchError::Invalid)?;
                d.clone()
            }
            None => b.description.clone(),
        };
        if req.instances.is_some() {
            spec.instances =
                crate::serving::spec::bounded("instances", req.instances, 1, 1, MAX_INSTANCES)
                    .map_err(BatchError::Invalid)?;
        }
        if req.timeout_minutes.is_some() {
            let (t, tmin, tmax) = TIMEOUT_MINUTES;
            spec.timeout_minutes = crate::serving::spec::bounded(
                "timeout_minutes",
                req.timeout_minutes,
                t,
                tmin,
                tmax,
            )
            .map_err(BatchError::Invalid)?;
        }
        if let Some(envs) = &req.envs {
            check_envs(envs)?;
            spec.envs = envs.clone();
        }
        let spec_json = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
        let mut tx = self.inner.store.write().await?;
        // Still where an update is allowed (a compare-and-set on the status it was read in).
        let current = crate::store::transition::status_of::<BatchStatus>(&mut tx, &b.id).await?;
        if current != Some(b.status) {
            return Err(crate::store::transition::Denied::moved(
                BatchOp::KIND,
                &b.name,
                current.unwrap_or(b.status),
            )
            .into());
        }
        rows::set_spec(&mut tx, &b.id, &spec_json, &description).await?;
        resource_events::record(&mut tx, &Row::of(&b.id, None, BatchEvent::Updating)).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::UpdateService,
            target(&b),
            "succeeded",
            None,
        )
        .await?;
        tx.commit().await?;
        self.view_by_id(&b.id).await
    }

    /// Deletes a service (its events stay, its output objects too: they are the user's).
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), BatchError> {
        let b = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&b.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&b.id, BatchOp::Delete, BatchStatus::Deleting)
            .audit(
                &who.name,
                Action::DeleteService,
                target(&b),
                "accepted",
                None,
            )
            .request(&mut tx, BatchOp::Delete, &b.name)
            .await?;
        tx.commit().await?;
        if let Some(token) = self.job_token(&b.id) {
            token.cancel();
        }
        // The job ends (its engine instances stopped) before its service goes.
        let _job = self.inner.locks.lock(&format!("job:{}", b.id)).await;
        self.finish_delete(&b.id).await
    }

    async fn finish_delete(&self, id: &str) -> Result<(), BatchError> {
        self.inner.services.stop_engine_instances(id).await;
        if let Err(e) = self.inner.services.log().remove(id).await {
            tracing::warn!(batch = %id, error = %e, "removing a batch service's log failed");
        }
        let mut tx = self.inner.store.write().await?;
        rows::delete(&mut tx, id).await?;
        operations::end::<BatchStatus>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// At a gateway start: jobs that were deploying or running go on from their pending
    /// items; stops and deletes finish. Work that keeps killing the gateway is given up.
    pub async fn resume(&self) -> anyhow::Result<()> {
        for p in operations::resume::<BatchStatus>(&self.inner.store).await? {
            let id = p.resource_id.clone();
            match p.status {
                BatchStatus::Deploying | BatchStatus::Running if p.exhausted() => {
                    let why = format!(
                        "the job was cut short by {} gateway restarts; start it again to go on",
                        p.attempts - 1
                    );
                    if job::fail(&self.inner.store, &id, &why).await? {
                        self.inner
                            .services
                            .log()
                            .gateway(&id, &format!("FAILED: {why}"));
                    }
                }
                BatchStatus::Deploying | BatchStatus::Running => self.spawn_job(id),
                BatchStatus::Stopping => {
                    if let Err(e) = self.finish_stop(&id).await {
                        tracing::warn!(batch = %id, error = %Error::from(e), "finishing a stop failed");
                    }
                }
                BatchStatus::Deleting => {
                    if let Err(e) = self.finish_delete(&id).await {
                        tracing::warn!(batch = %id, error = %Error::from(e), "finishing a delete failed");
                    }
                }
                _ => {}
            }
        }
        // Engine instances that nothing runs any more (a gateway killed as a job ended or
        // its service went) are stopped.
        let mut conn = self.inner.store.pool.acquire().await?;
        let left = crate::store::service_instances::left_over(&mut conn).await?;
        drop(conn);
        for id in left {
            tracing::info!(service = %id, "stopping engine instances left of a job or service that is over");
            self.inner.services.stop_engine_instances(&id).await;
        }
        Ok(())
    }

    /// At gateway shutdown: every running job ends (its status stays, so the next start
    /// goes on with its pending items).
    pub fn shutdown(&self) {
        if let Ok(jobs) = self.inner.jobs.lock() {
            for (_, token) in jobs.values() {
                token.cancel();
            }
        }
    }

    fn job_token(&self, id: &str) -> Option<CancellationToken> {
        Some(self.inner.jobs.lock().ok()?.get(id)?.1.clone())
    }

    /// Runs the job of a DEPLOYING or RUNNING service on the lifecycle's task tracker
    /// (one at a time per service).
    fn spawn_job(&self, id: String) {
        let token = CancellationToken::new();
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut jobs) = self.inner.jobs.lock()
            && let Some((_, old)) = jobs.insert(id.clone(), (generation, token.clone()))
        {
            old.cancel();
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let _one = this.inner.locks.lock(&format!("job:{id}")).await;
            job::run(&this, &id, &token).await;
            if let Ok(mut jobs) = this.inner.jobs.lock()
                && jobs.get(&id).is_some_and(|(g, _)| *g == generation)
            {
                jobs.remove(&id);
            }
            // A stop that came while it ran is finished now that its workers are done.
            let status = match this.inner.store.pool.acquire().await {
                Ok(mut conn) => crate::store::transition::status_of::<BatchStatus>(&mut conn, &id)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            if status == Some(BatchStatus::Stopping)
                && let Err(e) = this.finish_stop(&id).await
            {
                tracing::warn!(batch = %id, error = %Error::from(e), "finishing a stop failed");
            }
        });
    }
}

/// Why a model on its own server with a processor is refused (as a real-time service
/// refuses it).
fn engine_with_processor(label: &str) -> String {
    format!(
        "{label} runs on its own server and has a processor (customize_service.wasm), which runs with the built-in ONNX engine only; a model's server does its own pre- and post-processing (as in a real-time service)"
    )
}

/// The service's rows for its input files: each with its result's unique name.
fn new_items(sources: Vec<Source>) -> Vec<NewItem> {
    let mut taken = HashSet::new();
    sources
        .into_iter()
        .enumerate()
        .map(|(i, s)| NewItem {
            seq: i as i64,
            result_name: input::result_name(&s.uri.key, &mut taken),
            source: s.text,
            bucket: s.uri.bucket,
            object_key: s.uri.key,
            size: s.size,
        })
        .collect()
}

/// A task id: 16 hex digits, unique per service and run.
fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

fn check_envs(envs: &BTreeMap<String, String>) -> Result<(), BatchError> {
    // The real-time check, whose messages name `models[0].envs`: here the field is `envs`.
    crate::serving::spec::check_envs(0, envs)
        .map_err(|e| BatchError::Invalid(e.replacen("models[0].", "", 1)))
}

fn target(b: &BatchRow) -> Target<'_> {
    Target {
        kind: "batch",
        id: &b.id,
        name: &b.name,
    }
}

fn decode(b: &BatchRow) -> Result<BatchSpec, BatchError> {
    serde_json::from_str(&b.spec)
        .map_err(|e| BatchError::Internal(anyhow::anyhow!("batch service {}: spec: {e}", b.id)))
}
