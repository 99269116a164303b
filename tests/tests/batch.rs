//! Batch services (spec/inference.md §2.13, §3.3, §5 items 31, 36-41): the example iris
//! model and its Python processor (and the test echo processor) imported from a real S3
//! server (s3s-fs), run by the gateway over folders and manifests of files in that server;
//! the results and manifests read back from the server's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use atelier_tests::plugins::repo_root;
use atelier_tests::s3::{S3Server, files_under};
use atelier_tests::serving::{gateway, import, import_engine, iris_package, with_processor};
use atelier_tests::{Api, Gateway, Reply, eventually};
use serde_json::{Value, json};

/// A whole job on a loaded machine: generous, it only catches hangs.
const JOB: Duration = Duration::from_secs(600);

async fn wait_batch(api: &Api, id: &str, want: &str) -> Value {
    eventually(&format!("batch service {id} {want}"), JOB, || async {
        let b = api.get(&format!("/v1/batch-services/{id}")).await;
        let b = b.expect_status(200).clone();
        assert!(
            b["status"] != "FAILED" || want == "FAILED",
            "the job failed: {b}"
        );
        (b["status"] == want).then_some(b)
    })
    .await
}

/// An error reply's message.
fn message(r: &Reply) -> String {
    r.json["error"]["message"]
        .as_str()
        .map_or_else(|| r.text.clone(), str::to_string)
}

