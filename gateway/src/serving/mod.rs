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
//! each step's outcome, each failed call, each call's processor lines ─► logs/ (ServiceLog)
//! ```
//!
//! Deployments live in the gateway's process: a gateway start deploys its RUNNING and
//! ALARM services again (and resumes what a previous one left DEPLOYING, STOPPING,
//! UPDATING or DELETING). Auto-stop: a RUNNING service stops `auto_stop_seconds` after it
//! started (the seed's default: 1 hour).

pub mod apps;
pub mod call;
pub mod instances;
pub mod logs;
pub mod rules;
pub mod runtime;
pub mod signing;
pub mod spec;
pub mod tensors;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::error::Error;
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
use runtime::{Deployment, Deployments, Engine, Engines, Served, VersionFiles};
use spec::{DeployService, ServiceSpec, UpdateService, VersionSpec};

/// What a service request fails with.
pub type ServiceError = crate::error::ResourceError;

/// Who calls a service: a user with a token, or an app with its AppCode or AppKey.
#[derive(Debug, Clone)]
pub enum Caller {
    User(Principal),
    App(Arc<apps::AppCaller>),
}

impl Caller {
    /// Whose services it calls (for an app, its owner's), and whom the call runs as.
    pub fn owner_id(&self) -> &str {
        match self {
            Caller::User(p) => &p.user_id,
            Caller::App(a) => &a.owner_id,
        }
    }

