//! Workflow definitions (`/v1/workflows`, `atelier workflow`): created from JSON or YAML,
//! published as versions (a definition that means the same makes none), refused whole with
//! every problem named and nothing created, each user's own, within the quota, deleted.

use atelier_tests::{Api, Gateway};
use serde_json::{Value, json};

/// A small valid definition: a Wasm step, a job after it, a condition choosing a branch.
const YAML: &str = r#"
name: etl
desc: prepare, train, check
storages:
  - {name: out, create_dir: true, with_execution_id: true}
parameters:
  - {name: threshold, placeholder_type: FLOAT, default: 0.5}
steps:
  - name: prep
    step_type: wasm
    outputs: [{name: clean, obs_config: {obs_path: {$storage: out, join: clean/}}}]
    properties: {plugin: prep-data}
  - name: train
    step_type: job
    depend_steps: [prep]
    properties:
      algorithm: mnist
      inputs: [{name: data_url, path: {$output: {step: prep, output: clean}}}]
  - name: check
    step_type: condition
    depend_steps: [train]
    properties:
      conditions:
        - {condition_type: GT, left: {$placeholder: threshold}, right: 0.1}
      if_then_steps: [good]
      else_then_steps: [bad]
  - {name: good, step_type: wasm, depend_steps: [check], properties: {plugin: notify}}
  - {name: bad, step_type: wasm, depend_steps: [check], properties: {plugin: notify}}
"#;

/// The same definition as JSON, its keys in another order.
fn as_json() -> Value {
    json!({
        "steps": [
            {"name": "prep", "step_type": "wasm", "properties": {"plugin": "prep-data"},
             "outputs": [{"name": "clean", "obs_config": {"obs_path": {"$storage": "out", "join": "clean/"}}}]},
            {"name": "train", "step_type": "job", "depend_steps": ["prep"],
             "properties": {"algorithm": "mnist",
                            "inputs": [{"name": "data_url", "path": {"$output": {"step": "prep", "output": "clean"}}}]}},
            {"name": "check", "step_type": "condition", "depend_steps": ["train"],
             "properties": {"conditions": [{"condition_type": "GT", "left": {"$placeholder": "threshold"}, "right": 0.1}],
                            "if_then_steps": ["good"], "else_then_steps": ["bad"]}},
            {"name": "good", "step_type": "wasm", "depend_steps": ["check"], "properties": {"plugin": "notify"}},
            {"name": "bad", "step_type": "wasm", "depend_steps": ["check"], "properties": {"plugin": "notify"}}
        ],
        "parameters": [{"name": "threshold", "placeholder_type": "FLOAT", "default": 0.5}],
        "storages": [{"name": "out", "create_dir": true, "with_execution_id": true}],
        "desc": "prepare, train, check",
        "name": "etl"
    })
}

async fn send_yaml(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    yaml: &str,
) -> atelier_tests::Reply {
    api.send(
        api.request(method, path)
            .header("content-type", "application/yaml")
            .body(yaml.to_string()),
    )
    .await
}

