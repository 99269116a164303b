//! Between [`Tensor`] (little-endian bytes, the WIT layout) and ONNX Runtime's values, both
//! ways: checked inputs in, every output out. An output that is a sequence of maps (what
//! scikit-learn classifiers exported by skl2onnx give by default: ZipMap's
//! `[{class: probability}, …]`) comes out as one tensor `[rows, classes]`, the columns in the
//! maps' key order, which ONNX Runtime keeps ascending; for skl2onnx that is the order of the
//! classifier's `classes_`.

use ort::value::{DynMapValueType, DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::EngineError;
use super::check::{Checked, CheckedData, TensorSpec};
use crate::tensor::{DType, Tensor};

/// The element type of ONNX Runtime that holds `dtype`'s elements.
#[cfg(test)]
pub(crate) fn ort_type(dtype: DType) -> TensorElementType {
    match dtype {
        DType::F16 => TensorElementType::Float16,
        DType::Bf16 => TensorElementType::Bfloat16,
        DType::F32 => TensorElementType::Float32,
        DType::F64 => TensorElementType::Float64,
        DType::I8 => TensorElementType::Int8,
        DType::I16 => TensorElementType::Int16,
        DType::I32 => TensorElementType::Int32,
        DType::I64 => TensorElementType::Int64,
        DType::U8 => TensorElementType::Uint8,
        DType::U16 => TensorElementType::Uint16,
        DType::U32 => TensorElementType::Uint32,
        DType::U64 => TensorElementType::Uint64,
        DType::Boolean => TensorElementType::Bool,
        DType::Utf8 => TensorElementType::String,
    }
}

/// The [`DType`] for an ONNX Runtime element type; `None` for those the API has no name for
/// (complex numbers, 8-, 4- and 2-bit formats).
pub(crate) fn dtype(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::Bf16,
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Bool => DType::Boolean,
        TensorElementType::String => DType::Utf8,
        _ => return None,
    })
}

/// How an output leaves the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputKind {
    /// A tensor, as it is.
    Tensor,
    /// A sequence of maps (ZipMap): a tensor `[rows, keys]` of the map values.
    MapRows,
}

/// What the engine gives for a model output of type `ty`, or why it cannot give it.
pub(crate) fn output_spec(name: &str, ty: &ValueType) -> Result<(TensorSpec, OutputKind), String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => match dtype(*ty) {
            Some(dtype) => Ok((
                TensorSpec {
                    name: name.to_owned(),
                    dtype,
                    shape: shape.to_vec(),
                },
                OutputKind::Tensor,
            )),
            None => Err(format!(
                "its element type {ty} has no dtype in Atelier's API"
            )),
        },
        ValueType::Sequence(inner) => match &**inner {
            ValueType::Map { key, value }
                if matches!(key, TensorElementType::Int64 | TensorElementType::String)
                    && matches!(
                        value,
                        TensorElementType::Float32 | TensorElementType::Float64
                    ) =>
            {
                let dtype = if *value == TensorElementType::Float32 {
                    DType::F32
                } else {
                    DType::F64
                };
                Ok((
                    TensorSpec {
                        name: name.to_owned(),
                        dtype,
                        shape: vec![-1, -1],
                    },
                    OutputKind::MapRows,
                ))
            }
            other => Err(format!(
                "a sequence of {other}; the engine returns tensors, and sequences of maps \
                 from int64 or string to float or double (ZipMap)"
            )),
        },
        other => Err(format!(
            "{other}; the engine returns tensors, and sequences of maps (ZipMap)"
        )),
    }
}

/// What the engine can feed to a model input of type `ty`.
pub(crate) fn input_spec(name: &str, ty: &ValueType) -> Result<TensorSpec, String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => match dtype(*ty) {
            Some(dtype) => Ok(TensorSpec {
                name: name.to_owned(),
                dtype,
                shape: shape.to_vec(),
            }),
            None => Err(format!(
                "its element type {ty} has no dtype in Atelier's API"
            )),
        },
        other => Err(format!("{other}; the engine feeds tensors only")),
    }
}

