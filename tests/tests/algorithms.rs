//! Training algorithm assets (`/v1/algorithms`, `atelier algorithm`): a container algorithm
//! with its code dir in object storage and a Wasm algorithm described by its component,
//! registered, shown, listed, previewed and deleted; refusals that name their field and
//! create nothing; hostile components (another world, a trapping or looping describe(), an
//! invalid spec) refused.

use atelier_tests::plugins::{dummy_wat, gateway, repo_root, upload, wat_component};
use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!(
        "tests/plugins/training-algorithm/{name}/component.wat"
    )))
    .unwrap()
}

async fn algorithm_names(api: &Api) -> Vec<String> {
    api.get("/v1/algorithms").await.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

/// A code dir `obs://code/demo-code/` with `train.py` and `sub/x.txt`.
fn code_dir(s3: &S3Server) {
    let bucket = s3.bucket("code");
    std::fs::create_dir_all(bucket.join("demo-code/sub")).unwrap();
    std::fs::write(bucket.join("demo-code/train.py"), "print('hi')\n").unwrap();
    std::fs::write(bucket.join("demo-code/sub/x.txt"), "x").unwrap();
}

fn container(name: &str) -> Value {
    json!({
        "name": name,
        "description": "a script from a notebook",
        "code_dir": {"connection": "local", "path": "obs://code/demo-code"},
        "boot_file": "train.py",
        "inputs": [{"name": "data_url", "description": "the data"}],
        "outputs": [{"name": "train_url", "obtained_from": "environment_variables"}],
        "hyperparameters": [
            {"name": "learning_rate", "type": "FLOAT", "default": 0.01, "range": [0.0, 1.0],
             "description": "Learning rate, step-1."},
            {"name": "epochs", "type": "INT", "default": 3, "required": true},
            {"name": "optimizer", "type": "STR", "default": "sgd", "choices": ["sgd", "adam"]},
            {"name": "verbose", "type": "Boolean"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn container_and_wasm_algorithms_are_registered_shown_listed_and_kept_to_their_owner() {
    let s3 = S3Server::start();
    code_dir(&s3);
    let gw = gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    let bob = gw.api(&gw.create_user("bob").await);
    s3.connect(&alice, "local").await;

    // A container algorithm: its code dir listed, its schema kept as given.
    let a = alice
        .post("/v1/algorithms", container("mnist"))
        .await
        .expect_status(201)
        .clone();
    assert_eq!(a["kind"], "container");
    assert_eq!(a["owner"], "alice");
    assert_eq!(a["code_dir"]["path"], "obs://code/demo-code/");
    assert_eq!(a["code_dir"]["files"], 2);
    assert_eq!(a["hyperparameters"][0]["type"], "Float");
    assert_eq!(a["hyperparameters"][1]["required"], true);
    assert_eq!(a["outputs"][0]["obtained_from"], "environment_variables");
    let id = a["id"].as_str().unwrap().to_string();

    // A command algorithm in the notebook environment (no image, no code dir).
    let c = alice
        .post(
            "/v1/algorithms",
            json!({"name": "env-dump", "boot_command": "env && echo done"}),
        )
        .await
        .expect_status(201)
        .clone();
    assert!(
        c.get("image").is_none() && c.get("code_dir").is_none(),
        "{c}"
    );

    // A Wasm algorithm: the Python example, described by its component.
    let wasm = atelier_tests::plugins::built_python(
        &repo_root().join("examples/plugins/python-training-algorithm"),
    )
    .await;
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("examples/plugins/python-training-algorithm/plugin.json"),
        )
        .unwrap(),
    )
    .unwrap();
    upload(&alice, &manifest, std::fs::read(&wasm).unwrap(), &[])
        .await
        .expect_status(201);
    let w = alice
        .post(
            "/v1/algorithms",
            json!({"name": "linreg", "plugin": {"name": "linear-regression", "version": "0.1.0"}}),
        )
        .await
        .expect_status(201)
        .clone();
    assert_eq!(w["kind"], "wasm");
    assert_eq!(w["plugin"]["algorithm"], "linear-regression");
    assert_eq!(w["inputs"][0]["name"], "data_url");
    assert_eq!(w["outputs"][0]["name"], "train_url");
    assert_eq!(w["metrics"], json!(["loss"]));
    let hps = &w["hyperparameters"];
    assert_eq!(hps[0]["name"], "learning_rate");
    assert_eq!(hps[0]["type"], "Float");
    assert_eq!(hps[0]["default"], 0.05);
    assert_eq!(hps[1]["name"], "epochs");
    assert_eq!(hps[1]["type"], "Integer");
    assert_eq!(hps[1]["default"], 50);

    // Shown by name and by id, listed by name.
    assert_eq!(
        alice.get("/v1/algorithms/mnist").await.expect_status(200)["id"],
        id.as_str()
    );
    assert_eq!(
        alice
            .get(&format!("/v1/algorithms/{id}"))
            .await
            .expect_status(200)["name"],
        "mnist"
    );
    assert_eq!(
        algorithm_names(&alice).await,
        ["env-dump", "linreg", "mnist"]
    );

    // The runtime a job of each sees (spec §2.4, §2.6, §2.7).
    let rt = alice
        .get("/v1/algorithms/mnist/runtime")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(
        rt["code_dir"],
        "/home/ma-user/modelarts/user-job-dir/demo-code"
    );
    assert_eq!(
        rt["boot_file"],
        "/home/ma-user/modelarts/user-job-dir/demo-code/train.py"
    );
    assert_eq!(
        rt["boot_command"],
        "python /home/ma-user/modelarts/user-job-dir/demo-code/train.py \
         --data_url=/home/ma-user/modelarts/inputs/data_url_0 --learning_rate=0.01 --epochs=3 \
         --optimizer=sgd"
    );
    assert_eq!(
        rt["environment"]["train_url"],
        "/home/ma-user/modelarts/outputs/train_url_0"
    );
    assert_eq!(
        rt["environment"]["MA_JOB_DIR"],
        "/home/ma-user/modelarts/user-job-dir"
    );
    assert_eq!(rt["log_dir"], "/home/ma-user/modelarts/log");
    let rt = alice
        .get("/v1/algorithms/linreg/runtime")
        .await
        .expect_status(200)
        .clone();
    assert!(rt.get("boot_command").is_none(), "{rt}");
    assert_eq!(
        rt["arguments"],
        json!([
            "--data_url=/home/ma-user/modelarts/inputs/data_url_0",
            "--train_url=/home/ma-user/modelarts/outputs/train_url_0",
            "--learning_rate=0.05",
            "--epochs=50"
        ])
    );
    assert_eq!(
        alice
            .get("/v1/algorithms/env-dump/runtime")
            .await
            .expect_status(200)["boot_command"],
        "env && echo done"
    );

    // The name is the owner's: taken for alice (409), free for bob.
    let r = alice.post("/v1/algorithms", container("mnist")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("name"), "{}", r.text);

    // Another user sees none of them, by name or id, and cannot delete them.
    assert!(algorithm_names(&bob).await.is_empty());
    for path in [
        "/v1/algorithms/mnist".to_string(),
        format!("/v1/algorithms/{id}"),
        format!("/v1/algorithms/{id}/runtime"),
    ] {
        assert_eq!(bob.get(&path).await.status, 404, "{path}");
    }
    assert_eq!(
        bob.delete(&format!("/v1/algorithms/{id}")).await.status,
        404
    );
    assert_eq!(bob.get("/v1/algorithms?all=true").await.status, 403);
    let everyone = gw.admin().get("/v1/algorithms?all=true").await;
    assert_eq!(
        everyone.expect_status(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The plugin cannot go while an algorithm runs it; the algorithm can.
    let r = alice.delete("/v1/plugins/linear-regression/0.1.0").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("linreg"), "{}", r.text);
    alice
        .delete("/v1/algorithms/linreg")
        .await
        .expect_status(204);
    alice
        .delete("/v1/plugins/linear-regression/0.1.0")
        .await
        .expect_status(204);
    alice
        .delete(&format!("/v1/algorithms/{id}"))
        .await
        .expect_status(204);
    assert_eq!(alice.get("/v1/algorithms/mnist").await.status, 404);
    assert_eq!(algorithm_names(&alice).await, ["env-dump"]);
    // The code dir is untouched.
    assert!(s3.bucket("code").join("demo-code/train.py").exists());

    let audit = gw.admin().get("/v1/audit").await;
    for action in ["createAlgorithm", "deleteAlgorithm"] {
        assert!(audit.text.contains(action), "{action}: {}", audit.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_algorithms_are_refused_naming_the_field_and_nothing_is_created() {
    let s3 = S3Server::start();
    code_dir(&s3);
    let bucket = s3.bucket("code");
    std::fs::create_dir_all(bucket.join("empty")).unwrap();
    std::fs::create_dir_all(bucket.join("many")).unwrap();
    for i in 0..1001 {
        std::fs::write(bucket.join(format!("many/f{i}.py")), "").unwrap();
    }
    std::fs::create_dir_all(bucket.join("big")).unwrap();
    std::fs::File::create(bucket.join("big/weights.bin"))
        .unwrap()
        .set_len(5 * 1024 * 1024 * 1024 + 1)
        .unwrap();
    std::fs::write(bucket.join("big/train.py"), "").unwrap();
    let gw = Gateway::start().await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;

    let with = |patch: Value| {
        let mut body = container("x");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let hp = |h: Value| with(json!({"hyperparameters": [h]}));
    let dir = |path: &str| with(json!({"code_dir": {"connection": "local", "path": path}}));
    let many_hps: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("h{i}"), "type": "INT"}))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"name": "a b"})), "name"),
        (with(json!({"name": "n".repeat(65)})), "name"),
        (with(json!({"name": ""})), "name"),
        (with(json!({"description": "d".repeat(257)})), "description"),
        // AC-02
        (
            hp(json!({"name": "lr rate", "type": "FLOAT"})),
            "hyperparameters[0].name",
        ),
        (
            hp(json!({"name": "lr", "type": "FLOAT", "description": "x!"})),
            "hyperparameters[0].description",
        ),
        (
            hp(json!({"name": "h".repeat(65), "type": "INT"})),
            "hyperparameters[0].name",
        ),
        (hp(json!({"name": "lr", "type": "complex"})), "type"),
        (
            hp(json!({"name": "lr", "type": "FLOAT", "default": 2.0, "range": [0, 1]})),
            "hyperparameters[0].default",
        ),
        (
            hp(json!({"name": "e", "type": "INT", "default": "three"})),
            "hyperparameters[0].default",
        ),
        (
            hp(json!({"name": "o", "type": "STR", "default": "rms", "choices": ["sgd"]})),
            "hyperparameters[0].default",
        ),
        (
            hp(json!({"name": "o", "type": "STR", "range": [0, 1]})),
            "hyperparameters[0].range",
        ),
        (
            hp(json!({"name": "r", "type": "FLOAT", "range": [1, 0]})),
            "hyperparameters[0].range",
        ),
        (
            with(json!({"hyperparameters": many_hps})),
            "hyperparameters",
        ),
        (
            with(json!({"inputs": [{"name": "data url"}]})),
            "inputs[0].name",
        ),
        (
            with(json!({"outputs": [{"name": "data_url"}]})),
            "outputs[0].name",
        ),
        (
            with(json!({"outputs": [{"name": "o", "obtained_from": "files"}]})),
            "obtained_from",
        ),
        // AC-04: the boot file is a .py inside the code dir.
        (with(json!({"boot_file": "main.sh"})), "boot_file"),
        (with(json!({"boot_file": "main.py"})), "boot_file"),
        (with(json!({"boot_file": "../train.py"})), "boot_file"),
        (
            with(json!({"boot_command": "python train.py"})),
            "boot_command",
        ),
        (with(json!({"boot_file": null})), "boot_command"),
        (
            with(json!({"boot_file": null, "boot_command": "a\nb"})),
            "boot_command",
        ),
        (with(json!({"code_dir": null})), "code_dir"),
        (with(json!({"image": "bad image ref"})), "image"),
        // The code dir: exists, within the limits (AC-05), through the caller's connection.
        (dir("obs://code/absent"), "code_dir.path"),
        (dir("obs://code/empty"), "code_dir.path"),
        (dir("obs://code/many"), "code_dir.path"),
        (dir("obs://code/big"), "code_dir.path"),
        (dir("http://code/demo-code"), "code_dir.path"),
        (
            with(json!({"code_dir": {"connection": "nope", "path": "obs://code/demo-code"}})),
            "code_dir.connection",
        ),
        (with(json!({"colour": "blue"})), "colour"),
        // A Wasm algorithm takes its schema from describe(), nothing else.
        (
            json!({"name": "w", "plugin": {"name": "nope", "version": "1"}}),
            "plugin",
        ),
        (
            json!({"name": "w", "plugin": {"name": "nope", "version": "1"}, "boot_command": "x"}),
            "boot_command",
        ),
    ];
    for (body, says) in cases {
        let r = alice.post("/v1/algorithms", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{message:?} should name {says:?} ({body})"
        );
    }
    assert!(
        algorithm_names(&alice).await.is_empty(),
        "nothing was created"
    );
    // The boundaries are accepted.
    alice
        .post("/v1/algorithms", with(json!({"name": "n".repeat(64)})))
        .await
        .expect_status(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_components_are_refused_and_nothing_is_created() {
    let gw = gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    let wrong_world = wat_component("workflow-step", &dummy_wat("workflow-step"));
    let trapping = wat_component("training-algorithm", &fixture("guest-panic"));
    let looping = wat_component("training-algorithm", &fixture("infinite-loop"));
    // describe() answers an input channel named "bad name!".
    let invalid = fixture("describe").replace(
        r#"(data (i32.const 1024) "\00\08\00\00\04\00\00\00\08\08\00\00\05\00\00\00")"#,
        r#"(data (i32.const 1024) "\00\08\00\00\04\00\00\00\08\08\00\00\05\00\00\00")
  (data (i32.const 1056) "\00\0c\00\00\01\00\00\00")
  (data (i32.const 3072) "\10\0c\00\00\09\00\00\00")
  (data (i32.const 3088) "bad name!")"#,
    );
    let invalid = wat_component("training-algorithm", &invalid);
    for (name, component, limits) in [
        ("step", wrong_world, json!({})),
        ("panics", trapping, json!({})),
        ("spins", looping, json!({"timeout_ms": 1000})),
        ("invalid", invalid, json!({})),
    ] {
        upload(
            &alice,
            &json!({"name": name, "version": "1", "limits": limits}),
            component,
            &[],
        )
        .await
        .expect_status(201);
    }
    for (plugin, says) in [
        ("step", "workflow-step"),
        ("panics", "trapped"),
        ("spins", "timeout"),
        ("invalid", "inputs[0].name"),
    ] {
        let r = alice
            .post(
                "/v1/algorithms",
                json!({"name": plugin, "plugin": {"name": plugin, "version": "1"}}),
            )
            .await;
        assert_eq!(r.status, 400, "{plugin}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("plugin") && message.contains(says),
            "{plugin}: {message:?} should name {says:?}"
        );
    }
    assert!(
        algorithm_names(&alice).await.is_empty(),
        "nothing was created"
    );

    // A well-behaved component next to them is accepted.
    upload(
        &alice,
        &json!({"name": "tiny", "version": "1"}),
        wat_component("training-algorithm", &fixture("describe")),
        &[],
    )
    .await
    .expect_status(201);
    let a = alice
        .post(
            "/v1/algorithms",
            json!({"name": "tiny", "plugin": {"name": "tiny", "version": "1"}}),
        )
        .await
        .expect_status(201)
        .clone();
    assert_eq!(a["plugin"]["algorithm_version"], "0.1.0");
    assert_eq!(a["hyperparameters"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_lists_shows_previews_and_deletes_algorithms() {
    let s3 = S3Server::start();
    code_dir(&s3);
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    s3.connect(&gw.api(&token), "local").await;
    let cli = |args: &'static [&'static str]| gw.cli(&token, args, &[]);

    let r = cli(&[
        "algorithm",
        "create",
        "mnist",
        "--code-dir",
        "obs://code/demo-code",
        "--connection",
        "local",
        "--boot-file",
        "train.py",
        "--input",
        "data_url",
        "--output",
        "train_url:env",
        "--hyperparameter",
        "lr:FLOAT=0.01",
        "--hyperparameter",
        "epochs:INT=3",
    ])
    .await;
    r.assert_ok("algorithm create");
    assert!(
        r.stderr.contains("created container algorithm mnist"),
        "{}",
        r.stderr
    );

    let r = cli(&["algorithm", "list"]).await;
    r.assert_ok("algorithm list");
    assert!(
        r.stdout.contains("mnist") && r.stdout.contains("container"),
        "{}",
        r.stdout
    );

    let r = cli(&["algorithm", "get", "mnist"]).await;
    r.assert_ok("algorithm get");
    for want in [
        "train.py",
        "obs://code/demo-code/",
        "data_url",
        "train_url",
        "lr",
        "Float",
    ] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }
    let r = cli(&["algorithm", "get", "mnist", "--json"]).await;
    r.assert_ok("algorithm get --json");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["hyperparameters"][1]["default"], 3);

    let r = cli(&["algorithm", "runtime", "mnist"]).await;
    r.assert_ok("algorithm runtime");
    for want in [
        "/home/ma-user/modelarts/user-job-dir/demo-code/train.py",
        "--data_url=/home/ma-user/modelarts/inputs/data_url_0",
        "--lr=0.01",
        "train_url=/home/ma-user/modelarts/outputs/train_url_0",
    ] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }

    // A refusal names its field and creates nothing.
    let r = cli(&[
        "algorithm",
        "create",
        "bad",
        "--boot-command",
        "true",
        "--hyperparameter",
        "lr rate:FLOAT",
    ])
    .await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("hyperparameters[0].name"), "{}", r.stderr);

    cli(&["algorithm", "delete", "mnist"])
        .await
        .assert_ok("algorithm delete");
    let r = cli(&["algorithm", "get", "mnist"]).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    assert!(algorithm_names(&gw.api(&token)).await.is_empty());
}

/// `POST /v1/algorithms`, multipart: a component registered as a plugin with the algorithm.
async fn upload_algorithm(
    api: &Api,
    algorithm: Value,
    plugin: &str,
    component: Vec<u8>,
) -> atelier_tests::Reply {
    let form = reqwest::multipart::Form::new()
        .text("algorithm", algorithm.to_string())
        .text(
            "manifest",
            json!({"name": plugin, "version": "1"}).to_string(),
        )
        .part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name("c.wasm"),
        );
    api.send(
        api.request(reqwest::Method::POST, "/v1/algorithms")
            .multipart(form),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_uploaded_with_its_algorithm_is_registered_or_left_out_with_it() {
    let gw = gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    let plugin_names = |api: &Api| {
        let api = api.clone();
        async move {
            api.get("/v1/plugins").await.expect_status(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    // A trapping describe(): refused, and the plugin it brought is gone again.
    let r = upload_algorithm(
        &alice,
        json!({"name": "panics"}),
        "up-panics",
        wat_component("training-algorithm", &fixture("guest-panic")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("trapped"), "{}", r.text);
    // Another world: the same.
    let r = upload_algorithm(
        &alice,
        json!({"name": "step"}),
        "up-step",
        wat_component("workflow-step", &dummy_wat("workflow-step")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("workflow-step"), "{}", r.text);
    // The algorithm names its plugin by the upload, not by a field.
    let r = upload_algorithm(
        &alice,
        json!({"name": "x", "plugin": {"name": "up-tiny", "version": "1"}}),
        "up-tiny",
        wat_component("training-algorithm", &fixture("describe")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("algorithm.plugin"), "{}", r.text);
    assert!(plugin_names(&alice).await.is_empty());
    assert!(algorithm_names(&alice).await.is_empty());

    let r = upload_algorithm(
        &alice,
        json!({"name": "tiny", "description": "uploaded"}),
        "up-tiny",
        wat_component("training-algorithm", &fixture("describe")),
    )
    .await;
    let a = r.expect_status(201);
    assert_eq!(a["kind"], "wasm");
    assert_eq!(a["plugin"]["name"], "up-tiny");
    assert_eq!(plugin_names(&alice).await, ["up-tiny"]);
    assert_eq!(algorithm_names(&alice).await, ["tiny"]);
}

/// The Python linear regression (componentize-py) as a training job's run, through the
/// plugin host as the jobs runner calls it: it completes with its final metrics and a
/// checkpoint per epoch under its output; a restart resumes from the newest checkpoint;
/// a stop while it trains ends it as `cancelled` → Terminated.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_algorithm_runs_checkpoints_resumes_from_its_newest_checkpoint_and_stops() {
    use atelier_plugins::training::Channel;
    use atelier_plugins::{
        CallContext, Host, HostSettings, LimitsSpec, PluginRef, StopReason, TrainOutcome, TrainRun,
        TrainWatch, WatchLimits, World,
    };
    use std::time::Duration;

    let wasm = atelier_tests::plugins::built_python(
        &repo_root().join("examples/plugins/python-training-algorithm"),
    )
    .await;
    let host = Host::new(
        atelier_tests::plugins::shared_cache(),
        HostSettings {
            shared_cache: true,
            ..Default::default()
        },
    )
    .unwrap();
    let registered = {
        let (h, bytes) = (host.clone(), std::fs::read(&wasm).unwrap());
        tokio::task::spawn_blocking(move || h.register(&bytes, Some(World::TrainingAlgorithm)))
            .await
            .unwrap()
            .unwrap()
    };
    let plugin = PluginRef {
        key: "linear-regression@0.1.0".into(),
        digest: registered.digest.clone(),
        world: registered.world,
        limits: host
            .settings()
            .resolve(registered.world, &LimitsSpec::default())
            .unwrap(),
        model_dir: None,
    };
    let root = std::env::temp_dir().join(format!("atelier-train-py-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(root.join("data/line")).unwrap();
    std::fs::copy(
        repo_root().join("examples/plugins/python-training-algorithm/storage/data/line/points.csv"),
        root.join("data/line/points.csv"),
    )
    .unwrap();
    let ctx = || CallContext {
        tenant: "alice".into(),
        storage: atelier_plugins::storage::Grant::new(root.clone(), 1 << 20),
        ..Default::default()
    };
    let run = |attempt: u32, epochs: i64| TrainRun {
        job_name: "linreg".into(),
        attempt,
        inputs: vec![Channel {
            name: "data_url".into(),
            path: "data/line/".into(),
        }],
        outputs: vec![Channel {
            name: "train_url".into(),
            path: "runs/line/".into(),
        }],
        resume_from: None,
        hyperparameters: vec![atelier_plugins::bindings::types::Parameter {
            name: "epochs".into(),
            value: atelier_plugins::bindings::types::Value::Integer(epochs),
        }],
        time_limit: Duration::from_secs(600),
        grace: Duration::from_secs(30),
    };

    let watch = TrainWatch::new(WatchLimits::default());
    let first = host
        .train_run(&plugin, ctx(), run(0, 40), watch.clone())
        .await;
    let TrainOutcome::Completed { final_metrics } = &first.outcome else {
        panic!("{:?}", first.outcome);
    };
    let names: Vec<&str> = final_metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["loss", "w", "b"]);
    assert_eq!(first.resumed_from, None);
    let live = watch.snapshot();
    assert_eq!(live.progress, Some(1.0));
    assert_eq!(live.latest_metrics["loss"].1, 40);
    assert_eq!(watch.drain().metrics.len(), 40);
    assert!(
        root.join("runs/line/checkpoints/step-000000000040")
            .is_file()
    );

    // A restart resumes from step 40 and trains on to 60.
    let watch = TrainWatch::new(WatchLimits::default());
    let second = host
        .train_run(&plugin, ctx(), run(1, 60), watch.clone())
        .await;
    assert!(
        matches!(second.outcome, TrainOutcome::Completed { .. }),
        "{:?}",
        second.outcome
    );
    assert_eq!(second.resumed_from.as_ref().map(|c| c.step), Some(40));
    let drained = watch.drain();
    assert_eq!(drained.logs[0].message, "resuming from epoch 40");
    assert_eq!(drained.metrics.first().map(|m| m.step), Some(41));
    assert!(
        root.join("runs/line/checkpoints/step-000000000060")
            .is_file()
    );

    // Stopped while it trains: it returns cancelled at its next epoch.
    let watch = TrainWatch::new(WatchLimits::default());
    let running = {
        let (h, p, c, r, w) = (
            host.clone(),
            plugin.clone(),
            ctx(),
            run(0, 100_000),
            watch.clone(),
        );
        tokio::spawn(async move { h.train_run(&p, c, r, w).await })
    };
    let mut changes = watch.changed();
    while watch.snapshot().heartbeat_at.is_none() {
        changes.changed().await.unwrap();
    }
    watch.stop();
    let stopped = running.await.unwrap();
    assert_eq!(
        stopped.outcome,
        TrainOutcome::Terminated {
            reason: StopReason::Stopped,
            interrupted: false
        }
    );
    let _ = std::fs::remove_dir_all(root);
}
