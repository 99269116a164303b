//! What an algorithm declares (spec/training.md §2.1, §4): its hyperparameters (name, type,
//! default, range or choices, required, description) and its input and output channels,
//! checked by the seed's rules. Every refusal names its field (`hyperparameters[2].default`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// At most this many hyperparameters (the seed's template import limit, T8-16).
pub const MAX_HYPERPARAMETERS: usize = 100;
/// At most this many input, and as many output, channels.
pub const MAX_CHANNELS: usize = 20;
/// At most this many choices of one hyperparameter.
pub const MAX_CHOICES: usize = 100;
/// Bytes of a description (an algorithm's, a channel's, a hyperparameter's).
pub const MAX_DESCRIPTION: usize = 256;
/// Bytes of a string default or choice.
pub const MAX_TEXT_VALUE: usize = 256;

/// A hyperparameter's type (seed T8-12). Requests may also write `STR`, `INT`, `FLOAT`,
/// `BOOL`, or the WIT names `text`, `integer`, `float`, `boolean`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HpType {
    String,
    Integer,
    Float,
    Boolean,
}

impl HpType {
    pub fn parse(s: &str) -> Option<HpType> {
        match s.to_ascii_lowercase().as_str() {
            "string" | "str" | "text" => Some(HpType::String),
            "integer" | "int" => Some(HpType::Integer),
            "float" => Some(HpType::Float),
            "boolean" | "bool" => Some(HpType::Boolean),
            _ => None,
        }
    }

    fn numeric(self) -> bool {
        matches!(self, HpType::Integer | HpType::Float)
    }
}

impl<'de> Deserialize<'de> for HpType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HpType::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown type {:?}; the types are String, Integer, Float, Boolean (or STR, INT, FLOAT, BOOL)",
                s.chars().take(40).collect::<String>()
            ))
        })
    }
}

/// A hyperparameter as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameter {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HpType,
    /// Used by jobs that do not set it: a JSON number, string or boolean of the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Inclusive bounds, Integer and Float only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(f64, f64)>,
    /// The values allowed (of the type), String, Integer and Float only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Value>,
    /// Yes: a job cannot leave it out.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: String,
}

/// Where a job's code finds a channel's local path (seed T8-10 "Obtained from").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObtainedFrom {
    /// `--<name>=<path>` on the command line.
    #[default]
    Hyperparameters,
    /// `<name>=<path>` in the environment.
    EnvironmentVariables,
}

/// An input or output channel (seed T8-10, T8-11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The parameter name the code parses (`data_url`, `train_url`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub obtained_from: ObtainedFrom,
}

/// 1-64 of `A-Z a-z 0-9 _ -` (hyperparameter and channel names, seed T8-12).
pub fn check_name(at: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{at}: {:?} must be 1-64 characters", shorten(name)));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "{at}: {:?} holds {c:?}; use letters, digits, '-' and '_'",
            shorten(name)
        ));
    }
    Ok(())
}

/// Letters, digits, spaces, `-`, `_`, `,`, `.` (a hyperparameter's description, T8-12).
pub fn check_hp_description(at: &str, d: &str) -> Result<(), String> {
    check_description(at, d)?;
    if let Some(c) = d
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | ',' | '.')))
    {
        return Err(format!(
            "{at}: {c:?} is not allowed; use letters, digits, spaces and - _ , ."
        ));
    }
    Ok(())
}

