//! Training jobs (`/v1/training-jobs`, `atelier job`) on the process backend: the seed's
//! runtime contract (code dir, channels, hyperparameters as arguments, `MA_*` variables,
//! `requirements.txt`, `ma-pre-start.sh`, outputs uploaded), its statuses and events, a
//! failure, a worker killed and resumed from its checkpoint, a hang detected and restarted,
//! unconditional restarts at most 3 in a row, stop and delete, refusals that create
//! nothing, a gateway killed mid-job, logs followed live, a 2-worker `torch.distributed`
//! all-reduce, and Wasm algorithms (training, a silent guest hung, the memory limit, a
//! gateway killed mid-run).

use std::time::Duration;

use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, eventually};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(240);

async fn gateway(extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![("ATELIER_TRAINING_MIN_HANG_SECS", "2")];
    env.extend_from_slice(extra);
    Gateway::start_with(&env).await
}

fn write(s3: &S3Server, bucket: &str, path: &str, text: &str) {
    let p = s3.bucket(bucket).join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

async fn job(api: &Api, body: Value) -> Value {
    api.post("/v1/training-jobs", body)
        .await
        .expect_status(201)
        .clone()
}

async fn wait(api: &Api, name: &str, want: &str) -> Value {
    atelier_tests::training::wait(api, name, want, LONG).await
}

async fn log_of(api: &Api, name: &str, query: &str) -> String {
    atelier_tests::training::log_of(api, name, query).await
}

async fn events(api: &Api, name: &str) -> Vec<String> {
    atelier_tests::training::events(api, name).await
}

/// The script of the runtime-contract test: prints what it sees.
const CONTRACT: &str = r#"
import os, sys
print("ARGS", " ".join(sys.argv[1:]))
for k in sorted(os.environ):
    if k.startswith(("MA_", "VC_", "S3_")) or k in ("train_url", "MASTER_ADDR", "WORLD_SIZE", "RANK"):
        print(f"ENV {k}={os.environ[k]}")
data = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--data_url=")][0]
print("DATA", open(os.path.join(data, "part-0.csv")).read().strip())
print("CWD", os.getcwd())
print("UID", os.getuid())
out = os.environ["train_url"]
open(os.path.join(out, "model.txt"), "w").write("weights")
os.makedirs(os.path.join(out, "sub"), exist_ok=True)
open(os.path.join(out, "sub", "more.txt"), "w").write("more")
# A link the job plants is not followed by the upload.
os.symlink("/etc/passwd", os.path.join(out, "link"))
print("[metric] loss=0.5 accuracy=0.75 step=1")
print("[metric] loss=0.25 accuracy=0.875 step=2")
print("done")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_the_seeds_runtime_contract_and_completes() {
    let s3 = S3Server::start();
    write(&s3, "code", "demo-code/train.py", CONTRACT);
    write(&s3, "code", "demo-code/requirements.txt", "pip\n");
    write(
        &s3,
        "code",
        "demo-code/ma-pre-start.sh",
        "echo PRE-START ran\n",
    );
    write(&s3, "data", "iris/part-0.csv", "5.1,3.5,1.4,0.2\n");
    s3.bucket("out");
    s3.bucket("logs");
    let gw = gateway(&[]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    alice
        .post(
            "/v1/algorithms",
            json!({
                "name": "contract",
                "code_dir": {"connection": "local", "path": "obs://code/demo-code"},
                "boot_file": "train.py",
                "inputs": [{"name": "data_url"}],
                "outputs": [{"name": "train_url", "obtained_from": "environment_variables"}],
                "hyperparameters": [
                    {"name": "lr", "type": "FLOAT", "default": 0.01, "range": [0, 1]},
                    {"name": "epochs", "type": "INT", "required": true},
                    {"name": "opt", "type": "STR", "default": "sgd", "choices": ["sgd", "adam"]}
                ]
            }),
        )
        .await
        .expect_status(201);
    let j = job(
        &alice,
        json!({
            "name": "contract-1",
            "algorithm": "contract",
            "connection": "local",
            "inputs": [{"name": "data_url", "path": "obs://data/iris/"}],
            "outputs": [{"name": "train_url", "path": "obs://out/run-1/"}],
            "hyperparameters": {"epochs": 2, "opt": "adam"},
            "env": {"MY_SETTING": "x y", "MA_FOO": "1"},
            "tags": {"team": "vision"},
            "log_path": "obs://logs/contract-1/"
        }),
    )
    .await;
    assert_eq!(j["status"], "CREATING");
    assert_eq!(
        j["hyperparameters"],
        json!({"epochs": 2, "lr": 0.01, "opt": "adam"})
    );
    assert!(j["warnings"][0].as_str().unwrap().contains("MA_FOO"), "{j}");
    let done = wait(&alice, "contract-1", "COMPLETED").await;
    assert_eq!(done["retries"], 0);

    let log = log_of(&alice, "contract-1", "").await;
    let has = |s: &str| assert!(log.contains(s), "{s:?} not in the log:\n{log}");
    // In the algorithm's order.
    has(
        "ARGS --data_url=/home/ma-user/modelarts/inputs/data_url_0 --lr=0.01 --epochs=2 --opt=adam",
    );
    has("ENV MA_JOB_DIR=/home/ma-user/modelarts/user-job-dir\n");
    has("ENV MA_MOUNT_PATH=/home/ma-user/modelarts\n");
    has("ENV MA_LOG_DIR=/home/ma-user/modelarts/log\n");
    has("ENV MA_NUM_HOSTS=1\n");
    has("ENV VC_TASK_INDEX=0\n");
    has("ENV VC_WORKER_NUM=1\n");
    has("ENV MA_TASK_NAME=worker\n");
    has("ENV MA_HANG_DETECT_TIME=30\n");
    has("ENV MA_SKIP_IMAGE_DETECT=1\n");
    has("ENV MA_FOO=1\n");
    has(&format!("ENV S3_ENDPOINT={}", s3.endpoint()));
    has("ENV train_url=/home/ma-user/modelarts/outputs/train_url_0\n");
    has(&format!(
        "ENV MA_CURRENT_INSTANCE_NAME=ma-job-{}-worker-0\n",
        j["id"].as_str().unwrap()
    ));
    has("DATA 5.1,3.5,1.4,0.2");
    has("CWD /home/ma-user/modelarts/user-job-dir/demo-code");
    has("UID 1000");
    has("Python dependency packages are being installed");
    has("Python dependency packages installed");
    // ma-pre-start.sh before the boot file's output.
    let pre = log.find("PRE-START ran").expect("ma-pre-start ran");
    assert!(pre < log.find("ARGS").unwrap(), "{log}");
    has("Training finished. Exit code 0.");
    // The user's lines alone.
    let user = log_of(&alice, "contract-1", "system=false").await;
    assert!(
        !user.contains("[ModelArts Service Log]") && user.contains("done\n"),
        "{user}"
    );
    let grep = log_of(&alice, "contract-1", "q=DATA").await;
    assert_eq!(grep.trim(), "DATA 5.1,3.5,1.4,0.2");

    // The worker's log copied to the log path, under the seed's name.
    let copied = s3.bucket("logs").join(format!(
        "contract-1/modelarts-job-{}-worker-0.log",
        j["id"].as_str().unwrap()
    ));
    let copied =
        std::fs::read_to_string(&copied).unwrap_or_else(|e| panic!("{}: {e}", copied.display()));
    assert!(copied.contains("DATA 5.1,3.5,1.4,0.2"), "{copied}");
    // Outputs uploaded; the planted link was not.
    let out = s3.bucket("out").join("run-1");
    assert_eq!(
        std::fs::read_to_string(out.join("model.txt")).unwrap(),
        "weights"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sub/more.txt")).unwrap(),
        "more"
    );
    assert!(!out.join("link").exists());

    // Metrics, events in the seed's words and order.
    let m = alice
        .get("/v1/training-jobs/contract-1/metrics?name=loss")
        .await
        .expect_status(200)
        .clone();
    let losses: Vec<f64> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_f64().unwrap())
        .collect();
    assert_eq!(losses, vec![0.5, 0.25]);
    assert_eq!(m["items"][1]["step"], 2);
    let ev = events(&alice, "contract-1").await;
    let order = [
        "Training job created.",
        "[worker-0] The training code is being downloaded.",
        "Training code downloaded.",
        "The training job is queuing and awaiting resource allocation.",
        "The training job starts to run.",
        "[worker-0] The training job starts to run.",
        "[worker-0] Training finished. Exit code 0.",
        "[worker-0] Training output (parameter: train_url) uploaded.",
        "Training job executed.",
    ];
    let mut at = 0;
    for want in order {
        let i = ev[at..]
            .iter()
            .position(|e| e.contains(want))
            .unwrap_or_else(|| panic!("{want:?} after #{at} in {ev:#?}"));
        at += i + 1;
    }

    // The CLI: list, logs, rebuild, save as algorithm.
    let t = gw.data_dir.join("cli-token");
    let _ = t;
    let token = alice.token().unwrap().to_string();
    let ls = gw.cli(&token, &["job", "list"], &[]).await;
    assert!(
        ls.stdout.contains("contract-1") && ls.stdout.contains("COMPLETED"),
        "{}",
        ls.stderr
    );
    let logs = gw
        .cli(
            &token,
            &["job", "logs", "contract-1", "--user-only", "--grep", "DATA"],
            &[],
        )
        .await;
    assert_eq!(
        logs.stdout.trim(),
        "DATA 5.1,3.5,1.4,0.2",
        "{}",
        logs.stderr
    );
    let req = alice
        .get("/v1/training-jobs/contract-1/request")
        .await
        .expect_status(200)
        .clone();
    assert!(
        req.get("name").is_none() && req["algorithm"] == "contract",
        "{req}"
    );
    // A rebuild as it is: its log path now holds the first run's logs (the seed asks for an
    // empty folder).
    let again = alice
        .post(
            "/v1/training-jobs/contract-1/rebuild",
            json!({"name": "contract-2"}),
        )
        .await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.text.contains("log_path"), "{}", again.text);
    // The rebuild form with another log path.
    let mut req2 = req.clone();
    req2["name"] = "contract-2".into();
    req2["log_path"] = "obs://logs/contract-2/".into();
    let rb = job(&alice, req2).await;
    assert_eq!(rb["hyperparameters"], done["hyperparameters"]);
    assert_eq!(rb["inputs"], done["inputs"]);
    // contract-2 writes to the same output folder: it completes too.
    wait(&alice, "contract-2", "COMPLETED").await;
    let saved = gw
        .cli(
            &token,
            &["job", "save-as", "contract-1", "contract-copy"],
            &[],
        )
        .await;
    assert!(
        saved.stderr.contains("created algorithm contract-copy"),
        "{}",
        saved.stderr
    );
    let a = alice
        .get("/v1/algorithms/contract-copy")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(a["boot_file"], "train.py");
    assert_eq!(a["hyperparameters"][1]["name"], "epochs");
    assert_eq!(a["hyperparameters"][1]["default"], 2);

    // An algorithm in use cannot be deleted; the jobs gone, it can.
    let r = alice.delete("/v1/algorithms/contract").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("contract-1"), "{}", r.text);
    alice
        .delete("/v1/training-jobs/contract-1")
        .await
        .expect_status(204);
    alice
        .delete("/v1/training-jobs/contract-2")
        .await
        .expect_status(204);
    assert_eq!(alice.get("/v1/training-jobs/contract-1").await.status, 404);
    alice
        .delete("/v1/algorithms/contract")
        .await
        .expect_status(204);
    // The job's objects stay.
    assert!(out.join("model.txt").exists());
    // Another user sees none of it.
    let bob = gw.api(&gw.create_user("bob").await);
    assert_eq!(
        bob.get("/v1/training-jobs").await.expect_status(200)["items"],
        json!([])
    );
}

