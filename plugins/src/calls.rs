//! Calls of each world: typed entry points (what the gateway's services and the benchmark
//! use) and a JSON form (`invoke`, for `POST /v1/plugins/{name}/{version}/invoke` and
//! `atelier plugin test`).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use crate::bindings::inference::atelier::plugin::inference_types as inf;
use crate::bindings::training::atelier::plugin::training_types as tr;
use crate::bindings::types::{Dtype, Error as GuestError, ErrorKind, Parameter, Tensor, Value};
use crate::bindings::workflow::atelier::plugin::step_types as st;
use crate::host::{
    Bound, CallContext, CallReport, Host, Live, PluginRef, Timings, arm_deadline, classify,
};
use crate::limits::{CallError, LimitKind, Limits};
use crate::state::State;
use crate::world::World;
use wasmtime::Store;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn guest_error(e: GuestError) -> CallError {
    let kind = match e.kind {
        ErrorKind::InvalidInput => "invalid-input",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::NotReady => "not-ready",
        ErrorKind::Failed => "failed",
        ErrorKind::Cancelled => "cancelled",
    };
    CallError::Guest {
        kind: kind.into(),
        message: e.message,
    }
}

/// Runs one export call with the deadline armed, classifying traps and checking the output
/// size.
fn timed<T>(
    store: &mut Store<State>,
    limits: &Limits,
    timings: &mut Timings,
    name: &str,
    call: impl FnOnce(&mut Store<State>) -> wasmtime::Result<Result<T, GuestError>>,
    size: impl Fn(&T) -> usize,
) -> Result<T, CallError> {
    arm_deadline(store, limits.timeout_ms);
    let t = Instant::now();
    let result = call(store);
    timings
        .calls
        .push((name.to_string(), t.elapsed().as_micros() as u64));
    let value = result
        .map_err(|e| classify(e, store, limits, t))?
        .map_err(guest_error)?;
    let observed = size(&value) as u64;
    if observed > limits.output_bytes() {
        return Err(CallError::Limit {
            kind: LimitKind::Output,
            limit: limits.output_kb,
            observed: observed.div_ceil(1024),
            unit: "KiB".into(),
            hint: "raise limits.output_kb in the plugin's manifest (up to the gateway's ATELIER_PLUGIN_MAX_OUTPUT_KB)".into(),
        });
    }
    Ok(value)
}

fn tensors_size(t: &[Tensor]) -> usize {
    t.iter()
        .map(|t| t.name.len() + t.data.len() + t.shape.len() * 8)
        .sum()
}

fn model_data_size(d: &inf::ModelData) -> usize {
    match d {
        inf::ModelData::Tensors(t) => tensors_size(t),
        inf::ModelData::Json(s) => s.len(),
    }
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Text(s) | Value::Json(s) => s.len(),
        _ => 8,
    }
}

fn spec_size(s: &tr::AlgorithmSpec) -> usize {
    let strings = |v: &[String]| v.iter().map(String::len).sum::<usize>();
    s.name.len()
        + s.version.len()
        + s.description.len()
        + strings(&s.inputs)
        + strings(&s.outputs)
        + strings(&s.metrics)
        + s.hyperparameters
            .iter()
            .map(|h| {
                h.name.len()
                    + h.description.len()
                    + strings(&h.choices)
                    + h.default_value.as_ref().map_or(0, value_size)
                    + 32
            })
            .sum::<usize>()
}

/// The instance's bindings and its store, borrowed apart.
fn parts(live: &mut Live) -> (&Bound, &mut Store<State>) {
    (
        live.bound.as_ref().expect("instantiated before the call"),
        &mut live.store,
    )
}

/// `init` once per instance (inference processors).
fn ensure_init(
    live: &mut Live,
    limits: &Limits,
    timings: &mut Timings,
    info: &inf::ModelInfo,
) -> Result<(), CallError> {
    if live.initialized {
        return Ok(());
    }
    let t = Instant::now();
    let (Bound::Inference(b), store) = parts(live) else {
        unreachable!()
    };
    let result = timed(
        store,
        limits,
        timings,
        "init",
        |s| b.atelier_plugin_processor().call_init(s, info),
        |_| 0,
    );
    timings.calls.pop();
    timings.init_us = t.elapsed().as_micros() as u64;
    result?;
    live.initialized = true;
    Ok(())
}

