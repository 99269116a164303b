//! Real-time services (spec/inference.md §1.3, §2.8, §3.2): a user's named service runs
//! NORMAL model versions with traffic weights, behind `/v1/infers/{id}` and the Open
//! Inference Protocol (`/v2/models/{name}/infer`).
//!
//! ```text
//! POST /v1/services ─► checks (names, versions NORMAL and deployable as real-time,
//!                      weights sum to 100, limits, the quota of 20) ─► DEPLOYING, "The
//!                      service starts to deploy." (one transaction, with its operation)
//!                      └─ task: load each version (runtime.rs: the built-in ONNX engine,
//!                         the processor plugin) within the deploy timeout ─► RUNNING
//!                         ("Service x started.") | FAILED ("Service x failed. Error: …",
//!                         "Service deployment timed out. Error: …")
//! call ─► deployment (memory) ─► traffic limit ─► version by weight ─► call.rs
//! ```
//!
//! Deployments live in the gateway's process: a gateway start deploys its RUNNING and
//! ALARM services again (and resumes what a previous one left DEPLOYING, STOPPING,
//! UPDATING or DELETING). Auto-stop: a RUNNING service stops `auto_stop_seconds` after it
//! started (the seed's default: 1 hour).

pub mod call;
pub mod runtime;
pub mod spec;
pub mod tensors;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::error::{DomainError, Error, Kind};
use crate::lifecycle::clock::Clock;
use crate::lifecycle::service::{SERVING, ServiceOp, ServiceStatus};
use crate::lifecycle::{KeyedLocks, Operation};
use crate::models::{DeploymentType, Models};
use crate::store::audit::{self, Action, Target};
use crate::store::resource_events::{self, EventRecord, Row, ServiceEvent};
use crate::store::services::{self as rows, ServiceRow};
use crate::store::transition::Transition;
use crate::store::{Store, operations};
use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;
use runtime::{Deployment, Deployments, Engines, VersionFiles};
use spec::{DeployService, ServiceSpec, UpdateService, VersionSpec};

/// What a service request fails with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A name taken, the quota reached.
    #[error("{0}")]
    Conflict(String),
    #[error("{}", .0.message)]
    Common(#[from] Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for ServiceError {
    fn kind(&self) -> Kind {
        match self {
            ServiceError::Invalid(_) => Kind::Invalid,
            ServiceError::NotFound(_) => Kind::NotFound,
            ServiceError::Conflict(_) => Kind::Conflict,
            ServiceError::Common(e) => e.kind,
            ServiceError::Internal(_) => Kind::Internal,
        }
    }
}

crate::domain_error!(ServiceError, common: Common, internal: Internal);

impl From<crate::models::ModelError> for ServiceError {
    fn from(e: crate::models::ModelError) -> Self {
        ServiceError::Common(e.into())
    }
}

/// A service as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub description: String,
    pub status: ServiceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Where it is called: `POST <gateway><url>`.
    pub url: String,
    #[serde(flatten)]
    pub spec: ServiceSpec,
    /// When auto-stop stops it (while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The real-time services.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    models: Models,
    host: Arc<atelier_plugins::Host>,
    engines: Engines,
    deployments: Deployments,
    tasks: TaskTracker,
    /// One lifecycle operation at a time per service.
    locks: KeyedLocks,
    /// Creates one at a time: the quota check and the insert cannot interleave.
    create: tokio::sync::Mutex<()>,
    quota: u32,
    clock: Arc<dyn Clock>,
    /// Seconds one hour of auto-stop lasts (3600; less in tests, as notebooks' leases).
    hour_secs: u64,
    metrics: crate::metrics::InferenceMetrics,
}

pub struct ServicesParts {
    pub store: Store,
    pub models: Models,
    pub host: Arc<atelier_plugins::Host>,
    pub onnxruntime_lib: Option<std::path::PathBuf>,
    pub tasks: TaskTracker,
    pub quota: u32,
    pub clock: Arc<dyn Clock>,
    pub hour_secs: u64,
    pub metrics: crate::metrics::InferenceMetrics,
}

fn fmt_time(t: time::OffsetDateTime) -> String {
    crate::store::format_time(t)
}

