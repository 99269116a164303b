//! The model registry (spec/inference.md §1.1, §3.1, §5 items 1-12): models imported from
//! a real S3 server on loopback (s3s-fs), from a folder of a running notebook's work dir,
//! and from a container image; the package and `config.json` checked before anything is
//! created; files kept by digest in the gateway's model store; versions, events, deletes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A valid config.json of the built-in ONNX engine's kind.
fn onnx_config() -> Value {
    json!({
        "model_algorithm": "predict_analysis",
        "model_type": "ONNX",
        "apis": [{
            "url": "/",
            "method": "post",
            "request": {"Content-type": "application/json", "data": {"type": "object"}},
            "response": {"Content-type": "application/json", "data": {"type": "object"}}
        }],
        "metrics": {"f1": 0.5, "accuracy": 0.97}
    })
}

/// Writes a package (`<dir>/model/…`) with `config` and the given other files.
fn write_package(dir: &Path, config: &Value, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::write(
        dir.join("model/config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    for (name, body) in files {
        let p = dir.join("model").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

async fn wait_version(api: &Api, model: &str, version: &str) -> Value {
    eventually("the import to end", WAIT, || async {
        let r = api
            .get(&format!("/v1/models/{model}/versions/{version}"))
            .await;
        let v = r.expect_status(200).clone();
        (v["status"] != "IMPORTING").then_some(v)
    })
    .await
}

async fn event_texts(api: &Api, model: &str) -> Vec<String> {
    atelier_tests::event_texts_at(api, &format!("/v1/models/{model}/events")).await
}

fn tree(gw: &Gateway, version_id: &str) -> PathBuf {
    gw.data_dir.join("models/trees").join(version_id)
}

async fn model_count(api: &Api) -> usize {
    api.get("/v1/models").await.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_storage_package_becomes_a_normal_version_kept_by_digest() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    write_package(
        &bucket.join("iris"),
        &onnx_config(),
        &[
            ("iris.onnx", b"weights one"),
            ("labels/names.txt", b"setosa\nversicolor\n"),
        ],
    );
    // A metric as the user wrote it, one digit past what a lossy float parser keeps.
    let config = bucket.join("iris/model/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("0.5", "0.9999999999999999")).unwrap();
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;

    let r = api
        .post(
            "/v1/models",
            json!({"name": "iris", "description": "three flowers",
                   "source": {"type": "obs", "connection": "local", "path": "obs://models/iris"}}),
        )
        .await;
    let created = r.expect_status(202).clone();
    assert_eq!(created["name"], "iris");
    assert_eq!(created["version"]["version"], "0.0.1");
    assert_eq!(created["version"]["status"], "IMPORTING");
    let v1 = wait_version(&api, "iris", "0.0.1").await;
    assert_eq!(v1["status"], "NORMAL", "{v1}");
    assert_eq!(v1["files"], 3);
    let on_disk: u64 = ["iris.onnx", "labels/names.txt", "config.json"]
        .iter()
        .map(|f| {
            std::fs::metadata(bucket.join("iris/model").join(f))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(v1["size"], on_disk);
    assert_eq!(v1["source"]["path"], "obs://models/iris/");
    assert_eq!(v1["model_config"]["metrics"]["accuracy"], 0.97);
    // The metrics come back exactly as written (seed: "rounded to 17 decimal places").
    let raw = api.get("/v1/models/iris/versions/0.0.1").await.text;
    assert!(raw.contains("\"f1\":0.9999999999999999"), "{raw}");
    assert_eq!(
        event_texts(&api, "iris").await,
        [
            "The model starts to import.",
            "Model file imported.",
            "Model size calculated.",
            "The model imported."
        ]
    );

    // The files are the gateway's copy: changing the source changes nothing under v1.
    std::fs::write(bucket.join("iris/model/iris.onnx"), b"weights two").unwrap();
    let t1 = tree(&gw, v1["id"].as_str().unwrap());
    assert_eq!(
        std::fs::read(t1.join("model/iris.onnx")).unwrap(),
        b"weights one"
    );

    // A new version: the next number, the previous source and settings.
    let r = api
        .post(
            "/v1/models/iris/versions",
            json!({"start_command": "sh /home/mind/run.sh"}),
        )
        .await;
    assert_eq!(r.expect_status(202)["version"], "0.0.2");
    let v2 = wait_version(&api, "iris", "0.0.2").await;
    assert_eq!(v2["status"], "NORMAL", "{v2}");
    assert_eq!(v2["source"], v1["source"]);
    assert_eq!(v2["start_command"], "sh /home/mind/run.sh");
    assert_eq!(v2["deployment_types"], json!(["real-time", "batch"]));
    let t2 = tree(&gw, v2["id"].as_str().unwrap());
    assert_eq!(
        std::fs::read(t2.join("model/iris.onnx")).unwrap(),
        b"weights two"
    );
    // The same config.json is one file in the store.
    let blobs = gw.data_dir.join("models/blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        4,
        "config and labels shared"
    );

    // A taken number is a conflict; a version of another form is refused.
    let r = api
        .post("/v1/models/iris/versions", json!({"version": "0.0.2"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = api
        .post("/v1/models/iris/versions", json!({"version": "1.0"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    let list = api.get("/v1/models").await;
    let m = &list.expect_status(200)["items"][0];
    assert_eq!(m["latest_version"], "0.0.2");
    assert_eq!(m["versions"], 2);

    // Another user sees none of it.
    let bob = gw.api(&gw.create_user("bob").await);
    assert_eq!(bob.get("/v1/models/iris").await.status, 404);
    let id = m["id"].as_str().unwrap();
    assert_eq!(bob.get(&format!("/v1/models/{id}")).await.status, 404);
    assert_eq!(bob.delete(&format!("/v1/models/{id}")).await.status, 404);
    assert_eq!(model_count(&bob).await, 0);

    // Deleting 0.0.1 keeps 0.0.2's files whole; the model goes with its last version.
    let r = api.delete("/v1/models/iris/versions/0.0.1").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!t1.exists());
    assert_eq!(
        std::fs::read(t2.join("model/iris.onnx")).unwrap(),
        b"weights two"
    );
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 3);
    let r = api.delete("/v1/models/iris").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(api.get("/v1/models/iris").await.status, 404);
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    // The objects in the store are untouched.
    assert!(bucket.join("iris/model/iris.onnx").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_packages_and_requests_are_refused_before_anything_is_created() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    // No model/ folder.
    std::fs::create_dir_all(bucket.join("flat")).unwrap();
    std::fs::write(bucket.join("flat/config.json"), onnx_config().to_string()).unwrap();
    let with = |field: &str, value: Value| {
        let mut c = onnx_config();
        c[field] = value;
        c
    };
    write_package(
        &bucket.join("digit-first"),
        &with("model_algorithm", "1abc".into()),
        &[("m.onnx", b"x")],
    );
    write_package(
        &bucket.join("long-algo"),
        &with("model_algorithm", "a".repeat(37).into()),
        &[("m.onnx", b"x")],
    );
    write_package(
        &bucket.join("lt-algo"),
        &with("model_algorithm", "a<b".into()),
        &[("m.onnx", b"x")],
    );
    let mut tf = onnx_config();
    tf["model_type"] = "TensorFlow".into();
    tf["apis"][0]["url"] = "/predict".into();
    write_package(&bucket.join("tf-path"), &tf, &[("saved_model.pb", b"x")]);
    write_package(
        &bucket.join("python"),
        &onnx_config(),
        &[("m.onnx", b"x"), ("customize_service.py", b"print(1)")],
    );
    std::fs::create_dir_all(bucket.join("broken/model")).unwrap();
    std::fs::write(bucket.join("broken/model/config.json"), "{\"model_type\": ").unwrap();
    // A file over 5 GB, sparse: refused from the listing, nothing downloaded.
    write_package(&bucket.join("huge"), &onnx_config(), &[]);
    let f = std::fs::File::create(bucket.join("huge/model/w.onnx")).unwrap();
    f.set_len(5 * 1024 * 1024 * 1024 + 1).unwrap();

    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    let obs = |path: &str| json!({"type": "obs", "connection": "local", "path": format!("obs://models/{path}")});

    for (name, source, says) in [
        ("m1", obs("flat"), "model/"),
        ("m2", obs("digit-first"), "model_algorithm"),
        ("m3", obs("long-algo"), "model_algorithm"),
        ("m4", obs("lt-algo"), "model_algorithm"),
        ("m5", obs("tf-path"), "apis[0].url"),
        ("m6", obs("python"), "customize_service.py"),
        ("m7", obs("broken"), "config.json"),
        ("m8", obs("huge"), "5 GB"),
        ("m9", obs("absent"), "model/"),
        (
            "m10",
            json!({"type": "obs", "connection": "nope", "path": "obs://models/flat"}),
            "connection",
        ),
        (
            "m11",
            json!({"type": "obs", "connection": "local", "path": "obs://models/with space"}),
            "space",
        ),
        ("a b", obs("flat"), "name"),
        (&"n".repeat(65), obs("flat"), "name"),
        ("m12", json!({"type": "ftp", "path": "x"}), "type"),
    ] {
        let r = api
            .post("/v1/models", json!({"name": name, "source": source}))
            .await;
        assert_eq!(r.status, 400, "{name}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{name}: {message:?} should name {says:?}"
        );
    }
    assert_eq!(model_count(&api).await, 0, "nothing was created");
    assert!(
        !gw.data_dir.join("models/blobs").exists()
            || std::fs::read_dir(gw.data_dir.join("models/blobs"))
                .unwrap()
                .count()
                == 0
    );

    // What the seed refuses after the import starts: FAILED with its event.
    let mut swr = onnx_config();
    swr["model_type"] = "TensorFlow".into();
    swr["swr_location"] = "registry.example/x:1".into();
    write_package(&bucket.join("swr"), &swr, &[("saved_model.pb", b"x")]);
    let r = api
        .post("/v1/models", json!({"name": "swr", "source": obs("swr")}))
        .await;
    r.expect_status(202);
    let v = wait_version(&api, "swr", "0.0.1").await;
    assert_eq!(v["status"], "FAILED", "{v}");
    assert!(
        event_texts(&api, "swr")
            .await
            .contains(&"Only custom images support swr_location.".to_string())
    );
    // A FAILED version can be deleted; the same name can then be used again.
    assert_eq!(api.delete("/v1/models/swr").await.status, 204);
    write_package(&bucket.join("ok"), &onnx_config(), &[("m.onnx", b"x")]);
    let r = api
        .post("/v1/models", json!({"name": "swr", "source": obs("ok")}))
        .await;
    r.expect_status(202);
    assert_eq!(wait_version(&api, "swr", "0.0.1").await["status"], "NORMAL");
    // A name is the owner's once.
    let r = api
        .post("/v1/models", json!({"name": "swr", "source": obs("ok")}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Start commands holding what the seed forbids are emptied; a plain one is kept.
    for (command, kept) in [
        ("sh run.sh --privileged", ""),
        ("echo $HOME", ""),
        ("a|b", ""),
        ("sh /home/mind/run.sh", "sh /home/mind/run.sh"),
    ] {
        let r = api
            .post("/v1/models/swr/versions", json!({"start_command": command}))
            .await;
        assert_eq!(r.expect_status(202)["start_command"], kept, "{command}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notebook_folder_is_read_without_following_its_links() {
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    let id = gw.create_notebook(&token, "trainer").await;
    gw.wait_status(&token, &id, "RUNNING").await;
    let work = gw.notebook_dir(&id).join("work");
    write_package(
        &work.join("out/iris"),
        &onnx_config(),
        &[("iris.onnx", b"trained here")],
    );
    let source = |path: &str| json!({"type": "notebook", "notebook": id, "path": path});

    let r = api
        .post(
            "/v1/models",
            json!({"name": "iris", "source": source("/home/ma-user/work/out/iris")}),
        )
        .await;
    r.expect_status(202);
    let v = wait_version(&api, "iris", "0.0.1").await;
    assert_eq!(v["status"], "NORMAL", "{v}");
    assert_eq!(v["source"]["path"], "out/iris");
    assert_eq!(
        std::fs::read(tree(&gw, v["id"].as_str().unwrap()).join("model/iris.onnx")).unwrap(),
        b"trained here"
    );

    // Planted links: a config.json that points at a host file, a model/ that points at
    // another folder; a FIFO that would block a reader; paths out of the work dir.
    write_package(&work.join("evil1"), &onnx_config(), &[("m.onnx", b"x")]);
    std::fs::remove_file(work.join("evil1/model/config.json")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", work.join("evil1/model/config.json")).unwrap();
    std::fs::create_dir_all(work.join("evil2")).unwrap();
    std::os::unix::fs::symlink(work.join("out/iris/model"), work.join("evil2/model")).unwrap();
    write_package(&work.join("evil3"), &onnx_config(), &[("m.onnx", b"x")]);
    let fifo = work.join("evil3/model/pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/", work.join("root-link")).unwrap();
    for (name, path, says) in [
        ("e1", "evil1", "config.json"),
        ("e2", "evil2", "model"),
        ("e3", "evil3", "pipe"),
        ("e4", "../../", "plain folder names"),
        ("e5", "/etc", "outside the work dir"),
        ("e6", "root-link/etc", "root-link"),
    ] {
        let r = api
            .post("/v1/models", json!({"name": name, "source": source(path)}))
            .await;
        assert_eq!(r.status, 400, "{name}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{name}: {message:?} should name {says:?}"
        );
    }
    assert_eq!(model_count(&api).await, 1);

    // Another user's notebook is no source of theirs (and is not revealed).
    let bob = gw.api(&gw.create_user("bob").await);
    let r = bob
        .post(
            "/v1/models",
            json!({"name": "stolen", "source": source("out/iris")}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("no notebook"), "{}", r.text);
    assert_eq!(model_count(&bob).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_models_and_the_cli() {
    let s3 = S3Server::start();
    write_package(
        &s3.bucket("models").join("iris"),
        &onnx_config(),
        &[("iris.onnx", b"w")],
    );
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;

    // An image model needs its config in the request, of model_type Image, health on
    // /health.
    let image_config = json!({
        "model_algorithm": "greeter",
        "model_type": "Image",
        "apis": [{"url": "/greet", "method": "post"}],
        "health": {"check_method": "HTTP", "url": "/health", "protocol": "http",
                   "period_seconds": "5", "failure_threshold": 3}
    });
    let r = api
        .post(
            "/v1/models",
            json!({"name": "img", "source": {"type": "image", "image": "localhost/greeter:1"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let mut wrong_health = image_config.clone();
    wrong_health["health"]["url"] = "/ping".into();
    let r = api
        .post(
            "/v1/models",
            json!({"name": "img", "config": wrong_health,
                                   "source": {"type": "image", "image": "localhost/greeter:1"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("/health"), "{}", r.text);
    assert_eq!(model_count(&api).await, 0);
    // On the process backend there is no image to pull: FAILED with the seed's event.
    let r = api
        .post(
            "/v1/models",
            json!({"name": "img", "config": image_config,
                                   "source": {"type": "image", "image": "localhost/greeter:1"}}),
        )
        .await;
    r.expect_status(202);
    let v = wait_version(&api, "img", "0.0.1").await;
    assert_eq!(v["status"], "FAILED", "{v}");
    assert!(event_texts(&api, "img").await.contains(
        &"Failed to obtain the source image. Check whether the image exists.".to_string()
    ));

    // The CLI: create and wait, list, versions, add a version, events, delete.
    let out = gw
        .cli(
            &token,
            &[
                "model",
                "create",
                "iris",
                "--obs",
                "obs://models/iris/",
                "--connection",
                "local",
                "--wait",
            ],
            &[],
        )
        .await;
    out.assert_ok("model create");
    assert!(out.stderr.contains("is NORMAL"), "{}", out.stderr);
    let out = gw.cli(&token, &["model", "list"], &[]).await;
    out.assert_ok("model list");
    assert!(
        out.stdout.contains("iris") && out.stdout.contains("NORMAL"),
        "{}",
        out.stdout
    );
    let out = gw
        .cli(
            &token,
            &[
                "model",
                "add-version",
                "iris",
                "--start-command",
                "sh run.sh --privileged",
                "--doc",
                "card=https://example.org/card",
                "--wait",
            ],
            &[],
        )
        .await;
    out.assert_ok("model add-version");
    let out = gw
        .cli(
            &token,
            &["--json", "model", "get", "iris", "--version", "0.0.2"],
            &[],
        )
        .await;
    out.assert_ok("model get");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["start_command"], "");
    assert_eq!(v["docs"][0]["url"], "https://example.org/card");
    let out = gw.cli(&token, &["model", "versions", "iris"], &[]).await;
    out.assert_ok("model versions");
    assert!(
        out.stdout.contains("0.0.1") && out.stdout.contains("0.0.2"),
        "{}",
        out.stdout
    );
    let out = gw
        .cli(
            &token,
            &["model", "events", "iris", "--version", "0.0.2"],
            &[],
        )
        .await;
    out.assert_ok("model events");
    assert!(out.stdout.contains("The model imported."), "{}", out.stdout);
    assert!(!out.stdout.contains("0.0.1"), "{}", out.stdout);
    let out = gw
        .cli(
            &token,
            &["model", "delete", "iris", "--version", "0.0.1"],
            &[],
        )
        .await;
    out.assert_ok("model delete --version");
    let out = gw.cli(&token, &["model", "delete", "iris"], &[]).await;
    out.assert_ok("model delete");
    let out = gw.cli(&token, &["model", "get", "iris"], &[]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_cut_short_by_a_killed_gateway_is_done_again_at_its_next_start() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    write_package(&bucket.join("big"), &onnx_config(), &[]);
    // 64 MiB (sparse): the copy takes long enough to be caught in the middle.
    let f = std::fs::File::create(bucket.join("big/model/w.onnx")).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    let mut gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    let r = api
        .post(
            "/v1/models",
            json!({"name": "big", "source": {"type": "obs", "connection": "local", "path": "obs://models/big/"}}),
        )
        .await;
    r.expect_status(202);
    // The store stalls mid-copy; the gateway dies with the import under way.
    s3.freeze();
    let v = api.get("/v1/models/big/versions/0.0.1").await;
    assert_eq!(v.expect_status(200)["status"], "IMPORTING");
    gw.kill9();
    s3.thaw();
    gw.start_again().await;
    let api = gw.api(&token);
    let v = wait_version(&api, "big", "0.0.1").await;
    assert_eq!(v["status"], "NORMAL", "{v}");
    let tree = tree(&gw, v["id"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(tree.join("model/w.onnx")).unwrap().len(),
        64 * 1024 * 1024
    );
    let texts = event_texts(&api, "big").await;
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "The model starts to import.")
            .count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        texts.iter().filter(|t| *t == "The model imported.").count(),
        1,
        "{texts:?}"
    );
    // Nothing is left in staging.
    let staging = gw.data_dir.join("models/staging");
    assert!(
        !staging.exists() || std::fs::read_dir(&staging).unwrap().count() == 0,
        "staging is emptied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_processor_is_checked_when_the_model_is_imported() {
    use atelier_tests::plugins::{dummy_wat, wat_component};
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    let processor = wat_component("inference-processor", &dummy_wat("inference-processor"));
    let step = wat_component("workflow-step", &dummy_wat("workflow-step"));
    write_package(
        &bucket.join("good"),
        &onnx_config(),
        &[
            ("m.onnx", b"x"),
            ("customize_service.wasm", &processor),
            (
                "plugin.json",
                br#"{"name": "pre", "version": "0.1.0", "limits": {"memory_mb": 64}}"#,
            ),
        ],
    );
    write_package(
        &bucket.join("step"),
        &onnx_config(),
        &[("m.onnx", b"x"), ("customize_service.wasm", &step)],
    );
    write_package(
        &bucket.join("junk"),
        &onnx_config(),
        &[("m.onnx", b"x"), ("customize_service.wasm", b"\0asm junk")],
    );
    write_package(
        &bucket.join("manifest-only"),
        &onnx_config(),
        &[("m.onnx", b"x"), ("plugin.json", b"{}")],
    );
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    let obs = |path: &str| json!({"type": "obs", "connection": "local", "path": format!("obs://models/{path}")});

    let r = api
        .post("/v1/models", json!({"name": "good", "source": obs("good")}))
        .await;
    r.expect_status(202);
    let v = wait_version(&api, "good", "0.0.1").await;
    assert_eq!(v["status"], "NORMAL", "{v}");
    assert_eq!(v["processor"]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(v["processor"]["limits"]["memory_mb"], 64);
    assert!(
        v["processor"]["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("processor")),
        "{v}"
    );

    for name in ["step", "junk"] {
        let r = api
            .post("/v1/models", json!({"name": name, "source": obs(name)}))
            .await;
        r.expect_status(202);
        let v = wait_version(&api, name, "0.0.1").await;
        assert_eq!(v["status"], "FAILED", "{name}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("customize_service.wasm"),
            "{v}"
        );
        assert!(
            event_texts(&api, name).await.contains(
                &"Invalid parameter value customize_service.wasm exists in the model configuration file."
                    .to_string()
            ),
            "{name}"
        );
    }
    let r = api
        .post(
            "/v1/models",
            json!({"name": "mo", "source": obs("manifest-only")}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("customize_service.wasm is missing"),
        "{}",
        r.text
    );
}
