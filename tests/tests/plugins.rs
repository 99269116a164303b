//! Wasm plugins end to end: the conformance cases of tests/plugins/ through the gateway and
//! `atelier plugin test`, hostile plugins next to well-behaved ones, registration
//! (idempotent, refusals, restart without compiling), and the authors' path
//! (`atelier plugin new`, `build`, `test`, `push`, `invoke`).

use std::path::{Path, PathBuf};

use atelier_tests::plugins::{
    built_python, dummy_wat, repo_root, wat_component, wat_component_with,
};
use atelier_tests::{Api, Gateway, Reply, plugin_cli_env, run_cli};
use serde_json::{Value, json};

/// A shared compile cache for the gateways of this file (the restart test uses its own).
fn shared_cache() -> String {
    atelier_tests::cache_dir()
        .join("test-plugin-cache")
        .to_string_lossy()
        .into_owned()
}

async fn gateway() -> Gateway {
    Gateway::start_with(&[("ATELIER_PLUGIN_CACHE_DIR", &shared_cache())]).await
}

async fn upload(
    api: &Api,
    manifest: &Value,
    component: Vec<u8>,
    files: &[(&str, Vec<u8>)],
) -> Reply {
    let mut form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name("c.wasm"),
        );
    for (name, data) in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name(name.to_string()),
        );
    }
    api.send(
        api.request(reqwest::Method::POST, "/v1/plugins")
            .multipart(form),
    )
    .await
}

