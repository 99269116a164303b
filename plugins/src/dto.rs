//! The JSON forms of the calls (`invoke`: `POST /v1/plugins/{name}/{version}/invoke` and
//! `atelier plugin test`; the forms are in docs/plugins.md) as serde types, and their
//! conversions to and from the WIT types.
//!
//! ```text
//! input JSON ─serde─▶ *Input / *Dto ─TryFrom─▶ WIT values ─▶ the world's call
//! JSON output ◀─serde── *Dto ◀─From<&wit>── WIT values ◀──┘
//! ```
//!
//! serde refuses a wrong type, a missing field and, at the top of an input, an unknown field,
//! each with the path of the field ([`from_json`]); `TryFrom` refuses what serde cannot see
//! (a dtype, base64, a storage prefix, a body given twice), naming the field too. A field
//! given as `null` is absent unless it says otherwise (`present`): a `null` body is the JSON
//! `null`, a `null` list is refused.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value as Json};

use crate::bindings::inference::atelier::plugin::inference_types as inf;
use crate::bindings::training::atelier::plugin::training_types as tr;
use crate::bindings::types::{Dtype, Parameter, Tensor, Value};
use crate::bindings::workflow::atelier::plugin::step_types as st;
use crate::calls::PrePost;
use crate::tensors::dtype_name;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Reads `input` as `T`; a refusal names the field (`request.multipart.file[0].text: …`).
pub fn from_json<T: DeserializeOwned>(input: &Json) -> Result<T, String> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let mut segments: Vec<_> = e.path().iter().collect();
        let message = e.inner().to_string();
        // An unknown field is named by the message; the path is the object it is in.
        if message.starts_with("unknown field") {
            segments.pop();
        }
        let mut path = String::new();
        for s in segments {
            if !path.is_empty() && !matches!(s, serde_path_to_error::Segment::Seq { .. }) {
                path.push('.');
            }
            path.push_str(&s.to_string());
        }
        if path.is_empty() {
            format!("the input: {message}")
        } else {
            format!("{path}: {message}")
        }
    })
}

/// `T` as JSON (the output of a call).
pub fn to_json<T: Serialize>(value: &T) -> Result<Json, String> {
    serde_json::to_value(value).map_err(|e| format!("the output does not serialize: {e}"))
}

/// For `#[serde(default, deserialize_with = "present")]`: a field given as `null` is
/// `Some(Json::Null)`, or refused for other types, instead of being taken as absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads a struct from a JSON object only. serde's derive also reads a struct from a list of
/// its fields in order (`["t", "f32"]` as a tensor), a form these inputs never had, so the
/// derived code (`remote = "Self"`) runs with every request turned into a map's.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

macro_rules! from_objects_only {
    ($($t:ident),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                // The derived (inherent) function.
                $t::deserialize(ObjectOnly(d))
            }
        }
    )*};
}

from_objects_only!(
    TensorDto,
    ModelDataDto,
    RequestDto,
    FileDto,
    InferenceInput,
    InputDto,
    OutputDto,
    StepInput,
    TrainInput
);

macro_rules! serialize_derived {
    ($($t:ident),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // The derived (inherent) function.
                $t::serialize(self, s)
            }
        }
    )*};
}

serialize_derived!(TensorDto, ModelDataDto);

// ---- values and parameters ----

/// A WIT `value` as any JSON value: strings are `text`, integers that fit an s64 `integer`,
/// other numbers `float`, booleans `boolean`, and `null`, lists and objects `json`. Out, a
/// `json` value is its JSON (or the string, when it is not JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueDto(pub Json);

impl From<ValueDto> for Value {
    fn from(v: ValueDto) -> Value {
        match v.0 {
            Json::String(s) => Value::Text(s),
            Json::Bool(b) => Value::Boolean(b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            other => Value::Json(other.to_string()),
        }
    }
}

impl From<&Value> for ValueDto {
    fn from(v: &Value) -> ValueDto {
        ValueDto(match v {
            Value::Text(s) => Json::from(s.as_str()),
            Value::Integer(i) => Json::from(*i),
            Value::Float(f) => Json::from(*f),
            Value::Boolean(b) => Json::from(*b),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::from(s.as_str())),
        })
    }
}

impl std::fmt::Display for ValueDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `{"name": value, ...}` as parameters, in name order.
/// Parameters (hyperparameters) from a JSON object: numbers, strings and booleans as
/// themselves, arrays and objects as `json`.
pub fn parameters(map: Option<Map<String, Json>>) -> Vec<Parameter> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(name, v)| Parameter {
            name,
            value: ValueDto(v).into(),
        })
        .collect()
}

// ---- tensors ----

/// The dtype a name (or an alias: `bool`, `string`) names.
pub fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "f16" => Dtype::F16,
        "bf16" => Dtype::Bf16,
        "f32" => Dtype::F32,
        "f64" => Dtype::F64,
        "i8" => Dtype::I8,
        "i16" => Dtype::I16,
        "i32" => Dtype::I32,
        "i64" => Dtype::I64,
        "u8" => Dtype::U8,
        "u16" => Dtype::U16,
        "u32" => Dtype::U32,
        "u64" => Dtype::U64,
        "boolean" | "bool" => Dtype::Boolean,
        "utf8" | "string" => Dtype::Utf8,
        _ => return None,
    })
}

fn element_width(d: Dtype) -> Option<u64> {
    Some(match d {
        Dtype::I8 | Dtype::U8 | Dtype::Boolean => 1,
        Dtype::F16 | Dtype::Bf16 | Dtype::I16 | Dtype::U16 => 2,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        Dtype::Utf8 => return None,
    })
}

/// A tensor: `{"name", "dtype", "shape", "values" | "data_base64"}`.
///
/// In: `values` may nest (read row-major), `data_base64` wins when both are given (and is the
/// only form of f16/bf16), `shape` defaults to the number of elements. Out: numbers,
/// booleans and strings are `values` (an f32 as its shortest decimal), f16/bf16 are
/// `data_base64`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(expecting = "a tensor {\"name\", \"dtype\", \"shape\", \"values\" | \"data_base64\"}")]
pub struct TensorDto {
    pub name: String,
    pub dtype: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub shape: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

impl TryFrom<TensorDto> for Tensor {
    type Error = String;