async fn names(api: &Api) -> Vec<String> {
    api.get("/v1/workflows").await.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn definitions_are_versioned_by_meaning_refused_whole_and_kept_apart() {
    let gw = Gateway::start_with(&[("ATELIER_WORKFLOW_QUOTA", "2")]).await;
    let alice_token = gw.create_user("alice").await;
    let alice = gw.api(&alice_token);
    let bob = gw.api(&gw.create_user("bob").await);

    // Created from YAML: version 1, the canonical definition back.
    let created = send_yaml(&alice, reqwest::Method::POST, "/v1/workflows", YAML).await;
    let created = created.expect_status(201).clone();
    assert_eq!(created["name"], "etl", "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["description"], "prepare, train, check");
    assert_eq!(
        created["definition"]["steps"].as_array().unwrap().len(),
        5,
        "{created}"
    );
    // The name is taken.
    let again = alice.post("/v1/workflows", as_json()).await;
    let msg = again.expect_error(409, "conflict");
    assert!(
        msg.contains("already have a workflow named \"etl\""),
        "{msg}"
    );

    // The same definition as JSON, keys in another order: no new version.
    let same = alice
        .put("/v1/workflows/etl", as_json())
        .await
        .expect_status(200)
        .clone();
    assert_eq!(same["changed"], false, "{same}");
    assert_eq!(same["version"], 1);
    assert_eq!(same["digest"], created["digest"]);
    // A change: version 2, the description with it; version 1 is kept as it was.
    let mut changed = as_json();
    changed["desc"] = "prepare, train, check, notify".into();
    changed["parameters"][0]["default"] = json!(0.7);
    let v2 = alice
        .put("/v1/workflows/etl", changed)
        .await
        .expect_status(200)
        .clone();
    assert_eq!(
        (v2["changed"].clone(), v2["version"].clone()),
        (json!(true), json!(2))
    );
    assert_eq!(v2["description"], "prepare, train, check, notify");
    let versions = alice
        .get("/v1/workflows/etl/versions")
        .await
        .expect_status(200)
        .clone();
    let listed: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [1, 2]);
    let v1 = alice
        .get("/v1/workflows/etl/versions/1")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(v1["definition"]["parameters"][0]["default"], json!(0.5));
    assert_eq!(v1["digest"], created["digest"]);
    let missing = alice.get("/v1/workflows/etl/versions/3").await;
    assert!(
        missing
            .expect_error(404, "not_found")
            .contains("versions are 1 to 2")
    );
    // A definition of another name is not a version of this one.
    let mut renamed = as_json();
    renamed["name"] = "other".into();
    let r = alice.put("/v1/workflows/etl", renamed).await;
    assert!(
        r.expect_error(400, "invalid_argument")
            .starts_with("name: \"other\"")
    );

    // Refused whole, every problem named, nothing created.
    let mut bad = as_json();
    bad["name"] = "broken".into();
    bad["steps"][1]["depend_steps"] = json!(["prep", "nowhere"]);
    bad["steps"][4]["name"] = "good".into();
    let r = alice.post("/v1/workflows", bad).await;
    let msg = r.expect_error(400, "invalid_argument");
    for named in [
        "steps[1] (train).depend_steps[1]: unknown step \"nowhere\"",
        "steps[4] (good): duplicate step name \"good\"",
    ] {
        assert!(msg.contains(named), "{named:?} not named in: {msg}");
    }
    let mut cycle = as_json();
    cycle["name"] = "broken".into();
    cycle["steps"][0]["depend_steps"] = json!(["check"]); // prep → check → train → prep
    let r = alice.post("/v1/workflows", cycle).await;
    let msg = r.expect_error(400, "invalid_argument");
    assert!(msg.contains("cycle") && msg.contains("prep"), "{msg}");
    let r = send_yaml(
        &alice,
        reqwest::Method::POST,
        "/v1/workflows",
        "name: [unclosed",
    )
    .await;
    r.expect_error(400, "invalid_argument");
    let r = alice
        .send(
            alice
                .request(reqwest::Method::POST, "/v1/workflows")
                .header("content-type", "application/json")
                .body("{\"name\": \"x\", \"steps\": 3}"),
        )
        .await;
    assert!(r.expect_error(400, "invalid_argument").contains("steps"));
    assert_eq!(names(&alice).await, ["etl"]);

    // Bob sees none of it and changes none of it.
    assert!(names(&bob).await.is_empty());
    for path in [
        "/v1/workflows/etl",
        "/v1/workflows/etl/versions",
        "/v1/workflows/etl/versions/1",
    ] {
        bob.get(path).await.expect_status(404);
    }
    let id = created["id"].as_str().unwrap();
    bob.get(&format!("/v1/workflows/{id}"))
        .await
        .expect_status(404);
    bob.put("/v1/workflows/etl", as_json())
        .await
        .expect_status(404);
    bob.delete(&format!("/v1/workflows/{id}"))
        .await
        .expect_status(404);
    bob.get("/v1/workflows?all=true").await.expect_status(403);
    // Bob's own "etl" is his.
    bob.post("/v1/workflows", as_json())
        .await
        .expect_status(201);

    // The wire format's schema, as published in docs/.
    let schema = alice
        .get("/v1/workflow-schema")
        .await
        .expect_status(200)
        .clone();
    let published: Value = serde_json::from_str(
        &std::fs::read_to_string(
            atelier_tests::plugins::repo_root().join("docs/workflow.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(schema, published);

    // The quota (2 here).
    let mut second = as_json();
    second["name"] = "etl-2".into();
    alice.post("/v1/workflows", second).await.expect_status(201);
    let mut third = as_json();
    third["name"] = "etl-3".into();
    let r = alice.post("/v1/workflows", third).await;
    assert!(
        r.expect_error(409, "conflict")
            .contains("the most allowed (2)")
    );

    // The CLI: list, versions, a YAML publish, delete.
    let dir = tempfile_dir();
    let file = dir.join("etl.yaml");
    std::fs::write(&file, YAML.replace("default: 0.5", "default: 0.9")).unwrap();
    let path = file.to_string_lossy().into_owned();
    let out = gw
        .cli(&alice_token, &["workflow", "publish", "-f", &path], &[])
        .await;
    out.assert_ok("workflow publish");
    assert!(
        out.stderr.contains("published as version 3"),
        "{}",
        out.stderr
    );
    let out = gw.cli(&alice_token, &["workflow", "list"], &[]).await;
    out.assert_ok("workflow list");
    assert!(out.stdout.contains("etl-2"), "{}", out.stdout);
    let out = gw
        .cli(&alice_token, &["workflow", "versions", "etl"], &[])
        .await;
    out.assert_ok("workflow versions");
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    let out = gw
        .cli(
            &alice_token,
            &["workflow", "get", "etl", "--version", "1"],
            &[],
        )
        .await;
    out.assert_ok("workflow get");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    let out = gw
        .cli(&alice_token, &["workflow", "delete", "etl-2"], &[])
        .await;
    out.assert_ok("workflow delete");
    assert_eq!(names(&alice).await, ["etl"]);
    alice.delete("/v1/workflows/etl").await.expect_status(204);
    alice.get("/v1/workflows/etl").await.expect_status(404);
    assert!(names(&alice).await.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("atelier-wf-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
