//! Tensors between the three forms a call meets: the WIT `tensor` a processor plugin gives
//! and takes, the engine's `atelier_inference::tensor::Tensor` (the same fields), and the
//! Open Inference Protocol's JSON (KServe V2: `{"inputs": [{"name", "shape", "datatype",
//! "data"}]}`), which callers use when a model has no processor.

use atelier_inference::tensor::{DType, Tensor};
use atelier_plugins::bindings::types::{Dtype, Tensor as WitTensor};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn dtype_from_wit(d: Dtype) -> DType {
    match d {
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::Bf16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::U8 => DType::U8,
        Dtype::U16 => DType::U16,
        Dtype::U32 => DType::U32,
        Dtype::U64 => DType::U64,
        Dtype::Boolean => DType::Boolean,
        Dtype::Utf8 => DType::Utf8,
    }
}

pub fn dtype_to_wit(d: DType) -> Dtype {
    match d {
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::Bf16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
        DType::U16 => Dtype::U16,
        DType::U32 => Dtype::U32,
        DType::U64 => Dtype::U64,
        DType::Boolean => Dtype::Boolean,
        DType::Utf8 => Dtype::Utf8,
    }
}

pub fn from_wit(t: WitTensor) -> Tensor {
    Tensor {
        name: t.name,
        dtype: dtype_from_wit(t.dtype),
        shape: t.shape,
        data: t.data,
    }
}

pub fn to_wit(t: Tensor) -> WitTensor {
    WitTensor {
        name: t.name,
        dtype: dtype_to_wit(t.dtype),
        shape: t.shape,
        data: t.data,
    }
}

/// The V2 protocol's datatype names.
fn v2_name(d: DType) -> &'static str {
    match d {
        DType::Boolean => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F16 => "FP16",
        DType::Bf16 => "BF16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::Utf8 => "BYTES",
    }
}

fn v2_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "BOOL" => DType::Boolean,
        "UINT8" => DType::U8,
        "UINT16" => DType::U16,
        "UINT32" => DType::U32,
        "UINT64" => DType::U64,
        "INT8" => DType::I8,
        "INT16" => DType::I16,
        "INT32" => DType::I32,
        "INT64" => DType::I64,
        "FP32" => DType::F32,
        "FP64" => DType::F64,
        "BYTES" => DType::Utf8,
        _ => return None,
    })
}

#[derive(Deserialize)]
struct V2Request {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<V2Input>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    outputs: Option<Value>,
}

#[derive(Deserialize)]
struct V2Input {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

/// A V2 inference request's inputs as tensors, and its `id`; an error names the input and
/// what is wrong.
pub fn v2_inputs(body: &[u8]) -> Result<(Vec<Tensor>, Option<String>), String> {
    let req: V2Request = serde_json::from_slice(body).map_err(|e| {
        format!("the body is not an inference request ({{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}): {e}")
    })?;
    let mut out = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.into_iter().enumerate() {
        let at = format!("inputs[{i}] ({})", input.name);
        let dtype = v2_dtype(&input.datatype).ok_or_else(|| {
            format!(
                "{at}: datatype {:?}; one of BOOL, UINT8-64, INT8-64, FP32, FP64, BYTES",
                input.datatype
            )
        })?;
        let count = input
            .shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .filter(|c| *c <= 1 << 28)
            .ok_or_else(|| format!("{at}: shape {:?} is too large", input.shape))?;
        let mut flat = Vec::new();
        flatten(&input.data, &mut flat, 0).map_err(|e| format!("{at}: {e}"))?;
        if flat.len() as u64 != count {
            return Err(format!(
                "{at}: {} elements for shape {:?} ({count} elements)",
                flat.len(),
                input.shape
            ));
        }
        let data = encode(dtype, &flat).map_err(|e| format!("{at}: {e}"))?;
        out.push(Tensor {
            name: input.name,
            dtype,
            shape: input.shape,
            data,
        });
    }
    Ok((out, req.id))
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    if depth > 32 {
        return Err("data nests deeper than 32 levels".into());
    }
    match v {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, depth + 1)?;
            }
            Ok(())
        }
        other => {
            out.push(other);
            Ok(())
        }
    }
}

fn encode(dtype: DType, values: &[&Value]) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(values.len() * dtype.size().unwrap_or(8));
    for (i, v) in values.iter().enumerate() {
        let bad = || format!("data[{i}] is {v}, not a {}", v2_name(dtype));
        macro_rules! int {
            ($t:ty) => {{
                let n = v
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| v.as_u64().map(i128::from));
                let n = n.and_then(|n| <$t>::try_from(n).ok()).ok_or_else(bad)?;
                data.extend_from_slice(&n.to_le_bytes());
            }};
        }
        match dtype {
            DType::Boolean => data.push(u8::from(v.as_bool().ok_or_else(bad)?)),
            DType::U8 => int!(u8),
            DType::U16 => int!(u16),
            DType::U32 => int!(u32),
            DType::U64 => int!(u64),
            DType::I8 => int!(i8),
            DType::I16 => int!(i16),
            DType::I32 => int!(i32),
            DType::I64 => int!(i64),
            DType::F32 => {
                data.extend_from_slice(&(v.as_f64().ok_or_else(bad)? as f32).to_le_bytes())
            }
            DType::F64 => data.extend_from_slice(&v.as_f64().ok_or_else(bad)?.to_le_bytes()),
            DType::Utf8 => {
                let s = v.as_str().ok_or_else(bad)?;
                data.extend_from_slice(&(s.len() as u32).to_le_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            DType::F16 | DType::Bf16 => {
                return Err(format!("{} tensors are not taken as JSON", v2_name(dtype)));
            }
        }
    }
    Ok(data)
}