fn decode<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut a = [0; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// A checked input as an ONNX Runtime value (one copy of the data).
pub(crate) fn to_ort(input: Checked) -> ort::Result<(String, DynValue)> {
    let Checked {
        name,
        dtype,
        shape,
        data,
    } = input;
    let data = match data {
        CheckedData::Strings(s) => {
            return Ok((
                name,
                OrtTensor::from_string_array((shape, s.as_slice()))?.into_dyn(),
            ));
        }
        CheckedData::Fixed(data) => data,
    };
    macro_rules! num {
        ($n:literal, $f:expr) => {
            OrtTensor::from_array((shape, decode::<$n, _>(&data, $f)))?.into_dyn()
        };
    }
    let value = match dtype {
        DType::U8 => OrtTensor::from_array((shape, data))?.into_dyn(),
        DType::I8 => num!(1, i8::from_le_bytes),
        DType::Boolean => num!(1, |[b]: [u8; 1]| b != 0),
        DType::I16 => num!(2, i16::from_le_bytes),
        DType::U16 => num!(2, u16::from_le_bytes),
        DType::F16 => num!(2, |b| half::f16::from_bits(u16::from_le_bytes(b))),
        DType::Bf16 => num!(2, |b| half::bf16::from_bits(u16::from_le_bytes(b))),
        DType::F32 => num!(4, f32::from_le_bytes),
        DType::I32 => num!(4, i32::from_le_bytes),
        DType::U32 => num!(4, u32::from_le_bytes),
        DType::F64 => num!(8, f64::from_le_bytes),
        DType::I64 => num!(8, i64::from_le_bytes),
        DType::U64 => num!(8, u64::from_le_bytes),
        // Strings returned above: `check` makes `Strings` for utf8 and only for utf8.
        DType::Utf8 => return Err(ort::Error::new("utf8 input without strings")),
    };
    Ok((name, value))
}

fn encode<const N: usize, T: Copy>(xs: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * N);
    for &x in xs {
        out.extend_from_slice(&f(x));
    }
    out
}

/// Strings in the `utf8` layout of `tensor.rs`.
pub(crate) fn encode_strings<S: AsRef<str>>(strings: &[S]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for s in strings {
        let s = s.as_ref();
        let len = u32::try_from(s.len())
            .map_err(|_| format!("a string of {} bytes is longer than u32 counts", s.len()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    Ok(out)
}

fn dims(shape: &[i64]) -> Result<Vec<u64>, String> {
    shape
        .iter()
        .map(|&d| u64::try_from(d).map_err(|_| format!("ONNX Runtime gave the shape {shape:?}")))
        .collect()
}

/// The value of the output `spec` (of kind `kind`) as a [`Tensor`].
pub(crate) fn from_ort(
    spec: &TensorSpec,
    kind: OutputKind,
    value: &DynValue,
) -> Result<Tensor, EngineError> {
    let fault = |reason: String| EngineError::Output {
        name: spec.name.clone(),
        reason,
    };
    match kind {
        OutputKind::Tensor => tensor(&spec.name, value).map_err(fault),
        OutputKind::MapRows => map_rows(spec, value).map_err(fault),
    }
}

fn tensor(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!(
            "ONNX Runtime gave {} where the model declares a tensor",
            value.dtype()
        ));
    };
    let dtype =
        dtype(*ty).ok_or_else(|| format!("element type {ty} has no dtype in Atelier's API"))?;
    macro_rules! num {
        ($t:ty, $n:literal, $f:expr) => {{
            let (shape, xs) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| e.to_string())?;
            (dims(shape)?, encode::<$n, $t>(xs, $f))
        }};
    }
    let (shape, data) = match dtype {
        DType::U8 => {
            let (shape, xs) = value
                .try_extract_tensor::<u8>()
                .map_err(|e| e.to_string())?;
            (dims(shape)?, xs.to_vec())
        }
        DType::I8 => num!(i8, 1, i8::to_le_bytes),
        DType::Boolean => num!(bool, 1, |b| [u8::from(b)]),
        DType::I16 => num!(i16, 2, i16::to_le_bytes),
        DType::U16 => num!(u16, 2, u16::to_le_bytes),
        DType::F16 => num!(half::f16, 2, |x| x.to_bits().to_le_bytes()),
        DType::Bf16 => num!(half::bf16, 2, |x| x.to_bits().to_le_bytes()),
        DType::F32 => num!(f32, 4, f32::to_le_bytes),
        DType::I32 => num!(i32, 4, i32::to_le_bytes),
        DType::U32 => num!(u32, 4, u32::to_le_bytes),
        DType::F64 => num!(f64, 8, f64::to_le_bytes),
        DType::I64 => num!(i64, 8, i64::to_le_bytes),
        DType::U64 => num!(u64, 8, u64::to_le_bytes),
        DType::Utf8 => {
            let (shape, strings) = value.try_extract_strings().map_err(|e| e.to_string())?;
            (dims(shape)?, encode_strings(&strings)?)
        }
    };
    Ok(Tensor {
        name: name.to_owned(),
        dtype,
        shape,
        data,
    })
}