/// A script that checkpoints each step into its output, resumes from the newest one, and
/// says where it started.

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_fails_and_a_killed_worker_restarts_from_its_checkpoint() {
    let s3 = S3Server::start();
    write(
        &s3,
        "code",
        "ck/train.py",
        atelier_tests::TRAINING_CHECKPOINTS,
    );
    write(&s3, "code", "bad/run.sh", "echo about to fail; exit 3\n");
    s3.bucket("out");
    let gw = gateway(&[]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;

    // Exit 3: FAILED, no restart without unconditional.
    job(
        &alice,
        json!({
            "name": "bad",
            "connection": "local",
            "custom": {"code_dir": "obs://code/bad/", "boot_command": "sh /home/ma-user/modelarts/user-job-dir/bad/run.sh"},
            "auto_restart": {"count": 2}
        }),
    )
    .await;
    let bad = wait(&alice, "bad", "FAILED").await;
    assert_eq!(bad["retries"], 0, "{bad}");
    assert!(
        bad["status_reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{bad}"
    );
    assert!(
        log_of(&alice, "bad", "")
            .await
            .contains("Training finished. Exit code 3.")
    );
    assert!(
        events(&alice, "bad")
            .await
            .iter()
            .any(|e| e == "Failed to run the training job.")
    );

    // Killed mid-run: restarted, resumed from the newest checkpoint.
    let j = job(
        &alice,
        json!({
            "name": "ck",
            "connection": "local",
            "custom": {"code_dir": "obs://code/ck/", "boot_file": "train.py"},
            "outputs": [{"name": "train_url", "path": "obs://out/ck/", "obtained_from": "environment_variables"}],
            "auto_restart": {"count": 2}
        }),
    )
    .await;
    let id = j["id"].as_str().unwrap().to_string();
    wait(&alice, "ck", "RUNNING").await;
    eventually("step 3", LONG, || async {
        log_of(&alice, "ck", "")
            .await
            .contains("MARK-KILL-ME")
            .then_some(())
    })
    .await;
    assert!(
        atelier_tests::kill_training_python(&id, "train.py") > 0,
        "the worker's python process"
    );
    let done = wait(&alice, "ck", "COMPLETED").await;
    assert_eq!(
        (done["retries"].as_i64(), done["attempt"].as_i64()),
        (Some(1), Some(1)),
        "{done}"
    );
    let second = log_of(&alice, "ck", "attempt=1").await;
    assert!(
        second.contains("resumed at step 4") && second.contains("finished"),
        "{second}"
    );
    let first = log_of(&alice, "ck", "attempt=0").await;
    assert!(first.contains("Exit code 137"), "{first}");
    assert_eq!(done["recoveries"][0]["fault_source"], "worker-0");
    assert_eq!(done["recoveries"][0]["action"], "restarted");
    assert!(
        events(&alice, "ck")
            .await
            .iter()
            .any(|e| e == "The training job has been restarted.")
    );
    for step in 1..=5 {
        assert!(
            s3.bucket("out")
                .join(format!("ck/ckpt_{step}.pth"))
                .exists()
        );
    }
}

/// AC-33: with unconditional auto restart, code that always exits 1 restarts at most 3
/// times in a row (`jobs::MAX_STREAK`), though retries are left, then fails.
#[tokio::test(flavor = "multi_thread")]
async fn unconditional_restarts_stop_after_three_in_a_row() {
    let gw = gateway(&[]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    job(
        &alice,
        json!({
            "name": "always",
            "custom": {"boot_command": "echo try $VC_TASK_INDEX; exit 1"},
            "auto_restart": {"count": 8, "unconditional": true}
        }),
    )
    .await;
    let failed = wait(&alice, "always", "FAILED").await;
    assert_eq!(
        (failed["retries"].as_i64(), failed["attempt"].as_i64()),
        (Some(3), Some(3)),
        "{failed}"
    );
    assert!(
        failed["status_reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 1"),
        "{failed}"
    );
    // A row per attempt: three restarts, then the failure.
    let rows = failed["recoveries"].as_array().unwrap();
    let seen: Vec<(i64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "restarted"),
            (1, "restarted"),
            (2, "restarted"),
            (3, "none: the job failed")
        ],
        "{failed}"
    );
    assert!(
        rows.iter().all(|r| r["fault_source"] == "worker-0"
            && r["reason"].as_str().unwrap().contains("exited with code 1")),
        "{failed}"
    );
    let ev = events(&alice, "always").await;
    let count = |text: &str| ev.iter().filter(|e| *e == text).count();
    assert_eq!(count("The training job has been restarted."), 3, "{ev:#?}");
    assert_eq!(count("Failed to run the training job."), 1, "{ev:#?}");
    // Each attempt ran once: its own log, with its own exit.
    for a in 0..=3 {
        let log = log_of(&alice, "always", &format!("attempt={a}")).await;
        assert_eq!(log.matches("Exit code 1.").count(), 1, "attempt {a}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_job_is_taken_as_hung_and_restarted() {
    // One hour of auto stop lasts 2 s here.
    let gw = gateway(&[("ATELIER_LEASE_HOUR", "2")]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    // First attempt: silent forever; the second finds its mark and ends.
    let script = "if [ -f \"$MA_LOG_DIR/mark\" ]; then echo second attempt; exit 0; fi; touch \"$MA_LOG_DIR/mark\"; exec sleep 600";
    job(
        &alice,
        json!({
            "name": "silent",
            "custom": {"boot_command": script},
            "hang_detect_seconds": 3,
            "auto_restart": {"count": 1}
        }),
    )
    .await;
    let done = wait(&alice, "silent", "COMPLETED").await;
    assert_eq!(done["retries"], 1, "{done}");
    let ev = events(&alice, "silent").await;
    assert!(
        ev.iter()
            .any(|e| e.starts_with("The system detects that your training job may be suspended.")),
        "{ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e == "The training job has been restarted."),
        "{ev:#?}"
    );
    assert!(
        done["recoveries"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no output and no CPU use"),
        "{done}"
    );
    assert!(
        log_of(&alice, "silent", "attempt=1")
            .await
            .contains("second attempt")
    );

    // A busy job that prints nothing is not hung (its CPU moves).
    job(
        &alice,
        json!({
            "name": "busy",
            "custom": {"boot_command": "python -c \"exec('import time\\nt=time.time()\\nwhile time.time()-t<8: pass')\""},
            "hang_detect_seconds": 3
        }),
    )
    .await;
    let busy = wait(&alice, "busy", "COMPLETED").await;
    assert_eq!(busy["retries"], 0, "{busy}");
    // A CPU flavor: no GPU samples, no low-utilisation alarm.
    assert!(busy.get("low_gpu_utilization").is_none(), "{busy}");
    // Its resource usage was sampled: CPU used (how much depends on the machine's load),
    // some memory.
    let usage = alice
        .get("/v1/training-jobs/busy/usage")
        .await
        .expect_status(200)
        .clone();
    let of = |name: &str| -> Vec<f64> {
        usage["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["name"] == name)
            .map(|x| x["value"].as_f64().unwrap())
            .collect()
    };
    assert!(of("system/cpuUsage").iter().any(|c| *c > 1.0), "{usage}");
    assert!(of("system/memUsage").iter().all(|m| *m > 1.0), "{usage}");
    // Not among the job's own metrics.
    let own = alice
        .get("/v1/training-jobs/busy/metrics")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(own["items"], json!([]), "{own}");

    // Auto stop: a job that would run for 10 minutes is TERMINATED after its one "hour",
    // not restarted, and says why.
    job(
        &alice,
        json!({
            "name": "capped",
            "custom": {"boot_command": "echo started; exec sleep 607"},
            "auto_stop_hours": 1,
            "auto_restart": {"count": 2}
        }),
    )
    .await;
    let capped = wait(&alice, "capped", "TERMINATED").await;
    assert_eq!(capped["retries"], 0, "{capped}");
    assert_eq!(capped["recoveries"], json!([]), "{capped}");
    let ev = events(&alice, "capped").await;
    assert!(
        ev.iter()
            .any(|e| e == "The training job has been stopped. (Maximum running duration: 1 hour)"),
        "{ev:#?}"
    );
    assert!(log_of(&alice, "capped", "").await.contains("started"));
    // Its worker is gone: nothing of it runs on.
    eventually("the auto-stopped worker to end", LONG, || async {
        let p = std::process::Command::new("pgrep")
            .args(["-f", "sleep 607"])
            .output()
            .unwrap();
        p.stdout.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_stop_delete_and_refuse_bad_requests_creating_nothing() {
    let s3 = S3Server::start();
    write(&s3, "code", "c/train.py", "print('hi')\n");
    for i in 0..1001 {
        write(&s3, "data", &format!("many/{i}.txt"), "x");
    }
    write(&s3, "data", "one/a.txt", "x");
    let gw = gateway(&[]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    let bob = gw.api(&gw.create_user("bob").await);
    s3.connect(&alice, "local").await;
    alice
        .post(
            "/v1/algorithms",
            json!({
                "name": "algo",
                "code_dir": {"connection": "local", "path": "obs://code/c"},
                "boot_file": "train.py",
                "inputs": [{"name": "data_url"}],
                "hyperparameters": [
                    {"name": "lr", "type": "FLOAT", "default": 0.01, "range": [0, 1]},
                    {"name": "epochs", "type": "INT", "required": true}
                ]
            }),
        )
        .await
        .expect_status(201);
    let base = json!({
        "algorithm": "algo",
        "connection": "local",
        "inputs": [{"name": "data_url", "path": "obs://data/one/"}],
        "hyperparameters": {"epochs": 1}
    });
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let long_name = "a".repeat(65);
    for (body, field) in [
        (with(json!({"name": long_name})), "name"),
        (with(json!({"name": "job.1"})), "name"),
        (
            with(json!({"hyperparameters": {"epochs": 1, "lr": 2.0}})),
            "hyperparameters.lr",
        ),
        (
            with(json!({"hyperparameters": {"epochs": 1, "nope": 1}})),
            "hyperparameters.nope",
        ),
        (
            with(json!({"hyperparameters": {}})),
            "hyperparameters.epochs",
        ),
        (
            with(json!({"hyperparameters": {"epochs": "x"}})),
            "hyperparameters.epochs",
        ),
        (with(json!({"nodes": 0})), "nodes"),
        (
            with(json!({"auto_restart": {"count": 0}})),
            "auto_restart.count",
        ),
        (
            with(json!({"auto_restart": {"count": 129}})),
            "auto_restart.count",
        ),
        (with(json!({"auto_stop_hours": 721})), "auto_stop_hours"),
        (
            with(json!({"env": {"MA_HANG_DETECT_TIME": "9"}})),
            "env.MA_HANG_DETECT_TIME",
        ),
        (with(json!({"env": {"1BAD": "x"}})), "env"),
        (with(json!({"env": {"PATH": "/evil"}})), "env.PATH"),
        (
            with(json!({"hang_detect_seconds": 1})),
            "hang_detect_seconds",
        ),
        (
            with(
                json!({"tags": (0..21).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            ),
            "tags",
        ),
        (
            with(json!({"inputs": [{"name": "data_url", "path": "obs://data/many/"}]})),
            "inputs[0].path",
        ),
        (
            with(json!({"inputs": [{"name": "data_url", "path": "obs://data/none/"}]})),
            "inputs[0].path",
        ),
        (
            with(json!({"inputs": [{"name": "other", "path": "obs://data/one/"}]})),
            "inputs[0].name",
        ),
        (with(json!({"inputs": []})), "inputs"),
        (with(json!({"connection": "nope"})), "connection"),
        (
            with(json!({"outputs": [{"name": "data_url", "path": "obs://no-such-bucket/x/"}]})),
            "outputs[0].name",
        ),
        (with(json!({"flavor": "nope"})), "flavor"),
        (with(json!({"custom": {"boot_command": "true"}})), "custom"),
        (
            json!({"custom": {"boot_file": "x.sh", "code_dir": "obs://code/c/"}, "connection": "local"}),
            "custom.boot_file",
        ),
        (json!({}), "algorithm"),
        (
            json!({"custom": {"boot_command": "true"}, "connection": "local",
                   "outputs": [{"name": "train_url", "path": "obs://no-such-bucket/x/"}]}),
            "outputs[0].path",
        ),
    ] {
        let r = alice.post("/v1/training-jobs", body.clone()).await;
        assert_eq!(r.status, 400, "{body} → {}", r.text);
        assert!(r.text.contains(field), "{field:?} not named: {}", r.text);
    }
    // Another user's algorithm is not there for bob.
    let r = bob.post("/v1/training-jobs", base.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("algorithm"), "{}", r.text);
    assert_eq!(
        alice.get("/v1/training-jobs").await.expect_status(200)["items"],
        json!([])
    );

    // Stop a running job; stop again is refused; delete.
    job(
        &alice,
        json!({"name": "long", "custom": {"boot_command": "echo started; exec sleep 600"}}),
    )
    .await;
    wait(&alice, "long", "RUNNING").await;
    eventually("started", LONG, || async {
        log_of(&alice, "long", "")
            .await
            .contains("started\n")
            .then_some(())
    })
    .await;
    assert_eq!(
        bob.post("/v1/training-jobs/long/stop", json!({}))
            .await
            .status,
        404
    );
    alice
        .post("/v1/training-jobs/long/stop", json!({}))
        .await
        .expect_status(200);
    wait(&alice, "long", "TERMINATED").await;
    assert!(
        events(&alice, "long")
            .await
            .iter()
            .any(|e| e == "The training job has been manually stopped.")
    );
    let again = alice.post("/v1/training-jobs/long/stop", json!({})).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(
        again.text.contains("while it is TERMINATED"),
        "{}",
        again.text
    );
    // Its worker is gone.
    let id = alice.get("/v1/training-jobs/long").await.expect_status(200)["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("no worker left", Duration::from_secs(30), || async {
        atelier_tests::processes_mentioning(std::ffi::OsStr::new(&format!("ma-job-{id}")))
            .is_empty()
            .then_some(())
    })
    .await;
    // Delete while running stops it first.
    let long2 = job(
        &alice,
        json!({"name": "long2", "custom": {"boot_command": "exec sleep 600"}}),
    )
    .await;
    let id2 = long2["id"].as_str().unwrap().to_string();
    wait(&alice, "long2", "RUNNING").await;
    assert!(gw.data_dir.join("training").join(&id2).exists());
    alice
        .delete("/v1/training-jobs/long2")
        .await
        .expect_status(204);
    assert_eq!(alice.get("/v1/training-jobs/long2").await.status, 404);
    // Its worker, its dirs and its logs are gone.
    assert!(
        atelier_tests::processes_mentioning(std::ffi::OsStr::new(&format!("ma-job-{id2}")))
            .is_empty()
    );
    assert!(!gw.data_dir.join("training").join(&id2).exists());
    assert!(!gw.data_dir.join("training/logs").join(&id2).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_job_finds_it_again_and_logs_follow_live() {
    let gw0 = gateway(&[]).await;
    let mut gw = gw0;
    let alice = gw.api(&gw.create_user("alice").await);
    // Prints a line, waits for the test's go, prints another.
    let script =
        "echo first line; while [ ! -f \"$MA_LOG_DIR/go\" ]; do sleep 0.2; done; echo second line";
    let j = job(
        &alice,
        json!({"name": "live", "custom": {"boot_command": script}}),
    )
    .await;
    let id = j["id"].as_str().unwrap().to_string();
    wait(&alice, "live", "RUNNING").await;
    eventually("first line", LONG, || async {
        log_of(&alice, "live", "")
            .await
            .contains("first line")
            .then_some(())
    })
    .await;

    // The gateway dies; the job's worker does not.
    gw.kill9();
    gw.start_again().await;
    let running = wait(&alice, "live", "RUNNING").await;
    assert_eq!(
        (running["attempt"].as_i64(), running["retries"].as_i64()),
        (Some(0), Some(0))
    );

    // Follow: the first line now, the second once the job prints it, then the end.
    let resp = alice
        .request(
            reqwest::Method::GET,
            "/v1/training-jobs/live/logs?follow=true&system=false",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut seen = String::new();
    while !seen.contains("first line") {
        let piece = resp.chunk().await.unwrap().expect("more of the log");
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    assert!(!seen.contains("second line"));
    std::fs::write(gw.data_dir.join(format!("training/{id}/w0/log/go")), "").unwrap();
    while let Some(piece) = resp.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    assert!(seen.contains("second line"), "{seen}");
    let done = wait(&alice, "live", "COMPLETED").await;
    assert_eq!(done["attempt"], 0, "never run twice: {done}");
    // The log is whole across the gateway's restart.
    let log = log_of(&alice, "live", "system=false").await;
    assert_eq!(log, "first line\nsecond line\n");
}

/// Two workers that reach each other by the seed's names: worker 0 listens, worker 1
/// connects to `VC_WORKER_HOSTS`' first name and sends a line.
const RENDEZVOUS: &str = r#"
import os, socket, time
rank = int(os.environ["VC_TASK_INDEX"])
first = os.environ["VC_WORKER_HOSTS"].split(",")[0]
print(f"worker {rank} of {os.environ['MA_NUM_HOSTS']} on {socket.gethostname()}", flush=True)
if rank == 0:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 5000)); s.listen(1)
    c, _ = s.accept()
    print("worker 0 got:", c.recv(100).decode().strip(), flush=True)
else:
    for _ in range(200):
        try:
            c = socket.create_connection((first, 5000), timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    c.sendall(f"hello from worker {rank}\n".encode())
    print("worker 1 sent", flush=True)
"#;

async fn two_workers_reach_each_other(gw: &Gateway, image: Option<&str>) {
    let s3 = S3Server::start();
    write(&s3, "code", "rdv/rdv.py", RENDEZVOUS);
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    let mut custom = json!({"code_dir": "obs://code/rdv/", "boot_command": "python3 /home/ma-user/modelarts/user-job-dir/rdv/rdv.py"});
    if let Some(i) = image {
        custom["image"] = i.into();
    }
    job(
        &alice,
        json!({"name": "rdv", "connection": "local", "custom": custom, "nodes": 2}),
    )
    .await;
    let done = wait(&alice, "rdv", "COMPLETED").await;
    assert_eq!(done["nodes"], 2);
    let w0 = log_of(&alice, "rdv", "worker=0&system=false").await;
    let w1 = log_of(&alice, "rdv", "worker=1&system=false").await;
    assert!(
        w0.contains("worker 0 of 2") && w0.contains("worker 0 got: hello from worker 1"),
        "{w0}"
    );
    assert!(
        w1.contains("worker 1 of 2") && w1.contains("worker 1 sent"),
        "{w1}"
    );
    let bad = alice.get("/v1/training-jobs/rdv/logs?worker=2").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_of_a_job_reach_each_other_by_their_names() {
    let gw = gateway(&[]).await;
    two_workers_reach_each_other(&gw, None).await;
}

/// `torch.distributed` with gloo: each worker adds its rank + 1; both see the sum.
const ALL_REDUCE: &str = r#"
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank {rank} of {dist.get_world_size()} sum={t.item()}", flush=True)
dist.destroy_process_group()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_two_worker_gloo_all_reduce_gives_the_sum_directly_and_through_torchrun() {
    let venv = atelier_tests::training_venv();
    let venv = venv.to_string_lossy().into_owned();
    let gw = gateway(&[("ATELIER_TRAINING_VENV", &venv)]).await;
    let s3 = S3Server::start();
    write(&s3, "code", "ddp/allreduce.py", ALL_REDUCE);
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    // env:// rendezvous from the platform's MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.
    job(
        &alice,
        json!({"name": "ddp", "connection": "local", "nodes": 2,
               "custom": {"code_dir": "obs://code/ddp/", "boot_file": "allreduce.py"}}),
    )
    .await;
    // The seed's torchrun launcher, static rendezvous at worker 0.
    job(
        &alice,
        json!({"name": "ddp-torchrun", "connection": "local", "nodes": 2,
               "env": {"MA_RUN_METHOD": "torchrun", "MA_TORCHRUN_MASTER_PORT": "29511"},
               "custom": {"code_dir": "obs://code/ddp/", "boot_file": "allreduce.py"}}),
    )
    .await;
    for name in ["ddp", "ddp-torchrun"] {
        wait(&alice, name, "COMPLETED").await;
        for w in 0..2 {
            let log = log_of(&alice, name, &format!("worker={w}")).await;
            assert!(
                log.contains(&format!("rank {w} of 2 sum=3.0")),
                "{name} worker {w}:\n{log}"
            );
        }
    }
    // The PyTorch example (examples/training/pytorch-cpu) on two workers: trains, checkpoints
    // to its output, and a rebuild that predownloads the output resumes from there.
    let example = atelier_tests::plugins::repo_root().join("examples/training/pytorch-cpu");
    let made = std::process::Command::new(atelier_tests::training_venv().join("bin/python"))
        .arg(example.join("make_data.py"))
        .arg(s3.bucket("data").join("synthetic"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    write(
        &s3,
        "code",
        "example/train.py",
        &std::fs::read_to_string(example.join("train.py")).unwrap(),
    );
    s3.bucket("out");
    job(
        &alice,
        json!({"name": "example", "connection": "local", "nodes": 2,
               "custom": {"code_dir": "obs://code/example/", "boot_file": "train.py"},
               "inputs": [{"name": "data_url", "path": "obs://data/synthetic/"}],
               "outputs": [{"name": "train_url", "path": "obs://out/example/", "predownload": true}],
               "hyperparameters": {"epochs": 3}}),
    )
    .await;
    wait(&alice, "example", "COMPLETED").await;
    let losses = alice
        .get("/v1/training-jobs/example/metrics?name=loss")
        .await
        .expect_status(200)["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(losses, 3);
    assert!(s3.bucket("out").join("example/ckpt_3.pth").exists());
    let mut more = alice
        .get("/v1/training-jobs/example/request")
        .await
        .expect_status(200)
        .clone();
    more["name"] = "example-more".into();
    more["hyperparameters"] = json!({"epochs": 5});
    job(&alice, more).await;
    wait(&alice, "example-more", "COMPLETED").await;
    let log = log_of(&alice, "example-more", "system=false").await;
    assert!(log.contains("resumed from epoch 3"), "{log}");
    assert!(s3.bucket("out").join("example/ckpt_5.pth").exists());
    let tr = log_of(&alice, "ddp-torchrun", "worker=1").await;
    assert!(
        tr.contains("torchrun") || tr.contains("rank 1 of 2"),
        "{tr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn container_jobs_run_on_podman_and_their_workers_reach_each_other() {
    let (_, image) = atelier_tests::docker_env();
    // A CPU flavor (the default) and a one-GPU flavor.
    let flavors = "[[flavors]]\nid = \"cpu-2-8\"\ntype = \"cpu\"\nvcpus = 2\nmemory_gib = 8\n\n[[flavors]]\nid = \"gpu-1\"\ntype = \"gpu\"\nvcpus = 8\nmemory_gib = 32\n";
    let gw = Gateway::start_docker(flavors, &[("ATELIER_TRAINING_MIN_HANG_SECS", "2")]).await;
    two_workers_reach_each_other(&gw, Some(&image)).await;
    let alice = gw.api(&gw.create_user("carol").await);
    job(
        &alice,
        json!({"name": "uid", "custom": {"image": image, "boot_command": "id -u; pwd; exit 4"}}),
    )
    .await;
    let failed = wait(&alice, "uid", "FAILED").await;
    assert!(
        failed["status_reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 4"),
        "{failed}"
    );
    let log = log_of(&alice, "uid", "system=false").await;
    assert_eq!(log, "1000\n/home/ma-user\n");
    // A GPU flavor: the docker backend gives workers GPUs, but this host has none.
    let r = alice
        .post(
            "/v1/training-jobs",
            json!({"name": "gpu", "flavor": "gpu-1", "nodes": 2,
                   "custom": {"image": image, "boot_command": "nvidia-smi"}}),
        )
        .await;
    let msg = r.expect_error(400, "invalid_argument");
    assert!(
        msg.contains("gpu-1") && msg.contains("2 for 2 worker(s)") && msg.contains("has 0"),
        "{msg}"
    );
    alice.get("/v1/training-jobs/gpu").await.expect_status(404);
}

/// The Python linear-regression example (a Wasm component of world training-algorithm),
/// registered as an algorithm of `api`'s user.
async fn linreg(api: &Api) {
    use atelier_tests::plugins::{built_python, repo_root, upload};
    let dir = repo_root().join("examples/plugins/python-training-algorithm");
    let wasm = built_python(&dir).await;
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plugin.json")).unwrap()).unwrap();
    upload(api, &manifest, std::fs::read(&wasm).unwrap(), &[])
        .await
        .expect_status(201);
    api.post(
        "/v1/algorithms",
        json!({"name": "linreg", "plugin": {"name": "linear-regression", "version": "0.1.0"}}),
    )
    .await
    .expect_status(201);
}

/// A store with the example's points at `obs://data/line/` and an empty bucket `out`.
fn linreg_data() -> S3Server {
    let s3 = S3Server::start();
    let points = std::fs::read_to_string(
        atelier_tests::plugins::repo_root()
            .join("examples/plugins/python-training-algorithm/storage/data/line/points.csv"),
    )
    .unwrap();
    write(&s3, "data", "line/points.csv", &points);
    s3.bucket("out");
    s3
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_algorithm_trains_as_a_job_reports_metrics_checkpoints_and_stops_when_asked() {
    let s3 = linreg_data();
    let gw = atelier_tests::plugins::gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    linreg(&alice).await;
    let channels = |out: &str| {
        json!({
            "connection": "local",
            "inputs": [{"name": "data_url", "path": "obs://data/line/"}],
            "outputs": [{"name": "train_url", "path": format!("obs://out/{out}/")}]
        })
    };
    // Outside the schema describe() gave: refused before anything runs.
    let mut bad = channels("x");
    bad["algorithm"] = "linreg".into();
    bad["hyperparameters"] = json!({"epochs": 0});
    let r = alice.post("/v1/training-jobs", bad.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("hyperparameters.epochs"), "{}", r.text);
    bad["hyperparameters"] = json!({"epochs": 5});
    bad["nodes"] = 2.into();
    assert_eq!(alice.post("/v1/training-jobs", bad).await.status, 400);

    // Trains: metrics per epoch, checkpoints in the output, the final metrics.
    let mut body = channels("run-1");
    body["name"] = "fit".into();
    body["algorithm"] = "linreg".into();
    body["hyperparameters"] = json!({"epochs": 30});
    job(&alice, body).await;
    wait(&alice, "fit", "COMPLETED").await;
    let m = alice
        .get("/v1/training-jobs/fit/metrics?name=loss")
        .await
        .expect_status(200)
        .clone();
    let losses: Vec<f64> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 30, "{m}");
    assert!(losses[29] < losses[0], "{losses:?}");
    let fin = alice
        .get("/v1/training-jobs/fit/metrics?name=final/loss")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(fin["items"].as_array().unwrap().len(), 1, "{fin}");
    let ckpts = atelier_tests::s3::files_under(&s3.bucket("out").join("run-1"));
    assert!(
        ckpts.iter().any(|f| f.contains("checkpoints/")),
        "{ckpts:?}"
    );
    let log = log_of(&alice, "fit", "").await;
    assert!(
        log.contains("the Wasm algorithm linear-regression@0.1.0"),
        "{log}"
    );

    // Stopped mid-train: the guest sees should-stop and returns cancelled.
    let mut body = channels("run-2");
    body["name"] = "long".into();
    body["algorithm"] = "linreg".into();
    body["hyperparameters"] = json!({"epochs": 100000});
    job(&alice, body).await;
    eventually("a few epochs", LONG, || async {
        let m = alice.get("/v1/training-jobs/long/metrics?name=loss").await;
        (m.expect_status(200)["items"].as_array().unwrap().len() >= 3).then_some(())
    })
    .await;
    alice
        .post("/v1/training-jobs/long/stop", json!({}))
        .await
        .expect_status(200);
    wait(&alice, "long", "TERMINATED").await;
    let log = log_of(&alice, "long", "").await;
    assert!(log.contains("the algorithm returned cancelled"), "{log}");
    // What it wrote so far was uploaded: a rebuild that predownloads resumes from it.
    let rb = alice
        .get("/v1/training-jobs/long/request")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(rb["hyperparameters"], json!({"epochs": 100000}));
}

/// A gateway for the Wasm algorithm jobs: the shared plugin compile cache, short hang times.
async fn wasm_gateway() -> Gateway {
    gateway(&[(
        "ATELIER_PLUGIN_CACHE_DIR",
        &atelier_tests::plugins::shared_cache(),
    )])
    .await
}

/// A WAT training algorithm uploaded as plugin `name` (with `limits`) and registered as the
/// algorithm of the same name.
async fn wat_algorithm(api: &Api, name: &str, component: Vec<u8>, limits: Value) {
    let manifest = json!({
        "name": name,
        "version": "0.1.0",
        "world": "training-algorithm",
        "limits": limits
    });
    atelier_tests::plugins::upload(api, &manifest, component, &[])
        .await
        .expect_status(201);
    api.post(
        "/v1/algorithms",
        json!({"name": name, "plugin": {"name": name, "version": "0.1.0"}}),
    )
    .await
    .expect_status(201);
}

/// A Wasm algorithm that, in its first attempt, neither heartbeats nor logs: it sleeps until
/// `should-stop` and returns `cancelled`. A later attempt logs "second attempt" and
/// completes.
fn quiet() -> Vec<u8> {
    atelier_plugins::fixtures::training_algorithm(
        r#"
    (if (i32.eqz (local.get 2))
      (then
        (block $done
          (loop $wait
            (br_if $done (call $should_stop))
            (call $sleep (i64.const 20000000))
            (br $wait)))
        (return (call $err (i32.const 4) (i32.const 3100) (i32.const 7)))))
    (call $log (i32.const 1) (i32.const 3000) (i32.const 14))
    (call $heartbeat (i32.const 1) (f64.const 1))
    (call $ok)"#,
        &[(3000, "second attempt"), (3100, "stopped")],
    )
}

/// AC-50: a Wasm guest silent for the hang time is taken as hung (the process jobs' event)
/// and restarted when it may be, failed when not; a guest over its memory limit fails,
/// without a restart, naming the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_wasm_algorithm_is_taken_as_hung_and_one_over_its_memory_fails() {
    let gw = wasm_gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    wat_algorithm(&alice, "quiet", quiet(), json!({})).await;
    let hang = "The system detects that your training job may be suspended.";

    job(
        &alice,
        json!({"name": "hung", "algorithm": "quiet", "hang_detect_seconds": 2, "auto_restart": {"count": 1}}),
    )
    .await;
    let done = wait(&alice, "hung", "COMPLETED").await;
    assert_eq!(
        (done["retries"].as_i64(), done["attempt"].as_i64()),
        (Some(1), Some(1)),
        "{done}"
    );
    let ev = events(&alice, "hung").await;
    assert_eq!(
        ev.iter().filter(|e| e.starts_with(hang)).count(),
        1,
        "{ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e == "The training job has been restarted."),
        "{ev:#?}"
    );
    let row = &done["recoveries"][0];
    assert_eq!(row["action"], "restarted", "{done}");
    assert!(
        row["reason"].as_str().unwrap().contains("no heartbeat"),
        "{done}"
    );
    let first = log_of(&alice, "hung", "attempt=0").await;
    assert!(first.contains("taken as hung"), "{first}");
    let second = log_of(&alice, "hung", "attempt=1").await;
    assert!(second.contains("second attempt"), "{second}");

    // No restart allowed: the hang fails the job.
    job(
        &alice,
        json!({"name": "hung-once", "algorithm": "quiet", "hang_detect_seconds": 2}),
    )
    .await;
    let failed = wait(&alice, "hung-once", "FAILED").await;
    assert_eq!(failed["retries"], 0, "{failed}");
    assert!(
        failed["status_reason"]
            .as_str()
            .unwrap()
            .contains("no heartbeat"),
        "{failed}"
    );
    let ev = events(&alice, "hung-once").await;
    assert!(ev.iter().any(|e| e.starts_with(hang)), "{ev:#?}");
    assert!(
        ev.iter().any(|e| e == "Failed to run the training job."),
        "{ev:#?}"
    );

    // Over its memory limit: its own fault, no restart though one is allowed.
    let bomb = atelier_plugins::fixtures::training_memory_bomb();
    wat_algorithm(&alice, "bomb", bomb, json!({"memory_mb": 32})).await;
    job(
        &alice,
        json!({"name": "bomb", "algorithm": "bomb", "auto_restart": {"count": 1}}),
    )
    .await;
    let failed = wait(&alice, "bomb", "FAILED").await;
    assert_eq!(failed["retries"], 0, "{failed}");
    assert!(
        failed["status_reason"]
            .as_str()
            .unwrap()
            .contains("memory limit"),
        "{failed}"
    );
    let log = log_of(&alice, "bomb", "").await;
    assert!(log.contains("memory limit"), "{log}");
}

/// A gateway killed while Wasm algorithms train: their runs died with it. The restarted
/// gateway ends each lost attempt as an environment fault, never running it again: a job
/// with a restart left resumes from its newest checkpoint in a new attempt, one without
/// fails saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_wasm_job_restarts_it_from_its_checkpoint_or_fails_it() {
    let s3 = linreg_data();
    let mut gw = wasm_gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    linreg(&alice).await;
    wat_algorithm(&alice, "quiet", quiet(), json!({})).await;
    job(
        &alice,
        json!({
            "name": "fit",
            "algorithm": "linreg",
            "connection": "local",
            "inputs": [{"name": "data_url", "path": "obs://data/line/"}],
            "outputs": [{"name": "train_url", "path": "obs://out/fit/"}],
            "hyperparameters": {"epochs": 100000},
            "auto_restart": {"count": 1}
        }),
    )
    .await;
    job(&alice, json!({"name": "lost", "algorithm": "quiet"})).await;
    eventually("a few epochs", LONG, || async {
        let m = alice.get("/v1/training-jobs/fit/metrics?name=loss").await;
        (m.expect_status(200)["items"].as_array().unwrap().len() >= 3).then_some(())
    })
    .await;
    wait(&alice, "lost", "RUNNING").await;

    gw.kill9();
    gw.start_again().await;

    // No restart left: failed, with the reason.
    let lost = wait(&alice, "lost", "FAILED").await;
    assert_eq!(
        (lost["retries"].as_i64(), lost["attempt"].as_i64()),
        (Some(0), Some(0)),
        "{lost}"
    );
    let why = "the gateway stopped while the Wasm algorithm ran";
    assert!(
        lost["status_reason"].as_str().unwrap().contains(why),
        "{lost}"
    );
    assert_eq!(lost["recoveries"][0]["action"], "none: the job failed");

    // A restart left: attempt 1 resumes from the newest checkpoint attempt 0 committed.
    let resumed = eventually("attempt 1 resumed", LONG, || async {
        // Attempt 1 may not exist yet (400 until the restarted gateway begins it).
        let r = alice
            .send(alice.request(reqwest::Method::GET, "/v1/training-jobs/fit/logs?attempt=1"))
            .await;
        let log = (r.status == 200).then(|| r.text.clone())?;
        let at = log.find("resuming from epoch ")?;
        let n: String = log[at + "resuming from epoch ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        n.parse::<i64>().ok()
    })
    .await;
    assert!(resumed >= 2, "resumed from epoch {resumed}");
    let fit = alice
        .get("/v1/training-jobs/fit")
        .await
        .expect_status(200)
        .clone();
    assert_eq!(
        (fit["retries"].as_i64(), fit["attempt"].as_i64()),
        (Some(1), Some(1)),
        "{fit}"
    );
    let row = &fit["recoveries"][0];
    assert_eq!(row["action"], "restarted", "{fit}");
    assert!(row["reason"].as_str().unwrap().contains(why), "{fit}");
    assert!(
        events(&alice, "fit")
            .await
            .iter()
            .any(|e| e == "The training job has been restarted.")
    );
    // The lost attempts ran once each.
    for name in ["fit", "lost"] {
        let log = log_of(&alice, name, "attempt=0").await;
        assert_eq!(log.matches("[init] attempt 0").count(), 1, "{name}: {log}");
    }
    alice
        .post("/v1/training-jobs/fit/stop", json!({}))
        .await
        .expect_status(200);
    wait(&alice, "fit", "TERMINATED").await;
}

/// A webhook receiver on loopback: answers 500 to its first request and 200 after; keeps
/// each request's headers and body.
async fn receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, String)>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    let task = tokio::spawn(async move {
        for n in 0..50 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let k = s.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(at) = text.find("\r\n\r\n") {
                    let head = text[..at].to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= at + 4 + len {
                        break (head, text[at + 4..at + 4 + len].to_string());
                    }
                }
            };
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            keep.lock().unwrap().push((headers, body));
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, got, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_events_reach_its_webhook_signed_and_retried() {
    let (url, got, task) = receiver().await;
    let gw = gateway(&[("ATELIER_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    let secret = "a-secret-of-the-receivers";
    for (bad, field) in [
        (
            json!({"url": "ftp://x/", "secret": secret}),
            "notification.url",
        ),
        (
            json!({"url": url, "secret": "short"}),
            "notification.secret",
        ),
        (
            json!({"url": url, "secret": secret, "events": ["JobExploded"]}),
            "notification.events",
        ),
    ] {
        let r = alice
            .post(
                "/v1/training-jobs",
                json!({"custom": {"boot_command": "true"}, "notification": bad}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.text.contains(field), "{}", r.text);
    }
    let j = job(
        &alice,
        json!({"name": "hooked", "custom": {"boot_command": "echo hi"},
               "notification": {"url": url, "secret": secret}}),
    )
    .await;
    assert!(
        !j.to_string().contains(secret),
        "the secret is never shown: {j}"
    );
    assert_eq!(j["notification"]["events"].as_array().unwrap().len(), 5);
    wait(&alice, "hooked", "COMPLETED").await;
    let deliveries = eventually("both events delivered", LONG, || async {
        let d = alice
            .get("/v1/training-jobs/hooked/notifications")
            .await
            .expect_status(200)
            .clone();
        let items = d["items"].as_array().unwrap().clone();
        (items.len() == 2 && items.iter().all(|x| x["status"] == "delivered")).then_some(items)
    })
    .await;
    assert_eq!(deliveries[0]["event"], "JobStarted");
    assert_eq!(deliveries[1]["event"], "JobCompleted");
    // The first try got a 500: retried, same delivery id.
    assert_eq!(deliveries[0]["attempts"], 2, "{deliveries:?}");
    let requests = got.lock().unwrap().clone();
    let header = |r: &(Vec<(String, String)>, String), k: &str| {
        r.0.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let started: Vec<String> = requests
        .iter()
        .filter(|r| header(r, "x-atelier-event") == "JobStarted")
        .map(|r| header(r, "x-atelier-delivery"))
        .collect();
    assert_eq!(started.len(), 2, "tried twice");
    assert_eq!(started[0], started[1]);
    let completed = requests
        .iter()
        .find(|r| header(r, "x-atelier-event") == "JobCompleted")
        .unwrap();
    let body: Value = serde_json::from_str(&completed.1).unwrap();
    assert_eq!(
        (
            body["event"].as_str(),
            body["job"]["name"].as_str(),
            body["job"]["status"].as_str()
        ),
        (Some("JobCompleted"), Some("hooked"), Some("COMPLETED"))
    );
    // The signature, checked by another implementation (Python's hmac).
    let ts = header(completed, "x-atelier-timestamp");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print('sha256=' + hmac.new(sys.argv[1].encode(), (sys.argv[2] + '.' + sys.argv[3]).encode(), hashlib.sha256).hexdigest())",
            secret,
            &ts,
            &completed.1,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        header(completed, "x-atelier-signature")
    );

    // Failed, terminated: their events too; a rebuild keeps the webhook.
    job(
        &alice,
        json!({"name": "fails", "custom": {"boot_command": "exit 2"},
                       "notification": {"url": url, "secret": secret, "events": ["JobFailed"]}}),
    )
    .await;
    wait(&alice, "fails", "FAILED").await;
    job(&alice, json!({"name": "stopped", "custom": {"boot_command": "exec sleep 600"},
                       "notification": {"url": url, "secret": secret, "events": ["JobTerminated"]}})).await;
    wait(&alice, "stopped", "RUNNING").await;
    alice
        .post("/v1/training-jobs/stopped/stop", json!({}))
        .await
        .expect_status(200);
    wait(&alice, "stopped", "TERMINATED").await;
    for (name, event) in [("fails", "JobFailed"), ("stopped", "JobTerminated")] {
        eventually(event, LONG, || async {
            let d = alice
                .get(&format!("/v1/training-jobs/{name}/notifications"))
                .await
                .expect_status(200)
                .clone();
            let items = d["items"].as_array().unwrap().clone();
            (items.len() == 1 && items[0]["event"] == event && items[0]["status"] == "delivered")
                .then_some(())
        })
        .await;
    }
    alice
        .post(
            "/v1/training-jobs/hooked/rebuild",
            json!({"name": "hooked-2"}),
        )
        .await
        .expect_status(201);
    wait(&alice, "hooked-2", "COMPLETED").await;
    eventually("the rebuilt job's events", LONG, || async {
        let d = alice
            .get("/v1/training-jobs/hooked-2/notifications")
            .await
            .expect_status(200)
            .clone();
        (d["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["status"] == "delivered")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    task.abort();

    // By default a webhook may not call the gateway's own network.
    let strict = gateway(&[]).await;
    let bob = strict.api(&strict.create_user("bob").await);
    job(
        &bob,
        json!({"name": "inner", "custom": {"boot_command": "true"},
                     "notification": {"url": url, "secret": secret, "events": ["JobCompleted"]}}),
    )
    .await;
    wait(&bob, "inner", "COMPLETED").await;
    let refused = eventually("the delivery refused", LONG, || async {
        let d = bob
            .get("/v1/training-jobs/inner/notifications")
            .await
            .expect_status(200)
            .clone();
        let x = d["items"][0].clone();
        x["last_error"].as_str().is_some().then_some(x)
    })
    .await;
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{refused}"
    );
}
