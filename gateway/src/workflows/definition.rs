//! The wire format of a workflow definition (spec/workflow.md §2.19): a 1:1 serialisation of
//! the seed's SDK objects with their snake_case names, read from JSON or YAML, written as
//! one canonical JSON (keys sorted, defaults explicit) whose sha256 is the definition's
//! digest. Parsing checks shapes; [`super::validate`] checks meaning.
//!
//! References may stand wherever a value does (step inputs, output paths, step properties):
//! `{"$placeholder": name}`, `{"$output": {"step", "output", "variable"?}}`,
//! `{"$select": [{"$output": …}, …]}` (the seed's `DataConsumptionSelector`) and
//! `{"$storage": name, "join"?, "create_dir"?, "with_execution_id"?}`; conditions also take
//! `{"$metric": {"step", "output", "json_key"}}` ([`super::condition`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::DefinitionError;
use super::condition::Condition;

/// A definition may be this large, in JSON or YAML: a 200-step DAG with generous
/// properties is far below it, and it bounds what one request makes us parse.
pub const MAX_DEFINITION_BYTES: usize = 1 << 20;
/// `max_execution_minutes` when absent (seed T5-3: 7 days).
pub const DEFAULT_MAX_EXECUTION_MINUTES: u64 = 10_080;
/// `poll_interval_seconds` when absent (seed T5-3).
pub const DEFAULT_POLL_INTERVAL_SECONDS: u64 = 1;

/// `Workflow(name, desc, steps, storages, policy)` (T5-1), with the placeholders the steps
/// use listed once in `parameters` (the SDK collects them; same name = same parameter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: String,
    /// Mandatory in the seed (T5-1); may be empty (spec §8 Q-03).
    #[serde(default)]
    pub desc: String,
    #[serde(default)]
    pub storages: Vec<Storage>,
    #[serde(default)]
    pub parameters: Vec<Placeholder>,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// `wf.data.Storage` (§2.6). `InputStorage` is `create_dir=false, with_execution_id=false`;
/// `OutputStorage` is both `true`. The root is given at run time (or `default`, Q-10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub create_dir: bool,
    #[serde(default)]
    pub with_execution_id: bool,
    /// The root path used when a run gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// `PlaceholderType` (§2.5, §2.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaceholderType {
    INT,
    STR,
    BOOL,
    FLOAT,
    ENUM,
    JSON,
    LIST,
}

/// `OBSPlaceholder.object_type` (E-06).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    File,
    Directory,
}

/// `wf.Placeholder` (§2.5). The seed's `OBSPlaceholder(name, object_type, delay, default)`
/// is a placeholder of type `STR` with `placeholder_format: "obs"` and its `object_type`;
/// its value is a storage path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    pub name: String,
    pub placeholder_type: PlaceholderType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder_format: Option<String>,
    /// `true`: given while the run goes on, by `proceed` of the step that needs it.
    #[serde(default)]
    pub delay: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enum_list: Option<Vec<Value>>,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<ObjectType>,
    /// The seed's training-spec constraints: kept, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

/// `step_type` (§2.19). The seed's dataset, labeling and MRS kinds parse so that they can
/// be refused by name ("not supported here").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Wasm,
    Job,
    Model,
    Service,
    Condition,
    CreateDataset,
    Labeling,
    DatasetImport,
    ReleaseDataset,
    MrsJob,
}

impl StepType {
    pub fn as_str(self) -> &'static str {
        match self {
            StepType::Wasm => "wasm",
            StepType::Job => "job",
            StepType::Model => "model",
            StepType::Service => "service",
            StepType::Condition => "condition",
            StepType::CreateDataset => "create_dataset",
            StepType::Labeling => "labeling",
            StepType::DatasetImport => "dataset_import",
            StepType::ReleaseDataset => "release_dataset",
            StepType::MrsJob => "mrs_job",
        }
    }
}

/// A step (T5-2): its kind and typed properties in [`StepKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepDoc", into = "StepDoc")]
pub struct Step {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub kind: StepKind,
    pub policy: StepPolicy,
    pub depend_steps: Vec<String>,
}

impl Step {
    pub fn step_type(&self) -> StepType {
        match self.kind {
            StepKind::Wasm(_) => StepType::Wasm,
            StepKind::Job(_) => StepType::Job,
            StepKind::Model(_) => StepType::Model,
            StepKind::Service(_) => StepType::Service,
            StepKind::Condition(_) => StepType::Condition,
        }
    }