impl Services {
    pub fn new(p: ServicesParts) -> Services {
        Services {
            inner: Arc::new(Inner {
                store: p.store,
                models: p.models,
                host: p.host,
                engines: Engines::new(p.onnxruntime_lib),
                deployments: Deployments::default(),
                tasks: p.tasks,
                locks: KeyedLocks::default(),
                create: tokio::sync::Mutex::new(()),
                quota: p.quota,
                clock: p.clock,
                hour_secs: p.hour_secs,
                metrics: p.metrics,
            }),
        }
    }

    /// Deploys a new service.
    pub async fn deploy(
        &self,
        who: &Principal,
        req: DeployService,
    ) -> Result<ServiceView, ServiceError> {
        spec::check_name(&req.name).map_err(ServiceError::Invalid)?;
        spec::check_description(&req.description).map_err(ServiceError::Invalid)?;
        let spec = self.spec_of(who, &req).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let spec_json = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
        let now = self.inner.clock.now();
        let deadline = fmt_time(now + time::Duration::minutes(i64::from(spec.timeout_minutes)));
        let _one = self.inner.create.lock().await;
        let mut tx = self.inner.store.write().await?;
        if rows::by_name(&mut tx, &who.user_id, &req.name)
            .await?
            .is_some()
        {
            return Err(ServiceError::Conflict(format!(
                "you already have a service named {:?}",
                req.name
            )));
        }
        let count = rows::count_for_owner(&mut tx, &who.user_id).await?;
        if count >= i64::from(self.inner.quota) {
            return Err(ServiceError::Conflict(format!(
                "you have {count} real-time services, the most allowed ({}; ATELIER_SERVICE_QUOTA); delete one first",
                self.inner.quota
            )));
        }
        rows::insert(
            &mut tx,
            rows::NewService {
                id: &id,
                owner_id: &who.user_id,
                name: &req.name,
                description: &req.description,
                spec: &spec_json,
                deploy_deadline: &deadline,
                now: &crate::store::now(),
            },
        )
        .await?;
        let versions: Vec<&str> = spec.models.iter().map(|m| m.version_id.as_str()).collect();
        rows::set_models(&mut tx, &id, &versions).await?;
        // The versions must still be NORMAL now (a delete may have begun meanwhile).
        for m in &spec.models {
            let v = crate::store::models::version_by_id(&mut tx, &m.version_id).await?;
            if v.is_none_or(|v| v.status != crate::lifecycle::model::ModelStatus::Normal) {
                return Err(ServiceError::Invalid(format!(
                    "model {} version {} is no longer NORMAL",
                    m.model, m.version
                )));
            }
        }
        operations::begin(&mut tx, &id, ServiceStatus::Deploying).await?;
        resource_events::record(&mut tx, &Row::of(&id, None, ServiceEvent::DeployStarted)).await?;
        audit::record(
            &mut tx,
            &who.name,
            Action::DeployService,
            Target {
                kind: "service",
                id: &id,
                name: &req.name,
            },
            "accepted",
            None,
        )
        .await?;
        tx.commit().await?;
        self.spawn_bring_up(id.clone());
        self.view_by_id(&id).await
    }

