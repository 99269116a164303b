//! CSV rows into JSON requests (seed 9.5 "Mapping Relationship"): a CSV column index per
//! field of the model's request schema (`apis[].request.data`); each row becomes one
//! request, each mapped cell typed by its field's schema (`number`, `integer`, `boolean`,
//! `string`). An index of -1, or one past the row's last column, leaves the field out.
//!
//! A field is named by its leaf name (`input_1`: the one property of that name in the
//! schema, arrays on the way taking one element, as the seed's `req_data`) or by a JSON
//! pointer (`/instances/0/2`: any place, array positions included).
//!
//! ```text
//! schema data.req_data[].{input_1..input_4: number}, {input_1: 0, …, input_4: 3}
//! 5.1,3.5,1.4,0.2  ─►  {"data":{"req_data":[{"input_1":5.1,"input_2":3.5,"input_3":1.4,"input_4":0.2}]}}
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Array positions a pointer may name (a request is one row: a few columns).
const MAX_POSITION: usize = 1023;

/// The type of a mapped field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    Number,
    Integer,
    Boolean,
    String,
}

impl Leaf {
    fn of(schema: &Value) -> Option<Leaf> {
        match schema.get("type").and_then(Value::as_str) {
            Some("number") => Some(Leaf::Number),
            Some("integer") => Some(Leaf::Integer),
            Some("boolean") => Some(Leaf::Boolean),
            Some("string") => Some(Leaf::String),
            _ => None,
        }
    }

    fn value(self, cell: &str) -> Result<Value, String> {
        let t = cell.trim();
        match self {
            Leaf::String => Ok(Value::String(cell.to_string())),
            Leaf::Number => t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{cell:?} is not a number")),
            Leaf::Integer => t
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{cell:?} is not an integer")),
            Leaf::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("{cell:?} is not a boolean (true or false)")),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Position(usize),
}

/// One mapped field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    /// As the mapping named it (for messages).
    name: String,
    path: Vec<Step>,
    leaf: Leaf,
    /// The CSV column; none: left out (-1).
    column: Option<usize>,
}

/// A mapping checked against a request schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    fields: Vec<Field>,
}

impl Mapping {
    /// Checks `mapping` (field → column index) against the request `schema`; a refusal
    /// names the field.
    pub fn resolve(schema: &Value, mapping: &BTreeMap<String, i64>) -> Result<Mapping, String> {
        if mapping.is_empty() {
            return Err("mapping: give at least one field".into());
        }
        let mut fields = Vec::with_capacity(mapping.len());
        for (name, index) in mapping {
            let column = match *index {
                -1 => None,
                i if i >= 0 => Some(i as usize),
                i => {
                    return Err(format!(
                        "mapping.{name}: {i}; a column index is 0 or more (-1 leaves the field out)"
                    ));
                }
            };
            let (path, leaf) = if let Some(pointer) = name.strip_prefix('/') {
                by_pointer(schema, pointer).map_err(|e| format!("mapping.{name}: {e}"))?
            } else {
                let mut found = Vec::new();
                leaves_named(schema, name, &mut Vec::new(), &mut found);
                match found.len() {
                    1 => found.remove(0),
                    0 => {
                        return Err(format!(
                            "mapping.{name}: the model's request schema has no field {name:?} of type number, integer, boolean or string"
                        ));
                    }
                    n => {
                        return Err(format!(
                            "mapping.{name}: {n} fields of the request schema are named {name:?}; name it by its JSON pointer (/a/0/{name})"
                        ));
                    }
                }
            };
            fields.push(Field {
                name: name.clone(),
                path,
                leaf,
                column,
            });
        }
        Ok(Mapping { fields })
    }

    /// The request of one CSV row.
    pub fn request(&self, row: &[String]) -> Result<Value, String> {
        let mut out = Value::Object(Map::new());
        for f in &self.fields {
            let Some(cell) = f.column.and_then(|c| row.get(c)) else {
                continue;
            };
            let value = f.leaf.value(cell).map_err(|e| {
                format!(
                    "column {} for {}: {e}",
                    f.column.unwrap_or_default(),
                    f.name
                )
            })?;
            put(&mut out, &f.path, value);
        }
        Ok(out)
    }
}

