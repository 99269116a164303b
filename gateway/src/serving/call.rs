//! One inference call (spec/inference.md §7.3): the caller's service and version (by the
//! traffic weights), the traffic limit, then in one processor instance `preprocess` → the
//! built-in engine → `postprocess` (`Host::pipeline`), or, for a model without a processor,
//! the Open Inference Protocol's JSON straight into the engine; all within the service's
//! call timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;
use atelier_plugins::calls::ServingInfo;
use atelier_plugins::{CallContext, CallError as PluginError, LimitKind};
use rand::Rng;

use super::runtime::{Deployment, Served};
use super::tensors;
use crate::error::{DomainError, Error, Kind};

/// Why a call failed, on whose side.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    NotFound(String),
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

/// Runs one call on a deployed service. An error comes with the model that was to answer
/// (none when the call was refused before a version was chosen).
pub async fn call(
    host: &Arc<atelier_plugins::Host>,
    d: Arc<Deployment>,
    request: inf::Request,
) -> Result<Answer, (CallError, Option<String>)> {
    if !d.admit() {
        return Err((
            CallError::TooMany(format!(
                "service {} takes {} calls a second (its traffic limit); try again shortly",
                d.name,
                d.spec.traffic_limit.unwrap_or_default()
            )),
            None,
        ));
    }
    let roll = rand::thread_rng().gen_range(0..100);
    let timeout = Duration::from_millis(d.spec.call_timeout_ms);
    let started = Instant::now();
    let (model_id, version) = {
        let v = d.pick(roll);
        (v.spec.model_id.clone(), v.spec.version.clone())
    };
    let work = run(host, d.clone(), roll, request);
    let response = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err((e, Some(model_id))),
        Err(_) => {
            return Err((
                CallError::TimedOut(format!(
                    "the call took longer than {} s (service {}'s call timeout, call_timeout_seconds)",
                    timeout.as_secs_f64(),
                    d.name
                )),
                Some(model_id),
            ));
        }
    };
    tracing::debug!(service = %d.name, us = started.elapsed().as_micros() as u64, "inference call");
    Ok(Answer {
        response,
        service_id: d.service_id.clone(),
        model_id,
        version,
    })
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
    match tokio::time::timeout(timeout, run(host, d, 0, request)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::TimedOut(format!(
            "the call took longer than {} s",
            timeout.as_secs_f64()
        ))),
    }
}

async fn run(
    host: &Arc<atelier_plugins::Host>,
    d: Arc<Deployment>,
    roll: u32,
    request: inf::Request,
) -> Result<inf::Response, CallError> {
    let v = d.pick(roll);
    match &v.processor {
        Some(plugin) => {
            let model = v.model.clone();
            let serving = ServingInfo {
                model_name: v.spec.model.clone(),
                model_version: v.spec.version.clone(),
                service_id: d.service_id.clone(),
            };
            let ctx = CallContext {
                tenant: d.service_id.clone(),
                call_id: uuid::Uuid::now_v7().to_string(),
                ..CallContext::default()
            };
            let report = host
                .pipeline(plugin, ctx, serving, request, move |input| {
                    engine_run(&model, input)
                })
                .await;
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
        None => v2_call(v, request).await,
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
async fn v2_call(v: &Served, request: inf::Request) -> Result<inf::Response, CallError> {
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
    let model = v.model.clone();
    let outputs = tokio::task::spawn_blocking(move || model.run(inputs))
        .await
        .map_err(|e| CallError::Internal(anyhow::anyhow!("engine thread: {e}")))?
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
