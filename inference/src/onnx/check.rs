//! The first stage of a run: the caller's tensors checked against the model's inputs before
//! anything reaches ONNX Runtime. Names, element types, ranks, fixed dimensions, the data
//! length, and the elements whose bytes can be wrong (booleans, strings) are all checked
//! here, so a hostile or careless caller gets an [`InputError`] that names the input and what
//! is wrong, and ONNX Runtime only ever sees well-formed tensors.
//!
//! Only [`inputs`] makes [`Checked`] values, and the conversion to ONNX Runtime takes nothing
//! else.

use std::fmt;

use crate::tensor::{DType, Tensor};

/// What the engine says about one of a model's inputs or outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    /// One entry per dimension; `-1` where the model leaves it open (a batch axis, say).
    pub shape: Vec<i64>,
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: {} {}",
            self.name,
            dtype_name(self.dtype),
            Dims(&self.shape)
        )
    }
}

/// A caller's inputs that do not fit the model. Nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("no input named `{name}`: the model's inputs are {expected}")]
    Unknown { name: String, expected: String },
    #[error("input `{name}` is given more than once")]
    Duplicate { name: String },
    #[error("input {expected} is missing")]
    Missing { expected: String },
    #[error("input `{name}` has dtype {got}, the model takes {expected}")]
    DType {
        name: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("input `{name}` has shape {got}, the model takes {expected} ({rank} dimensions)")]
    Rank {
        name: String,
        expected: String,
        got: String,
        rank: usize,
    },
    #[error(
        "input `{name}` has {got} in dimension {axis} (shape {shape}), the model takes {expected} \
         there (shape {model_shape})"
    )]
    Dim {
        name: String,
        axis: usize,
        expected: i64,
        got: u64,
        shape: String,
        model_shape: String,
    },
    #[error("input `{name}`: shape {shape} has more elements than this machine can address")]
    TooLarge { name: String, shape: String },
    #[error(
        "input `{name}`: shape {shape} of {dtype} needs {expected} bytes of data, the tensor has {got}"
    )]
    DataLength {
        name: String,
        shape: String,
        dtype: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("input `{name}`, element {index}: {problem}")]
    Element {
        name: String,
        index: usize,
        problem: String,
    },
    #[error(
        "input `{name}`: shape {shape} holds {expected} string(s), the data ends after {got} \
         (each string: a little-endian u32 byte length, then its UTF-8 bytes)"
    )]
    StringCount {
        name: String,
        shape: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "input `{name}`: shape {shape} holds {expected} string(s), {extra} more byte(s) follow them"
    )]
    TrailingBytes {
        name: String,
        shape: String,
        expected: usize,
        extra: usize,
    },
}

/// A tensor that passed [`inputs`]: in the model's input order, dimensions as ONNX Runtime
/// takes them, strings decoded.
#[derive(Debug)]
pub(crate) struct Checked {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub data: CheckedData,
}

#[derive(Debug)]
pub(crate) enum CheckedData {
    /// Fixed-size elements, little-endian, exactly `elements × size` bytes.
    Fixed(Vec<u8>),
    /// UTF-8 strings without NUL bytes (ONNX Runtime's string tensors are C strings).
    Strings(Vec<String>),
}

/// Checks `given` against the model's `specs` and puts them in the model's order.
pub(crate) fn inputs(specs: &[TensorSpec], given: Vec<Tensor>) -> Result<Vec<Checked>, InputError> {
    let mut slots: Vec<Option<Tensor>> = specs.iter().map(|_| None).collect();
    for tensor in given {
        let Some(i) = specs.iter().position(|s| s.name == tensor.name) else {
            return Err(InputError::Unknown {
                name: tensor.name,
                expected: list(specs),
            });
        };
        if slots[i].is_some() {
            return Err(InputError::Duplicate { name: tensor.name });
        }
        slots[i] = Some(tensor);
    }
    specs
        .iter()
        .zip(slots)
        .map(|(spec, slot)| match slot {
            Some(tensor) => one(spec, tensor),
            None => Err(InputError::Missing {
                expected: spec.to_string(),
            }),
        })
        .collect()
}

