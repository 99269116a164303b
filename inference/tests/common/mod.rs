//! What the ONNX engine's tests share: the ONNX Runtime library and the ML virtualenv that
//! scripts/test.sh prepares, the models `fixtures/make_models.py` builds with it, and
//! tensors to and from the JSON the script writes.

#![allow(dead_code, reason = "each test binary uses part of it")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use atelier_inference::tensor::{DType, Tensor};
use serde_json::Value;

/// A test-setup variable. Unset, the test is skipped with a line saying so, except under CI,
/// where a missing setup fails the run (as the backend conformance tests do).
#[allow(clippy::disallowed_methods, reason = "the test setup's variables")]
pub fn setup_var(var: &str) -> Option<PathBuf> {
    let v = std::env::var_os(var).filter(|v| !v.is_empty());
    if v.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{var} is not set: CI runs the ONNX engine's tests (scripts/test.sh sets it from \
             scripts/lib.sh's ml_venv and onnxruntime_lib)"
        );
        eprintln!(
            "{var} is not set: skipping (bash scripts/test.sh sets it; or source scripts/lib.sh \
             and export ATELIER_TEST_ML_VENV=$(ml_venv) \
             ATELIER_ONNXRUNTIME_LIB=$(onnxruntime_lib))"
        );
    }
    v.map(PathBuf::from)
}

/// The library to load (`ATELIER_ONNXRUNTIME_LIB`), or `None` to skip.
pub fn library() -> Option<PathBuf> {
    setup_var("ATELIER_ONNXRUNTIME_LIB")
}

pub struct Models {
    pub dir: PathBuf,
    pub expected: Value,
}

impl Models {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// The models and ONNX Runtime's answers, built once per script version under the cargo
/// target dir (`ATELIER_TEST_ML_VENV` runs the script), or `None` to skip.
pub fn models() -> Option<&'static Models> {
    static MODELS: OnceLock<Option<Models>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let venv = setup_var("ATELIER_TEST_ML_VENV")?;
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_models.py");
            let text = std::fs::read(&script).unwrap();
            let mut h = DefaultHasher::new();
            text.hash(&mut h);
            venv.hash(&mut h);
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("onnx-models-{:016x}", h.finish()));
            if !dir.join("expected.json").is_file() {
                let partial = dir.with_extension(format!("partial-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&partial);
                let out = Command::new(venv.join("bin/python"))
                    .arg(&script)
                    .arg(&partial)
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("running {}: {e}", venv.join("bin/python").display())
                    });
                assert!(
                    out.status.success(),
                    "make_models.py failed: {}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                // Another test binary may have finished first; either copy is the same.
                if std::fs::rename(&partial, &dir).is_err() {
                    let _ = std::fs::remove_dir_all(&partial);
                }
            }
            let expected = std::fs::read(dir.join("expected.json")).unwrap();
            Some(Models {
                expected: serde_json::from_slice(&expected).unwrap(),
                dir,
            })
        })
        .as_ref()
}

fn dtype(v: &Value) -> DType {
    serde_json::from_value(v.clone()).unwrap()
}

pub fn utf8(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// A tensor from the script's `{dtype, shape, data}`.
pub fn tensor(name: &str, v: &Value) -> Tensor {
    let dtype = dtype(&v["dtype"]);
    let shape: Vec<u64> = serde_json::from_value(v["shape"].clone()).unwrap();
    let items = v["data"].as_array().unwrap();
    let mut data = Vec::new();
    for x in items {
        match dtype {
            DType::F32 => data.extend((x.as_f64().unwrap() as f32).to_le_bytes()),
            DType::F64 => data.extend(x.as_f64().unwrap().to_le_bytes()),
            DType::I32 => data.extend(i32::try_from(x.as_i64().unwrap()).unwrap().to_le_bytes()),
            DType::I64 => data.extend(x.as_i64().unwrap().to_le_bytes()),
            DType::U8 => data.push(u8::try_from(x.as_u64().unwrap()).unwrap()),
            DType::Boolean => data.push(u8::from(x.as_bool().unwrap())),
            DType::Utf8 => data.extend(utf8(&[x.as_str().unwrap()])),
            other => panic!("the script writes no {other:?}"),
        }
    }
    Tensor {
        name: name.to_owned(),
        dtype,
        shape,
        data,
    }
}

/// The elements of a tensor, for comparing.
#[derive(Debug, PartialEq)]
pub enum Elements {
    Float(Vec<f64>),
    Int(Vec<i128>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

pub fn elements(t: &Tensor) -> Elements {
    fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N).map(|c| c.try_into().unwrap())
    }
    match t.dtype {
        DType::F32 => Elements::Float(
            chunks(&t.data)
                .map(|b| f32::from_le_bytes(b).into())
                .collect(),
        ),
        DType::F64 => Elements::Float(chunks(&t.data).map(f64::from_le_bytes).collect()),
        DType::I32 => Elements::Int(
            chunks(&t.data)
                .map(|b| i32::from_le_bytes(b).into())
                .collect(),
        ),
        DType::I64 => Elements::Int(
            chunks(&t.data)
                .map(|b| i64::from_le_bytes(b).into())
                .collect(),
        ),
        DType::U8 => Elements::Int(t.data.iter().map(|&b| b.into()).collect()),
        DType::Boolean => Elements::Bool(t.data.iter().map(|&b| b == 1).collect()),
        DType::Utf8 => {
            let mut out = Vec::new();
            let mut rest = &t.data[..];
            while !rest.is_empty() {
                let (len, tail) = rest.split_at(4);
                let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
                out.push(String::from_utf8(tail[..len].to_vec()).unwrap());
                rest = &tail[len..];
            }
            Elements::Str(out)
        }
        other => panic!("no comparison for {other:?}"),
    }
}

/// Asserts that `got` is `expected` (the script's JSON): same dtype and shape, floats within
/// 1e-5 (relative beyond 1), everything else exactly.
pub fn assert_matches(what: &str, got: &Tensor, expected: &Value) {
    let want = tensor(&got.name, expected);
    assert_eq!(got.dtype, want.dtype, "{what}: dtype of `{}`", got.name);
    assert_eq!(got.shape, want.shape, "{what}: shape of `{}`", got.name);
    match (elements(got), elements(&want)) {
        (Elements::Float(g), Elements::Float(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: `{}`", got.name);
            for (i, (g, w)) in g.iter().zip(&w).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{what}: `{}` element {i} is {g}, ONNX Runtime in Python says {w}",
                    got.name
                );
            }
        }
        (g, w) => assert_eq!(g, w, "{what}: `{}`", got.name),
    }
}