    /// `title`, or the name when absent (T5-2).
    pub fn title(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.name)
    }

    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// What a step does, by `step_type`, with its `properties`.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// A registered `workflow-step` component, run in the gateway's plugin host.
    Wasm(WasmProperties),
    /// A training job: `properties` is the body of a training-job create request, with
    /// references inside.
    Job(Map<String, Value>),
    /// A model registration: the body of a model create request, with references inside.
    Model(Map<String, Value>),
    /// A real-time service deployment: the body of a service create request, with
    /// references inside; its output variable `access_address` is for later steps.
    Service(Map<String, Value>),
    Condition(ConditionProperties),
}

/// `properties` of a `wasm` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmProperties {
    /// The plugin's name (a component of world `workflow-step`).
    pub plugin: String,
    /// Its version; the newest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the component reads through its `parameters` import; values may be references.
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    /// Storage prefixes granted besides the inputs' (read) and outputs' (read-write).
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// A storage prefix a wasm step may read (or also write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A path, or a reference that resolves to one (`$storage`, `$placeholder`, `$output`).
    pub path: Value,
    #[serde(default)]
    pub write: bool,
}

/// `ConditionStep(conditions, if_then_steps, else_then_steps)` (§2.14): the conditions are
/// AND-ed; true runs `if_then_steps` and skips `else_then_steps`, false the reverse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionProperties {
    pub conditions: Vec<Condition>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub if_then_steps: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub else_then_steps: Vec<String>,
}

/// An input (`JobInput`, `ModelInput`, …): a name and its data, a literal (a storage path, a
/// value) or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub name: String,
    pub data: Value,
}

/// An output (`JobOutput`, `ModelOutput`, `ServiceOutput`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub name: String,
    /// Where it is written (`OBSOutputConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obs_config: Option<ObsOutputConfig>,
    /// The metrics files it writes (`MetricsConfig`), readable by conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_config: Option<MetricsConfig>,
    /// `ModelConfig` of a model output: kept for the step, not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_config: Option<Map<String, Value>>,
    /// `ServiceConfig` of a service output: kept for the step, not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_config: Option<Map<String, Value>>,
}

/// `OBSOutputConfig(obs_path, metric_file)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObsOutputConfig {
    pub obs_path: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_file: Option<Value>,
}

/// `MetricsConfig(metric_files, realtime_visualization, visualization)` (T5-53).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub metric_files: Vec<Value>,
    #[serde(default)]
    pub realtime_visualization: bool,
    #[serde(default = "yes")]
    pub visualization: bool,
}

/// `StepPolicy` (T5-3). The seed types the numbers `str`: numeric strings are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPolicy {
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "number_or_numeric_string"
    )]
    pub poll_interval_seconds: u64,
    #[serde(
        default = "default_max_execution",
        deserialize_with = "number_or_numeric_string"
    )]
    pub max_execution_minutes: u64,
    /// AND-ed; true skips the step, false runs it, overriding the default skip rule.
    #[serde(default)]
    pub skip_conditions: Vec<Condition>,
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            poll_interval_seconds: DEFAULT_POLL_INTERVAL_SECONDS,
            max_execution_minutes: DEFAULT_MAX_EXECUTION_MINUTES,
            skip_conditions: Vec::new(),
        }
    }
}

fn default_poll_interval() -> u64 {
    DEFAULT_POLL_INTERVAL_SECONDS
}

fn default_max_execution() -> u64 {
    DEFAULT_MAX_EXECUTION_MINUTES
}

/// `wf.policy.Policy(scenes)` (§2.15): named subsets of steps for partial execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub scenes: Vec<Scene>,
}

/// `wf.policy.Scene(scene_name, scene_steps)`; a step may be in several scenes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scene {
    pub scene_name: String,
    pub scene_steps: Vec<String>,
}

// ---- steps on the wire ----

/// A step as written: `step_type` beside untyped `properties`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDoc {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    step_type: StepType,
    #[serde(default)]
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Vec<Output>,
    #[serde(default)]
    properties: Value,
    #[serde(default)]
    policy: StepPolicy,
    #[serde(default, deserialize_with = "one_or_many")]
    depend_steps: Vec<String>,
}

/// Why a step document is not a step: the path under the step (`properties.plugin`) and
/// what is wrong.
struct StepRefusal {
    at: String,
    message: String,
}

