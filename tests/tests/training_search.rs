//! Hyperparameter searches (`/v1/training-searches`, `atelier search`) on the process
//! backend: trials of a custom command template that prints `[metric] score=…` computed from
//! its hyperparameters. Random with trials in parallel finds the best of a known function;
//! grid walks its space once; TPE runs to the end; the median rule stops a poor trial;
//! refusals create nothing; another user sees nothing; stop and delete take the trials with
//! them; a gateway killed mid-search goes on without running a trial number twice.

use std::collections::BTreeSet;
use std::time::Duration;

use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, eventually, wait_for_status};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// score = -(x-0.3)² - (y-0.7)², printed after a short sleep (so trials overlap).
const SCORE: &str = "python -c \"import sys,time; a=dict(s[2:].split('=',1) for s in sys.argv[1:]); x=float(a['x']); y=float(a['y']); print('started', flush=True); time.sleep(1.5); print('[metric] score=%r' % (-(x-0.3)**2-(y-0.7)**2), flush=True)\"";

fn score(p: &Value) -> f64 {
    let x = p["x"].as_f64().unwrap();
    let y = p["y"].as_f64().unwrap();
    -(x - 0.3).powi(2) - (y - 0.7).powi(2)
}

fn xy_search(name: &str, algorithm: &str, max_trials: u32, parallel: u32) -> Value {
    json!({
        "name": name,
        "template": {"custom": {"boot_command": SCORE}},
        "parameters": [
            {"name": "x", "type": "float", "range": [0, 1]},
            {"name": "y", "type": "float", "range": [0, 1]}
        ],
        "objective": {"metric": "score", "direction": "max"},
        "algorithm": algorithm,
        "max_trials": max_trials,
        "parallel": parallel
    })
}

async fn wait(api: &Api, name: &str, want: &str) -> Value {
    wait_for_status(api, &format!("/v1/training-searches/{name}"), want, LONG).await
}

