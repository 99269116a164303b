//! Idle stops on the process backend with a timeout of seconds: a tab that only polls (and
//! reconnects, and pings) is idle; a kernel busy in a silent cell after its tab closed is
//! not; an open SSH session with no traffic is idle, a `nohup` command burning CPU after
//! its client left is not. Each stop comes after a warning and says why.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atelier_tests::{Gateway, Kernel, eventually};
use serde_json::{Value, json};

const IDLE: i64 = 6;

fn env() -> [(&'static str, &'static str); 2] {
    [
        ("ATELIER_STOP_WARNING", "3"),
        // An idle Jupyter server answering a polling tab stays far below this.
        ("ATELIER_IDLE_CPU_PERCENT", "20"),
    ]
}

async fn notebook(gw: &Gateway, token: &str, id: &str) -> Value {
    gw.notebook(token, id).await
}

async fn event_lines(gw: &Gateway, token: &str, id: &str) -> Vec<String> {
    gw.event_lines(token, id).await
}

/// The notebook was stopped as idle, after a warning.
async fn assert_idle_stop(gw: &Gateway, token: &str, id: &str) {
    let nb = notebook(gw, token, id).await;
    assert_eq!(nb["status"], "STOPPED", "{nb}");
    assert_eq!(nb["status_reason"], "auto-stopped: idle", "{nb}");
    let lines = event_lines(gw, token, id).await;
    let warned = lines
        .iter()
        .position(|l| l.starts_with("StopNotebookResourceIdle: will stop at"))
        .unwrap_or_else(|| panic!("no warning in {lines:?}"));
    let fired = lines
        .iter()
        .position(|l| l.starts_with("StopNotebookResourceIdle: reason idle"))
        .unwrap_or_else(|| panic!("no idle stop in {lines:?}"));
    assert!(warned < fired, "{lines:?}");
    assert!(lines[fired].contains("last activity: proxy"), "{lines:?}");
}

