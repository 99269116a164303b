//! Training jobs (spec/training.md §1.3, §2.2, §3.1): a user's run of one of their
//! algorithms, or of a custom command, on `nodes` workers. This module checks requests and
//! keeps the rows; `runner.rs` runs the attempts.
//!
//! ```text
//! POST /v1/training-jobs ─► name, algorithm | custom, channels (listed within the seed's
//!     limits), hyperparameters (against the algorithm's schema), env, flavor, nodes,
//!     auto restart, auto stop, tags ─► one transaction: quota, row CREATING, events
//!     ("Training job created."), audit ─► the runner (runner.rs)
//! stop ─► TERMINATING ─► the runner stops the workers ─► TERMINATED
//! delete ─► DELETING ─► workers stopped, their dirs and logs removed, the row gone
//!     (objects in storage stay: they are the user's)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::algorithms::{self, Algorithms, CodeDirSpec, CreateAlgorithm, Engine};
use super::schema::{self, Channel, HpType, Hyperparameter, ObtainedFrom};
use crate::auth::Principal;
use crate::backends::Backend;
use crate::config::{Flavor, TrainingSettings};
use crate::error::Error;
use crate::lifecycle::KeyedLocks;
use crate::lifecycle::training::{JobOp, JobStatus};
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::secrets::SecretBox;
use crate::store::audit::{self, Action, Target};
use crate::store::resource_events::{self, EventRecord, Row, TrainingEvent};
use crate::store::training_jobs::{self as rows, JobRow};
use crate::store::transition::Transition;
use crate::store::{Store, operations, storage_connections};

/// What a training job request fails with.
pub type JobError = crate::error::ResourceError;

/// Inputs of one job: at most 10 GB, 1,000 files, 1 GB a file (seed T8-16).
pub const INPUT_LIMITS: Limits = Limits {
    files: 1000,
    bytes: 10 * 1_000_000_000,
    file_bytes: 1_000_000_000,
};
/// Outputs: at most 1 GB, 128 files, 128 MB a file (seed T8-16), checked at upload.
pub const OUTPUT_LIMITS: Limits = Limits {
    files: 128,
    bytes: 1_000_000_000,
    file_bytes: 128 * 1_000_000,
};
/// Auto restart: 1-128 times, 3 by default (seed 8.10.1).
pub const RESTARTS: (u32, u32, u32) = (3, 1, 128);
/// Consecutive unconditional (or hang) restarts (seed 8.10.1).
pub const MAX_STREAK: i64 = 3;
/// Auto stop: 1-720 hours (seed 8.6).
pub const AUTO_STOP_HOURS: (u32, u32) = (1, 720);
/// Below this mean GPU use (percent) a job carries the low-utilisation alarm (seed 8.11.2).
pub const LOW_GPU_PERCENT: f64 = 50.0;
/// `MA_HANG_DETECT_TIME`: 10-720 minutes, 30 by default (seed T8-40).
pub const HANG_MINUTES: (u64, u64, u64) = (30, 10, 720);
/// Workers of one job.
pub const MAX_NODES: u32 = 16;
pub const MAX_TAGS: usize = 20;
pub const MAX_ENV: usize = 100;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub files: usize,
    pub bytes: u64,
    pub file_bytes: u64,
}

/// `POST /v1/training-jobs` (and what a rebuild copies).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Generated (`job-1a2b`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// One of your algorithms (its id or name); or `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Custom>,
    /// Your storage connection the inputs, outputs and log path are read and written
    /// through (and a custom job's code dir, when its own names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default)]
    pub inputs: Vec<DataPath>,
    #[serde(default)]
    pub outputs: Vec<DataPath>,
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, Value>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_restart: Option<AutoRestart>,
    /// Hours of running after which the job is stopped (1-720).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_hours: Option<u32>,
    /// Seconds without output and without CPU use after which the job is taken as hung
    /// (default: `MA_HANG_DETECT_TIME` minutes, or 30 minutes); at least
    /// `training.min_hang_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_detect_seconds: Option<u64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// An empty folder the workers' logs are copied to (`obs://bucket/folder/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// A webhook for the job's events (JobStarted, JobCompleted, JobFailed, JobTerminated,
    /// JobHanged), signed with HMAC-SHA256 under `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<crate::notify::SubscriptionRequest>,
}

/// The events a job's webhook may ask for (seed 8.6).
pub const EVENTS: &[&str] = &[
    "JobStarted",
    "JobCompleted",
    "JobFailed",
    "JobTerminated",
    "JobHanged",
];

/// A job's own recipe (the seed's "Custom algorithm").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Custom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_command: Option<String>,
}

/// A channel's data: `{"name": "data_url", "path": "obs://bucket/data/"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPath {
    pub name: String,
    pub path: String,
    /// Custom jobs: how the code reads it (the algorithm's says, otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_from: Option<ObtainedFrom>,
    /// Outputs: download what the folder holds before the job starts (resume from its
    /// checkpoints).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub predownload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRestart {
    /// Restarts allowed, 1-128 (default 3).
    #[serde(default = "default_restarts")]
    pub count: u32,
    /// Restart when the code itself fails too (at most 3 in a row); otherwise only
    /// environment faults (a worker killed, lost, a failed pre-check, a hang) restart.
    #[serde(default)]
    pub unconditional: bool,
}

fn default_restarts() -> u32 {
    RESTARTS.0
}

/// A channel of the job, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub name: String,
    /// `obs://bucket/prefix/`.
    pub path: String,
    pub obtained_from: ObtainedFrom,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub predownload: bool,
}

