//! Notebooks on the `slurm` backend against the test cluster (`scripts/slurm.sh`): a
//! notebook is a Slurm job whose runtime connects back through the tunnel; JupyterLab and a
//! kernel answer through the gateway, SSH and scp work through the front door, atelier.file
//! reaches the gateway, a gateway killed with SIGKILL and started again takes the running
//! notebook back, stop ends the job; a notebook whose job pends on a full cluster shows the
//! scheduler's reason and starts when room frees; a job cancelled from outside marks its
//! notebook stopped with an event that says so, and so does a preempted one (its work dir
//! untouched); delete removes its files.
//!
//! A gateway on the process backend with a flavor on `slurm` runs each notebook where its
//! flavor says and keeps it there.
//!
//! The tests take turns (the cluster has 4 CPUs and one stage fills it).
//! Skipped when no cluster is set up, except under CI (`atelier_tests::slurm::cluster`).

use std::process::Command;
use std::time::Duration;

use atelier_tests::slurm::{self, Cluster};
use atelier_tests::{Gateway, Kernel, eventually, free_port, ssh_client_args, write_private_key};
use serde_json::json;

const FLAVORS: &str = r#"
[[flavors]]
id = "slurm-1-2"
type = "cpu"
vcpus = 1
memory_gib = 2
description = "1 CPU, 2 GB: fits a test node"
"#;

/// The cluster, one test at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the cluster and a busy 2-core machine may take for a step.
const STEP: Duration = Duration::from_secs(240);

async fn gateway(cluster: &Cluster) -> Gateway {
    cluster.gateway(FLAVORS, &[]).await
}