fn model_info(plugin: &PluginRef) -> inf::ModelInfo {
    let (name, version) = plugin.key.split_once('@').unwrap_or((&plugin.key, ""));
    inf::ModelInfo {
        model_name: name.to_string(),
        model_version: version.to_string(),
        model_path: if plugin.model_dir.is_some() {
            "/model".into()
        } else {
            String::new()
        },
        service_id: String::new(),
    }
}

/// What an inference processor call produced.
#[derive(Debug, Clone)]
pub struct PrePost {
    pub prepared: inf::Prepared,
    pub response: Option<inf::Response>,
}

impl Host {
    /// `preprocess`, then (with a model output) `postprocess`, on one instance.
    pub async fn prepost(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        request: inf::Request,
        model_output: Option<inf::ModelData>,
    ) -> CallReport<PrePost> {
        if plugin.world != World::InferenceProcessor {
            return self.wrong_world(plugin, World::InferenceProcessor).await;
        }
        let info = model_info(plugin);
        self.run(plugin, ctx, move |live, limits, timings| {
            ensure_init(live, limits, timings, &info)?;
            let (Bound::Inference(b), store) = parts(live) else {
                unreachable!()
            };
            let prepared = timed(
                store,
                limits,
                timings,
                "preprocess",
                |s| b.atelier_plugin_processor().call_preprocess(s, &request),
                |p: &inf::Prepared| {
                    model_data_size(&p.input) + p.state.as_ref().map_or(0, Vec::len)
                },
            )?;
            let response = match model_output {
                Some(output) => Some(timed(
                    store,
                    limits,
                    timings,
                    "postprocess",
                    |s| {
                        b.atelier_plugin_processor().call_postprocess(
                            s,
                            prepared.state.as_deref(),
                            &output,
                        )
                    },
                    |r: &inf::Response| {
                        r.body.len()
                            + r.headers
                                .iter()
                                .map(|(k, v)| k.len() + v.len())
                                .sum::<usize>()
                    },
                )?),
                None => None,
            };
            Ok(PrePost { prepared, response })
        })
        .await
    }

    /// A workflow step's `run`.
    pub async fn run_step(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        context: st::StepContext,
        inputs: Vec<st::Input>,
        outputs: Vec<st::OutputSlot>,
    ) -> CallReport<st::StepResult> {
        if plugin.world != World::WorkflowStep {
            return self.wrong_world(plugin, World::WorkflowStep).await;
        }
        self.run(plugin, ctx, move |live, limits, timings| {
            let (Bound::Workflow(b), store) = parts(live) else {
                unreachable!()
            };
            timed(
                store,
                limits,
                timings,
                "run",
                |s| {
                    b.atelier_plugin_step()
                        .call_run(s, &context, &inputs, &outputs)
                },
                |r: &st::StepResult| {
                    r.outputs
                        .iter()
                        .map(|(k, v)| k.len() + value_size(v))
                        .sum::<usize>()
                        + r.variables
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>()
                },
            )
        })
        .await
    }

    /// A training algorithm's `describe`.
    pub async fn describe(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
    ) -> CallReport<tr::AlgorithmSpec> {
        if plugin.world != World::TrainingAlgorithm {
            return self.wrong_world(plugin, World::TrainingAlgorithm).await;
        }
        self.run(plugin, ctx, move |live, limits, timings| {
            let (Bound::Training(b), store) = parts(live) else {
                unreachable!()
            };
            timed(
                store,
                limits,
                timings,
                "describe",
                |s| b.atelier_plugin_algorithm().call_describe(s).map(Ok),
                spec_size,
            )
        })
        .await
    }

    /// A training algorithm's `train`, after checking the hyperparameters against `describe`.
    pub async fn train(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        context: tr::TrainContext,
    ) -> CallReport<(tr::AlgorithmSpec, tr::TrainSummary)> {
        if plugin.world != World::TrainingAlgorithm {
            return self.wrong_world(plugin, World::TrainingAlgorithm).await;
        }
        self.run(plugin, ctx, move |live, limits, timings| {
            let (Bound::Training(b), store) = parts(live) else {
                unreachable!()
            };
            let spec = timed(
                store,
                limits,
                timings,
                "describe",
                |s| b.atelier_plugin_algorithm().call_describe(s).map(Ok),
                spec_size,
            )?;
            let given = std::mem::take(&mut store.data_mut().call.parameters);
            store.data_mut().call.parameters = check_hyperparameters(&spec, given)?;
            let summary = timed(
                store,
                limits,
                timings,
                "train",
                |s| b.atelier_plugin_algorithm().call_train(s, &context),
                |s: &tr::TrainSummary| s.final_metrics.iter().map(|(k, _)| k.len() + 8).sum(),
            )?;
            Ok((spec, summary))
        })
        .await
    }