/// `value` at `path` in `root`, making the objects and arrays on the way (array gaps
/// filled with null).
fn put(root: &mut Value, path: &[Step], value: Value) {
    let mut at = root;
    for step in path {
        at = match step {
            Step::Key(k) => {
                if !at.is_object() {
                    *at = Value::Object(Map::new());
                }
                let Value::Object(m) = at else { return };
                m.entry(k.clone()).or_insert(Value::Null)
            }
            Step::Position(i) => {
                if !at.is_array() {
                    *at = Value::Array(Vec::new());
                }
                let Value::Array(a) = at else { return };
                if a.len() <= *i {
                    a.resize(i + 1, Value::Null);
                }
                &mut a[*i]
            }
        };
    }
    *at = value;
}

/// The schema of an array's element `i`: `items` as one schema or the seed's list form.
fn item(schema: &Value, i: usize) -> Option<&Value> {
    match schema.get("items")? {
        Value::Array(list) => list.get(i).or_else(|| list.first()),
        one => Some(one),
    }
}

fn is_array(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("array") || schema.get("items").is_some()
}

fn by_pointer(schema: &Value, pointer: &str) -> Result<(Vec<Step>, Leaf), String> {
    let mut at = schema;
    let mut path = Vec::new();
    for raw in pointer.split('/') {
        let part = raw.replace("~1", "/").replace("~0", "~");
        if is_array(at) {
            let i: usize = part
                .parse()
                .ok()
                .filter(|i| *i <= MAX_POSITION)
                .ok_or_else(|| format!("{part:?} is not an array position (0-{MAX_POSITION})"))?;
            at = item(at, i).ok_or("the array's schema has no items")?;
            path.push(Step::Position(i));
        } else {
            at = at
                .get("properties")
                .and_then(|p| p.get(&part))
                .ok_or_else(|| format!("the request schema has no field {part:?} there"))?;
            path.push(Step::Key(part));
        }
    }
    let leaf = Leaf::of(at)
        .ok_or("the field is not of type number, integer, boolean or string".to_string())?;
    Ok((path, leaf))
}