/// What the `spec` column holds: the request as given, and what it resolved to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub request: CreateJob,
    /// The algorithm's name when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// How it runs: the algorithm's engine, or the custom recipe's.
    pub engine: Engine,
    /// The hyperparameters' schema (the algorithm's; for a custom job, the values' types).
    pub schema: Vec<Hyperparameter>,
    /// The values the job runs with, by name.
    pub hyperparameters: BTreeMap<String, Value>,
    pub inputs: Vec<Data>,
    pub outputs: Vec<Data>,
    /// The storage connection (name, id) of the inputs, outputs and log path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<(String, String)>,
    pub env: BTreeMap<String, String>,
    pub flavor: String,
    pub nodes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_restart: Option<AutoRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_hours: Option<u32>,
    pub hang_detect_seconds: u64,
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// The webhook, its secret sealed (the request keeps no secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<crate::notify::Subscription>,
}

impl JobSpec {
    /// The hyperparameters with the job's values as their defaults: what
    /// [`super::runtime::runtime`] turns into `--name=value` arguments.
    pub fn valued(&self) -> Vec<Hyperparameter> {
        self.schema
            .iter()
            .filter_map(|h| {
                let v = self.hyperparameters.get(&h.name)?;
                Some(Hyperparameter {
                    default: Some(v.clone()),
                    ..h.clone()
                })
            })
            .collect()
    }

    pub fn channels(list: &[Data]) -> Vec<Channel> {
        list.iter()
            .map(|d| Channel {
                name: d.name.clone(),
                description: String::new(),
                obtained_from: d.obtained_from,
            })
            .collect()
    }

    pub fn restarts(&self) -> u32 {
        self.auto_restart.map_or(0, |a| a.count)
    }
}

/// A training job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    pub engine: Engine,
    pub hyperparameters: BTreeMap<String, Value>,
    pub inputs: Vec<Data>,
    pub outputs: Vec<Data>,
    pub env: BTreeMap<String, String>,
    pub flavor: String,
    pub nodes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_restart: Option<AutoRestart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_hours: Option<u32>,
    pub hang_detect_seconds: u64,
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// The webhook (its URL and events; never its secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<crate::notify::Subscription>,
    /// The attempt running or last run (0 first).
    pub attempt: i64,
    /// Restarts so far (the seed's Retries).
    pub retries: i64,
    /// Seconds it has run (every attempt's RUNNING time).
    pub duration_seconds: i64,
    /// The seed's Fault Recovery Details.
    pub recoveries: Vec<rows::RecoveryRow>,
    /// The seed's low-utilisation alarm: worker 0's mean GPU use in this attempt is below
    /// 50 % (absent without GPU samples: a CPU flavor, or a host without NVML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_gpu_utilization: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// Which log `GET …/logs` reads.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub worker: i64,
    pub attempt: Option<i64>,
    /// Without the platform's lines (the seed's "System logs" unticked).
    pub user_only: bool,
    pub contains: Option<String>,
}

/// A piece of a log.
pub struct LogChunk {
    /// The job's id (a follower's bell: [`Jobs::log_bell`]).
    pub job_id: String,
    pub text: String,
    /// Where the next piece starts.
    pub next: u64,
    pub attempt: i64,
    /// Whether more may come (the attempt is under way).
    pub live: bool,
}

/// The training jobs.
#[derive(Clone)]
pub struct Jobs {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub algorithms: Algorithms,
    /// The plugin host (Wasm algorithms' runs).
    pub plugins: crate::plugins::Plugins,
    pub secrets: Arc<SecretBox>,
    pub tasks: TaskTracker,
    pub flavors: Vec<Flavor>,
    pub settings: TrainingSettings,
    /// Seconds in one hour of auto stop (`lease_hour_secs`: 3600 but in tests and demos).
    pub hour_secs: u64,
    /// `<data>/training`: per job its workers' mounts, staged inputs and logs.
    pub dir: PathBuf,
    /// One lifecycle operation at a time per job.
    pub locks: KeyedLocks,
    /// Creates one at a time: the quota check and the insert cannot interleave.
    pub create: tokio::sync::Mutex<()>,
    /// The runners, by job: cancelled to stop or delete one, or at shutdown.
    pub runners: Mutex<BTreeMap<String, CancellationToken>>,
    /// Per followed job: rung each time its runner copies more of its logs (what a
    /// `logs?follow=true` waits on; entries go when their last follower does).
    pub bells: Mutex<BTreeMap<String, tokio::sync::watch::Sender<u64>>>,
    /// Jobs running at once (`training.running_jobs`).
    pub slots: Arc<tokio::sync::Semaphore>,
    pub shutdown: CancellationToken,
}

pub struct JobsParts {
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    pub algorithms: Algorithms,
    pub plugins: crate::plugins::Plugins,
    pub secrets: Arc<SecretBox>,
    pub tasks: TaskTracker,
    pub flavors: Vec<Flavor>,
    pub settings: TrainingSettings,
    /// Seconds in one hour of auto stop (`lease_hour_secs`).
    pub hour_secs: u64,
    pub data_dir: PathBuf,
}

