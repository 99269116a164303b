//! The definition layer against spec/workflow.md §5.1–5.5 (the cases about definitions,
//! parameters, storage resolution and branching), with the example workflow of the issue.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::condition::{Facts, MetricRef};
use super::dag::{self, SkipReason, StepOutcome};
use super::definition::{self, Format};
use super::params::{self, Produced, RunValues, Scope};
use super::{DefinitionError, Workflow, load};

/// data preparation (wasm) → training job → condition on accuracy → register model →
/// deploy service; retraining on the else branch.
fn example() -> Value {
    json!({
        "name": "retrain-and-deploy",
        "desc": "retrain and redeploy when accuracy drops",
        "storages": [
            {"name": "data", "create_dir": false, "with_execution_id": false},
            {"name": "out", "create_dir": true, "with_execution_id": true}
        ],
        "parameters": [
            {"name": "train_flavor", "placeholder_type": "STR", "default": "cpu.small"},
            {"name": "epochs", "placeholder_type": "INT", "default": 3},
            {"name": "threshold", "placeholder_type": "FLOAT", "default": 0.5},
            {"name": "model_name", "placeholder_type": "STR", "delay": true}
        ],
        "steps": [
            {"name": "prep", "step_type": "wasm",
             "inputs": [{"name": "raw", "data": {"$storage": "data", "join": "raw/"}}],
             "outputs": [{"name": "clean", "obs_config": {"obs_path": {"$storage": "out", "join": "clean/"}}}],
             "properties": {"plugin": "prep-data", "parameters": {"epochs": {"$placeholder": "epochs"}}}},
            {"name": "train", "step_type": "job", "depend_steps": ["prep"],
             "outputs": [
                 {"name": "train_url", "obs_config": {"obs_path": {"$storage": "out", "join": "model/"}}},
                 {"name": "metrics", "metrics_config": {"metric_files": [{"$storage": "out", "join": "metrics/metrics.json", "create_dir": false}]}}
             ],
             "properties": {"algorithm": "mnist", "flavor": {"$placeholder": "train_flavor"},
                            "inputs": [{"name": "data_url", "path": {"$output": {"step": "prep", "output": "clean"}}}],
                            "hyperparameters": {"epochs": {"$placeholder": "epochs"}}}},
            {"name": "check", "step_type": "condition", "depend_steps": ["train"],
             "properties": {"conditions": [{"condition_type": "GTE",
                 "left": {"$metric": {"step": "train", "output": "metrics", "json_key": "accuracy"}},
                 "right": {"$placeholder": "threshold"}}],
                 "if_then_steps": ["register"], "else_then_steps": ["retrain"]}},
            {"name": "register", "step_type": "model", "depend_steps": ["check"],
             "outputs": [{"name": "model"}],
             "properties": {"name": {"$placeholder": "model_name"},
                            "source": {"path": {"$output": {"step": "train", "output": "train_url"}}}}},
            {"name": "retrain", "step_type": "job", "depend_steps": ["check"],
             "outputs": [{"name": "train_url", "obs_config": {"obs_path": {"$storage": "out", "join": "retrained/"}}}],
             "properties": {"algorithm": "mnist", "flavor": "cpu.large"}},
            {"name": "deploy", "step_type": "service", "depend_steps": ["register"],
             "outputs": [{"name": "service_output"}],
             "properties": {"name": "mnist", "model": {"$placeholder": "model_name"}}}
        ]
    })
}

fn load_value(v: &Value) -> Result<Workflow, Vec<DefinitionError>> {
    load(v.to_string().as_bytes(), Format::Json)
}

/// The errors of `v`, as `field: message` lines.
fn refusals(v: &Value) -> Vec<String> {
    match load_value(v) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn refused_with(v: &Value, field: &str, words: &str) {
    let errors = refusals(v);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(field) && e.contains(words)),
        "wanted {field}: …{words}…, got {errors:#?}"
    );
}

/// Sets the value at `pointer`, adding its last key to an object if absent.
fn set(v: &mut Value, pointer: &str, new: Value) {
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = new;
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(key.to_owned(), new);
        }
        _ => panic!("{pointer}"),
    }
}

// ---- definitions (§5.1) ----

#[test]
fn the_example_loads_and_yaml_says_the_same_as_json() {
    let wf = load_value(&example()).unwrap();
    assert_eq!(wf.steps.len(), 6);
    let yaml = r#"
name: retrain-and-deploy
desc: retrain and redeploy when accuracy drops
storages:
  - {name: data, create_dir: false, with_execution_id: false}
  - {name: out, create_dir: true, with_execution_id: true}
parameters:
  - {name: train_flavor, placeholder_type: STR, default: cpu.small}
  - {name: epochs, placeholder_type: INT, default: 3}
  - {name: threshold, placeholder_type: FLOAT, default: 0.5}
  - {name: model_name, placeholder_type: STR, delay: true}
steps:
  - name: prep
    step_type: wasm
    inputs: [{name: raw, data: {$storage: data, join: raw/}}]
    outputs: [{name: clean, obs_config: {obs_path: {$storage: out, join: clean/}}}]
    properties: {plugin: prep-data, parameters: {epochs: {$placeholder: epochs}}}
  - name: train
    step_type: job
    depend_steps: prep
    outputs:
      - {name: train_url, obs_config: {obs_path: {$storage: out, join: model/}}}
      - name: metrics
        metrics_config:
          metric_files: [{$storage: out, join: metrics/metrics.json, create_dir: false}]
    properties:
      hyperparameters: {epochs: {$placeholder: epochs}}
      inputs: [{name: data_url, path: {$output: {step: prep, output: clean}}}]
      flavor: {$placeholder: train_flavor}
      algorithm: mnist
  - name: check
    step_type: condition
    depend_steps: [train]
    properties:
      conditions:
        - condition_type: GTE
          left: {$metric: {step: train, output: metrics, json_key: accuracy}}
          right: {$placeholder: threshold}
      if_then_steps: register
      else_then_steps: [retrain]
  - name: register
    step_type: model
    depend_steps: [check]
    outputs: [{name: model}]
    properties:
      name: {$placeholder: model_name}
      source: {path: {$output: {step: train, output: train_url}}}
  - name: retrain
    step_type: job
    depend_steps: [check]
    outputs: [{name: train_url, obs_config: {obs_path: {$storage: out, join: retrained/}}}]
    properties: {algorithm: mnist, flavor: cpu.large}
  - name: deploy
    step_type: service
    depend_steps: [register]
    outputs: [{name: service_output}]
    properties: {name: mnist, model: {$placeholder: model_name}}
"#;
    let from_yaml = load(yaml.as_bytes(), Format::Yaml).unwrap();
    assert_eq!(from_yaml, wf);
    assert_eq!(from_yaml.canonical_json(), wf.canonical_json());
    assert_eq!(from_yaml.digest(), wf.digest());
}

