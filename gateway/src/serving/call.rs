//! One inference call (spec/inference.md §7.3): the caller's service and version (the
//! first custom setting that holds, its header added; else the traffic weights), the
//! traffic limit, then in one processor instance `preprocess` → the
//! built-in engine → `postprocess` (`Host::pipeline`), or, for a model without a processor,
//! the Open Inference Protocol's JSON straight into the engine; all within the service's
//! call timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;
use atelier_plugins::calls::ServingInfo;
use atelier_plugins::{CallContext, CallError as PluginError, LimitKind};
use rand::Rng;

use super::logs::ServiceLog;
use super::rules::Facts;
use super::runtime::{Deployment, Served};
use super::tensors;
use crate::error::{DomainError, Error, Kind};

/// Headers that carry the caller's credentials: never shown to a processor.
pub const CREDENTIALS: &[&str] = &[
    "authorization",
    "cookie",
    "x-auth-token",
    "x-apig-appcode",
    "apikey",
    "proxy-authorization",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1): neither passed in nor out.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Why a call failed, on whose side.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    NotFound(String),
    /// An app may not call this service (not bound to it, or app authentication is off).
    #[error("{0}")]
    Unauthenticated(String),
    /// The service does not serve now (stopped, deploying, failed).
    #[error("{0}")]
    NotServing(String),
    #[error("{0}")]
    TooMany(String),
    /// The request is wrong: the processor or the engine said so.
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    TimedOut(String),
    /// The model or its processor failed, and says why.
    #[error("{0}")]
    Failed(String),
    #[error("{}", .0.message)]
    Common(#[from] Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for CallError {
    fn kind(&self) -> Kind {
        match self {
            CallError::NotFound(_) => Kind::NotFound,
            CallError::Unauthenticated(_) => Kind::Unauthenticated,
            CallError::NotServing(_) => Kind::Unavailable,
            CallError::TooMany(_) => Kind::TooManyRequests,
            CallError::BadInput(_) => Kind::Invalid,
            CallError::Unsupported(_) => Kind::UnsupportedMedia,
            CallError::TimedOut(_) => Kind::TimedOut,
            CallError::Failed(_) => Kind::Failed,
            CallError::Common(e) => e.kind,
            CallError::Internal(_) => Kind::Internal,
        }
    }
}

crate::domain_error!(CallError, common: Common, internal: Internal);

/// What a call answered, and which service and version answered it.
pub struct Answer {
    pub response: inf::Response,
    pub service_id: String,
    pub model_id: String,
    pub version: String,
}

/// Who a call runs as (for an app's call, the app's owner): the custom settings'
/// `USER_*`, `PROJECT_*` and `DOMAIN_*` variables.
pub struct RunsAs<'a> {
    pub user_name: &'a str,
    pub user_id: &'a str,
}

/// Runs one call on a deployed service. An error comes with the model that was to answer
/// (none when the call was refused before a version was chosen), and goes to the
/// service's log.
pub async fn call(
    host: &Arc<atelier_plugins::Host>,
    d: Arc<Deployment>,
    runs_as: RunsAs<'_>,
    mut request: inf::Request,
    log: &ServiceLog,
) -> Result<Answer, (CallError, Option<String>)> {
    admit(&d).map_err(|e| (logged(log, &d, None, e), None))?;
    let roll = rand::thread_rng().gen_range(0..100);
    let timeout = Duration::from_millis(d.spec.call_timeout_ms);
    let started = Instant::now();
    let deadline = started + timeout;
    let route = d.route(
        &Facts {
            user_name: runs_as.user_name,
            user_id: runs_as.user_id,
            headers: &request.headers,
        },
        roll,
    );
    if let Some((name, value)) = route.header {
        // The rule's value wins over one the caller sent.
        request.headers.retain(|(k, _)| *k != name);
        request.headers.push((name, value));
    }
    let (model_id, version, at) = {
        let v = &d.versions[route.version];
        let at = format!("{} {}", v.spec.model, v.spec.version);
        (v.spec.model_id.clone(), v.spec.version.clone(), at)
    };
    let work = run(host, d.clone(), route.version, request, Some(log), deadline);
    let response = match within(deadline, work).await {
        Ok(r) => r,
        Err(Some(e)) => return Err((logged(log, &d, Some(at.as_str()), e), Some(model_id))),
        Err(None) => {
            let e = CallError::TimedOut(format!(
                "the call took longer than {} s (service {}'s call timeout, call_timeout_seconds)",
                timeout.as_secs_f64(),
                d.name
            ));
            return Err((logged(log, &d, Some(at.as_str()), e), Some(model_id)));
        }
    };
    if response.status >= 400 {
        let status = format!("status {}", response.status);
        log.call_failed(
            &d.service_id,
            &status,
            "the processor's answer",
            Some(at.as_str()),
        );
    }
    tracing::debug!(service = %d.name, us = started.elapsed().as_micros() as u64, "inference call");
    Ok(Answer {
        response,
        service_id: d.service_id.clone(),
        model_id,
        version,
    })
}

