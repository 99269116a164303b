//! Run values (spec/workflow.md §1.5, §1.6, §2.5, §2.6): the parameters a run is started
//! with, checked against the placeholders (types, enum choices, required ones present
//! unless delayed, defaults filled), the storages' roots, and the substitution of
//! references into a step's values once its ancestors produced their outputs.
//!
//! Storage paths (§2.6): a root `/bkt/root/` (a trailing `/` is added), then the run's id
//! when `with_execution_id`, then `join`: `InputStorage.join("d")` → `/bkt/root/d`,
//! `OutputStorage.join("model/")` → `/bkt/root/<execution id>/model/`. A path whose
//! `create_dir` holds is a directory (it ends with `/`) that the runner creates before the
//! step starts ([`ResolvedStep::create_dirs`]); files are never created (E-11).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::DefinitionError;
use super::condition::{Operand, short_json};
use super::definition::{
    ObjectType, OutputRef, Placeholder, PlaceholderType, Reference, Step, StepKind, StorageRef,
    Workflow, references,
};
use super::validate::{MAX_PATH, clip};

/// Bytes of a STR parameter's value (a path, a flavor, a name).
pub const MAX_STR_VALUE: usize = 4096;
/// Bytes of a JSON or LIST parameter's value, as JSON.
pub const MAX_JSON_VALUE: usize = 64 * 1024;

/// Whether `v` is a value of placeholder `p`: its type (INT a whole number, FLOAT any
/// number, STR a string, BOOL a boolean, ENUM one of `enum_list`, JSON an object, LIST a
/// list of `placeholder_format` elements), within the size limits.
pub fn check_value(p: &Placeholder, v: &Value) -> Result<(), String> {
    let kind = |want: &str| {
        Err(format!(
            "a {:?} parameter takes {want}, not {}",
            p.placeholder_type,
            short_json(v)
        ))
    };
    match p.placeholder_type {
        PlaceholderType::INT => {
            if !(v.is_i64() || v.is_u64()) {
                return kind("a whole number");
            }
        }
        PlaceholderType::FLOAT => {
            if !v.is_number() {
                return kind("a number");
            }
        }
        PlaceholderType::BOOL => {
            if !v.is_boolean() {
                return kind("true or false");
            }
        }
        PlaceholderType::STR => {
            let Some(s) = v.as_str() else {
                return kind("a string");
            };
            if s.len() > MAX_STR_VALUE {
                return Err(format!(
                    "{} bytes, over the limit of {MAX_STR_VALUE}",
                    s.len()
                ));
            }
            if p.placeholder_format.as_deref() == Some("obs") {
                check_path(s)?;
                if p.object_type == Some(ObjectType::Directory) && !s.ends_with('/') {
                    return Err(format!(
                        "{:?} is not a directory path (it ends with /)",
                        clip(s)
                    ));
                }
                if p.object_type == Some(ObjectType::File) && s.ends_with('/') {
                    return Err(format!("{:?} is a directory path, not a file", clip(s)));
                }
            }
        }
        PlaceholderType::ENUM => {
            let list = p.enum_list.as_deref().unwrap_or_default();
            if !list.contains(v) {
                return Err(format!(
                    "{} is not one of the choices {}",
                    short_json(v),
                    Value::Array(list.to_vec())
                ));
            }
        }
        PlaceholderType::JSON => {
            if !v.is_object() {
                return kind("a JSON object");
            }
        }
        PlaceholderType::LIST => {
            let Some(items) = v.as_array() else {
                return kind("a list");
            };
            let format = p.placeholder_format.as_deref().unwrap_or("");
            for (i, item) in items.iter().enumerate() {
                let ok = match format {
                    "str" => item.is_string(),
                    "int" => item.is_i64() || item.is_u64(),
                    "float" => item.is_number(),
                    "bool" => item.is_boolean(),
                    _ => true,
                };
                if !ok {
                    return Err(format!(
                        "item {i} of the list is {}, not of the element type {format}",
                        short_json(item)
                    ));
                }
            }
        }
    }
    if matches!(
        p.placeholder_type,
        PlaceholderType::JSON | PlaceholderType::LIST
    ) {
        let n = v.to_string().len();
        if n > MAX_JSON_VALUE {
            return Err(format!(
                "{n} bytes of JSON, over the limit of {MAX_JSON_VALUE}"
            ));
        }
    }
    Ok(())
}

/// A storage path's segments: no empty, `.` or `..` segment, no NUL or backslash, at most
/// [`MAX_PATH`] bytes. A leading `/` and a trailing `/` are allowed.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes, over the limit of {MAX_PATH}",
            path.len()
        ));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(format!(
            "{:?}: NUL and \\ are not allowed in paths",
            clip(path)
        ));
    }
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(());
    }
    for part in inner.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "{:?}: empty, . and .. segments are not allowed in paths",
                clip(path)
            ));
        }
    }
    Ok(())
}

