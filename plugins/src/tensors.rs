//! The `tensors` import: JSON ↔ tensors and top-k, done natively for the guest. Pure
//! functions over the WIT types, so they are tested here without an instance.

use serde_json::Value;

use crate::bindings::tensors::Scored;
use crate::bindings::types::{Dtype, Error, ErrorKind, Tensor};

fn invalid(message: impl Into<String>) -> Error {
    Error {
        kind: ErrorKind::InvalidInput,
        message: message.into(),
    }
}

fn unsupported(dtype: Dtype) -> Error {
    Error {
        kind: ErrorKind::Unsupported,
        message: format!(
            "the tensors helpers do not handle dtype {}; use f32, f64, i8-i64, u8-u64 or boolean",
            dtype_name(dtype)
        ),
    }
}

pub fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
        Dtype::I8 => "i8",
        Dtype::I16 => "i16",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::U8 => "u8",
        Dtype::U16 => "u16",
        Dtype::U32 => "u32",
        Dtype::U64 => "u64",
        Dtype::Boolean => "boolean",
        Dtype::Utf8 => "utf8",
    }
}

/// Bytes per element of the dtypes the helpers handle.
fn width(dtype: Dtype) -> Option<usize> {
    Some(match dtype {
        Dtype::I8 | Dtype::U8 | Dtype::Boolean => 1,
        Dtype::I16 | Dtype::U16 => 2,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        Dtype::F16 | Dtype::Bf16 | Dtype::Utf8 => return None,
    })
}

fn parse(json: &str) -> Result<Value, Error> {
    serde_json::from_str(json).map_err(|e| invalid(format!("the JSON is malformed: {e}")))
}

fn check_pointer(pointer: &str) -> Result<(), Error> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(invalid(format!(
            "{pointer:?} is not a JSON pointer: write \"\" for the whole document or start with \"/\" (\"/instances\")"
        )))
    }
}

/// `json-get`.
pub fn json_get(json: &str, pointer: &str) -> Result<Option<String>, Error> {
    check_pointer(pointer)?;
    let doc = parse(json)?;
    Ok(doc.pointer(pointer).map(|v| v.to_string()))
}