    async fn wrong_world<O: Send + 'static>(
        self: &Arc<Self>,
        plugin: &PluginRef,
        wanted: World,
    ) -> CallReport<O> {
        let world = plugin.world;
        refused(CallError::bad_input(format!(
            "the plugin is a {world} plugin, not a {wanted}"
        )))
    }

    /// Calls a plugin with JSON input, as `invoke` and `atelier plugin test` do. The input's
    /// form depends on the world (see docs/plugins.md).
    pub async fn invoke(
        self: &Arc<Self>,
        plugin: &PluginRef,
        mut ctx: CallContext,
        input: &Json,
    ) -> CallReport<Json> {
        let parsed = match plugin.world {
            World::InferenceProcessor => parse_inference(input).map(Parsed::Inference),
            World::WorkflowStep => parse_step(input, &mut ctx).map(Parsed::Step),
            World::TrainingAlgorithm => parse_training(input, &mut ctx).map(Parsed::Training),
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(message) => {
                // Refused before any instance is taken or created.
                return refused(CallError::bad_input(message));
            }
        };
        match parsed {
            Parsed::Inference((request, output)) => {
                map_report(self.prepost(plugin, ctx, request, output).await, |p| {
                    let mut out = Map::new();
                    out.insert("preprocess".into(), prepared_json(&p.prepared));
                    if let Some(r) = &p.response {
                        out.insert("postprocess".into(), response_json(r));
                    }
                    Json::Object(out)
                })
            }
            Parsed::Step((context, inputs, outputs)) => map_report(
                self.run_step(plugin, ctx, context, inputs, outputs).await,
                |r| step_result_json(&r),
            ),
            Parsed::Training(None) => {
                map_report(self.describe(plugin, ctx).await, |s| spec_json(&s))
            }
            Parsed::Training(Some(context)) => map_report(
                self.train(plugin, ctx, context).await,
                |(_, s)| json!({"final_metrics": s.final_metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>()}),
            ),
        }
    }
}

enum Parsed {
    Inference((inf::Request, Option<inf::ModelData>)),
    Step((st::StepContext, Vec<st::Input>, Vec<st::OutputSlot>)),
    Training(Option<tr::TrainContext>),
}

/// The report of a call refused before it ran.
fn refused<O>(error: CallError) -> CallReport<O> {
    CallReport::failed(
        uuid::Uuid::now_v7().to_string(),
        error,
        Default::default(),
        crate::host::LoadSource::Memory,
    )
}

fn map_report<A, B>(r: CallReport<A>, f: impl FnOnce(A) -> B) -> CallReport<B> {
    CallReport {
        call_id: r.call_id,
        output: r.output.map(f),
        error: r.error,
        logs: r.logs,
        logs_dropped: r.logs_dropped,
        stdout: r.stdout,
        stderr: r.stderr,
        metrics: r.metrics,
        timings: r.timings,
        instance: r.instance,
        load: r.load,
    }
}

// ---- JSON forms ----

use crate::tensors::dtype_name;

fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "f16" => Dtype::F16,
        "bf16" => Dtype::Bf16,
        "f32" => Dtype::F32,
        "f64" => Dtype::F64,
        "i8" => Dtype::I8,
        "i16" => Dtype::I16,
        "i32" => Dtype::I32,
        "i64" => Dtype::I64,
        "u8" => Dtype::U8,
        "u16" => Dtype::U16,
        "u32" => Dtype::U32,
        "u64" => Dtype::U64,
        "boolean" | "bool" => Dtype::Boolean,
        "utf8" | "string" => Dtype::Utf8,
        _ => return None,
    })
}

