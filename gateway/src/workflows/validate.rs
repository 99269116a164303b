//! What a definition must mean (spec/workflow.md §4 and its [PROPOSAL] engine checks):
//! names and limits, unique names, a DAG (a cycle is named), references to placeholders,
//! storages, steps and outputs that exist, `$output` and `$metric` only of ancestors,
//! branches naming steps that depend on their condition step, placeholder defaults of their
//! type. Pure; every problem is reported, each naming its field.

use std::collections::{BTreeMap, BTreeSet};

use super::DefinitionError;
use super::condition::{ConditionType, MAX_CONDITION_DEPTH, Operand};
use super::dag;
use super::definition::{
    OutputRef, Placeholder, PlaceholderType, Reference, Step, StepKind, StepType, Workflow,
    references, step_field,
};
use super::params;

/// Names of workflows, steps, storages, parameters, inputs and outputs: the seed's rule
/// (E-01, E-02, E-03), `^[A-Za-z][A-Za-z0-9_-]{0,63}$`.
pub const MAX_NAME: usize = 64;
/// A workflow's `desc` (the console's `0/500` counter, §2.1).
pub const MAX_DESC: usize = 500;
/// A step's description, a placeholder's or storage's description.
pub const MAX_DESCRIPTION: usize = 500;
/// A step's or storage's title (shown in the DAG).
pub const MAX_TITLE: usize = 128;
/// Steps of one workflow: the benchmark DAGs (a 40-step chain, a 20-wide fan-out)
/// fit five times over, and it bounds the quadratic ancestor checks.
pub const MAX_STEPS: usize = 200;
/// Parameters of one workflow (as many as an algorithm's hyperparameters, T8-16).
pub const MAX_PARAMETERS: usize = 100;
/// Storages of one workflow.
pub const MAX_STORAGES: usize = 20;
/// Inputs, and as many outputs, of one step (as a training job's channels).
pub const MAX_PORTS: usize = 20;
/// Conditions in one list (a condition step's, a skip policy's).
pub const MAX_CONDITIONS: usize = 20;
/// Choices of an ENUM placeholder.
pub const MAX_ENUM_CHOICES: usize = 100;
/// Scenes of a policy.
pub const MAX_SCENES: usize = 20;
/// Bytes of a storage path (a root, a `join`): the object keys' limit.
pub const MAX_PATH: usize = 1024;
/// `poll_interval_seconds`: 1 s to an hour.
pub const MAX_POLL_INTERVAL_SECONDS: u64 = 3600;
/// `max_execution_minutes`: up to 30 days, the longest a training job runs
/// (`auto_stop_hours` ≤ 720).
pub const MAX_EXECUTION_MINUTES: u64 = 43_200;

/// The seed's name rule; `what` names the kind of name in the message.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not valid: 1-{MAX_NAME} characters, letters, digits, _ and -, \
             starting with a letter",
            clip(name)
        ))
    }
}

/// A name shortened for a message.
pub(crate) fn clip(s: &str) -> String {
    if s.chars().count() <= 70 {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(70).collect();
        out.push('…');
        out
    }
}

fn check_len(at: &str, what: &str, text: &str, max: usize, errors: &mut Vec<DefinitionError>) {
    let n = text.chars().count();
    if n > max {
        errors.push(DefinitionError::new(
            at,
            format!("{what} is {n} characters, over the limit of {max}"),
        ));
    }
}

/// A title's and a description's lengths.
fn texts(
    at: &str,
    title: Option<&str>,
    description: Option<&str>,
    errors: &mut Vec<DefinitionError>,
) {
    if let Some(t) = title {
        check_len(&format!("{at}.title"), "title", t, MAX_TITLE, errors);
    }
    if let Some(d) = description {
        check_len(
            &format!("{at}.description"),
            "description",
            d,
            MAX_DESCRIPTION,
            errors,
        );
    }
}