/// Appends one element, converted to `dtype`, little-endian.
fn push(out: &mut Vec<u8>, v: &Value, dtype: Dtype, at: &str) -> Result<(), Error> {
    let what = || match v {
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    };
    if dtype == Dtype::Boolean {
        return match v {
            Value::Bool(b) => {
                out.push(*b as u8);
                Ok(())
            }
            _ => Err(invalid(format!("{at} is {}, not true or false", what()))),
        };
    }
    let Value::Number(n) = v else {
        return Err(invalid(format!("{at} is {}, not a number", what())));
    };
    let float = || n.as_f64().unwrap_or(f64::NAN);
    let int = |min: i128, max: i128| -> Result<i128, Error> {
        let i = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| {
                invalid(format!(
                    "{at} is {n}, not an integer as {} needs",
                    dtype_name(dtype)
                ))
            })?;
        if i < min || i > max {
            return Err(invalid(format!(
                "{at} is {i}, outside the range of {} ({min} to {max})",
                dtype_name(dtype)
            )));
        }
        Ok(i)
    };
    match dtype {
        Dtype::F32 => out.extend_from_slice(&(float() as f32).to_le_bytes()),
        Dtype::F64 => out.extend_from_slice(&float().to_le_bytes()),
        Dtype::I8 => {
            out.extend_from_slice(&(int(i8::MIN.into(), i8::MAX.into())? as i8).to_le_bytes())
        }
        Dtype::I16 => {
            out.extend_from_slice(&(int(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes())
        }
        Dtype::I32 => {
            out.extend_from_slice(&(int(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes())
        }
        Dtype::I64 => {
            out.extend_from_slice(&(int(i64::MIN.into(), i64::MAX.into())? as i64).to_le_bytes())
        }
        Dtype::U8 => out.extend_from_slice(&(int(0, u8::MAX.into())? as u8).to_le_bytes()),
        Dtype::U16 => out.extend_from_slice(&(int(0, u16::MAX.into())? as u16).to_le_bytes()),
        Dtype::U32 => out.extend_from_slice(&(int(0, u32::MAX.into())? as u32).to_le_bytes()),
        Dtype::U64 => out.extend_from_slice(&(int(0, u64::MAX.into())? as u64).to_le_bytes()),
        Dtype::Boolean | Dtype::F16 | Dtype::Bf16 | Dtype::Utf8 => return Err(unsupported(dtype)),
    }
    Ok(())
}

/// Walks nested arrays depth-first, checking that every array at a depth has the length
/// the first one there had.
fn flatten(
    v: &Value,
    depth: usize,
    shape: &mut Vec<u64>,
    at: &mut String,
    out: &mut Vec<u8>,
    dtype: Dtype,
) -> Result<(), Error> {
    match v {
        Value::Array(items) => {
            if depth == shape.len() {
                if out.is_empty() {
                    // The first array reached at this depth (no number seen yet) sets its
                    // length.
                    shape.push(items.len() as u64);
                } else {
                    return Err(invalid(format!(
                        "{} is an array where the others at this depth are numbers",
                        if at.is_empty() { "the value" } else { at }
                    )));
                }
            } else if shape[depth] != items.len() as u64 {
                return Err(invalid(format!(
                    "{} has {} elements where the first at this depth has {}",
                    at,
                    items.len(),
                    shape[depth]
                )));
            }
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push('/');
                at.push_str(&i.to_string());
                flatten(item, depth + 1, shape, at, out, dtype)?;
                at.truncate(len);
            }
            Ok(())
        }
        _ => {
            if depth < shape.len() {
                return Err(invalid(format!(
                    "{} is {}, where an array of {} elements was expected",
                    if at.is_empty() { "the value" } else { at },
                    match v {
                        Value::Object(_) => "an object".to_string(),
                        other => other.to_string(),
                    },
                    shape[depth]
                )));
            }
            push(out, v, dtype, if at.is_empty() { "the value" } else { at })
        }
    }
}

/// `from-json`.
pub fn from_json(name: &str, json: &str, pointer: &str, dtype: Dtype) -> Result<Tensor, Error> {
    check_pointer(pointer)?;
    if width(dtype).is_none() {
        return Err(unsupported(dtype));
    }
    let doc = parse(json)?;
    let value = doc
        .pointer(pointer)
        .ok_or_else(|| invalid(format!("the JSON has no value at {pointer:?}")))?;
    let mut shape = Vec::new();
    let mut data = Vec::new();
    let mut at = pointer.to_string();
    flatten(value, 0, &mut shape, &mut at, &mut data, dtype)?;
    Ok(Tensor {
        name: name.to_string(),
        dtype,
        shape,
        data,
    })
}

/// The elements of a numeric tensor as f64, after checking its data against its shape.
fn elements(t: &Tensor) -> Result<Vec<f64>, Error> {
    let w = width(t.dtype).ok_or_else(|| unsupported(t.dtype))?;
    let count = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            invalid(format!(
                "tensor {:?}: the shape {:?} overflows",
                t.name, t.shape
            ))
        })?;
    if count.checked_mul(w as u64) != Some(t.data.len() as u64) {
        return Err(invalid(format!(
            "tensor {:?} holds {} bytes; shape {:?} of {} needs {}",
            t.name,
            t.data.len(),
            t.shape,
            dtype_name(t.dtype),
            count as u128 * w as u128
        )));
    }
    let d = &t.data;
    Ok(d.chunks_exact(w)
        .map(|c| match t.dtype {
            Dtype::F32 => f32::from_le_bytes(le(c)) as f64,
            Dtype::F64 => f64::from_le_bytes(le(c)),
            Dtype::I8 => c[0] as i8 as f64,
            Dtype::U8 | Dtype::Boolean => c[0] as f64,
            Dtype::I16 => i16::from_le_bytes(le(c)) as f64,
            Dtype::U16 => u16::from_le_bytes(le(c)) as f64,
            Dtype::I32 => i32::from_le_bytes(le(c)) as f64,
            Dtype::U32 => u32::from_le_bytes(le(c)) as f64,
            Dtype::I64 => i64::from_le_bytes(le(c)) as f64,
            Dtype::U64 => u64::from_le_bytes(le(c)) as f64,
            Dtype::F16 | Dtype::Bf16 | Dtype::Utf8 => unreachable!("no width"),
        })
        .collect())
}

/// The first `N` bytes of `c` (callers slice whole elements: `chunks_exact`, an index times
/// the width), as an array for `from_le_bytes`.
pub(crate) fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&c[..N]);
    a
}

