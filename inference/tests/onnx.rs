//! The built-in ONNX engine on real models (scikit-learn, exported with skl2onnx, built at
//! test time by `fixtures/make_models.py`), checked against what ONNX Runtime's Python API
//! answers for the same inputs; and the engine refusing what it must refuse.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

mod common;

use atelier_inference::onnx::{
    Device, EngineError, InputError, ModelOptions, ModelSource, OnnxModel, OnnxRuntime, TensorSpec,
};
use atelier_inference::tensor::{DType, Tensor};
use common::{Models, assert_matches, models, tensor};
use serde_json::Value;

/// The runtime and the models, or `None` when the setup is missing (skipped outside CI).
fn setup() -> Option<(OnnxRuntime, &'static Models)> {
    let lib = common::library()?;
    let models = models()?;
    let runtime = OnnxRuntime::load(&lib).unwrap_or_else(|e| panic!("{e}"));
    Some((runtime, models))
}

fn load(runtime: &OnnxRuntime, models: &Models, file: &str) -> OnnxModel {
    OnnxModel::load(
        runtime,
        models.path(file).as_path(),
        &ModelOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn inputs(case: &Value) -> Vec<Tensor> {
    case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, v)| tensor(name, v))
        .collect()
}

/// Runs every case the script wrote for `file` and compares each output.
fn answers_as_python_does(file: &str) {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let model = load(&runtime, models, file);
    let cases = models.expected[file].as_array().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let outputs = model
            .run(inputs(case))
            .unwrap_or_else(|e| panic!("{file} case {i}: {e}"));
        let expected = case["outputs"].as_object().unwrap();
        assert_eq!(outputs.len(), expected.len(), "{file} case {i}: outputs");
        for out in &outputs {
            assert_matches(&format!("{file} case {i}"), out, &expected[&out.name]);
        }
    }
}

#[test]
fn the_mlp_classifier_answers_as_onnx_runtime_in_python_does() {
    answers_as_python_does("mlp.onnx");
}

#[test]
fn zipmap_probabilities_come_back_as_a_rows_by_classes_tensor() {
    answers_as_python_does("mlp_zipmap.onnx");
}

#[test]
fn logistic_regression_with_string_labels_answers_as_python_does() {
    answers_as_python_does("logreg.onnx");
}

#[test]
fn logistic_regression_without_zipmap_answers_as_python_does() {
    answers_as_python_does("logreg_plain.onnx");
}

#[test]
fn logistic_regression_with_integer_classes_answers_as_python_does() {
    answers_as_python_does("logreg_int.onnx");
}

#[test]
fn the_dense_layers_alone_answer_as_python_does() {
    answers_as_python_does("dense.onnx");
}

#[test]
fn every_dtype_goes_through_unchanged() {
    answers_as_python_does("dtypes.onnx");
}

#[test]
fn inputs_and_outputs_are_described_as_the_model_declares_them() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let spec = |name: &str, dtype, shape: &[i64]| TensorSpec {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
    };
    let mlp = load(&runtime, models, "mlp.onnx");
    assert_eq!(mlp.inputs(), [spec("X", DType::F32, &[-1, 64])]);
    assert_eq!(
        mlp.outputs(),
        [
            spec("label", DType::I64, &[-1]),
            spec("probabilities", DType::F32, &[-1, 10]),
        ]
    );
    let logreg = load(&runtime, models, "logreg.onnx");
    assert_eq!(logreg.inputs(), [spec("X", DType::F32, &[-1, 4])]);
    assert_eq!(
        logreg.outputs(),
        [
            spec("output_label", DType::Utf8, &[-1]),
            spec("output_probability", DType::F32, &[-1, -1]),
        ]
    );
}

#[test]
fn a_model_loads_from_bytes_as_from_a_file() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let bytes = std::fs::read(models.path("mlp.onnx")).unwrap();
    let model = OnnxModel::load(&runtime, bytes.as_slice(), &ModelOptions::default()).unwrap();
    let case = &models.expected["mlp.onnx"][1];
    let outputs = model.run(inputs(case)).unwrap();
    for out in &outputs {
        assert_matches("from bytes", out, &case["outputs"][&out.name]);
    }
}

fn mlp_input(rows: u64) -> Tensor {
    Tensor {
        name: "X".into(),
        dtype: DType::F32,
        shape: vec![rows, 64],
        data: vec![0; rows as usize * 64 * 4],
    }
}

/// The caller's mistakes: each an `EngineError::Input` naming the input and what is wrong.
#[test]
fn bad_inputs_are_refused_with_what_is_wrong_before_anything_runs() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let model = load(&runtime, models, "mlp.onnx");
    type Edit = fn(&mut Tensor);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "wrong name",
            |t| t.name = "x".into(),
            "no input named `x`: the model's inputs are `X`: f32 [N, 64]",
        ),
        (
            "wrong dtype",
            |t| {
                t.dtype = DType::F64;
                t.data.resize(t.data.len() * 2, 0);
            },
            "input `X` has dtype f64, the model takes f32",
        ),
        (
            "wrong shape",
            |t| t.shape = vec![4, 32],
            "input `X` has 32 in dimension 1 (shape [4, 32]), the model takes 64 there (shape [N, 64])",
        ),
        (
            "wrong rank",
            |t| t.shape = vec![2, 2, 64],
            "input `X` has shape [2, 2, 64], the model takes [N, 64] (2 dimensions)",
        ),
        (
            "truncated data",
            |t| t.data.truncate(510),
            "input `X`: shape [2, 64] of f32 needs 512 bytes of data, the tensor has 510",
        ),
    ];
    for (what, edit, message) in cases {
        let mut t = mlp_input(2);
        edit(&mut t);
        let err = model.run(vec![t]).expect_err(what);
        assert!(err.is_caller_fault(), "{what}: {err:?}");
        assert!(matches!(err, EngineError::Input(_)), "{what}: {err:?}");
        assert_eq!(err.to_string(), *message, "{what}");
    }
    let err = model.run(vec![]).unwrap_err();
    assert!(
        matches!(err, EngineError::Input(InputError::Missing { .. })),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "input `X`: f32 [N, 64] is missing");
    // The model still answers after all that.
    assert_eq!(model.run(vec![mlp_input(3)]).unwrap().len(), 2);
}