impl std::fmt::Display for StepRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

fn typed<T: serde::de::DeserializeOwned>(properties: Value) -> Result<T, StepRefusal> {
    serde_path_to_error::deserialize(properties).map_err(|e| {
        let path = e.path().to_string();
        StepRefusal {
            at: if path == "." {
                "properties".into()
            } else {
                format!("properties.{path}")
            },
            message: e.into_inner().to_string(),
        }
    })
}

fn step_from_doc(doc: StepDoc) -> Result<Step, StepRefusal> {
    let properties = match doc.properties {
        Value::Null => Value::Object(Map::new()),
        p => p,
    };
    let body = |p: Value| match p {
        Value::Object(m) => Ok(m),
        _ => Err(StepRefusal {
            at: "properties".into(),
            message: "must be an object (the body of the request the step makes)".into(),
        }),
    };
    let kind = match doc.step_type {
        StepType::Wasm => StepKind::Wasm(typed(properties)?),
        StepType::Job => StepKind::Job(body(properties)?),
        StepType::Model => StepKind::Model(body(properties)?),
        StepType::Service => StepKind::Service(body(properties)?),
        StepType::Condition => StepKind::Condition(typed(properties)?),
        other => {
            return Err(StepRefusal {
                at: "step_type".into(),
                message: format!(
                    "{} is not supported here (Atelier has no dataset, labeling or MRS \
                     service); the step types are wasm, job, model, service, condition — a \
                     wasm step can do the data work",
                    other.as_str()
                ),
            });
        }
    };
    Ok(Step {
        name: doc.name,
        title: doc.title,
        description: doc.description,
        inputs: doc.inputs,
        outputs: doc.outputs,
        kind,
        policy: doc.policy,
        depend_steps: doc.depend_steps,
    })
}

impl TryFrom<StepDoc> for Step {
    type Error = String;

    fn try_from(doc: StepDoc) -> Result<Step, String> {
        step_from_doc(doc).map_err(|r| r.to_string())
    }
}

impl From<Step> for StepDoc {
    fn from(s: Step) -> StepDoc {
        let step_type = s.step_type();
        let properties = match s.kind {
            StepKind::Wasm(p) => serde_json::to_value(p).unwrap_or(Value::Null),
            StepKind::Job(m) | StepKind::Model(m) | StepKind::Service(m) => Value::Object(m),
            StepKind::Condition(p) => serde_json::to_value(p).unwrap_or(Value::Null),
        };
        StepDoc {
            name: s.name,
            title: s.title,
            description: s.description,
            step_type,
            inputs: s.inputs,
            outputs: s.outputs,
            properties,
            policy: s.policy,
            depend_steps: s.depend_steps,
        }
    }
}

/// The document with its steps still as written (so a refusal can name the step).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowDoc {
    name: String,
    #[serde(default)]
    desc: String,
    #[serde(default)]
    storages: Vec<Storage>,
    #[serde(default)]
    parameters: Vec<Placeholder>,
    steps: Vec<StepDoc>,
    #[serde(default)]
    policy: Option<Policy>,
}

// ---- parsing ----

/// How a definition is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// From a request's `Content-Type` (YAML for `application/yaml`, `application/x-yaml`,
    /// `text/yaml`, `text/x-yaml`; JSON otherwise).
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence.ends_with("/yaml") || essence.ends_with("/x-yaml") {
            Format::Yaml
        } else {
            Format::Json
        }
    }
}

fn refusal(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        message: message.into(),
    }
}

/// The field name of step `i`: `steps[3] (train)`.
pub(crate) fn step_field(i: usize, name: &str) -> String {
    format!("steps[{i}] ({name})")
}

/// Reads a definition (JSON or YAML) into the typed model: shapes only, no meaning checked
/// (see [`super::load`] for both). The refusal names the field.
pub fn parse(bytes: &[u8], format: Format) -> Result<Workflow, DefinitionError> {
    if bytes.len() > MAX_DEFINITION_BYTES {
        return Err(refusal(
            "",
            format!(
                "the definition is {} bytes, over the limit of {MAX_DEFINITION_BYTES} (1 MiB)",
                bytes.len()
            ),
        ));
    }
    let value: Value = match format {
        Format::Json => serde_json::from_slice(bytes)
            .map_err(|e| refusal("", format!("not valid JSON: {e}")))?,
        Format::Yaml => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| refusal("", "YAML must be UTF-8".to_string()))?;
            serde_saphyr::from_str(text).map_err(|e| refusal("", format!("not valid YAML: {e}")))?
        }
    };
    from_value(value)
}

