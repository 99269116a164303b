//! The Slurm test cluster itself (`scripts/slurm.sh`, docs/slurm.md), before any backend uses
//! it: a job's tasks run on both nodes, `squeue --json` and `scontrol` follow a job from
//! pending to running to its end, a job the cluster can never hold pends with the scheduler's
//! reason, `scancel` ends a running job, and slurmrestd answers on its socket.
//!
//! Skipped when no cluster is set up, except under CI (`atelier_tests::slurm::cluster`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use atelier_tests::slurm::{self, JOB_TIMEOUT, json_state};

/// A scratch dir the test's jobs write to (jobs run as root on this host), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("atelier-slurm-{}", atelier_tests::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn arg(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each task writes the node it runs on to `task-<SLURM_PROCID>`; then the job stays RUNNING
/// until the test has seen it so (the file `release`), for three minutes at most.
const TWO_TASKS: &str = r#"#!/bin/sh
srun sh -c 'echo "$SLURMD_NODENAME" >"$JOB_DIR/task-$SLURM_PROCID"' || exit 2
i=0
while [ ! -e "$JOB_DIR/release" ] && [ "$i" -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
[ -e "$JOB_DIR/release" ]
"#;

#[test]
fn a_two_task_job_runs_one_task_per_node_and_is_followed_from_running_to_completed() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let nodes = cluster.nodes();
    assert!(!nodes.is_empty(), "partition debug has no nodes");
    let spread = nodes.len() >= 2;
    let dir = Scratch::new();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, TWO_TASKS).unwrap();
    let mut args = vec!["-n2", "-J", "atelier-two-tasks"];
    if spread {
        args.push("--ntasks-per-node=1");
    }
    let out = dir.arg("out");
    let export = format!("--export=ALL,JOB_DIR={}", dir.path().display());
    let workdir = dir.path().to_str().unwrap();
    args.extend(["-o", &out, "-D", workdir, &export]);
    args.push(script.to_str().unwrap());
    let job = cluster.sbatch(&args);

    // squeue --json while it pends or runs: it runs once both tasks wrote their file.
    let deadline = Instant::now() + JOB_TIMEOUT;
    let mut seen = Vec::new();
    let running = loop {
        let listed = cluster
            .squeue_job(job.id)
            .unwrap_or_else(|| panic!("squeue --json does not list job {}", job.id));
        let state = json_state(&listed);
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        let tasks_done = (0..2).all(|r| dir.path().join(format!("task-{r}")).is_file());
        if state == "RUNNING" && tasks_done {
            break listed;
        }
        assert!(
            matches!(state.as_str(), "PENDING" | "CONFIGURING" | "RUNNING"),
            "job {} is {state} before the test released it (states seen: {seen:?}); its \
             output: {}",
            job.id,
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "job {} did not run both tasks in {JOB_TIMEOUT:?} (states seen: {seen:?})",
            job.id
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    eprintln!(
        "job {}: squeue --json states {seen:?}, nodes {}",
        job.id, running["nodes"]
    );
    let shown = cluster.job(job.id).expect("scontrol knows the running job");
    assert_eq!(shown.state, "RUNNING", "{shown:?}");

    let ran_on: Vec<String> = (0..2)
        .map(|r| {
            std::fs::read_to_string(dir.path().join(format!("task-{r}")))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    for node in &ran_on {
        assert!(
            names.contains(&node.as_str()),
            "a task ran on {node}, not a node of the cluster ({names:?})"
        );
    }
    if spread {
        assert_ne!(
            ran_on[0], ran_on[1],
            "with --ntasks-per-node=1 the two tasks run on two nodes"
        );
    }

    std::fs::write(dir.path().join("release"), b"").unwrap();
    let done = cluster.wait_job(job.id, "COMPLETED", |j| {
        !matches!(j.state.as_str(), "RUNNING" | "COMPLETING")
    });
    assert_eq!(
        done.state,
        "COMPLETED",
        "{done:?}; its output: {}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    assert_eq!(done.fields.get("ExitCode").map(String::as_str), Some("0:0"));
    // Finished jobs stay listed (MinJobAge), with their final state.
    assert_eq!(cluster.listed_state(job.id), "COMPLETED");
}

#[test]
fn a_job_asking_more_cpus_than_the_cluster_has_pends_with_the_schedulers_reason() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let total: u32 = cluster.nodes().iter().map(|(_, cpus)| cpus).sum();
    let tasks = (total + 1).to_string();
    let job = cluster.sbatch(&["-n", &tasks, "-o", "/dev/null", "--wrap", "true"]);
    let pending = cluster.wait_job(job.id, "PENDING with a reason", |j| {
        j.state == "PENDING" && !j.reason.is_empty() && j.reason != "None"
    });
    eprintln!(
        "job {} ({tasks} tasks on a cluster of {total} CPUs) pends: Reason={}",
        job.id, pending.reason
    );
    let listed = cluster
        .squeue_job(job.id)
        .expect("squeue --json lists the pending job");
    assert_eq!(json_state(&listed), "PENDING");
    assert_eq!(
        listed["state_reason"].as_str(),
        Some(pending.reason.as_str()),
        "squeue and scontrol give the same reason"
    );
    assert_eq!(pending.nodes, "", "a pending job holds no nodes");
}

#[test]
fn scancel_ends_a_running_job_as_cancelled() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let job = cluster.sbatch(&["-n1", "-o", "/dev/null", "--wrap", "sleep 600"]);
    let running = cluster.wait_job(job.id, "RUNNING", |j| j.state != "PENDING");
    assert_eq!(running.state, "RUNNING", "{running:?}");
    assert!(!running.nodes.is_empty(), "{running:?}");
    cluster.run("scancel", &[&job.id.to_string()]);
    let ended = cluster.wait_job(job.id, "ended", |j| {
        !matches!(j.state.as_str(), "RUNNING" | "COMPLETING")
    });
    assert_eq!(ended.state, "CANCELLED", "{ended:?}");
    assert_eq!(cluster.listed_state(job.id), "CANCELLED");
}

#[test]
fn slurmrestd_answers_on_its_socket_and_lists_the_nodes() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    if cluster.rest_socket.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ATELIER_SLURM_REST is not set: scripts/slurm.sh up exports it when slurmrestd runs"
        );
        eprintln!("skipped: ATELIER_SLURM_REST is not set");
        return;
    }
    let (status, ping) = cluster.rest_get("/slurm/v0.0.38/ping");
    assert_eq!(status, 200, "{ping}");
    assert_eq!(ping["pings"][0]["ping"], "UP", "{ping}");
    let (status, nodes) = cluster.rest_get("/slurm/v0.0.38/nodes");
    assert_eq!(status, 200, "{nodes}");
    let mut listed: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes list: {nodes}"))
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = cluster.nodes().into_iter().map(|(n, _)| n).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
}