/// The traffic limit: whether a call may go now.
fn admit(d: &Deployment) -> Result<(), CallError> {
    if d.admit() {
        return Ok(());
    }
    Err(CallError::TooMany(format!(
        "service {} takes {} calls a second (its traffic limit); try again shortly",
        d.name,
        d.spec.traffic_limit.unwrap_or_default()
    )))
}

/// Where a proxied call goes: a ready instance of the version the weights picked.
pub struct ProxyTarget {
    /// The instance, held for the call (a retirement waits for it).
    pub lease: super::instances::Lease,
    pub service_id: String,
    pub service: String,
    pub model_id: String,
    pub model: String,
    pub version: String,
    /// The call's timeout (for the answer's head; a stream may run longer).
    pub timeout: Duration,
    /// A custom setting's header, added to the request.
    pub header: Option<(String, String)>,
}

/// The traffic limit, a version (a custom setting's, else by the weights), a ready instance
/// of it. An error comes with the model that was to answer, as [`call`]'s.
pub fn proxy_target(
    d: &Deployment,
    runs_as: RunsAs<'_>,
    headers: &http::HeaderMap,
) -> Result<ProxyTarget, (CallError, Option<String>)> {
    admit(d).map_err(|e| (e, None))?;
    let roll = rand::thread_rng().gen_range(0..100);
    // The rules read the headers as the processor would see them (names in lower case).
    let pairs: Vec<(String, String)> = if d.rules.is_empty() {
        Vec::new()
    } else {
        headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect()
    };
    let route = d.route(
        &Facts {
            user_name: runs_as.user_name,
            user_id: runs_as.user_id,
            headers: &pairs,
        },
        roll,
    );
    let v = &d.versions[route.version];
    let lease = v.pool().and_then(|p| p.lease()).ok_or_else(|| {
        (
            CallError::NotServing(format!(
                "no instance of model {} {} is ready (service {}); see its instances",
                v.spec.model, v.spec.version, d.name
            )),
            Some(v.spec.model_id.clone()),
        )
    })?;
    Ok(ProxyTarget {
        lease,
        service_id: d.service_id.clone(),
        service: d.name.clone(),
        model_id: v.spec.model_id.clone(),
        model: v.spec.model.clone(),
        version: v.spec.version.clone(),
        timeout: Duration::from_millis(d.spec.call_timeout_ms),
        header: route.header,
    })
}

/// `e`, written to the service's log: its code and message (an internal error's details
/// stay in the gateway's own log).
fn logged(log: &ServiceLog, d: &Deployment, model: Option<&str>, e: CallError) -> CallError {
    let message = match e.kind() {
        Kind::Internal => "an internal error (the gateway's own log has the details)".into(),
        _ => e.to_string(),
    };
    log.call_failed(&d.service_id, e.code(), &message, model);
    e
}

/// Runs one request on a loaded deployment's first version, within `timeout`: no traffic
/// limit and no weights (a batch service's item, which loads the one version it runs
/// with `runtime::load`). The same pipeline as a call: the processor and the engine.
pub async fn run_loaded(
    host: &Arc<atelier_plugins::Host>,
    d: Arc<Deployment>,
    request: inf::Request,
    timeout: Duration,
) -> Result<inf::Response, CallError> {
    let deadline = Instant::now() + timeout;
    within(deadline, run(host, d, 0, request, None, deadline))
        .await
        .map_err(|e| {
            e.unwrap_or_else(|| {
                CallError::TimedOut(format!(
                    "the call took longer than {} s",
                    timeout.as_secs_f64()
                ))
            })
        })
}

/// `work`, ended at `deadline`; `Err(None)`: the deadline passed, whether the processor was
/// interrupted at it (its timeout after the deadline: the call's, not the plugin's own) or the
/// work was still waiting (for a permit, an instance, the engine).
async fn within(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<inf::Response, CallError>>,
) -> Result<inf::Response, Option<CallError>> {
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(CallError::TimedOut(_))) if Instant::now() >= deadline => Err(None),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

