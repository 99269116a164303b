//! Notebooks outlive the gateway: a crashed (SIGKILL) or restarted gateway re-attaches to the
//! running servers and their kernels; a notebook whose processes died is marked STOPPED with
//! a JupyterProcessKilled event, whether it died while the gateway was down or up.

use std::time::Duration;

use atelier_tests::{Gateway, Kernel, eventually, process_alive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_crash_keeps_notebooks_and_kernels() {
    let mut gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "survivor").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let before = gw.runtime_status(&id);
    let runtime_pid = before["runtime_pid"].as_i64().expect("runtime_pid") as i32;
    let jupyter_token = gw.jupyter_token(&id);

    let mut kernel = Kernel::start(&gw.api(&alice), &id).await;
    kernel.run("x = 41").await;
    let kernel_id = kernel.id.clone();
    drop(kernel);

    // Crash the gateway; the notebook keeps running without it.
    let old_pid = gw.pid();
    gw.kill9();
    assert!(
        !process_alive(old_pid as i32),
        "the gateway survived SIGKILL"
    );
    assert!(
        process_alive(runtime_pid),
        "the notebook runtime died with the gateway"
    );

    gw.start_again().await;
    let api = gw.api(&alice);
    let r = api.get(&format!("/v1/notebooks/{id}")).await;
    assert_eq!(r.expect_status(200)["status"], "RUNNING", "{}", r.text);
    assert_eq!(
        r.json["status_reason"],
        serde_json::Value::Null,
        "{}",
        r.text
    );
    // The same server, not a relaunch.
    assert_eq!(gw.runtime_status(&id)["runtime_pid"], before["runtime_pid"]);
    assert_eq!(gw.jupyter_token(&id), jupyter_token);
    let kernels = api.get(&format!("/nb/{id}/api/kernels")).await;
    assert!(
        kernels
            .expect_status(200)
            .as_array()
            .is_some_and(|ks| ks.iter().any(|k| k["id"] == kernel_id.as_str())),
        "kernel {kernel_id} is gone: {}",
        kernels.text
    );
    // The same kernel, with its state.
    let mut kernel = Kernel::connect(&api, &id, &kernel_id).await;
    assert_eq!(kernel.run("print(x + 1)").await, "42\n");
    drop(kernel);
    let events = gw.event_names(&alice, &id).await;
    assert!(
        !events
            .iter()
            .any(|e| e == "JupyterProcessKilled" || e == "NotebookUnhealthy"),
        "{events:?}"
    );

    // A graceful restart re-attaches too.
    gw.restart().await;
    let api = gw.api(&alice);
    let r = api.get(&format!("/v1/notebooks/{id}")).await;
    assert_eq!(r.expect_status(200)["status"], "RUNNING", "{}", r.text);
    let mut kernel = Kernel::connect(&api, &id, &kernel_id).await;
    assert_eq!(kernel.run("x += 1; print(x)").await, "42\n");
}

/// SIGKILLs a notebook's runtime and Jupyter's process group, and waits until they are dead.
async fn kill_notebook(gw: &Gateway, id: &str) {
    let st = gw.runtime_status(id);
    let runtime = st["runtime_pid"].as_i64().expect("runtime_pid") as i32;
    let child = st["child_pid"].as_i64().expect("child_pid") as i32;
    assert!(runtime > 1 && child > 1, "{st}");
    assert!(process_alive(runtime), "runtime {runtime} is not running");
    // SAFETY: plain syscalls on the pids the runtime reported, just checked alive.
    unsafe {
        libc::kill(runtime, libc::SIGKILL);
        libc::kill(-child, libc::SIGKILL);
    }
    eventually(
        "the notebook's processes to die",
        Duration::from_secs(30),
        || async { (!process_alive(runtime) && !process_alive(child)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_notebooks_are_marked_stopped() {
    let mut gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "fragile").await;
    gw.wait_status(&alice, &id, "RUNNING").await;

    // Killed while the gateway is down: the next gateway finds it STOPPED before it answers
    // anything, so it is never seen RUNNING.
    gw.kill9();
    kill_notebook(&gw, &id).await;
    gw.start_again().await;
    let api = gw.api(&alice);
    let r = api.get(&format!("/v1/notebooks/{id}")).await;
    assert_eq!(r.expect_status(200)["status"], "STOPPED", "{}", r.text);
    let reason = r.json["status_reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "no status_reason: {}", r.text);
    let events = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let last = events.expect_status(200)["items"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("events");
    assert_eq!(last["event"], "JupyterProcessKilled", "{}", events.text);
    assert_eq!(last["severity"], "Critical", "{}", events.text);
    api.get(&format!("/nb/{id}/lab"))
        .await
        .expect_error(409, "conflict");

    // It starts again…
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "RUNNING").await;
    api.get(&format!("/nb/{id}/api/status"))
        .await
        .expect_status(200);

    // …and killed while the gateway runs, the health loop notices (it runs every 10 s).
    kill_notebook(&gw, &id).await;
    let nb = gw.wait_status(&alice, &id, "STOPPED").await;
    assert!(
        !nb["status_reason"].as_str().unwrap_or_default().is_empty(),
        "{nb}"
    );
    let events = gw.event_names(&alice, &id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "JupyterProcessKilled")
            .count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("JupyterProcessKilled")
    );
    api.get(&format!("/nb/{id}/lab"))
        .await
        .expect_error(409, "conflict");
}