    fn try_from(t: TensorDto) -> Result<Tensor, String> {
        let name = t.name;
        let dtype = parse_dtype(&t.dtype)
            .ok_or_else(|| format!("tensor {name}: unknown dtype {}", t.dtype))?;
        let (data, strings) = match (t.data_base64, t.values) {
            (Some(b), _) => (
                B64.decode(b)
                    .map_err(|e| format!("tensor {name}: data_base64: {e}"))?,
                None,
            ),
            (None, Some(values)) => (
                encode_values(&name, &t.dtype, dtype, &values)?,
                Some(flatten(&values).len() as u64),
            ),
            (None, None) => {
                return Err(format!("tensor {name} needs \"values\" or \"data_base64\""));
            }
        };
        // Elements the data holds: by width, or the strings given; unknown for utf8 bytes.
        let elements = match element_width(dtype) {
            Some(w) if !(data.len() as u64).is_multiple_of(w) => {
                return Err(format!(
                    "tensor {name}: the data is {} bytes, not a whole number of {} elements",
                    data.len(),
                    t.dtype
                ));
            }
            Some(w) => Some(data.len() as u64 / w),
            None => strings,
        };
        let shape = match (t.shape, elements) {
            (None, Some(n)) => vec![n],
            (None, None) => vec![data.len() as u64],
            (Some(shape), Some(n)) => {
                let holds = shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d));
                if holds != Some(n) {
                    return Err(format!(
                        "tensor {name}: shape {shape:?} holds {} elements; the data has {n}",
                        holds.map_or("too many".to_string(), |h| h.to_string())
                    ));
                }
                shape
            }
            (Some(shape), None) => shape,
        };
        Ok(Tensor {
            name,
            dtype,
            shape,
            data,
        })
    }
}

/// `values` (nested lists flattened) as the tensor's little-endian bytes; utf8 elements are a
/// u32 length and the bytes. An integer outside the dtype's range is refused.
fn encode_values(
    name: &str,
    given: &str,
    dtype: Dtype,
    values: &[Json],
) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    let bad = |i: usize| format!("tensor {name}: value {i} is not a {given}");
    for (i, x) in flatten(values).iter().enumerate() {
        match dtype {
            Dtype::F32 => data.extend((x.as_f64().ok_or_else(|| bad(i))? as f32).to_le_bytes()),
            Dtype::F64 => data.extend(x.as_f64().ok_or_else(|| bad(i))?.to_le_bytes()),
            Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => {
                let n = x.as_i64().ok_or_else(|| bad(i))?;
                let w = element_width(dtype).unwrap_or(8) as usize;
                let bits = 8 * w as u32;
                if bits < 64 && !(-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&n) {
                    return Err(out_of_range(name, i, n, given));
                }
                data.extend(&n.to_le_bytes()[..w]);
            }
            Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => {
                let n = x.as_u64().ok_or_else(|| bad(i))?;
                let w = element_width(dtype).unwrap_or(8) as usize;
                let bits = 8 * w as u32;
                if bits < 64 && n >= 1u64 << bits {
                    return Err(out_of_range(name, i, n, given));
                }
                data.extend(&n.to_le_bytes()[..w]);
            }
            Dtype::Boolean => data.push(u8::from(x.as_bool().ok_or_else(|| bad(i))?)),
            Dtype::Utf8 => {
                let s = x.as_str().ok_or_else(|| bad(i))?;
                data.extend((s.len() as u32).to_le_bytes());
                data.extend(s.as_bytes());
            }
            Dtype::F16 | Dtype::Bf16 => {
                return Err(format!("tensor {name}: give {given} data as data_base64"));
            }
        }
    }
    Ok(data)
}

fn out_of_range(name: &str, i: usize, n: impl std::fmt::Display, given: &str) -> String {
    format!("tensor {name}: value {i} ({n}) is outside the range of {given}")
}

fn flatten(values: &[Json]) -> Vec<&Json> {
    let mut out = Vec::new();
    for v in values {
        match v {
            Json::Array(a) => out.extend(flatten(a)),
            other => out.push(other),
        }
    }
    out
}

impl From<&Tensor> for TensorDto {
    fn from(t: &Tensor) -> TensorDto {
        fn nums<const N: usize, T: Into<Json>>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<Json> {
            data.chunks_exact(N)
                .map(|c| f(crate::tensors::le(c)).into())
                .collect()
        }
        let values: Option<Vec<Json>> = match t.dtype {
            Dtype::F32 => Some(
                t.data
                    .chunks_exact(4)
                    .map(|c| {
                        let v = f32::from_le_bytes(crate::tensors::le(c));
                        // The shortest decimal that reads back as this f32 (0.1, not
                        // 0.10000000149); NaN and infinities are null.
                        v.to_string().parse::<f64>().map_or(Json::Null, Json::from)
                    })
                    .collect(),
            ),
            Dtype::F64 => Some(nums(&t.data, f64::from_le_bytes)),
            Dtype::I8 => Some(nums(&t.data, i8::from_le_bytes)),
            Dtype::I16 => Some(nums(&t.data, i16::from_le_bytes)),
            Dtype::I32 => Some(nums(&t.data, i32::from_le_bytes)),
            Dtype::I64 => Some(nums(&t.data, i64::from_le_bytes)),
            Dtype::U8 => Some(nums(&t.data, u8::from_le_bytes)),
            Dtype::U16 => Some(nums(&t.data, u16::from_le_bytes)),
            Dtype::U32 => Some(nums(&t.data, u32::from_le_bytes)),
            Dtype::U64 => Some(nums(&t.data, u64::from_le_bytes)),
            Dtype::Boolean => Some(t.data.iter().map(|b| Json::Bool(*b != 0)).collect()),
            Dtype::Utf8 => {
                let mut out = Vec::new();
                let mut rest = &t.data[..];
                while rest.len() >= 4 {
                    let n = u32::from_le_bytes(crate::tensors::le(rest)) as usize;
                    if rest.len() < 4 + n {
                        break;
                    }
                    out.push(Json::from(String::from_utf8_lossy(&rest[4..4 + n])));
                    rest = &rest[4 + n..];
                }
                Some(out)
            }
            Dtype::F16 | Dtype::Bf16 => None,
        };
        TensorDto {
            name: t.name.clone(),
            dtype: dtype_name(t.dtype).to_string(),
            shape: Some(t.shape.clone()),
            data_base64: values.is_none().then(|| B64.encode(&t.data)),
            values,
        }
    }
}

// ---- inference ----

/// A model's input or output: `{"tensors": [...]}` or `{"json": ...}` (in, `tensors` wins
/// when both are given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
#[serde(expecting = "{\"tensors\": [...]} or {\"json\": ...}")]
pub struct ModelDataDto {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub tensors: Option<Vec<TensorDto>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub json: Option<Json>,
}

impl TryFrom<ModelDataDto> for inf::ModelData {
    type Error = String;

    fn try_from(d: ModelDataDto) -> Result<inf::ModelData, String> {
        match (d.tensors, d.json) {
            (Some(t), _) => Ok(inf::ModelData::Tensors(
                t.into_iter()
                    .map(Tensor::try_from)
                    .collect::<Result<_, _>>()?,
            )),
            (None, Some(j)) => Ok(inf::ModelData::Json(j.to_string())),
            (None, None) => {
                Err("model_output must be {\"tensors\": [...]} or {\"json\": ...}".into())
            }
        }
    }
}

