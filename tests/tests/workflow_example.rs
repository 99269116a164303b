//! The retrain example (`examples/workflows/retrain`) end to end, as its README runs it:
//! data preparation in Wasm (the csv-summary step) → a training job → a condition on its
//! accuracy → a model version registered from the job's output → a service deployed and
//! called; and a second run whose bar is too high skips registering and deploying. The
//! run's paths are in a real S3 server, through the owner's storage connection.

use std::time::Duration;

use atelier_tests::plugins::{built_python, repo_root, shared_cache, upload};
use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, Kernel};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

async fn wait_run(api: &Api, n: i64) -> Value {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let v = api
            .get(&format!("/v1/workflows/retrain/runs/{n}"))
            .await
            .expect_status(200)
            .clone();
        if v["status"] == "FAILED" {
            // The training job's log says why, when it was the job.
            let job = v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|s| s["child"]["id"].as_str().map(str::to_string));
            let log = match job {
                Some(id) => api.get(&format!("/v1/training-jobs/{id}/logs")).await.text,
                None => String::new(),
            };
            panic!("run {n} FAILED: {v:#}\njob log:\n{log}");
        }
        if ["COMPLETED", "STOPPED"].contains(&v["status"].as_str().unwrap()) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {n} still going: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retrain_example_prepares_trains_checks_registers_and_deploys() {
    let s3 = S3Server::start();
    let example = repo_root().join("examples/workflows/retrain");
    let data = s3.bucket("demo").join("data/iris");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("part-1.csv"),
        "sepal_length,sepal_width,species\n5.1,3.5,setosa\n4.9,3.0,setosa\n7.0,3.2,versicolor\n",
    )
    .unwrap();
    std::fs::write(
        data.join("part-2.csv"),
        "sepal_length,sepal_width,species\n6.4,3.2,versicolor\n",
    )
    .unwrap();
    let code = s3.bucket("demo").join("code");
    std::fs::create_dir_all(&code).unwrap();
    for f in ["train.py", "server.py"] {
        std::fs::copy(example.join(f), code.join(f)).unwrap();
    }

    let gw = Gateway::start_with(&[("ATELIER_PLUGIN_CACHE_DIR", &shared_cache())]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    let step_project = repo_root().join("examples/plugins/python-workflow-step");
    let wasm = built_python(&step_project).await;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(step_project.join("plugin.json")).unwrap()).unwrap();
    upload(&alice, &manifest, std::fs::read(wasm).unwrap(), &[])
        .await
        .expect_status(201);

    // As the README: create from the YAML, run with the connection and the roots.
    let token = alice.token().unwrap().to_string();
    let file = example.join("workflow.yaml");
    let out = gw
        .cli(
            &token,
            &["workflow", "create", "-f", &file.to_string_lossy()],
            &[],
        )
        .await;
    out.assert_ok("atelier workflow create");
    let storages = json!({"data": "/demo/data/", "code": "/demo/code/", "out": "/demo/out/"});
    let r = alice
        .post(
            "/v1/workflows/retrain/runs",
            json!({"connection": "local", "storages": storages}),
        )
        .await;
    let n = r.expect_status(201)["number"].as_i64().unwrap();
    let run = wait_run(&alice, n).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["connection"], "local");
    let id = run["id"].as_str().unwrap();

    // prep summarised the data into the bucket (staged there and back).
    let prep = step(&run, "prep");
    assert_eq!(
        prep["outputs"]["summary"],
        json!(format!("/demo/out/{id}/summary/")),
        "{prep}"
    );
    assert_eq!(prep["outputs"]["rows"], json!(4), "{prep}");
    let summaries: Vec<_> = std::fs::read_dir(s3.bucket("demo").join(format!("out/{id}/summary")))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(summaries.len(), 1);
    // train ran as a training job that read prep's output, and reported its accuracy.
    let train = step(&run, "train");
    assert_eq!(train["metrics"]["accuracy"], json!(1.0), "{train}");
    let job_id = train["child"]["id"].as_str().unwrap();
    let log = alice
        .get(&format!("/v1/training-jobs/{job_id}/logs?system=false"))
        .await;
    assert!(log.text.contains("prep saw 4 rows"), "{}", log.text);
    assert_eq!(step(&run, "check")["outputs"]["result"], json!(true));
    // register made a NORMAL version from the job's output; deploy a running service.
    let reg = step(&run, "register");
    assert_eq!(reg["variables"]["model_name"], "iris-centroids", "{reg}");
    let v = alice.get("/v1/models/iris-centroids/versions/0.0.1").await;
    assert_eq!(v.expect_status(200)["status"], "NORMAL");
    let deploy = step(&run, "deploy");
    let address = deploy["variables"]["access_address"].as_str().unwrap();
    let service_id = deploy["variables"]["service_id"].as_str().unwrap();
    assert!(
        address.ends_with(&format!("/v1/infers/{service_id}")),
        "{address}"
    );
    assert!(
        address.starts_with(&gw.base()),
        "{address} is not on {}",
        gw.base()
    );
    // The service answers with the model the run trained.
    let path = address.strip_prefix(&gw.base()).unwrap();
    let r = alice.post(path, json!({"features": [6.9, 3.1]})).await;
    assert_eq!(r.expect_status(200)["label"], "versicolor", "{}", r.text);

    // Too high a bar: trained and checked, nothing registered or deployed.
    let r = alice
        .post(
            "/v1/workflows/retrain/runs",
            json!({"connection": "local", "storages": storages,
                   "parameters": {"min_accuracy": 1.5, "model_name": "never"}}),
        )
        .await;
    let n = r.expect_status(201)["number"].as_i64().unwrap();
    let run = wait_run(&alice, n).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(step(&run, "check")["outputs"]["result"], json!(false));
    assert_eq!(step(&run, "register")["status"], "SKIPPED");
    assert_eq!(step(&run, "deploy")["status"], "SKIPPED");
    alice.get("/v1/models/never").await.expect_status(404);

    // The same workflow written with the SDK in a notebook: it means the same (released,
    // no new version), and its run registers version 0.0.2 and updates the service.
    let nb = gw.create_notebook(&token, "wf-example").await;
    gw.wait_status(&token, &nb, "RUNNING").await;
    let mut k = Kernel::start(&alice, &nb).await;
    let source = std::fs::read_to_string(example.join("workflow.py")).unwrap();
    let code = format!(
        "{source}\nimport json\nview = workflow.release()\n\
         run = workflow.run(connection='local', storages={{'data': '/demo/data/', \
         'code': '/demo/code/', 'out': '/demo/out/'}})\n\
         run.wait(timeout=600, interval=0.5)\n\
         print(json.dumps({{'changed': view['changed'], 'version': view['version'], \
         'status': run.status, 'model': run.step('register')['variables']}}))\n"
    );
    let printed = k.run(&code).await;
    let v: Value = serde_json::from_str(printed.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(v["changed"], json!(false), "{v}");
    assert_eq!(v["version"], json!(1), "{v}");
    assert_eq!(v["status"], "COMPLETED", "{v}");
    assert_eq!(v["model"]["model_version"], "0.0.2", "{v}");
    let svc = alice.get("/v1/services/iris-live").await;
    let svc = svc.expect_status(200);
    assert_eq!(svc["models"][0]["version"], "0.0.2", "{svc}");
}