/// A `join` below a root: a relative path (a leading `/` is dropped, as the seed's
/// `join("/input/data/")` means the same as `join("input/data/")`).
pub fn check_join(join: &str) -> Result<(), String> {
    if join.trim_start_matches('/').is_empty() {
        return Err("join names a path below the storage's root".into());
    }
    check_path(join)
}

/// A storage root as given (`/bkt/root` or `/bkt/root/`) → with its trailing `/`.
pub fn normalize_root(root: &str) -> Result<String, String> {
    if root.trim().is_empty() {
        return Err("the storage root is empty".into());
    }
    check_path(root)?;
    Ok(if root.ends_with('/') {
        root.to_owned()
    } else {
        format!("{root}/")
    })
}

/// What a run is started with, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunValues {
    /// Every parameter that has a value (given, or its default), by name.
    pub parameters: BTreeMap<String, Value>,
    /// Delayed parameters with no value yet: a step that uses one waits for `proceed`.
    pub awaiting: BTreeSet<String>,
    /// Each storage's root (with its trailing `/`), by storage name.
    pub storages: BTreeMap<String, String>,
}

/// Resolves a run's parameters and storage roots (AC-12, AC-13, AC-18's naming): every
/// given name is a parameter (or storage), every value of its type; a required parameter
/// that is neither delayed nor defaulted must be given; every storage needs a root (given or
/// its `default`). The errors name `parameters.<name>` / `storages.<name>`.
pub fn resolve_run(
    wf: &Workflow,
    given: &Map<String, Value>,
    roots: &BTreeMap<String, String>,
) -> Result<RunValues, Vec<DefinitionError>> {
    let mut errors = Vec::new();
    let mut values = RunValues {
        parameters: BTreeMap::new(),
        awaiting: BTreeSet::new(),
        storages: BTreeMap::new(),
    };
    for name in given.keys() {
        if wf.parameter(name).is_none() {
            errors.push(DefinitionError::new(
                format!("parameters.{}", clip(name)),
                "the workflow has no such parameter",
            ));
        }
    }
    for p in &wf.parameters {
        let field = format!("parameters.{}", p.name);
        match given.get(&p.name) {
            Some(v) if !v.is_null() => match check_value(p, v) {
                Ok(()) => {
                    values.parameters.insert(p.name.clone(), v.clone());
                }
                Err(e) => errors.push(DefinitionError::new(field, e)),
            },
            _ => {
                if let Some(d) = &p.default {
                    values.parameters.insert(p.name.clone(), d.clone());
                } else if p.delay {
                    values.awaiting.insert(p.name.clone());
                } else if p.required {
                    errors.push(DefinitionError::new(
                        field,
                        "required, and it has no default: give a value",
                    ));
                }
            }
        }
    }
    for name in roots.keys() {
        if wf.storage(name).is_none() {
            errors.push(DefinitionError::new(
                format!("storages.{}", clip(name)),
                "the workflow has no such storage",
            ));
        }
    }
    for s in &wf.storages {
        let field = format!("storages.{}", s.name);
        match roots.get(&s.name).or(s.default.as_ref()) {
            Some(root) => match normalize_root(root) {
                Ok(r) => {
                    values.storages.insert(s.name.clone(), r);
                }
                Err(e) => errors.push(DefinitionError::new(field, e)),
            },
            None => errors.push(DefinitionError::new(
                field,
                "needs a root path (e.g. /bucket/folder/): give one, or a default in the \
                 definition",
            )),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// `proceed` of a waiting step (AC-24): values for delayed parameters still awaited, typed;
/// every awaited parameter `step` uses must be among them. Nothing changes on error.
pub fn proceed(
    wf: &Workflow,
    run: &mut RunValues,
    step: &Step,
    values: &Map<String, Value>,
) -> Result<(), Vec<DefinitionError>> {
    let mut errors = Vec::new();
    let mut accepted = BTreeMap::new();
    for (name, v) in values {
        let field = format!("values.{}", clip(name));
        match wf.parameter(name) {
            None => errors.push(DefinitionError::new(
                field,
                "the workflow has no such parameter",
            )),
            Some(p) if !run.awaiting.contains(name) => errors.push(DefinitionError::new(
                field,
                if p.delay {
                    "already given"
                } else {
                    "not a delayed parameter (it is given when the run starts)"
                },
            )),
            Some(p) => match check_value(p, v) {
                Ok(()) => {
                    accepted.insert(name.clone(), v.clone());
                }
                Err(e) => errors.push(DefinitionError::new(field, e)),
            },
        }
    }
    for name in awaiting(step, run) {
        if !values.contains_key(&name) {
            errors.push(DefinitionError::new(
                format!("values.{name}"),
                format!("step {} waits for this parameter: give a value", step.name),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (name, v) in accepted {
        run.awaiting.remove(&name);
        run.parameters.insert(name, v);
    }
    Ok(())
}

/// The parameters a step uses (in its values, conditions and skip conditions).
pub fn used_parameters(step: &Step) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (field, v) in step.values() {
        for (_, r) in references(&v, &field) {
            if let Ok(Reference::Placeholder(n)) = r {
                out.insert(n);
            }
        }
    }
    for (_, c) in step.conditions() {
        for leaf in c.leaves() {
            if let Operand::Placeholder(n) = leaf {
                out.insert(n.clone());
            }
        }
    }
    out
}

/// The delayed parameters `step` uses that have no value yet: while there is any, the step
/// is `waiting_inputs` (AC-24).
pub fn awaiting(step: &Step, run: &RunValues) -> Vec<String> {
    used_parameters(step)
        .into_iter()
        .filter(|n| run.awaiting.contains(n))
        .collect()
}

/// What a finished step produced: its outputs' values (by default, the resolved path of
/// each output's `obs_config.obs_path`), and its output variables (`access_address`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Produced {
    pub outputs: BTreeMap<String, Value>,
    pub variables: BTreeMap<String, String>,
}

/// What references are resolved against.
pub struct Scope<'a> {
    pub workflow: &'a Workflow,
    pub run: &'a RunValues,
    /// The run's id (`execution_id`), put in `with_execution_id` paths.
    pub execution_id: &'a str,
    /// The steps that completed, by name (skipped ones are absent: `$select` picks among
    /// the present).
    pub produced: &'a BTreeMap<String, Produced>,
}

/// A step's values with references substituted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedStep {
    /// Each input's data, by input name.
    pub inputs: Vec<(String, Value)>,
    /// Each output's resolved path (`obs_config.obs_path`), if it has one.
    pub outputs: Vec<(String, Option<Value>)>,
    /// The metrics files each output writes, by output name.
    pub metric_files: BTreeMap<String, Vec<Value>>,
    /// The step's properties: a wasm step's parameters and grants, or the body of the job,
    /// model or service request; a condition step's conditions stay as they are.
    pub properties: Value,
    /// Directories to create before the step starts (`create_dir`), in order, no repeats.
    pub create_dirs: Vec<String>,
}

/// Substitutes every reference in `v`; `at` names the field in errors.
pub fn substitute(
    v: &Value,
    at: &str,
    scope: &Scope,
    create_dirs: &mut Vec<String>,
) -> Result<Value, DefinitionError> {
    if let Some(r) = Reference::parse(v) {
        let r = r.map_err(|e| DefinitionError::new(at, e))?;
        return resolve_reference(&r, at, scope, create_dirs);
    }
    Ok(match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, item) in m {
                out.insert(
                    k.clone(),
                    substitute(item, &format!("{at}.{k}"), scope, create_dirs)?,
                );
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| substitute(item, &format!("{at}[{i}]"), scope, create_dirs))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn resolve_reference(
    r: &Reference,
    at: &str,
    scope: &Scope,
    create_dirs: &mut Vec<String>,
) -> Result<Value, DefinitionError> {
    match r {
        Reference::Placeholder(name) => {
            if scope.run.awaiting.contains(name) {
                return Err(DefinitionError::new(
                    at,
                    format!("parameter {name} has no value yet (it is delayed: proceed with it)"),
                ));
            }
            Ok(scope
                .run
                .parameters
                .get(name)
                .cloned()
                .unwrap_or(Value::Null))
        }
        Reference::Output(o) => output_value(o, scope).ok_or_else(|| {
            DefinitionError::new(
                at,
                format!(
                    "step {} produced no {} {}",
                    o.step,
                    if o.variable.is_some() {
                        "variable"
                    } else {
                        "output"
                    },
                    o.variable.as_deref().unwrap_or(&o.output)
                ),
            )
        }),
        Reference::Select(list) => {
            let present: Vec<(&OutputRef, Value)> = list
                .iter()
                .filter_map(|o| output_value(o, scope).map(|v| (o, v)))
                .collect();
            match present.len() {
                1 => Ok(present
                    .into_iter()
                    .next()
                    .map(|(_, v)| v)
                    .unwrap_or(Value::Null)),
                0 => Err(DefinitionError::new(
                    at,
                    "$select: none of its outputs exists (their steps were skipped or produced \
                     nothing)",
                )),
                _ => Err(DefinitionError::new(
                    at,
                    format!(
                        "$select: more than one valid output (from steps {}); exactly one must \
                         exist (E-08)",
                        present
                            .iter()
                            .map(|(o, _)| o.step.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        Reference::Storage(s) => storage_path(s, scope, create_dirs)
            .map(Value::String)
            .map_err(|e| DefinitionError::new(at, e)),
    }
}

fn output_value(o: &OutputRef, scope: &Scope) -> Option<Value> {
    let p = scope.produced.get(&o.step)?;
    match &o.variable {
        Some(var) => p.variables.get(var).map(|v| Value::String(v.clone())),
        None => p.outputs.get(&o.output).cloned(),
    }
}

/// The path a `$storage` reference stands for in this run; a directory to create is added
/// to `create_dirs`.
pub fn storage_path(
    s: &StorageRef,
    scope: &Scope,
    create_dirs: &mut Vec<String>,
) -> Result<String, String> {
    let root = scope
        .run
        .storages
        .get(&s.storage)
        .ok_or_else(|| format!("storage {} has no root in this run", s.storage))?;
    let (create, with_id) = scope
        .workflow
        .storage(&s.storage)
        .map(|d| (d.create_dir, d.with_execution_id))
        .unwrap_or_default();
    let create = s.create_dir.unwrap_or(create);
    let with_id = s.with_execution_id.unwrap_or(with_id);
    let mut path = root.clone();
    if with_id {
        check_execution_id(scope.execution_id)?;
        path.push_str(scope.execution_id);
        path.push('/');
    }
    if let Some(j) = &s.join {
        check_join(j)?;
        path.push_str(j.trim_start_matches('/'));
    }
    if create {
        if !path.ends_with('/') {
            path.push('/');
        }
        if !create_dirs.contains(&path) {
            create_dirs.push(path.clone());
        }
    }
    Ok(path)
}

/// A run id goes into paths: one segment of letters, digits, `_`, `-`, `.` (not `.`/`..`).
fn check_execution_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the execution id {:?} cannot be a path segment",
            clip(id)
        ))
    }
}

/// Substitutes the references of `step` (of `scope.workflow`): its inputs, output paths and metrics
/// files, and properties. The errors name the step's field.
pub fn resolve_step(step: &Step, scope: &Scope) -> Result<ResolvedStep, DefinitionError> {
    let at = format!("steps ({})", step.name);
    let mut dirs = Vec::new();
    let mut inputs = Vec::new();
    for (i, input) in step.inputs.iter().enumerate() {
        let v = substitute(
            &input.data,
            &format!("{at}.inputs[{i}].data"),
            scope,
            &mut dirs,
        )?;
        inputs.push((input.name.clone(), v));
    }
    let mut outputs = Vec::new();
    let mut metric_files = BTreeMap::new();
    for (i, output) in step.outputs.iter().enumerate() {
        let path = match &output.obs_config {
            Some(c) => Some(substitute(
                &c.obs_path,
                &format!("{at}.outputs[{i}].obs_config.obs_path"),
                scope,
                &mut dirs,
            )?),
            None => None,
        };
        outputs.push((output.name.clone(), path));
        let mut files = Vec::new();
        if let Some(c) = &output.obs_config
            && let Some(m) = &c.metric_file
        {
            files.push(substitute(
                m,
                &format!("{at}.outputs[{i}].obs_config.metric_file"),
                scope,
                &mut dirs,
            )?);
        }
        if let Some(m) = &output.metrics_config {
            for (j, f) in m.metric_files.iter().enumerate() {
                files.push(substitute(
                    f,
                    &format!("{at}.outputs[{i}].metrics_config.metric_files[{j}]"),
                    scope,
                    &mut dirs,
                )?);
            }
        }
        if !files.is_empty() {
            metric_files.insert(output.name.clone(), files);
        }
    }
    let properties = match &step.kind {
        StepKind::Wasm(w) => {
            let raw = serde_json::to_value(w).unwrap_or(Value::Null);
            substitute(&raw, &format!("{at}.properties"), scope, &mut dirs)?
        }
        StepKind::Job(m) | StepKind::Model(m) | StepKind::Service(m) => substitute(
            &Value::Object(m.clone()),
            &format!("{at}.properties"),
            scope,
            &mut dirs,
        )?,
        StepKind::Condition(c) => serde_json::to_value(c).unwrap_or(Value::Null),
    };
    Ok(ResolvedStep {
        inputs,
        outputs,
        metric_files,
        properties,
        create_dirs: dirs,
    })
}