impl From<&inf::ModelData> for ModelDataDto {
    fn from(d: &inf::ModelData) -> ModelDataDto {
        match d {
            inf::ModelData::Tensors(t) => ModelDataDto {
                tensors: Some(t.iter().map(TensorDto::from).collect()),
                json: None,
            },
            inf::ModelData::Json(s) => ModelDataDto {
                tensors: None,
                json: Some(serde_json::from_str(s).unwrap_or_else(|_| Json::from(s.as_str()))),
            },
        }
    }
}

/// An HTTP request: `{"method", "path", "query", "headers", "json" | "multipart" |
/// "raw_base64" + "content_type"}` (the first body of the three given is taken). Query and
/// header values that are not strings are given as their JSON; header names are lowercased.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(
    expecting = "a request {\"method\", \"path\", \"query\", \"headers\", \"json\" | \"multipart\" | \"raw_base64\"}"
)]
pub struct RequestDto {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Option<Map<String, Json>>,
    #[serde(default)]
    pub headers: Option<Map<String, Json>>,
    #[serde(default, deserialize_with = "present")]
    pub json: Option<Json>,
    /// `{"field": [part, ...]}`.
    #[serde(default, deserialize_with = "present")]
    pub multipart: Option<BTreeMap<String, Vec<PartDto>>>,
    #[serde(default)]
    pub raw_base64: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One part of a multipart field: a value (a string) or a file.
#[derive(Debug, Clone, PartialEq)]
pub enum PartDto {
    Value(String),
    File(FileDto),
}

impl<'de> Deserialize<'de> for PartDto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PartDto, D::Error> {
        struct Part;
        impl<'de> Visitor<'de> for Part {
            type Value = PartDto;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a string or a file object ({\"name\", \"content_type\", \"data_base64\" | \"text\"})",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PartDto, E> {
                Ok(PartDto::Value(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PartDto, A::Error> {
                FileDto::deserialize(de::value::MapAccessDeserializer::new(map)).map(PartDto::File)
            }
        }
        d.deserialize_any(Part)
    }
}

/// A file of a multipart field: `{"name", "content_type", "data_base64" | "text"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(expecting = "a file {\"name\", \"content_type\", \"data_base64\" | \"text\"}")]
pub struct FileDto {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub data_base64: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

impl TryFrom<FileDto> for inf::File {
    type Error = String;

    fn try_from(f: FileDto) -> Result<inf::File, String> {
        let data = match (f.data_base64, f.text) {
            (Some(b), _) => B64.decode(b).map_err(|e| format!("data_base64: {e}"))?,
            (None, Some(t)) => t.into_bytes(),
            (None, None) => return Err("a file needs data_base64 or text".into()),
        };
        Ok(inf::File {
            name: f.name.unwrap_or_default(),
            content_type: f.content_type,
            data,
        })
    }
}

/// Query or header pairs; values that are not strings as their JSON text.
fn pairs(map: Option<Map<String, Json>>) -> Vec<(String, String)> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Json::String(s) => s,
                other => other.to_string(),
            };
            (k.to_ascii_lowercase(), v)
        })
        .collect()
}

impl TryFrom<RequestDto> for inf::Request {
    type Error = String;

    fn try_from(r: RequestDto) -> Result<inf::Request, String> {
        let query = pairs(r.query);
        let mut headers = pairs(r.headers);
        let (content_type, body) = if let Some(j) = r.json {
            (
                "application/json".to_string(),
                inf::Body::Json(j.to_string()),
            )
        } else if let Some(fields) = r.multipart {
            let mut out = Vec::new();
            for (name, parts) in fields {
                let mut field = inf::FormField {
                    name,
                    files: Vec::new(),
                    values: Vec::new(),
                };
                for part in parts {
                    match part {
                        PartDto::Value(v) => field.values.push(v),
                        PartDto::File(f) => field.files.push(
                            f.try_into()
                                .map_err(|e| format!("request.multipart.{}: {e}", field.name))?,
                        ),
                    }
                }
                out.push(field);
            }
            ("multipart/form-data".to_string(), inf::Body::Multipart(out))
        } else if let Some(b) = r.raw_base64 {
            (
                r.content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                inf::Body::Raw(
                    B64.decode(b)
                        .map_err(|e| format!("request.raw_base64: {e}"))?,
                ),
            )
        } else {
            return Err("request needs json, multipart or raw_base64".into());
        };
        if !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), content_type.clone()));
        }
        Ok(inf::Request {
            method: r.method.unwrap_or_else(|| "POST".into()),
            path: r.path.unwrap_or_else(|| "/".into()),
            query,
            headers,
            content_type,
            body,
        })
    }
}

/// An inference processor's input: `{"body": <JSON>}` (a JSON `POST /`) or `{"request":
/// {...}}`, with an optional `model_output` (then `postprocess` runs too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct InferenceInput {
    #[serde(default, deserialize_with = "present")]
    pub body: Option<Json>,
    #[serde(default, deserialize_with = "present")]
    pub request: Option<RequestDto>,
    #[serde(default, deserialize_with = "present")]
    pub model_output: Option<ModelDataDto>,
}

impl InferenceInput {
    pub fn parse(input: &Json) -> Result<InferenceInput, String> {
        if !input.is_object() {
            return Err(
                "the input must be a JSON object: {\"body\": ..., \"model_output\": ...}".into(),
            );
        }
        from_json(input)
    }
}

/// What an inference processor is called with.
#[derive(Debug, Clone)]
pub struct InferenceCall {
    pub request: inf::Request,
    pub model_output: Option<inf::ModelData>,
}

impl TryFrom<InferenceInput> for InferenceCall {
    type Error = String;

    fn try_from(i: InferenceInput) -> Result<InferenceCall, String> {
        let request = match (i.body, i.request) {
            (Some(_), Some(_)) => return Err("give body or request, not both".into()),
            (Some(body), None) => inf::Request {
                method: "POST".into(),
                path: "/".into(),
                query: Vec::new(),
                headers: vec![("content-type".into(), "application/json".into())],
                content_type: "application/json".into(),
                body: inf::Body::Json(body.to_string()),
            },
            (None, Some(r)) => r.try_into()?,
            (None, None) => return Err("the input needs a body (JSON) or a request".into()),
        };
        let model_output = i.model_output.map(TryInto::try_into).transpose()?;
        Ok(InferenceCall {
            request,
            model_output,
        })
    }
}

/// What `preprocess` produced: `{"input": <model data>, "state_base64"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreparedDto {
    pub input: ModelDataDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_base64: Option<String>,
}

impl From<&inf::Prepared> for PreparedDto {
    fn from(p: &inf::Prepared) -> PreparedDto {
        PreparedDto {
            input: (&p.input).into(),
            state_base64: p.state.as_ref().map(|s| B64.encode(s)),
        }
    }
}

/// What `postprocess` answered: `{"status", "content_type", "headers": [[name, value]],
/// "body"}`. A status of 0 is 200, an empty content type `application/json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseDto {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: ResponseBody,
}