/// A tensor as JSON: `values` for numbers, booleans and strings (decoded), `data_base64`
/// for f16/bf16.
pub fn tensor_json(t: &Tensor) -> Json {
    let mut o = Map::new();
    o.insert("name".into(), json!(t.name));
    o.insert("dtype".into(), json!(dtype_name(t.dtype)));
    o.insert("shape".into(), json!(t.shape));
    macro_rules! nums {
        ($ty:ty, $n:expr) => {
            t.data
                .chunks_exact($n)
                .map(|c| json!(<$ty>::from_le_bytes(crate::tensors::le(c))))
                .collect::<Vec<_>>()
        };
    }
    let values: Option<Vec<Json>> = match t.dtype {
        Dtype::F32 => Some(
            t.data
                .chunks_exact(4)
                .map(|c| {
                    let v = f32::from_le_bytes(crate::tensors::le(c));
                    // The shortest decimal that reads back as this f32 (0.1, not 0.10000000149).
                    v.to_string()
                        .parse::<f64>()
                        .map_or(Json::Null, |f| json!(f))
                })
                .collect(),
        ),
        Dtype::F64 => Some(nums!(f64, 8)),
        Dtype::I8 => Some(nums!(i8, 1)),
        Dtype::I16 => Some(nums!(i16, 2)),
        Dtype::I32 => Some(nums!(i32, 4)),
        Dtype::I64 => Some(nums!(i64, 8)),
        Dtype::U8 => Some(nums!(u8, 1)),
        Dtype::U16 => Some(nums!(u16, 2)),
        Dtype::U32 => Some(nums!(u32, 4)),
        Dtype::U64 => Some(nums!(u64, 8)),
        Dtype::Boolean => Some(t.data.iter().map(|b| json!(*b != 0)).collect()),
        Dtype::Utf8 => {
            let mut out = Vec::new();
            let mut rest = &t.data[..];
            while rest.len() >= 4 {
                let n = u32::from_le_bytes(crate::tensors::le(rest)) as usize;
                if rest.len() < 4 + n {
                    break;
                }
                out.push(json!(String::from_utf8_lossy(&rest[4..4 + n])));
                rest = &rest[4 + n..];
            }
            Some(out)
        }
        Dtype::F16 | Dtype::Bf16 => None,
    };
    match values {
        Some(v) => o.insert("values".into(), Json::Array(v)),
        None => o.insert("data_base64".into(), json!(B64.encode(&t.data))),
    };
    Json::Object(o)
}

pub fn parse_tensor(v: &Json) -> Result<Tensor, String> {
    let name = v
        .get("name")
        .and_then(Json::as_str)
        .ok_or("a tensor needs a \"name\"")?
        .to_string();
    let dtype_s = v
        .get("dtype")
        .and_then(Json::as_str)
        .ok_or_else(|| format!("tensor {name} needs a \"dtype\""))?;
    let dtype =
        parse_dtype(dtype_s).ok_or_else(|| format!("tensor {name}: unknown dtype {dtype_s}"))?;
    let data = if let Some(b) = v.get("data_base64").and_then(Json::as_str) {
        B64.decode(b)
            .map_err(|e| format!("tensor {name}: data_base64: {e}"))?
    } else {
        let values = v
            .get("values")
            .and_then(Json::as_array)
            .ok_or_else(|| format!("tensor {name} needs \"values\" or \"data_base64\""))?;
        let mut data = Vec::new();
        let bad = |i: usize| format!("tensor {name}: value {i} is not a {dtype_s}");
        for (i, x) in flatten(values).iter().enumerate() {
            match dtype {
                Dtype::F32 => data.extend((x.as_f64().ok_or_else(|| bad(i))? as f32).to_le_bytes()),
                Dtype::F64 => data.extend(x.as_f64().ok_or_else(|| bad(i))?.to_le_bytes()),
                Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => {
                    let n = x.as_i64().ok_or_else(|| bad(i))?;
                    let w = match dtype {
                        Dtype::I8 => 1,
                        Dtype::I16 => 2,
                        Dtype::I32 => 4,
                        _ => 8,
                    };
                    data.extend(&n.to_le_bytes()[..w]);
                }
                Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => {
                    let n = x.as_u64().ok_or_else(|| bad(i))?;
                    let w = match dtype {
                        Dtype::U8 => 1,
                        Dtype::U16 => 2,
                        Dtype::U32 => 4,
                        _ => 8,
                    };
                    data.extend(&n.to_le_bytes()[..w]);
                }
                Dtype::Boolean => data.push(u8::from(x.as_bool().ok_or_else(|| bad(i))?)),
                Dtype::Utf8 => {
                    let s = x.as_str().ok_or_else(|| bad(i))?;
                    data.extend((s.len() as u32).to_le_bytes());
                    data.extend(s.as_bytes());
                }
                Dtype::F16 | Dtype::Bf16 => {
                    return Err(format!("tensor {name}: give {dtype_s} data as data_base64"));
                }
            }
        }
        data
    };
    let shape = match v.get("shape") {
        Some(s) => s
            .as_array()
            .and_then(|a| a.iter().map(Json::as_u64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                format!("tensor {name}: shape must be a list of non-negative integers")
            })?,
        None => vec![data.len() as u64 / element_width(dtype).unwrap_or(1)],
    };
    Ok(Tensor {
        name,
        dtype,
        shape,
        data,
    })
}

