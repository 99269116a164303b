//! Workflow runs (`/v1/workflows/{wf}/runs`, `atelier workflow run …`): Wasm steps in the
//! gateway's plugin host, a chain and a fan-out/fan-in with their outputs passed on, a
//! condition on a metric choosing a branch, a delayed parameter waiting for proceed, a
//! failed step retried after its input was fixed, a gateway killed mid-run, one run at a
//! time, stop, refusals that create nothing, another user's runs, job steps (a training job
//! started, stopped with the run; its metric choosing a branch), compare, rerun and delete.
//!
//! The steps are `tests/fixtures/workflow-mark`: each run of a step leaves a mark object
//! (`<marks><step>-<n>`) in its owner's storage, so the tests count how often each ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atelier_tests::plugins::{built_python, repo_root, shared_cache, upload};
use atelier_tests::{Api, Gateway, eventually};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(180);

async fn gateway() -> Gateway {
    Gateway::start_with(&[
        ("ATELIER_PLUGIN_CACHE_DIR", &shared_cache()),
        ("ATELIER_TRAINING_MIN_HANG_SECS", "2"),
    ])
    .await
}

/// A user with the mark step registered; their storage directory.
async fn user(gw: &Gateway, name: &str) -> (Api, PathBuf) {
    let api = gw.api(&gw.create_user(name).await);
    let id = api.get("/v1/whoami").await.expect_status(200)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wasm = built_python(&repo_root().join("tests/fixtures/workflow-mark")).await;
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/fixtures/workflow-mark/plugin.json")).unwrap(),
    )
    .unwrap();
    let r = upload(&api, &manifest, std::fs::read(wasm).unwrap(), &[]).await;
    assert!(
        r.status == 201 || r.status == 200 || r.status == 409,
        "registering wf-mark: {} {}",
        r.status,
        r.text
    );
    (api, gw.data_dir.join("plugins/storage").join(id))
}

/// A mark step: `properties` of the wf-mark component with `params` added.
fn mark(name: &str, deps: &[&str], params: Value) -> Value {
    let mut p = json!({"marks": "marks/"});
    for (k, v) in params.as_object().cloned().unwrap_or_default() {
        p[k] = v;
    }
    json!({
        "name": name,
        "step_type": "wasm",
        "depend_steps": deps,
        "properties": {"plugin": "wf-mark", "parameters": p,
                       "grants": [{"path": "/marks/", "write": true}]}
    })
}

async fn create(api: &Api, def: Value) {
    api.post("/v1/workflows", def).await.expect_status(201);
}

async fn start(api: &Api, wf: &str, body: Value) -> i64 {
    let r = api.post(&format!("/v1/workflows/{wf}/runs"), body).await;
    r.expect_status(201)["number"].as_i64().unwrap()
}

async fn get_run(api: &Api, wf: &str, n: i64) -> Value {
    api.get(&format!("/v1/workflows/{wf}/runs/{n}"))
        .await
        .expect_status(200)
        .clone()
}

/// Until the run is `want`; fails showing the run when it ends otherwise.
async fn wait_run(api: &Api, wf: &str, n: i64, want: &str) -> Value {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let v = get_run(api, wf, n).await;
        if v["status"] == want {
            return v;
        }
        let ended = ["COMPLETED", "FAILED", "STOPPED"].contains(&v["status"].as_str().unwrap());
        if ended || std::time::Instant::now() >= deadline {
            panic!("run {n} of {wf} is not {want}: {v:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run:#}"))
}