/// `expected` is contained in `actual`: objects by their keys (recursively), numbers within
/// 1e-6, everything else exactly.
fn contains(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let got = a
                    .get(k)
                    .ok_or_else(|| format!("{at}.{k} is missing in {actual}"))?;
                contains(v, got, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at}: {} items expected, got {actual}", e.len()));
            }
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                contains(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) => {
            let (e, a) = (e.as_f64().unwrap(), a.as_f64().unwrap());
            if (e - a).abs() <= 1e-6 * e.abs().max(1.0) {
                Ok(())
            } else {
                Err(format!("{at}: expected {e}, got {a}"))
            }
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: expected {e}, got {a}")),
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn copy_tree(from: &Path, to: &Path) {
    if !from.exists() {
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// One conformance case, as the runner sees it.
struct Case {
    world: String,
    name: String,
    dir: PathBuf,
    component: Vec<u8>,
    /// The Python project, for cases built from one.
    project: Option<PathBuf>,
    component_path: Option<PathBuf>,
    manifest: Value,
    expected: Value,
}

async fn load_case(dir: &Path) -> Case {
    let world = dir
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut manifest = json!({"name": format!("{world}-{name}").replace("registration-", "reg-"), "version": "1.0.0"});
    if world != "registration" {
        manifest["world"] = json!(world);
    }
    let mut project = None;
    let mut component_path = None;
    let component = if dir.join("project.txt").exists() {
        let rel = std::fs::read_to_string(dir.join("project.txt")).unwrap();
        let p = repo_root().join(rel.trim());
        let m = read_json(&p.join("plugin.json"));
        if let Some(l) = m.get("limits") {
            manifest["limits"] = l.clone();
        }
        let built = built_python(&p).await;
        project = Some(p);
        component_path = Some(built.clone());
        std::fs::read(built).unwrap()
    } else if dir.join("component.wat").exists() {
        let wat = std::fs::read_to_string(dir.join("component.wat")).unwrap();
        let wrap_world = std::fs::read_to_string(dir.join("world.txt"))
            .map(|s| s.trim().to_string())
            .unwrap_or(world.clone());
        match std::fs::read_to_string(dir.join("extra.wit")) {
            Ok(extra) => wat_component_with(&[&extra], &wrap_world, &wat),
            Err(_) => wat_component(&wrap_world, &wat),
        }
    } else if dir.join("module.wat").exists() {
        wat::parse_file(dir.join("module.wat")).unwrap()
    } else {
        std::fs::read(dir.join("raw.txt"))
            .expect("a case has project.txt, component.wat, module.wat or raw.txt")
    };
    if dir.join("manifest.json").exists() {
        let m = read_json(&dir.join("manifest.json"));
        for (k, v) in m.as_object().unwrap() {
            manifest[k] = v.clone();
        }
    }
    Case {
        expected: read_json(&dir.join("expected.json")),
        world,
        name,
        dir: dir.to_path_buf(),
        component,
        project,
        component_path,
        manifest,
    }
}

fn all_cases() -> Vec<PathBuf> {
    let root = repo_root().join("tests/plugins");
    let mut out = Vec::new();
    for world in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        for case in std::fs::read_dir(world.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            out.push(case.path());
        }
    }
    out.sort();
    out
}

/// Checks a call report (from invoke or `atelier plugin test --json`) against `expected`.
fn check_report(case: &Case, report: &Value, storage: &Path, via: &str) {
    let what = format!("{}/{} via {via}", case.world, case.name);
    if let Some(out) = case.expected.get("output") {
        assert!(
            report["error"].is_null(),
            "{what}: the call failed: {}",
            report["error"]
        );
        contains(out, &report["output"], "output")
            .unwrap_or_else(|e| panic!("{what}: {e}\nreport: {report}"));
    }
    if let Some(err) = case.expected.get("error") {
        let got = &report["error"];
        assert!(
            !got.is_null(),
            "{what}: expected the error {err}, the call succeeded: {report}"
        );
        let mut fields = err.clone();
        let part = fields.as_object_mut().unwrap().remove("message_contains");
        contains(&fields, got, "error").unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Some(part) = part {
            let message = format!(
                "{}{}",
                got["message"].as_str().unwrap_or_default(),
                got["hint"].as_str().unwrap_or_default()
            );
            assert!(
                message.contains(part.as_str().unwrap()),
                "{what}: {message:?} lacks {part}"
            );
        }
    }
    for l in case
        .expected
        .get("logs_contain")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let logs = report["logs"].to_string();
        assert!(
            logs.contains(l.as_str().unwrap()),
            "{what}: logs {logs} lack {l}"
        );
    }
    for m in case
        .expected
        .get("metrics_contain")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        assert!(
            report["metrics"]["scalars"]
                .get(m.as_str().unwrap())
                .is_some(),
            "{what}: no metric {m} in {}",
            report["metrics"]
        );
    }
    for p in case
        .expected
        .get("storage_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = storage.join(p.as_str().unwrap());
        assert!(
            path.is_file(),
            "{what}: the plugin did not write {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_through_the_gateway_and_plugin_test() {
    let gw = gateway().await;
    let admin = gw.admin();
    let me = admin.get("/v1/whoami").await;
    let user_id = me.expect_status(200)["id"].as_str().unwrap().to_string();
    let storage = gw.data_dir.join("plugins/storage").join(&user_id);
    let cases = all_cases();
    assert!(
        cases.len() >= 15,
        "the conformance cases are missing: {cases:?}"
    );
    for dir in cases {
        let case = load_case(&dir).await;
        let what = format!("{}/{}", case.world, case.name);
        let files: Vec<(&str, Vec<u8>)> = match &case.project {
            Some(p) if case.world == "inference-processor" => vec![(
                "labels.txt",
                std::fs::read(p.join("model/labels.txt")).unwrap(),
            )],
            _ => vec![],
        };
        let r = upload(&admin, &case.manifest, case.component.clone(), &files).await;
        if let Some(e) = case.expected.get("register_error") {
            assert_eq!(
                r.status,
                e["status"].as_u64().unwrap() as u16,
                "{what}: {}",
                r.text
            );
            let message = r.json["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(e["message_contains"].as_str().unwrap()),
                "{what}: {message:?}"
            );
            // Nothing half-created.
            let name = case.manifest["name"].as_str().unwrap();
            admin
                .get(&format!("/v1/plugins/{name}/1.0.0"))
                .await
                .expect_status(404);
            continue;
        }
        let plugin = r.expect_status(201).clone();
        assert_eq!(plugin["world"], json!(case.world), "{what}");
        assert_eq!(plugin["digest"].as_str().unwrap().len(), 64);
        copy_tree(&case.dir.join("storage"), &storage);
        let name = plugin["name"].as_str().unwrap().to_string();
        let input = read_json(&case.dir.join("input.json"));
        let r = admin
            .post(&format!("/v1/plugins/{name}/1.0.0/invoke"), input.clone())
            .await;
        if let Some(e) = case.expected.get("invoke_error") {
            assert_eq!(
                r.status,
                e["status"].as_u64().unwrap() as u16,
                "{what}: {}",
                r.text
            );
            let message = r.json["error"]["message"].as_str().unwrap_or_default();
            for part in e["message_contains"].as_array().unwrap() {
                assert!(
                    message.contains(part.as_str().unwrap()),
                    "{what}: {message:?} lacks {part}"
                );
            }
        } else {
            let report = r.expect_status(200).clone();
            check_report(&case, &report, &storage, "invoke");
        }
        // Whatever the plugin did, the gateway still answers.
        admin.get("/v1/whoami").await.expect_status(200);

        // The Python cases again through `atelier plugin test`, with the same host and limits.
        if let (Some(project), Some(component)) = (&case.project, &case.component_path) {
            let work = std::env::temp_dir().join(format!(
                "atelier-plugin-case-{}",
                uuid::Uuid::new_v4().simple()
            ));
            copy_tree(&case.dir.join("storage"), &work.join("storage"));
            std::fs::create_dir_all(work.join("storage")).unwrap();
            std::fs::write(work.join("manifest.json"), case.manifest.to_string()).unwrap();
            let (c, m, i, s) = (
                component.to_string_lossy().into_owned(),
                work.join("manifest.json").to_string_lossy().into_owned(),
                case.dir.join("input.json").to_string_lossy().into_owned(),
                work.join("storage").to_string_lossy().into_owned(),
            );
            let model = project.join("model").to_string_lossy().into_owned();
            let mut args = vec![
                "--json",
                "plugin",
                "test",
                &c,
                "--manifest",
                &m,
                "--input",
                &i,
                "--storage",
                &s,
            ];
            if case.world == "inference-processor" {
                args.extend(["--model-dir", model.as_str()]);
            }
            let out = run_cli(&args, &plugin_cli_env()).await;
            if let Some(e) = case.expected.get("invoke_error") {
                assert_eq!(out.code, 1, "{what} via plugin test: {}", out.stderr);
                let said = format!("{}{}", out.stdout, out.stderr);
                for part in e["message_contains"].as_array().unwrap() {
                    assert!(
                        said.contains(part.as_str().unwrap()),
                        "{what} via plugin test: {said}"
                    );
                }
            } else {
                let report: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "{what} via plugin test: {e}\nstdout: {}\nstderr: {}",
                        out.stdout, out.stderr
                    )
                });
                check_report(&case, &report, &work.join("storage"), "atelier plugin test");
                assert_eq!(
                    out.code,
                    i32::from(case.expected.get("error").is_some()),
                    "{what}: {}",
                    out.stderr
                );
            }
            let _ = std::fs::remove_dir_all(&work);
        }
    }
}

