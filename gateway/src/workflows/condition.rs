//! Conditions (spec/workflow.md §2.14, §1.8): the seed's `Condition(condition_type, left,
//! right)` with `EQ GT GTE IN LT LTE NOT OR`, over literals, parameters (`$placeholder`),
//! metrics of an ancestor step (`$metric`, the seed's `MetricInfo`) and nested conditions;
//! evaluated purely against the facts a caller gives. A list of conditions is AND-ed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A metrics file may be this large (E-20: "≤ 1 MB").
pub const MAX_METRICS_FILE_BYTES: usize = 1 << 20;
/// Conditions nest at most this deep (an `OR` of `OR`s …); deeper is a mistake, not a need.
pub const MAX_CONDITION_DEPTH: usize = 8;

/// The seed's `ConditionTypeEnum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    EQ,
    GT,
    GTE,
    IN,
    LT,
    LTE,
    /// `!=`.
    NOT,
    /// `or`: both sides are conditions (or booleans).
    OR,
}

/// `Condition(condition_type, left, right)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub condition_type: ConditionType,
    pub left: Operand,
    pub right: Operand,
}

/// `MetricInfo(input_data, json_key)`: the float metric `json_key` of the metrics file an
/// ancestor step wrote for its output `output`. Wire form:
/// `{"$metric": {"step": s, "output": o, "json_key": k}}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricRef {
    pub step: String,
    pub output: String,
    pub json_key: String,
}

/// One side of a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A nested condition (an object with `condition_type`).
    Condition(Box<Condition>),
    /// `{"$placeholder": name}`: a workflow parameter's value.
    Placeholder(String),
    /// `{"$metric": {...}}`.
    Metric(MetricRef),
    /// Anything else: a literal (number, string, bool, list, object without `$` keys).
    Value(Value),
}

impl Operand {
    fn from_value(v: Value) -> Result<Operand, String> {
        let Value::Object(map) = v else {
            return Ok(Operand::Value(v));
        };
        if map.contains_key("condition_type") {
            let c: Condition = serde_json::from_value(Value::Object(map))
                .map_err(|e| format!("a nested condition: {e}"))?;
            return Ok(Operand::Condition(Box::new(c)));
        }
        if let Some(key) = map.keys().find(|k| k.starts_with('$')) {
            if map.len() != 1 {
                return Err(format!("{key} takes no other keys"));
            }
            return match (key.as_str(), map.get(key.as_str())) {
                ("$placeholder", Some(Value::String(n))) => Ok(Operand::Placeholder(n.clone())),
                ("$placeholder", _) => Err("$placeholder takes a parameter name".into()),
                ("$metric", Some(m)) => serde_json::from_value(m.clone())
                    .map(Operand::Metric)
                    .map_err(|e| format!("$metric {{\"step\", \"output\", \"json_key\"}}: {e}")),
                (other, _) => Err(format!(
                    "{other} cannot be a condition operand (use a literal, a nested condition, \
                     $placeholder or $metric)"
                )),
            };
        }
        Ok(Operand::Value(Value::Object(map)))
    }

    fn to_value(&self) -> Value {
        match self {
            Operand::Condition(c) => serde_json::to_value(c).unwrap_or(Value::Null),
            Operand::Placeholder(n) => single("$placeholder", Value::String(n.clone())),
            Operand::Metric(m) => single("$metric", serde_json::to_value(m).unwrap_or(Value::Null)),
            Operand::Value(v) => v.clone(),
        }
    }
}

fn single(key: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_owned(), v);
    Value::Object(m)
}

impl Serialize for Operand {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Operand {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Operand::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Condition {
    /// Every condition nested in this one, this one first, with its depth (1 for this one).
    pub fn walk(&self) -> Vec<(&Condition, usize)> {
        let mut out = Vec::new();
        let mut todo = vec![(self, 1)];
        while let Some((c, depth)) = todo.pop() {
            out.push((c, depth));
            for side in [&c.left, &c.right] {
                if let Operand::Condition(inner) = side {
                    todo.push((inner, depth + 1));
                }
            }
        }
        out
    }

