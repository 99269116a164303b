//! Writing to stdout/stderr, and pretty-printing the server's JSON without reordering it.

use std::fmt;
use std::io::Write;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::api::CliError;

/// Writes `s` and a newline to stdout. A closed pipe (`atelier nb list | head`) is not an error.
pub fn out(s: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(s.as_bytes());
    if !s.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
}

/// Writes `s` and a newline to stderr.
pub fn err(s: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(s.as_bytes());
    if !s.ends_with('\n') {
        let _ = stderr.write_all(b"\n");
    }
}

/// A reply's `warnings` (advice on an accepted request), one `warning:` line each on stderr.
pub fn warnings(v: &serde_json::Value) {
    for w in v
        .get("warnings")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        err(&super::table::sanitize(&format!(
            "warning: {}",
            w.as_str().unwrap_or_default()
        )));
    }
}

/// Pretty-prints a JSON body as the server sent it (key order kept), or only its `field` member
/// (the `items` array of a list response).
pub fn pretty_json(raw: &str, field: Option<&str>) -> Result<String, CliError> {
    let doc: Json = serde_json::from_str(raw)
        .map_err(|e| CliError::other(format!("invalid JSON from the server: {e}")))?;
    let doc = match field {
        None => &doc,
        Some(name) => doc
            .member(name)
            .ok_or_else(|| CliError::other(format!("unexpected response: no `{name}` field")))?,
    };
    serde_json::to_string_pretty(doc)
        .map_err(|e| CliError::other(format!("cannot format JSON: {e}")))
}

/// Prints the server's JSON (pretty, unchanged) to stdout.
pub fn print_json(raw: &str, field: Option<&str>) -> Result<(), CliError> {
    out(&pretty_json(raw, field)?);
    Ok(())
}

/// A JSON value whose objects keep their keys in document order (`serde_json::Value` sorts them
/// unless its `preserve_order` feature is on, which this crate does not control).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn member(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;

        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    entries.push((k, v));
                }
                Ok(Json::Object(entries))
            }
        }

        deserializer.deserialize_any(JsonVisitor)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_keeps_key_order_and_values() {
        let raw = r#"{"zeta":1,"alpha":{"b":null,"a":[true,1.5,-3,"x\"y"]},"mid":"é"}"#;
        let pretty = pretty_json(raw, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pretty,
            "{\n  \"zeta\": 1,\n  \"alpha\": {\n    \"b\": null,\n    \"a\": [\n      true,\n      1.5,\n      -3,\n      \"x\\\"y\"\n    ]\n  },\n  \"mid\": \"é\"\n}"
        );
        // Same data as serde_json sees it.
        let a: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
        let b: serde_json::Value = serde_json::from_str(&pretty).unwrap_or_default();
        assert_eq!(a, b);
    }

    #[test]
    fn pretty_items_only() {
        let raw = r#"{"items":[{"id":"b","name":"n"}],"total":1}"#;
        let pretty = pretty_json(raw, Some("items")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pretty,
            "[\n  {\n    \"id\": \"b\",\n    \"name\": \"n\"\n  }\n]"
        );
        assert!(pretty_json(r#"{"total":1}"#, Some("items")).is_err());
        assert!(pretty_json("not json", None).is_err());
    }

    #[test]
    fn big_integers_survive() {
        let raw = r#"{"u":18446744073709551615,"i":-9223372036854775808}"#;
        let pretty = pretty_json(raw, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(pretty.contains("18446744073709551615"));
        assert!(pretty.contains("-9223372036854775808"));
    }
}