/// [`parse`] of a JSON value already read.
pub fn from_value(value: Value) -> Result<Workflow, DefinitionError> {
    let names: Vec<String> = value
        .get("steps")
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    s.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    let doc: WorkflowDoc = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = name_steps(&e.path().to_string(), &names);
        refusal(
            if field == "." { String::new() } else { field },
            e.into_inner().to_string(),
        )
    })?;
    let mut steps = Vec::with_capacity(doc.steps.len());
    for (i, s) in doc.steps.into_iter().enumerate() {
        let name = s.name.clone();
        let step = step_from_doc(s)
            .map_err(|r| refusal(format!("{}.{}", step_field(i, &name), r.at), r.message))?;
        steps.push(step);
    }
    Ok(Workflow {
        name: doc.name,
        desc: doc.desc,
        storages: doc.storages,
        parameters: doc.parameters,
        steps,
        policy: doc.policy,
    })
}

/// `steps[3].x` → `steps[3] (train).x`.
fn name_steps(path: &str, names: &[String]) -> String {
    let Some(rest) = path.strip_prefix("steps[") else {
        return path.to_owned();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return path.to_owned();
    };
    match index.parse::<usize>().ok().and_then(|i| names.get(i)) {
        Some(name) => format!("steps[{index}] ({name}){tail}"),
        None => path.to_owned(),
    }
}

// ---- canonical form ----

impl Workflow {
    /// The canonical JSON: defaults explicit, keys sorted, no insignificant whitespace.
    /// Two definitions that mean the same (JSON or YAML, keys in any order, defaults
    /// written or not) have the same canonical form.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    /// The hex sha256 of [`Workflow::canonical_json`]: publishing a definition whose digest
    /// differs from the newest version's makes a new version.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn parameter(&self, name: &str) -> Option<&Placeholder> {
        self.parameters.iter().find(|p| p.name == name)
    }

    pub fn storage(&self, name: &str) -> Option<&Storage> {
        self.storages.iter().find(|s| s.name == name)
    }
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

// ---- references ----

/// `{"$output": {"step", "output", "variable"?}}`: what an ancestor step produced for its
/// output `output` (or, with `variable`, one of its output variables, e.g. a service step's
/// `access_address`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRef {
    pub step: String,
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
}

/// `{"$storage": name, "join"?, "create_dir"?, "with_execution_id"?}`: a path under a
/// storage's root; `create_dir` and `with_execution_id` override the storage's (the SDK's
/// `join(directory, with_execution_id=, create_dir=)`); chained joins are one path `a/b`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRef {
    #[serde(rename = "$storage")]
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_dir: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_execution_id: Option<bool>,
}

/// A reference found in a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Placeholder(String),
    Output(OutputRef),
    /// `DataConsumptionSelector`: the one of these outputs that exists at run time.
    Select(Vec<OutputRef>),
    Storage(StorageRef),
}

impl Reference {
    /// The reference `v` is, if it is one: `None` for a value without `$` keys, an error for
    /// a malformed or unknown `$` key.
    pub fn parse(v: &Value) -> Option<Result<Reference, String>> {
        let Value::Object(map) = v else {
            return None;
        };
        let key = map.keys().find(|k| k.starts_with('$'))?;
        Some(Self::parse_object(key, map))
    }