/// How many marks each step left.
fn marks(storage: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(storage.join("marks")) else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((step, _)) = name.rsplit_once('-') else {
            continue;
        };
        *out.entry(step.to_string()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_and_a_fan_out_of_wasm_steps_complete_with_their_outputs_passed_on() {
    let gw = gateway().await;
    let (alice, storage) = user(&gw, "alice").await;
    // A 40-step chain: each step reads the previous one's output, writes its own.
    let mut steps = Vec::new();
    for i in 0..40 {
        let mut s = mark(&format!("s{i}"), &[], json!({}));
        s["outputs"] = json!([{"name": "out", "obs_config": {"obs_path": {"$storage": "work", "join": format!("s{i}/")}}}]);
        if i > 0 {
            let prev = format!("s{}", i - 1);
            s["depend_steps"] = json!([prev]);
            s["inputs"] =
                json!([{"name": "prev", "data": {"$output": {"step": prev, "output": "out"}}}]);
        }
        steps.push(s);
    }
    create(
        &alice,
        json!({"name": "chain", "storages": [{"name": "work", "create_dir": true, "with_execution_id": true}],
               "steps": steps}),
    )
    .await;
    let n = start(
        &alice,
        "chain",
        json!({"storages": {"work": "/data/chain/"}}),
    )
    .await;
    assert_eq!(n, 1);
    let run = wait_run(&alice, "chain", n, "COMPLETED").await;
    let id = run["id"].as_str().unwrap();
    assert!(run["duration_ms"].as_i64().is_some(), "{run}");
    for i in 0..40 {
        let s = step(&run, &format!("s{i}"));
        assert_eq!(s["status"], "COMPLETED", "{s}");
        let out = format!("/data/chain/{id}/s{i}/");
        assert_eq!(s["outputs"]["out"], json!(out), "{s}");
        // What the step saw: its predecessor's output path.
        let done: Value = serde_json::from_slice(
            &std::fs::read(storage.join(format!("data/chain/{id}/s{i}/done.txt"))).unwrap(),
        )
        .unwrap();
        if i > 0 {
            assert_eq!(
                done["inputs"]["prev"],
                json!(format!("data/chain/{id}/s{}/", i - 1)),
                "{done}"
            );
        }
        // Started only after its predecessor ended.
        if i > 0 {
            let prev = step(&run, &format!("s{}", i - 1));
            assert!(
                s["started_at"].as_str().unwrap() >= prev["ended_at"].as_str().unwrap(),
                "{prev} then {s}"
            );
        }
    }
    assert!(
        marks(&storage).values().all(|c| *c == 1),
        "{:?}",
        marks(&storage)
    );
    assert_eq!(marks(&storage).len(), 40);

    // A 20-wide fan-out and fan-in: all 20 after the source, the sink after all 20.
    let mut steps = vec![mark("src", &[], json!({}))];
    let mids: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for m in &mids {
        let mut s = mark(m, &["src"], json!({"emit": m}));
        // No path: a scratch folder of the run; the value the step returns wins.
        s["outputs"] = json!([{"name": "value"}]);
        steps.push(s);
    }
    let mid_refs: Vec<&str> = mids.iter().map(String::as_str).collect();
    let mut sink = mark("sink", &mid_refs, json!({}));
    sink["inputs"] = json!(
        mids.iter()
            .map(|m| json!({"name": m, "data": {"$output": {"step": m, "output": "value"}}}))
            .collect::<Vec<_>>()
    );
    steps.push(sink);
    create(&alice, json!({"name": "fan", "steps": steps})).await;
    let n = start(&alice, "fan", json!({})).await;
    let run = wait_run(&alice, "fan", n, "COMPLETED").await;
    let src_end = step(&run, "src")["ended_at"].as_str().unwrap().to_string();
    let mut last_mid = String::new();
    for m in &mids {
        let s = step(&run, m);
        assert_eq!(s["outputs"]["value"], json!(m), "{s}");
        assert_eq!(s["variables"]["emitted"], json!(m), "{s}");
        assert!(s["started_at"].as_str().unwrap() >= src_end.as_str());
        last_mid = last_mid.max(s["ended_at"].as_str().unwrap().to_string());
    }
    let sink = step(&run, "sink");
    assert!(sink["started_at"].as_str().unwrap() >= last_mid.as_str());
    // The sink got each value (inputs that are values, not paths).
    assert_eq!(sink["resolved"]["inputs"][7], json!(["m7", "m7"]), "{sink}");
    // The parallel branches overlapped: some mid step started before another ended.
    let overlapped = mids.iter().any(|a| {
        mids.iter().any(|b| {
            a != b
                && step(&run, a)["started_at"].as_str() < step(&run, b)["ended_at"].as_str()
                && step(&run, b)["started_at"].as_str() < step(&run, a)["ended_at"].as_str()
        })
    });
    assert!(overlapped, "the 20 branches ran one after another: {run:#}");
    let counts = marks(&storage);
    assert_eq!(counts.get("sink"), Some(&1));
    assert!(mids.iter().all(|m| counts.get(m) == Some(&1)), "{counts:?}");

    // The step's log, and the CLI's view of the runs.
    let log = alice
        .get(&format!("/v1/workflows/fan/runs/{n}/steps/sink/log"))
        .await;
    assert!(log.text.contains("sink done (attempt 0)"), "{}", log.text);
    let token = alice.token().unwrap().to_string();
    let out = gw.cli(&token, &["workflow", "runs", "fan"], &[]).await;
    out.assert_ok("atelier workflow runs");
    assert!(out.stdout.contains("COMPLETED"), "{}", out.stdout);
    let out = gw.cli(&token, &["workflow", "runs", "fan", "1"], &[]).await;
    assert!(
        out.stdout.contains("sink") && out.stdout.contains("wasm"),
        "{}",
        out.stdout
    );

    // The outputs with no path were in the run's scratch area; it goes with the record.
    let scratch = storage.join(format!(".atelier/runs/{}", run["id"].as_str().unwrap()));
    assert!(scratch.join("m3/value").is_dir(), "{}", scratch.display());
    let out = gw
        .cli(&token, &["workflow", "delete-run", "fan", "1"], &[])
        .await;
    out.assert_ok("atelier workflow delete-run");
    assert!(!scratch.exists(), "{} is still there", scratch.display());
    alice
        .get("/v1/workflows/fan/runs/1")
        .await
        .expect_status(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_condition_on_a_metric_chooses_a_branch_and_a_selector_takes_its_output() {
    let gw = gateway().await;
    let (alice, _storage) = user(&gw, "alice").await;
    let mut train = mark("train", &[], json!({"accuracy": {"$placeholder": "acc"}}));
    train["outputs"] = json!([{"name": "model", "obs_config": {"obs_path": {"$storage": "out", "join": "model/"}},
                               "metrics_config": {"metric_files": [{"$storage": "out", "join": "model/metrics.json", "create_dir": false}]}}]);
    let mut good = mark("good", &["check"], json!({"emit": "deployed"}));
    good["outputs"] =
        json!([{"name": "r", "obs_config": {"obs_path": {"$storage": "out", "join": "good/"}}}]);
    let mut bad = mark("bad", &["check"], json!({"emit": "retrain"}));
    bad["outputs"] =
        json!([{"name": "r", "obs_config": {"obs_path": {"$storage": "out", "join": "bad/"}}}]);
    let mut after = mark("after", &["good", "bad"], json!({}));
    after["inputs"] = json!([{"name": "chosen", "data": {"$select": [
        {"$output": {"step": "good", "output": "r"}}, {"$output": {"step": "bad", "output": "r"}}]}}]);
    let def = json!({
        "name": "gate",
        "storages": [{"name": "out", "create_dir": true, "with_execution_id": true}],
        "parameters": [{"name": "acc", "placeholder_type": "FLOAT"},
                       {"name": "bar", "placeholder_type": "FLOAT", "default": 0.8}],
        "steps": [train,
            {"name": "check", "step_type": "condition", "depend_steps": ["train"],
             "properties": {"conditions": [{"condition_type": "GTE",
                 "left": {"$metric": {"step": "train", "output": "model", "json_key": "accuracy"}},
                 "right": {"$placeholder": "bar"}}],
                 "if_then_steps": ["good"], "else_then_steps": ["bad"]}},
            good, bad, after]
    });
    create(&alice, def).await;
    let storages = json!({"out": "/runs/gate/"});
    let n = start(
        &alice,
        "gate",
        json!({"parameters": {"acc": 0.93}, "storages": storages}),
    )
    .await;
    let run = wait_run(&alice, "gate", n, "COMPLETED").await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(step(&run, "check")["outputs"]["result"], json!(true));
    assert_eq!(step(&run, "good")["status"], "COMPLETED");
    let bad = step(&run, "bad");
    assert_eq!(bad["status"], "SKIPPED");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("condition step check"),
        "{bad}"
    );
    // The selector took the branch that ran.
    assert_eq!(
        step(&run, "after")["resolved"]["inputs"][0][1],
        json!(format!("/runs/gate/{id}/good/"))
    );
    assert_eq!(step(&run, "train")["metrics"]["accuracy"], json!(0.93));

    // Below the bar: the other branch.
    let n = start(
        &alice,
        "gate",
        json!({"parameters": {"acc": 0.5}, "storages": storages}),
    )
    .await;
    let run = wait_run(&alice, "gate", n, "COMPLETED").await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(step(&run, "good")["status"], "SKIPPED");
    assert_eq!(step(&run, "bad")["status"], "COMPLETED");
    assert_eq!(
        step(&run, "after")["resolved"]["inputs"][0][1],
        json!(format!("/runs/gate/{id}/bad/"))
    );

    // Compared side by side.
    let cmp = alice.get("/v1/workflows/gate/runs/compare?runs=1,2").await;
    let cmp = cmp.expect_status(200);
    assert_eq!(
        cmp["runs"][0]["metrics"]["train/accuracy"],
        json!(0.93),
        "{cmp}"
    );
    assert_eq!(
        cmp["runs"][1]["metrics"]["train/accuracy"],
        json!(0.5),
        "{cmp}"
    );
    assert_eq!(cmp["runs"][1]["parameters"]["acc"], json!(0.5), "{cmp}");
    alice
        .get("/v1/workflows/gate/runs/compare?runs=1,x")
        .await
        .expect_status(400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_parameter_blocks_its_step_until_proceed() {
    let gw = gateway().await;
    let (alice, storage) = user(&gw, "alice").await;
    let def = json!({
        "name": "approve",
        "parameters": [{"name": "who", "placeholder_type": "STR", "delay": true},
                       {"name": "n", "placeholder_type": "INT", "delay": true}],
        "steps": [mark("first", &[], json!({})),
                  mark("gate", &["first"], json!({"emit": {"$placeholder": "who"}, "sleep_ms": {"$placeholder": "n"}})),
                  mark("last", &["gate"], json!({}))]
    });
    create(&alice, def).await;
    let n = start(&alice, "approve", json!({})).await;
    let run = wait_run(&alice, "approve", n, "AWAITING_INPUT").await;
    assert_eq!(step(&run, "first")["status"], "COMPLETED");
    let gate = step(&run, "gate");
    assert_eq!(gate["status"], "AWAITING_INPUT");
    assert!(gate["reason"].as_str().unwrap().contains("who"), "{gate}");
    assert_eq!(step(&run, "last")["status"], "PENDING");
    assert_eq!(run["awaiting"], json!(["n", "who"]));
    // Nothing ran meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(marks(&storage).get("gate"), None);

    let path = format!("/v1/workflows/approve/runs/{n}/steps/gate/proceed");
    // A wrong type, a missing value, an unknown parameter: refused whole, nothing given.
    let r = alice
        .post(&path, json!({"values": {"who": "bob", "n": "ten"}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("values.n"), "{}", r.text);
    let r = alice.post(&path, json!({"values": {"who": "bob"}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("values.n") && r.text.contains("waits"),
        "{}",
        r.text
    );
    let r = alice
        .post(&path, json!({"values": {"who": "bob", "n": 1, "x": 2}}))
        .await;
    assert!(r.status == 400 && r.text.contains("values.x"), "{}", r.text);
    assert_eq!(
        get_run(&alice, "approve", n).await["awaiting"],
        json!(["n", "who"])
    );
    // Another step is not waiting.
    let r = alice
        .post(
            &format!("/v1/workflows/approve/runs/{n}/steps/last/proceed"),
            json!({"values": {}}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);

    let token = alice.token().unwrap().to_string();
    let out = gw
        .cli(
            &token,
            &[
                "workflow",
                "proceed",
                "approve",
                &n.to_string(),
                "gate",
                "-p",
                "who=bob",
                "-p",
                "n=10",
            ],
            &[],
        )
        .await;
    out.assert_ok("atelier workflow proceed");
    let run = wait_run(&alice, "approve", n, "COMPLETED").await;
    assert_eq!(step(&run, "gate")["outputs"]["value"], json!("bob"));
    assert_eq!(run["parameters"]["who"], json!("bob"));
    assert_eq!(run["awaiting"], json!([]));
    // Proceeding again: the run has ended.
    let r = alice.post(&path, json!({"values": {"who": "eve"}})).await;
    assert_eq!(r.status, 409, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_is_retried_after_its_input_is_fixed_without_running_earlier_steps() {
    let gw = gateway().await;
    let (alice, storage) = user(&gw, "alice").await;
    let def = json!({
        "name": "fixme",
        "steps": [mark("a", &[], json!({})),
                  mark("b", &["a"], json!({"need": "marks/input.csv"})),
                  mark("c", &["b"], json!({})),
                  mark("side", &["a"], json!({}))]
    });
    create(&alice, def).await;
    let n = start(&alice, "fixme", json!({})).await;
    let run = wait_run(&alice, "fixme", n, "FAILED").await;
    assert!(
        run["status_reason"]
            .as_str()
            .unwrap()
            .contains("step b failed")
            && run["status_reason"]
                .as_str()
                .unwrap()
                .contains("missing marks/input.csv"),
        "{run}"
    );
    assert_eq!(step(&run, "b")["status"], "FAILED");
    assert_eq!(step(&run, "c")["status"], "PENDING");
    // The parallel branch ran on.
    assert_eq!(step(&run, "side")["status"], "COMPLETED");
    // Only a failed step is retried.
    let r = alice
        .post_empty(&format!("/v1/workflows/fixme/runs/{n}/steps/a/retry"))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);

    std::fs::write(storage.join("marks/input.csv"), "x,y\n").unwrap();
    let r = alice
        .post_empty(&format!("/v1/workflows/fixme/runs/{n}/steps/b/retry"))
        .await;
    assert_eq!(r.expect_status(200)["status"], "RUNNING");
    let run = wait_run(&alice, "fixme", n, "COMPLETED").await;
    assert_eq!(step(&run, "b")["attempt"], 1);
    assert_eq!(step(&run, "a")["attempt"], 0);
    let counts = marks(&storage);
    assert_eq!(
        (
            counts.get("a"),
            counts.get("b"),
            counts.get("c"),
            counts.get("side")
        ),
        (Some(&1), Some(&2), Some(&1), Some(&1)),
        "{counts:?}"
    );
    // The log says which attempt it was.
    let log = alice
        .get(&format!("/v1/workflows/fixme/runs/{n}/steps/b/log"))
        .await;
    assert!(log.text.contains("attempt 1"), "{}", log.text);

    // Rerun with the same parameters: a new record; delete the old one.
    let r = alice
        .post_empty(&format!("/v1/workflows/fixme/runs/{n}/rerun"))
        .await;
    let again = r.expect_status(201)["number"].as_i64().unwrap();
    assert_eq!(get_run(&alice, "fixme", again).await["trigger"], "rerun");
    wait_run(&alice, "fixme", again, "COMPLETED").await;
    alice
        .delete(&format!("/v1/workflows/fixme/runs/{n}"))
        .await
        .expect_status(204);
    alice
        .get(&format!("/v1/workflows/fixme/runs/{n}"))
        .await
        .expect_status(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_run_resumes_it_and_never_runs_a_finished_step_again() {
    let mut gw = gateway().await;
    let (alice, storage) = user(&gw, "alice").await;
    let steps: Vec<Value> = (0..8)
        .map(|i| {
            let deps: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("k{}", i - 1)]
            };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            mark(&format!("k{i}"), &deps, json!({"sleep_ms": 400}))
        })
        .collect();
    create(&alice, json!({"name": "long", "steps": steps})).await;
    let n = start(&alice, "long", json!({})).await;
    // Kill it once two steps have completed.
    let done_before: Vec<String> = eventually("two steps done", LONG, || async {
        let run = get_run(&alice, "long", n).await;
        let done: Vec<String> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "COMPLETED")
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    gw.kill9();
    gw.start_again().await;
    let run = wait_run(&alice, "long", n, "COMPLETED").await;
    let counts = marks(&storage);
    for i in 0..8 {
        let name = format!("k{i}");
        let c = counts.get(&name).copied().unwrap_or(0);
        if done_before.contains(&name) {
            // Finished before the kill: never run again.
            assert_eq!(c, 1, "{name}: {counts:?}");
            assert_eq!(step(&run, &name)["attempt"], 0);
        } else {
            assert!(c >= 1, "{name} never ran: {counts:?}");
        }
    }
    // At most the step cut off by the kill ran twice.
    assert!(counts.values().sum::<usize>() <= 9, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_run_at_a_time_stop_and_refusals_that_create_nothing() {
    let gw = gateway().await;
    let (alice, storage) = user(&gw, "alice").await;
    let (bob, _) = user(&gw, "bob").await;
    let def = json!({
        "name": "slow",
        "storages": [{"name": "out", "create_dir": true}],
        "parameters": [{"name": "ms", "placeholder_type": "INT", "default": 1500}],
        "steps": [mark("one", &[], json!({"sleep_ms": {"$placeholder": "ms"}})),
                  mark("two", &["one"], json!({})),
                  mark("three", &["two"], json!({}))],
        "policy": {"scenes": [{"scene_name": "quick", "scene_steps": ["two"]}]}
    });
    create(&alice, def).await;
    let storages = json!({"out": "/o/"});

    // Refusals: every problem named, no run made.
    let r = alice
        .post(
            "/v1/workflows/slow/runs",
            json!({"parameters": {"ms": "x", "nope": 1}, "storages": {"out": "/a/../b/"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    for needle in ["parameters.ms", "parameters.nope", "storages.out"] {
        assert!(r.text.contains(needle), "{needle} not in {}", r.text);
    }
    let r = alice
        .post("/v1/workflows/slow/runs", json!({"storages": {}}))
        .await;
    assert!(
        r.status == 400 && r.text.contains("storages.out"),
        "{}",
        r.text
    );
    let r = alice
        .post(
            "/v1/workflows/slow/runs",
            json!({"storages": storages, "scenes": ["nope"]}),
        )
        .await;
    assert!(
        r.status == 400 && r.text.contains("unknown scene"),
        "{}",
        r.text
    );
    let r = alice
        .post(
            "/v1/workflows/slow/runs",
            json!({"storages": storages, "surprise": 1}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = alice
        .post(
            "/v1/workflows/slow/runs",
            json!({"storages": storages, "version": 9}),
        )
        .await;
    assert!(
        r.status == 400 && r.text.contains("no version 9"),
        "{}",
        r.text
    );
    let none = alice.get("/v1/workflows/slow/runs").await;
    assert_eq!(none.expect_status(200)["items"], json!([]));

    // One at a time.
    let n = start(&alice, "slow", json!({"storages": storages})).await;
    let r = alice
        .post("/v1/workflows/slow/runs", json!({"storages": storages}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("run 1 under way"), "{}", r.text);
    let token = alice.token().unwrap().to_string();
    // What a run takes (AC-11).
    let cfg = alice.get("/v1/workflows/slow/config").await;
    let cfg = cfg.expect_status(200);
    assert_eq!(cfg["parameters"][0]["name"], "ms", "{cfg}");
    assert_eq!(cfg["parameters"][0]["placeholder_type"], "INT", "{cfg}");
    assert_eq!(cfg["parameters"][0]["default"], 1500, "{cfg}");
    assert_eq!(cfg["storages"][0]["create_dir"], true, "{cfg}");
    assert_eq!(cfg["scenes"][0]["scene_name"], "quick", "{cfg}");
    // Another user sees nothing of it, and cannot act on it.
    bob.get("/v1/workflows/slow/runs").await.expect_status(404);
    let r = bob
        .post_empty(&format!("/v1/workflows/slow/runs/{n}/stop"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    // The record cannot go while it runs; the workflow neither.
    let r = alice.delete(&format!("/v1/workflows/slow/runs/{n}")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    alice.delete("/v1/workflows/slow").await.expect_status(409);

    // Stop: the running step ends, the rest stays PENDING, the run STOPPED.
    eventually("step one running", LONG, || async {
        let run = get_run(&alice, "slow", n).await;
        (step(&run, "one")["status"] == "RUNNING").then_some(())
    })
    .await;
    let out = gw
        .cli(&token, &["workflow", "stop", "slow", &n.to_string()], &[])
        .await;
    out.assert_ok("atelier workflow stop");
    let run = wait_run(&alice, "slow", n, "STOPPED").await;
    assert_eq!(step(&run, "three")["status"], "PENDING");
    assert_eq!(marks(&storage).get("three"), None);
    // Stopped again: refused.
    let r = alice
        .post_empty(&format!("/v1/workflows/slow/runs/{n}/stop"))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    // Retried: goes on to the end; what completed is not run again.
    let r = alice
        .post_empty(&format!("/v1/workflows/slow/runs/{n}/retry"))
        .await;
    r.expect_status(200);
    wait_run(&alice, "slow", n, "COMPLETED").await;
    assert_eq!(
        marks(&storage).get("one"),
        Some(&1),
        "{:?}",
        marks(&storage)
    );
    assert_eq!(marks(&storage).get("three"), Some(&1));

    // Partial execution: the scene's step only.
    let n2 = start(
        &alice,
        "slow",
        json!({"storages": storages, "scenes": ["quick"], "tags": {"kind": "partial"}}),
    )
    .await;
    let run = wait_run(&alice, "slow", n2, "COMPLETED").await;
    assert_eq!(step(&run, "one")["status"], "SKIPPED");
    assert_eq!(step(&run, "two")["status"], "COMPLETED");
    assert_eq!(step(&run, "three")["status"], "SKIPPED");
    assert_eq!(run["selected"], json!(["two"]));
    // Runs by tag and by status (AC-27).
    let tagged = alice.get("/v1/workflows/slow/runs?tag=kind=partial").await;
    let tagged = tagged.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["number"], n2);
    let stopped = alice.get("/v1/workflows/slow/runs?status=STOPPED").await;
    assert_eq!(stopped.expect_status(200)["items"], json!([]));
    let done = alice.get("/v1/workflows/slow/runs?status=COMPLETED").await;
    assert_eq!(
        done.expect_status(200)["items"].as_array().unwrap().len(),
        2
    );
    let bad = alice.get("/v1/workflows/slow/runs?status=DONE").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    // The CLI starts one and waits for it.
    let out = gw
        .cli(
            &token,
            &[
                "workflow",
                "run",
                "slow",
                "-p",
                "ms=1",
                "--storage",
                "out=/o/",
                "--wait",
            ],
            &[],
        )
        .await;
    out.assert_ok("atelier workflow run --wait");
    assert!(out.stdout.contains("COMPLETED"), "{}", out.stdout);

    // A copy runs beside the original (AC-20).
    let busy = start(
        &alice,
        "slow",
        json!({"storages": storages, "parameters": {"ms": 5000}}),
    )
    .await;
    let out = gw.cli(&token, &["workflow", "copy", "slow"], &[]).await;
    out.assert_ok("atelier workflow copy");
    let c = start(
        &alice,
        "slow_copy",
        json!({"storages": storages, "parameters": {"ms": 1}}),
    )
    .await;
    wait_run(&alice, "slow_copy", c, "COMPLETED").await;
    assert_eq!(get_run(&alice, "slow", busy).await["status"], "RUNNING");
    wait_run(&alice, "slow", busy, "COMPLETED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_step_runs_a_training_job_its_metric_chooses_a_branch_and_stop_stops_it() {
    let mut gw = gateway().await;
    let (alice, _storage) = user(&gw, "alice").await;
    let def = json!({
        "name": "train",
        // The command comes from a parameter.
        "parameters": [{"name": "cmd", "placeholder_type": "STR"}],
        "steps": [
            {"name": "fit", "step_type": "job", "outputs": [{"name": "train_url"}],
             "properties": {"custom": {"boot_command": {"$placeholder": "cmd"}}}},
            {"name": "check", "step_type": "condition", "depend_steps": ["fit"],
             "properties": {"conditions": [{"condition_type": "GT",
                 "left": {"$metric": {"step": "fit", "output": "train_url", "json_key": "accuracy"}},
                 "right": 0.9}],
                 "if_then_steps": ["ship"], "else_then_steps": ["redo"]}},
            mark("ship", &["check"], json!({})),
            mark("redo", &["check"], json!({}))
        ]
    });
    create(&alice, def).await;
    let n = start(
        &alice,
        "train",
        json!({"parameters": {"cmd": "echo '[metric] accuracy=0.95 step=1'"}}),
    )
    .await;
    let run = wait_run(&alice, "train", n, "COMPLETED").await;
    let fit = step(&run, "fit");
    assert_eq!(fit["child"]["kind"], "training_job", "{fit}");
    assert_eq!(fit["metrics"]["accuracy"], json!(0.95), "{fit}");
    assert_eq!(step(&run, "ship")["status"], "COMPLETED");
    assert_eq!(step(&run, "redo")["status"], "SKIPPED");
    // The job is the owner's, named after the run and tagged with it.
    let job_id = fit["child"]["id"].as_str().unwrap();
    let job = alice.get(&format!("/v1/training-jobs/{job_id}")).await;
    let job = job.expect_status(200);
    assert_eq!(job["name"], "train-1-fit");
    assert_eq!(job["tags"]["workflow_run"], run["id"]);

    // A gateway killed while the job runs: the step follows the same job afterwards.
    let n = start(
        &alice,
        "train",
        json!({"parameters": {"cmd": "sleep 4; echo '[metric] accuracy=0.5 step=1'"}}),
    )
    .await;
    let first = eventually("the job recorded", LONG, || async {
        let run = get_run(&alice, "train", n).await;
        step(&run, "fit")["child"]["id"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    gw.kill9();
    gw.start_again().await;
    let run = wait_run(&alice, "train", n, "COMPLETED").await;
    assert_eq!(step(&run, "fit")["child"]["id"], json!(first), "{run:#}");
    assert_eq!(step(&run, "redo")["status"], "COMPLETED");
    let jobs = alice.get("/v1/training-jobs").await;
    let tagged = jobs.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["tags"]["workflow_run"] == run["id"])
        .count();
    assert_eq!(tagged, 1, "one job for the run");

    // Stop cascades to the running job.
    let n = start(
        &alice,
        "train",
        json!({"parameters": {"cmd": "echo started; exec sleep 600"}}),
    )
    .await;
    let job_id = eventually("the job running", LONG, || async {
        let run = get_run(&alice, "train", n).await;
        let id = step(&run, "fit")["child"]["id"]
            .as_str()
            .map(str::to_string)?;
        let job = alice.get(&format!("/v1/training-jobs/{id}")).await;
        (job.json["status"] == "RUNNING").then_some(id)
    })
    .await;
    alice
        .post_empty(&format!("/v1/workflows/train/runs/{n}/stop"))
        .await
        .expect_status(200);
    let run = wait_run(&alice, "train", n, "STOPPED").await;
    assert_eq!(step(&run, "fit")["status"], "STOPPED", "{run:#}");
    let job = alice.get(&format!("/v1/training-jobs/{job_id}")).await;
    assert_eq!(job.expect_status(200)["status"], "TERMINATED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_a_step_returns_cannot_lead_a_later_step_out_of_its_owners_storage() {
    let gw = gateway().await;
    let (alice, storage) = user(&gw, "alice").await;
    let (_bob, bob_storage) = user(&gw, "bob").await;
    std::fs::create_dir_all(bob_storage.join("secret")).unwrap();
    std::fs::write(bob_storage.join("secret/key.txt"), "bob's").unwrap();
    // A step's returned value (hostile, as anything a component writes) names bob's
    // storage through `..`; the next step takes it as an input and writes an output there.
    let bob_id = bob_storage
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let sneaky = format!("/../{bob_id}/secret/");
    let mut make = mark("make", &[], json!({"emit": sneaky}));
    make["outputs"] = json!([{"name": "value"}]);
    let mut take = mark("take", &["make"], json!({}));
    take["inputs"] =
        json!([{"name": "in", "data": {"$output": {"step": "make", "output": "value"}}}]);
    let mut out = mark("out", &[], json!({}));
    out["outputs"] = json!([{"name": "o", "obs_config": {"obs_path": {"$placeholder": "where"}}}]);
    create(
        &alice,
        json!({"name": "sneak", "parameters": [{"name": "where", "placeholder_type": "STR"}],
               "steps": [make, take, out]}),
    )
    .await;
    let n = start(&alice, "sneak", json!({"parameters": {"where": sneaky}})).await;
    let run = wait_run(&alice, "sneak", n, "FAILED").await;
    let take = step(&run, "take");
    assert_eq!(take["status"], "FAILED", "{take}");
    assert!(
        take["reason"].as_str().unwrap().contains("input in"),
        "{take}"
    );
    let out = step(&run, "out");
    assert_eq!(out["status"], "FAILED", "{out}");
    assert!(
        out["reason"]
            .as_str()
            .unwrap()
            .contains("not a storage path"),
        "{out}"
    );
    // Bob's storage is as it was; nothing of alice's run reached it.
    let names: Vec<_> = std::fs::read_dir(bob_storage.join("secret"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["key.txt"]);
    assert_eq!(marks(&storage).get("take"), None);
}