fn one(spec: &TensorSpec, tensor: Tensor) -> Result<Checked, InputError> {
    let Tensor {
        name,
        dtype,
        shape,
        data,
    } = tensor;
    if dtype != spec.dtype {
        return Err(InputError::DType {
            name,
            expected: dtype_name(spec.dtype),
            got: dtype_name(dtype),
        });
    }
    if shape.len() != spec.shape.len() {
        return Err(InputError::Rank {
            name,
            expected: Dims(&spec.shape).to_string(),
            got: Dims(&shape).to_string(),
            rank: spec.shape.len(),
        });
    }
    let mut dims = Vec::with_capacity(shape.len());
    for (axis, (&got, &expected)) in shape.iter().zip(&spec.shape).enumerate() {
        // A model dimension below zero is open; ONNX Runtime reports open ones as -1.
        if expected >= 0 && u64::try_from(expected) != Ok(got) {
            return Err(InputError::Dim {
                name,
                axis,
                expected,
                got,
                shape: Dims(&shape).to_string(),
                model_shape: Dims(&spec.shape).to_string(),
            });
        }
        match i64::try_from(got) {
            Ok(d) => dims.push(d),
            Err(_) => return Err(too_large(name, &shape)),
        }
    }
    let Some(elements) = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
    else {
        return Err(too_large(name, &shape));
    };
    let data = match dtype.size() {
        Some(size) => {
            let Some(expected) = elements.checked_mul(size) else {
                return Err(too_large(name, &shape));
            };
            if data.len() != expected {
                return Err(InputError::DataLength {
                    name,
                    shape: Dims(&shape).to_string(),
                    dtype: dtype_name(dtype),
                    expected,
                    got: data.len(),
                });
            }
            if dtype == DType::Boolean
                && let Some(index) = data.iter().position(|&b| b > 1)
            {
                return Err(InputError::Element {
                    name,
                    index,
                    problem: format!("a boolean is the byte 0 or 1, not {}", data[index]),
                });
            }
            CheckedData::Fixed(data)
        }
        None => CheckedData::Strings(strings(&name, &shape, elements, &data)?),
    };
    Ok(Checked {
        name,
        dtype,
        shape: dims,
        data,
    })
}

/// Decodes the `utf8` layout of `tensor.rs`: per element a little-endian u32 byte length, then
/// that many bytes of UTF-8.
fn strings(
    name: &str,
    shape: &[u64],
    elements: usize,
    mut data: &[u8],
) -> Result<Vec<String>, InputError> {
    let element = |index: usize, problem: String| InputError::Element {
        name: name.to_owned(),
        index,
        problem,
    };
    // Every string takes at least its 4-byte length, so this bounds the allocation by the data.
    let mut out = Vec::with_capacity(elements.min(data.len() / 4));
    while !data.is_empty() {
        let index = out.len();
        if index == elements {
            return Err(InputError::TrailingBytes {
                name: name.to_owned(),
                shape: Dims(shape).to_string(),
                expected: elements,
                extra: data.len(),
            });
        }
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            return Err(element(
                index,
                format!("{} bytes left where a 4-byte length starts", data.len()),
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(element(
                index,
                format!("its length says {len} bytes, {} are left", rest.len()),
            ));
        }
        let (bytes, rest) = rest.split_at(len);
        let s =
            std::str::from_utf8(bytes).map_err(|e| element(index, format!("not UTF-8 ({e})")))?;
        if let Some(at) = s.find('\0') {
            return Err(element(
                index,
                format!("a NUL byte at byte {at} (ONNX Runtime's strings end at NUL)"),
            ));
        }
        out.push(s.to_owned());
        data = rest;
    }
    if out.len() != elements {
        return Err(InputError::StringCount {
            name: name.to_owned(),
            shape: Dims(shape).to_string(),
            expected: elements,
            got: out.len(),
        });
    }
    Ok(out)
}

fn too_large(name: String, shape: &[u64]) -> InputError {
    InputError::TooLarge {
        name,
        shape: Dims(shape).to_string(),
    }
}

fn list(specs: &[TensorSpec]) -> String {
    if specs.is_empty() {
        return "none".to_owned();
    }
    specs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dtype's name as the API spells it (`tensor.rs`'s serde names).
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::Bf16 => "bf16",
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I8 => "i8",
        DType::I16 => "i16",
        DType::I32 => "i32",
        DType::I64 => "i64",
        DType::U8 => "u8",
        DType::U16 => "u16",
        DType::U32 => "u32",
        DType::U64 => "u64",
        DType::Boolean => "boolean",
        DType::Utf8 => "utf8",
    }
}

/// A shape as `[N, 64]`: open model dimensions (below zero) as `N`.
struct Dims<'a, T>(&'a [T]);