/// A sequence of maps as `[rows, keys]`; every map must have the same keys.
fn map_rows(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, String> {
    let name = spec.name.as_str();
    let maps = value
        .try_extract_sequence::<DynMapValueType>()
        .map_err(|e| e.to_string())?;
    let Some(first) = maps.first() else {
        return Ok(Tensor {
            name: name.to_owned(),
            dtype: spec.dtype,
            shape: vec![0, 0],
            data: Vec::new(),
        });
    };
    let (key, value_type) = match first.dtype() {
        ValueType::Map { key, value } => (*key, *value),
        other => return Err(format!("a sequence of {other} where maps were declared")),
    };
    macro_rules! rows {
        ($k:ty, $v:ty, $dtype:expr, $n:literal) => {{
            let mut keys: Option<Vec<$k>> = None;
            let mut values: Vec<$v> = Vec::new();
            for (row, map) in maps.iter().enumerate() {
                let kv = map
                    .try_extract_key_values::<$k, $v>()
                    .map_err(|e| e.to_string())?;
                match &keys {
                    None => keys = Some(kv.iter().map(|(k, _)| k.clone()).collect()),
                    Some(keys) => {
                        if keys.len() != kv.len() || keys.iter().zip(&kv).any(|(a, (b, _))| a != b)
                        {
                            return Err(format!(
                                "map {row} of the sequence has other keys than map 0, so the \
                                 maps make no table"
                            ));
                        }
                    }
                }
                values.extend(kv.into_iter().map(|(_, v)| v));
            }
            let columns = keys.map_or(0, |k| k.len());
            Tensor {
                name: name.to_owned(),
                dtype: $dtype,
                shape: vec![maps.len() as u64, columns as u64],
                data: encode::<$n, $v>(&values, <$v>::to_le_bytes),
            }
        }};
    }
    Ok(match (key, value_type) {
        (TensorElementType::Int64, TensorElementType::Float32) => rows!(i64, f32, DType::F32, 4),
        (TensorElementType::Int64, TensorElementType::Float64) => rows!(i64, f64, DType::F64, 8),
        (TensorElementType::String, TensorElementType::Float32) => {
            rows!(String, f32, DType::F32, 4)
        }
        (TensorElementType::String, TensorElementType::Float64) => {
            rows!(String, f64, DType::F64, 8)
        }
        (k, v) => {
            return Err(format!(
                "a sequence of map<{k}, {v}>; the engine turns maps from int64 or string to \
                 float or double into tensors"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_maps_to_an_ort_type_and_back() {
        use DType::*;
        for d in [
            F16, Bf16, F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Boolean, Utf8,
        ] {
            assert_eq!(dtype(ort_type(d)), Some(d), "{d:?}");
        }
        assert_eq!(dtype(TensorElementType::Complex64), None);
    }

    #[test]
    fn strings_encode_as_length_then_bytes() {
        assert_eq!(
            encode_strings(&["", "hé"]).unwrap(),
            [0, 0, 0, 0, 3, 0, 0, 0, b'h', 0xc3, 0xa9]
        );
    }

    #[test]
    fn little_endian_both_ways() {
        let xs = [1.5f32, -2.0];
        let bytes = encode::<4, f32>(&xs, f32::to_le_bytes);
        assert_eq!(decode::<4, f32>(&bytes, f32::from_le_bytes), xs);
    }
}
