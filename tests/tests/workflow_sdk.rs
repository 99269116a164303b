//! `atelier.workflow` (the seed's workflow SDK) from a Jupyter kernel: a workflow defined in
//! Python is released over the notebook's socket as its owner (no token in the notebook),
//! exists for them through the normal API with the definition the SDK means, gets a new
//! version when it changes, and is nobody else's; the socket reaches nothing of the API but
//! the workflows, however the path is spelt and whatever credentials the code sends, and an
//! admin's notebook has a user's rights there. The SDK's own unit tests (its wire format,
//! its calls against a stand-in server) run here too.

use atelier_tests::{Gateway, Kernel, jupyter_venv};
use serde_json::{Value, json};

/// The SDK's Python unit tests, with the kernels' interpreter.
#[test]
fn the_workflow_sdks_python_unit_tests_pass() {
    let python_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/src/backends/python")
        .canonicalize()
        .unwrap();
    let out = std::process::Command::new(jupyter_venv().join("bin/python"))
        .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
        .current_dir(&python_dir)
        .env("PYTHONPATH", &python_dir)
        .env_remove("ATELIER_STORAGE_SOCKET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Ran 13 tests"), "{text}");
}

/// Defines, releases, changes and releases again; refusals; raw requests on the socket.
/// `ADMIN_TOKEN` is replaced by the admin's token: code in a notebook may hold any token.
const RELEASE: &str = r#"
import atelier.file, atelier.workflow as wf, json, os
threshold = wf.Placeholder("threshold", wf.PlaceholderType.FLOAT, default=0.5)
out_storage = wf.data.OutputStorage("out")
prep = wf.WasmStep(name="prep", plugin="prep-data", parameters={"threshold": threshold},
                   outputs=[wf.Output("clean", obs_config=wf.data.OBSOutputConfig(out_storage.join("clean/")))])
check = wf.ConditionStep(name="check", depend_steps=prep,
                         conditions=wf.Condition(wf.ConditionTypeEnum.GT, threshold, 0.1),
                         if_then_steps="good", else_then_steps="bad")
good = wf.WasmStep(name="good", plugin="notify", depend_steps=check,
                   inputs=[wf.Input("data", prep.outputs["clean"].as_input())])
bad = wf.WasmStep(name="bad", plugin="notify", depend_steps=check)
workflow = wf.Workflow(name="sdk-etl", desc="from a kernel", steps=[prep, check, good, bad])
out = {}
first = workflow.release()
out["first"] = [first["version"], first["changed"], first["owner"]]
again = workflow.release()
out["again"] = [again["version"], again["changed"]]
threshold.default = 0.7
second = workflow.release()
out["second"] = [second["version"], second["changed"], workflow.version]
out["listed"] = [w["name"] for w in wf.list_workflows()]
out["schema"] = "properties" in wf.schema()
try:
    wf.Workflow("broken", "", [wf.WasmStep("a", plugin="p", depend_steps="ghost")]).release()
    out["refused"] = "released"
except wf.WorkflowError as e:
    out["refused"] = [e.status, e.message]
def raw(method, path, headers, body=None):
    c = atelier.file._UnixConnection(os.environ["ATELIER_STORAGE_SOCKET"])
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    text = r.read().decode(errors="replace")
    c.close()
    return r.status if body is None else [r.status, text]
creds = {"Authorization": "Bearer ADMIN_TOKEN", "Cookie": "atelier_session=ADMIN_TOKEN"}
out["raw"] = {p: raw("GET", p, creds) for p in [
    "/v1/users", "/v1/whoami", "/v1/audit", "/metrics", "/v1/workflows/../users",
    "/v1/workflows/%2e%2e/users", "/v1/workflows/..%2Fusers", "/v1//users",
    "/v1/workflows?all=true", "/v1/workflows/sdk-etl", "/v1/workflow-schema"]}