    fn parse_object(key: &str, map: &Map<String, Value>) -> Result<Reference, String> {
        let only = || {
            if map.len() == 1 {
                Ok(())
            } else {
                Err(format!("{key} takes no other keys"))
            }
        };
        match key {
            "$placeholder" => {
                only()?;
                match &map[key] {
                    Value::String(n) => Ok(Reference::Placeholder(n.clone())),
                    _ => Err("$placeholder takes a parameter name".into()),
                }
            }
            "$output" => {
                only()?;
                serde_json::from_value(map[key].clone())
                    .map(Reference::Output)
                    .map_err(|e| format!("$output {{\"step\", \"output\", \"variable\"?}}: {e}"))
            }
            "$select" => {
                only()?;
                let Value::Array(items) = &map[key] else {
                    return Err("$select takes a list of $output references".into());
                };
                items
                    .iter()
                    .map(|i| match Reference::parse(i) {
                        Some(Ok(Reference::Output(o))) => Ok(o),
                        _ => Err("$select takes a list of $output references".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Reference::Select)
            }
            "$storage" => serde_json::from_value(Value::Object(map.clone()))
                .map(Reference::Storage)
                .map_err(|e| {
                    format!(
                        "$storage {{\"$storage\": name, \"join\"?, \"create_dir\"?, \
                         \"with_execution_id\"?}}: {e}"
                    )
                }),
            "$metric" => Err("$metric is for conditions only".into()),
            other => Err(format!(
                "unknown reference {other} (the references are $placeholder, $output, $select, \
                 $storage)"
            )),
        }
    }
}

/// Every reference in `v` with the path below `at` where it stands (`at.a[2].b`), and the
/// malformed ones as errors. References do not nest.
pub fn references(v: &Value, at: &str) -> Vec<(String, Result<Reference, String>)> {
    let mut out = Vec::new();
    let mut todo = vec![(v, at.to_owned())];
    while let Some((v, at)) = todo.pop() {
        if let Some(r) = Reference::parse(v) {
            out.push((at, r));
            continue;
        }
        match v {
            Value::Object(m) => {
                for (k, item) in m.iter().rev() {
                    todo.push((item, format!("{at}.{k}")));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    todo.push((item, format!("{at}[{i}]")));
                }
            }
            _ => {}
        }
    }
    out
}

impl Step {
    /// Every value of the step that may hold references, with its field below the step
    /// (`inputs[0].data`, `properties.parameters.k`, `outputs[1].obs_config.obs_path`).
    pub fn values(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (i, input) in self.inputs.iter().enumerate() {
            out.push((format!("inputs[{i}].data"), input.data.clone()));
        }
        for (i, output) in self.outputs.iter().enumerate() {
            if let Some(obs) = &output.obs_config {
                out.push((
                    format!("outputs[{i}].obs_config.obs_path"),
                    obs.obs_path.clone(),
                ));
                if let Some(m) = &obs.metric_file {
                    out.push((format!("outputs[{i}].obs_config.metric_file"), m.clone()));
                }
            }
            if let Some(m) = &output.metrics_config {
                for (j, f) in m.metric_files.iter().enumerate() {
                    out.push((
                        format!("outputs[{i}].metrics_config.metric_files[{j}]"),
                        f.clone(),
                    ));
                }
            }
            if let Some(c) = &output.model_config {
                out.push((
                    format!("outputs[{i}].model_config"),
                    Value::Object(c.clone()),
                ));
            }
            if let Some(c) = &output.service_config {
                out.push((
                    format!("outputs[{i}].service_config"),
                    Value::Object(c.clone()),
                ));
            }
        }
        match &self.kind {
            StepKind::Wasm(w) => {
                for (k, v) in &w.parameters {
                    out.push((format!("properties.parameters.{k}"), v.clone()));
                }
                for (i, g) in w.grants.iter().enumerate() {
                    out.push((format!("properties.grants[{i}].path"), g.path.clone()));
                }
            }
            StepKind::Job(m) | StepKind::Model(m) | StepKind::Service(m) => {
                for (k, v) in m {
                    out.push((format!("properties.{k}"), v.clone()));
                }
            }
            StepKind::Condition(_) => {}
        }
        out
    }

    /// The step's conditions (a condition step's, then its skip conditions), with fields.
    pub fn conditions(&self) -> Vec<(String, &Condition)> {
        let mut out = Vec::new();
        if let StepKind::Condition(c) = &self.kind {
            for (i, c) in c.conditions.iter().enumerate() {
                out.push((format!("properties.conditions[{i}]"), c));
            }
        }
        for (i, c) in self.policy.skip_conditions.iter().enumerate() {
            out.push((format!("policy.skip_conditions[{i}]"), c));
        }
        out
    }
}

// ---- serde helpers ----

/// The seed's "str or list[str]" (step names).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "expected step names, found {other}"
                ))),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s]),
        other => Err(serde::de::Error::custom(format!(
            "expected a step name or a list of them, found {other}"
        ))),
    }
}

/// A non-negative integer, written as a number or as a string of digits (T5-3 says `str`).
fn number_or_numeric_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number ≥ 0"))),
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| {
            serde::de::Error::custom(format!(
                "{:?} is not a whole number ≥ 0",
                s.chars().take(20).collect::<String>()
            ))
        }),
        other => Err(serde::de::Error::custom(format!(
            "expected a whole number, not {other}"
        ))),
    }
}