/// Stopping a run while its service step deploys stops the service it started (the seed's
/// stop cascades to real-time services as to training jobs).
#[tokio::test(flavor = "multi_thread")]
async fn stopping_a_run_stops_the_service_its_step_is_deploying() {
    let s3 = S3Server::start();
    let model = s3.bucket("models").join("echo/model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        json!({"model_algorithm": "echo", "model_type": "PyTorch",
               "health": {"check_method": "HTTP", "url": "/health", "protocol": "http",
                          "period_seconds": 1, "failure_threshold": 3}})
        .to_string(),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("tests/fixtures/echo-engine/server.py"),
        model.join("server.py"),
    )
    .unwrap();
    let gw = Gateway::start().await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    atelier_tests::serving::import_engine(&alice, "echo", "echo").await;
    // Its instances never become healthy: the service stays DEPLOYING.
    let def = json!({
        "name": "ship",
        "steps": [{"name": "deploy", "step_type": "service", "outputs": [{"name": "s"}],
                   "properties": {"name": "echo-svc", "timeout_minutes": 30,
                                  "models": [{"model": "echo", "version": "0.0.1",
                                              "envs": {"FAIL_HEALTH": "1"}}]}}]
    });
    alice.post("/v1/workflows", def).await.expect_status(201);
    let r = alice.post("/v1/workflows/ship/runs", json!({})).await;
    let n = r.expect_status(201)["number"].as_i64().unwrap();
    let id = atelier_tests::eventually("the service recorded", LONG, || async {
        let run = alice.get(&format!("/v1/workflows/ship/runs/{n}")).await;
        step(&run.json, "deploy")["child"]["id"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    let svc = alice.get(&format!("/v1/services/{id}")).await;
    assert_eq!(svc.expect_status(200)["status"], "DEPLOYING");
    alice
        .post_empty(&format!("/v1/workflows/ship/runs/{n}/stop"))
        .await
        .expect_status(200);
    let run = atelier_tests::eventually("the run STOPPED", LONG, || async {
        let run = alice.get(&format!("/v1/workflows/ship/runs/{n}")).await;
        (run.json["status"] == "STOPPED").then(|| run.json.clone())
    })
    .await;
    assert_eq!(step(&run, "deploy")["status"], "STOPPED", "{run:#}");
    let svc = alice.get(&format!("/v1/services/{id}")).await;
    assert_eq!(svc.expect_status(200)["status"], "STOPPED", "{}", svc.text);
}