impl<T: Copy + Into<i128>> fmt::Display for Dims<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, &d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let d: i128 = d.into();
            if d < 0 {
                f.write_str("N")?;
            } else {
                write!(f, "{d}")?;
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: DType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn tensor(name: &str, dtype: DType, shape: &[u64], data: Vec<u8>) -> Tensor {
        Tensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data,
        }
    }

    fn utf8(items: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in items {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    fn specs() -> Vec<TensorSpec> {
        vec![
            spec("x", DType::F32, &[-1, 4]),
            spec("flag", DType::Boolean, &[2]),
            spec("words", DType::Utf8, &[-1]),
        ]
    }

    fn good() -> Vec<Tensor> {
        vec![
            tensor("words", DType::Utf8, &[2], utf8(&["a", "日本"])),
            tensor("x", DType::F32, &[2, 4], vec![0; 32]),
            tensor("flag", DType::Boolean, &[2], vec![1, 0]),
        ]
    }

    #[test]
    fn well_formed_inputs_come_back_in_the_models_order() {
        let checked = inputs(&specs(), good()).unwrap();
        let names: Vec<_> = checked.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["x", "flag", "words"]);
        assert_eq!(checked[0].shape, [2, 4]);
        match &checked[2].data {
            CheckedData::Strings(s) => assert_eq!(s, &["a", "日本"]),
            other => panic!("{other:?}"),
        }
    }

    /// Each case changes one thing in `good()` and names the error it must give.
    #[test]
    fn each_fault_is_named() {
        type Edit = fn(&mut Vec<Tensor>);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "unknown name",
                |t| t[1].name = "X".into(),
                "no input named `X`: the model's inputs are `x`: f32 [N, 4], `flag`: boolean [2], `words`: utf8 [N]",
            ),
            (
                "duplicate",
                |t| t.push(tensor("flag", DType::Boolean, &[2], vec![0, 0])),
                "input `flag` is given more than once",
            ),
            (
                "missing",
                |t| {
                    t.remove(2);
                },
                "input `flag`: boolean [2] is missing",
            ),
            (
                "dtype",
                |t| t[1].dtype = DType::F64,
                "input `x` has dtype f64, the model takes f32",
            ),
            (
                "rank",
                |t| t[1].shape = vec![8, 4, 1],
                "input `x` has shape [8, 4, 1], the model takes [N, 4] (2 dimensions)",
            ),
            (
                "fixed dimension",
                |t| t[1].shape = vec![4, 2],
                "input `x` has 2 in dimension 1 (shape [4, 2]), the model takes 4 there (shape [N, 4])",
            ),
            (
                "truncated data",
                |t| t[1].data.truncate(31),
                "input `x`: shape [2, 4] of f32 needs 32 bytes of data, the tensor has 31",
            ),
            (
                "data too long",
                |t| t[1].data.push(0),
                "input `x`: shape [2, 4] of f32 needs 32 bytes of data, the tensor has 33",
            ),
            (
                "a dimension no i64 holds",
                |t| {
                    t[1].shape = vec![u64::MAX, 4];
                },
                "input `x`: shape [18446744073709551615, 4] has more elements than this machine can address",
            ),
            (
                "elements overflow",
                |t| {
                    t[1].shape = vec![1 << 62, 4];
                },
                "input `x`: shape [4611686018427387904, 4] has more elements than this machine can address",
            ),
            (
                "boolean byte",
                |t| t[2].data = vec![0, 2],
                "input `flag`, element 1: a boolean is the byte 0 or 1, not 2",
            ),
            (
                "string length past the end",
                |t| {
                    let n = t[0].data.len();
                    t[0].data.truncate(n - 1);
                },
                "input `words`, element 1: its length says 6 bytes, 5 are left",
            ),
            (
                "a partial length",
                |t| t[0].data.extend_from_slice(&[1, 0]),
                "input `words`: shape [2] holds 2 string(s), 2 more byte(s) follow them",
            ),
            (
                "too few strings",
                |t| t[0].shape = vec![3],
                "input `words`: shape [3] holds 3 string(s), the data ends after 2 (each string: a little-endian u32 byte length, then its UTF-8 bytes)",
            ),
            (
                "too many strings",
                |t| t[0].shape = vec![1],
                "input `words`: shape [1] holds 1 string(s), 10 more byte(s) follow them",
            ),
            (
                "not UTF-8",
                |t| t[0].data = [utf8(&["a"]), vec![1, 0, 0, 0, 0xff]].concat(),
                "input `words`, element 1: not UTF-8 (invalid utf-8 sequence of 1 bytes from index 0)",
            ),
            (
                "NUL",
                |t| t[0].data = utf8(&["a", "b\0c"]),
                "input `words`, element 1: a NUL byte at byte 1 (ONNX Runtime's strings end at NUL)",
            ),
        ];
        for (what, edit, message) in cases {
            let mut given = good();
            edit(&mut given);
            let err = inputs(&specs(), given).expect_err(what);
            assert_eq!(err.to_string(), *message, "{what}");
        }
    }

    #[test]
    fn a_huge_string_count_allocates_by_the_data_not_the_shape() {
        let specs = [spec("w", DType::Utf8, &[-1])];
        let err = inputs(
            &specs,
            vec![tensor("w", DType::Utf8, &[1 << 40], utf8(&["a"]))],
        );
        assert!(
            matches!(err, Err(InputError::StringCount { got: 1, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn empty_tensors_are_fine() {
        let specs = [
            spec("x", DType::F32, &[-1, 4]),
            spec("w", DType::Utf8, &[-1]),
        ];
        let given = vec![
            tensor("x", DType::F32, &[0, 4], vec![]),
            tensor("w", DType::Utf8, &[0], vec![]),
        ];
        let checked = inputs(&specs, given).unwrap();
        assert_eq!(checked[0].shape, [0, 4]);
    }
}