/// The user's training jobs: (name, status).
async fn jobs(api: &Api) -> Vec<(String, String)> {
    api.get("/v1/training-jobs").await.expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn under_way(status: &str) -> bool {
    matches!(status, "CREATING" | "PENDING" | "RUNNING")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_random_search_with_two_in_parallel_finds_the_best_of_a_known_function() {
    let gw = Gateway::start().await;
    let alice = gw.api(&gw.create_user("alice").await);
    let mut body = xy_search("rs", "random", 8, 2);
    body["algorithm_settings"] = json!({"seed": 42});
    let s = alice
        .post("/v1/training-searches", body)
        .await
        .expect_status(201)
        .clone();
    assert_eq!(s["algorithm_settings"]["seed"], 42);

    // While it runs: never more than 2 trial jobs under way at once.
    let mut most = 0;
    loop {
        let now = jobs(&alice).await;
        let n = now.iter().filter(|(_, st)| under_way(st)).count();
        assert!(n <= 2, "{n} trial jobs at once: {now:?}");
        most = most.max(n);
        let v = alice
            .get("/v1/training-searches/rs")
            .await
            .expect_status(200)
            .clone();
        if v["status"] != "RUNNING" && v["status"] != "PENDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(most, 2, "two trials ran at once");
    let done = wait(&alice, "rs", "COMPLETED").await;
    let trials = done["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 8, "{done:#}");
    // Each trial's objective is the function of its parameters; the best is the argmax.
    let mut best = (f64::MIN, 0);
    for t in trials {
        assert_eq!(t["status"], "COMPLETED", "{t}");
        let v = t["objective"].as_f64().unwrap();
        assert!((v - score(&t["parameters"])).abs() < 1e-9, "{t}");
        if v > best.0 {
            best = (v, t["number"].as_i64().unwrap());
        }
    }
    assert_eq!(done["best"]["number"], best.1, "{done:#}");
    assert_eq!(done["best"]["objective"].as_f64().unwrap(), best.0);
    assert!((score(&done["best"]["parameters"]) - best.0).abs() < 1e-9);
    let names: BTreeSet<String> = jobs(&alice).await.into_iter().map(|j| j.0).collect();
    let want: BTreeSet<String> = (1..=8).map(|n| format!("rs-t{n}")).collect();
    assert_eq!(names, want);
    // The trial job got the sampled values as its hyperparameters.
    let t1 = alice
        .get("/v1/training-jobs/rs-t1")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(t1["hyperparameters"], trials[0]["parameters"]);
    let trials_api = alice
        .get("/v1/training-searches/rs/trials")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(trials_api["items"].as_array().unwrap().len(), 8);
    let ev: Vec<String> = alice
        .get("/v1/training-searches/rs/events")
        .await
        .expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ev[0], "Search created.", "{ev:#?}");
    assert!(
        ev.last().unwrap().starts_with(&format!(
            "Search completed. Best trial {}: score = ",
            best.1
        )),
        "{ev:#?}"
    );

    // The CLI shows it.
    let token = alice.token().unwrap().to_string();
    let out = gw.cli(&token, &["search", "trials", "rs"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("rs-t8") && out.stdout.contains("COMPLETED"),
        "{}",
        out.stdout
    );
    let out = gw.cli(&token, &["search", "get", "rs"], &[]).await;
    assert!(
        out.stdout.contains(&format!("rs-t{}", best.1)),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grid_runs_each_point_once_and_tpe_runs_to_max_trials() {
    let s3 = S3Server::start();
    s3.bucket("out");
    let gw = Gateway::start().await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    let mut grid = xy_search("grid", "grid", 10, 4);
    // Each trial writes its model; its outputs land in a folder of its own.
    grid["template"] = json!({
        "custom": {"boot_command": format!("echo \"$MA_CURRENT_INSTANCE_NAME\" > \"$train_url/model.txt\"; {SCORE}")},
        "connection": "local",
        "outputs": [{"name": "train_url", "path": "obs://out/grid/", "obtained_from": "environment_variables"}]
    });
    grid["parameters"] = json!([
        {"name": "x", "type": "float", "range": [0.1, 0.5], "step": 0.4},
        {"name": "y", "type": "categorical", "choices": [0.2, 0.7]}
    ]);
    alice
        .post("/v1/training-searches", grid)
        .await
        .expect_status(201);
    let mut tpe = xy_search("tpe", "tpe", 6, 2);
    tpe["algorithm_settings"] =
        json!({"seed": 1, "n_startup_trials": 3, "gamma": 0.25, "candidates": 16});
    let created = alice
        .post("/v1/training-searches", tpe)
        .await
        .expect_status(201)
        .clone();
    // Accepted, with the seed's advice: 10 to 20 trials for TPE.
    assert_eq!(
        created["warnings"],
        json!(["max_trials: 6 for a TPE search; 10 to 20 are recommended"]),
        "{created}"
    );

    let g = wait(&alice, "grid", "COMPLETED").await;
    let points: BTreeSet<String> = g["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["parameters"].to_string())
        .collect();
    let want: BTreeSet<String> = [(0.1, 0.2), (0.1, 0.7), (0.5, 0.2), (0.5, 0.7)]
        .iter()
        .map(|(x, y)| json!({"x": x, "y": y}).to_string())
        .collect();
    assert_eq!(points, want, "{g:#}");
    assert_eq!(g["trials"].as_array().unwrap().len(), 4);
    assert_eq!(g["best"]["parameters"], json!({"x": 0.1, "y": 0.7}));
    assert_eq!(g["best"]["name"], "grid-t2");
    assert_eq!(
        g["best"]["outputs"][0]["path"], "obs://out/grid/grid-t2/",
        "{g:#}"
    );
    let model = s3.bucket("out").join("grid/grid-t2/model.txt");
    let job = alice
        .get("/v1/training-jobs/grid-t2")
        .await
        .expect_status(200)["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        std::fs::read_to_string(&model).unwrap().contains(&job),
        "{}",
        model.display()
    );

    let t = wait(&alice, "tpe", "COMPLETED").await;
    let trials = t["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6, "{t:#}");
    assert!(trials.iter().all(|t| t["status"] == "COMPLETED"), "{t:#}");
    assert!(t["best"]["objective"].is_number());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_median_rule_stops_a_trial_that_is_clearly_worse() {
    let gw = Gateway::start().await;
    let alice = gw.api(&gw.create_user("alice").await);
    // score ≈ q at every step; a poor q (< 0.5) would go on for a minute.
    let script = "python -c \"import sys,time; q=float(sys.argv[1].split('=')[1]); n=60 if q<0.5 else 4; [(print('[metric] score=%r step=%d' % (q+0.001*k, k), flush=True), time.sleep(0.7)) for k in range(1, n+1)]\"";
    let s = json!({
        "name": "med",
        "template": {"custom": {"boot_command": script}},
        "parameters": [{"name": "q", "type": "categorical", "choices": [0.8, 0.9, 1.0, 0.1]}],
        "objective": {"metric": "score", "direction": "max"},
        "algorithm": "grid",
        "max_trials": 4,
        "parallel": 1,
        "early_stopping": {"rule": "median", "min_steps": 2, "start_after_trials": 2}
    });
    alice
        .post("/v1/training-searches", s)
        .await
        .expect_status(201);
    let done = wait(&alice, "med", "COMPLETED").await;
    let trials = done["trials"].as_array().unwrap();
    let status: Vec<&str> = trials
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["COMPLETED", "COMPLETED", "COMPLETED", "EARLY_STOPPED"],
        "{done:#}"
    );
    assert_eq!(trials[3]["early_stopped"], true);
    assert_eq!(done["best"]["parameters"], json!({"q": 1.0}));
    // Its job was stopped well before its 60 steps.
    let job = wait_for_status(&alice, "/v1/training-jobs/med-t4", "TERMINATED", LONG).await;
    assert_eq!(job["status"], "TERMINATED");
    let m = alice
        .get("/v1/training-jobs/med-t4/metrics?name=score")
        .await
        .expect_status(200)
        .clone();
    let n = m["items"].as_array().unwrap().len();
    assert!((2..30).contains(&n), "{n} reports");
    let ev = alice
        .get("/v1/training-searches/med/events")
        .await
        .expect_status(200)
        .clone();
    assert!(
        ev["items"].as_array().unwrap().iter().any(|e| e["text"]
            .as_str()
            .unwrap()
            .starts_with("Trial 4 stopped early")),
        "{ev:#}"
    );

    // A goal: the search ends with the first trial that reaches it (made with the CLI).
    let file = gw.data_dir.join("goal.json");
    let goal = json!({
        "name": "ignored",
        "template": {"custom": {"boot_command": script}},
        "parameters": [{"name": "q", "type": "categorical", "choices": [0.8, 0.9, 1.0, 0.1]}],
        "objective": {"metric": "score", "direction": "max", "goal": 0.85},
        "algorithm": "grid",
        "max_trials": 4
    });
    std::fs::write(&file, goal.to_string()).unwrap();
    let token = alice.token().unwrap().to_string();
    let out = gw
        .cli(
            &token,
            &[
                "search",
                "create",
                "-f",
                file.to_str().unwrap(),
                "--name",
                "goal",
            ],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("created training search goal"),
        "{}",
        out.stderr
    );
    let done = wait(&alice, "goal", "COMPLETED").await;
    let trials = done["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "{done:#}");
    assert_eq!(done["best"]["parameters"], json!({"q": 0.9}));
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_create_nothing_and_others_cannot_see_or_stop_a_search() {
    let s3 = S3Server::start();
    let p = s3.bucket("code").join("algo/train.py");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, "print('[metric] score=1')\n").unwrap();
    // One search per user.
    let gw = Gateway::start_with(&[("ATELIER_TRAINING_SEARCH_QUOTA", "1")]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    let bob = gw.api(&gw.create_user("bob").await);
    s3.connect(&alice, "local").await;
    alice
        .post(
            "/v1/algorithms",
            json!({
                "name": "algo",
                "code_dir": {"connection": "local", "path": "obs://code/algo"},
                "boot_file": "train.py",
                "hyperparameters": [{"name": "lr", "type": "FLOAT", "default": 0.1, "range": [0, 1]}]
            }),
        )
        .await
        .expect_status(201);
    let base = json!({
        "name": "s",
        "template": {"algorithm": "algo", "connection": "local"},
        "parameters": [{"name": "lr", "type": "float", "range": [0.01, 0.5], "log": true}],
        "objective": {"metric": "score", "direction": "max"},
        "algorithm": "random",
        "max_trials": 3
    });
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (body, field) in [
        (
            with(json!({"parameters": [{"name": "nope", "type": "float", "range": [0, 1]}]})),
            "parameters[0] (nope): the algorithm has no such hyperparameter",
        ),
        (
            with(json!({"parameters": [{"name": "lr", "type": "float", "range": [0.5, 2]}]})),
            "parameters[0] (lr)",
        ),
        (
            with(
                json!({"parameters": [{"name": "lr", "type": "categorical", "choices": [0.1], "range": [0, 1]}]}),
            ),
            "parameters[0].range",
        ),
        (with(json!({"parallel": 0})), "parallel"),
        (with(json!({"max_trials": 101})), "max_trials"),
        (
            with(json!({"objective": {"metric": "score", "direction": "up"}})),
            "objective.direction",
        ),
        (with(json!({"algorithm": "bayes"})), "algorithm"),
        (
            with(json!({"template": {"name": "x", "algorithm": "algo", "connection": "local"}})),
            "template.name",
        ),
        (
            with(json!({"template": {"algorithm": "other"}})),
            "template.algorithm",
        ),
        (
            with(json!({"early_stopping": {"rule": "hyperband"}})),
            "early_stopping.rule",
        ),
        (with(json!({"algorithm": "grid"})), "parameters[0].step"),
    ] {
        let r = alice.post("/v1/training-searches", body.clone()).await;
        assert_eq!(r.status, 400, "{body} → {}", r.text);
        assert!(r.text.contains(field), "{field:?} not named: {}", r.text);
    }
    assert_eq!(
        alice.get("/v1/training-searches").await.expect_status(200)["items"],
        json!([])
    );
    assert!(jobs(&alice).await.is_empty());

    // A search of long trials: bob sees nothing and stops nothing.
    let long = json!({
        "name": "long",
        "template": {"custom": {"boot_command": "python -c \"import time; time.sleep(600)\""}},
        "parameters": [{"name": "x", "type": "integer", "range": [1, 9]}],
        "objective": {"metric": "score", "direction": "min"},
        "algorithm": "random",
        "max_trials": 5,
        "parallel": 2
    });
    alice
        .post("/v1/training-searches", long.clone())
        .await
        .expect_status(201);
    // Past the quota: refused, nothing more created.
    let mut second = long.clone();
    second["name"] = "second".into();
    let r = alice.post("/v1/training-searches", second).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("the most allowed (1)"), "{}", r.text);
    assert_eq!(
        alice.get("/v1/training-searches").await.expect_status(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    eventually("two trials running", LONG, || async {
        let j = jobs(&alice).await;
        (j.iter().filter(|(_, s)| s == "RUNNING").count() == 2).then_some(())
    })
    .await;
    let id = alice
        .get("/v1/training-searches/long")
        .await
        .expect_status(200)["id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        "/v1/training-searches/long".to_string(),
        format!("/v1/training-searches/{id}"),
        format!("/v1/training-searches/{id}/trials"),
    ] {
        bob.get(&path).await.expect_status(404);
    }
    bob.post_empty(&format!("/v1/training-searches/{id}/stop"))
        .await
        .expect_status(404);
    bob.delete(&format!("/v1/training-searches/{id}"))
        .await
        .expect_status(404);
    assert_eq!(
        bob.get("/v1/training-searches").await.expect_status(200)["items"],
        json!([])
    );
    bob.get("/v1/training-searches?all=true")
        .await
        .expect_status(403);

    // Alice stops it: its running trials' jobs are stopped; stopping again is refused.
    let stopped = alice
        .post_empty("/v1/training-searches/long/stop")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(stopped["status"], "STOPPED", "{stopped:#}");
    let trials = stopped["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "{stopped:#}");
    assert!(
        trials.iter().all(|t| t["status"] == "STOPPED"),
        "{stopped:#}"
    );
    for t in trials {
        wait_for_status(
            &alice,
            &format!("/v1/training-jobs/{}", t["name"].as_str().unwrap()),
            "TERMINATED",
            LONG,
        )
        .await;
    }
    let again = alice.post_empty("/v1/training-searches/long/stop").await;
    assert_eq!(again.status, 409, "{}", again.text);
    // Delete: the search and its trials' jobs are gone.
    alice
        .delete("/v1/training-searches/long")
        .await
        .expect_status(204);
    alice
        .get("/v1/training-searches/long")
        .await
        .expect_status(404);
    assert!(jobs(&alice).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_search_goes_on_without_running_a_trial_twice() {
    let mut gw = Gateway::start().await;
    let alice = gw.api(&gw.create_user("alice").await);
    let mut body = xy_search("k", "random", 6, 2);
    body["template"]["custom"]["boot_command"] =
        SCORE.replace("time.sleep(1.5)", "time.sleep(3)").into();
    alice
        .post("/v1/training-searches", body)
        .await
        .expect_status(201);
    // Both first trials' workers run (a job killed while it launches loses that attempt).
    eventually("two trials running", LONG, || async {
        for name in ["k-t1", "k-t2"] {
            let r = alice
                .get(&format!("/v1/training-jobs/{name}/logs?system=false"))
                .await;
            if !(r.status == 200 && r.text.contains("started")) {
                return None;
            }
        }
        Some(())
    })
    .await;
    gw.kill9();
    gw.start_again().await;
    let done = wait(&alice, "k", "COMPLETED").await;
    let numbers: Vec<i64> = done["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "{done:#}");
    let all = alice
        .get("/v1/training-jobs")
        .await
        .expect_status(200)
        .clone();
    let all = all["items"].as_array().unwrap();
    assert_eq!(all.len(), 6, "{all:#?}");
    for j in all {
        // Each trial's job ran once: one attempt, no restart.
        assert_eq!(
            (j["attempt"].as_i64(), j["retries"].as_i64()),
            (Some(0), Some(0)),
            "{j}"
        );
        assert_eq!(j["status"], "COMPLETED", "{j}");
    }
    assert!(
        done["trials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "COMPLETED"),
        "{done:#}"
    );
}