/// At most [`MAX_DESCRIPTION`] bytes, no control characters.
pub fn check_description(at: &str, d: &str) -> Result<(), String> {
    if d.len() > MAX_DESCRIPTION {
        return Err(format!("{at}: at most {MAX_DESCRIPTION} bytes"));
    }
    if d.chars().any(char::is_control) {
        return Err(format!("{at}: control characters are not allowed"));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    s.chars().take(70).collect()
}

/// Whether `v` is a value of type `kind`: the number for Integer and Float.
fn typed(kind: HpType, v: &Value) -> Result<Option<f64>, String> {
    match (kind, v) {
        (HpType::String, Value::String(s)) => {
            if s.len() > MAX_TEXT_VALUE {
                Err(format!("at most {MAX_TEXT_VALUE} bytes"))
            } else if s.chars().any(char::is_control) {
                Err("control characters are not allowed".into())
            } else {
                Ok(None)
            }
        }
        (HpType::Integer, Value::Number(n)) if n.is_i64() => Ok(n.as_i64().map(|i| i as f64)),
        (HpType::Float, Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err("not a finite number".into()),
        },
        (HpType::Boolean, Value::Bool(_)) => Ok(None),
        (kind, v) => Err(format!(
            "{v} is not a{} {kind:?}",
            match kind {
                HpType::Integer => "n",
                _ => "",
            }
        )),
    }
}

/// Checks hyperparameters (seed T8-12, §4): names, count, unique names, description
/// charset, type-correct default within the range and among the choices, a range only on
/// numbers with low ≤ high, choices of the type.
pub fn check_hyperparameters(hps: &[Hyperparameter]) -> Result<(), String> {
    if hps.len() > MAX_HYPERPARAMETERS {
        return Err(format!(
            "hyperparameters: {} given; at most {MAX_HYPERPARAMETERS}",
            hps.len()
        ));
    }
    for (i, h) in hps.iter().enumerate() {
        let at = format!("hyperparameters[{i}]");
        check_name(&format!("{at}.name"), &h.name)?;
        if hps[..i].iter().any(|o| o.name == h.name) {
            return Err(format!("{at}.name: {:?} is given twice", h.name));
        }
        check_hp_description(&format!("{at}.description"), &h.description)?;
        if let Some((low, high)) = h.range {
            if !h.kind.numeric() {
                return Err(format!(
                    "{at}.range: only Integer and Float hyperparameters have a range ({} is {:?})",
                    h.name, h.kind
                ));
            }
            if !low.is_finite() || !high.is_finite() || low > high {
                return Err(format!(
                    "{at}.range: [{low}, {high}] must be two finite numbers, low ≤ high"
                ));
            }
            if !h.choices.is_empty() {
                return Err(format!("{at}.choices: give a range or choices, not both"));
            }
        }
        if !h.choices.is_empty() && h.kind == HpType::Boolean {
            return Err(format!(
                "{at}.choices: a Boolean hyperparameter has no choices"
            ));
        }
        if h.choices.len() > MAX_CHOICES {
            return Err(format!("{at}.choices: at most {MAX_CHOICES}"));
        }
        for (j, c) in h.choices.iter().enumerate() {
            typed(h.kind, c).map_err(|e| format!("{at}.choices[{j}]: {e}"))?;
            if h.choices[..j].contains(c) {
                return Err(format!("{at}.choices[{j}]: {c} is given twice"));
            }
        }
        if let Some(d) = &h.default {
            let n = typed(h.kind, d).map_err(|e| format!("{at}.default: {e}"))?;
            if let (Some(n), Some((low, high))) = (n, h.range)
                && !(low..=high).contains(&n)
            {
                return Err(format!(
                    "{at}.default: {d} is outside the range [{low}, {high}]"
                ));
            }
            if !h.choices.is_empty() && !h.choices.iter().any(|c| same(h.kind, c, d)) {
                return Err(format!("{at}.default: {d} is not one of the choices"));
            }
        }
    }
    Ok(())
}

/// A job's value `v` for the hyperparameter `h`: of its type, within its range, one of
/// its choices. The refusal names `at`.
pub fn check_value(at: &str, h: &Hyperparameter, v: &Value) -> Result<(), String> {
    let n = typed(h.kind, v).map_err(|e| format!("{at}: {e}"))?;
    if let (Some(n), Some((low, high))) = (n, h.range)
        && !(low..=high).contains(&n)
    {
        return Err(format!("{at}: {v} is outside the range [{low}, {high}]"));
    }
    if !h.choices.is_empty() && !h.choices.iter().any(|c| same(h.kind, c, v)) {
        return Err(format!(
            "{at}: {v} is not one of the choices ({})",
            h.choices
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// Equal values of a type (1 and 1.0 are the same Float).
fn same(kind: HpType, a: &Value, b: &Value) -> bool {
    match kind {
        HpType::Float => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

/// Checks input and output channels: names, counts, descriptions, and no name given twice
/// (among both lists and the hyperparameters: all of them become `--name=` arguments).
pub fn check_channels(
    inputs: &[Channel],
    outputs: &[Channel],
    hps: &[Hyperparameter],
) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for (field, list) in [("inputs", inputs), ("outputs", outputs)] {
        if list.len() > MAX_CHANNELS {
            return Err(format!(
                "{field}: {} given; at most {MAX_CHANNELS}",
                list.len()
            ));
        }
        for (i, c) in list.iter().enumerate() {
            let at = format!("{field}[{i}]");
            check_name(&format!("{at}.name"), &c.name)?;
            check_description(&format!("{at}.description"), &c.description)?;
            if seen.contains(&c.name.as_str()) {
                return Err(format!("{at}.name: {:?} names another channel too", c.name));
            }
            if hps.iter().any(|h| h.name == c.name) {
                return Err(format!(
                    "{at}.name: {:?} is also a hyperparameter's name",
                    c.name
                ));
            }
            seen.push(&c.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hp(v: Value) -> Hyperparameter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_seeds_examples() {
        // AC-02: `lr rate` and `x!` refused; `learning_rate`, `Learning rate, step-1.` fine.
        let ok = hp(
            json!({"name": "learning_rate", "type": "FLOAT", "default": 0.01,
            "range": [0.0, 1.0], "description": "Learning rate, step-1."}),
        );
        check_hyperparameters(std::slice::from_ref(&ok)).unwrap();
        let mut bad = ok.clone();
        bad.name = "lr rate".into();
        assert!(
            check_hyperparameters(&[bad])
                .unwrap_err()
                .contains("hyperparameters[0].name")
        );
        let mut bad = ok.clone();
        bad.description = "x!".into();
        assert!(
            check_hyperparameters(&[bad])
                .unwrap_err()
                .contains("hyperparameters[0].description")
        );
        let mut long = ok;
        long.name = "a".repeat(65);
        assert!(check_hyperparameters(std::slice::from_ref(&long)).is_err());
        long.name = "a".repeat(64);
        check_hyperparameters(&[long]).unwrap();
    }

    #[test]
    fn defaults_follow_type_range_and_choices() {
        let cases = [
            (
                json!({"name": "e", "type": "INT", "default": 1.5}),
                Some("default"),
            ),
            (
                json!({"name": "e", "type": "INT", "default": 11, "range": [1, 10]}),
                Some("outside"),
            ),
            (
                json!({"name": "e", "type": "INT", "default": 10, "range": [1, 10]}),
                None,
            ),
            (
                json!({"name": "e", "type": "Float", "default": 1, "range": [0, 2]}),
                None,
            ),
            (
                json!({"name": "o", "type": "STR", "default": "adam", "choices": ["sgd"]}),
                Some("choices"),
            ),
            (
                json!({"name": "o", "type": "STR", "default": "sgd", "choices": ["sgd", "adam"]}),
                None,
            ),
            (
                json!({"name": "o", "type": "STR", "range": [0, 1]}),
                Some("range"),
            ),
            (
                json!({"name": "b", "type": "BOOL", "default": "yes"}),
                Some("default"),
            ),
            (
                json!({"name": "b", "type": "BOOL", "choices": [true]}),
                Some("choices"),
            ),
            (
                json!({"name": "r", "type": "Float", "range": [2, 1]}),
                Some("range"),
            ),
            (
                json!({"name": "r", "type": "Float", "range": [0, 1], "choices": [0.5]}),
                Some("choices"),
            ),
            (
                json!({"name": "c", "type": "Integer", "choices": [1, 1]}),
                Some("twice"),
            ),
        ];
        for (v, want) in cases {
            let r = check_hyperparameters(&[hp(v.clone())]);
            match want {
                None => assert!(r.is_ok(), "{v}: {r:?}"),
                Some(w) => assert!(r.as_ref().is_err_and(|e| e.contains(w)), "{v}: {r:?}"),
            }
        }
        assert!(
            serde_json::from_value::<Hyperparameter>(json!({"name": "x", "type": "complex"}))
                .is_err()
        );
    }

    #[test]
    fn counts_and_clashes() {
        let many: Vec<_> = (0..101)
            .map(|i| hp(json!({"name": format!("h{i}"), "type": "INT"})))
            .collect();
        assert!(
            check_hyperparameters(&many)
                .unwrap_err()
                .contains("at most 100")
        );
        check_hyperparameters(&many[..100]).unwrap();
        let twice = [
            hp(json!({"name": "a", "type": "INT"})),
            hp(json!({"name": "a", "type": "INT"})),
        ];
        assert!(
            check_hyperparameters(&twice)
                .unwrap_err()
                .contains("hyperparameters[1].name")
        );
        let ch = |n: &str| Channel {
            name: n.into(),
            description: String::new(),
            obtained_from: ObtainedFrom::Hyperparameters,
        };
        check_channels(&[ch("data_url")], &[ch("train_url")], &[]).unwrap();
        let e = check_channels(&[ch("data_url")], &[ch("data_url")], &[]).unwrap_err();
        assert!(e.contains("outputs[0].name"), "{e}");
        let e = check_channels(&[ch("a")], &[], &[hp(json!({"name": "a", "type": "INT"}))])
            .unwrap_err();
        assert!(e.contains("inputs[0].name"), "{e}");
        let e = check_channels(&[ch("bad name")], &[], &[]).unwrap_err();
        assert!(e.contains("inputs[0].name"), "{e}");
    }
}