async fn event_texts(api: &Api, id: &str) -> Vec<String> {
    let r = api.get(&format!("/v1/batch-services/{id}/events")).await;
    r.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

/// The file s3s-fs keeps object `obs://bucket/key` in.
fn object_file(s3: &S3Server, uri: &str) -> PathBuf {
    let rest = uri.strip_prefix("obs://").expect("an obs:// location");
    s3.root.join(rest)
}

/// The lines of a COMPLETED service's manifests, in order.
fn manifest_lines(s3: &S3Server, view: &Value) -> Vec<Value> {
    let manifests = view["results"]["manifests"].as_array().expect("results");
    manifests
        .iter()
        .flat_map(|m| {
            let text = std::fs::read_to_string(object_file(s3, m.as_str().unwrap())).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Manifest lines by source.
fn by_source(lines: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for l in lines {
        let prev = out.insert(l["source"].as_str().unwrap().to_string(), l.clone());
        assert!(prev.is_none(), "{} twice in the manifest", l["source"]);
    }
    out
}

/// The label the iris processor gave in a result file (its first row's best).
fn label(s3: &S3Server, line: &Value) -> String {
    assert_eq!(line["result"], "SUCCESSFUL", "{line}");
    let text =
        std::fs::read_to_string(object_file(s3, line["inference-loc"].as_str().unwrap())).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["predictions"][0][0]["label"]
        .as_str()
        .unwrap_or_else(|| panic!("no label in {text}"))
        .to_string()
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn instances(row: [f32; 4]) -> Vec<u8> {
    json!({"instances": [row]}).to_string().into_bytes()
}

const SETOSA: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA: [f32; 4] = [6.7, 3.0, 5.8, 2.2];

/// A gateway with alice, her connection `local` and the iris model with its processor.
async fn iris_setup(env: &[(&str, &str)]) -> (S3Server, Gateway, Api) {
    let s3 = S3Server::start();
    iris_package(&s3.bucket("models").join("pp"), true).await;
    let gw = gateway(env).await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    import(&api, "iris", "pp").await;
    (s3, gw, api)
}

fn deploy_body(input: &str, output: &str) -> Value {
    json!({"model": "iris", "version": "0.0.1", "input": input, "output": output,
           "connection": "local"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_and_a_manifest_complete_with_every_file_answered_or_its_failure_recorded() {
    let (s3, gw, api) = iris_setup(&[("ATELIER_BATCH_MANIFEST_LINES", "2")]).await;
    let data = s3.bucket("data");
    write(&data, "in/a/x.json", &instances(SETOSA));
    // The same file name in another folder: its result must not overwrite the first's.
    write(&data, "in/b/x.json", &instances(VIRGINICA));
    write(&data, "in/we ird#名.json", &instances(VIRGINICA));
    // 13 MB: past the seed's 12 MB.
    write(&data, "in/big.json", &vec![b' '; 13 * 1024 * 1024]);
    write(&data, "in/bad.json", b"not json");
    std::fs::create_dir_all(data.join("out1")).unwrap();

    // A folder, the default name, two instances.
    let mut body = deploy_body("obs://data/in/", "obs://data/out1/");
    body["instances"] = 2.into();
    let r = api.post("/v1/batch-services", body).await;
    let created = r.expect_status(202).clone();
    assert_eq!(created["status"], "DEPLOYING");
    let name = created["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("service-") && name.len() == "service-".len() + 4,
        "{name}"
    );
    assert_eq!(created["progress"]["total"], 5, "{created}");
    assert!(created.get("results").is_none(), "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_batch(&api, &id, "COMPLETED").await;
    assert_eq!(
        done["progress"],
        json!({"total": 5, "pending": 0, "succeeded": 3, "failed": 2}),
        "{done}"
    );
    let task = done["task_id"].as_str().unwrap();
    assert_eq!(
        done["results"]["folder"],
        format!("obs://data/out1/infer-result-{task}/")
    );
    // Five lines, two a manifest (ATELIER_BATCH_MANIFEST_LINES=2): _1, _2, _3.
    let manifests: Vec<&str> = done["results"]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(
        manifests,
        (1..=3)
            .map(|i| format!("obs://data/out1/infer-result-{task}_{i}.manifest"))
            .collect::<Vec<_>>()
    );
    let lines = manifest_lines(&s3, &done);
    assert_eq!(lines.len(), 5);
    let lines = by_source(&lines);
    let folder = format!("obs://data/out1/infer-result-{task}");
    let a = &lines["obs://data/in/a/x.json"];
    assert_eq!(
        a,
        &json!({"source": "obs://data/in/a/x.json", "result": "SUCCESSFUL",
                "inference-loc": format!("{folder}/x.json_result.txt")})
    );
    assert_eq!(label(&s3, a), "setosa");
    let b = &lines["obs://data/in/b/x.json"];
    assert_eq!(b["inference-loc"], format!("{folder}/x.json-2_result.txt"));
    assert_eq!(label(&s3, b), "virginica");
    let odd = &lines["obs://data/in/we ird#名.json"];
    assert_eq!(
        odd["inference-loc"],
        format!("{folder}/we_ird__.json_result.txt")
    );
    assert_eq!(label(&s3, odd), "virginica");
    let big = &lines["obs://data/in/big.json"];
    assert_eq!(big["result"], "FAILED");
    assert_eq!(
        big["error_message"],
        format!(
            "The file is {} bytes, larger than the 12 MB a batch input file may be.",
            13 * 1024 * 1024
        )
    );
    assert!(big.get("inference-loc").is_none(), "{big}");
    let bad = &lines["obs://data/in/bad.json"];
    assert!(
        bad["error_message"]
            .as_str()
            .unwrap()
            .starts_with("bad.json is not JSON"),
        "{bad}"
    );
    // Only the successful files have results.
    let results = files_under(&data.join(format!("out1/infer-result-{task}")));
    assert_eq!(
        results,
        [
            "we_ird__.json_result.txt",
            "x.json-2_result.txt",
            "x.json_result.txt"
        ]
    );
    assert_eq!(
        event_texts(&api, &id).await,
        [
            "The service starts to deploy.".to_string(),
            format!("Service {name} started."),
            "The service has been executed.".to_string(),
        ]
    );

    // No restart, whatever the status (seed 9.8.3); a start runs it again.
    let r = api
        .post_empty(&format!("/v1/batch-services/{id}/restart"))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        message(&r).contains("Batch services cannot be restarted."),
        "{}",
        r.text
    );
    // The output is no longer empty.
    let r = api
        .post(
            "/v1/batch-services",
            deploy_body("obs://data/in/", "obs://data/out1/"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(message(&r).contains("is not empty"), "{}", r.text);

    // A manifest naming a missing object: that line FAILED, the job COMPLETED.
    write(
        &data,
        "lists/test.manifest",
        b"{\"source\": \"obs://data/in/a/x.json\"}\n\n{\"source\": \"s3://data/missing.json\"}\n",
    );
    let mut body = deploy_body("obs://data/lists/test.manifest", "obs://data/out2/");
    body["name"] = "listed".into();
    let r = api.post("/v1/batch-services", body).await;
    let listed = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let done = wait_batch(&api, &listed, "COMPLETED").await;
    let task = done["task_id"].as_str().unwrap();
    // Two lines fit one manifest: no suffix.
    assert_eq!(
        done["results"]["manifests"],
        json!([format!("obs://data/out2/infer-result-{task}.manifest")])
    );
    let lines = manifest_lines(&s3, &done);
    assert_eq!(label(&s3, &lines[0]), "setosa");
    assert_eq!(
        lines[1],
        json!({"source": "s3://data/missing.json", "result": "FAILED",
               "error_message": "Download file failed."})
    );

    // Bad manifests are refused at deploy, naming the line; nothing is created.
    for (text, says) in [
        (
            "{\"source\": \"obs://data/in/a/x.json\"}\nnot json\n",
            "input manifest line 2: not a JSON object",
        ),
        (
            "{\"src\": \"obs://data/a.json\"}\n",
            "input manifest line 1: no \"source\"",
        ),
        (
            "{\"source\": \"obs://data/in/\"}\n",
            "input manifest line 1: \"obs://data/in/\" is a folder",
        ),
        (
            "{\"source\": \"obs://data/in/../secret\"}\n",
            "input manifest line 1",
        ),
        (
            "\n{\"source\": \"https://169.254.169.254/latest/meta-data\"}\n",
            "input manifest line 2: \"https://169.254.169.254/latest/meta-data\": URL sources",
        ),
    ] {
        write(&data, "lists/bad.manifest", text.as_bytes());
        let r = api
            .post(
                "/v1/batch-services",
                deploy_body("obs://data/lists/bad.manifest", "obs://data/out9/"),
            )
            .await;
        assert_eq!(r.status, 400, "{text}: {}", r.text);
        assert!(message(&r).contains(says), "{text}: {}", r.text);
    }
    let r = api
        .post(
            "/v1/batch-services",
            deploy_body("obs://data/nothing/", "obs://data/out9/"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(message(&r).contains("names no files"), "{}", r.text);
    assert_eq!(
        api.get("/v1/batch-services").await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // CSV rows mapped to the iris processor's request by JSON pointers, through the CLI.
    write(
        &data,
        "csv/rows.csv",
        b"5.1,3.5,1.4,0.2\n\"6.7\",3.0,5.8,2.2\n",
    );
    let token = api.token().unwrap().to_string();
    let out = gw
        .cli(
            &token,
            &[
                "batch",
                "deploy",
                "--name",
                "rows",
                "--model",
                "iris:0.0.1",
                "--input",
                "obs://data/csv/",
                "--output",
                "obs://data/out3/",
                "--connection",
                "local",
                "--map",
                "/instances/0/0=0",
                "--map",
                "/instances/0/1=1",
                "--map",
                "/instances/0/2=2",
                "--map",
                "/instances/0/3=3",
                "--wait",
            ],
            &[],
        )
        .await;
    out.assert_ok("batch deploy --wait");
    assert!(out.stderr.contains("COMPLETED"), "{}", out.stderr);
    let done = api.get("/v1/batch-services/rows").await.json.clone();
    let lines = manifest_lines(&s3, &done);
    let text = std::fs::read_to_string(object_file(
        &s3,
        lines[0]["inference-loc"].as_str().unwrap(),
    ))
    .unwrap();
    assert!(
        lines[0]["inference-loc"]
            .as_str()
            .unwrap()
            .ends_with("/rows.csv_result.txt"),
        "{}",
        lines[0]
    );
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let labels: Vec<&str> = rows
        .iter()
        .map(|r| r["predictions"][0][0]["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["setosa", "virginica"], "{text}");
    for (args, says) in [
        (vec!["batch", "list"], "rows"),
        (vec!["batch", "get", "rows"], "infer-result-"),
        (
            vec!["batch", "events", "rows"],
            "The service has been executed.",
        ),
    ] {
        let out = gw.cli(&token, &args, &[]).await;
        out.assert_ok(&args.join(" "));
        assert!(out.stdout.contains(says), "{args:?}: {}", out.stdout);
    }

    // A model version a batch service runs cannot be deleted; the service can.
    let r = api.delete("/v1/models/iris/versions/0.0.1").await;
    assert_eq!(r.status, 409, "{}", r.text);
    let out = gw.cli(&token, &["batch", "delete", "listed"], &[]).await;
    out.assert_ok("batch delete");
    assert_eq!(
        api.get(&format!("/v1/batch-services/{listed}"))
            .await
            .status,
        404
    );
    // Its results stay: they are the user's.
    assert!(!files_under(&data.join("out2")).is_empty());
}

/// The echo processor (tests/fixtures/hostile-processor) on the iris model, its config's
/// API taking `request` (a multipart form or a JSON schema): it answers with what it saw.
async fn echo_package(dir: &Path, request: Value) {
    iris_package(dir, false).await;
    with_processor(dir, &repo_root().join("tests/fixtures/hostile-processor")).await;
    let path = dir.join("model/config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["apis"][0]["request"] = request;
    std::fs::write(&path, config.to_string()).unwrap();
}

/// The seed's mapping example (9.5): `data.req_data[].input_1..4` numbers.
fn seed_schema() -> Value {
    json!({"type": "object", "properties": {"data": {"type": "object", "properties": {
        "req_data": {"type": "array", "items": [{"type": "object", "properties": {
            "input_1": {"type": "number"}, "input_2": {"type": "number"},
            "input_3": {"type": "number"}, "input_4": {"type": "number"}}}]}}}}})
}

/// What the echo processor saw, per line of a result file.
fn echoes(s3: &S3Server, view: &Value) -> Vec<Value> {
    let lines = manifest_lines(s3, view);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let text =
        std::fs::read_to_string(object_file(s3, lines[0]["inference-loc"].as_str().unwrap()))
            .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_and_csv_rows_reach_the_processor_as_the_seed_says_and_other_users_are_kept_out() {
    let s3 = S3Server::start();
    let models = s3.bucket("models");
    echo_package(
        &models.join("mp"),
        json!({"Content-type": "multipart/form-data",
               "data": {"type": "object", "properties": {"images": {"type": "file"}}}}),
    )
    .await;
    echo_package(
        &models.join("js"),
        json!({"Content-type": "application/json", "data": seed_schema()}),
    )
    .await;
    let data = s3.bucket("data");
    write(&data, "img/1.jpg", &[7u8; 100]);
    write(
        &data,
        "tab/train.csv",
        b"5.1,3.5,1.4,0.2\n6.7,3.0,5.8,2.2,9\n",
    );
    // Three batch services a user (the seed's 1,000 is ATELIER_BATCH_QUOTA's default).
    let gw = gateway(&[("ATELIER_BATCH_QUOTA", "3")]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    import(&alice, "mp", "mp").await;
    import(&alice, "js", "js").await;

    // A multipart API gets the file under its field, with its name and type.
    let r = alice
        .post(
            "/v1/batch-services",
            json!({"name": "images", "model": "mp", "version": "0.0.1",
                   "input": "obs://data/img/", "output": "obs://data/o-mp/", "connection": "local"}),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let seen = echoes(&s3, &wait_batch(&alice, &id, "COMPLETED").await);
    assert_eq!(seen[0]["body"], "multipart", "{seen:?}");
    assert_eq!(seen[0]["method"], "POST");
    assert_eq!(seen[0]["path"], "/");
    assert_eq!(
        seen[0]["fields"],
        json!({"images": {"files": [["1.jpg", "image/jpeg", 100]], "values": []}})
    );

    // CSV rows by the seed's mapping: one JSON request per row, the seed's exact body; an
    // index past the row's columns leaves the field out (so row 1 has no input_4 at 4),
    // -1 always does.
    let csv = |name: &str, mapping: Value| {
        json!({"name": name, "model": "js", "version": "0.0.1", "input": "obs://data/tab/",
               "output": format!("obs://data/o-{name}/"), "connection": "local",
               "mapping": mapping})
    };
    let r = alice
        .post(
            "/v1/batch-services",
            csv(
                "seed",
                json!({"input_1": 0, "input_2": 1, "input_3": 2, "input_4": 3}),
            ),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let seen = echoes(&s3, &wait_batch(&alice, &id, "COMPLETED").await);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["body"], "json");
    assert_eq!(
        seen[0]["json"],
        json!({"data": {"req_data": [{"input_1": 5.1, "input_2": 3.5, "input_3": 1.4, "input_4": 0.2}]}})
    );
    let r = alice
        .post(
            "/v1/batch-services",
            csv(
                "partial",
                json!({"input_1": 0, "input_2": -1, "input_3": 2, "input_4": 4}),
            ),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let seen = echoes(&s3, &wait_batch(&alice, &id, "COMPLETED").await);
    assert_eq!(
        seen[0]["json"],
        json!({"data": {"req_data": [{"input_1": 5.1, "input_3": 1.4}]}})
    );
    assert_eq!(
        seen[1]["json"],
        json!({"data": {"req_data": [{"input_1": 6.7, "input_3": 5.8, "input_4": 9.0}]}})
    );
    // The quota counts services in any status.
    let r = alice
        .post("/v1/batch-services", csv("fourth", json!({"input_1": 0})))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        message(&r)
            .contains("you have 3 batch services, the most allowed (3; ATELIER_BATCH_QUOTA)"),
        "{}",
        r.text
    );

    // A mapping is checked against the schema; a multipart API takes none.
    for (body, says) in [
        (csv("x1", json!({"input_9": 0})), "mapping.input_9"),
        (csv("x2", json!({"input_1": -3})), "mapping.input_1: -3"),
        (
            json!({"model": "mp", "version": "0.0.1", "input": "obs://data/tab/",
                   "output": "obs://data/o-x3/", "connection": "local", "mapping": {"a": 0}}),
            "mapping: only for a model whose API takes application/json",
        ),
        (
            json!({"model": "js", "version": "0.0.1", "input": "obs://data/tab/",
                   "output": "obs://data/o-x4/", "connection": "local", "request_path": "/x"}),
            "request_path: \"/x\" is none of the model's apis[].url (/)",
        ),
        (
            json!({"model": "js", "version": "0.0.1", "input": "obs://data/tab/",
                   "output": "obs://data/o-x5/", "connection": "local", "instances": 17}),
            "instances: 17; between 1 and 16",
        ),
        (
            json!({"model": "js", "version": "0.0.1", "input": "obs://data/tab/",
                   "output": "obs://data/o-x6/", "connection": "local", "timeout_minutes": 2}),
            "timeout_minutes: 2; between 3 and 120",
        ),
    ] {
        let r = alice.post("/v1/batch-services", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(message(&r).contains(says), "{body}: {}", r.text);
    }

    // Another user: alice's connection, model and batch services are not theirs.
    let bob = gw.api(&gw.create_user("bob").await);
    let mine = json!({"model": "mp", "version": "0.0.1", "input": "obs://data/img/",
                      "output": "obs://data/o-bob/", "connection": "local"});
    let r = bob.post("/v1/batch-services", mine.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        message(&r).contains("no storage connection named \"local\""),
        "{}",
        r.text
    );
    s3.connect(&bob, "local").await;
    let model_id = alice.get("/v1/models/mp").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    for model in ["mp", model_id.as_str()] {
        let mut body = mine.clone();
        body["model"] = model.into();
        let r = bob.post("/v1/batch-services", body).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(message(&r).contains("not found"), "{}", r.text);
    }
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/batch-services/{id}")),
        (
            reqwest::Method::GET,
            format!("/v1/batch-services/{id}/events"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/batch-services/{id}/start"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/batch-services/{id}/stop"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/batch-services/{id}/restart"),
        ),
        (reqwest::Method::DELETE, format!("/v1/batch-services/{id}")),
        (
            reqwest::Method::GET,
            "/v1/batch-services/partial".to_string(),
        ),
    ] {
        let r = bob.send(bob.request(method.clone(), &path)).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    assert!(
        bob.get("/v1/batch-services").await.json["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(bob.get("/v1/batch-services?all=true").await.status, 403);
    assert_eq!(
        alice.get(&format!("/v1/batch-services/{id}")).await.json["status"],
        "COMPLETED"
    );

    // A connection for one bucket reaches no other: not for the input, the output or a
    // manifest's sources.
    let r = alice
        .post(
            "/v1/storage/connections",
            json!({"name": "scoped", "endpoint": s3.endpoint(), "bucket": "data",
                   "access_key_id": s3.access_key, "secret_access_key": s3.secret_key}),
        )
        .await;
    r.expect_status(201);
    write(
        &data,
        "lists/other.manifest",
        b"{\"source\": \"obs://data/img/1.jpg\"}\n{\"source\": \"obs://models/mp/model/config.json\"}\n",
    );
    for (input, output, says) in [
        (
            "obs://data/lists/other.manifest",
            "obs://data/o-s1/",
            "input manifest line 2: \"obs://models/mp/model/config.json\" is not in bucket \"data\"",
        ),
        (
            "obs://models/mp/",
            "obs://data/o-s2/",
            "input: bucket \"models\" is not the connection's bucket \"data\"",
        ),
        (
            "obs://data/img/",
            "obs://models/out/",
            "output: bucket \"models\" is not the connection's bucket \"data\"",
        ),
    ] {
        let r = alice
            .post(
                "/v1/batch-services",
                json!({"model": "mp", "version": "0.0.1", "input": input, "output": output,
                       "connection": "scoped"}),
            )
            .await;
        assert_eq!(r.status, 400, "{input}: {}", r.text);
        assert!(message(&r).contains(says), "{input}: {}", r.text);
    }
}

/// The result files under `dir` with their modification times.
fn mtimes(dir: &Path) -> BTreeMap<String, SystemTime> {
    files_under(dir)
        .into_iter()
        .map(|f| {
            let t = std::fs::metadata(dir.join(&f)).unwrap().modified().unwrap();
            (f, t)
        })
        .collect()
}

/// `n` iris inputs under `data/{folder}/`.
fn many_inputs(data: &Path, folder: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let row = if i % 2 == 0 { SETOSA } else { VIRGINICA };
            write(data, &format!("{folder}/{i:03}.json"), &instances(row));
            format!("obs://data/{folder}/{i:03}.json")
        })
        .collect()
}

/// Each source exactly once, each SUCCESSFUL, with the right label.
fn every_source_once(s3: &S3Server, view: &Value, sources: &[String]) {
    let lines = manifest_lines(s3, view);
    assert_eq!(lines.len(), sources.len());
    let lines = by_source(&lines);
    for (i, s) in sources.iter().enumerate() {
        let want = if i % 2 == 0 { "setosa" } else { "virginica" };
        assert_eq!(label(s3, &lines[s]), want, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_or_killed_job_goes_on_from_its_pending_files_and_never_redoes_one() {
    let (s3, mut gw, api) = iris_setup(&[]).await;
    let data = s3.bucket("data");
    let n = 150;

    // Stop and start: the pending files wait, then are done; none twice.
    let sources = many_inputs(&data, "in1", n);
    let r = api
        .post(
            "/v1/batch-services",
            deploy_body("obs://data/in1/", "obs://data/out1/"),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    eventually("the first results", JOB, || async {
        let b = api
            .get(&format!("/v1/batch-services/{id}"))
            .await
            .json
            .clone();
        (b["progress"]["succeeded"].as_i64().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    // Frozen store: the files under way hang; the stop ends them.
    s3.freeze();
    let r = api
        .post_empty(&format!("/v1/batch-services/{id}/stop"))
        .await;
    let status = r.expect_status(200)["status"].clone();
    assert!(status == "STOPPING" || status == "STOPPED", "{status}");
    let stopped = wait_batch(&api, &id, "STOPPED").await;
    s3.thaw();
    let pending = stopped["progress"]["pending"].as_i64().unwrap();
    assert!(pending > 0, "{stopped}");
    let r = api
        .post_empty(&format!("/v1/batch-services/{id}/stop"))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = api
        .post_empty(&format!("/v1/batch-services/{id}/start"))
        .await;
    assert_eq!(r.expect_status(202)["status"], "DEPLOYING");
    let done = wait_batch(&api, &id, "COMPLETED").await;
    every_source_once(&s3, &done, &sources);
    let texts = event_texts(&api, &id).await;
    for t in [
        "The service is being stopped.",
        "The service has been stopped.",
        "The service is being started.",
    ] {
        assert!(texts.contains(&t.to_string()), "{texts:?}");
    }
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "The service has been executed.")
            .count(),
        1,
        "{texts:?}"
    );

    // SIGKILL mid-job: the restarted gateway goes on; what was written is not written again.
    let sources = many_inputs(&data, "in2", n);
    let body = deploy_body("obs://data/in2/", "obs://data/out2/");
    let done = completes_across_a_kill(&s3, &mut gw, &api, body, "out2", n).await;
    every_source_once(&s3, &done, &sources);
}

/// The job deployed with `body` (its output `obs://data/{out}/`, `n` inputs), its gateway
/// SIGKILLed once a few results are written and started again: the job COMPLETED, no
/// result written twice, "The service has been executed." once. Its view.
async fn completes_across_a_kill(
    s3: &S3Server,
    gw: &mut Gateway,
    api: &Api,
    body: Value,
    out: &str,
    n: usize,
) -> Value {
    let r = api.post("/v1/batch-services", body).await;
    let created = r.expect_status(202).clone();
    let id = created["id"].as_str().unwrap().to_string();
    let results = s3.bucket("data").join(format!(
        "{out}/infer-result-{}",
        created["task_id"].as_str().unwrap()
    ));
    frozen_after(s3, &results, 3).await;
    let before = mtimes(&results);
    assert!(before.len() < n, "the job was done before the kill");
    gw.kill9();
    s3.thaw();
    gw.start_again().await;
    let done = wait_batch(api, &id, "COMPLETED").await;
    let after = mtimes(&results);
    assert_eq!(after.len(), n);
    for (f, t) in &before {
        assert_eq!(after.get(f), Some(t), "{f} was written again");
    }
    let texts = event_texts(api, &id).await;
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "The service has been executed.")
            .count(),
        1,
        "{texts:?}"
    );
    done
}

/// Once at least `k` results of the job writing into `results` are there, the store
/// frozen: the items under way hang.
async fn frozen_after(s3: &S3Server, results: &Path, k: usize) {
    eventually("the first result files", JOB, || async {
        (files_under(results).len() >= k).then_some(())
    })
    .await;
    s3.freeze();
}

// Models on their own server (a container or process engine): the batch engine fixture
// (tests/fixtures/batch-engine/server.py), launched as a real-time service's instances.

/// A package whose server is the batch engine, with `apis` in its config (none if null).
fn engine_package(dir: &Path, apis: Value) {
    let mut config = json!({"model_algorithm": "batch", "model_type": "PyTorch"});
    if !apis.is_null() {
        config["apis"] = apis;
    }
    write(
        dir,
        "model/config.json",
        &serde_json::to_vec_pretty(&config).unwrap(),
    );
    let server = std::fs::read(repo_root().join("tests/fixtures/batch-engine/server.py")).unwrap();
    write(dir, "model/server.py", &server);
}

/// The seed's file API: a multipart form with the file under `images` (at /, as a PyTorch
/// model's must be).
fn file_api() -> Value {
    json!([{"url": "/", "method": "post",
            "request": {"Content-type": "multipart/form-data",
                        "data": {"type": "object", "properties": {"images": {"type": "file"}}}}}])
}

/// A gateway on `gw` with alice, `local`, and the engine models `files` (the file API) and
/// `plain` (no API).
async fn engine_setup_on(s3: &S3Server, gw: &Gateway) -> Api {
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    import_engine(&api, "files", "files").await;
    import_engine(&api, "plain", "plain").await;
    api
}

/// The process backend's gateway with the engine models; `None` where there is no sandbox.
async fn engine_setup(env: &[(&str, &str)]) -> Option<(S3Server, Gateway, Api)> {
    let s3 = S3Server::start();
    let models = s3.bucket("models");
    engine_package(&models.join("files"), file_api());
    engine_package(&models.join("plain"), Value::Null);
    let gw = Gateway::start_with(env).await;
    if !gw.sandboxed() {
        eprintln!("skipping: model engines need the process backend's sandbox");
        return None;
    }
    let api = engine_setup_on(&s3, &gw).await;
    Some((s3, gw, api))
}

fn engine_body(model: &str, input: &str, output: &str) -> Value {
    json!({"model": model, "version": "0.0.1", "input": input, "output": output,
           "connection": "local"})
}

/// The instances the process backend holds now.
fn engine_dirs(gw: &Gateway) -> Vec<String> {
    std::fs::read_dir(gw.data_dir.join("engines"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the engine said it received for one SUCCESSFUL line.
fn received(s3: &S3Server, line: &Value) -> Value {
    assert_eq!(line["result"], "SUCCESSFUL", "{line}");
    let text =
        std::fs::read_to_string(object_file(s3, line["inference-loc"].as_str().unwrap())).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_on_a_process_engine_posts_each_file_to_its_server_and_records_its_refusals() {
    let Some((s3, gw, api)) = engine_setup(&[]).await else {
        return;
    };
    let data = s3.bucket("data");
    write(&data, "in/1.jpg", b"jpeg one");
    write(&data, "in/2.jpg", b"jpeg two");
    write(&data, "in/sub/3.png", b"png three");
    write(&data, "in/bad.jpg", b"FAIL500");
    // A name that would add a form field if it were not escaped.
    write(&data, "in/a\"; name=\"evil.jpg", b"quoted");

    // Two instances of the file API's model; its first API's is the request path.
    let mut body = engine_body("files", "obs://data/in/", "obs://data/out/");
    body["instances"] = 2.into();
    let r = api.post("/v1/batch-services", body).await;
    let created = r.expect_status(202).clone();
    assert_eq!(created["request_path"], "/", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_batch(&api, &id, "COMPLETED").await;
    assert_eq!(
        done["progress"],
        json!({"total": 5, "pending": 0, "succeeded": 4, "failed": 1}),
        "{done}"
    );
    let lines = by_source(&manifest_lines(&s3, &done));
    assert_eq!(lines.len(), 5);
    let bad = &lines["obs://data/in/bad.jpg"];
    assert_eq!(bad["result"], "FAILED", "{bad}");
    let why = bad["error_message"].as_str().unwrap();
    assert!(
        why.starts_with("the model answered 500: ") && why.contains("refused"),
        "{why}"
    );
    for (name, content, media) in [
        ("1.jpg", "jpeg one", "image/jpeg"),
        ("2.jpg", "jpeg two", "image/jpeg"),
        ("sub/3.png", "png three", "image/png"),
    ] {
        let got = received(&s3, &lines[&format!("obs://data/in/{name}")]);
        assert_eq!(got["method"], "POST", "{got}");
        assert_eq!(got["path"], "/", "{got}");
        assert!(
            got["content_type"]
                .as_str()
                .unwrap()
                .starts_with("multipart/form-data; boundary="),
            "{got}"
        );
        let form = got["body"].as_str().unwrap();
        let base = name.rsplit('/').next().unwrap();
        assert!(
            form.contains(&format!(
                "Content-Disposition: form-data; name=\"images\"; filename=\"{base}\"\r\nContent-Type: {media}\r\n\r\n{content}\r\n"
            )),
            "{form}"
        );
    }
    let quoted = received(&s3, &lines["obs://data/in/a\"; name=\"evil.jpg"]);
    let form = quoted["body"].as_str().unwrap();
    assert!(
        form.contains("name=\"images\"; filename=\"a%22; name=%22evil.jpg\""),
        "{form}"
    );
    assert_eq!(form.matches("; name=\"").count(), 1, "{form}");
    let texts = event_texts(&api, &id).await;
    let name = done["name"].as_str().unwrap();
    for t in [
        "The service starts to deploy.".to_string(),
        format!("Service {name} started."),
        "The service has been executed.".to_string(),
    ] {
        assert!(texts.contains(&t), "{texts:?}");
    }
    // The job's instances went with its end.
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));
    // Its log: what the server printed, the failed file, the end.
    let logged = eventually("the job's log", JOB, || async {
        let r = api
            .get(&format!("/v1/batch-services/{id}/logs?since=1h"))
            .await;
        let texts: Vec<String> = r.expect_status(200)["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                format!(
                    "{} {}",
                    l["source"].as_str().unwrap(),
                    l["text"].as_str().unwrap()
                )
            })
            .collect();
        (texts
            .iter()
            .any(|t| t.contains("batch-engine: listening on 8080"))
            && texts.iter().any(|t| t.ends_with(" COMPLETED")))
        .then_some(texts)
    })
    .await;
    assert!(
        logged
            .iter()
            .any(|t| t.contains("obs://data/in/bad.jpg FAILED: the model answered 500")),
        "{logged:?}"
    );

    // A model whose config lists no API is called at /: a .json file as JSON, any other
    // file as a form under `file`.
    write(&data, "in2/x.json", br#"{"a": 1}"#);
    write(&data, "in2/y.txt", b"why");
    let r = api
        .post(
            "/v1/batch-services",
            json!({"model": "plain", "version": "0.0.1", "input": "obs://data/in2/",
                   "output": "obs://data/out2/", "connection": "local",
                   "request_path": "/predict"}),
        )
        .await;
    assert!(
        r.expect_error(400, "invalid_argument")
            .contains("lists no apis"),
        "{}",
        r.text
    );
    let r = api
        .post(
            "/v1/batch-services",
            engine_body("plain", "obs://data/in2/", "obs://data/out2/"),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let done = wait_batch(&api, &id, "COMPLETED").await;
    let lines = by_source(&manifest_lines(&s3, &done));
    let x = received(&s3, &lines["obs://data/in2/x.json"]);
    assert_eq!(x["path"], "/", "{x}");
    assert_eq!(x["content_type"], "application/json", "{x}");
    assert_eq!(x["body"], r#"{"a": 1}"#, "{x}");
    let y = received(&s3, &lines["obs://data/in2/y.txt"]);
    assert!(
        y["body"]
            .as_str()
            .unwrap()
            .contains("name=\"file\"; filename=\"y.txt\""),
        "{y}"
    );
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));

    // A processor runs around the built-in engine only: refused with a server of its own,
    // as a real-time service refuses it.
    let dir = s3.bucket("models").join("withproc");
    engine_package(&dir, Value::Null);
    with_processor(&dir, &repo_root().join("examples/inference/iris/processor")).await;
    import_engine(&api, "withproc", "withproc").await;
    let r = api
        .post(
            "/v1/batch-services",
            engine_body("withproc", "obs://data/in2/", "obs://data/out3/"),
        )
        .await;
    assert!(
        r.expect_error(400, "invalid_argument")
            .contains("has a processor (customize_service.wasm), which runs with the built-in ONNX engine only"),
        "{}",
        r.text
    );
}

/// `n` small inputs under `data/{folder}/`, their sources.
fn engine_inputs(data: &Path, folder: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            write(
                data,
                &format!("{folder}/{i:03}.txt"),
                format!("item {i}").as_bytes(),
            );
            format!("obs://data/{folder}/{i:03}.txt")
        })
        .collect()
}

/// Each source exactly once in the manifest, each answered with its own content.
fn every_engine_source_once(s3: &S3Server, view: &Value, sources: &[String]) {
    let lines = manifest_lines(s3, view);
    assert_eq!(lines.len(), sources.len());
    let lines = by_source(&lines);
    for (i, s) in sources.iter().enumerate() {
        let got = received(s3, &lines[s]);
        assert!(
            got["body"]
                .as_str()
                .unwrap()
                .contains(&format!("\r\n\r\nitem {i}\r\n")),
            "{s}: {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_batch_stops_starts_survives_a_killed_gateway_and_leaves_no_instance() {
    let Some((s3, mut gw, api)) = engine_setup(&[]).await else {
        return;
    };
    let data = s3.bucket("data");
    let n = 60;

    // Stop and start: the pending files wait, then are done; none twice.
    let sources = engine_inputs(&data, "in1", n);
    let mut body = engine_body("files", "obs://data/in1/", "obs://data/out1/");
    body["instances"] = 2.into();
    let r = api.post("/v1/batch-services", body).await;
    let created = r.expect_status(202).clone();
    let id = created["id"].as_str().unwrap().to_string();
    let results = data.join(format!(
        "out1/infer-result-{}",
        created["task_id"].as_str().unwrap()
    ));
    frozen_after(&s3, &results, 2).await;
    // The two instances asked for run while the job does.
    assert_eq!(engine_dirs(&gw).len(), 2, "{:?}", engine_dirs(&gw));
    let r = api
        .post_empty(&format!("/v1/batch-services/{id}/stop"))
        .await;
    r.expect_status(200);
    let stopped = wait_batch(&api, &id, "STOPPED").await;
    s3.thaw();
    assert!(
        stopped["progress"]["pending"].as_i64().unwrap() > 0,
        "{stopped}"
    );
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));
    let r = api
        .post_empty(&format!("/v1/batch-services/{id}/start"))
        .await;
    assert_eq!(r.expect_status(202)["status"], "DEPLOYING");
    let done = wait_batch(&api, &id, "COMPLETED").await;
    every_engine_source_once(&s3, &done, &sources);
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));

    // SIGKILL mid-job: the restarted gateway goes on (adopting the instances that still
    // run); what was written is not written again; no instance is left.
    let sources = engine_inputs(&data, "in2", n);
    let mut body = engine_body("files", "obs://data/in2/", "obs://data/out2/");
    body["instances"] = 2.into();
    let done = completes_across_a_kill(&s3, &mut gw, &api, body, "out2", n).await;
    every_engine_source_once(&s3, &done, &sources);
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));

    // Deleted while it runs: its instances go with it.
    engine_inputs(&data, "in3", n);
    let r = api
        .post(
            "/v1/batch-services",
            engine_body("files", "obs://data/in3/", "obs://data/out3/"),
        )
        .await;
    let created = r.expect_status(202).clone();
    let id = created["id"].as_str().unwrap().to_string();
    let results = data.join(format!(
        "out3/infer-result-{}",
        created["task_id"].as_str().unwrap()
    ));
    frozen_after(&s3, &results, 1).await;
    assert_eq!(engine_dirs(&gw).len(), 1, "{:?}", engine_dirs(&gw));
    api.delete(&format!("/v1/batch-services/{id}"))
        .await
        .expect_status(204);
    s3.thaw();
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));
    let r = api.get(&format!("/v1/batch-services/{id}")).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engines_huge_or_hostile_answer_is_capped_and_written_only_as_its_items_result() {
    let Some((s3, gw, api)) = engine_setup(&[]).await else {
        return;
    };
    let data = s3.bucket("data");
    write(&data, "in/huge.txt", b"HUGE");
    write(&data, "in/declared.txt", b"DECLARED");
    write(&data, "in/hostile.txt", b"HOSTILE");
    write(&data, "in/ok.txt", b"fine");
    let r = api
        .post(
            "/v1/batch-services",
            engine_body("files", "obs://data/in/", "obs://data/out/"),
        )
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let done = wait_batch(&api, &id, "COMPLETED").await;
    let task = done["task_id"].as_str().unwrap();
    let lines = by_source(&manifest_lines(&s3, &done));
    // Past 12 MB an answer is not read on: the item FAILED, the job goes on.
    for big in ["huge", "declared"] {
        let l = &lines[&format!("obs://data/in/{big}.txt")];
        assert_eq!(l["result"], "FAILED", "{l}");
        assert_eq!(
            l["error_message"], "the model's answer is larger than the 12 MB a batch result may be",
            "{l}"
        );
    }
    // A hostile answer is only data: written where its item's result goes.
    let hostile = &lines["obs://data/in/hostile.txt"];
    assert_eq!(
        hostile["inference-loc"],
        format!("obs://data/out/infer-result-{task}/hostile.txt_result.txt")
    );
    assert_eq!(
        received(&s3, hostile)["filename"],
        "../../../escape.txt",
        "{hostile}"
    );
    let ok = received(&s3, &lines["obs://data/in/ok.txt"]);
    assert!(ok["body"].as_str().unwrap().contains("fine"), "{ok}");
    let mut out = files_under(&data.join("out"));
    out.sort();
    assert_eq!(
        out,
        [
            format!("infer-result-{task}.manifest"),
            format!("infer-result-{task}/hostile.txt_result.txt"),
            format!("infer-result-{task}/ok.txt_result.txt"),
        ]
    );
    let everywhere = files_under(&s3.root);
    assert!(
        everywhere.iter().all(|f| !f.contains("escape")),
        "{everywhere:?}"
    );
    assert!(
        !std::path::Path::new("/tmp/escape.txt").exists()
            && !gw.data_dir.join("escape.txt").exists()
    );
    assert!(engine_dirs(&gw).is_empty(), "{:?}", engine_dirs(&gw));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_backend_runs_an_engine_batch_in_containers_it_then_removes() {
    let s3 = S3Server::start();
    let models = s3.bucket("models");
    engine_package(&models.join("files"), file_api());
    engine_package(&models.join("plain"), Value::Null);
    let gw = Gateway::start_docker("", &[]).await;
    let api = engine_setup_on(&s3, &gw).await;
    let data = s3.bucket("data");
    let sources = engine_inputs(&data, "in", 6);
    write(&data, "in/zz-bad.txt", b"FAIL500");
    let mut body = engine_body("files", "obs://data/in/", "obs://data/out/");
    body["instances"] = 2.into();
    let r = api.post("/v1/batch-services", body).await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    let done = wait_batch(&api, &id, "COMPLETED").await;
    assert_eq!(
        done["progress"],
        json!({"total": 7, "pending": 0, "succeeded": 6, "failed": 1}),
        "{done}"
    );
    let lines = manifest_lines(&s3, &done);
    let ok: Vec<Value> = lines
        .iter()
        .filter(|l| l["source"] != "obs://data/in/zz-bad.txt")
        .cloned()
        .collect();
    assert_eq!(ok.len(), sources.len());
    for (i, s) in sources.iter().enumerate() {
        let l = ok.iter().find(|l| l["source"] == s.as_str()).unwrap();
        assert!(
            received(&s3, l)["body"]
                .as_str()
                .unwrap()
                .contains(&format!("item {i}")),
            "{l}"
        );
    }
    let labels = format!("label=io.atelier.service={id}");
    let left = atelier_tests::podman(&["ps", "-a", "--filter", &labels, "--format", "{{.ID}}"]);
    assert!(left.trim().is_empty(), "left after the job: {left}");
}