/// The Slurm job ids named by the notebook's `Scheduled` events, oldest first.
async fn scheduled_jobs(gw: &Gateway, token: &str, id: &str) -> Vec<u64> {
    gw.event_lines(token, id)
        .await
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("Scheduled: Slurm job ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

async fn last_job(gw: &Gateway, token: &str, id: &str) -> u64 {
    match scheduled_jobs(gw, token, id).await.last() {
        Some(n) => *n,
        None => panic!(
            "no Scheduled event naming a Slurm job: {:#?}",
            gw.event_lines(token, id).await
        ),
    }
}

/// A kernel that answers through the gateway and the tunnel (after a gateway restart the
/// runtime takes up to its redial backoff to connect again).
async fn kernel_answers(gw: &Gateway, token: &str, id: &str) {
    let api = gw.api(token);
    let mut k = eventually("a kernel through the tunnel", STEP, || {
        let (api, id) = (&api, id);
        async move {
            let r = api.get(&format!("/nb/{id}/api/status")).await;
            if r.status != 200 {
                return None;
            }
            Some(Kernel::start(api, id).await)
        }
    })
    .await;
    let out = k.run("print(6 * 7)").await;
    assert_eq!(out.trim(), "42", "{out}");
}

/// A Slurm `TimeLimit` (`[D-]HH:MM:SS`) in minutes.
fn minutes(limit: &str) -> u64 {
    let (days, rest) = limit.split_once('-').unwrap_or(("0", limit));
    let p: Vec<u64> = rest.split(':').map(|x| x.parse().unwrap()).collect();
    days.parse::<u64>().unwrap() * 1440 + p[0] * 60 + p[1] + u64::from(p[2] > 0)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("running an OpenSSH client");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebooks_run_as_slurm_jobs_reached_through_the_tunnel() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let _turn = CLUSTER.lock().await;
    let mut gw = gateway(&cluster).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let dir = gw.data_dir.join("ssh-client");
    std::fs::create_dir_all(&dir).unwrap();
    let r = api.post("/v1/keypairs", json!({"name": "k1"})).await;
    let key = write_private_key(
        &dir,
        "k1.pem",
        r.expect_status(201)["private_key"].as_str().unwrap(),
    );

    // Create: RUNNING, with the job's node in its events.
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "remote", "flavor": "slurm-1-2",
                   "ssh": {"enabled": true, "key_pairs": ["k1"]}}),
        )
        .await;
    let id = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    gw.wait_status(&alice, &id, "RUNNING").await;
    let job = last_job(&gw, &alice, &id).await;
    let seen = cluster.job(job).expect("the notebook's job");
    assert_eq!(seen.state, "RUNNING", "{seen:?}");
    assert!(
        seen.fields
            .get("JobName")
            .is_some_and(|n| n.starts_with("atelier-nb-")),
        "{seen:?}"
    );
    assert_eq!(seen.fields.get("NumCPUs").map(String::as_str), Some("1"));

    // JupyterLab and a kernel through the gateway and the tunnel.
    kernel_answers(&gw, &alice, &id).await;
    // atelier.file reaches the gateway over the agent's link (through the tunnel): alice
    // has no storage connection, which the gateway says.
    let mut k = Kernel::start(&api, &id).await;
    let out = k
        .run("import atelier.file as af\ntry:\n    af.exists('obs://files/k')\nexcept Exception as e:\n    print(type(e).__name__, e)")
        .await;
    assert!(out.contains("no storage connection"), "{out}");
    drop(k);

    // SSH and scp through the front door.
    let args = ssh_client_args(&dir.join("known_hosts"), &key);
    let port = gw.ssh_addr.port().to_string();
    let (ok, out) = run(Command::new("ssh")
        .args(&args)
        .args(["-p", &port])
        .arg(format!("remote@{}", gw.ssh_addr.ip()))
        .arg("echo on-the-node; pwd"));
    assert!(ok, "ssh: {out}");
    assert!(out.contains("on-the-node\n/home/ma-user/work"), "{out}");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = dir.join("payload.bin");
    std::fs::write(&local, &payload).unwrap();
    let (ok, out) = run(Command::new("scp")
        .args(&args)
        .args(["-P", &port])
        .arg(&local)
        .arg(format!(
            "remote@{}:/home/ma-user/work/payload.bin",
            gw.ssh_addr.ip()
        )));
    assert!(ok, "scp up: {out}");
    let back = dir.join("back.bin");
    let (ok, out) = run(Command::new("scp")
        .args(&args)
        .args(["-P", &port])
        .arg(format!(
            "remote@{}:/home/ma-user/work/payload.bin",
            gw.ssh_addr.ip()
        ))
        .arg(&back));
    assert!(ok, "scp down: {out}");
    assert!(
        std::fs::read(&back).unwrap() == payload,
        "scp round trip changed the file"
    );

    // The gateway killed and started again takes the running job back.
    gw.kill9();
    gw.start_again().await;
    kernel_answers(&gw, &alice, &id).await;
    let nb = gw.notebook(&alice, &id).await;
    assert_eq!(nb["status"], "RUNNING", "{nb}");
    assert_eq!(cluster.job(job).expect("job").state, "RUNNING");
    assert_eq!(last_job(&gw, &alice, &id).await, job, "not launched again");

    // The job's time limit is the auto-stop lease and a margin; a renewal raises it.
    let limit = |j: &slurm::Job| minutes(j.fields.get("TimeLimit").map_or("", String::as_str));
    let before = limit(&cluster.job(job).expect("job"));
    let nb = gw.notebook(&alice, &id).await;
    assert_eq!(nb["auto_stop"]["enabled"], true, "{nb}");
    assert_eq!(
        before,
        nb["auto_stop"]["duration_hours"].as_u64().unwrap() * 60 + 10
    );
    api.post(&format!("/v1/notebooks/{id}/renew"), json!({"hours": 2}))
        .await
        .expect_status(200);
    let after = limit(&cluster.job(job).expect("job"));
    assert!(
        after >= before + 110,
        "time limit {before} -> {after} minutes"
    );

    // Stop ends the job; the work dir stays.
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "STOPPED").await;
    let ended = cluster.wait_job(job, "the stopped notebook's job to end", |j| {
        !matches!(j.state.as_str(), "RUNNING" | "COMPLETING" | "PENDING")
    });
    assert!(
        matches!(ended.state.as_str(), "COMPLETED" | "CANCELLED"),
        "{ended:?}"
    );

    // Start on a full cluster: queued with the scheduler's reason, running once room frees.
    let blocker = cluster.sbatch(&["-N2", "-n4", "-J", "atelier-blocker", "--wrap", "sleep 600"]);
    cluster.wait_job(blocker.id, "the blocker to run", |j| j.state == "RUNNING");
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    let queued = eventually("a Queued event with Slurm's reason", STEP, || {
        let (gw, alice, id) = (&gw, &alice, &id);
        async move {
            gw.event_lines(alice, id)
                .await
                .into_iter()
                .find(|l| l.contains("Queued") && l.contains("Slurm: Resources"))
        }
    })
    .await;
    assert!(queued.contains("waiting for resources"), "{queued}");
    let nb = gw.notebook(&alice, &id).await;
    assert_eq!(nb["status"], "STARTING", "{nb}");
    drop(blocker);
    gw.wait_status(&alice, &id, "RUNNING").await;
    let second = last_job(&gw, &alice, &id).await;
    assert_ne!(second, job);
    // The work dir survived the stop.
    let out = String::from_utf8_lossy(
        &Command::new("ssh")
            .args(&args)
            .args(["-p", &port])
            .arg(format!("remote@{}", gw.ssh_addr.ip()))
            .arg("wc -c < /home/ma-user/work/payload.bin")
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert_eq!(out.trim(), payload.len().to_string());

    // Cancelled from outside: stopped, with an event that says so.
    cluster.run("scancel", &[&second.to_string()]);
    let nb = gw.wait_status(&alice, &id, "STOPPED").await;
    assert!(
        nb["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled outside Atelier")),
        "{nb}"
    );
    let lines = gw.event_lines(&alice, &id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("JupyterProcessKilled")
                && l.contains(&format!("Slurm job {second}"))),
        "{lines:#?}"
    );

    // Preempted by a job of a partition with a higher priority tier: stopped, with an event
    // that says so, and the work dir untouched.
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "RUNNING").await;
    let third = last_job(&gw, &alice, &id).await;
    let urgent = cluster.sbatch(&[
        "-p",
        "urgent",
        "-n4",
        "-J",
        "atelier-urgent",
        "--wrap",
        "sleep 600",
    ]);
    let nb = gw.wait_status(&alice, &id, "STOPPED").await;
    assert!(
        nb["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("Slurm job {third}")) && r.contains("preempted")),
        "{nb}"
    );
    assert_eq!(cluster.job(third).expect("job").state, "PREEMPTED");
    drop(urgent);
    let shared = gw.data_dir.join("slurm/notebooks").join(&id);
    assert_eq!(
        std::fs::read(shared.join("work/payload.bin")).unwrap(),
        payload,
        "the preempted notebook's work dir changed"
    );

    // Delete removes its files from the shared dir.
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&alice, &id).await;
    assert!(!shared.exists(), "{} is still there", shared.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flavor_on_slurm_runs_beside_the_default_backend() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let _turn = CLUSTER.lock().await;
    let tunnel = format!("127.0.0.1:{}", free_port());
    let conf = cluster.conf.to_string_lossy().into_owned();
    let flavors = "[[flavors]]\nid = \"here\"\ntype = \"cpu\"\nvcpus = 1\nmemory_gib = 2\n\n\
         [[flavors]]\nid = \"cluster\"\ntype = \"cpu\"\nvcpus = 1\nmemory_gib = 2\n\
         backend = \"slurm\"\nslurm = { partition = \"debug\" }\n";
    let mut gw = Gateway::start_with_config(
        flavors,
        &[
            ("ATELIER_TUNNEL_ADDR", tunnel.as_str()),
            ("ATELIER_SLURM_CONF", conf.as_str()),
        ],
    )
    .await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let mut ids = Vec::new();
    for flavor in ["here", "cluster"] {
        let r = api
            .post("/v1/notebooks", json!({"name": flavor, "flavor": flavor}))
            .await;
        ids.push(r.expect_status(201)["id"].as_str().unwrap().to_owned());
    }
    let (here, there) = (ids[0].clone(), ids[1].clone());
    for id in [&here, &there] {
        gw.wait_status(&alice, id, "RUNNING").await;
    }
    // The cluster's notebook is a Slurm job; the other runs on this host.
    let job = last_job(&gw, &alice, &there).await;
    assert_eq!(cluster.job(job).expect("job").state, "RUNNING");
    assert!(scheduled_jobs(&gw, &alice, &here).await.is_empty());
    assert!(
        gw.data_dir
            .join("notebooks")
            .join(&here)
            .join("work")
            .is_dir()
    );
    assert!(
        gw.data_dir
            .join("slurm/notebooks")
            .join(&there)
            .join("work")
            .is_dir()
    );
    // Its files are where its backend is: a flavor of the other backend is refused.
    let r = api
        .patch(
            &format!("/v1/notebooks/{here}"),
            json!({"flavor": "cluster"}),
        )
        .await;
    let msg = r.expect_error(409, "conflict");
    assert!(
        msg.contains("slurm backend") && msg.contains("process backend"),
        "{msg}"
    );
    // Both answer, and both again after the gateway is killed and started again.
    for round in 0..2 {
        for id in [&here, &there] {
            kernel_answers(&gw, &alice, id).await;
        }
        if round == 0 {
            gw.kill9();
            gw.start_again().await;
        }
    }
    for id in [&here, &there] {
        api.delete(&format!("/v1/notebooks/{id}"))
            .await
            .expect_status(202);
        gw.wait_gone(&alice, id).await;
    }
    assert!(!gw.data_dir.join("slurm/notebooks").join(&there).exists());
    let ended = cluster.wait_job(job, "the deleted notebook's job to end", |j| {
        !matches!(j.state.as_str(), "RUNNING" | "COMPLETING" | "PENDING")
    });
    assert_ne!(ended.state, "RUNNING");
}