/// A response body: its JSON (a JSON content type; the text when it does not parse), its
/// text (UTF-8), else `{"base64": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResponseBody {
    Json(Json),
    Text(String),
    Bytes { base64: String },
}

impl From<&inf::Response> for ResponseDto {
    fn from(r: &inf::Response) -> ResponseDto {
        let content_type = if r.content_type.is_empty() {
            "application/json"
        } else {
            &r.content_type
        };
        let body = if content_type.starts_with("application/json") {
            match serde_json::from_slice::<Json>(&r.body) {
                Ok(j) => ResponseBody::Json(j),
                Err(_) => ResponseBody::Text(String::from_utf8_lossy(&r.body).into_owned()),
            }
        } else if let Ok(text) = std::str::from_utf8(&r.body) {
            ResponseBody::Text(text.to_string())
        } else {
            ResponseBody::Bytes {
                base64: B64.encode(&r.body),
            }
        };
        ResponseDto {
            status: if r.status == 0 { 200 } else { r.status },
            content_type: content_type.to_string(),
            headers: r.headers.clone(),
            body,
        }
    }
}

/// An inference processor's output: `{"preprocess": ..., "postprocess": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrePostDto {
    pub preprocess: PreparedDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postprocess: Option<ResponseDto>,
}

impl From<&PrePost> for PrePostDto {
    fn from(p: &PrePost) -> PrePostDto {
        PrePostDto {
            preprocess: (&p.prepared).into(),
            postprocess: p.response.as_ref().map(ResponseDto::from),
        }
    }
}

// ---- data channels (workflow steps and training jobs) ----

/// One of `inputs`: `{"name", "path"}` (a storage prefix, granted read-only) or `{"name",
/// "value"}` (any JSON value).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(expecting = "an input {\"name\", \"path\" | \"value\"}")]
pub struct InputDto {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub value: Option<ValueDto>,
}

/// One of `outputs`: `{"name", "path"}` (a storage prefix, granted read-write).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(expecting = "an output {\"name\", \"path\"}")]
pub struct OutputDto {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Accepted and ignored (an output is written, not given).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<ValueDto>,
}

/// A channel needs a path or a value, and its path must be a storage prefix.
fn check_channel(what: &str, name: &str, path: &str, has_value: bool) -> Result<(), String> {
    if path.is_empty() && !has_value {
        return Err(format!(
            "{what} {name} needs a path (a storage prefix) or a value"
        ));
    }
    if !path.is_empty() {
        crate::storage::normalize_prefix(path).map_err(|e| format!("{what} {name}: {e}"))?;
    }
    Ok(())
}

impl TryFrom<InputDto> for st::Input {
    type Error = String;

    fn try_from(i: InputDto) -> Result<st::Input, String> {
        let path = i.path.unwrap_or_default();
        check_channel("inputs", &i.name, &path, i.value.is_some())?;
        Ok(st::Input {
            name: i.name,
            path,
            value: i.value.map(Value::from),
        })
    }
}

impl TryFrom<InputDto> for tr::Channel {
    type Error = String;

    fn try_from(i: InputDto) -> Result<tr::Channel, String> {
        let input = st::Input::try_from(i)?;
        Ok(tr::Channel {
            name: input.name,
            path: input.path,
        })
    }
}

impl TryFrom<OutputDto> for st::OutputSlot {
    type Error = String;

    fn try_from(o: OutputDto) -> Result<st::OutputSlot, String> {
        let path = o.path.unwrap_or_default();
        check_channel("outputs", &o.name, &path, o.value.is_some())?;
        if path.is_empty() {
            return Err(format!("output {} needs a path", o.name));
        }
        Ok(st::OutputSlot { name: o.name, path })
    }
}

impl TryFrom<OutputDto> for tr::Channel {
    type Error = String;

    fn try_from(o: OutputDto) -> Result<tr::Channel, String> {
        let slot = st::OutputSlot::try_from(o)?;
        Ok(tr::Channel {
            name: slot.name,
            path: slot.path,
        })
    }
}

fn convert<D, W: TryFrom<D, Error = String>>(list: Option<Vec<D>>) -> Result<Vec<W>, String> {
    list.unwrap_or_default()
        .into_iter()
        .map(W::try_from)
        .collect()
}

// ---- workflow steps ----

/// A workflow step's input: `{"inputs": [...], "outputs": [...], "parameters": {...},
/// "workflow_name", "execution_id", "step_name", "attempt"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    #[serde(default, deserialize_with = "present")]
    pub inputs: Option<Vec<InputDto>>,
    #[serde(default, deserialize_with = "present")]
    pub outputs: Option<Vec<OutputDto>>,
    #[serde(default)]
    pub parameters: Option<Map<String, Json>>,
    #[serde(default, deserialize_with = "present")]
    pub workflow_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub execution_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub step_name: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
}

impl StepInput {
    pub fn parse(input: &Json) -> Result<StepInput, String> {
        if !input.is_object() {
            return Err(
                "the input must be a JSON object: {\"inputs\", \"outputs\", \"parameters\"}".into(),
            );
        }
        from_json(input)
    }
}

/// What a workflow step is called with.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub workflow_name: String,
    /// `None` when the input names none: the call's id is the execution's.
    pub execution_id: Option<String>,
    pub step_name: String,
    pub attempt: u32,
    pub inputs: Vec<st::Input>,
    pub outputs: Vec<st::OutputSlot>,
    pub parameters: Vec<Parameter>,
}

impl StepCall {
    /// The step's context, with `call_id` as the execution's id when the input named none.
    pub fn context(&self, call_id: &str) -> st::StepContext {
        st::StepContext {
            workflow_name: self.workflow_name.clone(),
            execution_id: self
                .execution_id
                .clone()
                .unwrap_or_else(|| call_id.to_string()),
            step_name: self.step_name.clone(),
            attempt: self.attempt,
            deadline_unix_ms: 0,
        }
    }
}

impl TryFrom<StepInput> for StepCall {
    type Error = String;

    fn try_from(s: StepInput) -> Result<StepCall, String> {
        Ok(StepCall {
            inputs: convert(s.inputs)?,
            outputs: convert(s.outputs)?,
            parameters: parameters(s.parameters),
            workflow_name: s.workflow_name.unwrap_or_else(|| "try".into()),
            execution_id: s.execution_id,
            step_name: s.step_name.unwrap_or_else(|| "step".into()),
            attempt: s.attempt.unwrap_or(0),
        })
    }
}

/// A step's result: `{"outputs": {name: value}, "variables": {name: text}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResultDto {
    pub outputs: BTreeMap<String, ValueDto>,
    pub variables: BTreeMap<String, String>,
}

impl From<&st::StepResult> for StepResultDto {
    fn from(r: &st::StepResult) -> StepResultDto {
        StepResultDto {
            outputs: r
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            variables: r.variables.iter().cloned().collect(),
        }
    }
}

// ---- training algorithms ----

/// A training algorithm's input: `{"describe": true}` (anything else beside it is ignored),
/// or a job.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingInput {
    Describe,
    Train(TrainInput),
}