#[test]
fn the_canonical_form_sorts_keys_makes_defaults_explicit_and_reads_back() {
    let wf = load_value(&example()).unwrap();
    let canonical = wf.canonical_json();
    assert!(
        canonical.contains(r#""max_execution_minutes":10080"#),
        "{canonical}"
    );
    assert!(canonical.contains(r#""poll_interval_seconds":1"#));
    assert!(canonical.starts_with(r#"{"desc":"#), "{canonical}");
    let again = load(canonical.as_bytes(), Format::Json).unwrap();
    assert_eq!(again, wf);
    assert_eq!(again.canonical_json(), canonical);
    // Written with the defaults, or with keys in another order: the same digest.
    let mut v = example();
    set(
        &mut v,
        "/steps/0/policy",
        json!({"max_execution_minutes": "10080"}),
    );
    assert_eq!(load_value(&v).unwrap().digest(), wf.digest());
    assert_eq!(wf.digest().len(), 64);
    // A change is a new digest.
    set(
        &mut v,
        "/steps/0/policy",
        json!({"max_execution_minutes": 60}),
    );
    assert_ne!(load_value(&v).unwrap().digest(), wf.digest());
    // The typed model serialises back to the wire format.
    let back: Workflow = serde_json::from_str(&canonical).unwrap();
    assert_eq!(back, wf);
}

#[test]
fn workflow_names_follow_the_seed_rule_ac01() {
    for bad in ["1abc", &"a".repeat(65), "ab.c", "", "a b", "é"] {
        let mut v = example();
        set(&mut v, "/name", json!(bad));
        refused_with(&v, "name", "letters, digits, _ and -");
    }
    for good in ["a", "test-workflow", "a_b-9", &"a".repeat(64)] {
        let mut v = example();
        set(&mut v, "/name", json!(good));
        assert_eq!(refusals(&v), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn duplicate_names_are_refused_ac02() {
    let mut v = example();
    set(&mut v, "/steps/1/name", json!("prep"));
    refused_with(&v, "steps[1] (prep)", "duplicate step name \"prep\"");
    let mut v = example();
    set(&mut v, "/storages/1/name", json!("data"));
    refused_with(&v, "storages[1]", "duplicate storage name");
    let mut v = example();
    set(&mut v, "/steps/1/outputs/1/name", json!("train_url"));
    refused_with(&v, "steps[1] (train).outputs[1]", "duplicate output name");
}

#[test]
fn a_cycle_is_refused_and_named_ac03() {
    let mut v = example();
    set(&mut v, "/steps/0/depend_steps", json!(["train"]));
    let errors = refusals(&v);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cycle: ") && e.contains("prep") && e.contains("train")),
        "{errors:#?}"
    );
    let doc = json!({"name": "w", "steps": [
        {"name": "a", "step_type": "job", "depend_steps": ["b"]},
        {"name": "b", "step_type": "job", "depend_steps": ["a"]}]});
    refused_with(&doc, "steps[", "cycle: ");
    let errors = refusals(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a → b → a") || e.contains("b → a → b")),
        "{errors:#?}"
    );
    let mut v = example();
    set(&mut v, "/steps/0/depend_steps", json!(["prep"]));
    refused_with(&v, "steps[0] (prep).depend_steps[0]", "itself");
}

#[test]
fn placeholders_are_checked_against_their_type_ac04() {
    let with = |p: Value| {
        let mut v = example();
        v["parameters"].as_array_mut().unwrap().push(p);
        v
    };
    refused_with(
        &with(json!({"name": "e", "placeholder_type": "ENUM"})),
        "parameters[4] (e).enum_list",
        "needs enum_list",
    );
    refused_with(
        &with(json!({"name": "l", "placeholder_type": "LIST", "placeholder_format": "dict"})),
        "parameters[4] (l).placeholder_format",
        "str, int, float, bool",
    );
    refused_with(
        &with(json!({"name": "i", "placeholder_type": "INT", "default": "x"})),
        "parameters[4] (i).default",
        "whole number",
    );
    refused_with(
        &with(json!({"name": "d", "placeholder_type": "STR", "delay": true, "required": false})),
        "parameters[4] (d).required",
        "cannot be optional",
    );
    refused_with(
        &with(
            json!({"name": "e", "placeholder_type": "ENUM", "enum_list": ["a", "b"], "default": "c"}),
        ),
        "parameters[4] (e).default",
        "not one of the choices",
    );
    refused_with(
        &with(
            json!({"name": "l", "placeholder_type": "LIST", "placeholder_format": "int", "default": [1, "2"]}),
        ),
        "parameters[4] (l).default",
        "item 1",
    );
    refused_with(
        &with(json!({"name": "j", "placeholder_type": "JSON", "default": [1]})),
        "parameters[4] (j).default",
        "JSON object",
    );
    for ok in [
        json!({"name": "l", "placeholder_type": "LIST", "placeholder_format": "int", "default": [1, 2]}),
        json!({"name": "e", "placeholder_type": "ENUM", "enum_list": ["a", "b"], "default": "a"}),
        json!({"name": "j", "placeholder_type": "JSON", "default": {"key": "value"}}),
        json!({"name": "f", "placeholder_type": "FLOAT", "default": 1}),
        json!({"name": "b", "placeholder_type": "BOOL", "default": true}),
    ] {
        assert_eq!(refusals(&with(ok.clone())), Vec::<String>::new(), "{ok}");
    }
    let mut v = with(json!({"name": "t", "placeholder_type": "TEXT"}));
    refused_with(&v, "parameters[4].placeholder_type", "unknown variant");
    set(
        &mut v,
        "/parameters/4",
        json!({"name": "t", "placeholder_type": "STR", "colour": 1}),
    );
    refused_with(&v, "parameters[4]", "unknown field `colour`");
}

#[test]
fn a_repeated_parameter_is_one_when_identical_and_refused_when_not_ac05() {
    let mut v = example();
    let p = json!({"name": "train_flavor", "placeholder_type": "STR", "default": "cpu.small"});
    v["parameters"].as_array_mut().unwrap().push(p);
    let wf = load_value(&v).unwrap();
    assert_eq!(
        wf.parameters
            .iter()
            .filter(|p| p.name == "train_flavor")
            .count(),
        1
    );
    set(
        &mut v,
        "/parameters/4",
        json!({"name": "train_flavor", "placeholder_type": "JSON"}),
    );
    refused_with(&v, "parameters[4] (train_flavor)", "defined differently");
}

#[test]
fn storages_need_create_dir_for_the_execution_id_ac06() {
    let mut v = example();
    set(&mut v, "/storages/0/with_execution_id", json!(true));
    refused_with(
        &v,
        "storages[0] (data).with_execution_id",
        "needs create_dir",
    );
    let mut v = example();
    set(
        &mut v,
        "/steps/0/inputs/0/data",
        json!({"$storage": "data", "join": "x/", "with_execution_id": true, "create_dir": false}),
    );
    refused_with(&v, "steps[0] (prep).inputs[0].data", "needs create_dir");
}

#[test]
fn an_object_type_must_be_file_or_directory_ac07() {
    let mut v = example();
    v["parameters"].as_array_mut().unwrap().push(json!(
        {"name": "src", "placeholder_type": "STR", "placeholder_format": "obs", "object_type": "bucket"}
    ));
    refused_with(&v, "parameters[4].object_type", "unknown variant `bucket`");
    set(&mut v, "/parameters/4/object_type", json!("directory"));
    assert_eq!(refusals(&v), Vec::<String>::new());
    set(&mut v, "/parameters/4/default", json!("/bkt/data"));
    refused_with(&v, "parameters[4] (src).default", "not a directory path");
}

#[test]
fn branches_name_existing_steps_that_depend_on_the_condition_ac10() {
    let mut v = example();
    set(&mut v, "/steps/2/properties/if_then_steps", json!(["nope"]));
    refused_with(
        &v,
        "steps[2] (check).properties.if_then_steps[0]",
        "unknown step \"nope\"",
    );
    let mut v = example();
    set(&mut v, "/steps/2/properties/if_then_steps", json!(["prep"]));
    refused_with(
        &v,
        "steps[2] (check).properties.if_then_steps[0]",
        "does not depend on condition step",
    );
    let mut v = example();
    set(
        &mut v,
        "/steps/2/properties/else_then_steps",
        json!(["register"]),
    );
    refused_with(
        &v,
        "steps[2] (check).properties.else_then_steps",
        "in both branches",
    );
}

#[test]
fn references_must_name_what_exists_and_outputs_come_from_ancestors() {
    let cases = [
        (
            "/steps/0/properties/parameters/epochs",
            json!({"$placeholder": "epoch"}),
            "steps[0] (prep).properties.parameters.epochs",
            "unknown parameter \"epoch\"",
        ),
        (
            "/steps/0/inputs/0/data",
            json!({"$storage": "raw"}),
            "steps[0] (prep).inputs[0].data",
            "unknown storage \"raw\"",
        ),
        (
            "/steps/1/properties/inputs/0/path",
            json!({"$output": {"step": "prep", "output": "dirty"}}),
            "steps[1] (train).properties.inputs[0].path",
            "has no output \"dirty\"",
        ),
        (
            "/steps/1/properties/inputs/0/path",
            json!({"$output": {"step": "ghost", "output": "x"}}),
            "steps[1] (train).properties.inputs[0].path",
            "unknown step \"ghost\"",
        ),
        (
            "/steps/0/properties/parameters/epochs",
            json!({"$output": {"step": "train", "output": "train_url"}}),
            "steps[0] (prep).properties.parameters.epochs",
            "does not depend on",
        ),
        (
            "/steps/4/properties/flavor",
            json!({"$output": {"step": "register", "output": "model"}}),
            "steps[4] (retrain).properties.flavor",
            "does not depend on",
        ),
        (
            "/steps/1/properties/flavor",
            json!({"$flavor": "x"}),
            "steps[1] (train).properties.flavor",
            "unknown reference $flavor",
        ),
        (
            "/steps/1/properties/flavor",
            json!({"$placeholder": "train_flavor", "x": 1}),
            "steps[1] (train).properties.flavor",
            "takes no other keys",
        ),
        (
            "/steps/1/properties/flavor",
            json!({"$select": [{"$output": {"step": "prep", "output": "clean"}}]}),
            "steps[1] (train).properties.flavor",
            "at least two",
        ),
        (
            "/steps/0/inputs/0/data",
            json!({"$storage": "data", "join": "../../etc/"}),
            "steps[0] (prep).inputs[0].data.join",
            ".. segments",
        ),
        (
            "/steps/2/properties/conditions/0/left",
            json!({"$metric": {"step": "prep", "output": "nope", "json_key": "a"}}),
            "steps[2] (check).properties.conditions[0]",
            "has no output \"nope\"",
        ),
        (
            "/steps/2/properties/conditions/0/right",
            json!({"$placeholder": "nope"}),
            "steps[2] (check).properties.conditions[0]",
            "unknown parameter \"nope\"",
        ),
    ];
    for (pointer, new, field, words) in cases {
        let mut v = example();
        set(&mut v, pointer, new);
        refused_with(&v, field, words);
    }
    let mut v = example();
    set(&mut v, "/steps/1/depend_steps", json!(["prep", "ghost"]));
    refused_with(
        &v,
        "steps[1] (train).depend_steps[1]",
        "unknown step \"ghost\"",
    );
}

#[test]
fn step_kinds_and_properties_are_typed_and_the_field_named() {
    let mut v = example();
    set(&mut v, "/steps/0/properties", json!({"parameters": {}}));
    refused_with(&v, "steps[0] (prep).properties", "missing field `plugin`");
    let mut v = example();
    set(&mut v, "/steps/0/properties/version", json!(3));
    refused_with(&v, "steps[0] (prep).properties.version", "invalid type");
    let mut v = example();
    set(&mut v, "/steps/1/properties", json!([1]));
    refused_with(&v, "steps[1] (train).properties", "must be an object");
    for seed_only in ["labeling", "create_dataset", "mrs_job"] {
        let mut v = example();
        set(&mut v, "/steps/5/step_type", json!(seed_only));
        refused_with(&v, "steps[5] (deploy).step_type", "not supported here");
    }
    let mut v = example();
    set(&mut v, "/steps/5/step_type", json!("teleport"));
    refused_with(&v, "steps[5] (deploy).step_type", "unknown variant");
    let mut v = example();
    set(
        &mut v,
        "/steps/5/policy",
        json!({"max_execution_minutes": 0}),
    );
    refused_with(
        &v,
        "steps[5] (deploy).policy.max_execution_minutes",
        "not in 1-43200",
    );
    let mut v = example();
    set(&mut v, "/steps/2/outputs", json!([{"name": "x"}]));
    refused_with(&v, "steps[2] (check).outputs", "no outputs");
}

#[test]
fn limits_are_said_in_the_message() {
    let steps: Vec<Value> = (0..201)
        .map(|i| json!({"name": format!("s{i}"), "step_type": "job"}))
        .collect();
    refused_with(
        &json!({"name": "w", "steps": steps}),
        "steps",
        "over the limit of 200",
    );
    let mut v = example();
    set(&mut v, "/desc", json!("x".repeat(501)));
    refused_with(&v, "desc", "over the limit of 500");
    let mut v = example();
    set(&mut v, "/steps/1/name", json!("t".repeat(65)));
    refused_with(&v, "steps[1]", "1-64 characters");
    let big = format!(
        r#"{{"name":"w","desc":"{}","steps":[]}}"#,
        "x".repeat(1 << 20)
    );
    let e = load(big.as_bytes(), Format::Json).unwrap_err();
    assert!(e[0].message.contains("over the limit"), "{e:?}");
    refused_with(
        &json!({"name": "w", "steps": []}),
        "steps",
        "at least one step",
    );
}

#[test]
fn malformed_input_is_refused_without_panicking() {
    for (bytes, format) in [
        (&b"{"[..], Format::Json),
        (b"[]", Format::Json),
        (b"name: [unclosed", Format::Yaml),
        (b"\xff\xfe", Format::Yaml),
        (b"a: &a [*a]", Format::Yaml),
        (b"- a\n- b", Format::Yaml),
    ] {
        assert!(load(bytes, format).is_err());
    }
    // An alias bomb is stopped by the YAML budget, not expanded.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(load(bomb.as_bytes(), Format::Yaml).is_err());
    assert_eq!(
        Format::from_content_type(Some("application/yaml; charset=utf-8")),
        Format::Yaml
    );
    assert_eq!(Format::from_content_type(Some("text/x-yaml")), Format::Yaml);
    assert_eq!(
        Format::from_content_type(Some("application/json")),
        Format::Json
    );
    assert_eq!(Format::from_content_type(None), Format::Json);
}

#[test]
fn partial_execution_scenes_name_known_steps() {
    let mut v = example();
    v["policy"] = json!({"scenes": [
        {"scene_name": "Model training", "scene_steps": ["prep", "train"]},
        {"scene_name": "Service deployment", "scene_steps": ["register", "ghost"]}]});
    refused_with(
        &v,
        "policy.scenes[1].scene_steps[1]",
        "unknown step \"ghost\"",
    );
}

// ---- parameters and storages (§5.2, §5.3) ----

fn run_of(
    wf: &Workflow,
    given: Value,
    roots: &[(&str, &str)],
) -> Result<RunValues, Vec<DefinitionError>> {
    let given: Map<String, Value> = serde_json::from_value(given).unwrap();
    let roots: BTreeMap<String, String> = roots
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params::resolve_run(wf, &given, &roots)
}

fn roots() -> Vec<(&'static str, &'static str)> {
    vec![("data", "/bkt/root"), ("out", "/bkt/root/")]
}

#[test]
fn run_parameters_are_typed_defaulted_and_required_ac12_ac13() {
    let mut v = example();
    v["parameters"].as_array_mut().unwrap().extend([
        json!({"name": "mode", "placeholder_type": "ENUM", "enum_list": ["fast", "slow"]}),
        json!({"name": "note", "placeholder_type": "STR", "required": false}),
    ]);
    let wf = load_value(&v).unwrap();
    let run = run_of(&wf, json!({"mode": "fast", "epochs": 5}), &roots()).unwrap();
    assert_eq!(run.parameters["epochs"], json!(5));
    assert_eq!(run.parameters["train_flavor"], json!("cpu.small"));
    assert_eq!(run.parameters["mode"], json!("fast"));
    assert!(!run.parameters.contains_key("note"));
    assert_eq!(run.awaiting, BTreeSet::from(["model_name".to_string()]));
    assert_eq!(run.storages["data"], "/bkt/root/");

    let e = run_of(&wf, json!({}), &roots()).unwrap_err();
    assert_eq!(
        e,
        vec![DefinitionError::new(
            "parameters.mode",
            "required, and it has no default: give a value"
        )]
    );
    let e = run_of(&wf, json!({"mode": "medium"}), &roots()).unwrap_err();
    assert!(
        e[0].field == "parameters.mode" && e[0].message.contains("not one of the choices"),
        "{e:?}"
    );
    let e = run_of(
        &wf,
        json!({"mode": "fast", "epochs": 2.5, "nope": 1}),
        &roots(),
    )
    .unwrap_err();
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["parameters.nope", "parameters.epochs"]);
}

#[test]
fn storage_roots_are_needed_and_checked_ac18() {
    let wf = load_value(&example()).unwrap();
    let e = run_of(&wf, json!({}), &[("data", "/bkt/root/")]).unwrap_err();
    assert_eq!(e[0].field, "storages.out");
    assert!(e[0].message.contains("needs a root path"));
    for hostile in ["/bkt/../etc/", "/bkt/a\\b/", "/bkt//x/", "", "/bkt/\0/"] {
        let e = run_of(&wf, json!({}), &[("data", hostile), ("out", "/o/")]).unwrap_err();
        assert_eq!(e[0].field, "storages.data", "{hostile:?}");
    }
    let e = run_of(
        &wf,
        json!({}),
        &[("data", "/a/"), ("out", "/o/"), ("extra", "/x/")],
    )
    .unwrap_err();
    assert_eq!(e[0].field, "storages.extra");
    // A default root serves when the run gives none.
    let mut v = example();
    set(&mut v, "/storages/0/default", json!("/bkt/default"));
    let wf = load_value(&v).unwrap();
    let run = run_of(&wf, json!({}), &[("out", "/o/")]).unwrap();
    assert_eq!(run.storages["data"], "/bkt/default/");
}

fn scope<'a>(
    wf: &'a Workflow,
    run: &'a RunValues,
    execution_id: &'a str,
    produced: &'a BTreeMap<String, Produced>,
) -> Scope<'a> {
    Scope {
        workflow: wf,
        run,
        execution_id,
        produced,
    }
}

#[test]
fn storage_paths_resolve_per_run_ac15_ac16_ac17() {
    let mut v = example();
    v["storages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "plain"}));
    v["steps"][0]["properties"]["grants"] = json!([
            {"path": {"$storage": "plain", "join": "directory_path"}},
            {"path": {"$storage": "plain", "join": "d", "with_execution_id": false, "create_dir": true}},
            {"path": {"$storage": "plain", "join": "a/b"}},
            {"path": {"$storage": "plain"}},
            {"path": {"$storage": "out", "join": "/input/data/"}}
    ]);
    let wf = load_value(&v).unwrap();
    let mut r = roots();
    r.push(("plain", "/bkt/root/"));
    let run = run_of(&wf, json!({}), &r).unwrap();
    let produced = BTreeMap::new();
    let step = wf.step("prep").unwrap();
    let one = params::resolve_step(step, &scope(&wf, &run, "execution-001", &produced)).unwrap();
    // InputStorage: path concatenation only, nothing created.
    assert_eq!(
        one.inputs,
        vec![("raw".to_string(), json!("/bkt/root/raw/"))]
    );
    // OutputStorage: under the run's id, created before the step.
    assert_eq!(
        one.outputs,
        vec![(
            "clean".to_string(),
            Some(json!("/bkt/root/execution-001/clean/"))
        )]
    );
    let grants: Vec<&Value> = one.properties["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["path"])
        .collect();
    assert_eq!(
        grants,
        [
            &json!("/bkt/root/directory_path"),
            &json!("/bkt/root/d/"),
            &json!("/bkt/root/a/b"),
            &json!("/bkt/root/"),
            &json!("/bkt/root/execution-001/input/data/"),
        ]
    );
    assert_eq!(
        one.create_dirs,
        [
            "/bkt/root/execution-001/clean/",
            "/bkt/root/d/",
            "/bkt/root/execution-001/input/data/"
        ]
    );
    assert_eq!(one.properties["parameters"]["epochs"], json!(3));
    // Two runs, two prefixes.
    let two = params::resolve_step(step, &scope(&wf, &run, "execution-002", &produced)).unwrap();
    assert_ne!(one.outputs, two.outputs);
    // A run id is one path segment.
    let e = params::resolve_step(step, &scope(&wf, &run, "../x", &produced)).unwrap_err();
    assert!(e.message.contains("cannot be a path segment"), "{e}");
}

#[test]
fn outputs_and_parameters_are_substituted_into_properties() {
    let wf = load_value(&example()).unwrap();
    let run = run_of(&wf, json!({"epochs": 7}), &roots()).unwrap();
    let mut produced = BTreeMap::new();
    produced.insert(
        "prep".to_string(),
        Produced {
            outputs: BTreeMap::from([("clean".to_string(), json!("/bkt/root/e1/clean/"))]),
            variables: BTreeMap::new(),
        },
    );
    let train = wf.step("train").unwrap();
    let r = params::resolve_step(train, &scope(&wf, &run, "e1", &produced)).unwrap();
    assert_eq!(
        r.properties,
        json!({"algorithm": "mnist", "flavor": "cpu.small",
               "inputs": [{"name": "data_url", "path": "/bkt/root/e1/clean/"}],
               "hyperparameters": {"epochs": 7}})
    );
    assert_eq!(
        r.metric_files["metrics"],
        vec![json!("/bkt/root/e1/metrics/metrics.json")]
    );
    assert_eq!(
        r.create_dirs,
        ["/bkt/root/e1/model/"],
        "the metrics file is not a directory to create"
    );
    // An output not produced is named.
    let e = params::resolve_step(train, &scope(&wf, &run, "e1", &BTreeMap::new())).unwrap_err();
    assert!(
        e.field.contains("properties.inputs[0].path")
            && e.message.contains("produced no output clean"),
        "{e}"
    );
}

#[test]
fn a_delayed_parameter_waits_for_proceed_ac24() {
    let wf = load_value(&example()).unwrap();
    let mut run = run_of(&wf, json!({}), &roots()).unwrap();
    let register = wf.step("register").unwrap();
    assert_eq!(params::awaiting(register, &run), ["model_name"]);
    assert!(params::awaiting(wf.step("train").unwrap(), &run).is_empty());
    let produced = BTreeMap::new();
    let e = params::resolve_step(register, &scope(&wf, &run, "e1", &produced)).unwrap_err();
    assert!(e.message.contains("delayed"), "{e}");
    // Proceed without the value, with a wrong type, with an unknown or non-delayed name.
    let empty = Map::new();
    let e = params::proceed(&wf, &mut run, register, &empty).unwrap_err();
    assert_eq!(e[0].field, "values.model_name");
    let bad: Map<String, Value> =
        serde_json::from_value(json!({"model_name": 3, "epochs": 1})).unwrap();
    let e = params::proceed(&wf, &mut run, register, &bad).unwrap_err();
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["values.epochs", "values.model_name"]);
    assert!(run.awaiting.contains("model_name"), "nothing changed");
    let good: Map<String, Value> = serde_json::from_value(json!({"model_name": "mnist"})).unwrap();
    params::proceed(&wf, &mut run, register, &good).unwrap();
    assert!(params::awaiting(register, &run).is_empty());
    let mut produced = BTreeMap::new();
    produced.insert(
        "train".to_string(),
        Produced {
            outputs: BTreeMap::from([("train_url".to_string(), json!("/bkt/root/e1/model/"))]),
            variables: BTreeMap::new(),
        },
    );
    let r = params::resolve_step(register, &scope(&wf, &run, "e1", &produced)).unwrap();
    assert_eq!(r.properties["name"], json!("mnist"));
    assert_eq!(r.properties["source"]["path"], json!("/bkt/root/e1/model/"));
}

// ---- branching (§5.5) ----

fn no_metrics(_: &MetricRef) -> Result<f64, String> {
    Err("no metrics".into())
}

fn outcomes(pairs: &[(&str, StepOutcome)]) -> BTreeMap<String, StepOutcome> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn skipped_names(plan: &dag::Plan) -> Vec<&str> {
    plan.skipped.iter().map(|(n, _)| n.as_str()).collect()
}

/// The seed's 5.3.5.2 example: a BOOL parameter chooses between two job → model branches.
fn seed_branching() -> Workflow {
    load_value(&json!({
        "name": "branching", "desc": "",
        "parameters": [{"name": "left_value", "placeholder_type": "BOOL", "default": true}],
        "steps": [
            {"name": "condition_step", "step_type": "condition",
             "properties": {"conditions": [{"condition_type": "EQ", "left": {"$placeholder": "left_value"}, "right": true}],
                            "if_then_steps": ["job_step_1"], "else_then_steps": ["job_step_2"]}},
            {"name": "job_step_1", "step_type": "job", "depend_steps": ["condition_step"], "outputs": [{"name": "train_url"}]},
            {"name": "model_step_1", "step_type": "model", "depend_steps": ["job_step_1"]},
            {"name": "job_step_2", "step_type": "job", "depend_steps": ["condition_step"], "outputs": [{"name": "train_url"}]},
            {"name": "model_step_2", "step_type": "model", "depend_steps": ["job_step_2"]},
            {"name": "consumer", "step_type": "job", "depend_steps": ["model_step_1", "model_step_2", "job_step_1", "job_step_2"],
             "inputs": [{"name": "model", "data": {"$select": [
                 {"$output": {"step": "job_step_1", "output": "train_url"}},
                 {"$output": {"step": "job_step_2", "output": "train_url"}}]}}]}
        ]
    }))
    .unwrap()
}

#[test]
fn a_condition_runs_one_branch_and_skips_the_other_transitively_ac28() {
    let wf = seed_branching();
    for (value, run, skip) in [
        (
            true,
            ["job_step_1", "model_step_1"],
            ["job_step_2", "model_step_2"],
        ),
        (
            false,
            ["job_step_2", "model_step_2"],
            ["job_step_1", "model_step_1"],
        ),
    ] {
        let parameters = BTreeMap::from([("left_value".to_string(), json!(value))]);
        let facts = Facts {
            parameters: &parameters,
            metric: &no_metrics,
        };
        let start = dag::plan(&wf, &BTreeMap::new(), None, &facts);
        assert_eq!(start.runnable, ["condition_step"]);
        let cond = match &wf.step("condition_step").unwrap().kind {
            super::StepKind::Condition(c) => c.conditions.clone(),
            _ => unreachable!(),
        };
        let chosen = super::condition::evaluate_all(&cond, &facts).unwrap();
        assert_eq!(chosen, value);
        let mut state = outcomes(&[("condition_step", StepOutcome::Branch(chosen))]);
        let p = dag::plan(&wf, &state, None, &facts);
        assert_eq!(p.runnable, [run[0]]);
        assert_eq!(skipped_names(&p), skip);
        assert_eq!(
            p.skipped[0].1,
            SkipReason::Branch {
                condition: "condition_step".into()
            }
        );
        assert_eq!(p.skipped[1].1, SkipReason::DependenciesSkipped);
        for (n, _) in &p.skipped {
            state.insert(n.clone(), StepOutcome::Skipped);
        }
        state.insert(run[0].to_string(), StepOutcome::Completed);
        let p = dag::plan(&wf, &state, None, &facts);
        assert_eq!(p.runnable, [run[1]]);
        state.insert(run[1].to_string(), StepOutcome::Completed);
        let p = dag::plan(&wf, &state, None, &facts);
        assert_eq!(
            p.runnable,
            ["consumer"],
            "one branch ran: the consumer runs"
        );
    }
}

#[test]
fn a_metric_chooses_the_branch_ac29() {
    let wf = load_value(&example()).unwrap();
    let parameters = BTreeMap::from([("threshold".to_string(), json!(0.5))]);
    let cond = match &wf.step("check").unwrap().kind {
        super::StepKind::Condition(c) => c.conditions.clone(),
        _ => unreachable!(),
    };
    for (accuracy, runs, skipped) in [(0.4, "retrain", "register"), (0.8, "register", "retrain")] {
        let file = json!([{"key": "accuracy", "title": "accuracy", "type": "float", "data": {"value": accuracy}}])
            .to_string();
        let metric = |m: &MetricRef| {
            assert_eq!((m.step.as_str(), m.output.as_str()), ("train", "metrics"));
            super::condition::metric_from_file(file.as_bytes(), &m.json_key)
        };
        let facts = Facts {
            parameters: &parameters,
            metric: &metric,
        };
        let chosen = super::condition::evaluate_all(&cond, &facts).unwrap();
        let state = outcomes(&[
            ("prep", StepOutcome::Completed),
            ("train", StepOutcome::Completed),
            ("check", StepOutcome::Branch(chosen)),
        ]);
        let p = dag::plan(&wf, &state, None, &facts);
        assert_eq!(p.runnable, [runs], "accuracy {accuracy}");
        assert!(skipped_names(&p).contains(&skipped));
        if skipped == "register" {
            assert!(
                skipped_names(&p).contains(&"deploy"),
                "deploy follows register"
            );
        }
    }
}

#[test]
fn skip_conditions_override_the_default_rule_ac32() {
    let doc = |model_policy: Value| {
        load_value(&json!({
            "name": "skips",
            "parameters": [
                {"name": "job_step_a_is_skip", "placeholder_type": "BOOL", "default": false},
                {"name": "job_step_b_is_skip", "placeholder_type": "BOOL", "default": false},
                {"name": "model_is_skip", "placeholder_type": "BOOL", "default": false}
            ],
            "steps": [
                {"name": "job_step_a", "step_type": "job", "policy": {"skip_conditions": [
                    {"condition_type": "EQ", "left": {"$placeholder": "job_step_a_is_skip"}, "right": true}]}},
                {"name": "job_step_b", "step_type": "job", "policy": {"skip_conditions": [
                    {"condition_type": "EQ", "left": {"$placeholder": "job_step_b_is_skip"}, "right": true}]}},
                {"name": "model_step", "step_type": "model", "depend_steps": ["job_step_a", "job_step_b"],
                 "policy": model_policy}
            ]
        }))
        .unwrap()
    };
    let plain = doc(json!({}));
    let with_policy = doc(json!({"skip_conditions": [
        {"condition_type": "EQ", "left": {"$placeholder": "model_is_skip"}, "right": true}]}));
    for (a, b, model_skipped) in [
        (true, true, true),
        (true, false, false),
        (false, true, false),
        (false, false, false),
    ] {
        let parameters = BTreeMap::from([
            ("job_step_a_is_skip".to_string(), json!(a)),
            ("job_step_b_is_skip".to_string(), json!(b)),
            ("model_is_skip".to_string(), json!(false)),
        ]);
        let facts = Facts {
            parameters: &parameters,
            metric: &no_metrics,
        };
        let first = dag::plan(&plain, &BTreeMap::new(), None, &facts);
        let mut state = BTreeMap::new();
        for (n, _) in &first.skipped {
            state.insert(n.clone(), StepOutcome::Skipped);
        }
        for n in &first.runnable {
            state.insert(n.clone(), StepOutcome::Completed);
        }
        let next = dag::plan(&plain, &state, None, &facts);
        let model_was_skipped = skipped_names(&first).contains(&"model_step")
            || skipped_names(&next).contains(&"model_step");
        assert_eq!(
            model_was_skipped, model_skipped,
            "a={a} b={b}: {first:?} then {next:?}"
        );
        // A skip policy evaluating false runs the step even when both dependencies skipped.
        let first = dag::plan(&with_policy, &BTreeMap::new(), None, &facts);
        let mut state = BTreeMap::new();
        for (n, _) in &first.skipped {
            state.insert(n.clone(), StepOutcome::Skipped);
        }
        for n in &first.runnable {
            state.insert(n.clone(), StepOutcome::Completed);
        }
        assert!(
            !skipped_names(&first).contains(&"model_step"),
            "the policy decides, a={a} b={b}"
        );
        let next = dag::plan(&with_policy, &state, None, &facts);
        let model = "model_step".to_string();
        assert!(
            first.runnable.contains(&model) || next.runnable.contains(&model),
            "a={a} b={b}"
        );
    }
    // A skip condition that cannot be evaluated fails the step, saying why.
    let parameters = BTreeMap::new();
    let facts = Facts {
        parameters: &parameters,
        metric: &no_metrics,
    };
    let p = dag::plan(&plain, &BTreeMap::new(), None, &facts);
    assert_eq!(p.failed.len(), 2);
    assert!(
        p.failed[0].1.contains("job_step_a_is_skip"),
        "{:?}",
        p.failed
    );
}

#[test]
fn a_selector_takes_the_one_output_that_exists_ac33() {
    let wf = seed_branching();
    let run = run_of(&wf, json!({}), &[]).unwrap();
    let consumer = wf.step("consumer").unwrap();
    let made = |steps: &[&str]| -> BTreeMap<String, Produced> {
        steps
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    Produced {
                        outputs: BTreeMap::from([(
                            "train_url".to_string(),
                            json!(format!("/o/{s}/")),
                        )]),
                        variables: BTreeMap::new(),
                    },
                )
            })
            .collect()
    };
    let only_b = made(&["job_step_2"]);
    let r = params::resolve_step(consumer, &scope(&wf, &run, "e1", &only_b)).unwrap();
    assert_eq!(
        r.inputs,
        vec![("model".to_string(), json!("/o/job_step_2/"))]
    );
    let both = made(&["job_step_1", "job_step_2"]);
    let e = params::resolve_step(consumer, &scope(&wf, &run, "e1", &both)).unwrap_err();
    assert!(e.message.contains("more than one valid output"), "{e}");
    let none = made(&[]);
    let e = params::resolve_step(consumer, &scope(&wf, &run, "e1", &none)).unwrap_err();
    assert!(e.message.contains("none of its outputs"), "{e}");
    // Both branches skipped: the consumer is skipped by the default rule.
    let parameters = BTreeMap::new();
    let facts = Facts {
        parameters: &parameters,
        metric: &no_metrics,
    };
    let state = outcomes(&[
        ("condition_step", StepOutcome::Skipped),
        ("job_step_1", StepOutcome::Skipped),
        ("job_step_2", StepOutcome::Skipped),
        ("model_step_1", StepOutcome::Skipped),
        ("model_step_2", StepOutcome::Skipped),
    ]);
    let p = dag::plan(&wf, &state, None, &facts);
    assert_eq!(
        p.skipped,
        vec![("consumer".to_string(), SkipReason::DependenciesSkipped)]
    );
}

#[test]
fn parallel_branches_are_runnable_together_and_failures_hold_dependents() {
    let wf = load_value(&json!({"name": "fan", "steps": [
        {"name": "a", "step_type": "job"},
        {"name": "b", "step_type": "job", "depend_steps": ["a"]},
        {"name": "c", "step_type": "job", "depend_steps": ["a"]},
        {"name": "d", "step_type": "job", "depend_steps": ["b", "c"]}]}))
    .unwrap();
    let parameters = BTreeMap::new();
    let facts = Facts {
        parameters: &parameters,
        metric: &no_metrics,
    };
    let p = dag::plan(
        &wf,
        &outcomes(&[("a", StepOutcome::Completed)]),
        None,
        &facts,
    );
    assert_eq!(p.runnable, ["b", "c"]);
    let p = dag::plan(
        &wf,
        &outcomes(&[
            ("a", StepOutcome::Completed),
            ("b", StepOutcome::Failed),
            ("c", StepOutcome::Completed),
        ]),
        None,
        &facts,
    );
    assert_eq!(p, dag::Plan::default(), "d waits for a retry of b");
    let p = dag::plan(
        &wf,
        &outcomes(&[("a", StepOutcome::Completed), ("b", StepOutcome::Active)]),
        None,
        &facts,
    );
    assert_eq!(p.runnable, ["c"]);
    assert_eq!(dag::descendants(&wf, "b"), BTreeSet::from(["d"]));
    assert_eq!(dag::descendants(&wf, "a"), BTreeSet::from(["b", "c", "d"]));
    assert!(dag::descendants(&wf, "d").is_empty());
}

#[test]
fn a_scene_runs_only_its_steps_ac37() {
    let wf = load_value(&json!({"name": "scenes", "steps": [
        {"name": "label", "step_type": "wasm", "properties": {"plugin": "label"}},
        {"name": "release", "step_type": "wasm", "depend_steps": ["label"], "properties": {"plugin": "release"}},
        {"name": "train", "step_type": "job", "depend_steps": ["release"]},
        {"name": "model", "step_type": "model", "depend_steps": ["train"]},
        {"name": "service", "step_type": "service", "depend_steps": ["model"]}],
        "policy": {"scenes": [
            {"scene_name": "Model training", "scene_steps": ["label", "release", "train"]},
            {"scene_name": "Service deployment", "scene_steps": ["model", "service"]}]}}))
    .unwrap();
    let parameters = BTreeMap::new();
    let facts = Facts {
        parameters: &parameters,
        metric: &no_metrics,
    };
    assert_eq!(dag::selection(&wf, &[]).unwrap(), None);
    let selected = dag::selection(&wf, &["Service deployment".to_string()])
        .unwrap()
        .unwrap();
    let p = dag::plan(&wf, &BTreeMap::new(), Some(&selected), &facts);
    assert_eq!(skipped_names(&p), ["label", "release", "train"]);
    assert!(p.skipped.iter().all(|(_, r)| *r == SkipReason::NotSelected));
    assert_eq!(
        p.runnable,
        ["model"],
        "unselected dependencies do not skip a selected step"
    );
    let e = dag::selection(&wf, &["Nope".to_string()]).unwrap_err();
    assert!(
        e.message.contains("Model training, Service deployment"),
        "{e}"
    );
}

// ---- the DAG ----

proptest! {
    /// Random DAGs (edges only from later to earlier steps, in any listing order) are never
    /// reported as cyclic, and their topological order puts every step after its
    /// dependencies.
    #[test]
    fn random_dags_have_no_false_cycle(
        n in 1usize..40,
        edges in proptest::collection::vec((0usize..40, 0usize..40), 0..120),
        rotate in 0usize..40,
    ) {
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (a, b) in edges {
            let (a, b) = (a % n, b % n);
            if a > b {
                deps[a].insert(b);
            }
        }
        let mut steps: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("s{i}"), "step_type": "job",
                            "depend_steps": deps[i].iter().map(|d| format!("s{d}")).collect::<Vec<_>>()}))
            .collect();
        steps.rotate_left(rotate % n);
        let wf = definition::from_value(json!({"name": "w", "steps": steps})).unwrap();
        prop_assert_eq!(dag::find_cycle(&wf), None);
        prop_assert!(super::validate::validate(&wf).is_ok());
        let order = dag::topological_order(&wf);
        prop_assert_eq!(order.len(), n);
        let pos: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        for s in &wf.steps {
            for d in &s.depend_steps {
                prop_assert!(pos[d.as_str()] < pos[s.name.as_str()]);
            }
        }
    }

    /// A back edge makes a cycle, and the cycle reported is one: each step depends on the
    /// one before it, and it ends where it starts.
    #[test]
    fn a_back_edge_is_reported_as_a_real_cycle(
        n in 2usize..30,
        edges in proptest::collection::vec((0usize..30, 0usize..30), 0..60),
        back in (0usize..30, 0usize..30),
    ) {
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (i, d) in deps.iter_mut().enumerate().skip(1) {
            d.insert(i - 1);
        }
        for (a, b) in edges {
            let (a, b) = (a % n, b % n);
            if a > b {
                deps[a].insert(b);
            }
        }
        let (lo, hi) = ((back.0 % n).min(back.1 % n), (back.0 % n).max(back.1 % n));
        let (lo, hi) = if lo == hi { (0, n - 1) } else { (lo, hi) };
        deps[lo].insert(hi);
        let steps: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("s{i}"), "step_type": "job",
                            "depend_steps": deps[i].iter().map(|d| format!("s{d}")).collect::<Vec<_>>()}))
            .collect();
        let wf = definition::from_value(json!({"name": "w", "steps": steps})).unwrap();
        let cycle = dag::find_cycle(&wf).expect("a cycle");
        prop_assert_eq!(cycle.first(), cycle.last());
        for pair in cycle.windows(2) {
            // Named in run order: pair[1] depends on pair[0].
            let later = wf.step(&pair[1]).unwrap();
            prop_assert!(later.depend_steps.contains(&pair[0]), "{:?}", cycle);
        }
        let errors = super::validate::validate(&wf).unwrap_err();
        prop_assert!(errors.iter().any(|e| e.message.starts_with("cycle: ")));
    }
}

#[test]
fn the_documented_example_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workflows.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/workflows.md has a yaml example");
    let wf = load(yaml.as_bytes(), Format::Yaml).unwrap();
    assert_eq!(wf.steps.len(), 6);
}