fn element_width(d: Dtype) -> Option<u64> {
    Some(match d {
        Dtype::I8 | Dtype::U8 | Dtype::Boolean => 1,
        Dtype::F16 | Dtype::Bf16 | Dtype::I16 | Dtype::U16 => 2,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        Dtype::Utf8 => return None,
    })
}

fn flatten(values: &[Json]) -> Vec<&Json> {
    let mut out = Vec::new();
    for v in values {
        match v {
            Json::Array(a) => out.extend(flatten(a)),
            other => out.push(other),
        }
    }
    out
}

fn model_data_json(d: &inf::ModelData) -> Json {
    match d {
        inf::ModelData::Tensors(t) => {
            json!({"tensors": t.iter().map(tensor_json).collect::<Vec<_>>()})
        }
        inf::ModelData::Json(s) => {
            json!({"json": serde_json::from_str::<Json>(s).unwrap_or(Json::String(s.clone()))})
        }
    }
}

fn parse_model_data(v: &Json) -> Result<inf::ModelData, String> {
    if let Some(t) = v.get("tensors") {
        let list = t.as_array().ok_or("model_output.tensors must be a list")?;
        return Ok(inf::ModelData::Tensors(
            list.iter().map(parse_tensor).collect::<Result<_, _>>()?,
        ));
    }
    if let Some(j) = v.get("json") {
        return Ok(inf::ModelData::Json(j.to_string()));
    }
    Err("model_output must be {\"tensors\": [...]} or {\"json\": ...}".into())
}

fn prepared_json(p: &inf::Prepared) -> Json {
    let mut o = Map::new();
    o.insert("input".into(), model_data_json(&p.input));
    if let Some(s) = &p.state {
        o.insert("state_base64".into(), json!(B64.encode(s)));
    }
    Json::Object(o)
}

fn response_json(r: &inf::Response) -> Json {
    let content_type = if r.content_type.is_empty() {
        "application/json"
    } else {
        &r.content_type
    };
    let body = if content_type.starts_with("application/json") {
        serde_json::from_slice::<Json>(&r.body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.body)))
    } else if let Ok(text) = std::str::from_utf8(&r.body) {
        json!(text)
    } else {
        json!({"base64": B64.encode(&r.body)})
    };
    json!({
        "status": if r.status == 0 { 200 } else { r.status },
        "content_type": content_type,
        "headers": r.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body": body,
    })
}

fn pairs(v: Option<&Json>, what: &str) -> Result<Vec<(String, String)>, String> {
    match v {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Object(o)) => o
            .iter()
            .map(|(k, v)| match v {
                Json::String(s) => Ok((k.to_ascii_lowercase(), s.clone())),
                other => Ok((k.to_ascii_lowercase(), other.to_string())),
            })
            .collect(),
        Some(_) => Err(format!("{what} must be an object of strings")),
    }
}

/// `{"body": <JSON>}` or `{"request": {...}}`, with an optional `model_output`.
fn parse_inference(input: &Json) -> Result<(inf::Request, Option<inf::ModelData>), String> {
    let o = input
        .as_object()
        .ok_or("the input must be a JSON object: {\"body\": ..., \"model_output\": ...}")?;
    known_fields(o, &["body", "request", "model_output"])?;
    let request = match (o.get("body"), o.get("request")) {
        (Some(_), Some(_)) => return Err("give body or request, not both".into()),
        (Some(body), None) => inf::Request {
            method: "POST".into(),
            path: "/".into(),
            query: Vec::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            content_type: "application/json".into(),
            body: inf::Body::Json(body.to_string()),
        },
        (None, Some(r)) => parse_request(r)?,
        (None, None) => return Err("the input needs a body (JSON) or a request".into()),
    };
    let output = o.get("model_output").map(parse_model_data).transpose()?;
    Ok((request, output))
}