/// The elements of a tensor as JSON values (row-major, flat).
fn decode(t: &Tensor) -> Result<Vec<Value>, String> {
    let d = &t.data;
    let chunks = |n: usize| -> Result<std::slice::ChunksExact<'_, u8>, String> {
        if !d.len().is_multiple_of(n) {
            return Err(format!("output `{}`: {} bytes of data", t.name, d.len()));
        }
        Ok(d.chunks_exact(n))
    };
    macro_rules! nums {
        ($t:ty, $n:expr) => {
            chunks($n)?
                .map(|c| {
                    let mut b = [0u8; $n];
                    b.copy_from_slice(c);
                    json!(<$t>::from_le_bytes(b))
                })
                .collect()
        };
    }
    Ok(match t.dtype {
        DType::Boolean => d.iter().map(|b| json!(*b != 0)).collect(),
        DType::U8 => d.iter().map(|b| json!(*b)).collect(),
        DType::I8 => d.iter().map(|b| json!(*b as i8)).collect(),
        DType::U16 => nums!(u16, 2),
        DType::I16 => nums!(i16, 2),
        DType::U32 => nums!(u32, 4),
        DType::I32 => nums!(i32, 4),
        DType::U64 => nums!(u64, 8),
        DType::I64 => nums!(i64, 8),
        DType::F32 => nums!(f32, 4),
        DType::F64 => nums!(f64, 8),
        DType::Utf8 => {
            let mut out = Vec::new();
            let mut rest = &d[..];
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(format!("output `{}`: a cut string", t.name));
                }
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let s = rest
                    .get(4..4 + n)
                    .ok_or_else(|| format!("output `{}`: a cut string", t.name))?;
                out.push(json!(String::from_utf8_lossy(s)));
                rest = &rest[4 + n..];
            }
            out
        }
        DType::F16 | DType::Bf16 => {
            return Err(format!(
                "output `{}`: {} tensors are not given as JSON",
                t.name,
                v2_name(t.dtype)
            ));
        }
    })
}

/// A V2 inference response.
pub fn v2_response(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
) -> Result<Value, String> {
    let mut items = Vec::with_capacity(outputs.len());
    for t in outputs {
        items.push(json!({
            "name": t.name,
            "shape": t.shape,
            "datatype": v2_name(t.dtype),
            "data": decode(t)?,
        }));
    }
    let mut body = json!({
        "model_name": model_name,
        "model_version": model_version,
        "outputs": items,
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    Ok(body)
}

/// The V2 metadata of a model's inputs or outputs.
pub fn v2_metadata(specs: &[atelier_inference::onnx::TensorSpec]) -> Value {
    specs
        .iter()
        .map(|s| json!({"name": s.name, "datatype": v2_name(s.dtype), "shape": s.shape}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_inputs_become_tensors_and_outputs_json() {
        let body = br#"{"id": "r1", "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]},
            {"name": "k", "shape": [1], "datatype": "INT64", "data": [7]},
            {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["ab", ""]}
        ]}"#;
        let (t, id) = v2_inputs(body).unwrap();
        assert_eq!(id.as_deref(), Some("r1"));
        assert_eq!(t[0].dtype, DType::F32);
        assert_eq!(t[0].data.len(), 16);
        assert_eq!(&t[0].data[4..8], &2.5f32.to_le_bytes());
        assert_eq!(t[1].data, 7i64.to_le_bytes());
        let out = v2_response("iris", "0.0.1", id.as_deref(), &t).unwrap();
        assert_eq!(out["outputs"][0]["data"], json!([1.0, 2.5, 3.0, 4.0]));
        assert_eq!(out["outputs"][1]["datatype"], "INT64");
        assert_eq!(out["outputs"][2]["data"], json!(["ab", ""]));
        assert_eq!(out["id"], "r1");
    }

    #[test]
    fn bad_v2_inputs_name_the_problem() {
        for (body, says) in [
            (
                r#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#,
                "2 elements",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}"#,
                "datatype",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}"#,
                "not a INT8",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": ["yes"]}]}"#,
                "not a BOOL",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [4294967296, 4294967296], "datatype": "BOOL", "data": []}]}"#,
                "too large",
            ),
            (r#"{"instances": [1]}"#, "not an inference request"),
        ] {
            let e = v2_inputs(body.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }
}