    /// The operands that are not conditions, of this one and the nested ones.
    pub fn leaves(&self) -> Vec<&Operand> {
        self.walk()
            .into_iter()
            .flat_map(|(c, _)| [&c.left, &c.right])
            .filter(|o| !matches!(o, Operand::Condition(_)))
            .collect()
    }
}

/// What conditions are evaluated against: the run's resolved parameters, and the metrics
/// (the caller reads the metrics file, e.g. with [`metric_from_file`]).
pub struct Facts<'a> {
    pub parameters: &'a BTreeMap<String, Value>,
    pub metric: &'a dyn Fn(&MetricRef) -> Result<f64, String>,
}

/// The conditions AND-ed (an empty list is true).
pub fn evaluate_all(conditions: &[Condition], facts: &Facts) -> Result<bool, String> {
    for c in conditions {
        if !evaluate(c, facts)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One condition's value.
pub fn evaluate(c: &Condition, facts: &Facts) -> Result<bool, String> {
    let left = operand(&c.left, facts)?;
    let right = operand(&c.right, facts)?;
    let ordered = |want: fn(std::cmp::Ordering) -> bool| -> Result<bool, String> {
        match (&left, &right) {
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (
                    a.as_f64().unwrap_or(f64::NAN),
                    b.as_f64().unwrap_or(f64::NAN),
                );
                Ok(a.partial_cmp(&b).is_some_and(want))
            }
            (Value::String(a), Value::String(b)) => Ok(want(a.cmp(b))),
            _ => Err(format!(
                "{:?} compares numbers (or strings), not {} and {}",
                c.condition_type,
                brief(&left),
                brief(&right)
            )),
        }
    };
    match c.condition_type {
        ConditionType::EQ => Ok(equal(&left, &right)),
        ConditionType::NOT => Ok(!equal(&left, &right)),
        ConditionType::GT => ordered(|o| o.is_gt()),
        ConditionType::GTE => ordered(|o| o.is_ge()),
        ConditionType::LT => ordered(|o| o.is_lt()),
        ConditionType::LTE => ordered(|o| o.is_le()),
        ConditionType::IN => match (&left, &right) {
            (_, Value::Array(items)) => Ok(items.iter().any(|i| equal(&left, i))),
            (Value::String(needle), Value::String(hay)) => Ok(hay.contains(needle.as_str())),
            (l, Value::Object(m)) if l.is_string() => {
                Ok(m.contains_key(l.as_str().unwrap_or_default()))
            }
            _ => Err(format!(
                "IN looks for the left side in a list (or a string), not in {}",
                brief(&right)
            )),
        },
        ConditionType::OR => match (&left, &right) {
            (Value::Bool(a), Value::Bool(b)) => Ok(*a || *b),
            _ => Err(format!(
                "OR takes two conditions (or booleans), not {} and {}",
                brief(&left),
                brief(&right)
            )),
        },
    }
}

fn operand(o: &Operand, facts: &Facts) -> Result<Value, String> {
    match o {
        Operand::Condition(c) => evaluate(c, facts).map(Value::Bool),
        Operand::Placeholder(name) => match facts.parameters.get(name) {
            Some(v) => Ok(v.clone()),
            None => Err(format!("parameter {name} has no value")),
        },
        Operand::Metric(m) => {
            let v = (facts.metric)(m)?;
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| format!("metric {} is not a finite number", m.json_key))
        }
        Operand::Value(v) => Ok(v.clone()),
    }
}

/// Python's `==`: numbers by value (`1 == 1.0`), everything else structurally.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn brief(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("{kind} ({})", short_json(v))
}

