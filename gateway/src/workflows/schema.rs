//! The published JSON Schema of the wire format (`docs/workflow.schema.json`): written here
//! beside the types it describes; a test keeps the checked-in file equal to it
//! (`ATELIER_WRITE_SCHEMA=1 cargo test -p atelier-gateway --lib workflows::schema` rewrites
//! it). The schema says shapes; meaning (names known, a DAG, ancestors, types of defaults) is
//! [`super::validate`]'s.

use serde_json::{Value, json};

use super::validate::{MAX_DESC, MAX_NAME, MAX_PARAMETERS, MAX_PORTS, MAX_STEPS, MAX_STORAGES};

/// The schema, as a JSON value.
pub fn json_schema() -> Value {
    let name = json!({"type": "string", "pattern": format!("^[A-Za-z][A-Za-z0-9_-]{{0,{}}}$", MAX_NAME - 1)});
    let names = json!({"oneOf": [
        {"$ref": "#/$defs/name"},
        {"type": "array", "items": {"$ref": "#/$defs/name"}}
    ]});
    let mut defs = serde_json::Map::new();
    defs.insert("name".into(), name);
    defs.insert("names".into(), names);
    defs.insert("storage".into(), json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "description": "wf.data.Storage; InputStorage = create_dir false, with_execution_id false; OutputStorage = both true. with_execution_id needs create_dir.",
                "properties": {
                    "name": {"$ref": "#/$defs/name"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "create_dir": {"type": "boolean", "default": false},
                    "with_execution_id": {"type": "boolean", "default": false},
                    "default": {"type": "string", "description": "The root path when a run gives none, e.g. /bucket/folder/"}
                }
            }));
    defs.insert("placeholder".into(), json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "placeholder_type"],
                "description": "wf.Placeholder. An OBSPlaceholder is placeholder_type STR with placeholder_format obs and object_type.",
                "properties": {
                    "name": {"$ref": "#/$defs/name"},
                    "placeholder_type": {"enum": ["INT", "STR", "BOOL", "FLOAT", "ENUM", "JSON", "LIST"]},
                    "default": {"description": "Of placeholder_type (ENUM: one of enum_list; LIST: of placeholder_format elements)."},
                    "placeholder_format": {"type": "string", "description": "A UI hint (obs, flavor, train_flavor, swr, …); for LIST the element type: str, int, float, bool."},
                    "delay": {"type": "boolean", "default": false},
                    "description": {"type": "string"},
                    "enum_list": {"type": "array", "items": {"type": ["string", "number", "boolean"]}},
                    "required": {"type": "boolean", "default": true},
                    "object_type": {"enum": ["file", "directory"]},
                    "constraint": {"type": "object"}
                }
            }));
    defs.insert("step".into(), json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "step_type"],
                "properties": {
                    "name": {"$ref": "#/$defs/name"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "step_type": {"enum": ["wasm", "job", "model", "service", "condition"]},
                    "inputs": {"type": "array", "maxItems": MAX_PORTS, "items": {"$ref": "#/$defs/input"}},
                    "outputs": {"type": "array", "maxItems": MAX_PORTS, "items": {"$ref": "#/$defs/output"}},
                    "properties": {"type": "object"},
                    "policy": {"$ref": "#/$defs/step_policy"},
                    "depend_steps": {"$ref": "#/$defs/names"}
                },
                "allOf": [
                    {"if": {"properties": {"step_type": {"const": "wasm"}}},
                     "then": {"properties": {"properties": {"$ref": "#/$defs/wasm_properties"}}, "required": ["properties"]}},
                    {"if": {"properties": {"step_type": {"const": "condition"}}},
                     "then": {"properties": {"properties": {"$ref": "#/$defs/condition_properties"}}, "required": ["properties"]}}
                ]
            }));
    defs.insert(
        "wasm_properties".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["plugin"],
            "properties": {
                "plugin": {"type": "string"},
                "version": {"type": "string"},
                "parameters": {"type": "object"},
                "grants": {"type": "array", "items": {
                    "type": "object", "additionalProperties": false, "required": ["path"],
                    "properties": {"path": {}, "write": {"type": "boolean", "default": false}}
                }}
            }
        }),
    );
    defs.insert("condition_properties".into(), json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["conditions"],
                "properties": {
                    "conditions": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/condition"}},
                    "if_then_steps": {"$ref": "#/$defs/names"},
                    "else_then_steps": {"$ref": "#/$defs/names"}
                }
            }));
    defs.insert(
        "condition".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["condition_type", "left", "right"],
            "properties": {
                "condition_type": {"enum": ["EQ", "GT", "GTE", "IN", "LT", "LTE", "NOT", "OR"]},
                "left": {"$ref": "#/$defs/operand"},
                "right": {"$ref": "#/$defs/operand"}
            }
        }),
    );
    defs.insert("operand".into(), json!({
                "description": "A literal, a nested condition, {\"$placeholder\": name} or {\"$metric\": {step, output, json_key}}.",
                "anyOf": [
                    {"$ref": "#/$defs/condition"},
                    {"$ref": "#/$defs/placeholder_ref"},
                    {"$ref": "#/$defs/metric_ref"},
                    {"not": {"type": "object"}},
                    {"type": "object", "propertyNames": {"not": {"pattern": "^\\$"}}}
                ]
            }));
    defs.insert(
        "input".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "data"],
            "properties": {
                "name": {"$ref": "#/$defs/name"},
                "data": {"$ref": "#/$defs/data"}
            }
        }),
    );
    defs.insert("output".into(), json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": {"$ref": "#/$defs/name"},
                    "obs_config": {
                        "type": "object", "additionalProperties": false, "required": ["obs_path"],
                        "properties": {"obs_path": {"$ref": "#/$defs/data"}, "metric_file": {"$ref": "#/$defs/data"}}
                    },
                    "metrics_config": {
                        "type": "object", "additionalProperties": false, "required": ["metric_files"],
                        "properties": {
                            "metric_files": {"type": "array", "items": {"$ref": "#/$defs/data"}},
                            "realtime_visualization": {"type": "boolean", "default": false},
                            "visualization": {"type": "boolean", "default": true}
                        }
                    },
                    "model_config": {"type": "object"},
                    "service_config": {"type": "object"}
                }
            }));
    defs.insert(
        "step_policy".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "poll_interval_seconds": {"type": ["integer", "string"], "default": 1},
                "max_execution_minutes": {"type": ["integer", "string"], "default": 10080},
                "skip_conditions": {"type": "array", "items": {"$ref": "#/$defs/condition"}}
            }
        }),
    );
    defs.insert("policy".into(), json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "scenes": {"type": "array", "items": {
                        "type": "object", "additionalProperties": false,
                        "required": ["scene_name", "scene_steps"],
                        "properties": {
                            "scene_name": {"type": "string", "maxLength": MAX_NAME},
                            "scene_steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/name"}}
                        }
                    }}
                }
            }));
    defs.insert(
        "data".into(),
        json!({
            "description": "A literal (a path, a value) or a reference.",
            "anyOf": [
                {"$ref": "#/$defs/placeholder_ref"},
                {"$ref": "#/$defs/output_ref"},
                {"$ref": "#/$defs/select_ref"},
                {"$ref": "#/$defs/storage_ref"},
                {"not": {"type": "object"}},
                {"type": "object", "propertyNames": {"not": {"pattern": "^\\$"}}}
            ]
        }),
    );
    defs.insert(
        "placeholder_ref".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["$placeholder"],
            "properties": {"$placeholder": {"$ref": "#/$defs/name"}}
        }),
    );
    defs.insert(
        "output_value".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["step", "output"],
            "properties": {
                "step": {"$ref": "#/$defs/name"},
                "output": {"$ref": "#/$defs/name"},
                "variable": {"type": "string"}
            }
        }),
    );
    defs.insert(
        "output_ref".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["$output"],
            "properties": {"$output": {"$ref": "#/$defs/output_value"}}
        }),
    );
    defs.insert("select_ref".into(), json!({
                "type": "object", "additionalProperties": false, "required": ["$select"],
                "properties": {"$select": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/output_ref"}}}
            }));
    defs.insert(
        "storage_ref".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["$storage"],
            "properties": {
                "$storage": {"$ref": "#/$defs/name"},
                "join": {"type": "string"},
                "create_dir": {"type": "boolean"},
                "with_execution_id": {"type": "boolean"}
            }
        }),
    );
    defs.insert(
        "metric_ref".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["$metric"],
            "properties": {"$metric": {
                "type": "object", "additionalProperties": false,
                "required": ["step", "output", "json_key"],
                "properties": {
                    "step": {"$ref": "#/$defs/name"},
                    "output": {"$ref": "#/$defs/name"},
                    "json_key": {"type": "string"}
                }
            }}
        }),
    );
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Atelier workflow definition",
        "description": "A workflow (spec/workflow.md §2.19): steps in a DAG with parameters, storages and branches. JSON or YAML. See docs/workflows.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "steps"],
        "properties": {
            "name": {"$ref": "#/$defs/name"},
            "desc": {"type": "string", "maxLength": MAX_DESC},
            "storages": {"type": "array", "maxItems": MAX_STORAGES, "items": {"$ref": "#/$defs/storage"}},
            "parameters": {"type": "array", "maxItems": MAX_PARAMETERS, "items": {"$ref": "#/$defs/placeholder"}},
            "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": {"$ref": "#/$defs/step"}},
            "policy": {"$ref": "#/$defs/policy"}
        }
    });
    if let Value::Object(m) = &mut schema {
        m.insert("$defs".into(), Value::Object(defs));
    }
    schema
}