fn parse_request(r: &Json) -> Result<inf::Request, String> {
    let method = r
        .get("method")
        .and_then(Json::as_str)
        .unwrap_or("POST")
        .to_string();
    let path = r
        .get("path")
        .and_then(Json::as_str)
        .unwrap_or("/")
        .to_string();
    let query = pairs(r.get("query"), "request.query")?;
    let mut headers = pairs(r.get("headers"), "request.headers")?;
    let (content_type, body) = if let Some(j) = r.get("json") {
        (
            "application/json".to_string(),
            inf::Body::Json(j.to_string()),
        )
    } else if let Some(fields) = r.get("multipart") {
        let fields = fields
            .as_object()
            .ok_or("request.multipart must be an object: {field: [file, ...]}")?;
        let mut out = Vec::new();
        for (name, parts) in fields {
            let parts = parts
                .as_array()
                .ok_or_else(|| format!("request.multipart.{name} must be a list"))?;
            let mut field = inf::FormField {
                name: name.clone(),
                files: Vec::new(),
                values: Vec::new(),
            };
            for p in parts {
                match p {
                    Json::String(s) => field.values.push(s.clone()),
                    Json::Object(f) => {
                        let data = match (
                            f.get("data_base64").and_then(Json::as_str),
                            f.get("text").and_then(Json::as_str),
                        ) {
                            (Some(b), _) => B64
                                .decode(b)
                                .map_err(|e| format!("request.multipart.{name}: {e}"))?,
                            (None, Some(t)) => t.as_bytes().to_vec(),
                            (None, None) => {
                                return Err(format!(
                                    "request.multipart.{name}: a file needs data_base64 or text"
                                ));
                            }
                        };
                        field.files.push(inf::File {
                            name: f
                                .get("name")
                                .and_then(Json::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            content_type: f
                                .get("content_type")
                                .and_then(Json::as_str)
                                .map(str::to_string),
                            data,
                        });
                    }
                    _ => {
                        return Err(format!(
                            "request.multipart.{name}: parts are strings or file objects"
                        ));
                    }
                }
            }
            out.push(field);
        }
        ("multipart/form-data".to_string(), inf::Body::Multipart(out))
    } else if let Some(b) = r.get("raw_base64").and_then(Json::as_str) {
        let ct = r
            .get("content_type")
            .and_then(Json::as_str)
            .unwrap_or("application/octet-stream")
            .to_string();
        (
            ct,
            inf::Body::Raw(
                B64.decode(b)
                    .map_err(|e| format!("request.raw_base64: {e}"))?,
            ),
        )
    } else {
        return Err("request needs json, multipart or raw_base64".into());
    };
    if !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), content_type.clone()));
    }
    Ok(inf::Request {
        method,
        path,
        query,
        headers,
        content_type,
        body,
    })
}

/// A JSON value as a WIT `value`.
pub fn to_value(v: &Json) -> Value {
    match v {
        Json::String(s) => Value::Text(s.clone()),
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        other => Value::Json(other.to_string()),
    }
}

pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Text(s) => json!(s),
        Value::Integer(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Boolean(b) => json!(b),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
    }
}

fn parameters(v: Option<&Json>, what: &str) -> Result<Vec<Parameter>, String> {
    match v {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Object(o)) => Ok(o
            .iter()
            .map(|(k, v)| Parameter {
                name: k.clone(),
                value: to_value(v),
            })
            .collect()),
        Some(_) => Err(format!("{what} must be an object")),
    }
}

