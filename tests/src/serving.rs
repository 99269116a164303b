//! What the inference tests share: the example iris package (examples/inference/iris:
//! scikit-learn → ONNX with skl2onnx, built here), a gateway with ONNX Runtime, a model
//! imported from the S3 server, a service's status awaited.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::plugins::{built_python, repo_root};
use crate::{Api, Gateway, eventually, ml_python, onnxruntime_lib};

/// How long an import or a deploy may take on a busy CI machine.
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
        let wasm = built_python(&example.join("processor")).await;
        std::fs::copy(&wasm, dir.join("model/customize_service.wasm")).unwrap();
        std::fs::copy(
            example.join("processor/plugin.json"),
            dir.join("model/plugin.json"),
        )
        .unwrap();
    }
}

/// The processor `project` (built with `atelier plugin build`, cached) as the package's
/// `model/customize_service.wasm`, with its plugin.json.
pub async fn with_processor(dir: &Path, project: &Path) {
    let wasm = built_python(project).await;
    std::fs::copy(&wasm, dir.join("model/customize_service.wasm")).unwrap();
    std::fs::copy(project.join("plugin.json"), dir.join("model/plugin.json")).unwrap();
}

/// The example's model with the hostile test processor (tests/fixtures/hostile-processor),
/// which echoes, logs, floods its log or misbehaves as the request's `mode` says.
pub async fn hostile_package(dir: &Path) {
    iris_package(dir, false).await;
    with_processor(dir, &repo_root().join("tests/fixtures/hostile-processor")).await;
}

/// The example's package with a model file that is no ONNX model: it imports, but does not
/// load.
pub async fn broken_package(dir: &Path) {
    iris_package(dir, false).await;
    std::fs::write(dir.join("model/iris.onnx"), b"not a model").unwrap();
}

/// A gateway whose built-in engine finds ONNX Runtime, with `env` besides.
pub async fn gateway(env: &[(&str, &str)]) -> Gateway {
    let lib = onnxruntime_lib();
    let mut all = vec![("ATELIER_ONNXRUNTIME_LIB", lib.as_str())];
    all.extend_from_slice(env);
    Gateway::start_with(&all).await
}

/// Creates model `name` version 0.0.1 from `obs://models/{folder}/` (the connection
/// "local") and waits until it is NORMAL.
pub async fn import(api: &Api, name: &str, folder: &str) {
    import_with(api, name, folder, json!({})).await;
}

/// The same for a model run by its own server: `model/server.py` (tests/fixtures/
/// echo-engine, batch-engine), started by its start command.
pub async fn import_engine(api: &Api, name: &str, folder: &str) {
    let extra = json!({"start_command": "python3 /home/mind/model/server.py"});
    import_with(api, name, folder, extra).await;
}

async fn import_with(api: &Api, name: &str, folder: &str, extra: Value) {
    let mut body = json!({"name": name, "source": {"type": "obs", "connection": "local",
                          "path": format!("obs://models/{folder}/")}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    let r = api.post("/v1/models", body).await;
    r.expect_status(202);
    let v = eventually("the import", WAIT, || async {
        let v = api.get(&format!("/v1/models/{name}/versions/0.0.1")).await;
        let v = v.expect_status(200).clone();
        (v["status"] != "IMPORTING").then_some(v)
    })
    .await;
    assert_eq!(v["status"], "NORMAL", "{v}");
}

/// Adds the next version of model `name` from `obs://models/{folder}/` and waits until it,
/// `version`, is NORMAL.
pub async fn import_version(api: &Api, name: &str, folder: &str, version: &str) {
    let r = api
        .post(
            &format!("/v1/models/{name}/versions"),
            json!({"source": {"type": "obs", "connection": "local",
                   "path": format!("obs://models/{folder}/")}}),
        )
        .await;
    r.expect_status(202);
    eventually(&format!("{name} {version}"), WAIT, || async {
        let v = api
            .get(&format!("/v1/models/{name}/versions/{version}"))
            .await;
        (v.json["status"] == "NORMAL").then_some(())
    })
    .await;
}

/// Deploys service `name` of `model` `version` and waits until it is RUNNING; its id.
pub async fn deploy(api: &Api, name: &str, model: &str, version: &str) -> String {
    let r = api
        .post(
            "/v1/services",
            json!({"name": name, "models": [{"model": model, "version": version}]}),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_service(api, &id, "RUNNING").await;
    id
}

/// Service `id` once it is `want`.
pub async fn wait_service(api: &Api, id: &str, want: &str) -> Value {
    eventually(&format!("service {id} {want}"), WAIT, || async {
        let s = api.get(&format!("/v1/services/{id}")).await;
        let s = s.expect_status(200).clone();
        (s["status"] == want).then_some(s)
    })
    .await
}
