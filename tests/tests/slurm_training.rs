//! Training jobs on the `slurm` backend against the test cluster (`scripts/slurm.sh`): a
//! 2-worker job is one Slurm job with a task on each node, its workers find each other from
//! Slurm's variables (`RANK`, `WORLD_SIZE`, `MASTER_ADDR` from the node list) and a
//! `torch.distributed` gloo all-reduce gives the sum; its logs and status come back as on
//! the local backends; a worker killed mid-run restarts the job as a new Slurm job that
//! resumes from its checkpoint.
//!
//! Skipped when no cluster is set up, except under CI (`atelier_tests::slurm::cluster`).

use std::time::Duration;

use atelier_tests::Api;
use atelier_tests::s3::S3Server;
use atelier_tests::slurm;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// `torch.distributed` with gloo: each worker adds its rank + 1; both see the sum, and say
/// which Slurm task and node they are.
const ALL_REDUCE: &str = r#"
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank {rank} of {dist.get_world_size()} sum={t.item()} master={os.environ['MASTER_ADDR']} hosts={os.environ['VC_WORKER_HOSTS']}", flush=True)
dist.destroy_process_group()
"#;

async fn wait(api: &Api, name: &str, want: &str) -> Value {
    atelier_tests::training::wait(api, name, want, LONG).await
}

async fn log_of(api: &Api, name: &str, query: &str) -> String {
    atelier_tests::training::log_of(api, name, query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_worker_job_is_one_slurm_job_and_its_gloo_all_reduce_gives_the_sum() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let venv = atelier_tests::training_venv()
        .to_string_lossy()
        .into_owned();
    let gw = cluster
        .gateway(
            slurm::NODE_FLAVOR,
            &[("ATELIER_TRAINING_VENV", venv.as_str())],
        )
        .await;
    let s3 = S3Server::start();
    let code = s3.bucket("code").join("ddp");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("allreduce.py"), ALL_REDUCE).unwrap();
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    let created = alice
        .post(
            "/v1/training-jobs",
            json!({"name": "ddp", "connection": "local", "nodes": 2,
                   "custom": {"code_dir": "obs://code/ddp/", "boot_file": "allreduce.py"}}),
        )
        .await;
    let id = created.expect_status(201)["id"]
        .as_str()
        .expect("the job's id")
        .to_owned();
    wait(&alice, "ddp", "COMPLETED").await;
    for w in 0..2 {
        let log = log_of(&alice, "ddp", &format!("worker={w}")).await;
        assert!(
            log.contains(&format!(
                "rank {w} of 2 sum=3.0 master=127.0.0.1 hosts=127.0.0.1,127.0.0.1"
            )),
            "worker {w}:\n{log}"
        );
    }
    // One Slurm job ran both workers, a task on each node.
    let listed = cluster.run("scontrol", &["show", "job", "-o"]);
    let name = format!("JobName=atelier-train-{}", &id[..8]);
    let ours: Vec<&str> = listed.lines().filter(|l| l.contains(&name)).collect();
    assert_eq!(ours.len(), 1, "{name} in:\n{listed}");
    assert!(
        ours[0].contains("NumNodes=2") && ours[0].contains("NumTasks=2"),
        "{}",
        ours[0]
    );
    assert!(ours[0].contains("NodeList=n[1-2]"), "{}", ours[0]);

    // Killed mid-run: the next attempt is a new Slurm job that resumes from the checkpoint.
    std::fs::create_dir_all(s3.bucket("code").join("ck")).unwrap();
    std::fs::write(
        s3.bucket("code").join("ck/train.py"),
        atelier_tests::TRAINING_CHECKPOINTS,
    )
    .unwrap();
    s3.bucket("out");
    let created = alice
        .post(
            "/v1/training-jobs",
            json!({
                "name": "ck",
                "connection": "local",
                "custom": {"code_dir": "obs://code/ck/", "boot_file": "train.py"},
                "outputs": [{"name": "train_url", "path": "obs://out/ck/", "obtained_from": "environment_variables"}],
                "auto_restart": {"count": 2}
            }),
        )
        .await;
    let ck = created.expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait(&alice, "ck", "RUNNING").await;
    atelier_tests::eventually("step 3", LONG, || async {
        log_of(&alice, "ck", "")
            .await
            .contains("MARK-KILL-ME")
            .then_some(())
    })
    .await;
    assert!(
        atelier_tests::kill_training_python(&ck, "train.py") > 0,
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
    let listed = cluster.run("scontrol", &["show", "job", "-o"]);
    let name = format!("JobName=atelier-train-{}", &ck[..8]);
    assert_eq!(
        listed.lines().filter(|l| l.contains(&name)).count(),
        2,
        "an attempt per Slurm job:\n{listed}"
    );
}