    /// The stored settings of a deploy request, every model version resolved for `who`.
    async fn spec_of(
        &self,
        who: &Principal,
        req: &DeployService,
    ) -> Result<ServiceSpec, ServiceError> {
        let (t, tmin, tmax) = spec::TIMEOUT_MINUTES;
        let timeout_minutes = spec::bounded("timeout_minutes", req.timeout_minutes, t, tmin, tmax)
            .map_err(ServiceError::Invalid)?;
        let auto_stop_seconds =
            spec::auto_stop_seconds(req.auto_stop.as_ref(), self.inner.hour_secs)
                .map_err(ServiceError::Invalid)?;
        self.spec_with(
            who,
            &req.models,
            timeout_minutes,
            auto_stop_seconds,
            req.traffic_limit,
            req.body_limit_mb,
            req.call_timeout_seconds,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn spec_with(
        &self,
        who: &Principal,
        models: &[spec::ModelChoice],
        timeout_minutes: u32,
        auto_stop_seconds: Option<u64>,
        traffic_limit: Option<u32>,
        body_limit_mb: Option<u32>,
        call_timeout_seconds: Option<u32>,
    ) -> Result<ServiceSpec, ServiceError> {
        let weights = spec::weights(models).map_err(ServiceError::Invalid)?;
        let mut out = Vec::with_capacity(models.len());
        for (i, (m, weight)) in models.iter().zip(weights).enumerate() {
            let instances = spec::bounded(
                &format!("models[{i}].instances"),
                m.instances,
                1,
                1,
                spec::MAX_INSTANCES,
            )
            .map_err(ServiceError::Invalid)?;
            spec::check_envs(i, &m.envs).map_err(ServiceError::Invalid)?;
            let (v, _) = self
                .inner
                .models
                .deployable(who, &m.model, &m.version)
                .await
                .map_err(|e| {
                    let e = Error::from(e);
                    ServiceError::Invalid(format!("models[{i}]: {}", e.message))
                })?;
            if !v
                .settings
                .deployment_types
                .contains(&DeploymentType::RealTime)
            {
                return Err(ServiceError::Invalid(format!(
                    "models[{i}]: model {} version {} may not be deployed as a real-time service (its deployment_types)",
                    v.model, v.version
                )));
            }
            if out.iter().any(|o: &VersionSpec| o.version_id == v.id) {
                return Err(ServiceError::Invalid(format!(
                    "models[{i}]: model {} version {} is listed twice",
                    v.model, v.version
                )));
            }
            out.push(VersionSpec {
                model_id: v.model_id,
                model: v.model,
                version_id: v.id,
                version: v.version,
                weight,
                instances,
                envs: m.envs.clone(),
            });
        }
        if let Some(l) = traffic_limit
            && !(1..=100_000).contains(&l)
        {
            return Err(ServiceError::Invalid(format!(
                "traffic_limit: {l}; between 1 and 100000 calls a second"
            )));
        }
        let (b, bmax) = spec::BODY_LIMIT_MB;
        let body_mb = spec::bounded("body_limit_mb", body_limit_mb, b, 1, bmax)
            .map_err(ServiceError::Invalid)?;
        let (c, cmin, cmax) = spec::CALL_TIMEOUT_SECONDS;
        let call_s = spec::bounded("call_timeout_seconds", call_timeout_seconds, c, cmin, cmax)
            .map_err(ServiceError::Invalid)?;
        Ok(ServiceSpec {
            models: out,
            timeout_minutes,
            auto_stop_seconds,
            traffic_limit,
            body_limit_bytes: u64::from(body_mb) * 1024 * 1024,
            call_timeout_ms: u64::from(call_s) * 1000,
        })
    }

    /// The caller's service `key` (its id or their service's name); another user's is
    /// "not found" (an admin finds it by id).
    async fn find(&self, who: &Principal, key: &str) -> Result<ServiceRow, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        if let Some(s) = rows::by_id(&mut conn, key).await?
            && (s.owner_id == who.user_id || who.is_admin())
        {
            return Ok(s);
        }
        rows::by_name(&mut conn, &who.user_id, key)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("service {key} not found")))
    }

    pub async fn list(&self, who: &Principal, all: bool) -> Result<Vec<ServiceView>, ServiceError> {
        if all && !who.is_admin() {
            return Err(Error::forbidden("listing every user's services is for admins").into());
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let owner = (!all).then_some(who.user_id.as_str());
        rows::list(&mut conn, owner)
            .await?
            .into_iter()
            .map(view)
            .collect()
    }

    pub async fn get(&self, who: &Principal, key: &str) -> Result<ServiceView, ServiceError> {
        view(self.find(who, key).await?)
    }

    pub async fn events(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<Vec<EventRecord>, ServiceError> {
        let s = self.find(who, key).await?;
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(resource_events::list(&mut conn, "service", &s.id, None, 1000).await?)
    }

    async fn view_by_id(&self, id: &str) -> Result<ServiceView, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        let row = rows::by_id(&mut conn, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("service {id} not found")))?;
        view(row)
    }

    /// Starts a stopped (or failed) service: it deploys again.
    pub async fn start(&self, who: &Principal, key: &str) -> Result<ServiceView, ServiceError> {
        self.redeploy(who, key, ServiceOp::Start, Action::StartService)
            .await
    }

    /// Restarts a running service: its instances are loaded again.
    pub async fn restart(&self, who: &Principal, key: &str) -> Result<ServiceView, ServiceError> {
        self.redeploy(who, key, ServiceOp::Restart, Action::RestartService)
            .await
    }

    async fn redeploy(
        &self,
        who: &Principal,
        key: &str,
        op: ServiceOp,
        action: Action,
    ) -> Result<ServiceView, ServiceError> {
        let s = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&s.id).await;
        let spec = decode(&s)?;
        let deadline = fmt_time(
            self.inner.clock.now() + time::Duration::minutes(i64::from(spec.timeout_minutes)),
        );
        let mut tx = self.inner.store.write().await?;
        Transition::of(&s.id, op, ServiceStatus::Deploying)
            .resource_event(Row::of(&s.id, None, ServiceEvent::Starting))
            .audit(&who.name, action, target(&s), "accepted", None)
            .request(&mut tx, op, &s.name)
            .await?;
        rows::set_deploy_deadline(&mut tx, &s.id, Some(&deadline)).await?;
        rows::set_stop_at(&mut tx, &s.id, None).await?;
        tx.commit().await?;
        self.inner.deployments.remove(&s.id);
        self.spawn_bring_up(s.id.clone());
        self.view_by_id(&s.id).await
    }

    /// Stops a service: its instances go, its settings stay.
    pub async fn stop(&self, who: &Principal, key: &str) -> Result<ServiceView, ServiceError> {
        let s = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&s.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&s.id, ServiceOp::Stop, ServiceStatus::Stopping)
            .resource_event(Row::of(&s.id, None, ServiceEvent::Stopping))
            .audit(&who.name, Action::StopService, target(&s), "accepted", None)
            .request(&mut tx, ServiceOp::Stop, &s.name)
            .await?;
        tx.commit().await?;
        self.finish_stop(&s.id).await?;
        self.view_by_id(&s.id).await
    }

    async fn finish_stop(&self, id: &str) -> Result<(), ServiceError> {
        self.inner.deployments.remove(id);
        let mut tx = self.inner.store.write().await?;
        Transition::new(id, &[ServiceStatus::Stopping], ServiceStatus::Stopped)
            .resource_event(Row::of(id, None, ServiceEvent::Stopped))
            .apply(&mut tx)
            .await?;
        rows::set_stop_at(&mut tx, id, None).await?;
        rows::set_deploy_deadline(&mut tx, id, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a service (its events stay); the model versions it ran are free again.
    pub async fn delete(&self, who: &Principal, key: &str) -> Result<(), ServiceError> {
        let s = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&s.id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::of(&s.id, ServiceOp::Delete, ServiceStatus::Deleting)
            .audit(
                &who.name,
                Action::DeleteService,
                target(&s),
                "accepted",
                None,
            )
            .request(&mut tx, ServiceOp::Delete, &s.name)
            .await?;
        tx.commit().await?;
        self.finish_delete(&s.id).await
    }

    async fn finish_delete(&self, id: &str) -> Result<(), ServiceError> {
        self.inner.deployments.remove(id);
        let mut tx = self.inner.store.write().await?;
        rows::delete(&mut tx, id).await?;
        operations::end::<ServiceStatus>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes a service's settings. A serving service deploys the new settings beside the
    /// old ones (UPDATING, still answering calls) and switches when they are up; if they do
    /// not come up it keeps the old ones ("Failed to update the service. The update has
    /// been rolled back."). Another one keeps the settings for its next start.
    pub async fn update(
        &self,
        who: &Principal,
        key: &str,
        req: UpdateService,
    ) -> Result<ServiceView, ServiceError> {
        let s = self.find(who, key).await?;
        let _held = self.inner.locks.lock(&s.id).await;
        ServiceOp::Update.check(&s.name, s.status)?;
        let old = decode(&s)?;
        let description = match &req.description {
            Some(d) => {
                spec::check_description(d).map_err(ServiceError::Invalid)?;
                d.clone()
            }
            None => s.description.clone(),
        };
        let (t, tmin, tmax) = spec::TIMEOUT_MINUTES;
        let timeout_minutes = spec::bounded(
            "timeout_minutes",
            req.timeout_minutes.or(Some(old.timeout_minutes)),
            t,
            tmin,
            tmax,
        )
        .map_err(ServiceError::Invalid)?;
        let auto_stop_seconds = match &req.auto_stop {
            Some(a) => spec::auto_stop_seconds(Some(a), self.inner.hour_secs)
                .map_err(ServiceError::Invalid)?,
            None => old.auto_stop_seconds,
        };
        let models: Vec<spec::ModelChoice> = match &req.models {
            Some(m) => m.clone(),
            None => old
                .models
                .iter()
                .map(|m| spec::ModelChoice {
                    model: m.model_id.clone(),
                    version: m.version.clone(),
                    weight: Some(m.weight),
                    instances: Some(m.instances),
                    envs: m.envs.clone(),
                })
                .collect(),
        };
        let new = self
            .spec_with(
                who,
                &models,
                timeout_minutes,
                auto_stop_seconds,
                req.traffic_limit.unwrap_or(old.traffic_limit),
                req.body_limit_mb
                    .or(Some((old.body_limit_bytes / (1024 * 1024)) as u32)),
                req.call_timeout_seconds
                    .or(Some((old.call_timeout_ms / 1000) as u32)),
            )
            .await?;
        let serving = SERVING.contains(&s.status);
        let spec_json = serde_json::to_string(&new).map_err(anyhow::Error::from)?;
        let mut tx = self.inner.store.write().await?;
        if serving {
            Transition::of(&s.id, ServiceOp::Update, ServiceStatus::Updating)
                .resource_event(Row::of(&s.id, None, ServiceEvent::Updating))
                .audit(
                    &who.name,
                    Action::UpdateService,
                    target(&s),
                    "accepted",
                    None,
                )
                .request(&mut tx, ServiceOp::Update, &s.name)
                .await?;
            tx.commit().await?;
            let this = self.clone();
            let (id, previous) = (s.id.clone(), s.status);
            self.inner.tasks.spawn(async move {
                this.apply_update(&id, previous, new, spec_json, description)
                    .await;
            });
        } else {
            rows::set_spec(&mut tx, &s.id, &spec_json, &description).await?;
            let versions: Vec<&str> = new.models.iter().map(|m| m.version_id.as_str()).collect();
            rows::set_models(&mut tx, &s.id, &versions).await?;
            resource_events::record(&mut tx, &Row::of(&s.id, None, ServiceEvent::Updating)).await?;
            audit::record(
                &mut tx,
                &who.name,
                Action::UpdateService,
                target(&s),
                "succeeded",
                None,
            )
            .await?;
            tx.commit().await?;
        }
        self.view_by_id(&s.id).await
    }

    async fn apply_update(
        &self,
        id: &str,
        previous: ServiceStatus,
        new: ServiceSpec,
        spec_json: String,
        description: String,
    ) {
        // No lock while loading (minutes, maybe): requests on the service meanwhile are
        // refused by its status (UPDATING), and the compare-and-set below decides.
        let loaded = self.load(id, &new).await;
        let result: anyhow::Result<()> = async {
            let mut tx = self.inner.store.write().await?;
            match loaded {
                Ok(d) => {
                    rows::set_spec(&mut tx, id, &spec_json, &description).await?;
                    let versions: Vec<&str> =
                        new.models.iter().map(|m| m.version_id.as_str()).collect();
                    rows::set_models(&mut tx, id, &versions).await?;
                    let applied =
                        Transition::new(id, &[ServiceStatus::Updating], ServiceStatus::Running)
                            .apply(&mut tx)
                            .await?;
                    if applied {
                        tx.commit().await?;
                        self.install(d).await?;
                    }
                }
                Err(why) => {
                    let applied = Transition::new(id, &[ServiceStatus::Updating], previous)
                        .reason(Some(&why))
                        .resource_event(
                            Row::of(id, None, ServiceEvent::UpdateRolledBack).detail(Some(&why)),
                        )
                        .apply(&mut tx)
                        .await?;
                    if applied {
                        tx.commit().await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(service = %id, error = ?e, "recording a service update failed");
        }
    }

    fn spawn_bring_up(&self, id: String) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            this.bring_up(&id).await;
        });
    }

    /// Loads a DEPLOYING service's versions within its deploy deadline: RUNNING, or FAILED
    /// with the seed's event.
    ///
    /// No lock is held while loading (up to the deploy timeout): a stop or a delete
    /// meanwhile moves the status, the compare-and-set to RUNNING then fails, and the
    /// loaded deployment is dropped.
    async fn bring_up(&self, id: &str) {
        let result: anyhow::Result<()> =
            async {
                let mut conn = self.inner.store.pool.acquire().await?;
                let Some(s) = rows::by_id(&mut conn, id).await? else {
                    return Ok(());
                };
                drop(conn);
                if s.status != ServiceStatus::Deploying {
                    return Ok(());
                }
                let spec = decode(&s).map_err(|e| anyhow::anyhow!("{e}"))?;
                let now = self.inner.clock.now();
                let deadline = s
                    .deploy_deadline
                    .as_deref()
                    .and_then(crate::store::parse_time)
                    .unwrap_or(now + time::Duration::minutes(i64::from(spec.timeout_minutes)));
                let left = (deadline - now).max(time::Duration::ZERO);
                let left = Duration::from_secs_f64(left.as_seconds_f64());
                let outcome = tokio::time::timeout(left, self.load(id, &spec)).await;
                match outcome {
                    Ok(Ok(d)) => {
                        let mut tx = self.inner.store.write().await?;
                        let stop_at = spec.auto_stop_seconds.map(|secs| {
                            fmt_time(self.inner.clock.now() + time::Duration::seconds(secs as i64))
                        });
                        let applied = Transition::new(
                            id,
                            &[ServiceStatus::Deploying],
                            ServiceStatus::Running,
                        )
                        .resource_event(Row::filled(id, None, ServiceEvent::Started, &[&s.name]))
                        .apply(&mut tx)
                        .await?;
                        if applied {
                            rows::set_stop_at(&mut tx, id, stop_at.as_deref()).await?;
                            rows::set_deploy_deadline(&mut tx, id, None).await?;
                            // (the deployment is installed after the commit, below)
                            let auto_stop = match spec.auto_stop_seconds {
                                Some(secs) => Row::filled(
                                    id,
                                    None,
                                    ServiceEvent::AutoStopEnabled,
                                    &[&secs.to_string()],
                                ),
                                None => Row::of(id, None, ServiceEvent::AutoStopDisabled),
                            };
                            resource_events::record(&mut tx, &auto_stop).await?;
                            tx.commit().await?;
                            self.install(d).await?;
                        }
                    }
                    Ok(Err(why)) => {
                        let event = Row::filled(id, None, ServiceEvent::Failed, &[&s.name, &why]);
                        self.fail(id, &[ServiceStatus::Deploying], &why, event)
                            .await?;
                    }
                    Err(_) => {
                        let why = format!(
                            "the service was not up within its deploy timeout ({} minutes)",
                            spec.timeout_minutes
                        );
                        let event = Row::filled(id, None, ServiceEvent::DeployTimedOut, &[&why]);
                        self.fail(id, &[ServiceStatus::Deploying], &why, event)
                            .await?;
                    }
                }
                Ok(())
            }
            .await;
        if let Err(e) = result {
            tracing::error!(service = %id, error = ?e, "deploying a service failed on the gateway's side");
        }
    }

    /// `from` → FAILED, with `why` kept and the seed's `event`.
    async fn fail(
        &self,
        id: &str,
        from: &[ServiceStatus],
        why: &str,
        event: Row<'_>,
    ) -> anyhow::Result<()> {
        let mut tx = self.inner.store.write().await?;
        let applied = Transition::new(id, from, ServiceStatus::Failed)
            .reason(Some(why))
            .resource_event(event)
            .apply(&mut tx)
            .await?;
        if applied {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Loads a service's versions (off the async threads).
    async fn load(&self, id: &str, spec: &ServiceSpec) -> Result<Deployment, String> {
        let mut conn = self
            .inner
            .store
            .pool
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let Some(s) = rows::by_id(&mut conn, id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err("the service is gone".into());
        };
        drop(conn);
        let mut files = Vec::with_capacity(spec.models.len());
        for m in &spec.models {
            let (view, tree) = self
                .inner
                .models
                .version_for_service(&m.version_id)
                .await
                .map_err(|e| {
                    format!(
                        "model {} {}: {}",
                        m.model,
                        m.version,
                        Error::from(e).message
                    )
                })?;
            let tree = tree.ok_or_else(|| {
                format!(
                    "model {} {}: its files are not in the model store",
                    m.model, m.version
                )
            })?;
            files.push(VersionFiles {
                spec: m.clone(),
                view,
                tree,
            });
        }
        let this = self.clone();
        let (id, spec) = (id.to_string(), spec.clone());
        tokio::task::spawn_blocking(move || {
            runtime::load(
                &this.inner.engines,
                &this.inner.host,
                &id,
                &s.name,
                &s.owner_id,
                &spec,
                files,
            )
        })
        .await
        .map_err(|e| format!("the loading thread: {e}"))?
    }

    /// Puts a loaded deployment in service, unless the service stopped serving meanwhile
    /// (a stop or a delete that came while it loaded, and removed nothing): checked after
    /// the put, so whichever comes last of the put and a stop's removal, no deployment of
    /// a service that does not serve stays.
    async fn install(&self, d: Deployment) -> anyhow::Result<()> {
        let id = d.service_id.clone();
        self.inner.deployments.put(d);
        let mut conn = self.inner.store.pool.acquire().await?;
        let status = crate::store::transition::status_of::<ServiceStatus>(&mut conn, &id).await?;
        if !status.is_some_and(|s| SERVING.contains(&s)) {
            self.inner.deployments.remove(&id);
        }
        Ok(())
    }

    /// At a gateway start: deploys again what served, resumes what was under way.
    pub async fn resume(&self) -> anyhow::Result<()> {
        for p in operations::resume::<ServiceStatus>(&self.inner.store).await? {
            let id = p.resource_id.clone();
            match p.status {
                ServiceStatus::Deploying => self.spawn_bring_up(id),
                ServiceStatus::Stopping => {
                    if let Err(e) = self.finish_stop(&id).await {
                        tracing::warn!(service = %id, error = %Error::from(e), "finishing a stop failed");
                    }
                }
                ServiceStatus::Deleting => {
                    if let Err(e) = self.finish_delete(&id).await {
                        tracing::warn!(service = %id, error = %Error::from(e), "finishing a delete failed");
                    }
                }
                // The new settings were never written: back to the old ones, deployed again.
                ServiceStatus::Updating => {
                    let mut tx = self.inner.store.write().await?;
                    let moved =
                        Transition::new(&id, &[ServiceStatus::Updating], ServiceStatus::Deploying)
                            .resource_event(Row::of(&id, None, ServiceEvent::UpdateRolledBack))
                            .apply(&mut tx)
                            .await?;
                    if moved {
                        tx.commit().await?;
                        self.spawn_bring_up(id);
                    }
                }
                _ => {}
            }
        }
        let mut conn = self.inner.store.pool.acquire().await?;
        let serving =
            rows::in_statuses(&mut conn, &[ServiceStatus::Running, ServiceStatus::Alarm]).await?;
        drop(conn);
        for s in serving {
            let this = self.clone();
            self.inner.tasks.spawn(async move {
                this.reload(s).await;
            });
        }
        Ok(())
    }

    /// A service that served before the gateway restarted: loaded again, or FAILED.
    async fn reload(&self, s: ServiceRow) {
        let loaded = match decode(&s) {
            Ok(spec) => self.load(&s.id, &spec).await,
            Err(e) => Err(Error::from(e).message),
        };
        match loaded {
            Ok(d) => {
                if let Err(e) = self.install(d).await {
                    tracing::error!(service = %s.id, error = ?e, "installing a reloaded service failed");
                }
            }
            Err(why) => {
                let event = Row::filled(&s.id, None, ServiceEvent::Failed, &[&s.name, &why]);
                if let Err(e) = self.fail(&s.id, SERVING, &why, event).await {
                    tracing::error!(service = %s.id, error = ?e, "recording a failed reload failed");
                }
            }
        }
    }

    /// Auto-stop: every second, services past their `stop_at` stop ("The service stops when
    /// the auto stop time expires.").
    pub async fn auto_stop_loop(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(e) = self.auto_stop_pass().await {
                tracing::warn!(error = %e, "the services' auto-stop pass failed");
            }
        }
    }

    /// Once an hour: models' and services' events past their retention go (90 and 30
    /// days, the seed's).
    pub async fn retention_loop(self, stop: CancellationToken) {
        loop {
            let result: anyhow::Result<u64> = async {
                let mut conn = self.inner.store.pool.acquire().await?;
                Ok(resource_events::purge(&mut conn, self.inner.clock.now()).await?)
            }
            .await;
            match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "old model and service events removed"),
                Err(e) => tracing::warn!(error = %e, "removing old events failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }

    pub async fn auto_stop_pass(&self) -> anyhow::Result<()> {
        let now = fmt_time(self.inner.clock.now());
        let mut conn = self.inner.store.pool.acquire().await?;
        let due: Vec<ServiceRow> = rows::in_statuses(&mut conn, SERVING)
            .await?
            .into_iter()
            .filter(|s| s.stop_at.as_deref().is_some_and(|t| t <= now.as_str()))
            .collect();
        drop(conn);
        for s in due {
            let _held = self.inner.locks.lock(&s.id).await;
            let mut tx = self.inner.store.write().await?;
            let applied = Transition::new(&s.id, SERVING, ServiceStatus::Stopping)
                .reason(Some("auto-stopped"))
                .resource_event(Row::of(&s.id, None, ServiceEvent::AutoStopExpired))
                .audit(
                    audit::SYSTEM,
                    Action::StopService,
                    target(&s),
                    "auto-stop",
                    None,
                )
                .apply(&mut tx)
                .await?;
            if applied {
                tx.commit().await?;
                if let Err(e) = self.finish_stop(&s.id).await {
                    tracing::warn!(service = %s.id, error = %Error::from(e), "an auto-stop failed");
                }
            }
        }
        Ok(())
    }

    /// The body limit of a call to `key`, before its body is read (the seed's 12 MB where
    /// the service is not deployed: the call is refused anyway).
    pub fn body_limit(&self, who: &Principal, key: &str) -> u64 {
        self.deployed(who, key)
            .map_or(u64::from(spec::BODY_LIMIT_MB.0) * 1024 * 1024, |d| {
                d.spec.body_limit_bytes
            })
    }

    /// The caller's deployed service `key` (id or name).
    fn deployed(&self, who: &Principal, key: &str) -> Option<Arc<Deployment>> {
        self.inner
            .deployments
            .get(key)
            .or_else(|| self.inner.deployments.by_owner_name(&who.user_id, key))
            .filter(|d| d.owner_id == who.user_id)
    }

    /// One inference call of `who` to their service `key`. The error comes with the
    /// service and model it was for, when it is a deployed one of theirs (for the metrics: calls of
    /// services nobody has are not counted, so no caller can make up label values).
    pub async fn call(
        &self,
        who: &Principal,
        key: &str,
        request: inf::Request,
    ) -> Result<call::Answer, (call::CallError, Option<(String, String)>)> {
        let Some(d) = self.deployed(who, key) else {
            // Not deployed: say why, if it is theirs.
            return Err((
                match self.find(who, key).await {
                    Ok(s) if s.owner_id == who.user_id => call::CallError::NotServing(format!(
                        "service {} is {}; it answers calls when RUNNING",
                        s.name, s.status
                    )),
                    _ => call::CallError::NotFound(format!("service {key} not found")),
                },
                None,
            ));
        };
        let id = d.service_id.clone();
        call::call(&self.inner.host, d, request)
            .await
            .map_err(|(e, model)| (e, Some((id, model.unwrap_or_default()))))
    }

    /// The engines the services load models on (a batch service loads its version on the
    /// same ONNX Runtime).
    pub fn engines(&self) -> &Engines {
        &self.inner.engines
    }

    /// The plugin host processors run in.
    pub fn host(&self) -> &Arc<atelier_plugins::Host> {
        &self.inner.host
    }

    /// What the services count (the API records each call's answer).
    pub fn metrics(&self) -> &crate::metrics::InferenceMetrics {
        &self.inner.metrics
    }

    /// A deployed service's first version's model, for the V2 metadata and readiness.
    pub fn metadata(&self, who: &Principal, key: &str) -> Option<serde_json::Value> {
        let d = self.deployed(who, key)?;
        let v = d.versions.first()?;
        Some(serde_json::json!({
            "name": d.name,
            "versions": d.versions.iter().map(|v| v.spec.version.clone()).collect::<Vec<_>>(),
            "platform": "onnxruntime",
            "inputs": tensors::v2_metadata(v.model.inputs()),
            "outputs": tensors::v2_metadata(v.model.outputs()),
        }))
    }
}

fn target(s: &ServiceRow) -> Target<'_> {
    Target {
        kind: "service",
        id: &s.id,
        name: &s.name,
    }
}

fn decode(s: &ServiceRow) -> Result<ServiceSpec, ServiceError> {
    serde_json::from_str(&s.spec)
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("service {}: spec: {e}", s.id)))
}

fn view(s: ServiceRow) -> Result<ServiceView, ServiceError> {
    let spec = decode(&s)?;
    Ok(ServiceView {
        url: format!("/v1/infers/{}", s.id),
        id: s.id,
        name: s.name,
        owner: s.owner,
        description: s.description,
        status: s.status,
        status_reason: s.status_reason,
        spec,
        stop_at: s.stop_at,
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}