async fn run(
    host: &Arc<atelier_plugins::Host>,
    d: Arc<Deployment>,
    version: usize,
    request: inf::Request,
    log: Option<&ServiceLog>,
    deadline: Instant,
) -> Result<inf::Response, CallError> {
    let v = &d.versions[version];
    let Some(model) = v.onnx().cloned() else {
        return Err(CallError::Internal(anyhow::anyhow!(
            "model {} {} runs on a container engine: its calls are proxied",
            v.spec.model,
            v.spec.version
        )));
    };
    match &v.processor {
        Some(plugin) => {
            let serving = ServingInfo {
                model_name: v.spec.model.clone(),
                model_version: v.spec.version.clone(),
                service_id: d.service_id.clone(),
            };
            // The processor ends at the call's deadline at the latest, and a warm instance
            // runs on this worker (no thread hop each way): the task awaits nothing else.
            let ctx = CallContext {
                tenant: d.service_id.clone(),
                call_id: uuid::Uuid::now_v7().to_string(),
                deadline: Some(deadline),
                inline: true,
                ..CallContext::default()
            };
            let report = host
                .pipeline(plugin, ctx, serving, request, move |input| {
                    engine_run(&model, input)
                })
                .await;
            let (lines, dropped) = (&report.logs, report.logs_dropped);
            if let Some(log) = log {
                log.processor(
                    &d.service_id,
                    lines,
                    dropped,
                    &report.stdout,
                    &report.stderr,
                );
            }
            if let Some(e) = report.error {
                return Err(plugin_error(e));
            }
            match report.output {
                Some(Ok(mut response)) => {
                    if response.status == 0 {
                        response.status = 200;
                    }
                    if response.content_type.is_empty() {
                        response.content_type = "application/json".into();
                    }
                    Ok(response)
                }
                Some(Err(e)) => Err(e),
                None => Err(CallError::Internal(anyhow::anyhow!(
                    "the processor call ended without output or error"
                ))),
            }
        }
        None => v2_call(v, model, request).await,
    }
}

/// The built-in engine between `preprocess` and `postprocess`: tensors in, tensors out.
fn engine_run(
    model: &atelier_inference::onnx::OnnxModel,
    input: inf::ModelData,
) -> Result<inf::ModelData, CallError> {
    let inf::ModelData::Tensors(ts) = input else {
        return Err(CallError::Failed(
            "the processor's preprocess gave JSON; the built-in ONNX engine takes tensors".into(),
        ));
    };
    let outputs = model
        .run(ts.into_iter().map(tensors::from_wit).collect())
        .map_err(engine_error)?;
    Ok(inf::ModelData::Tensors(
        outputs.into_iter().map(tensors::to_wit).collect(),
    ))
}

fn engine_error(e: atelier_inference::onnx::EngineError) -> CallError {
    if e.is_caller_fault() {
        CallError::BadInput(e.to_string())
    } else {
        CallError::Failed(e.to_string())
    }
}

/// A model without a processor: the body is an Open Inference Protocol request.
async fn v2_call(
    v: &Served,
    model: Arc<atelier_inference::onnx::OnnxModel>,
    request: inf::Request,
) -> Result<inf::Response, CallError> {
    let body = match request.body {
        inf::Body::Json(text) => text.into_bytes(),
        inf::Body::Raw(bytes) if request.content_type.is_empty() => bytes,
        _ => {
            return Err(CallError::Unsupported(format!(
                "model {} {} has no processor: send an inference request as JSON ({{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}), Content-Type: application/json",
                v.spec.model, v.spec.version
            )));
        }
    };
    let (inputs, id) = tensors::v2_inputs(&body).map_err(CallError::BadInput)?;
    // In place on this worker where the runtime can hand its other tasks on (no hop to a
    // blocking thread and back, as a processor's warm call), else on the blocking pool.
    let in_place = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let outputs = if in_place {
        tokio::task::block_in_place(|| model.run(inputs))
    } else {
        tokio::task::spawn_blocking(move || model.run(inputs))
            .await
            .map_err(|e| CallError::Internal(anyhow::anyhow!("engine thread: {e}")))?
    }
    .map_err(engine_error)?;
    let json = tensors::v2_response(&v.spec.model, &v.spec.version, id.as_deref(), &outputs)
        .map_err(CallError::Failed)?;
    Ok(inf::Response {
        status: 200,
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: serde_json::to_vec(&json).map_err(anyhow::Error::from)?,
    })
}

/// A processor's failure as the caller sees it: its own errors by their kind, limits and
/// traps as the model's failure (the call's deadline as a timeout).
fn plugin_error(e: PluginError) -> CallError {
    match e {
        PluginError::Guest { kind, message } => match kind.as_str() {
            "invalid-input" => CallError::BadInput(message),
            "unsupported" => CallError::Unsupported(message),
            "not-ready" => CallError::NotServing(message),
            _ => CallError::Failed(message),
        },
        PluginError::Limit {
            kind: LimitKind::Timeout,
            ..
        } => CallError::TimedOut(e.to_string()),
        PluginError::Limit { .. } | PluginError::Trap { .. } => CallError::Failed(e.to_string()),
        PluginError::BadInput { message } => CallError::BadInput(message),
        PluginError::Host { message } => {
            CallError::Internal(anyhow::anyhow!("the plugin host: {message}"))
        }
    }
}