# The API's body limit holds on the socket too (the file API's writes have none).
big = b'{"name": "big", "desc": "' + b"x" * (3 << 20) + b'", "steps": []}'
out["too_large"] = raw("POST", "/v1/workflows", {"Content-Type": "application/json"}, big)
print(json.dumps(out))
"#;

/// What `RELEASE`'s first version means, written by hand in the wire format.
fn expected_first_version() -> Value {
    json!({
        "name": "sdk-etl-expected", "desc": "from a kernel",
        "storages": [{"name": "out", "create_dir": true, "with_execution_id": true}],
        "parameters": [{"name": "threshold", "placeholder_type": "FLOAT", "default": 0.5}],
        "steps": [
            {"name": "prep", "step_type": "wasm",
             "outputs": [{"name": "clean", "obs_config": {"obs_path": {"$storage": "out", "join": "clean/"}}}],
             "properties": {"plugin": "prep-data", "parameters": {"threshold": {"$placeholder": "threshold"}}}},
            {"name": "check", "step_type": "condition", "depend_steps": ["prep"],
             "properties": {"conditions": [{"condition_type": "GT", "left": {"$placeholder": "threshold"}, "right": 0.1}],
                            "if_then_steps": ["good"], "else_then_steps": ["bad"]}},
            {"name": "good", "step_type": "wasm", "depend_steps": ["check"],
             "inputs": [{"name": "data", "data": {"$output": {"step": "prep", "output": "clean"}}}],
             "properties": {"plugin": "notify"}},
            {"name": "bad", "step_type": "wasm", "depend_steps": ["check"], "properties": {"plugin": "notify"}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kernel_releases_workflows_as_its_owner_and_its_socket_reaches_nothing_else() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let admin = gw.admin();
    let admin_token = admin.token().unwrap().to_owned();
    let id = gw.create_notebook(&alice, "wf").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    let out = k.run(&RELEASE.replace("ADMIN_TOKEN", &admin_token)).await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["first"], json!([1, true, "alice"]), "{v}");
    assert_eq!(v["again"], json!([1, false]), "{v}");
    assert_eq!(v["second"], json!([2, true, 2]), "{v}");
    assert_eq!(v["listed"], json!(["sdk-etl"]), "{v}");
    assert_eq!(v["schema"], true, "{v}");
    assert_eq!(v["refused"][0], 400, "{v}");
    let refusal = v["refused"][1].as_str().unwrap_or_default();
    assert!(refusal.contains("ghost"), "the gateway's message: {v}");
    // The API's own limit (2 MiB, before the body is read whole), not only the definition's.
    assert_eq!(v["too_large"][0], 413, "{v}");
    assert!(
        v["too_large"][1]
            .as_str()
            .is_some_and(|t| t.contains("length limit exceeded")),
        "{v}"
    );
    for (path, status) in v["raw"].as_object().unwrap() {
        let want = match path.as_str() {
            // Alice is a user: everyone's workflows are for admins, whatever token is sent.
            "/v1/workflows?all=true" => 403,
            "/v1/workflows/sdk-etl" | "/v1/workflow-schema" => 200,
            _ => 404,
        };
        assert_eq!(status, want, "{path}: {v}");
    }
    drop(k);

    // The workflow is alice's, seen through the API, with the definition the SDK means:
    // version 1 is, in its canonical form, the same workflow written by hand.
    let w = api.get("/v1/workflows/sdk-etl").await;
    assert_eq!(w.status, 200, "{}", w.text);
    assert_eq!(w.json["owner"], "alice");
    assert_eq!(w.json["version"], 2);
    assert_eq!(
        w.json["definition"]["parameters"][0]["default"],
        json!(0.7),
        "{}",
        w.text
    );
    let wf_id = w.json["id"].as_str().unwrap().to_owned();
    let v1 = api.get("/v1/workflows/sdk-etl/versions/1").await;
    assert_eq!(v1.status, 200, "{}", v1.text);
    let by_hand = api.post("/v1/workflows", expected_first_version()).await;
    assert_eq!(by_hand.status, 201, "{}", by_hand.text);
    let unnamed = |mut d: Value| {
        d.as_object_mut().unwrap().remove("name");
        d
    };
    assert_eq!(
        unnamed(v1.json["definition"].clone()),
        unnamed(by_hand.json["definition"].clone()),
        "the SDK's definition differs from the one written by hand"
    );
    assert_eq!(
        api.request(reqwest::Method::DELETE, "/v1/workflows/sdk-etl-expected")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    // Nobody else's: bob sees it neither by name nor by id, nor in his list.
    let bob = gw.create_user("bob").await;
    let bob_api = gw.api(&bob);
    for path in [
        "/v1/workflows/sdk-etl".to_owned(),
        format!("/v1/workflows/{wf_id}"),
    ] {
        let r = bob_api.get(&path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }
    let r = bob_api.get("/v1/workflows").await;
    assert_eq!(r.json["items"], json!([]), "{}", r.text);

    // An admin's notebook acts with a user's rights: not everyone's workflows, not alice's
    // by id (which the admin's token reaches).
    let nb = gw.create_notebook(&admin_token, "admin-wf").await;
    gw.wait_status(&admin_token, &nb, "RUNNING").await;
    let mut k = Kernel::start(&admin, &nb).await;
    let code = format!(
        r#"
import atelier.workflow as wf, json
out = {{"listed": [w["name"] for w in wf.list_workflows()]}}
try:
    wf.get_workflow("{wf_id}")
    out["alice"] = "seen"
except wf.WorkflowError as e:
    out["alice"] = e.status
try:
    wf._request("GET", "/v1/workflows", query={{"all": "true"}})
    out["all"] = "listed"
except wf.WorkflowError as e:
    out["all"] = e.status
print(json.dumps(out))
"#
    );
    let out = k.run(&code).await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v, json!({"listed": [], "alice": 404, "all": 403}), "{v}");
    let r = admin.get(&format!("/v1/workflows/{wf_id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A run of a one-step workflow (a condition on a parameter) from the kernel: refused before
/// it is released, then released, run and waited for.
#[tokio::test(flavor = "multi_thread")]
async fn a_kernel_runs_a_released_workflow_and_waits_for_it_with_the_runs_api() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let id = gw.create_notebook(&alice, "wf-run").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run(
            r#"
import atelier.workflow as wf, json
threshold = wf.Placeholder("threshold", wf.PlaceholderType.FLOAT, default=0.5)
check = wf.ConditionStep(name="check", conditions=wf.Condition(wf.ConditionTypeEnum.GT, threshold, 0.1))
workflow = wf.Workflow(name="sdk-run", desc="", steps=[check])
out = {}
try:
    workflow.run(parameters={"threshold": "high"})
    out["refused"] = "ran"
except wf.WorkflowError as e:
    out["refused"] = [e.status, "threshold" in e.message]
run = workflow.release_and_run(parameters={"threshold": 0.7})
out["started"] = [run.number, run.status in ("RUNNING", "COMPLETED")]
run.wait(timeout=600, interval=0.5)
out["ended"] = [run.status, run.step("check")["step_type"]]
out["runs"] = [r.number for r in workflow.runs()]
print(json.dumps(out))
"#,
        )
        .await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    // Before the release there is no such workflow: the run is refused (404); a run of a
    // released one with a bad value would be a 400 naming the parameter.
    assert_eq!(v["refused"][0], 404, "{v}");
    assert_eq!(v["started"], json!([1, true]), "{v}");
    assert_eq!(v["ended"], json!(["COMPLETED", "condition"]), "{v}");
    assert_eq!(v["runs"], json!([1]), "{v}");
    let r = api.get("/v1/workflows/sdk-run/runs/1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "COMPLETED", "{}", r.text);
    assert_eq!(r.json["parameters"]["threshold"], json!(0.7), "{}", r.text);
}