impl TrainingInput {
    pub fn parse(input: &Json) -> Result<TrainingInput, String> {
        if !input.is_object() {
            return Err("the input must be a JSON object: {\"describe\": true} or {\"hyperparameters\", \"inputs\", \"outputs\"}".into());
        }
        if input.get("describe") == Some(&Json::Bool(true)) {
            return Ok(TrainingInput::Describe);
        }
        from_json(input).map(TrainingInput::Train)
    }
}

/// A training job: `{"hyperparameters": {...}, "inputs": [...], "outputs": [...],
/// "job_name", "attempt"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct TrainInput {
    #[serde(default)]
    pub describe: Option<bool>,
    #[serde(default)]
    pub hyperparameters: Option<Map<String, Json>>,
    #[serde(default, deserialize_with = "present")]
    pub inputs: Option<Vec<InputDto>>,
    #[serde(default, deserialize_with = "present")]
    pub outputs: Option<Vec<OutputDto>>,
    #[serde(default, deserialize_with = "present")]
    pub job_name: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
}

/// What a training algorithm's `train` is called with (`resume_from` is the caller's: it
/// reads the storage).
#[derive(Debug, Clone)]
pub struct TrainCall {
    pub context: tr::TrainContext,
    pub hyperparameters: Vec<Parameter>,
}

impl TryFrom<TrainInput> for TrainCall {
    type Error = String;

    fn try_from(t: TrainInput) -> Result<TrainCall, String> {
        let inputs = convert(t.inputs)?;
        let outputs = convert(t.outputs)?;
        Ok(TrainCall {
            context: tr::TrainContext {
                job_name: t.job_name.unwrap_or_else(|| "try".into()),
                attempt: t.attempt.unwrap_or(0),
                inputs,
                outputs,
                resume_from: None,
            },
            hyperparameters: parameters(t.hyperparameters),
        })
    }
}

/// A hyperparameter kind's name.
pub fn kind_name(kind: tr::HyperparameterKind) -> &'static str {
    match kind {
        tr::HyperparameterKind::Text => "text",
        tr::HyperparameterKind::Integer => "integer",
        tr::HyperparameterKind::Float => "float",
        tr::HyperparameterKind::Boolean => "boolean",
    }
}

/// What `describe` answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlgorithmSpecDto {
    pub name: String,
    pub version: String,
    pub description: String,
    pub hyperparameters: Vec<HyperparameterDto>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub metrics: Vec<String>,
}

/// One hyperparameter of a spec; `default` and `range` are `null` when it has none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HyperparameterDto {
    pub name: String,
    pub kind: &'static str,
    pub default: Option<ValueDto>,
    pub range: Option<(f64, f64)>,
    pub choices: Vec<String>,
    pub required: bool,
    pub description: String,
}

impl From<&tr::AlgorithmSpec> for AlgorithmSpecDto {
    fn from(s: &tr::AlgorithmSpec) -> AlgorithmSpecDto {
        AlgorithmSpecDto {
            name: s.name.clone(),
            version: s.version.clone(),
            description: s.description.clone(),
            hyperparameters: s
                .hyperparameters
                .iter()
                .map(|h| HyperparameterDto {
                    name: h.name.clone(),
                    kind: kind_name(h.kind),
                    default: h.default_value.as_ref().map(ValueDto::from),
                    range: h.range,
                    choices: h.choices.clone(),
                    required: h.required,
                    description: h.description.clone(),
                })
                .collect(),
            inputs: s.inputs.clone(),
            outputs: s.outputs.clone(),
            metrics: s.metrics.clone(),
        }
    }
}

/// What `train` answered: `{"final_metrics": {name: number}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSummaryDto {
    pub final_metrics: BTreeMap<String, f64>,
}

impl From<&tr::TrainSummary> for TrainSummaryDto {
    fn from(s: &tr::TrainSummary) -> TrainSummaryDto {
        TrainSummaryDto {
            final_metrics: s.final_metrics.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tensor(name: &str, dtype: Dtype, shape: &[u64], data: Vec<u8>) -> Tensor {
        Tensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data,
        }
    }

    fn le<T: Copy, const N: usize>(values: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| f(*v)).collect()
    }

    fn utf8(strings: &[&str]) -> Vec<u8> {
        strings
            .iter()
            .flat_map(|s| {
                [
                    (s.len() as u32).to_le_bytes().to_vec(),
                    s.as_bytes().to_vec(),
                ]
                .concat()
            })
            .collect()
    }

    /// A tensor as the JSON a call answers, read back as a call's input.
    fn round_trip(t: &Tensor) -> Tensor {
        let text = to_json(&TensorDto::from(t)).unwrap().to_string();
        let dto: TensorDto = from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        Tensor::try_from(dto).unwrap()
    }