/// Identical repeated parameters become one (AC-05: the SDK may list a placeholder used in
/// two steps twice); differing ones are left for [`validate`] to refuse.
pub fn normalize(wf: &mut Workflow) {
    let mut seen: Vec<Placeholder> = Vec::new();
    for p in std::mem::take(&mut wf.parameters) {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    wf.parameters = seen;
}

/// Every problem of the definition, or nothing.
pub fn validate(wf: &Workflow) -> Result<(), Vec<DefinitionError>> {
    let mut errors = Vec::new();
    if let Err(e) = check_name("the workflow name", &wf.name) {
        errors.push(DefinitionError::new("name", e));
    }
    check_len("desc", "desc", &wf.desc, MAX_DESC, &mut errors);
    counts(wf, &mut errors);
    storages(wf, &mut errors);
    parameters(wf, &mut errors);
    let dag_ok = steps(wf, &mut errors);
    let ancestors = if dag_ok {
        Some(dag::ancestors(wf))
    } else {
        None
    };
    for (i, step) in wf.steps.iter().enumerate() {
        step_references(wf, i, step, ancestors.as_ref(), &mut errors);
        step_conditions(wf, i, step, ancestors.as_ref(), &mut errors);
    }
    scenes(wf, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn counts(wf: &Workflow, errors: &mut Vec<DefinitionError>) {
    let limits = [
        ("steps", wf.steps.len(), MAX_STEPS),
        ("parameters", wf.parameters.len(), MAX_PARAMETERS),
        ("storages", wf.storages.len(), MAX_STORAGES),
    ];
    for (field, n, max) in limits {
        if n > max {
            errors.push(DefinitionError::new(
                field,
                format!("{n} {field}, over the limit of {max}"),
            ));
        }
    }
    if wf.steps.is_empty() {
        errors.push(DefinitionError::new(
            "steps",
            "a workflow needs at least one step",
        ));
    }
}

/// Names that must be unique in a list: the duplicates' fields.
fn duplicates<'a>(
    what: &str,
    names: impl Iterator<Item = (String, &'a str)>,
    errors: &mut Vec<DefinitionError>,
) {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (at, name) in names {
        if let Some(first) = seen.get(name) {
            errors.push(DefinitionError::new(
                at,
                format!("duplicate {what} name {name:?} (also {first})"),
            ));
        } else {
            seen.insert(name, at);
        }
    }
}

fn storages(wf: &Workflow, errors: &mut Vec<DefinitionError>) {
    for (i, s) in wf.storages.iter().enumerate() {
        let at = format!("storages[{i}] ({})", clip(&s.name));
        if let Err(e) = check_name("a storage name", &s.name) {
            errors.push(DefinitionError::new(format!("{at}.name"), e));
        }
        if s.with_execution_id && !s.create_dir {
            errors.push(DefinitionError::new(
                format!("{at}.with_execution_id"),
                "with_execution_id needs create_dir (E-09: the run's directory is created)",
            ));
        }
        texts(&at, s.title.as_deref(), s.description.as_deref(), errors);
        if let Some(root) = &s.default
            && let Err(e) = params::normalize_root(root)
        {
            errors.push(DefinitionError::new(format!("{at}.default"), e));
        }
    }
    duplicates(
        "storage",
        wf.storages
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("storages[{i}]"), s.name.as_str())),
        errors,
    );
}

/// LIST element types (`placeholder_format` of a LIST, §2.5).
const LIST_FORMATS: &[&str] = &["str", "int", "float", "bool"];

fn parameters(wf: &Workflow, errors: &mut Vec<DefinitionError>) {
    for (i, p) in wf.parameters.iter().enumerate() {
        let at = format!("parameters[{i}] ({})", clip(&p.name));
        let mut push = |field: &str, m: String| {
            errors.push(DefinitionError::new(format!("{at}.{field}"), m));
        };
        if let Err(e) = check_name("a parameter name", &p.name) {
            push("name", e);
        }
        if p.delay && !p.required {
            push(
                "required",
                "a delayed parameter cannot be optional (E-05: required=false is not allowed \
                 with delay)"
                    .into(),
            );
        }
        match (p.placeholder_type, &p.enum_list) {
            (PlaceholderType::ENUM, None) => {
                push("enum_list", "an ENUM parameter needs enum_list".into())
            }
            (PlaceholderType::ENUM, Some(list)) => {
                if list.is_empty() {
                    push(
                        "enum_list",
                        "an ENUM parameter needs a non-empty enum_list".into(),
                    );
                }
                if list.len() > MAX_ENUM_CHOICES {
                    push(
                        "enum_list",
                        format!(
                            "{} choices, over the limit of {MAX_ENUM_CHOICES}",
                            list.len()
                        ),
                    );
                }
                if list
                    .iter()
                    .any(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
                {
                    push(
                        "enum_list",
                        "the choices are strings, numbers or booleans".into(),
                    );
                }
            }
            (_, Some(_)) => push("enum_list", "enum_list is for ENUM parameters only".into()),
            (_, None) => {}
        }
        if p.placeholder_type == PlaceholderType::LIST
            && !p
                .placeholder_format
                .as_deref()
                .is_some_and(|f| LIST_FORMATS.contains(&f))
        {
            push(
                "placeholder_format",
                format!(
                    "a LIST parameter needs placeholder_format, the element type: one of {}",
                    LIST_FORMATS.join(", ")
                ),
            );
        }
        if let Some(f) = &p.placeholder_format {
            check_len(
                &format!("{at}.placeholder_format"),
                "placeholder_format",
                f,
                MAX_NAME,
                errors,
            );
        }
        if p.object_type.is_some()
            && (p.placeholder_type != PlaceholderType::STR
                || p.placeholder_format.as_deref() != Some("obs"))
        {
            errors.push(DefinitionError::new(
                format!("{at}.object_type"),
                "object_type is for storage-path parameters (placeholder_type STR, \
                 placeholder_format \"obs\"): the seed's OBSPlaceholder",
            ));
        }
        if let Some(d) = &p.description {
            check_len(
                &format!("{at}.description"),
                "description",
                d,
                MAX_DESCRIPTION,
                errors,
            );
        }
        if let Some(d) = &p.default
            && let Err(e) = params::check_value(p, d)
        {
            errors.push(DefinitionError::new(format!("{at}.default"), e));
        }
    }
    // Identical repeats were merged by `normalize`: a name seen twice now differs.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in wf.parameters.iter().enumerate() {
        if let Some(first) = seen.get(p.name.as_str()) {
            errors.push(DefinitionError::new(
                format!("parameters[{i}] ({})", clip(&p.name)),
                format!(
                    "duplicate parameter name {:?}, defined differently from parameters[{first}] \
                     (one name is one parameter; E-04)",
                    p.name
                ),
            ));
        } else {
            seen.insert(&p.name, i);
        }
    }
}

/// Step names, ports, policies, dependencies; false when the DAG itself is broken (unknown
/// or duplicate steps, a cycle), so that ancestor checks are not attempted.
fn steps(wf: &Workflow, errors: &mut Vec<DefinitionError>) -> bool {
    let mut dag_ok = true;
    let names: BTreeSet<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
    let before = errors.len();
    duplicates(
        "step",
        wf.steps
            .iter()
            .enumerate()
            .map(|(i, s)| (step_field(i, &s.name), s.name.as_str())),
        errors,
    );
    if errors.len() > before {
        dag_ok = false;
    }
    for (i, s) in wf.steps.iter().enumerate() {
        let at = step_field(i, &clip(&s.name));
        if let Err(e) = check_name("a step name", &s.name) {
            errors.push(DefinitionError::new(format!("{at}.name"), e));
        }
        texts(&at, s.title.as_deref(), s.description.as_deref(), errors);
        for (what, n) in [("inputs", s.inputs.len()), ("outputs", s.outputs.len())] {
            if n > MAX_PORTS {
                errors.push(DefinitionError::new(
                    format!("{at}.{what}"),
                    format!("{n} {what}, over the limit of {MAX_PORTS}"),
                ));
            }
        }
        for (j, input) in s.inputs.iter().enumerate() {
            if let Err(e) = check_name("an input name", &input.name) {
                errors.push(DefinitionError::new(format!("{at}.inputs[{j}].name"), e));
            }
        }
        for (j, output) in s.outputs.iter().enumerate() {
            if let Err(e) = check_name("an output name", &output.name) {
                errors.push(DefinitionError::new(format!("{at}.outputs[{j}].name"), e));
            }
        }
        duplicates(
            "input",
            s.inputs
                .iter()
                .enumerate()
                .map(|(j, x)| (format!("{at}.inputs[{j}]"), x.name.as_str())),
            errors,
        );
        duplicates(
            "output",
            s.outputs
                .iter()
                .enumerate()
                .map(|(j, x)| (format!("{at}.outputs[{j}]"), x.name.as_str())),
            errors,
        );
        if s.step_type() == StepType::Condition && !s.outputs.is_empty() {
            errors.push(DefinitionError::new(
                format!("{at}.outputs"),
                "a condition step has no outputs (it chooses a branch)",
            ));
        }
        let p = &s.policy;
        if !(1..=MAX_POLL_INTERVAL_SECONDS).contains(&p.poll_interval_seconds) {
            errors.push(DefinitionError::new(
                format!("{at}.policy.poll_interval_seconds"),
                format!(
                    "{} is not in 1-{MAX_POLL_INTERVAL_SECONDS}",
                    p.poll_interval_seconds
                ),
            ));
        }
        if !(1..=MAX_EXECUTION_MINUTES).contains(&p.max_execution_minutes) {
            errors.push(DefinitionError::new(
                format!("{at}.policy.max_execution_minutes"),
                format!(
                    "{} is not in 1-{MAX_EXECUTION_MINUTES} (30 days)",
                    p.max_execution_minutes
                ),
            ));
        }
        let mut deps = BTreeSet::new();
        for (j, d) in s.depend_steps.iter().enumerate() {
            let field = format!("{at}.depend_steps[{j}]");
            if d == &s.name {
                errors.push(DefinitionError::new(
                    field,
                    "a step cannot depend on itself",
                ));
                dag_ok = false;
            } else if !names.contains(d.as_str()) {
                errors.push(DefinitionError::new(
                    field,
                    format!("unknown step {:?} in depend_steps", clip(d)),
                ));
                dag_ok = false;
            } else if !deps.insert(d.as_str()) {
                errors.push(DefinitionError::new(
                    field,
                    format!("{:?} is listed twice in depend_steps", clip(d)),
                ));
            }
        }
        if let StepKind::Wasm(w) = &s.kind {
            if w.plugin.is_empty() || w.plugin.len() > MAX_NAME {
                errors.push(DefinitionError::new(
                    format!("{at}.properties.plugin"),
                    format!("a wasm step names its plugin (1-{MAX_NAME} characters)"),
                ));
            }
            if w.parameters.len() > MAX_PARAMETERS {
                errors.push(DefinitionError::new(
                    format!("{at}.properties.parameters"),
                    format!(
                        "{} parameters, over the limit of {MAX_PARAMETERS}",
                        w.parameters.len()
                    ),
                ));
            }
            if w.grants.len() > MAX_PORTS {
                errors.push(DefinitionError::new(
                    format!("{at}.properties.grants"),
                    format!("{} grants, over the limit of {MAX_PORTS}", w.grants.len()),
                ));
            }
        }
        if let StepKind::Condition(c) = &s.kind {
            if c.conditions.is_empty() {
                errors.push(DefinitionError::new(
                    format!("{at}.properties.conditions"),
                    "a condition step needs at least one condition",
                ));
            }
            for (list, field) in [
                (&c.if_then_steps, "if_then_steps"),
                (&c.else_then_steps, "else_then_steps"),
            ] {
                for (j, target) in list.iter().enumerate() {
                    let field = format!("{at}.properties.{field}[{j}]");
                    if !names.contains(target.as_str()) {
                        errors.push(DefinitionError::new(
                            field,
                            format!(
                                "unknown step {:?} (E-22: branches name existing steps)",
                                clip(target)
                            ),
                        ));
                    } else if target == &s.name {
                        errors.push(DefinitionError::new(
                            field,
                            "a branch cannot be the condition step itself",
                        ));
                    }
                }
            }
            for target in &c.if_then_steps {
                if c.else_then_steps.contains(target) {
                    errors.push(DefinitionError::new(
                        format!("{at}.properties.else_then_steps"),
                        format!("{:?} is in both branches", clip(target)),
                    ));
                }
            }
        }
    }
    if dag_ok && let Some(cycle) = dag::find_cycle(wf) {
        let i = wf
            .steps
            .iter()
            .position(|s| s.name == cycle[0])
            .unwrap_or_default();
        errors.push(DefinitionError::new(
            format!("{}.depend_steps", step_field(i, &cycle[0])),
            format!("cycle: {}", cycle.join(" → ")),
        ));
        dag_ok = false;
    }
    if dag_ok {
        // Branch targets depend on their condition step (directly or through others).
        let ancestors = dag::ancestors(wf);
        for (i, s) in wf.steps.iter().enumerate() {
            let StepKind::Condition(c) = &s.kind else {
                continue;
            };
            for (list, field) in [
                (&c.if_then_steps, "if_then_steps"),
                (&c.else_then_steps, "else_then_steps"),
            ] {
                for (j, target) in list.iter().enumerate() {
                    if let Some(a) = ancestors.get(target.as_str())
                        && target != &s.name
                        && !a.contains(s.name.as_str())
                    {
                        errors.push(DefinitionError::new(
                            format!("{}.properties.{field}[{j}]", step_field(i, &s.name)),
                            format!(
                                "step {target:?} does not depend on condition step {:?}: add it \
                                 to the branch step's depend_steps",
                                s.name
                            ),
                        ));
                    }
                }
            }
        }
    }
    dag_ok
}

fn step_references(
    wf: &Workflow,
    i: usize,
    step: &Step,
    ancestors: Option<&BTreeMap<&str, BTreeSet<&str>>>,
    errors: &mut Vec<DefinitionError>,
) {
    let at = step_field(i, &clip(&step.name));
    for (field, value) in step.values() {
        for (path, r) in references(&value, &format!("{at}.{field}")) {
            match r {
                Err(e) => errors.push(DefinitionError::new(path, e)),
                Ok(Reference::Placeholder(name)) => {
                    if wf.parameter(&name).is_none() {
                        errors.push(DefinitionError::new(
                            path,
                            format!(
                                "unknown parameter {:?} (list it in parameters)",
                                clip(&name)
                            ),
                        ));
                    }
                }
                Ok(Reference::Storage(s)) => match wf.storage(&s.storage) {
                    None => errors.push(DefinitionError::new(
                        path,
                        format!(
                            "unknown storage {:?} (list it in storages)",
                            clip(&s.storage)
                        ),
                    )),
                    Some(_) => {
                        // E-09 for a join that asks for both itself; a file under an output
                        // storage's run directory (`create_dir: false`) is fine.
                        if s.with_execution_id == Some(true) && s.create_dir == Some(false) {
                            errors.push(DefinitionError::new(
                                path.clone(),
                                "with_execution_id needs create_dir (E-09)",
                            ));
                        }
                        if let Some(j) = &s.join
                            && let Err(e) = params::check_join(j)
                        {
                            errors.push(DefinitionError::new(format!("{path}.join"), e));
                        }
                    }
                },
                Ok(Reference::Output(o)) => {
                    check_output(wf, step, &o, &path, ancestors, errors);
                }
                Ok(Reference::Select(list)) => {
                    if list.len() < 2 {
                        errors.push(DefinitionError::new(
                            path.clone(),
                            "$select chooses among at least two outputs (one is a plain $output)",
                        ));
                    }
                    for (j, o) in list.iter().enumerate() {
                        check_output(
                            wf,
                            step,
                            o,
                            &format!("{path}.$select[{j}]"),
                            ancestors,
                            errors,
                        );
                    }
                }
            }
        }
    }
}

fn check_output(
    wf: &Workflow,
    step: &Step,
    o: &OutputRef,
    path: &str,
    ancestors: Option<&BTreeMap<&str, BTreeSet<&str>>>,
    errors: &mut Vec<DefinitionError>,
) {
    let Some(from) = wf.step(&o.step) else {
        errors.push(DefinitionError::new(
            path,
            format!("$output of unknown step {:?}", clip(&o.step)),
        ));
        return;
    };
    if from.output(&o.output).is_none() {
        errors.push(DefinitionError::new(
            path,
            format!(
                "step {:?} has no output {:?} (its outputs: {})",
                o.step,
                clip(&o.output),
                names_of(from.outputs.iter().map(|x| x.name.as_str()))
            ),
        ));
        return;
    }
    if let Some(a) = ancestors
        && !a
            .get(step.name.as_str())
            .is_some_and(|a| a.contains(o.step.as_str()))
    {
        errors.push(DefinitionError::new(
            path,
            format!(
                "$output of step {:?}, which {:?} does not depend on (add it to depend_steps, \
                 directly or through another step)",
                o.step, step.name
            ),
        ));
    }
}

fn names_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

fn step_conditions(
    wf: &Workflow,
    i: usize,
    step: &Step,
    ancestors: Option<&BTreeMap<&str, BTreeSet<&str>>>,
    errors: &mut Vec<DefinitionError>,
) {
    let at = step_field(i, &clip(&step.name));
    let conditions = step.conditions();
    let skip = step.policy.skip_conditions.len();
    if skip > MAX_CONDITIONS {
        errors.push(DefinitionError::new(
            format!("{at}.policy.skip_conditions"),
            format!("{skip} conditions, over the limit of {MAX_CONDITIONS}"),
        ));
    }
    if let StepKind::Condition(c) = &step.kind
        && c.conditions.len() > MAX_CONDITIONS
    {
        errors.push(DefinitionError::new(
            format!("{at}.properties.conditions"),
            format!(
                "{} conditions, over the limit of {MAX_CONDITIONS}",
                c.conditions.len()
            ),
        ));
    }
    for (field, c) in conditions {
        let path = format!("{at}.{field}");
        for (inner, depth) in c.walk() {
            if depth > MAX_CONDITION_DEPTH {
                errors.push(DefinitionError::new(
                    path.clone(),
                    format!(
                        "conditions nest {depth} deep, over the limit of {MAX_CONDITION_DEPTH}"
                    ),
                ));
                break;
            }
            if inner.condition_type == ConditionType::OR {
                for side in [&inner.left, &inner.right] {
                    let ok = match side {
                        Operand::Condition(_) => true,
                        Operand::Value(v) => v.is_boolean(),
                        Operand::Placeholder(n) => wf
                            .parameter(n)
                            .is_none_or(|p| p.placeholder_type == PlaceholderType::BOOL),
                        Operand::Metric(_) => false,
                    };
                    if !ok {
                        errors.push(DefinitionError::new(
                            path.clone(),
                            "OR takes two conditions (or booleans)",
                        ));
                    }
                }
            }
        }
        for leaf in c.leaves() {
            match leaf {
                Operand::Placeholder(n) if wf.parameter(n).is_none() => {
                    errors.push(DefinitionError::new(
                        path.clone(),
                        format!("unknown parameter {:?} (list it in parameters)", clip(n)),
                    ));
                }
                Operand::Metric(m) => {
                    let Some(from) = wf.step(&m.step) else {
                        errors.push(DefinitionError::new(
                            path.clone(),
                            format!("$metric of unknown step {:?}", clip(&m.step)),
                        ));
                        continue;
                    };
                    if !matches!(from.step_type(), StepType::Job | StepType::Wasm) {
                        errors.push(DefinitionError::new(
                            path.clone(),
                            format!(
                                "$metric of step {:?}, a {} step: metrics come from job and wasm \
                                 steps (E-21)",
                                m.step,
                                from.step_type().as_str()
                            ),
                        ));
                    }
                    if from.output(&m.output).is_none() {
                        errors.push(DefinitionError::new(
                            path.clone(),
                            format!("step {:?} has no output {:?}", m.step, clip(&m.output)),
                        ));
                    }
                    if let Some(a) = ancestors
                        && !a
                            .get(step.name.as_str())
                            .is_some_and(|a| a.contains(m.step.as_str()))
                    {
                        errors.push(DefinitionError::new(
                            path.clone(),
                            format!(
                                "$metric of step {:?}, which {:?} does not depend on",
                                m.step, step.name
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
}

fn scenes(wf: &Workflow, errors: &mut Vec<DefinitionError>) {
    let Some(policy) = &wf.policy else {
        return;
    };
    if policy.scenes.len() > MAX_SCENES {
        errors.push(DefinitionError::new(
            "policy.scenes",
            format!(
                "{} scenes, over the limit of {MAX_SCENES}",
                policy.scenes.len()
            ),
        ));
    }
    for (i, scene) in policy.scenes.iter().enumerate() {
        let at = format!("policy.scenes[{i}]");
        if scene.scene_name.trim().is_empty() {
            errors.push(DefinitionError::new(
                format!("{at}.scene_name"),
                "a scene needs a name",
            ));
        }
        check_len(
            &format!("{at}.scene_name"),
            "scene_name",
            &scene.scene_name,
            MAX_NAME,
            errors,
        );
        if scene.scene_steps.is_empty() {
            errors.push(DefinitionError::new(
                format!("{at}.scene_steps"),
                "a scene selects at least one step",
            ));
        }
        for (j, s) in scene.scene_steps.iter().enumerate() {
            if wf.step(s).is_none() {
                errors.push(DefinitionError::new(
                    format!("{at}.scene_steps[{j}]"),
                    format!("unknown step {:?}", clip(s)),
                ));
            }
        }
    }
    duplicates(
        "scene",
        policy
            .scenes
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("policy.scenes[{i}]"), s.scene_name.as_str())),
        errors,
    );
}