/// The schema as the checked-in file holds it (pretty, with a final newline).
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_published_schema_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workflow.schema.json");
        let want = json_schema_text();
        if std::env::var_os("ATELIER_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/workflow.schema.json is stale: run ATELIER_WRITE_SCHEMA=1 cargo test -p \
             atelier-gateway --lib workflows::schema"
        );
    }

    /// Every field the schema names is a field the parser reads: a definition using them
    /// all parses.
    #[test]
    fn a_definition_using_every_field_parses() {
        let doc = json!({
            "name": "all-fields", "desc": "d",
            "storages": [{"name": "out", "title": "t", "description": "d", "create_dir": true,
                          "with_execution_id": true, "default": "/bkt/root/"}],
            "parameters": [
                {"name": "p", "placeholder_type": "ENUM", "default": "a", "placeholder_format": "x",
                 "delay": false, "description": "d", "enum_list": ["a", "b"], "required": true,
                 "constraint": {}},
                {"name": "data", "placeholder_type": "STR", "placeholder_format": "obs",
                 "object_type": "directory"}
            ],
            "steps": [
                {"name": "prep", "title": "t", "description": "d", "step_type": "wasm",
                 "inputs": [{"name": "raw", "data": {"$placeholder": "data"}}],
                 "outputs": [{"name": "clean",
                     "obs_config": {"obs_path": {"$storage": "out", "join": "clean/", "create_dir": true, "with_execution_id": true},
                                    "metric_file": "m.json"},
                     "metrics_config": {"metric_files": [{"$storage": "out", "join": "m.json", "create_dir": false, "with_execution_id": false}],
                                        "realtime_visualization": false, "visualization": true},
                     "model_config": {}, "service_config": {}}],
                 "properties": {"plugin": "prep", "version": "1.0.0", "parameters": {"k": {"$placeholder": "p"}},
                                "grants": [{"path": {"$storage": "out", "join": "x/", "create_dir": false, "with_execution_id": false}, "write": true}]},
                 "policy": {"poll_interval_seconds": 1, "max_execution_minutes": "60", "skip_conditions": []},
                 "depend_steps": []},
                {"name": "check", "step_type": "condition", "depend_steps": "prep",
                 "properties": {"conditions": [{"condition_type": "LT",
                     "left": {"$metric": {"step": "prep", "output": "clean", "json_key": "acc"}}, "right": 0.5}],
                     "if_then_steps": "a", "else_then_steps": ["b"]}},
                {"name": "a", "step_type": "job", "depend_steps": ["check"],
                 "properties": {"inputs": [{"name": "d", "path": {"$output": {"step": "prep", "output": "clean"}}}]}},
                {"name": "b", "step_type": "model", "depend_steps": ["check"], "properties": {}},
                {"name": "c", "step_type": "service", "depend_steps": ["a", "b"],
                 "properties": {"x": {"$select": [{"$output": {"step": "prep", "output": "clean"}},
                                                  {"$output": {"step": "prep", "output": "clean", "variable": "v"}}]}}}
            ],
            "policy": {"scenes": [{"scene_name": "s", "scene_steps": ["prep"]}]}
        });
        let wf = crate::workflows::load(doc.to_string().as_bytes(), crate::workflows::Format::Json);
        assert!(wf.is_ok(), "{wf:?}");
    }
}