impl Jobs {
    pub fn new(p: JobsParts) -> Jobs {
        Jobs {
            inner: Arc::new(Inner {
                slots: Arc::new(tokio::sync::Semaphore::new(
                    p.settings.running_jobs as usize,
                )),
                store: p.store,
                backend: p.backend,
                algorithms: p.algorithms,
                plugins: p.plugins,
                secrets: p.secrets,
                tasks: p.tasks,
                flavors: p.flavors,
                settings: p.settings,
                hour_secs: p.hour_secs,
                dir: p.data_dir.join("training"),
                locks: KeyedLocks::default(),
                create: tokio::sync::Mutex::new(()),
                runners: Mutex::new(BTreeMap::new()),
                bells: Mutex::new(BTreeMap::new()),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Creates a job: everything checked and every channel listed before anything is
    /// written; then its runner starts.
    pub async fn create(&self, who: &Principal, req: CreateJob) -> Result<JobView, JobError> {
        let name = match &req.name {
            Some(n) => n.clone(),
            None => format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..4]),
        };
        check_job_name(&name)?;
        schema::check_description("description", &req.description).map_err(JobError::Invalid)?;
        let id = uuid::Uuid::new_v4().to_string();
        let (spec, algorithm_id, warnings) = self.resolve(who, &req, &id).await?;
        let spec_json = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &name).await?.is_some() {
            return Err(JobError::Conflict(format!(
                "you already have a training job named {name:?}"
            )));
        }
        let count = rows::count(&mut tx, &who.user_id).await?;
        if count >= i64::from(self.inner.settings.jobs_per_user) {
            return Err(JobError::Conflict(format!(
                "you have {count} training jobs, the most allowed ({}; ATELIER_TRAINING_QUOTA); delete one first",
                self.inner.settings.jobs_per_user
            )));
        }
        if let Some(a) = &algorithm_id
            && crate::store::algorithms::by_id(&mut tx, a).await?.is_none()
        {
            return Err(JobError::Invalid(
                "algorithm: it was deleted meanwhile".into(),
            ));
        }
        rows::insert(
            &mut tx,
            rows::NewJob {
                id: &id,
                owner_id: &who.user_id,
                name: &name,
                description: &req.description,
                algorithm_id: algorithm_id.as_deref(),
                spec: &spec_json,
                now: &crate::store::now(),
            },
        )
        .await?;
        operations::begin(&mut tx, &id, JobStatus::Creating).await?;
        resource_events::record(&mut tx, &Row::of(&id, None, TrainingEvent::Created)).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::CreateTrainingJob,
            Target {
                kind: "training_job",
                id: &id,
                name: &name,
            },
            "accepted",
            None,
        )
        .await?;
        tx.commit().await?;
        self.spawn_runner(id.clone());
        let mut v = self.view_by_id(&id).await?;
        v.warnings = warnings;
        Ok(v)
    }

    /// Checks a request as [`Self::create`] does (its channels listed) and writes nothing:
    /// what a search's template is checked with.
    pub async fn check(&self, who: &Principal, req: &CreateJob) -> Result<JobSpec, JobError> {
        if let Some(n) = &req.name {
            check_job_name(n)?;
        }
        schema::check_description("description", &req.description).map_err(JobError::Invalid)?;
        // A throwaway id: the webhook's secret is sealed for it, and nothing is kept.
        let id = uuid::Uuid::new_v4().to_string();
        Ok(self.resolve(who, req, &id).await?.0)
    }