fn str_field(o: &Map<String, Json>, key: &str, default: &str) -> Result<String, String> {
    match o.get(key) {
        None => Ok(default.to_string()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn channels(v: Option<&Json>, what: &str) -> Result<Vec<(String, String, Option<Value>)>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v
        .as_array()
        .ok_or_else(|| format!("{what} must be a list of {{\"name\", \"path\"}}"))?;
    list.iter()
        .map(|c| {
            let name = c
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| format!("each of {what} needs a name"))?;
            let path = c.get("path").and_then(Json::as_str).unwrap_or_default();
            let value = c.get("value").map(to_value);
            if path.is_empty() && value.is_none() {
                return Err(format!(
                    "{what} {name} needs a path (a storage prefix) or a value"
                ));
            }
            if !path.is_empty() {
                crate::storage::normalize_prefix(path)
                    .map_err(|e| format!("{what} {name}: {e}"))?;
            }
            Ok((name.to_string(), path.to_string(), value))
        })
        .collect()
}

fn grant_channels(
    ctx: &mut CallContext,
    list: &[(String, String, Option<Value>)],
    writable: bool,
) -> Result<(), String> {
    for (_, path, _) in list {
        if !path.is_empty() {
            ctx.storage.allow(path, writable)?;
        }
    }
    Ok(())
}

/// Refuses fields the input form does not know.
fn known_fields(o: &Map<String, Json>, known: &[&str]) -> Result<(), String> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown field {k:?} in the input (expected one of {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

type Channels = Vec<(String, String, Option<Value>)>;

/// The `inputs` (granted read-only) and `outputs` (granted read-write, each with a path) of
/// a step or a training job, and its parameters (under `params_key`).
fn data_channels(
    o: &Map<String, Json>,
    ctx: &mut CallContext,
    params_key: &str,
) -> Result<(Channels, Channels), String> {
    let inputs = channels(o.get("inputs"), "inputs")?;
    let outputs = channels(o.get("outputs"), "outputs")?;
    if let Some((name, _, _)) = outputs.iter().find(|(_, p, _)| p.is_empty()) {
        return Err(format!("output {name} needs a path"));
    }
    grant_channels(ctx, &inputs, false)?;
    grant_channels(ctx, &outputs, true)?;
    ctx.parameters = parameters(o.get(params_key), params_key)?;
    Ok((inputs, outputs))
}

/// `{"inputs": [{"name","path"|"value"}], "outputs": [{"name","path"}], "parameters": {...}}`.
fn parse_step(
    input: &Json,
    ctx: &mut CallContext,
) -> Result<(st::StepContext, Vec<st::Input>, Vec<st::OutputSlot>), String> {
    let o = input
        .as_object()
        .ok_or("the input must be a JSON object: {\"inputs\", \"outputs\", \"parameters\"}")?;
    known_fields(
        o,
        &[
            "inputs",
            "outputs",
            "parameters",
            "workflow_name",
            "execution_id",
            "step_name",
            "attempt",
        ],
    )?;
    let (inputs, outputs) = data_channels(o, ctx, "parameters")?;
    let context = st::StepContext {
        workflow_name: str_field(o, "workflow_name", "try")?,
        execution_id: str_field(o, "execution_id", &ctx.call_id)?,
        step_name: str_field(o, "step_name", "step")?,
        attempt: o.get("attempt").and_then(Json::as_u64).unwrap_or(0) as u32,
        deadline_unix_ms: 0,
    };
    Ok((
        context,
        inputs
            .into_iter()
            .map(|(name, path, value)| st::Input { name, path, value })
            .collect(),
        outputs
            .into_iter()
            .map(|(name, path, _)| st::OutputSlot { name, path })
            .collect(),
    ))
}

/// `{"describe": true}` or `{"hyperparameters": {...}, "inputs": [...], "outputs": [...]}`.
fn parse_training(input: &Json, ctx: &mut CallContext) -> Result<Option<tr::TrainContext>, String> {
    let o = input.as_object().ok_or("the input must be a JSON object: {\"describe\": true} or {\"hyperparameters\", \"inputs\", \"outputs\"}")?;
    if o.get("describe").and_then(Json::as_bool) == Some(true) {
        return Ok(None);
    }
    known_fields(
        o,
        &[
            "describe",
            "hyperparameters",
            "inputs",
            "outputs",
            "job_name",
            "attempt",
        ],
    )?;
    let (inputs, outputs) = data_channels(o, ctx, "hyperparameters")?;
    let resume_from = match outputs.first() {
        Some((_, path, _)) => {
            let prefix = format!("{}checkpoints/", crate::storage::normalize_prefix(path)?);
            let latest = crate::storage::latest_checkpoint(&ctx.storage, &prefix);
            ctx.checkpoint_prefix = Some(prefix);
            latest
        }
        None => None,
    };
    Ok(Some(tr::TrainContext {
        job_name: str_field(o, "job_name", "try")?,
        attempt: o.get("attempt").and_then(Json::as_u64).unwrap_or(0) as u32,
        inputs: inputs
            .iter()
            .map(|(name, path, _)| tr::Channel {
                name: name.clone(),
                path: path.clone(),
            })
            .collect(),
        outputs: outputs
            .iter()
            .map(|(name, path, _)| tr::Channel {
                name: name.clone(),
                path: path.clone(),
            })
            .collect(),
        resume_from,
    }))
}

fn step_result_json(r: &st::StepResult) -> Json {
    json!({
        "outputs": r.outputs.iter().map(|(k, v)| (k.clone(), value_json(v))).collect::<Map<_, _>>(),
        "variables": r.variables.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(),
    })
}

pub fn spec_json(s: &tr::AlgorithmSpec) -> Json {
    json!({
        "name": s.name,
        "version": s.version,
        "description": s.description,
        "hyperparameters": s.hyperparameters.iter().map(|h| json!({
            "name": h.name,
            "kind": match h.kind {
                tr::HyperparameterKind::Text => "text",
                tr::HyperparameterKind::Integer => "integer",
                tr::HyperparameterKind::Float => "float",
                tr::HyperparameterKind::Boolean => "boolean",
            },
            "default": h.default_value.as_ref().map(value_json),
            "range": h.range.map(|(a, b)| json!([a, b])),
            "choices": h.choices,
            "required": h.required,
            "description": h.description,
        })).collect::<Vec<_>>(),
        "inputs": s.inputs,
        "outputs": s.outputs,
        "metrics": s.metrics,
    })
}

/// The hyperparameters a train call gets: the given ones checked against the spec, with
/// defaults filled in.
fn check_hyperparameters(
    spec: &tr::AlgorithmSpec,
    given: Vec<Parameter>,
) -> Result<Vec<Parameter>, CallError> {
    let mut problems = Vec::new();
    for p in &given {
        if !spec.hyperparameters.iter().any(|h| h.name == p.name) {
            problems.push(format!("{}: not a hyperparameter of {}", p.name, spec.name));
        }
    }
    let mut out = Vec::new();
    for h in &spec.hyperparameters {
        let value = given
            .iter()
            .find(|p| p.name == h.name)
            .map(|p| p.value.clone())
            .or_else(|| h.default_value.clone());
        let Some(value) = value else {
            if h.required {
                problems.push(format!("{}: required", h.name));
            }
            continue;
        };
        let value = match (h.kind, value) {
            (tr::HyperparameterKind::Float, Value::Integer(i)) => Value::Float(i as f64),
            (_, v) => v,
        };
        let number = match (&h.kind, &value) {
            (tr::HyperparameterKind::Integer, Value::Integer(i)) => Some(*i as f64),
            (tr::HyperparameterKind::Float, Value::Float(f)) => Some(*f),
            (tr::HyperparameterKind::Text, Value::Text(s)) => {
                if !h.choices.is_empty() && !h.choices.contains(s) {
                    problems.push(format!(
                        "{}: {s:?} is not one of {}",
                        h.name,
                        h.choices.join(", ")
                    ));
                }
                None
            }
            (tr::HyperparameterKind::Boolean, Value::Boolean(_)) => None,
            (kind, v) => {
                let kind = match kind {
                    tr::HyperparameterKind::Text => "text",
                    tr::HyperparameterKind::Integer => "integer",
                    tr::HyperparameterKind::Float => "float",
                    tr::HyperparameterKind::Boolean => "boolean",
                };
                problems.push(format!(
                    "{}: expected {kind}, got {}",
                    h.name,
                    value_json(v)
                ));
                None
            }
        };
        if let (Some(n), Some((lo, hi))) = (number, h.range)
            && (n < lo || n > hi)
        {
            problems.push(format!("{}: {n} is outside [{lo}, {hi}]", h.name));
        }
        out.push(Parameter {
            name: h.name.clone(),
            value,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(CallError::bad_input(format!(
            "invalid hyperparameters: {}",
            problems.join("; ")
        )))
    }
}