fn tiny() -> Vec<u8> {
    let wat = std::fs::read_to_string(
        repo_root().join("tests/plugins/training-algorithm/describe/component.wat"),
    )
    .unwrap();
    wat_component("training-algorithm", &wat)
}

fn looping() -> Vec<u8> {
    let wat = std::fs::read_to_string(
        repo_root().join("tests/plugins/training-algorithm/infinite-loop/component.wat"),
    )
    .unwrap();
    wat_component("training-algorithm", &wat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_go_on_while_a_hostile_plugin_runs() {
    let gw = gateway().await;
    let admin = gw.admin();
    upload(
        &admin,
        &json!({"name": "tiny", "version": "1"}),
        tiny(),
        &[],
    )
    .await
    .expect_status(201);
    upload(
        &admin,
        &json!({"name": "spin", "version": "1", "limits": {"timeout_ms": 4000}}),
        looping(),
        &[],
    )
    .await
    .expect_status(201);

    let spinning = {
        let admin = gw.admin();
        tokio::spawn(async move {
            admin
                .post("/v1/plugins/spin/1/invoke", json!({"describe": true}))
                .await
        })
    };
    // Give the looping call a moment to start, then call the well-behaved plugin while it spins.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut done = 0;
    for _ in 0..50 {
        let r = admin
            .post("/v1/plugins/tiny/1/invoke", json!({"describe": true}))
            .await;
        assert_eq!(r.expect_status(200)["output"]["name"], "tiny");
        done += 1;
    }
    assert!(
        !spinning.is_finished(),
        "the looping call ended before 50 other calls were answered"
    );
    let r = spinning.await.unwrap();
    let e = &r.expect_status(200)["error"];
    assert_eq!(e["type"], "limit");
    assert_eq!(e["kind"], "timeout");
    assert!(e["observed"].as_u64().unwrap() >= 4000, "{e}");
    assert_eq!(done, 50);
    // And the gateway is as before.
    let r = admin
        .post("/v1/plugins/tiny/1/invoke", json!({"describe": true}))
        .await;
    assert_eq!(r.expect_status(200)["output"]["name"], "tiny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_version_never_delete_each_others_files() {
    // Its own cache (in the data dir): deleting a plugin's last registration removes files.
    let gw = Gateway::start_with(&[]).await;
    let admin = gw.admin();
    let component = wat_component("inference-processor", &dummy_wat("inference-processor"));
    let register_all = |version: &'static str, differ: bool| {
        let (admin, component) = (admin.clone(), component.clone());
        async move {
            let mut calls = Vec::new();
            for take in 0..8 {
                let (admin, component) = (admin.clone(), component.clone());
                let take = if differ { take } else { 0 };
                calls.push(tokio::spawn(async move {
                    let manifest = json!({"name": "model", "version": version,
                        "description": format!("take {take}")});
                    let labels = format!("labels of take {take}\n").into_bytes();
                    let r = upload(&admin, &manifest, component, &[("labels.txt", labels)]).await;
                    (take, r)
                }));
            }
            let mut replies = Vec::new();
            for c in calls {
                replies.push(c.await.unwrap());
            }
            replies
        }
    };
    let labels = |version: &str| {
        std::fs::read_to_string(
            gw.data_dir
                .join("plugins/files/model")
                .join(version)
                .join("labels.txt"),
        )
    };

    // Eight different registrations of model 1 at once: one wins, the others are refused,
    // and the files on disk are the winner's.
    let replies = register_all("1", true).await;
    let winners: Vec<usize> = replies
        .iter()
        .filter(|(_, r)| r.status == 201)
        .map(|(take, _)| *take)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|(_, r)| &r.text).collect::<Vec<_>>()
    );
    for (_, r) in replies.iter().filter(|(_, r)| r.status != 201) {
        assert_eq!(r.status, 409, "{}", r.text);
    }
    let winner = winners[0];
    assert_eq!(labels("1").unwrap(), format!("labels of take {winner}\n"));
    let plugin = admin.get("/v1/plugins/model/1").await;
    let plugin = plugin.expect_status(200);
    assert_eq!(plugin["description"], format!("take {winner}"));
    assert_eq!(plugin["files"], json!(["labels.txt"]));

    // Eight identical registrations of model 2 at once: one creates it, the others find it
    // registered (200), and its files stay.
    let replies = register_all("2", false).await;
    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(labels("2").unwrap(), "labels of take 0\n");
    // And model 1 still has its files.
    assert_eq!(labels("1").unwrap(), format!("labels of take {winner}\n"));

    // The last registration of a component deleted while another name registers the same
    // component: the component's files stay for the new one.
    admin.delete("/v1/plugins/model/2").await.expect_status(204);
    let component_file = gw
        .data_dir
        .join("plugins/cache/components")
        .join(format!("{}.wasm", plugin["digest"].as_str().unwrap()));
    assert!(component_file.exists());
    let register_again = {
        let (admin, component) = (admin.clone(), component.clone());
        tokio::spawn(async move {
            upload(
                &admin,
                &json!({"name": "copy", "version": "1"}),
                component,
                &[],
            )
            .await
        })
    };
    admin.delete("/v1/plugins/model/1").await.expect_status(204);
    register_again.await.unwrap().expect_status(201);
    assert!(labels("1").is_err());
    assert!(
        component_file.exists(),
        "a deletion removed the files of a component registered meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_idempotent_and_a_restart_compiles_nothing() {
    // Its own cache (in the data dir), to see what a restart compiles; small upload limits.
    let mut gw = Gateway::start_with(&[
        ("ATELIER_PLUGIN_MAX_COMPONENT_MB", "1"),
        ("ATELIER_PLUGIN_MAX_FILES_MB", "1"),
    ])
    .await;
    let admin = gw.admin();
    let manifest = json!({"name": "tiny", "version": "1.0.0", "description": "a no-op"});
    let first = upload(&admin, &manifest, tiny(), &[]).await;
    let first = first.expect_status(201).clone();
    assert_eq!(first["compiled"], true);
    assert!(
        first["exports"]
            .to_string()
            .contains("atelier:plugin/algorithm@0.1.0"),
        "{first}"
    );
    assert!(first["compile_ms"].as_f64().unwrap() > 0.0);
    // The same again: 200, the same plugin, nothing compiled.
    let again = upload(&admin, &manifest, tiny(), &[]).await;
    let again = again.expect_status(200).clone();
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(again["compiled"], false);
    // Another component under the same name and version: refused, the first one kept.
    let other = wat_component(
        "training-algorithm",
        &std::fs::read_to_string(
            repo_root().join("tests/plugins/training-algorithm/guest-panic/component.wat"),
        )
        .unwrap(),
    );
    let msg = upload(&admin, &manifest, other, &[])
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("push a new version"), "{msg}");
    // Limits beyond the gateway's bounds are refused and name the setting.
    let msg = upload(
        &admin,
        &json!({"name": "big", "version": "1", "limits": {"memory_mb": 999999}}),
        tiny(),
        &[],
    )
    .await
    .expect_error(400, "invalid_argument");
    assert!(msg.contains("ATELIER_PLUGIN_MAX_MEMORY_MB"), "{msg}");
    let msg = upload(
        &admin,
        &json!({"name": "Bad Name", "version": "1"}),
        tiny(),
        &[],
    )
    .await
    .expect_error(400, "invalid_argument");
    assert!(msg.contains("plugin name"), "{msg}");
    let msg = upload(
        &admin,
        &json!({"name": "files", "version": "1"}),
        tiny(),
        &[("labels.txt", b"a".to_vec())],
    )
    .await
    .expect_error(400, "invalid_argument");
    assert!(msg.contains("inference processors"), "{msg}");

    // Over the component limit: 413, whether the host or the body limit sees it first.
    let mut big = b"\0asm\x0d\0\x01\0".to_vec();
    big.resize(1536 * 1024, 0);
    let msg = upload(&admin, &json!({"name": "big", "version": "1"}), big, &[])
        .await
        .expect_error(413, "payload_too_large");
    assert!(msg.contains("ATELIER_PLUGIN_MAX_COMPONENT_MB"), "{msg}");
    let mut huge = b"\0asm\x0d\0\x01\0".to_vec();
    huge.resize(4 * 1024 * 1024, 0);
    let msg = upload(&admin, &json!({"name": "big", "version": "1"}), huge, &[])
        .await
        .expect_error(413, "payload_too_large");
    assert!(msg.contains("larger than"), "{msg}");
    // A manifest that is not JSON, and no component.
    let msg = upload(&admin, &json!("not an object"), tiny(), &[])
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("manifest"), "{msg}");
    let msg = upload(
        &admin,
        &json!({"name": "empty", "version": "1"}),
        Vec::new(),
        &[],
    )
    .await
    .expect_error(400, "invalid_argument");
    assert!(msg.contains("no component"), "{msg}");

    let list = admin.get("/v1/plugins").await;
    let items = list.expect_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    admin
        .get("/v1/plugins?world=training-algorithm")
        .await
        .expect_status(200);
    admin
        .get("/v1/plugins?world=nope")
        .await
        .expect_error(400, "invalid_argument");

    gw.restart().await;
    let admin = gw.admin();
    let r = admin
        .post("/v1/plugins/tiny/1.0.0/invoke", json!({"describe": true}))
        .await;
    let report = r.expect_status(200).clone();
    assert_eq!(report["output"]["name"], "tiny");
    assert_ne!(report["load"], "compiled", "{report}");
    let metrics = admin.get("/metrics").await;
    assert!(
        metrics.text.contains("atelier_plugin_compilations_total 0"),
        "{}",
        metrics.text
    );

    // Deleting: not by another user; by the owner, with the files.
    let token = gw.create_user("mallory").await;
    let mallory = gw.api(&token);
    mallory
        .get("/v1/plugins/tiny/1.0.0")
        .await
        .expect_status(200);
    mallory
        .delete("/v1/plugins/tiny/1.0.0")
        .await
        .expect_error(403, "permission_denied");
    let digest = first["digest"].as_str().unwrap();
    let stored = gw
        .data_dir
        .join("plugins/cache/components")
        .join(format!("{digest}.wasm"));
    assert!(stored.exists());
    admin
        .delete("/v1/plugins/tiny/1.0.0")
        .await
        .expect_status(204);
    admin
        .get("/v1/plugins/tiny/1.0.0")
        .await
        .expect_error(404, "not_found");
    assert!(
        !stored.exists(),
        "the component stayed after its last registration went"
    );
    admin
        .post("/v1/plugins/tiny/1.0.0/invoke", json!({"describe": true}))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_starts_builds_tests_pushes_and_invokes_a_python_step() {
    let work =
        std::env::temp_dir().join(format!("atelier-author-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let dir = work.join("my-step");
    let d = dir.to_string_lossy().into_owned();
    let env = plugin_cli_env();
    run_cli(&["plugin", "new", "--world", "workflow-step", &d], &env)
        .await
        .assert_ok("plugin new");
    for f in [
        "app.py",
        "plugin.json",
        "input.json",
        "wit/workflow.wit",
        "README.md",
    ] {
        assert!(dir.join(f).exists(), "plugin new wrote no {f}");
    }
    assert_eq!(read_json(&dir.join("plugin.json"))["name"], "my-step");
    // A second `new` into the same directory refuses, and keeps what is there.
    let again = run_cli(&["plugin", "new", "--world", "workflow-step", &d], &env).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    let bad = run_cli(
        &["plugin", "new", "--world", "nope", &format!("{d}-2")],
        &env,
    )
    .await;
    assert!(bad.stderr.contains("unknown world"), "{}", bad.stderr);
    // Not built yet: `test` says how.
    let early = run_cli(&["plugin", "test", &d], &env).await;
    assert!(
        early.stderr.contains("atelier plugin build"),
        "{}",
        early.stderr
    );

    run_cli(&["plugin", "build", &d], &env)
        .await
        .assert_ok("plugin build");
    assert!(dir.join("build/my-step.wasm").exists());
    let t = run_cli(&["plugin", "test", &d], &env).await;
    t.assert_ok("plugin test");
    assert!(t.stdout.contains("\"rows\": 4"), "{}", t.stdout);
    assert!(t.stderr.contains("timings:"), "{}", t.stderr);
    assert!(t.stderr.contains("metrics: "), "{}", t.stderr);

    let gw = gateway().await;
    let url = gw.base().to_string();
    let genv = vec![
        ("ATELIER_URL", url.as_str()),
        ("ATELIER_TOKEN", gw.admin_token.as_str()),
    ];
    let p = run_cli(&["plugin", "push", &d], &genv).await;
    p.assert_ok("plugin push");
    assert!(
        p.stdout.contains("registered my-step 0.1.0 (workflow-step"),
        "{}",
        p.stdout
    );
    let l = run_cli(&["plugin", "list"], &genv).await;
    assert!(l.stdout.contains("my-step"), "{}", l.stdout);
    // The user's storage on the gateway gets the sample data (as an upload would).
    let me = gw.admin().get("/v1/whoami").await;
    let user_id = me.json["id"].as_str().unwrap().to_string();
    copy_tree(
        &dir.join("storage/data"),
        &gw.data_dir
            .join("plugins/storage")
            .join(user_id)
            .join("data"),
    );
    let input = dir.join("input.json").to_string_lossy().into_owned();
    let i = run_cli(
        &["plugin", "invoke", "my-step", "0.1.0", "--input", &input],
        &genv,
    )
    .await;
    i.assert_ok("plugin invoke");
    assert!(i.stdout.contains("\"rows\": 4"), "{}", i.stdout);
    run_cli(&["plugin", "delete", "my-step", "0.1.0"], &genv)
        .await
        .assert_ok("plugin delete");

    // The Rust template is written (it builds where the wasm32-wasip2 target is installed).
    let rust = work.join("rusty").to_string_lossy().into_owned();
    run_cli(
        &[
            "plugin",
            "new",
            "--lang",
            "rust",
            "--world",
            "workflow-step",
            &rust,
        ],
        &env,
    )
    .await
    .assert_ok("plugin new --lang rust");
    let cargo = std::fs::read_to_string(work.join("rusty/Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"rusty\""), "{cargo}");
    assert!(work.join("rusty/src/lib.rs").exists() && work.join("rusty/wit/types.wit").exists());
    let _ = std::fs::remove_dir_all(&work);
}