    /// The request checked and resolved: the spec, the algorithm's id, warnings.
    async fn resolve(
        &self,
        who: &Principal,
        req: &CreateJob,
        id: &str,
    ) -> Result<(JobSpec, Option<String>, Vec<String>), JobError> {
        let mut warnings = Vec::new();
        // The recipe.
        let (algorithm, algorithm_id, algo) = match (&req.algorithm, &req.custom) {
            (Some(_), Some(_)) => {
                return Err(JobError::Invalid(
                    "custom: give an algorithm or a custom recipe, not both".into(),
                ));
            }
            (None, None) => {
                return Err(JobError::Invalid(
                    "algorithm: name one of your algorithms (atelier algorithm list), or give a custom recipe {image, code_dir, boot_file | boot_command}".into(),
                ));
            }
            (Some(a), None) => {
                let a = self.inner.algorithms.get(who, a).await.map_err(|e| {
                    JobError::Invalid(format!("algorithm: {}", Error::from(e).message))
                })?;
                (Some(a.name.clone()), Some(a.id.clone()), a.spec)
            }
            (None, Some(c)) => {
                let code_dir = match &c.code_dir {
                    Some(path) => Some(CodeDirSpec {
                        connection: req.connection.clone().ok_or_else(|| {
                            JobError::Invalid(
                                "connection: a custom code_dir is read through one of your storage connections; name it".into(),
                            )
                        })?,
                        path: path.clone(),
                    }),
                    None => None,
                };
                let as_algorithm = CreateAlgorithm {
                    name: "custom".into(),
                    description: String::new(),
                    plugin: None,
                    image: c.image.clone(),
                    code_dir,
                    boot_file: c.boot_file.clone(),
                    boot_command: c.boot_command.clone(),
                    inputs: Some(custom_channels(&req.inputs)),
                    outputs: Some(custom_channels(&req.outputs)),
                    hyperparameters: Some(custom_schema(&req.hyperparameters)?),
                };
                let spec = self
                    .inner
                    .algorithms
                    .container_spec(who, &as_algorithm)
                    .await
                    .map_err(|e| {
                        let m = Error::from(e).message;
                        JobError::Invalid(format!("custom.{m}"))
                    })?;
                (None, None, spec)
            }
        };
        if let Engine::Wasm { .. } = &algo.engine
            && req.nodes.is_some_and(|n| n > 1)
        {
            return Err(JobError::Invalid(
                "nodes: a Wasm algorithm runs in the gateway's plugin host, on one worker".into(),
            ));
        }
        // Hyperparameters against the schema.
        let hyperparameters = check_values(&algo.hyperparameters, &req.hyperparameters)?;
        // Env.
        if req.env.len() > MAX_ENV {
            return Err(JobError::Invalid(format!(
                "env: {} variables; at most {MAX_ENV}",
                req.env.len()
            )));
        }
        let mut hang_minutes = None;
        for (k, v) in &req.env {
            check_env_name(k)?;
            if v.len() > 4096 || v.contains('\0') {
                return Err(JobError::Invalid(format!(
                    "env.{k}: at most 4096 bytes, no NUL"
                )));
            }
            match k.as_str() {
                "MA_HANG_DETECT_TIME" => {
                    let (_, lo, hi) = HANG_MINUTES;
                    let m: u64 = v.trim().parse().ok().filter(|m| (lo..=hi).contains(m)).ok_or_else(|| {
                        JobError::Invalid(format!(
                            "env.MA_HANG_DETECT_TIME: {v:?} is not a number of minutes from {lo} to {hi}"
                        ))
                    })?;
                    hang_minutes = Some(m);
                }
                "MA_RUN_METHOD" if !v.is_empty() && v != "torchrun" => {
                    return Err(JobError::Invalid(format!(
                        "env.MA_RUN_METHOD: {v:?} is not supported; torchrun is"
                    )));
                }
                "MA_RUN_METHOD"
                | "MA_EXTRA_TORCHRUN_PARAMS"
                | "MA_TORCHRUN_MASTER_PORT"
                | "MA_SKIP_IMAGE_DETECT" => {}
                k if k.starts_with("MA_") => warnings.push(format!(
                    "env.{k}: names starting with MA_ are the platform's (seed 8.11.9); it is set as given"
                )),
                _ => {}
            }
        }
        if let Some(Engine::Container {
            boot_file: None, ..
        }) = Some(&algo.engine)
            && req
                .env
                .get("MA_RUN_METHOD")
                .is_some_and(|m| m == "torchrun")
        {
            return Err(JobError::Invalid(
                "env.MA_RUN_METHOD: torchrun runs a boot file (a .py in the code dir); this job has a boot command".into(),
            ));
        }
        // Flavor, nodes.
        let flavor = match &req.flavor {
            Some(f) => self
                .inner
                .flavors
                .iter()
                .find(|x| &x.id == f)
                .ok_or_else(|| {
                    JobError::Invalid(format!(
                        "flavor: no flavor {f:?}; the flavors are {}",
                        self.inner
                            .flavors
                            .iter()
                            .map(|x| x.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            None => self
                .inner
                .flavors
                .iter()
                .find(|x| x.kind == "cpu")
                .or(self.inner.flavors.first())
                .ok_or_else(|| JobError::Invalid("flavor: this gateway has no flavors".into()))?,
        };
        let nodes = req.nodes.unwrap_or(1);
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(JobError::Invalid(format!(
                "nodes: {nodes}; a job runs on 1 to {MAX_NODES} workers"
            )));
        }
        let need = flavor.accelerator_count() * nodes;
        if need > 0 && !self.inner.backend.engine_accelerators() {
            return Err(JobError::Invalid(format!(
                "flavor: {} gives each worker {} accelerators, and the {} backend gives jobs none; pick a CPU flavor",
                flavor.id,
                flavor.accelerator_count(),
                self.inner.backend.name()
            )));
        }
        if let Some((have, what)) = crate::gpu::shortfall(&flavor.kind, need) {
            return Err(JobError::Invalid(format!(
                "flavor: {} needs {} {what}(s) per worker, {need} for {nodes} worker(s), and this host has {have}; pick a CPU flavor or fewer nodes",
                flavor.id,
                flavor.accelerator_count()
            )));
        }
        if let Some(a) = &req.auto_restart
            && !(RESTARTS.1..=RESTARTS.2).contains(&a.count)
        {
            return Err(JobError::Invalid(format!(
                "auto_restart.count: {}; 1 to 128 restarts",
                a.count
            )));
        }
        if let Some(h) = req.auto_stop_hours
            && !(AUTO_STOP_HOURS.0..=AUTO_STOP_HOURS.1).contains(&h)
        {
            return Err(JobError::Invalid(format!(
                "auto_stop_hours: {h}; 1 to 720 hours"
            )));
        }
        let hang_detect_seconds = match req.hang_detect_seconds {
            Some(s) => {
                let min = self.inner.settings.min_hang_secs;
                if !(min..=HANG_MINUTES.2 * 60).contains(&s) {
                    return Err(JobError::Invalid(format!(
                        "hang_detect_seconds: {s}; from {min} (training.min_hang_secs) to {}",
                        HANG_MINUTES.2 * 60
                    )));
                }
                s
            }
            None => hang_minutes.unwrap_or(HANG_MINUTES.0) * 60,
        };
        if req.tags.len() > MAX_TAGS {
            return Err(JobError::Invalid(format!(
                "tags: {} tags; at most {MAX_TAGS}",
                req.tags.len()
            )));
        }
        for (k, v) in &req.tags {
            if k.is_empty()
                || k.len() > 128
                || v.len() > 255
                || k.chars().chain(v.chars()).any(char::is_control)
            {
                return Err(JobError::Invalid(format!(
                    "tags.{}: keys are 1-128 characters, values at most 255, no control characters",
                    k.chars().take(40).collect::<String>()
                )));
            }
        }
        // The channels: every one of the algorithm's given a path, nothing else.
        let conn = match &req.connection {
            Some(c) => {
                let mut db = self.inner.store.pool.acquire().await?;
                let row = storage_connections::by_name(&mut db, &who.user_id, c)
                    .await?
                    .ok_or_else(|| {
                        JobError::Invalid(format!(
                            "connection: you have no storage connection named {c:?} (atelier storage list)"
                        ))
                    })?;
                Some(row)
            }
            None => None,
        };
        let inputs = bind_channels("inputs", &algo.inputs, &req.inputs, false)?;
        let outputs = bind_channels("outputs", &algo.outputs, &req.outputs, true)?;
        if (!inputs.is_empty() || !outputs.is_empty() || req.log_path.is_some()) && conn.is_none() {
            return Err(JobError::Invalid(
                "connection: the job's inputs, outputs and log path are read and written through one of your storage connections; name it".into(),
            ));
        }
        let log_path = match &req.log_path {
            Some(p) => Some(folder_uri("log_path", p)?),
            None => None,
        };
        if let Some(c) = &conn {
            let target = connections::target(c, &self.inner.secrets).map_err(JobError::Internal)?;
            let client = s3::client(&target, Duration::from_secs(30), 2);
            let bucket_ok = |field: &str, u: &ObjectUri| match &c.bucket {
                Some(only) if *only != u.bucket => Err(JobError::Invalid(format!(
                    "{field}: bucket {:?} is not the connection's bucket {only:?}",
                    u.bucket
                ))),
                _ => Ok(()),
            };
            for (i, d) in inputs.iter().enumerate() {
                let field = format!("inputs[{i}].path");
                let u = ObjectUri::parse(&d.path)
                    .map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
                bucket_ok(&field, &u)?;
                let listing =
                    transfer::list_at_most(&client, &u.bucket, &u.key, INPUT_LIMITS.files + 1)
                        .await
                        .map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
                check_listing(&listing, &INPUT_LIMITS)
                    .map_err(|e| JobError::Invalid(format!("{field}: {}: {e}", d.path)))?;
                if listing.is_empty() {
                    return Err(JobError::Invalid(format!(
                        "{field}: {} holds nothing",
                        d.path
                    )));
                }
            }
            for (i, d) in outputs.iter().enumerate() {
                let field = format!("outputs[{i}].path");
                let u = ObjectUri::parse(&d.path)
                    .map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
                bucket_ok(&field, &u)?;
                // Reachable now (the bucket exists, the connection may list it).
                transfer::list_at_most(&client, &u.bucket, &u.key, 1)
                    .await
                    .map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
            }
            if let Some(l) = &log_path {
                let u =
                    ObjectUri::parse(l).map_err(|e| JobError::Invalid(format!("log_path: {e}")))?;
                bucket_ok("log_path", &u)?;
                let there = transfer::list_at_most(&client, &u.bucket, &u.key, 1)
                    .await
                    .map_err(|e| JobError::Invalid(format!("log_path: {e}")))?;
                if there.iter().any(|(k, _)| *k != u.key) {
                    return Err(JobError::Invalid(format!(
                        "log_path: {l} is not empty; name an empty folder"
                    )));
                }
            }
        }
        let notification = match &req.notification {
            Some(n) => Some(
                crate::notify::subscription("notification", n, EVENTS, &self.inner.secrets, id)
                    .map_err(JobError::Invalid)?,
            ),
            None => None,
        };
        let spec = JobSpec {
            request: CreateJob {
                name: None,
                // The secret is kept sealed in `notification`, never in the request.
                notification: req.notification.clone().map(|n| {
                    crate::notify::SubscriptionRequest {
                        secret: String::new(),
                        ..n
                    }
                }),
                ..req.clone()
            },
            notification,
            algorithm,
            engine: algo.engine.clone(),
            schema: algo.hyperparameters.clone(),
            hyperparameters,
            inputs,
            outputs,
            connection: conn.map(|c| (c.name, c.id)),
            env: req.env.clone(),
            flavor: flavor.id.clone(),
            nodes,
            auto_restart: req.auto_restart,
            auto_stop_hours: req.auto_stop_hours,
            hang_detect_seconds,
            tags: req.tags.clone(),
            log_path,
        };
        Ok((spec, algorithm_id, warnings))
    }

    /// The caller's job `key` (its id or name); another user's is not found (an admin
    /// finds it by id).
    pub(super) async fn find(&self, who: &Principal, key: &str) -> Result<JobRow, JobError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        if let Some(j) = rows::by_key(&mut conn, &who.user_id, key).await? {
            return Ok(j);
        }
        if who.is_admin()
            && let Some(j) = rows::by_id(&mut conn, key).await?
        {
            return Ok(j);
        }
        Err(JobError::NotFound(format!("training job {key} not found")))
    }

    pub async fn list(&self, who: &Principal, all: bool) -> Result<Vec<JobView>, JobError> {
        if all && !who.is_admin() {
            return Err(
                Error::forbidden("listing every user's training jobs is for admins").into(),
            );
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let list = rows::list(&mut conn, (!all).then_some(who.user_id.as_str())).await?;
        drop(conn);
        let mut out = Vec::with_capacity(list.len());
        for j in list {
            out.push(self.view(j).await?);
        }
        Ok(out)
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<JobView, JobError> {
        let j = self.find(who, key).await?;
        self.view(j).await
    }

    pub async fn events(&self, who: &Principal, key: &str) -> Result<Vec<EventRecord>, JobError> {
        let j = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(resource_events::list(&mut conn, "training", &j.id, None, 1000).await?)
    }

    /// The metrics the job reported (`system`: its resource usage instead).
    pub async fn metrics(
        &self,
        who: &Principal,
        key: &str,
        name: Option<&str>,
        system: bool,
    ) -> Result<Vec<rows::MetricRow>, JobError> {
        let j = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(rows::metrics(&mut conn, &j.id, name, system, 100_000).await?)
    }

    /// The job's webhook deliveries.
    pub async fn notifications(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<Vec<crate::notify::Delivery>, JobError> {
        let j = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(crate::notify::deliveries(&mut conn, &j.id).await?)
    }

    pub(super) async fn view_by_id(&self, id: &str) -> Result<JobView, JobError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let row = rows::by_id(&mut conn, id)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("training job {id} not found")))?;
        drop(conn);
        self.view(row).await
    }

    async fn view(&self, j: JobRow) -> Result<JobView, JobError> {
        let spec = decode(&j)?;
        let mut conn = self.inner.store.pool.acquire().await?;
        let recoveries = rows::recoveries(&mut conn, &j.id).await?;
        // GPU samples exist only for GPU flavors: no query for the others (a list's rows).
        let gpu = if self.has_gpus(&spec) {
            rows::mean(&mut conn, &j.id, j.attempt, 0, "system/gpuUtil").await?
        } else {
            None
        };
        let running = super::runner::seconds_since(j.started_at.as_deref());
        Ok(JobView {
            id: j.id,
            name: j.name,
            owner: j.owner_name,
            description: j.description,
            status: j.status,
            status_reason: j.status_reason,
            algorithm: spec.algorithm,
            engine: spec.engine,
            hyperparameters: spec.hyperparameters,
            inputs: spec.inputs,
            outputs: spec.outputs,
            env: spec.env,
            flavor: spec.flavor,
            nodes: spec.nodes,
            auto_restart: spec.auto_restart,
            auto_stop_hours: spec.auto_stop_hours,
            hang_detect_seconds: spec.hang_detect_seconds,
            tags: spec.tags,
            log_path: spec.log_path,
            notification: spec.notification.map(|n| crate::notify::Subscription {
                secret: String::new(),
                ..n
            }),
            attempt: j.attempt,
            retries: j.retries,
            duration_seconds: j.run_seconds + running,
            recoveries,
            low_gpu_utilization: gpu.map(|mean| mean < LOW_GPU_PERCENT),
            warnings: Vec::new(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            ended_at: j.ended_at,
        })
    }

    /// Stops a job: CREATING, PENDING or RUNNING → TERMINATING; its runner stops the
    /// workers and ends it TERMINATED.
    pub async fn stop(&self, who: &Principal, key: &str) -> Result<JobView, JobError> {
        let j = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&j.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&j.id, JobOp::Stop, JobStatus::Terminating)
            .audit(
                &who.name,
                Action::StopTrainingJob,
                target(&j),
                "accepted",
                None,
            )
            .request(&mut tx, JobOp::Stop, &j.name)
            .await?;
        tx.commit().await?;
        match self.runner_token(&j.id) {
            Some(t) => t.cancel(),
            None => self.spawn_runner(j.id.clone()),
        }
        self.view_by_id(&j.id).await
    }

    /// Deletes a job (a running one is stopped first); its objects in storage stay.
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), JobError> {
        let j = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&j.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&j.id, JobOp::Delete, JobStatus::Deleting)
            .resource_event(Row::of(&j.id, None, TrainingEvent::Deleted))
            .audit(
                &who.name,
                Action::DeleteTrainingJob,
                target(&j),
                "accepted",
                None,
            )
            .request(&mut tx, JobOp::Delete, &j.name)
            .await?;
        tx.commit().await?;
        if let Some(t) = self.runner_token(&j.id) {
            t.cancel();
        }
        // The runner ends (its workers stopped) before the job goes.
        let _runner = self.inner.locks.lock(&format!("run:{}", j.id)).await;
        super::runner::finish_delete(self, &j.id).await
    }

    /// A new job with the same request (`name`, or a new default one).
    pub async fn rebuild(
        &self,
        who: &Principal,
        key: &str,
        name: Option<String>,
    ) -> Result<JobView, JobError> {
        let j = self.find(who, key).await?;
        let spec = decode(&j)?;
        let mut req = CreateJob {
            name,
            ..spec.request
        };
        // The webhook's secret, from the original's sealed one.
        if let (Some(n), Some(sub)) = (req.notification.as_mut(), &spec.notification) {
            n.secret = self
                .inner
                .secrets
                .open(&sub.secret, &j.id)
                .map_err(JobError::Internal)?
                .to_string();
        }
        self.create(who, req).await
    }

    /// The request a rebuild would send (the seed's "rebuild" form, filled in).
    pub async fn request_of(&self, who: &Principal, key: &str) -> Result<CreateJob, JobError> {
        let j = self.find(who, key).await?;
        Ok(decode(&j)?.request)
    }

    /// An algorithm of the caller's made from the job's recipe (seed 8.11.8).
    pub async fn save_as_algorithm(
        &self,
        who: &Principal,
        key: &str,
        name: &str,
        description: Option<String>,
    ) -> Result<algorithms::AlgorithmView, JobError> {
        let j = self.find(who, key).await?;
        let spec = decode(&j)?;
        let req = CreateAlgorithm {
            name: name.to_string(),
            description: description.unwrap_or_else(|| j.description.clone()),
            plugin: match &spec.engine {
                Engine::Wasm { plugin } => Some(algorithms::PluginSpec {
                    name: plugin.name.clone(),
                    version: plugin.version.clone(),
                }),
                Engine::Container { .. } => None,
            },
            image: None,
            code_dir: None,
            boot_file: None,
            boot_command: None,
            inputs: None,
            outputs: None,
            hyperparameters: None,
        };
        let req = match &spec.engine {
            Engine::Wasm { .. } => req,
            Engine::Container {
                image,
                code_dir,
                boot_file,
                boot_command,
            } => CreateAlgorithm {
                image: image.clone(),
                code_dir: code_dir.as_ref().map(|c| CodeDirSpec {
                    connection: c.connection.clone(),
                    path: c.path.clone(),
                }),
                boot_file: boot_file.clone(),
                boot_command: boot_command.clone(),
                inputs: Some(JobSpec::channels(&spec.inputs)),
                outputs: Some(JobSpec::channels(&spec.outputs)),
                hyperparameters: Some(
                    spec.schema
                        .iter()
                        .map(|h| Hyperparameter {
                            default: spec
                                .hyperparameters
                                .get(&h.name)
                                .cloned()
                                .or(h.default.clone()),
                            ..h.clone()
                        })
                        .collect(),
                ),
                ..req
            },
        };
        self.inner.algorithms.create(who, req).await
    }

    /// A piece of one worker's log (`GET …/logs`): from byte `from` of the attempt's log
    /// (the current attempt when none is named), at most `max` bytes.
    /// A follower's bell for the job `id` ([`LogChunk::job_id`]): it changes each time the
    /// runner copies more of the job's logs.
    pub fn log_bell(&self, id: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut bells = self.inner.bells.lock().unwrap_or_else(|e| e.into_inner());
        bells.retain(|_, b| b.receiver_count() > 0);
        bells
            .entry(id.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Whether the job's workers get NVIDIA GPUs (their use is sampled, counts as activity,
    /// and may raise the low-utilisation alarm).
    pub(super) fn has_gpus(&self, spec: &JobSpec) -> bool {
        self.inner
            .flavors
            .iter()
            .any(|f| f.id == spec.flavor && f.kind == "gpu" && f.accelerator_count() > 0)
    }

    /// Rings the job's bell, if anyone follows its logs.
    pub(super) fn ring(&self, id: &str) {
        let bells = self.inner.bells.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = bells.get(id) {
            b.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub async fn log_chunk(
        &self,
        who: &Principal,
        key: &str,
        q: &LogQuery,
        from: u64,
        max: u64,
    ) -> Result<LogChunk, JobError> {
        let j = self.find(who, key).await?;
        let spec = decode(&j)?;
        if q.worker < 0 || q.worker >= i64::from(spec.nodes) {
            return Err(JobError::Invalid(format!(
                "worker: {}; the job has workers 0 to {}",
                q.worker,
                spec.nodes - 1
            )));
        }
        let attempt = q.attempt.unwrap_or(j.attempt);
        if attempt < 0 || attempt > j.attempt {
            return Err(JobError::Invalid(format!(
                "attempt: {attempt}; the job has attempts 0 to {}",
                j.attempt
            )));
        }
        let path = super::runner::log_path(self, &j.id, attempt, q.worker);
        let filter = super::joblogs::Query {
            user_only: q.user_only,
            contains: q.contains.clone(),
        };
        let (text, next) =
            tokio::task::spawn_blocking(move || super::joblogs::read(&path, from, max, &filter))
                .await
                .map_err(|e| JobError::Internal(e.into()))?
                .map_err(|e| JobError::Internal(e.into()))?;
        let live = attempt == j.attempt
            && matches!(
                j.status,
                JobStatus::Creating
                    | JobStatus::Pending
                    | JobStatus::Running
                    | JobStatus::Terminating
            );
        Ok(LogChunk {
            job_id: j.id.clone(),
            text,
            next,
            attempt,
            live,
        })
    }

    pub(super) fn runner_token(&self, id: &str) -> Option<CancellationToken> {
        self.inner.runners.lock().ok()?.get(id).cloned()
    }

    /// Runs the job's runner on the task tracker (one at a time per job).
    pub(super) fn spawn_runner(&self, id: String) {
        let token = self.inner.shutdown.child_token();
        if let Ok(mut r) = self.inner.runners.lock()
            && let Some(old) = r.insert(id.clone(), token.clone())
        {
            old.cancel();
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let _one = this.inner.locks.lock(&format!("run:{id}")).await;
            super::runner::run(&this, &id, &token).await;
            if let Ok(mut r) = this.inner.runners.lock()
                && r.get(&id)
                    .is_some_and(|t| t.is_cancelled() == token.is_cancelled())
            {
                r.remove(&id);
            }
        });
    }

    /// At a gateway start: every job under way goes on (RUNNING ones are found again).
    pub async fn resume(&self) -> anyhow::Result<()> {
        for p in operations::resume::<JobStatus>(&self.inner.store).await? {
            match p.status {
                JobStatus::Deleting => {
                    if let Err(e) = super::runner::finish_delete(self, &p.resource_id).await {
                        tracing::warn!(job = %p.resource_id, error = %Error::from(e), "finishing a delete failed");
                    }
                }
                _ => self.spawn_runner(p.resource_id),
            }
        }
        Ok(())
    }

    /// At gateway shutdown: the runners end; the workers go on and are found again.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// The names of the jobs that use `algorithm_id`.
pub async fn using_algorithm(
    tx: &mut crate::store::Conn,
    algorithm_id: &str,
) -> sqlx::Result<Vec<String>> {
    rows::using_algorithm(tx, algorithm_id).await
}

pub(super) fn decode(j: &JobRow) -> Result<JobSpec, JobError> {
    serde_json::from_str(&j.spec)
        .map_err(|e| JobError::Internal(anyhow::anyhow!("training job {}: spec: {e}", j.id)))
}

fn target(j: &JobRow) -> Target<'_> {
    Target {
        kind: "training_job",
        id: &j.id,
        name: &j.name,
    }
}

/// 1-64 of `A-Z a-z 0-9 _ -` (seed T8-13).
fn check_job_name(name: &str) -> Result<(), JobError> {
    schema::check_name("name", name).map_err(JobError::Invalid)
}

/// A variable name: a letter or `_`, then letters, digits, `_` (at most 128).
fn check_env_name(k: &str) -> Result<(), JobError> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.as_bytes()[0].is_ascii_digit();
    if !ok {
        return Err(JobError::Invalid(format!(
            "env: {:?} is not a variable name (letters, digits and _, not starting with a digit)",
            k.chars().take(40).collect::<String>()
        )));
    }
    if matches!(
        k,
        "PATH"
            | "HOME"
            | "USER"
            | "HOSTNAME"
            | "LD_PRELOAD"
            | "MA_HOME"
            | "MA_JOB_DIR"
            | "MA_MOUNT_PATH"
            | "MA_LOG_DIR"
    ) {
        return Err(JobError::Invalid(format!(
            "env.{k}: set by the platform; a job cannot change it"
        )));
    }
    Ok(())
}

/// A custom job's channels from its data paths.
fn custom_channels(list: &[DataPath]) -> Vec<Channel> {
    list.iter()
        .map(|d| Channel {
            name: d.name.clone(),
            description: String::new(),
            obtained_from: d.obtained_from.unwrap_or_default(),
        })
        .collect()
}

/// A custom job's schema: each value's type, the value its default.
fn custom_schema(values: &BTreeMap<String, Value>) -> Result<Vec<Hyperparameter>, JobError> {
    values
        .iter()
        .map(|(k, v)| {
            let kind = match v {
                Value::Bool(_) => HpType::Boolean,
                Value::Number(n) if n.is_i64() || n.is_u64() => HpType::Integer,
                Value::Number(_) => HpType::Float,
                Value::String(_) => HpType::String,
                _ => {
                    return Err(JobError::Invalid(format!(
                        "hyperparameters.{k}: a number, a string or a boolean"
                    )));
                }
            };
            Ok(Hyperparameter {
                name: k.clone(),
                kind,
                default: Some(v.clone()),
                range: None,
                choices: Vec::new(),
                required: false,
                description: String::new(),
            })
        })
        .collect()
}

/// The job's values against the schema: unknown names, types, ranges, choices and the
/// required ones; defaults filled in. A value of `null` drops an optional one.
fn check_values(
    schema: &[Hyperparameter],
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, JobError> {
    if given.len() > schema::MAX_HYPERPARAMETERS {
        return Err(JobError::Invalid(format!(
            "hyperparameters: {} given; at most {}",
            given.len(),
            schema::MAX_HYPERPARAMETERS
        )));
    }
    for k in given.keys() {
        if !schema.iter().any(|h| &h.name == k) {
            return Err(JobError::Invalid(format!(
                "hyperparameters.{}: the algorithm has no such hyperparameter; it has {}",
                k.chars().take(64).collect::<String>(),
                schema
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut out = BTreeMap::new();
    for h in schema {
        let v = match given.get(&h.name) {
            Some(Value::Null) if h.required => {
                return Err(JobError::Invalid(format!(
                    "hyperparameters.{}: required by the algorithm; it cannot be left out",
                    h.name
                )));
            }
            Some(Value::Null) => continue,
            Some(v) => v.clone(),
            None => match &h.default {
                Some(d) => d.clone(),
                None if h.required => {
                    return Err(JobError::Invalid(format!(
                        "hyperparameters.{}: required by the algorithm, and it has no default; give a value",
                        h.name
                    )));
                }
                None => continue,
            },
        };
        schema::check_value(&format!("hyperparameters.{}", h.name), h, &v)
            .map_err(JobError::Invalid)?;
        out.insert(h.name.clone(), v);
    }
    Ok(out)
}

/// The algorithm's channels given their paths: each one exactly once, no other.
fn bind_channels(
    field: &str,
    declared: &[Channel],
    given: &[DataPath],
    outputs: bool,
) -> Result<Vec<Data>, JobError> {
    for (i, g) in given.iter().enumerate() {
        if !declared.iter().any(|c| c.name == g.name) {
            return Err(JobError::Invalid(format!(
                "{field}[{i}].name: {:?} is not one of the algorithm's {field} ({})",
                g.name.chars().take(64).collect::<String>(),
                declared
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if given[..i].iter().any(|o| o.name == g.name) {
            return Err(JobError::Invalid(format!(
                "{field}[{i}].name: {:?} is given twice",
                g.name
            )));
        }
        if g.predownload && !outputs {
            return Err(JobError::Invalid(format!(
                "{field}[{i}].predownload: only outputs are predownloaded"
            )));
        }
    }
    declared
        .iter()
        .map(|c| {
            let (i, g) = given
                .iter()
                .enumerate()
                .find(|(_, g)| g.name == c.name)
                .ok_or_else(|| {
                    JobError::Invalid(format!(
                        "{field}: the algorithm's channel {:?} needs a path",
                        c.name
                    ))
                })?;
            Ok(Data {
                name: c.name.clone(),
                path: folder_uri(&format!("{field}[{i}].path"), &g.path)?,
                obtained_from: c.obtained_from,
                predownload: g.predownload,
            })
        })
        .collect()
}

/// `obs://bucket/folder/`, as a folder.
fn folder_uri(field: &str, p: &str) -> Result<String, JobError> {
    let u = ObjectUri::parse(p.trim()).map_err(|e| JobError::Invalid(format!("{field}: {e}")))?;
    Ok(format!("obs://{}/{}", u.bucket, u.dir_prefix()))
}

/// A listing within `limits`.
pub fn check_listing(listing: &[(String, u64)], limits: &Limits) -> Result<(), String> {
    if listing.len() > limits.files {
        return Err(format!("more than {} files", limits.files));
    }
    let mut total = 0u64;
    for (k, size) in listing {
        if *size > limits.file_bytes {
            return Err(format!(
                "{k} is {size} bytes; at most {} a file",
                limits.file_bytes
            ));
        }
        total += size;
    }
    if total > limits.bytes {
        return Err(format!("{total} bytes; at most {}", limits.bytes));
    }
    Ok(())
}
