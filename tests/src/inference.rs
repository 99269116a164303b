//! The inference tests' pieces: the example iris model (examples/inference/iris:
//! scikit-learn → ONNX with skl2onnx, built here) as a package with or without its Python
//! processor, a gateway with ONNX Runtime, and a model imported from the test S3 server.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::plugins::{built_python, repo_root};
use crate::{Api, Gateway, eventually, ml_python, onnxruntime_lib};

/// How long an import or a deploy may take on a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(120);

/// The example's package (model/iris.onnx, labels, config.json) written under `dir`, with
/// the example's processor when `processor`.
pub async fn iris_package(dir: &Path, processor: bool) {
    let example = repo_root().join("examples/inference/iris");
    let status = std::process::Command::new(ml_python())
        .arg(example.join("train.py"))
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running train.py");
    assert!(status.success(), "train.py failed");
    if processor {
        with_processor(dir, &example.join("processor")).await;
    }
}

/// The Python processor `project` (built with componentize-py, cached) as the package's
/// `model/customize_service.wasm`, with its plugin.json.
pub async fn with_processor(dir: &Path, project: &Path) {
    let wasm = built_python(project).await;
    std::fs::copy(&wasm, dir.join("model/customize_service.wasm")).unwrap();
    std::fs::copy(project.join("plugin.json"), dir.join("model/plugin.json")).unwrap();
}

/// A gateway that runs ONNX models (ONNX Runtime from the ML virtualenv's wheel).
pub async fn gateway(env: &[(&str, &str)]) -> Gateway {
    let lib = onnxruntime_lib();
    let mut all = vec![("ATELIER_ONNXRUNTIME_LIB", lib.as_str())];
    all.extend_from_slice(env);
    Gateway::start_with(&all).await
}

/// Imports `obs://models/{folder}/` through connection `local` as model `name` 0.0.1 and
/// waits until it is NORMAL.
pub async fn import(api: &Api, name: &str, folder: &str) {
    let r = api
        .post(
            "/v1/models",
            json!({"name": name, "source": {"type": "obs", "connection": "local",
                   "path": format!("obs://models/{folder}/")}}),
        )
        .await;
    r.expect_status(202);
    let v = eventually("the import", WAIT, || async {
        let v = api.get(&format!("/v1/models/{name}/versions/0.0.1")).await;
        let v = v.expect_status(200).clone();
        (v["status"] != "IMPORTING").then_some(v)
    })
    .await;
    assert_eq!(v["status"], "NORMAL", "{v}");
}