/// Every scalar property named `name`, arrays on the way taking their first element.
fn leaves_named(
    schema: &Value,
    name: &str,
    path: &mut Vec<Step>,
    found: &mut Vec<(Vec<Step>, Leaf)>,
) {
    if path.len() > 32 {
        return;
    }
    if is_array(schema) {
        if let Some(inner) = item(schema, 0) {
            path.push(Step::Position(0));
            leaves_named(inner, name, path, found);
            path.pop();
        }
        return;
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (k, sub) in props {
        path.push(Step::Key(k.clone()));
        if k == name
            && let Some(leaf) = Leaf::of(sub)
        {
            found.push((path.clone(), leaf));
        } else {
            leaves_named(sub, name, path, found);
        }
        path.pop();
    }
}

/// The rows of a CSV text (RFC 4180: comma-separated, `"` quotes a field, `""` is a quote
/// in one, a quoted field may hold commas and line breaks); blank lines are skipped, a
/// leading byte order mark dropped. No header row: every row is data.
pub fn csv_rows(text: &str) -> Result<Vec<Vec<String>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let end_row = |row: &mut Vec<String>, field: &mut String, rows: &mut Vec<Vec<String>>| {
        row.push(std::mem::take(field));
        let r = std::mem::take(row);
        if !(r.len() == 1 && r[0].is_empty()) {
            rows.push(r);
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_row(&mut row, &mut field, &mut rows);
                was_quoted = false;
                line += 1;
            }
            _ if was_quoted => {
                return Err(format!("line {line}: text after a closing quote"));
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: a quoted field is not closed"));
    }
    if !field.is_empty() || !row.is_empty() {
        end_row(&mut row, &mut field, &mut rows);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's example schema: `data.req_data[].{input_1..input_4: number}` (with the
    /// seed's list form of `items`).
    fn seed_schema() -> Value {
        json!({"type": "object", "properties": {"data": {"type": "object", "properties": {
            "req_data": {"type": "array", "items": [{"type": "object", "properties": {
                "input_1": {"type": "number"}, "input_2": {"type": "number"},
                "input_3": {"type": "number"}, "input_4": {"type": "number"}}}]}}}}})
    }

    fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn the_seeds_example_row_becomes_the_seeds_request() {
        let m = Mapping::resolve(
            &seed_schema(),
            &map(&[
                ("input_1", 0),
                ("input_2", 1),
                ("input_3", 2),
                ("input_4", 3),
            ]),
        )
        .unwrap();
        let rows = csv_rows("5.1,3.5,1.4,0.2\n").unwrap();
        let req = m.request(&rows[0]).unwrap();
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"data":{"req_data":[{"input_1":5.1,"input_2":3.5,"input_3":1.4,"input_4":0.2}]}}"#
        );
    }

    #[test]
    fn index_minus_one_or_past_the_row_leaves_the_field_out() {
        let m = Mapping::resolve(
            &seed_schema(),
            &map(&[("input_1", 0), ("input_2", -1), ("input_3", 9)]),
        )
        .unwrap();
        let req = m.request(&row(&["5.1", "3.5", "1.4"])).unwrap();
        assert_eq!(req, json!({"data": {"req_data": [{"input_1": 5.1}]}}));
    }

    #[test]
    fn cells_are_typed_by_the_schema() {
        let schema = json!({"properties": {"n": {"type": "integer"}, "b": {"type": "boolean"},
            "s": {"type": "string"}, "f": {"type": "number"}}});
        let m = Mapping::resolve(&schema, &map(&[("n", 0), ("b", 1), ("s", 2), ("f", 3)])).unwrap();
        assert_eq!(
            m.request(&row(&[" 7", "TRUE", " a b", "1e3"])).unwrap(),
            json!({"n": 7, "b": true, "s": " a b", "f": 1000.0})
        );
        for (cells, says) in [
            (
                ["x", "true", "", "1"],
                "column 0 for n: \"x\" is not an integer",
            ),
            (
                ["1", "yes", "", "1"],
                "column 1 for b: \"yes\" is not a boolean (true or false)",
            ),
            (
                ["1", "0", "", "NaN"],
                "column 3 for f: \"NaN\" is not a number",
            ),
        ] {
            assert_eq!(m.request(&row(&cells)).unwrap_err(), says);
        }
    }

    #[test]
    fn pointers_reach_array_positions() {
        // The iris example's schema: {"instances": [[4 numbers]]}.
        let schema = json!({"type": "object", "properties": {"instances": {"type": "array",
            "items": {"type": "array", "items": {"type": "number"}}}, "top_k": {"type": "integer"}}});
        let m = Mapping::resolve(
            &schema,
            &map(&[
                ("/instances/0/0", 0),
                ("/instances/0/1", 1),
                ("/instances/0/2", 2),
                ("/instances/0/3", 3),
                ("top_k", 4),
            ]),
        )
        .unwrap();
        assert_eq!(
            m.request(&row(&["5.1", "3.5", "1.4", "0.2", "2"])).unwrap(),
            json!({"instances": [[5.1, 3.5, 1.4, 0.2]], "top_k": 2})
        );
    }

    #[test]
    fn bad_mappings_name_the_field() {
        let s = seed_schema();
        for (m, says) in [
            (
                map(&[("input_9", 0)]),
                "mapping.input_9: the model's request schema has no field",
            ),
            (
                map(&[("input_1", -2)]),
                "mapping.input_1: -2; a column index is 0 or more",
            ),
            (
                map(&[("/data/nope", 0)]),
                "mapping./data/nope: the request schema has no field \"nope\"",
            ),
            (
                map(&[("/data/req_data/x", 0)]),
                "mapping./data/req_data/x: \"x\" is not an array position",
            ),
            (
                map(&[("/data", 0)]),
                "mapping./data: the field is not of type number",
            ),
            (map(&[]), "mapping: give at least one field"),
        ] {
            let e = Mapping::resolve(&s, &m).unwrap_err();
            assert!(e.starts_with(says), "{m:?}: {e}");
        }
        let twice = json!({"properties": {"a": {"properties": {"x": {"type": "number"}}},
            "b": {"properties": {"x": {"type": "number"}}}}});
        let e = Mapping::resolve(&twice, &map(&[("x", 0)])).unwrap_err();
        assert!(
            e.contains("2 fields of the request schema are named \"x\""),
            "{e}"
        );
    }

    #[test]
    fn csv_fields_may_be_quoted() {
        assert_eq!(
            csv_rows("\u{feff}a,\"b,c\",\"say \"\"hi\"\"\"\r\n\n\"two\nlines\",,x\n3").unwrap(),
            vec![
                row(&["a", "b,c", "say \"hi\""]),
                row(&["two\nlines", "", "x"]),
                row(&["3"]),
            ]
        );
        assert_eq!(csv_rows("").unwrap(), Vec::<Vec<String>>::new());
        assert!(csv_rows("a,\"b\n").unwrap_err().contains("not closed"));
        assert!(csv_rows("a,b\"c\n").unwrap_err().starts_with("line 1"));
        assert!(
            csv_rows("x\n\"a\"b\n")
                .unwrap_err()
                .starts_with("line 2: text after")
        );
    }
}