    #[test]
    fn tensors_of_every_dtype_read_back_as_they_were_written() {
        let tensors = [
            tensor(
                "f32",
                Dtype::F32,
                &[2, 2],
                le(&[0.1f32, -2.5, 3e-8, f32::MAX], f32::to_le_bytes),
            ),
            tensor(
                "f64",
                Dtype::F64,
                &[2],
                le(&[0.1f64, -1e300], f64::to_le_bytes),
            ),
            tensor("i8", Dtype::I8, &[2], le(&[i8::MIN, 7], i8::to_le_bytes)),
            tensor(
                "i16",
                Dtype::I16,
                &[2],
                le(&[i16::MIN, 7], i16::to_le_bytes),
            ),
            tensor(
                "i32",
                Dtype::I32,
                &[2],
                le(&[i32::MIN, 7], i32::to_le_bytes),
            ),
            tensor(
                "i64",
                Dtype::I64,
                &[2],
                le(&[i64::MIN, i64::MAX], i64::to_le_bytes),
            ),
            tensor("u8", Dtype::U8, &[2], vec![0, u8::MAX]),
            tensor("u16", Dtype::U16, &[1], le(&[u16::MAX], u16::to_le_bytes)),
            tensor("u32", Dtype::U32, &[1], le(&[u32::MAX], u32::to_le_bytes)),
            tensor("u64", Dtype::U64, &[1], le(&[u64::MAX], u64::to_le_bytes)),
            tensor("bool", Dtype::Boolean, &[3], vec![1, 0, 1]),
            tensor("utf8", Dtype::Utf8, &[2], utf8(&["héllo", ""])),
            tensor("f16", Dtype::F16, &[2], vec![0, 0x3c, 0xff, 0x7b]),
            tensor("bf16", Dtype::Bf16, &[1, 1], vec![0x80, 0x3f]),
            tensor("empty", Dtype::F32, &[0], Vec::new()),
        ];
        for t in &tensors {
            assert_eq!(
                format!("{:?}", round_trip(t)),
                format!("{t:?}"),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn tensors_are_written_as_values_or_base64() {
        let cases = [
            (
                tensor(
                    "a",
                    Dtype::F32,
                    &[2],
                    le(&[0.1f32, f32::NAN], f32::to_le_bytes),
                ),
                // The shortest decimal of an f32; NaN has no JSON number.
                json!({"name": "a", "dtype": "f32", "shape": [2], "values": [0.1, null]}),
            ),
            (
                tensor("b", Dtype::Boolean, &[2], vec![0, 7]),
                json!({"name": "b", "dtype": "boolean", "shape": [2], "values": [false, true]}),
            ),
            (
                tensor("c", Dtype::Utf8, &[1], utf8(&["x"])),
                json!({"name": "c", "dtype": "utf8", "shape": [1], "values": ["x"]}),
            ),
            (
                tensor("d", Dtype::F16, &[1], vec![0, 0x3c]),
                json!({"name": "d", "dtype": "f16", "shape": [1], "data_base64": "ADw="}),
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(to_json(&TensorDto::from(&t)).unwrap(), expected);
        }
    }

    fn read_tensor(v: Json) -> Result<Tensor, String> {
        from_json::<TensorDto>(&v).and_then(Tensor::try_from)
    }

    #[test]
    fn tensor_values_nest_and_name_their_dtype_by_alias() {
        let t = read_tensor(json!({"name": "t", "dtype": "bool", "values": [[true], [false]]}))
            .unwrap();
        assert_eq!(
            (t.dtype, t.shape, t.data),
            (Dtype::Boolean, vec![2], vec![1, 0])
        );
        let t =
            read_tensor(json!({"name": "t", "dtype": "i32", "shape": [1, 2], "values": [[1, -1]]}))
                .unwrap();
        assert_eq!(t.shape, vec![1, 2]);
        assert_eq!(t.data, le(&[1i32, -1], i32::to_le_bytes));
        // data_base64 wins over values.
        let t =
            read_tensor(json!({"name": "t", "dtype": "u8", "values": [1], "data_base64": "AgM="}))
                .unwrap();
        assert_eq!(t.data, vec![2, 3]);
        let t = read_tensor(json!({"name": "t", "dtype": "string", "values": ["ab"]})).unwrap();
        assert_eq!(t.dtype, Dtype::Utf8);
    }

    #[test]
    fn a_bad_tensor_is_refused_naming_the_tensor_or_the_field() {
        let cases = [
            (
                json!({"name": "t", "dtype": "c64", "values": [1]}),
                "tensor t: unknown dtype c64",
            ),
            (
                json!({"name": "t", "dtype": "f32", "values": [1, "x"]}),
                "tensor t: value 1 is not a f32",
            ),
            (
                json!({"name": "t", "dtype": "u8", "values": [-1]}),
                "tensor t: value 0 is not a u8",
            ),
            (
                json!({"name": "t", "dtype": "i64", "values": [1.5]}),
                "tensor t: value 0 is not a i64",
            ),
            (
                json!({"name": "t", "dtype": "bool", "values": [1]}),
                "tensor t: value 0 is not a bool",
            ),
            (
                json!({"name": "t", "dtype": "i8", "values": [1, 300]}),
                "tensor t: value 1 (300) is outside the range of i8",
            ),
            (
                json!({"name": "t", "dtype": "u16", "values": [65536]}),
                "tensor t: value 0 (65536) is outside the range of u16",
            ),
            (
                json!({"name": "t", "dtype": "f32", "shape": [2, 3], "values": [1, 2, 3, 4, 5]}),
                "tensor t: shape [2, 3] holds 6 elements; the data has 5",
            ),
            (
                json!({"name": "t", "dtype": "i32", "data_base64": "AAAA"}),
                "tensor t: the data is 3 bytes, not a whole number of i32 elements",
            ),
            (
                json!({"name": "t", "dtype": "utf8", "shape": [3], "values": ["a", "b"]}),
                "tensor t: shape [3] holds 3 elements; the data has 2",
            ),
            (
                json!({"name": "t", "dtype": "f16", "values": [1]}),
                "tensor t: give f16 data as data_base64",
            ),
            (
                json!({"name": "t", "dtype": "f32"}),
                "tensor t needs \"values\" or \"data_base64\"",
            ),
            (
                json!({"name": "t", "dtype": "f32", "data_base64": "%%"}),
                "tensor t: data_base64: ",
            ),
            (
                json!({"dtype": "f32", "values": [1]}),
                "the input: missing field `name`",
            ),
            (
                json!({"name": "t", "values": [1]}),
                "the input: missing field `dtype`",
            ),
            (
                json!({"name": "t", "dtype": "f32", "values": [1], "shape": [-1]}),
                "shape[0]: invalid value: integer `-1`, expected u64",
            ),
            (
                json!({"name": "t", "dtype": "f32", "values": [1], "shape": null}),
                "shape: invalid type: null",
            ),
            (
                json!({"name": "t", "dtype": "f32", "values": 1}),
                "values: invalid type: integer `1`",
            ),
            (
                json!(["t"]),
                "the input: invalid type: sequence, expected a tensor",
            ),
        ];
        for (input, expected) in cases {
            let e = read_tensor(input.clone()).unwrap_err();
            assert!(e.contains(expected), "{input}: {e}");
        }
    }

    #[test]
    fn model_data_reads_back_as_it_was_written() {
        let cases = [
            inf::ModelData::Tensors(vec![tensor("t", Dtype::I16, &[1], vec![1, 2])]),
            inf::ModelData::Tensors(Vec::new()),
            inf::ModelData::Json(r#"{"a":[1,null]}"#.into()),
            inf::ModelData::Json("null".into()),
        ];
        for d in cases {
            let v = to_json(&ModelDataDto::from(&d)).unwrap();
            let back = from_json::<ModelDataDto>(&v).and_then(inf::ModelData::try_from);
            assert_eq!(format!("{:?}", back.unwrap()), format!("{d:?}"));
        }
        // Text that is not JSON is written as a string.
        let v = to_json(&ModelDataDto::from(&inf::ModelData::Json("oops".into()))).unwrap();
        assert_eq!(v, json!({"json": "oops"}));
        let e = from_json::<ModelDataDto>(&json!({"tensor": []}))
            .and_then(inf::ModelData::try_from)
            .unwrap_err();
        assert_eq!(
            e,
            "model_output must be {\"tensors\": [...]} or {\"json\": ...}"
        );
    }

    #[test]
    fn values_are_json_values() {
        let cases = [
            (json!("s"), Value::Text("s".into())),
            (json!(-3), Value::Integer(-3)),
            (json!(0.5), Value::Float(0.5)),
            // Past an s64: a float.
            (json!(u64::MAX), Value::Float(u64::MAX as f64)),
            (json!(true), Value::Boolean(true)),
            (json!(null), Value::Json("null".into())),
            (json!({"a": [1]}), Value::Json(r#"{"a":[1]}"#.into())),
        ];
        for (v, expected) in cases {
            let value = Value::from(ValueDto(v.clone()));
            assert_eq!(format!("{value:?}"), format!("{expected:?}"), "{v}");
            if v.as_u64() != Some(u64::MAX) {
                assert_eq!(ValueDto::from(&value).0, v, "{v} reads back");
            }
        }
        assert_eq!(
            ValueDto::from(&Value::Json("not json".into())).0,
            json!("not json")
        );
    }

    fn inference(v: Json) -> Result<InferenceCall, String> {
        InferenceInput::parse(&v).and_then(InferenceCall::try_from)
    }

    #[test]
    fn a_body_is_a_json_post() {
        let call = inference(json!({"body": {"instances": [1]}})).unwrap();
        let r = call.request;
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );
        assert!(matches!(r.body, inf::Body::Json(ref b) if b == r#"{"instances":[1]}"#));
        assert!(call.model_output.is_none());
        // A null body is the JSON null.
        let call = inference(json!({"body": null, "model_output": {"json": null}})).unwrap();
        assert!(matches!(call.request.body, inf::Body::Json(ref b) if b == "null"));
        assert!(matches!(call.model_output, Some(inf::ModelData::Json(ref j)) if j == "null"));
    }

    #[test]
    fn a_request_takes_its_first_body_and_lowercases_header_names() {
        let r = inference(json!({"request": {
            "method": "PUT", "path": "/p", "query": {"n": 5, "s": "x"},
            "headers": {"X-A": "b"}, "raw_base64": "aGk=", "content_type": "text/plain",
        }}))
        .unwrap()
        .request;
        assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/p"));
        assert_eq!(
            r.query,
            vec![("n".into(), "5".into()), ("s".into(), "x".into())]
        );
        assert_eq!(
            r.headers,
            vec![
                ("x-a".into(), "b".into()),
                ("content-type".into(), "text/plain".into())
            ]
        );
        assert!(matches!(r.body, inf::Body::Raw(ref b) if b == b"hi"));

        // json before multipart before raw_base64; a given content-type header stays.
        let r = inference(json!({"request": {
            "json": [1], "multipart": {"f": ["v"]}, "headers": {"Content-Type": "application/x"},
        }}))
        .unwrap()
        .request;
        assert_eq!(r.content_type, "application/json");
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/x".into())]
        );

        let r = inference(json!({"request": {"multipart": {"f": [
            "v", {"name": "a.txt", "text": "hi"}, {"data_base64": "aGk=", "content_type": "text/plain"},
        ]}}}))
        .unwrap()
        .request;
        assert_eq!(r.content_type, "multipart/form-data");
        let inf::Body::Multipart(fields) = r.body else {
            panic!("not multipart: {:?}", r.body)
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(
            (fields[0].name.as_str(), &fields[0].values),
            ("f", &vec!["v".to_string()])
        );
        let files: Vec<_> = fields[0]
            .files
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.content_type.as_deref(),
                    f.data.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            files,
            [
                ("a.txt", None, &b"hi"[..]),
                ("", Some("text/plain"), &b"hi"[..])
            ]
        );
    }

    #[test]
    fn a_bad_inference_input_is_refused_naming_what_is_wrong() {
        let cases = [
            (json!([1]), "the input must be a JSON object"),
            (
                json!({"body": 1, "extra": 2}),
                "the input: unknown field `extra`, expected one of `body`, `request`, `model_output`",
            ),
            (
                json!({"body": 1, "request": {"json": 1}}),
                "give body or request, not both",
            ),
            (json!({}), "the input needs a body (JSON) or a request"),
            (
                json!({"model_output": {"json": 1}}),
                "the input needs a body (JSON) or a request",
            ),
            (
                json!({"request": {}}),
                "request needs json, multipart or raw_base64",
            ),
            (
                json!({"request": null}),
                "request: invalid type: null, expected a request",
            ),
            (
                json!({"request": {"raw_base64": "%"}}),
                "request.raw_base64: ",
            ),
            (
                json!({"request": {"method": 5, "json": 1}}),
                "request.method: invalid type: integer `5`, expected a string",
            ),
            (
                json!({"request": {"query": [], "json": 1}}),
                "request.query: invalid type: sequence, expected a map",
            ),
            (
                json!({"request": {"multipart": {"f": [5]}}}),
                "request.multipart.f[0]: invalid type: integer `5`, expected a string or a file object",
            ),
            (
                json!({"request": {"multipart": {"f": [{"name": "a"}]}}}),
                "request.multipart.f: a file needs data_base64 or text",
            ),
            (
                json!({"request": {"multipart": {"f": [{"data_base64": "%"}]}}}),
                "request.multipart.f: data_base64: ",
            ),
            (
                json!({"request": {"multipart": {"f": [{"text": 1}]}}}),
                "request.multipart.f[0].text: invalid type: integer `1`",
            ),
            (
                json!({"body": 1, "model_output": null}),
                "model_output: invalid type: null",
            ),
            (
                json!({"body": 1, "model_output": {}}),
                "model_output must be",
            ),
            (
                json!({"body": 1, "model_output": {"tensors": [{"name": "t", "dtype": "x", "values": []}]}}),
                "tensor t: unknown dtype x",
            ),
            (
                json!({"body": 1, "model_output": {"tensors": [{"dtype": "f32", "values": []}]}}),
                "model_output.tensors[0]: missing field `name`",
            ),
        ];
        for (input, expected) in cases {
            let e = inference(input.clone()).unwrap_err();
            assert!(e.contains(expected), "{input}: {e}");
        }
    }

    fn step(v: Json) -> Result<StepCall, String> {
        StepInput::parse(&v).and_then(StepCall::try_from)
    }

    #[test]
    fn a_step_input_names_its_channels_and_parameters() {
        let call = step(json!({
            "inputs": [{"name": "table", "path": "data/iris"}, {"name": "n", "value": 3}],
            "outputs": [{"name": "summary", "path": "runs/summary/"}],
            "parameters": {"min_rows": 1, "mode": "fast"},
            "step_name": "s", "attempt": 2,
        }))
        .unwrap();
        let inputs: Vec<_> = call
            .inputs
            .iter()
            .map(|i| (i.name.as_str(), i.path.as_str(), format!("{:?}", i.value)))
            .collect();
        assert_eq!(
            inputs,
            [
                ("table", "data/iris", "None".to_string()),
                ("n", "", format!("{:?}", Some(Value::Integer(3))))
            ]
        );
        assert_eq!(call.outputs[0].path, "runs/summary/");
        let params: Vec<_> = call
            .parameters
            .iter()
            .map(|p| format!("{}={:?}", p.name, p.value))
            .collect();
        assert_eq!(
            params,
            ["min_rows=Value::Integer(1)", "mode=Value::Text(\"fast\")"]
        );
        let c = call.context("call-1");
        assert_eq!(
            (
                c.workflow_name.as_str(),
                c.execution_id.as_str(),
                c.step_name.as_str(),
                c.attempt
            ),
            ("try", "call-1", "s", 2)
        );
        let c = step(json!({"execution_id": "e"}))
            .unwrap()
            .context("call-1");
        assert_eq!(c.execution_id, "e");
    }

    #[test]
    fn a_bad_step_input_is_refused_naming_what_is_wrong() {
        let cases = [
            (json!("x"), "the input must be a JSON object"),
            (
                json!({"input": []}),
                "the input: unknown field `input`, expected one of `inputs`",
            ),
            (
                json!({"inputs": [{"name": "a"}]}),
                "inputs a needs a path (a storage prefix) or a value",
            ),
            (
                json!({"inputs": [{"name": "a", "path": "../up"}]}),
                "inputs a: ",
            ),
            (
                json!({"inputs": [{"path": "a/"}]}),
                "inputs[0]: missing field `name`",
            ),
            (
                json!({"inputs": null}),
                "inputs: invalid type: null, expected a sequence",
            ),
            (
                json!({"outputs": [{"name": "o"}]}),
                "outputs o needs a path (a storage prefix) or a value",
            ),
            (
                json!({"outputs": [{"name": "o", "value": 1}]}),
                "output o needs a path",
            ),
            (
                json!({"outputs": [{"name": "o", "path": "/abs"}]}),
                "outputs o: ",
            ),
            (
                json!({"parameters": [1]}),
                "parameters: invalid type: sequence, expected a map",
            ),
            (
                json!({"workflow_name": null}),
                "workflow_name: invalid type: null, expected a string",
            ),
            (
                json!({"attempt": "3"}),
                "attempt: invalid type: string \"3\", expected u32",
            ),
            (
                json!({"attempt": 5_000_000_000u64}),
                "attempt: invalid value",
            ),
        ];
        for (input, expected) in cases {
            let e = step(input.clone()).unwrap_err();
            assert!(e.contains(expected), "{input}: {e}");
        }
    }

    #[test]
    fn a_training_input_describes_or_trains() {
        for v in [
            json!({"describe": true}),
            json!({"describe": true, "anything": 1}),
        ] {
            assert_eq!(TrainingInput::parse(&v).unwrap(), TrainingInput::Describe);
        }
        let TrainingInput::Train(t) = TrainingInput::parse(&json!({
            "describe": false, "hyperparameters": {"lr": 0.1},
            "inputs": [{"name": "d", "path": "data/"}], "outputs": [{"name": "o", "path": "runs"}],
            "job_name": "j", "attempt": 1,
        }))
        .unwrap() else {
            panic!("not a job")
        };
        let call = TrainCall::try_from(t).unwrap();
        let channels = |c: &[tr::Channel]| {
            c.iter()
                .map(|c| format!("{}:{}", c.name, c.path))
                .collect::<Vec<_>>()
        };
        assert_eq!(channels(&call.context.inputs), ["d:data/"]);
        assert_eq!(channels(&call.context.outputs), ["o:runs"]);
        assert_eq!(
            (call.context.job_name.as_str(), call.context.attempt),
            ("j", 1)
        );
        assert!(call.context.resume_from.is_none());
        assert_eq!(call.hyperparameters[0].name, "lr");

        let cases = [
            (json!(true), "the input must be a JSON object"),
            (
                json!({"describe": "yes"}),
                "describe: invalid type: string \"yes\", expected a boolean",
            ),
            (
                json!({"hyperparameter": {}}),
                "the input: unknown field `hyperparameter`",
            ),
            (
                json!({"hyperparameters": 5}),
                "hyperparameters: invalid type: integer `5`, expected a map",
            ),
            (
                json!({"outputs": [{"name": "o", "value": 1}]}),
                "output o needs a path",
            ),
            (
                json!({"job_name": 1}),
                "job_name: invalid type: integer `1`, expected a string",
            ),
        ];
        for (input, expected) in cases {
            let e = TrainingInput::parse(&input)
                .and_then(|t| match t {
                    TrainingInput::Train(t) => TrainCall::try_from(t).map(drop),
                    TrainingInput::Describe => Ok(()),
                })
                .unwrap_err();
            assert!(e.contains(expected), "{input}: {e}");
        }
    }

    #[test]
    fn outputs_are_written_as_the_api_shows_them() {
        let response = |status, content_type: &str, body: &[u8]| {
            to_json(&ResponseDto::from(&inf::Response {
                status,
                content_type: content_type.into(),
                headers: vec![("x".into(), "1".into())],
                body: body.to_vec(),
            }))
            .unwrap()
        };
        assert_eq!(
            response(0, "", br#"{"a":1}"#),
            json!({"status": 200, "content_type": "application/json", "headers": [["x", "1"]], "body": {"a": 1}})
        );
        assert_eq!(
            response(201, "application/json", b"nope")["body"],
            json!("nope")
        );
        assert_eq!(response(200, "text/plain", b"hi")["body"], json!("hi"));
        assert_eq!(
            response(200, "image/png", &[0xff, 0])["body"],
            json!({"base64": "/wA="})
        );

        let prepost = PrePost {
            prepared: inf::Prepared {
                input: inf::ModelData::Json("[1]".into()),
                state: Some(b"2".to_vec()),
            },
            response: None,
        };
        assert_eq!(
            to_json(&PrePostDto::from(&prepost)).unwrap(),
            json!({"preprocess": {"input": {"json": [1]}, "state_base64": "Mg=="}})
        );

        let result = st::StepResult {
            outputs: vec![
                ("rows".into(), Value::Integer(4)),
                ("j".into(), Value::Json("{}".into())),
            ],
            variables: vec![("v".into(), "x".into())],
        };
        assert_eq!(
            to_json(&StepResultDto::from(&result)).unwrap(),
            json!({"outputs": {"rows": 4, "j": {}}, "variables": {"v": "x"}})
        );

        let spec = tr::AlgorithmSpec {
            name: "n".into(),
            version: "1".into(),
            description: "d".into(),
            hyperparameters: vec![tr::Hyperparameter {
                name: "lr".into(),
                kind: tr::HyperparameterKind::Float,
                default_value: None,
                range: Some((0.0, 1.0)),
                choices: Vec::new(),
                required: true,
                description: String::new(),
            }],
            inputs: vec!["data".into()],
            outputs: Vec::new(),
            metrics: vec!["loss".into()],
        };
        assert_eq!(
            to_json(&AlgorithmSpecDto::from(&spec)).unwrap(),
            json!({
                "name": "n", "version": "1", "description": "d",
                "hyperparameters": [{"name": "lr", "kind": "float", "default": null, "range": [0.0, 1.0],
                                     "choices": [], "required": true, "description": ""}],
                "inputs": ["data"], "outputs": [], "metrics": ["loss"],
            })
        );
        let summary = tr::TrainSummary {
            final_metrics: vec![("loss".into(), 0.5)],
        };
        assert_eq!(
            to_json(&TrainSummaryDto::from(&summary)).unwrap(),
            json!({"final_metrics": {"loss": 0.5}})
        );
    }
}