#[test]
fn a_corrupt_or_missing_model_is_a_model_error_not_a_panic() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let good = std::fs::read(models.path("mlp.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "garbage",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
        ),
        ("empty", Vec::new()),
        ("flipped bytes", {
            let mut b = good.clone();
            for i in (64..b.len()).step_by(97) {
                b[i] ^= 0x5a;
            }
            b
        }),
    ];
    for (what, bytes) in cases {
        match OnnxModel::load(&runtime, bytes.as_slice(), &ModelOptions::default()) {
            Err(e @ EngineError::Model { .. }) => {
                assert!(!e.is_caller_fault());
                let m = e.to_string();
                assert!(m.starts_with("cannot load the model ("), "{what}: {m}");
            }
            // Flipping bytes in the weights can leave a valid model; it must still run.
            Ok(model) if what == "flipped bytes" => {
                let _ = model.run(vec![mlp_input(1)]);
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    let corrupt = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("corrupt-{}.onnx", std::process::id()));
    std::fs::write(&corrupt, &good[..good.len() / 3]).unwrap();
    let err = OnnxModel::load(&runtime, corrupt.as_path(), &ModelOptions::default()).unwrap_err();
    std::fs::remove_file(&corrupt).unwrap();
    assert!(
        matches!(&err, EngineError::Model { source_desc, .. } if source_desc.ends_with(".onnx")),
        "{err:?}"
    );
    let missing = models.dir.join("no-such-model.onnx");
    let err = OnnxModel::load(&runtime, missing.as_path(), &ModelOptions::default()).unwrap_err();
    assert!(
        matches!(&err, EngineError::Model { source_desc, .. } if source_desc.contains("no-such-model.onnx")),
        "{err:?}"
    );
}

#[test]
fn a_model_needs_at_least_one_session() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let options = ModelOptions {
        sessions: 0,
        ..ModelOptions::default()
    };
    let path = models.path("mlp.onnx");
    let err = OnnxModel::load(&runtime, ModelSource::File(&path), &options).unwrap_err();
    assert!(err.to_string().contains("options.sessions is 0"), "{err}");
}

#[test]
fn asking_for_cuda_without_it_says_so() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    if runtime.cuda_available() {
        eprintln!("this ONNX Runtime has the CUDA execution provider: nothing to refuse");
        return;
    }
    let options = ModelOptions {
        device: Device::Cuda(0),
        ..ModelOptions::default()
    };
    let err = OnnxModel::load(&runtime, models.path("mlp.onnx").as_path(), &options).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Device {
                device: Device::Cuda(0),
                ..
            }
        ),
        "{err:?}"
    );
    let m = err.to_string();
    assert!(m.starts_with("cannot run on cuda:0: "), "{m}");
    assert!(m.contains("no CUDA execution provider"), "{m}");
    assert!(m.contains("ATELIER_ONNXRUNTIME_LIB"), "{m}");
}

/// 8 threads run at once, more threads than sessions (4, the default, and 1), each its own
/// inputs, and every answer is the one a lone run gives.
#[test]
fn runs_from_eight_threads_at_once_give_the_same_answers() {
    let Some((runtime, models)) = setup() else {
        return;
    };
    let cases: Vec<Tensor> = (0..8u64)
        .map(|t| {
            let rows = 1 + t % 3;
            let data = (0..rows * 64)
                .flat_map(|i| (((i * 31 + t * 7) % 17) as f32 / 8.0 - 1.0).to_le_bytes())
                .collect();
            Tensor {
                name: "X".into(),
                dtype: DType::F32,
                shape: vec![rows, 64],
                data,
            }
        })
        .collect();
    for sessions in [ModelOptions::default().sessions, 1] {
        let options = ModelOptions {
            sessions,
            ..ModelOptions::default()
        };
        let model = OnnxModel::load(&runtime, models.path("mlp.onnx").as_path(), &options).unwrap();
        let alone: Vec<Vec<Tensor>> = cases
            .iter()
            .map(|c| model.run(vec![c.clone()]).unwrap())
            .collect();
        std::thread::scope(|s| {
            for (case, want) in cases.iter().zip(&alone) {
                let model = &model;
                s.spawn(move || {
                    for _ in 0..50 {
                        assert_eq!(&model.run(vec![case.clone()]).unwrap(), want);
                    }
                });
            }
        });
    }
}

#[test]
fn a_model_is_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<OnnxModel>();
    both::<OnnxRuntime>();
}