/// A value as JSON, cut to about 40 bytes for a message.
pub(crate) fn short_json(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > 40 {
        let cut = (0..=40)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The float metric `key` of a metrics file (seed 5.3.4.5: a JSON array of
/// `{"key", "title", "type", "data"}`, at most 1 MB); only `"float"` entries
/// (`"data": {"value": x}`) can be used by conditions (E-21).
pub fn metric_from_file(bytes: &[u8], key: &str) -> Result<f64, String> {
    if bytes.len() > MAX_METRICS_FILE_BYTES {
        return Err(format!(
            "the metrics file is {} bytes, over the limit of {MAX_METRICS_FILE_BYTES} (1 MB)",
            bytes.len()
        ));
    }
    let entries: Vec<Value> = serde_json::from_slice(bytes)
        .map_err(|e| format!("the metrics file is not a JSON array of metrics: {e}"))?;
    let entry = entries
        .iter()
        .find(|e| e.get("key").and_then(Value::as_str) == Some(key))
        .ok_or_else(|| format!("the metrics file has no metric with key {key:?}"))?;
    let kind = entry.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "float" {
        return Err(format!(
            "metric {key:?} is of type {kind:?}; conditions can only use \"float\" metrics"
        ));
    }
    entry
        .pointer("/data/value")
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("metric {key:?} has no number at data.value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(v: Value) -> Condition {
        serde_json::from_value(v).unwrap()
    }

    fn eval_with(c: &Condition, params: Value, metric: Option<f64>) -> Result<bool, String> {
        let parameters: BTreeMap<String, Value> = serde_json::from_value(params).unwrap();
        let m = move |_: &MetricRef| metric.ok_or_else(|| "no metric".to_string());
        evaluate(
            c,
            &Facts {
                parameters: &parameters,
                metric: &m,
            },
        )
    }

    #[test]
    fn the_seed_operators_compare_as_python_does() {
        let cases = [
            (
                json!({"condition_type": "EQ", "left": 1, "right": 1.0}),
                true,
            ),
            (
                json!({"condition_type": "EQ", "left": true, "right": true}),
                true,
            ),
            (
                json!({"condition_type": "EQ", "left": "a", "right": "b"}),
                false,
            ),
            (
                json!({"condition_type": "NOT", "left": 1, "right": 1}),
                false,
            ),
            (
                json!({"condition_type": "NOT", "left": 1, "right": 2}),
                true,
            ),
            (
                json!({"condition_type": "GT", "left": 10, "right": 9}),
                true,
            ),
            (
                json!({"condition_type": "GTE", "left": 9, "right": 9}),
                true,
            ),
            (
                json!({"condition_type": "LT", "left": 10, "right": 9}),
                false,
            ),
            (
                json!({"condition_type": "LTE", "left": 0.5, "right": 0.5}),
                true,
            ),
            (
                json!({"condition_type": "IN", "left": "a", "right": ["a", "b"]}),
                true,
            ),
            (
                json!({"condition_type": "IN", "left": 3, "right": [1, 2]}),
                false,
            ),
            (
                json!({"condition_type": "IN", "left": "ell", "right": "hello"}),
                true,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(
                eval_with(&cond(c.clone()), json!({}), None),
                Ok(want),
                "{c}"
            );
        }
    }

    #[test]
    fn or_of_nested_conditions_and_a_list_is_anded_ac31() {
        let or = cond(json!({"condition_type": "OR",
            "left": {"condition_type": "GT", "left": 10, "right": 9},
            "right": {"condition_type": "LT", "left": 10, "right": 9}}));
        let eq = cond(json!({"condition_type": "EQ", "left": true, "right": true}));
        let parameters = BTreeMap::new();
        let m = |_: &MetricRef| Err("none".to_string());
        let facts = Facts {
            parameters: &parameters,
            metric: &m,
        };
        assert_eq!(evaluate_all(&[or.clone(), eq], &facts), Ok(true));
        let ne = cond(json!({"condition_type": "NOT", "left": 1, "right": 1}));
        assert_eq!(evaluate_all(&[or, ne], &facts), Ok(false));
        assert_eq!(evaluate_all(&[], &facts), Ok(true));
    }

    #[test]
    fn parameters_and_metrics_are_looked_up() {
        let c = cond(
            json!({"condition_type": "EQ", "left": {"$placeholder": "left_value"}, "right": true}),
        );
        assert_eq!(eval_with(&c, json!({"left_value": true}), None), Ok(true));
        assert_eq!(eval_with(&c, json!({"left_value": false}), None), Ok(false));
        let err = eval_with(&c, json!({}), None).unwrap_err();
        assert!(err.contains("left_value"), "{err}");
        let lt = cond(json!({"condition_type": "LT",
            "left": {"$metric": {"step": "train", "output": "metrics", "json_key": "accuracy"}},
            "right": 0.5}));
        assert_eq!(eval_with(&lt, json!({}), Some(0.4)), Ok(true));
        assert_eq!(eval_with(&lt, json!({}), Some(0.8)), Ok(false));
        assert_eq!(eval_with(&lt, json!({}), None), Err("no metric".into()));
    }

    #[test]
    fn mismatched_operands_are_errors_naming_them() {
        let c = cond(json!({"condition_type": "GT", "left": "x", "right": 1}));
        let err = eval_with(&c, json!({}), None).unwrap_err();
        assert!(err.contains("GT") && err.contains("a string"), "{err}");
        let c = cond(json!({"condition_type": "OR", "left": 1, "right": true}));
        assert!(eval_with(&c, json!({}), None).unwrap_err().contains("OR"));
    }

    #[test]
    fn operands_round_trip_and_unknown_references_are_refused() {
        let v = json!({"condition_type": "OR",
            "left": {"condition_type": "EQ", "left": {"$placeholder": "p"}, "right": [1, {"k": 2}]},
            "right": {"condition_type": "LT",
                "left": {"$metric": {"step": "s", "output": "o", "json_key": "k"}}, "right": 1}});
        assert_eq!(serde_json::to_value(cond(v.clone())).unwrap(), v);
        let bad = serde_json::from_value::<Condition>(
            json!({"condition_type": "EQ", "left": {"$output": {"step": "s", "output": "o"}}, "right": 1}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("$output cannot be a condition operand"),
            "{bad}"
        );
        assert!(
            serde_json::from_value::<Condition>(
                json!({"condition_type": "XOR", "left": 1, "right": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn metrics_files_give_float_metrics_only_ac29_ac30() {
        let file = json!([
            {"key": "accuracy", "title": "accuracy", "type": "float", "data": {"value": 0.4}},
            {"key": "loss", "title": "loss", "type": "line chart",
             "data": {"x_axis": [{"title": "step", "value": [1, 2]}], "y_axis": [{"title": "v", "value": [0.5, 0.4]}]}}
        ])
        .to_string();
        assert_eq!(metric_from_file(file.as_bytes(), "accuracy"), Ok(0.4));
        let e = metric_from_file(file.as_bytes(), "loss").unwrap_err();
        assert!(e.contains("line chart") && e.contains("float"), "{e}");
        let e = metric_from_file(file.as_bytes(), "f1").unwrap_err();
        assert!(e.contains("no metric with key \"f1\""), "{e}");
        assert!(
            metric_from_file(b"{}", "a")
                .unwrap_err()
                .contains("JSON array")
        );
        let big = vec![b' '; MAX_METRICS_FILE_BYTES + 1];
        assert!(metric_from_file(&big, "a").unwrap_err().contains("1 MB"));
    }

    #[test]
    fn nesting_is_walked_with_depths() {
        let c = cond(json!({"condition_type": "OR",
            "left": {"condition_type": "OR", "left": {"condition_type": "EQ", "left": 1, "right": 1}, "right": false},
            "right": true}));
        let depths: Vec<usize> = c.walk().iter().map(|(_, d)| *d).collect();
        assert_eq!(depths.iter().max(), Some(&3));
        assert_eq!(c.leaves().len(), 4);
    }
}
