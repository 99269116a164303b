//! Calls of each world: typed entry points (what the gateway's services and the benchmark
//! use) and a JSON form (`invoke`, for `POST /v1/plugins/{name}/{version}/invoke` and
//! `atelier plugin test`).

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value as Json;

use crate::bindings::inference::atelier::plugin::inference_types as inf;
use crate::bindings::training::atelier::plugin::training_types as tr;
use crate::bindings::types::{Parameter, Tensor, Value};
use crate::bindings::workflow::atelier::plugin::step_types as st;
use crate::bindings::{Inference, Training, Workflow};
use crate::dto;
use crate::host::{Call, CallContext, CallReport, Host, PluginRef};
use crate::limits::CallError;
use crate::world::World;

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

pub(crate) fn spec_size(s: &tr::AlgorithmSpec) -> usize {
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

/// `init` once per instance (inference processors).
fn ensure_init(call: &mut Call<'_, Inference>, info: &inf::ModelInfo) -> Result<(), CallError> {
    if *call.initialized {
        return Ok(());
    }
    let t = Instant::now();
    let result = call.export(
        "init",
        |b, s| b.atelier_plugin_processor().call_init(s, info),
        |_| 0,
    );
    call.timings.calls.pop();
    call.timings.init_us = t.elapsed().as_micros() as u64;
    result?;
    *call.initialized = true;
    Ok(())
}

/// Who an inference processor serves, for its `init` (`model-info`).
#[derive(Debug, Clone, Default)]
pub struct ServingInfo {
    pub model_name: String,
    pub model_version: String,
    pub service_id: String,
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
        let info = model_info(plugin);
        self.run::<Inference, _, _>(plugin, ctx, move |call| {
            ensure_init(call, &info)?;
            let prepared = call.export(
                "preprocess",
                |b, s| b.atelier_plugin_processor().call_preprocess(s, &request),
                |p: &inf::Prepared| {
                    model_data_size(&p.input) + p.state.as_ref().map_or(0, Vec::len)
                },
            )?;
            let response = match model_output {
                Some(output) => Some(call.export(
                    "postprocess",
                    |b, s| {
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

    /// A whole inference request on one processor instance: `preprocess`, then the model
    /// (`engine`, native code run on the same blocking thread, between the two exports),
    /// then `postprocess` with the state `preprocess` returned. The instance is taken once
    /// for the three steps. An engine failure ends the call without `postprocess` and comes
    /// back as the output's `Err` (the call itself succeeded).
    pub async fn pipeline<F, E>(
        self: &Arc<Self>,
        plugin: &PluginRef,
        ctx: CallContext,
        serving: ServingInfo,
        request: inf::Request,
        engine: F,
    ) -> CallReport<Result<inf::Response, E>>
    where
        F: FnOnce(inf::ModelData) -> Result<inf::ModelData, E> + Send + 'static,
        E: Send + 'static,
    {
        let mut info = model_info(plugin);
        info.model_name = serving.model_name;
        info.model_version = serving.model_version;
        info.service_id = serving.service_id;
        self.run::<Inference, _, _>(plugin, ctx, move |call| {
            ensure_init(call, &info)?;
            let prepared = call.export(
                "preprocess",
                |b, s| b.atelier_plugin_processor().call_preprocess(s, &request),
                |p: &inf::Prepared| {
                    model_data_size(&p.input) + p.state.as_ref().map_or(0, Vec::len)
                },
            )?;
            let output = match engine(prepared.input) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            let response = call.export(
                "postprocess",
                |b, s| {
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
            )?;
            Ok(Ok(response))
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
        self.run::<Workflow, _, _>(plugin, ctx, move |call| {
            call.export(
                "run",
                |b, s| {
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
        self.run::<Training, _, _>(plugin, ctx, move |call| {
            call.export(
                "describe",
                |b, s| b.atelier_plugin_algorithm().call_describe(s).map(Ok),
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
        self.run::<Training, _, _>(plugin, ctx, move |call| {
            let spec = call.export(
                "describe",
                |b, s| b.atelier_plugin_algorithm().call_describe(s).map(Ok),
                spec_size,
            )?;
            let given = std::mem::take(&mut call.store.data_mut().call.parameters);
            call.store.data_mut().call.parameters = check_hyperparameters(&spec, given)?;
            let summary = call.export(
                "train",
                |b, s| b.atelier_plugin_algorithm().call_train(s, &context),
                |s: &tr::TrainSummary| s.final_metrics.iter().map(|(k, _)| k.len() + 8).sum(),
            )?;
            Ok((spec, summary))
        })
        .await
    }

    /// Calls a plugin with JSON input, as `invoke` and `atelier plugin test` do. The input's
    /// form depends on the world (see docs/plugins.md and [`crate::dto`]); an input refused
    /// is refused before any instance is taken or created.
    pub async fn invoke(
        self: &Arc<Self>,
        plugin: &PluginRef,
        mut ctx: CallContext,
        input: &Json,
    ) -> CallReport<Json> {
        match plugin.world {
            World::InferenceProcessor => {
                let call = match dto::InferenceInput::parse(input)
                    .and_then(dto::InferenceCall::try_from)
                {
                    Ok(c) => c,
                    Err(message) => return CallReport::refused(CallError::bad_input(message)),
                };
                let report = self
                    .prepost(plugin, ctx, call.request, call.model_output)
                    .await;
                map_report(report, |p| dto::to_json(&dto::PrePostDto::from(&p)))
            }
            World::WorkflowStep => {
                let call = match dto::StepInput::parse(input)
                    .and_then(dto::StepCall::try_from)
                    .and_then(|call| {
                        grant(
                            &mut ctx,
                            call.inputs.iter().map(|i| i.path.as_str()),
                            call.outputs.iter().map(|o| o.path.as_str()),
                        )?;
                        Ok(call)
                    }) {
                    Ok(c) => c,
                    Err(message) => return CallReport::refused(CallError::bad_input(message)),
                };
                let context = call.context(&ctx.call_id);
                ctx.parameters = call.parameters;
                let report = self
                    .run_step(plugin, ctx, context, call.inputs, call.outputs)
                    .await;
                map_report(report, |r| dto::to_json(&dto::StepResultDto::from(&r)))
            }
            World::TrainingAlgorithm => {
                let job = match dto::TrainingInput::parse(input) {
                    Ok(dto::TrainingInput::Describe) => None,
                    Ok(dto::TrainingInput::Train(t)) => match train_call(t, &mut ctx) {
                        Ok(context) => Some(context),
                        Err(message) => return CallReport::refused(CallError::bad_input(message)),
                    },
                    Err(message) => return CallReport::refused(CallError::bad_input(message)),
                };
                match job {
                    None => map_report(self.describe(plugin, ctx).await, |s| {
                        dto::to_json(&dto::AlgorithmSpecDto::from(&s))
                    }),
                    Some(context) => {
                        map_report(self.train(plugin, ctx, context).await, |(_, s)| {
                            dto::to_json(&dto::TrainSummaryDto::from(&s))
                        })
                    }
                }
            }
        }
    }
}

/// Grants the call's storage: the inputs' prefixes read-only, then the outputs' read-write.
fn grant<'a>(
    ctx: &mut CallContext,
    inputs: impl Iterator<Item = &'a str>,
    outputs: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    for path in inputs.filter(|p| !p.is_empty()) {
        ctx.storage.allow(path, false)?;
    }
    for path in outputs {
        ctx.storage.allow(path, true)?;
    }
    Ok(())
}

/// A training job's context: storage granted, hyperparameters given, and the job resumed
/// from the latest checkpoint under its first output (`<output>checkpoints/`).
fn train_call(input: dto::TrainInput, ctx: &mut CallContext) -> Result<tr::TrainContext, String> {
    let call = dto::TrainCall::try_from(input)?;
    let mut context = call.context;
    grant(
        ctx,
        context.inputs.iter().map(|c| c.path.as_str()),
        context.outputs.iter().map(|c| c.path.as_str()),
    )?;
    ctx.parameters = call.hyperparameters;
    if let Some(output) = context.outputs.first() {
        let prefix = format!(
            "{}checkpoints/",
            crate::storage::normalize_prefix(&output.path)?
        );
        context.resume_from = crate::storage::latest_checkpoint(&ctx.storage, &prefix);
        ctx.checkpoint_prefix = Some(prefix);
    }
    Ok(context)
}

/// The report with its output converted; an output that does not convert is the call's
/// error.
fn map_report<A, B>(r: CallReport<A>, f: impl FnOnce(A) -> Result<B, String>) -> CallReport<B> {
    let (output, error) = match r.output.map(f) {
        Some(Ok(o)) => (Some(o), r.error),
        Some(Err(e)) => (None, Some(CallError::host(e))),
        None => (None, r.error),
    };
    CallReport {
        call_id: r.call_id,
        output,
        error,
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

/// The hyperparameters a train call gets: the given ones checked against the spec, with
/// defaults filled in.
pub(crate) fn check_hyperparameters(
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
                problems.push(format!(
                    "{}: expected {}, got {}",
                    h.name,
                    dto::kind_name(*kind),
                    dto::ValueDto::from(v)
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