/// `to-json`.
pub fn to_json(t: &Tensor) -> Result<String, Error> {
    let values = elements(t)?;
    let leaf = |i: usize| -> Value {
        match t.dtype {
            Dtype::Boolean => Value::Bool(values[i] != 0.0),
            Dtype::F32 | Dtype::F64 => serde_json::Number::from_f64(values[i])
                .map(Value::Number)
                .unwrap_or(Value::Null),
            // 64-bit integers are read exactly (f64 holds 53 bits).
            Dtype::I64 => Value::from(i64::from_le_bytes(le(&t.data[i * 8..]))),
            Dtype::U64 => Value::from(u64::from_le_bytes(le(&t.data[i * 8..]))),
            _ => Value::from(values[i] as i64),
        }
    };
    fn build(shape: &[u64], next: &mut usize, leaf: &dyn Fn(usize) -> Value) -> Value {
        match shape.split_first() {
            None => {
                let v = leaf(*next);
                *next += 1;
                v
            }
            Some((&n, rest)) => Value::Array((0..n).map(|_| build(rest, next, leaf)).collect()),
        }
    }
    let mut next = 0;
    Ok(build(&t.shape, &mut next, &leaf).to_string())
}

/// `top-k`.
pub fn top_k(t: &Tensor, k: u32, softmax: bool) -> Result<Vec<Vec<Scored>>, Error> {
    if t.dtype == Dtype::Boolean {
        return Err(unsupported(t.dtype));
    }
    let (rows, classes) = match t.shape.as_slice() {
        [c] => (1, *c as usize),
        [r, c] => (*r as usize, *c as usize),
        other => {
            return Err(invalid(format!(
                "top-k takes a tensor of shape [classes] or [rows, classes]; {:?} has shape {other:?}",
                t.name
            )));
        }
    };
    let values = elements(t)?;
    let k = (k as usize).min(classes);
    let mut out = Vec::with_capacity(rows);
    let mut order: Vec<usize> = Vec::with_capacity(classes);
    for r in 0..rows {
        let row = &values[r * classes..(r + 1) * classes];
        order.clear();
        order.extend(0..classes);
        // Stable: equal values keep index order. NaN sorts last.
        order.sort_by(|&a, &b| {
            row[b]
                .partial_cmp(&row[a])
                .unwrap_or_else(|| row[a].is_nan().cmp(&row[b].is_nan()))
        });
        let (peak, total) = if softmax {
            let peak = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = row.iter().map(|v| (v - peak).exp()).sum();
            (peak, total)
        } else {
            (0.0, 1.0)
        };
        out.push(
            order[..k]
                .iter()
                .map(|&c| Scored {
                    index: c as u32,
                    score: if softmax {
                        (row[c] - peak).exp() / total
                    } else {
                        row[c]
                    },
                })
                .collect(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(le(c)))
            .collect()
    }

    #[test]
    fn from_json_builds_rectangular_tensors() {
        let body = r#"{"instances": [[0.1, 2, -3.5], [4, 5, 6]], "top_k": 2}"#;
        let t = from_json("inputs", body, "/instances", Dtype::F32).unwrap();
        assert_eq!(t.name, "inputs");
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(f32s(&t), vec![0.1, 2.0, -3.5, 4.0, 5.0, 6.0]);

        let scalar = from_json("k", body, "/top_k", Dtype::I64).unwrap();
        assert!(scalar.shape.is_empty());
        assert_eq!(scalar.data, 2i64.to_le_bytes());

        let cube = from_json("c", "[[[1,2]],[[3,4]]]", "", Dtype::U8).unwrap();
        assert_eq!(cube.shape, vec![2, 1, 2]);
        assert_eq!(cube.data, vec![1, 2, 3, 4]);

        let empty = from_json("e", "[]", "", Dtype::F64).unwrap();
        assert_eq!(empty.shape, vec![0]);
        assert!(empty.data.is_empty());

        let flags = from_json("b", "[true, false]", "", Dtype::Boolean).unwrap();
        assert_eq!(flags.data, vec![1, 0]);
    }

    #[test]
    fn from_json_names_what_is_wrong() {
        let msg = |json: &str, pointer: &str, dtype: Dtype| {
            let e = from_json("x", json, pointer, dtype).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{}", e.message);
            e.message
        };
        let m = msg(
            r#"{"instances": [[1, 2, 3], [4, 5]]}"#,
            "/instances",
            Dtype::F32,
        );
        assert!(
            m.contains("/instances/1 has 2 elements") && m.contains("has 3"),
            "{m}"
        );
        let m = msg(r#"{"instances": [[1, "a"]]}"#, "/instances", Dtype::F32);
        assert!(m.contains("/instances/0/1 is \"a\", not a number"), "{m}");
        let m = msg(r#"{"instances": [[1, 2], 3]}"#, "/instances", Dtype::F32);
        assert!(m.contains("/instances/1 is 3, where an array of 2"), "{m}");
        let m = msg(r#"{"instances": [1, [2]]}"#, "/instances", Dtype::F32);
        assert!(m.contains("/instances/1 is an array"), "{m}");
        let m = msg(r#"{"other": 1}"#, "/instances", Dtype::F32);
        assert!(m.contains("no value at \"/instances\""), "{m}");
        let m = msg("[1, 2", "", Dtype::F32);
        assert!(m.contains("malformed"), "{m}");
        let m = msg("[300]", "", Dtype::U8);
        assert!(
            m.contains("/0 is 300, outside the range of u8 (0 to 255)"),
            "{m}"
        );
        let m = msg("[1.5]", "", Dtype::I32);
        assert!(m.contains("not an integer as i32 needs"), "{m}");
        let m = msg("[1]", "instances", Dtype::F32);
        assert!(m.contains("not a JSON pointer"), "{m}");
        let e = from_json("x", "[1]", "", Dtype::F16).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("f16"), "{}", e.message);
    }

    #[test]
    fn json_get_reads_one_value() {
        let body = r#"{"instances": [[1]], "top_k": 2, "opts": {"a": "b"}}"#;
        assert_eq!(json_get(body, "/top_k").unwrap().as_deref(), Some("2"));
        assert_eq!(
            json_get(body, "/opts").unwrap().as_deref(),
            Some(r#"{"a":"b"}"#)
        );
        assert_eq!(json_get(body, "/missing").unwrap(), None);
        assert_eq!(json_get("{", "").unwrap_err().kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn to_json_follows_the_shape() {
        let t = from_json("x", "[[1.5, 2], [3, 4]]", "", Dtype::F32).unwrap();
        assert_eq!(to_json(&t).unwrap(), "[[1.5,2.0],[3.0,4.0]]");
        let big = from_json("x", "[9007199254740993, -1]", "", Dtype::I64).unwrap();
        assert_eq!(to_json(&big).unwrap(), "[9007199254740993,-1]");
        let flags = from_json("b", "[true, false]", "", Dtype::Boolean).unwrap();
        assert_eq!(to_json(&flags).unwrap(), "[true,false]");
        let scalar = from_json("s", "7", "", Dtype::U16).unwrap();
        assert_eq!(to_json(&scalar).unwrap(), "7");
        let short = Tensor {
            name: "t".into(),
            dtype: Dtype::F32,
            shape: vec![2],
            data: vec![0; 4],
        };
        let e = to_json(&short).unwrap_err();
        assert!(
            e.message.contains("holds 4 bytes") && e.message.contains("needs 8"),
            "{}",
            e.message
        );
    }

    #[test]
    fn top_k_ranks_rows_with_softmax() {
        let t = from_json(
            "logits",
            "[[0.1, 2.0, 0.3, 0.4], [3.0, 0.1, 0.2, 1.5]]",
            "",
            Dtype::F32,
        )
        .unwrap();
        let best = top_k(&t, 2, true).unwrap();
        assert_eq!(best.len(), 2);
        assert_eq!(
            best[0].iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(
            best[1].iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 3]
        );
        // The softmax of the row, as the example used to compute it in Python.
        assert!(
            (best[0][0].score - 0.651827).abs() < 1e-6,
            "{}",
            best[0][0].score
        );
        assert!(
            (best[1][0].score - 0.746846).abs() < 1e-6,
            "{}",
            best[1][0].score
        );

        let raw = top_k(
            &from_json("x", "[1, 3, 3, 2]", "", Dtype::I32).unwrap(),
            9,
            false,
        )
        .unwrap();
        // Ties keep index order; k past the classes gives them all.
        assert_eq!(
            raw[0]
                .iter()
                .map(|s| (s.index, s.score))
                .collect::<Vec<_>>(),
            vec![(1, 3.0), (2, 3.0), (3, 2.0), (0, 1.0)]
        );
        let e = top_k(&from_json("x", "[[[1]]]", "", Dtype::F32).unwrap(), 1, true).unwrap_err();
        assert!(
            e.message.contains("shape [classes] or [rows, classes]"),
            "{}",
            e.message
        );
    }
}