async fn create(gw: &Gateway, token: &str, body: Value) -> String {
    let id = gw
        .api(token)
        .post("/v1/notebooks", body)
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    gw.wait_status(token, &id, "RUNNING").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_tab_is_idle_and_a_busy_kernel_is_not() {
    let gw = Gateway::start_with(&env()).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    // A little longer than the other cases: three notebooks start here, one after another
    // on a busy machine, and each is idle from the moment it runs.
    let idle = IDLE + 4;
    let auto = json!({"enabled": false, "idle_timeout_seconds": idle});
    for bad in [json!(-1), json!(1_000_000_000), json!("x")] {
        let r = api
            .post(
                "/v1/notebooks",
                json!({"name": "bad", "auto_stop": {"enabled": false, "idle_timeout_seconds": bad}}),
            )
            .await;
        r.expect_status(400);
        assert!(r.text.contains("idle_timeout_seconds"), "{}", r.text);
    }
    // Created together, so they become RUNNING at about the same time (each is idle from
    // then on until something happens).
    let mut ids = Vec::new();
    for name in ["busy", "spin", "poll"] {
        let r = api
            .post("/v1/notebooks", json!({"name": name, "auto_stop": auto}))
            .await;
        ids.push(r.expect_status(201)["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        gw.wait_status(&alice, id, "RUNNING").await;
    }
    let (busy, spin, poll) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let nb = notebook(&gw, &alice, &busy).await;
    assert_eq!(nb["auto_stop"]["idle_timeout_seconds"], idle, "{nb}");

    // A cell that sleeps (no output, little CPU), then its tab is closed.
    let mut k = Kernel::start(&api, &busy).await;
    k.start_execute("import time; time.sleep(25)").await;
    let cell_started = Instant::now();
    drop(k);
    // A print-less CPU loop in another notebook, no client connected either.
    let mut k = Kernel::start(&api, &spin).await;
    k.start_execute("import time\nt = time.time()\nwhile time.time() - t < 25:\n    pass")
        .await;
    drop(k);

    // A tab that only does what an open JupyterLab does by itself.
    let mut tab = Some(Kernel::start(&api, &poll).await);
    let kernel_id = tab.as_ref().unwrap().id.clone();
    let mut round = 0;
    let stopped = loop {
        round += 1;
        for path in [
            "api/kernels",
            "api/sessions",
            "api/contents",
            "api/terminals",
        ] {
            let _ = api.get(&format!("/nb/{poll}/{path}")).await;
        }
        if let Some(t) = tab.as_mut() {
            t.send("kernel_info_request", json!({})).await;
            t.ping().await;
        }
        if round % 3 == 0 {
            // A reconnect, as after a network blip.
            drop(tab.take());
            match Kernel::try_connect(&api, &poll, &kernel_id).await {
                Ok(k) => tab = Some(k),
                Err(_) => break notebook(&gw, &alice, &poll).await,
            }
        }
        let nb = notebook(&gw, &alice, &poll).await;
        if nb["status"] != "RUNNING" {
            break nb;
        }
        assert!(
            round < 90,
            "the polling tab kept the notebook running: {nb}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    drop(tab);
    assert_ne!(stopped["status"], "RUNNING");
    eventually("poll to be STOPPED", Duration::from_secs(60), || async {
        (notebook(&gw, &alice, &poll).await["status"] == "STOPPED").then_some(())
    })
    .await;
    assert_idle_stop(&gw, &alice, &poll).await;

    // Meanwhile the busy kernel kept its notebook running, and the API says why.
    if cell_started.elapsed() < Duration::from_secs(20) {
        let nb = notebook(&gw, &alice, &busy).await;
        assert_eq!(nb["status"], "RUNNING", "a busy kernel is work: {nb}");
        let nb = notebook(&gw, &alice, &spin).await;
        assert_eq!(
            nb["status"], "RUNNING",
            "a kernel in a CPU loop is work: {nb}"
        );
        let act = api
            .get(&format!("/v1/notebooks/{busy}/activity"))
            .await
            .expect_status(200)
            .clone();
        assert!(act["sources"]["kernel"].is_string(), "{act}");
        assert_eq!(act["idle_timeout_seconds"], idle, "{act}");
        assert!(act["idle_stop_at"].is_string(), "{act}");
    }
    // Once the cell is done, nothing keeps it: stopped as idle.
    eventually(
        "busy to be stopped after its cell",
        Duration::from_secs(90),
        || async { (notebook(&gw, &alice, &busy).await["status"] == "STOPPED").then_some(()) },
    )
    .await;
    assert!(cell_started.elapsed() >= Duration::from_secs(25));
    assert_idle_stop(&gw, &alice, &busy).await;
    eventually(
        "spin to be stopped after its loop",
        Duration::from_secs(90),
        || async { (notebook(&gw, &alice, &spin).await["status"] == "STOPPED").then_some(()) },
    )
    .await;
    assert_idle_stop(&gw, &alice, &spin).await;
    let metrics = gw.admin().get("/metrics").await;
    assert!(
        metrics
            .text
            .contains("atelier_notebook_auto_stops_total{reason=\"idle\"} 3"),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_work_keeps_a_notebook_and_an_idle_session_does_not() {
    let gw = Gateway::start_with(&env()).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let dir = gw.data_dir.join("ssh-client");
    std::fs::create_dir_all(&dir).unwrap();
    let r = api.post("/v1/keypairs", json!({"name": "k"})).await;
    let key = dir.join("k.pem");
    std::fs::write(&key, r.expect_status(201)["private_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let id = create(
        &gw,
        &alice,
        json!({"name": "remote", "ssh": {"enabled": true, "key_pairs": ["k"]},
               "auto_stop": {"enabled": false, "idle_timeout_seconds": IDLE}}),
    )
    .await;
    let ssh = |extra: &[&str], command: &str| {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg("-i")
        .arg(&key)
        .args(["-p", &gw.ssh_addr.port().to_string()])
        .args(extra)
        .arg(format!("remote@{}", gw.ssh_addr.ip()))
        .arg(command);
        c
    };
    // CPU-bound work for 20 s, started with nohup; the client leaves at once.
    let out = ssh(
        &[],
        "nohup timeout 20 python3 -c 'while True: pass' >/dev/null 2>&1 & echo started",
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "started");
    let work_started = Instant::now();
    // An interactive session left open, typing nothing.
    let mut idle_session = ssh(&["-tt"], "")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // While the work runs (and well past the idle timeout) the notebook stays.
    tokio::time::sleep(Duration::from_secs(14)).await;
    if work_started.elapsed() < Duration::from_secs(18) {
        let nb = notebook(&gw, &alice, &id).await;
        assert_eq!(nb["status"], "RUNNING", "CPU work is work: {nb}");
        let act = api
            .get(&format!("/v1/notebooks/{id}/activity"))
            .await
            .expect_status(200)
            .clone();
        assert!(act["sources"]["cpu"].is_string(), "{act}");
    }
    // After it, the open but silent session does not keep the notebook: stopped as idle.
    eventually(
        "the notebook to stop as idle",
        Duration::from_secs(90),
        || async { (notebook(&gw, &alice, &id).await["status"] == "STOPPED").then_some(()) },
    )
    .await;
    assert!(work_started.elapsed() >= Duration::from_secs(20));
    assert_idle_stop(&gw, &alice, &id).await;
    let _ = idle_session.kill();
    let _ = idle_session.wait();
    // Files survive and the notebook starts again.
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "RUNNING").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_a_terminal_is_activity_and_an_open_terminal_is_not() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let gw = Gateway::start_with(&env()).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let id = create(
        &gw,
        &alice,
        json!({"name": "term", "auto_stop": {"enabled": false, "idle_timeout_seconds": IDLE}}),
    )
    .await;
    let r = api
        .post(&format!("/nb/{id}/api/terminals"), json!({}))
        .await;
    let name = r.expect_status(200)["name"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/nb/{id}/terminals/websocket/{name}",
        api.base().replacen("http://", "ws://", 1)
    );
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // Drain what the terminal prints, so it never blocks.
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });

    // Typing a little every two seconds, for well over the idle timeout.
    let typing = Instant::now();
    while typing.elapsed() < Duration::from_secs(16) {
        tx.send(Message::text(r#"["stdin","echo hi\r"]"#))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            notebook(&gw, &alice, &id).await["status"],
            "RUNNING",
            "stopped while the user was typing"
        );
    }
    // Then only resizes and pings on the open terminal: idle.
    let quiet = Instant::now();
    loop {
        let _ = tx
            .send(Message::text(r#"["set_size",24,80,600,800]"#))
            .await;
        let _ = tx.send(Message::Ping(Vec::new().into())).await;
        if notebook(&gw, &alice, &id).await["status"] == "STOPPED" {
            break;
        }
        assert!(
            quiet.elapsed() < Duration::from_secs(60),
            "an open, quiet terminal kept the notebook running"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_idle_stop(&gw, &alice, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_deadline_survives_a_gateway_restart() {
    let mut gw = Gateway::start_with(&env()).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let id = create(
        &gw,
        &alice,
        json!({"name": "durable", "auto_stop": {"enabled": false, "idle_timeout_seconds": 40}}),
    )
    .await;
    // A user action (a file saved through the proxy), written to the store within seconds.
    api.put(
        &format!("/nb/{id}/api/contents/note.txt"),
        json!({"type": "file", "format": "text", "content": "hello"}),
    )
    .await
    .expect_status(201);
    let path = format!("/v1/notebooks/{id}/activity");
    let before = eventually("the activity to be stored", Duration::from_secs(60), || {
        let (api, path) = (&api, &path);
        async move {
            let a = api.get(path).await.json.clone();
            let stored = api
                .get(&format!("/v1/notebooks/{}", a["notebook_id"].as_str()?))
                .await;
            (a["sources"]["proxy"].is_string() && stored.json["last_activity_at"].is_string())
                .then_some(a)
        }
    })
    .await;
    gw.kill9();
    gw.start_again().await;
    let api = gw.api(&alice);
    let after = api.get(&path).await.expect_status(200).clone();
    assert_eq!(
        after["sources"]["proxy"], before["sources"]["proxy"],
        "{after}"
    );
    assert_eq!(after["idle_stop_at"], before["idle_stop_at"], "{after}");
    assert_eq!(notebook(&gw, &alice, &id).await["status"], "RUNNING");
}