    pub fn owner_name(&self) -> &str {
        match self {
            Caller::User(p) => &p.name,
            Caller::App(a) => &a.owner_name,
        }
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
    /// Seconds one minute of a deploy timeout lasts (60; less in tests).
    minute_secs: u64,
    metrics: crate::metrics::InferenceMetrics,
    /// Where container and process engines run.
    backend: Arc<dyn crate::backends::Backend>,
    flavors: Vec<crate::config::Flavor>,
    log: logs::ServiceLog,
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
    pub minute_secs: u64,
    pub metrics: crate::metrics::InferenceMetrics,
    pub backend: Arc<dyn crate::backends::Backend>,
    /// The settings' flavors; the first is the default.
    pub flavors: Vec<crate::config::Flavor>,
    pub log: logs::ServiceLog,
}

/// A call's error, with the service and model it was for when it was a deployed service
/// of the caller's (`(service id, model id)`, for the metrics).
pub type CallFailure = (call::CallError, Option<(String, String)>);

/// Why a service's versions did not come up.
enum LoadError {
    /// FAILED, with this reason.
    Failed(String),
    /// Its instances failed their startup checks: ABNORMAL.
    Abnormal(String),
}

impl From<String> for LoadError {
    fn from(why: String) -> Self {
        LoadError::Failed(why)
    }
}

impl LoadError {
    fn why(&self) -> &str {
        match self {
            LoadError::Failed(w) | LoadError::Abnormal(w) => w,
        }
    }
}

/// Engine instance pools a load started, kept outside the load's future so that a load cut
/// short by its deadline still has its instances stopped.
type Started = Arc<std::sync::Mutex<Vec<Arc<instances::Pool>>>>;

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
                minute_secs: p.minute_secs,
                metrics: p.metrics,
                backend: p.backend,
                flavors: p.flavors,
                log: p.log,
            }),
        }
    }

    /// A deploy timeout of `minutes` (a minute lasting `minute_secs`).
    fn deploy_limit(&self, minutes: u32) -> Duration {
        Duration::from_secs(u64::from(minutes) * self.inner.minute_secs)
    }

    /// The same, as a span of the store's clock.
    fn deploy_time(&self, minutes: u32) -> time::Duration {
        time::Duration::seconds((u64::from(minutes) * self.inner.minute_secs) as i64)
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
        let deadline = fmt_time(now + self.deploy_time(spec.timeout_minutes));
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
        let said = format!("deploy requested by {}: {}", who.name, versions_text(&spec));
        self.inner.log.gateway(&id, &said);
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
            Access {
                app_auth: req.app_auth,
                custom_settings: &req.custom_settings,
            },
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
        access: Access<'_>,
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
            let engine = if runtime::runs_builtin(&v) {
                spec::EngineKind::Builtin
            } else {
                spec::EngineKind::Container
            };
            if engine == spec::EngineKind::Container && v.processor.is_some() {
                return Err(ServiceError::Invalid(format!(
                    "models[{i}]: model {} version {} has a processor, which runs with the built-in ONNX engine only; a container engine does its own pre- and post-processing",
                    v.model, v.version
                )));
            }
            if let Some(first) = out.first()
                && first.engine != engine
            {
                return Err(ServiceError::Invalid(format!(
                    "models[{i}]: model {} version {} runs on a {} engine and models[0] on a {} one; a service's versions all run on the built-in engine or all on container engines",
                    v.model,
                    v.version,
                    engine_word(engine),
                    engine_word(first.engine)
                )));
            }
            let flavor = match (&m.flavor, engine) {
                (None, _) => None,
                (Some(f), spec::EngineKind::Builtin) => {
                    return Err(ServiceError::Invalid(format!(
                        "models[{i}].flavor: {f:?}; model {} version {} runs on the built-in engine, in the gateway's process, which has no flavor",
                        v.model, v.version
                    )));
                }
                (Some(f), spec::EngineKind::Container) => {
                    let Some(flavor) = self.inner.flavors.iter().find(|x| &x.id == f) else {
                        let ids: Vec<&str> =
                            self.inner.flavors.iter().map(|x| x.id.as_str()).collect();
                        return Err(ServiceError::Invalid(format!(
                            "models[{i}].flavor: {f:?} is not a flavor here (there are {})",
                            ids.join(", ")
                        )));
                    };
                    let need = flavor.accelerator_count();
                    if need > 0 && !self.inner.backend.engine_accelerators() {
                        return Err(ServiceError::Invalid(format!(
                            "models[{i}].flavor: {f:?} is a {} flavor, and the {} backend runs model engines without accelerators (GPU and NPU instances need the docker backend); pick a CPU flavor",
                            flavor.kind,
                            self.inner.backend.name()
                        )));
                    }
                    let all = need.saturating_mul(instances);
                    if let Some((have, what)) = crate::gpu::shortfall(&flavor.kind, all) {
                        return Err(ServiceError::Invalid(format!(
                            "models[{i}].flavor: {f:?} needs {need} {what}(s) per instance, {all} for {instances} instance(s), and this host has {have}; pick a CPU flavor or fewer instances"
                        )));
                    }
                    Some(f.clone())
                }
            };
            out.push(VersionSpec {
                model_id: v.model_id,
                model: v.model,
                version_id: v.id,
                version: v.version,
                weight,
                instances,
                envs: m.envs.clone(),
                engine,
                flavor,
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
        let versions: Vec<&str> = out.iter().map(|v| v.version.as_str()).collect();
        rules::Rules::compile(access.custom_settings, &versions).map_err(ServiceError::Invalid)?;
        Ok(ServiceSpec {
            models: out,
            timeout_minutes,
            auto_stop_seconds,
            traffic_limit,
            body_limit_bytes: u64::from(body_mb) * 1024 * 1024,
            call_timeout_ms: u64::from(call_s) * 1000,
            app_auth: access.app_auth,
            custom_settings: access.custom_settings.to_vec(),
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

    /// The caller's service's log lines (`logs::LogParams`: window, query, limit).
    pub async fn logs(
        &self,
        who: &Principal,
        key: &str,
        params: &logs::LogParams,
    ) -> Result<logs::sources::Found, ServiceError> {
        let s = self.find(who, key).await?;
        let req = params
            .check(self.inner.log.now_time())
            .map_err(ServiceError::Invalid)?;
        // Engine instances' output is in the gateway's files too (copied as it appears).
        let sources: Vec<_> = self.inner.log.own_source(&s.id).into_iter().collect();
        Ok(self.inner.log.search(sources, req).await?)
    }

    /// The services' log (`server.rs` runs its writer).
    pub fn log(&self) -> &logs::ServiceLog {
        &self.inner.log
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
        let deadline = fmt_time(self.inner.clock.now() + self.deploy_time(spec.timeout_minutes));
        let mut tx = self.inner.store.write().await?;
        Transition::of(&s.id, op, ServiceStatus::Deploying)
            .resource_event(Row::of(&s.id, None, ServiceEvent::Starting))
            .audit(&who.name, action, target(&s), "accepted", None)
            .request(&mut tx, op, &s.name)
            .await?;
        rows::set_deploy_deadline(&mut tx, &s.id, Some(&deadline)).await?;
        rows::set_stop_at(&mut tx, &s.id, None).await?;
        tx.commit().await?;
        let said = format!("{} requested by {}", op.verb(), who.name);
        self.inner.log.gateway(&s.id, &said);
        self.take_down(&s.id).await;
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
        let said = format!("stop requested by {}", who.name);
        self.inner.log.gateway(&s.id, &said);
        self.finish_stop(&s.id).await?;
        self.view_by_id(&s.id).await
    }

    async fn finish_stop(&self, id: &str) -> Result<(), ServiceError> {
        self.take_down(id).await;
        let mut tx = self.inner.store.write().await?;
        Transition::new(id, &[ServiceStatus::Stopping], ServiceStatus::Stopped)
            .resource_event(Row::of(id, None, ServiceEvent::Stopped))
            .apply(&mut tx)
            .await?;
        rows::set_stop_at(&mut tx, id, None).await?;
        rows::set_deploy_deadline(&mut tx, id, None).await?;
        tx.commit().await?;
        self.inner.log.gateway(id, "stopped");
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
        self.take_down(id).await;
        if let Err(e) = self.inner.log.remove(id).await {
            tracing::warn!(service = %id, error = %e, "removing a deleted service's logs failed");
        }
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
                    flavor: m.flavor.clone(),
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
                Access {
                    app_auth: req.app_auth.unwrap_or(old.app_auth),
                    custom_settings: req
                        .custom_settings
                        .as_deref()
                        .unwrap_or(&old.custom_settings),
                },
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
            let said = format!("update requested by {}: {}", who.name, versions_text(&new));
            self.inner.log.gateway(&s.id, &said);
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
        let started = Started::default();
        let limit = self.deploy_limit(new.timeout_minutes);
        let loaded = match tokio::time::timeout(limit, self.load(id, &new, false, &started)).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(e.why().to_owned()),
            Err(_) => Err(format!(
                "the new settings were not up within the deploy timeout ({} minutes)",
                new.timeout_minutes
            )),
        };
        if loaded.is_err() {
            self.retire_started(&started).await;
        }
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
                        self.inner
                            .log
                            .gateway(id, "updated: the new settings serve");
                    } else {
                        drop(tx);
                        self.retire(Some(Arc::new(d))).await;
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
                        let said = format!("update rolled back, the old settings serve: {why}");
                        self.inner.log.gateway(id, &said);
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
        let result: anyhow::Result<()> = async {
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
                .unwrap_or(now + self.deploy_time(spec.timeout_minutes));
            let left = (deadline - now).max(time::Duration::ZERO);
            let left = Duration::from_secs_f64(left.as_seconds_f64());
            let started = Started::default();
            let outcome = tokio::time::timeout(left, self.load(id, &spec, false, &started)).await;
            if !matches!(outcome, Ok(Ok(_))) {
                self.retire_started(&started).await;
            }
            match outcome {
                Ok(Ok(d)) => {
                    let mut tx = self.inner.store.write().await?;
                    let stop_at = spec.auto_stop_seconds.map(|secs| {
                        fmt_time(self.inner.clock.now() + time::Duration::seconds(secs as i64))
                    });
                    let applied =
                        Transition::new(id, &[ServiceStatus::Deploying], ServiceStatus::Running)
                            .resource_event(Row::filled(
                                id,
                                None,
                                ServiceEvent::Started,
                                &[&s.name],
                            ))
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
                        let said = format!("RUNNING: {} loaded", versions_text(&spec));
                        self.inner.log.gateway(id, &said);
                    }
                }
                Ok(Err(LoadError::Failed(why))) => {
                    let event = Row::filled(id, None, ServiceEvent::Failed, &[&s.name, &why]);
                    self.fail(id, &[ServiceStatus::Deploying], &why, event)
                        .await?;
                }
                Ok(Err(LoadError::Abnormal(why))) => {
                    let mut tx = self.inner.store.write().await?;
                    let applied =
                        Transition::new(id, &[ServiceStatus::Deploying], ServiceStatus::Abnormal)
                            .reason(Some(&why))
                            .resource_event(
                                Row::filled(id, None, ServiceEvent::StartFailed, &[&s.name])
                                    .detail(Some(&why)),
                            )
                            .apply(&mut tx)
                            .await?;
                    if applied {
                        rows::set_deploy_deadline(&mut tx, id, None).await?;
                        tx.commit().await?;
                        self.inner.log.gateway(id, &format!("ABNORMAL: {why}"));
                    }
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
            self.inner.log.gateway(id, &format!("FAILED: {why}"));
        }
        Ok(())
    }

    /// Loads a service's versions: ONNX models on the built-in engine (off the async
    /// threads), the others as instances of a container or process engine, waited for until
    /// they pass their startup checks. `adopt`: re-attach to the instances a previous gateway
    /// left running (a reload); `started` receives the engine pools as they start, so the
    /// caller can stop them when the load fails or runs out of time.
    async fn load(
        &self,
        id: &str,
        spec: &ServiceSpec,
        adopt: bool,
        started: &Started,
    ) -> Result<Deployment, LoadError> {
        let mut conn = self
            .inner
            .store
            .pool
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let s = rows::by_id(&mut conn, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the service is gone".to_string())?;
        let recorded = if adopt {
            crate::store::service_instances::for_service(&mut conn, id)
                .await
                .map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        drop(conn);
        let mut versions = Vec::with_capacity(spec.models.len());
        for m in &spec.models {
            let label = format!("model {} {}", m.model, m.version);
            let (view, tree) = self
                .inner
                .models
                .version_for_service(&m.version_id)
                .await
                .map_err(|e| format!("{label}: {}", Error::from(e).message))?;
            if runtime::runs_builtin(&view) {
                let tree =
                    tree.ok_or_else(|| format!("{label}: its files are not in the model store"))?;
                let files = VersionFiles {
                    spec: m.clone(),
                    view,
                    tree,
                };
                let this = self.clone();
                let served = tokio::task::spawn_blocking(move || {
                    runtime::load_builtin(&this.inner.engines, &this.inner.host, files)
                })
                .await
                .map_err(|e| format!("the loading thread: {e}"))??;
                versions.push(served);
                continue;
            }
            let pool = self
                .start_pool(&s, m, &view, tree, &recorded)
                .await
                .map_err(LoadError::Failed)?;
            if let Ok(mut list) = started.lock() {
                list.push(pool.clone());
            }
            versions.push(Served {
                spec: m.clone(),
                engine: Engine::Instances(pool),
                processor: None,
            });
        }
        for v in &versions {
            if let Some(pool) = v.pool() {
                pool.wait_started().await.map_err(|e| match e {
                    instances::StartError::Abnormal(why) => LoadError::Abnormal(why),
                    instances::StartError::Failed(why) => LoadError::Failed(why),
                })?;
            }
        }
        Ok(Deployment::new(id, &s.name, &s.owner_id, spec, versions)?)
    }

    /// Starts the instances of a version that runs on a container or process engine.
    async fn start_pool(
        &self,
        s: &ServiceRow,
        m: &VersionSpec,
        view: &crate::models::VersionView,
        tree: Option<std::path::PathBuf>,
        recorded: &[crate::store::service_instances::InstanceRow],
    ) -> Result<Arc<instances::Pool>, String> {
        let weak = Arc::downgrade(&self.inner);
        let service_id = s.id.clone();
        let tasks = self.inner.tasks.clone();
        let on_change: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                let this = Services { inner };
                let id = service_id.clone();
                tasks.spawn(async move { this.health_changed(&id).await });
            }
        });
        self.start_engine_pool(&s.id, &s.owner_id, m, view, tree, recorded, on_change)
            .await
    }

    /// Starts the instances of version `m` for service `service_id` (a real-time or a batch
    /// service) on the backend, under the same supervisor: each adopts its slot's instance
    /// among `recorded` when that one still runs. `on_change` hears each change of an
    /// instance's readiness. Returns at once ([`instances::Pool::wait_started`]).
    #[allow(clippy::too_many_arguments)] // the parts of one launch, each from elsewhere
    pub async fn start_engine_pool(
        &self,
        service_id: &str,
        owner_id: &str,
        m: &VersionSpec,
        view: &crate::models::VersionView,
        tree: Option<std::path::PathBuf>,
        recorded: &[crate::store::service_instances::InstanceRow],
        on_change: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<instances::Pool>, String> {
        let label = format!("model {} {}", m.model, m.version);
        let flavor = match &m.flavor {
            Some(f) => self.inner.flavors.iter().find(|x| &x.id == f),
            None => self.inner.flavors.iter().find(|x| x.kind == "cpu"),
        }
        .cloned()
        .ok_or_else(|| format!("{label}: no CPU flavor is configured for its instances"))?;
        let image = match &view.source {
            crate::models::Source::Image { image } => Some(image.clone()),
            _ => None,
        };
        let model_dir = tree.map(|t| t.join("model")).filter(|d| d.is_dir());
        let config = view.model_config.as_ref().or(view.settings.config.as_ref());
        let health = config.and_then(|c| c.health());
        let env = instances::Env {
            backend: self.inner.backend.clone(),
            store: self.inner.store.clone(),
            service_id: service_id.to_owned(),
            version_id: m.version_id.clone(),
            label: label.clone(),
            model: m.model.clone(),
            version: m.version.clone(),
            engine: crate::backends::EngineSpec {
                id: String::new(),
                owner: owner_id.to_owned(),
                service_id: service_id.to_owned(),
                flavor,
                image,
                command: view.settings.start_command.clone(),
                model_dir,
                env: m.envs.clone(),
            },
            probes: match &view.settings.health_checks {
                c if c.is_empty() => instances::Probes::of(health),
                c => instances::Probes::each(
                    c.startup.as_ref(),
                    c.readiness.as_ref(),
                    c.liveness.as_ref(),
                ),
            },
            log: self.inner.log.clone(),
            on_change,
        };
        let mine: Vec<_> = recorded
            .iter()
            .filter(|r| r.version_id == m.version_id)
            .cloned()
            .collect();
        Ok(instances::Pool::start(env, m.instances, mine).await)
    }

    /// Stops and removes every engine instance recorded for `service_id` (a batch
    /// service's, when its job ends), and their rows.
    pub async fn stop_engine_instances(&self, service_id: &str) {
        instances::stop_recorded(&self.inner.backend, &self.inner.store, service_id).await;
    }

    /// An engine instance came into or left the rotation: RUNNING ⇄ ALARM.
    async fn health_changed(&self, id: &str) {
        let result: anyhow::Result<()> = async {
            let mut tx = self.inner.store.write().await?;
            // The deployment in place now (an update may have swapped it while this waited),
            // and still in place after its health is read: a retiring one's instances leave
            // the rotation, which is no trouble of the service's.
            let Some(d) = self.inner.deployments.get(id) else {
                return Ok(());
            };
            let health = d.health();
            if !self
                .inner
                .deployments
                .get(id)
                .is_some_and(|now| Arc::ptr_eq(&now, &d))
            {
                return Ok(());
            }
            let applied = match health {
                Ok(()) => {
                    Transition::new(id, &[ServiceStatus::Alarm], ServiceStatus::Running)
                        .resource_event(Row::filled(id, None, ServiceEvent::Recovered, &[&d.name]))
                        .apply(&mut tx)
                        .await?
                }
                Err(why) => {
                    Transition::new(id, &[ServiceStatus::Running], ServiceStatus::Alarm)
                        .reason(Some(&why))
                        .resource_event(Row::filled(
                            id,
                            None,
                            ServiceEvent::Unhealthy,
                            &[&d.name, &why],
                        ))
                        .apply(&mut tx)
                        .await?
                }
            };
            if applied {
                tx.commit().await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(service = %id, error = %e, "recording a service's health failed");
        }
    }

    /// Takes a deployment out of service: its engine instances stop (the built-in engine's
    /// model goes with the last call that holds it).
    /// The calls in flight to its instances end first (for at most the call timeout),
    /// while new calls go elsewhere.
    async fn retire(&self, d: Option<Arc<Deployment>>) {
        if let Some(d) = d {
            let drain = Duration::from_millis(d.spec.call_timeout_ms);
            let pools = d.versions.iter().filter_map(|v| v.pool());
            futures_util::future::join_all(pools.map(|p| p.retire_draining(drain))).await;
        }
    }

    /// Stops the pools a failed or cut-short load started.
    async fn retire_started(&self, started: &Started) {
        let pools: Vec<_> = started
            .lock()
            .map(|mut l| l.drain(..).collect())
            .unwrap_or_default();
        for p in pools {
            p.retire().await;
        }
    }

    /// Removes a service's deployment and stops every engine instance it has recorded.
    async fn take_down(&self, id: &str) {
        let d = self.inner.deployments.remove(id);
        self.retire(d).await;
        instances::stop_recorded(&self.inner.backend, &self.inner.store, id).await;
    }

    /// Puts a loaded deployment in service (retiring the one it replaces), unless the
    /// service stopped serving meanwhile (a stop or a delete that came while it loaded, and
    /// removed nothing): checked after the put, so whichever comes last of the put and a
    /// stop's removal, no deployment of a service that does not serve stays.
    async fn install(&self, d: Deployment) -> anyhow::Result<()> {
        let id = d.service_id.clone();
        let old = self.inner.deployments.put(d);
        self.retire(old).await;
        let mut conn = self.inner.store.pool.acquire().await?;
        let status = crate::store::transition::status_of::<ServiceStatus>(&mut conn, &id).await?;
        drop(conn);
        if !status.is_some_and(|s| SERVING.contains(&s)) {
            let d = self.inner.deployments.remove(&id);
            self.retire(d).await;
        } else if let Some(d) = self.inner.deployments.get(&id)
            && d.health().is_err()
        {
            // An instance left the rotation while the deployment was being put in place.
            self.health_changed(&id).await;
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

    /// A service that served before the gateway restarted: loaded again (its engine
    /// instances that still run are re-attached to), or FAILED.
    async fn reload(&self, s: ServiceRow) {
        let started = Started::default();
        let loaded = match decode(&s) {
            Ok(spec) => {
                let limit = self.deploy_limit(spec.timeout_minutes);
                match tokio::time::timeout(limit, self.load(&s.id, &spec, true, &started)).await {
                    Ok(r) => r.map_err(|e| e.why().to_owned()),
                    Err(_) => Err(format!(
                        "its instances were not up again within the deploy timeout ({} minutes)",
                        spec.timeout_minutes
                    )),
                }
            }
            Err(e) => Err(Error::from(e).message),
        };
        match loaded {
            Ok(d) => {
                if let Err(e) = self.install(d).await {
                    tracing::error!(service = %s.id, error = ?e, "installing a reloaded service failed");
                }
                self.inner
                    .log
                    .gateway(&s.id, "loaded again at the gateway's start");
            }
            Err(why) => {
                self.retire_started(&started).await;
                instances::stop_recorded(&self.inner.backend, &self.inner.store, &s.id).await;
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
                let said = "auto-stop: the service's stop time passed";
                self.inner.log.gateway(&s.id, said);
                if let Err(e) = self.finish_stop(&s.id).await {
                    tracing::warn!(service = %s.id, error = %Error::from(e), "an auto-stop failed");
                }
            }
        }
        Ok(())
    }

    /// The body limit of a call to `key`, before its body is read (the seed's 12 MB where
    /// the service is not deployed or not the caller's to call: the call is refused anyway).
    pub fn body_limit(&self, who: &Caller, key: &str) -> u64 {
        self.callable(who, key)
            .map_or(u64::from(spec::BODY_LIMIT_MB.0) * 1024 * 1024, |d| {
                d.spec.body_limit_bytes
            })
    }

    /// `owner_id`'s deployed service `key` (id or name).
    fn deployed(&self, owner_id: &str, key: &str) -> Option<Arc<Deployment>> {
        self.inner
            .deployments
            .get(key)
            .or_else(|| self.inner.deployments.by_owner_name(owner_id, key))
            .filter(|d| d.owner_id == owner_id)
    }

    /// The deployed service `key` that `who` may call: their own; for an app, one of its
    /// owner's that is bound to it and has app authentication on.
    fn callable(&self, who: &Caller, key: &str) -> Option<Arc<Deployment>> {
        let d = self.deployed(who.owner_id(), key)?;
        match who {
            Caller::User(_) => Some(d),
            Caller::App(app) => (app.bound(&d.service_id) && d.spec.app_auth).then_some(d),
        }
    }

    /// One inference call of `who` to service `key`. The error comes with the service and
    /// model it was for, when it is a deployed one the caller may call (for the metrics:
    /// calls of services nobody has are not counted, so no caller can make up label
    /// values).
    ///
    /// An app learns nothing of services not bound to it: whether one exists or not, the
    /// answer is the same 401.
    pub async fn call(
        &self,
        who: &Caller,
        key: &str,
        request: inf::Request,
    ) -> Result<call::Answer, CallFailure> {
        let d = self.deployment_for_call(who, key).await?;
        let id = d.service_id.clone();
        let runs_as = call::RunsAs {
            user_name: who.owner_name(),
            user_id: who.owner_id(),
        };
        call::call(&self.inner.host, d, runs_as, request, &self.inner.log)
            .await
            .map_err(|(e, model)| (e, Some((id, model.unwrap_or_default()))))
    }

    /// The deployment a call of `who` to `key` goes to, or why there is none (refused
    /// before any version is chosen).
    async fn deployment_for_call(
        &self,
        who: &Caller,
        key: &str,
    ) -> Result<Arc<Deployment>, CallFailure> {
        let deployed = self.deployed(who.owner_id(), key);
        if let Caller::App(app) = who {
            let not_bound = || {
                call::CallError::Unauthenticated(format!(
                    "app {} may not call service {key}: the app is not bound to it",
                    app.app_name
                ))
            };
            let callable = deployed
                .as_ref()
                .is_some_and(|d| app.bound(&d.service_id) && d.spec.app_auth);
            if !callable {
                // Every refusal reads the store, so that neither the answer nor its time
                // tells an app whether a service it is not bound to exists.
                let refusal = match (self.find_owned(&app.owner_id, key).await, &deployed) {
                    (Ok(Some(s)), Some(_)) if app.bound(&s.id) => {
                        call::CallError::Unauthenticated(format!(
                            "service {key} does not take app authentication (app_auth is off); its owner turns it on with PATCH {{\"app_auth\": true}}"
                        ))
                    }
                    (Ok(Some(s)), None) if app.bound(&s.id) => {
                        call::CallError::NotServing(format!(
                            "service {} is {}; it answers calls when RUNNING",
                            s.name, s.status
                        ))
                    }
                    _ => not_bound(),
                };
                return Err((refusal, None));
            }
        }
        match deployed {
            Some(d) => Ok(d),
            // Not deployed: say why, if it is theirs.
            None => Err((
                match self.find_owned(who.owner_id(), key).await {
                    Ok(Some(s)) => call::CallError::NotServing(format!(
                        "service {} is {}; it answers calls when RUNNING",
                        s.name, s.status
                    )),
                    _ => call::CallError::NotFound(format!("service {key} not found")),
                },
                None,
            )),
        }
    }

    /// `owner_id`'s service `key` (id or name), whatever its status.
    async fn find_owned(
        &self,
        owner_id: &str,
        key: &str,
    ) -> Result<Option<ServiceRow>, ServiceError> {
        let mut conn = self.inner.store.pool.acquire().await?;
        Ok(rows::by_key(&mut conn, owner_id, key).await?)
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
    pub fn metadata(&self, who: &Caller, key: &str) -> Option<serde_json::Value> {
        let d = self.callable(who, key)?;
        let v = d.versions.first()?;
        let versions: Vec<String> = d.versions.iter().map(|v| v.spec.version.clone()).collect();
        Some(match v.onnx() {
            Some(model) => serde_json::json!({
                "name": d.name,
                "versions": versions,
                "platform": "onnxruntime",
                "inputs": tensors::v2_metadata(model.inputs()),
                "outputs": tensors::v2_metadata(model.outputs()),
            }),
            // A container engine describes its own inputs, if it speaks the protocol.
            None => serde_json::json!({
                "name": d.name,
                "versions": versions,
                "platform": "custom",
                "inputs": [],
                "outputs": [],
            }),
        })
    }

    /// Where a call to a service whose versions run on container or process engines goes:
    /// the traffic limit, a version by the weights, a ready instance of it in turn. `None`:
    /// the service runs on the built-in engine (`call`). The error comes with the service
    /// and model it was for, as `call`'s.
    pub async fn proxy_target(
        &self,
        who: &Caller,
        key: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<call::ProxyTarget>, CallFailure> {
        // Services on the built-in engine go the other way (`call`), which says why one
        // cannot be called.
        if self
            .callable(who, key)
            .is_some_and(|d| d.versions.iter().all(|v| v.pool().is_none()))
        {
            return Ok(None);
        }
        let d = self.deployment_for_call(who, key).await?;
        if d.versions.iter().all(|v| v.pool().is_none()) {
            return Ok(None);
        }
        let runs_as = call::RunsAs {
            user_name: who.owner_name(),
            user_id: who.owner_id(),
        };
        call::proxy_target(&d, runs_as, headers)
            .map(Some)
            .map_err(|(e, model)| (e, Some((d.service_id.clone(), model.unwrap_or_default()))))
    }

    /// A service's instances: its engine instances, or the built-in engine's sessions.
    pub async fn instances(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<Vec<instances::InstanceView>, ServiceError> {
        let s = self.find(who, key).await?;
        let Some(d) = self.inner.deployments.get(&s.id) else {
            return Ok(Vec::new());
        };
        Ok(d.versions
            .iter()
            .flat_map(|v| match &v.engine {
                Engine::Instances(p) => p.views(),
                Engine::Builtin(_) => (0..v.spec.instances)
                    .map(|i| instances::InstanceView {
                        id: format!("{}-{i}", v.spec.version_id),
                        model: v.spec.model.clone(),
                        version: v.spec.version.clone(),
                        engine: "built-in",
                        phase: instances::Phase::Ready,
                        restarts: 0,
                        error: None,
                    })
                    .collect(),
            })
            .collect())
    }

    /// Deletes one engine instance of a serving service: a new one takes its place (the
    /// seed's Instance tab).
    pub async fn delete_instance(
        &self,
        who: &Principal,
        key: &str,
        instance: &str,
    ) -> Result<(), ServiceError> {
        let s = self.find(who, key).await?;
        let d = self.inner.deployments.get(&s.id).ok_or_else(|| {
            ServiceError::Conflict(format!(
                "service {} is {}; its instances can be deleted while it is RUNNING or ALARM",
                s.name, s.status
            ))
        })?;
        for v in &d.versions {
            match &v.engine {
                Engine::Instances(p) if p.replace(instance) => {
                    let mut tx = self.inner.store.write().await?;
                    audit::record(
                        &mut tx,
                        &who.name,
                        Action::DeleteServiceInstance,
                        target(&s),
                        "accepted",
                        Some(instance),
                    )
                    .await?;
                    tx.commit().await?;
                    return Ok(());
                }
                Engine::Builtin(_) if instance.starts_with(&v.spec.version_id) => {
                    return Err(ServiceError::Conflict(format!(
                        "instance {instance} is a session of the built-in engine, in the gateway's process; restart the service to load it again"
                    )));
                }
                _ => {}
            }
        }
        Err(ServiceError::NotFound(format!(
            "service {} has no instance {instance}",
            s.name
        )))
    }
}

fn engine_word(e: spec::EngineKind) -> &'static str {
    match e {
        spec::EngineKind::Builtin => "built-in",
        spec::EngineKind::Container => "container or process",
    }
}

/// `model iris 0.0.1 (100%), …`, for the log.
fn versions_text(spec: &ServiceSpec) -> String {
    spec.models
        .iter()
        .map(|m| format!("model {} {} ({}%)", m.model, m.version, m.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who may call a service besides its owner, and how its calls are routed.
struct Access<'a> {
    app_auth: bool,
    custom_settings: &'a [rules::CustomSetting],
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
