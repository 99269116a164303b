//! Wasm plugins end to end (the conformance cases of tests/plugins/ are in conformance.rs):
//! hostile plugins next to well-behaved ones, registration
//! (idempotent, refusals, restart without compiling), and the authors' path
//! (`atelier plugin new`, `build`, `test`, `push`, `invoke`).

use atelier_tests::plugins::{
    copy_tree, dummy_wat, gateway, read_json, repo_root, upload, wat_component,
};
use atelier_tests::{Gateway, plugin_cli_env, run_cli};
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_starts_builds_and_tests_a_c_processor() {
    let work = std::env::temp_dir().join(format!(
        "atelier-c-author-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&work).unwrap();
    let dir = work.join("my-proc");
    let d = dir.to_string_lossy().into_owned();
    let env = plugin_cli_env();
    let new = |world: &'static str, d: String| {
        let env = env.clone();
        async move {
            run_cli(
                &["plugin", "new", "--lang", "c", "--world", world, &d],
                &env,
            )
            .await
        }
    };
    new("inference-processor", d.clone())
        .await
        .assert_ok("plugin new --lang c");
    for f in [
        "processor.c",
        "json.c",
        "json.h",
        "plugin.json",
        "input.json",
        "model/labels.txt",
    ] {
        assert!(dir.join(f).exists(), "plugin new wrote no {f}");
    }
    assert_eq!(read_json(&dir.join("plugin.json"))["name"], "my-proc");
    let other = new(
        "workflow-step",
        work.join("step").to_string_lossy().into_owned(),
    )
    .await;
    assert_eq!(other.code, 1);
    assert!(
        other.stderr.contains("no c template for workflow-step"),
        "{}",
        other.stderr
    );

    // One command: bindings, clang, the adapter; the bindings stay for the author to read.
    run_cli(&["plugin", "build", &d], &env)
        .await
        .assert_ok("plugin build");
    assert!(dir.join("build/my-proc.wasm").exists());
    assert!(dir.join("build/bindings/inference_processor.h").exists());
    let t = run_cli(&["plugin", "test", &d, "--repeat", "2"], &env).await;
    t.assert_ok("plugin test");
    assert!(t.stdout.contains("\"label\": \"setosa\""), "{}", t.stdout);
    assert!(t.stdout.contains("\"score\": 0.97"), "{}", t.stdout);
    assert!(t.stderr.contains("warm_reused"), "{}", t.stderr);

    // A compile error is clang's, shown as such, and writes no component.
    std::fs::write(dir.join("broken.c"), "int f(void) { return }\n").unwrap();
    let out = work.join("broken.wasm");
    let b = run_cli(
        &["plugin", "build", &d, "--output", &out.to_string_lossy()],
        &env,
    )
    .await;
    assert_eq!(b.code, 1);
    assert!(b.stderr.contains("clang failed"), "{}", b.stderr);
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&work);
}
