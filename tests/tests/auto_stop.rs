//! The auto-stop lease on the process backend, with one lease hour lasting a few seconds
//! (`ATELIER_LEASE_HOUR`): the warning comes first, then the stop with its reason (event,
//! status reason, audit row, metric); renew during the warning moves the deadline; the
//! deadline survives a gateway restart, and one that passed while the gateway was down is
//! acted on right after it starts; files survive and the notebook starts again.

use std::time::Duration;

use atelier_tests::{Gateway, eventually};
use serde_json::{Value, json};

/// One lease hour, in seconds, and the warning before a stop.
const HOUR: &str = "6";
const WARNING: &str = "3";

fn parse(t: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t:?}: {e}"))
}

async fn notebook(gw: &Gateway, token: &str, id: &str) -> Value {
    gw.notebook(token, id).await
}

/// Lease events whose detail contains `needle`.
async fn lease_events(gw: &Gateway, token: &str, id: &str, needle: &str) -> usize {
    gw.event_lines(token, id)
        .await
        .iter()
        .filter(|l| l.starts_with("StopNotebookLeaseExpired: ") && l.contains(needle))
        .count()
}

async fn wait_stopped(gw: &Gateway, token: &str, id: &str) -> Value {
    eventually(
        "the notebook to stop by itself",
        Duration::from_secs(60),
        || async {
            let nb = notebook(gw, token, id).await;
            (nb["status"] == "STOPPED").then_some(nb)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_warn_stop_renew_and_survive_restarts() {
    let mut gw = Gateway::start_with(&[
        ("ATELIER_LEASE_HOUR", HOUR),
        ("ATELIER_STOP_WARNING", WARNING),
    ])
    .await;
    assert!(
        gw.log().contains("ATELIER_LEASE_HOUR"),
        "the short lease hour is announced"
    );
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);

    // Bad input names the field and creates nothing.
    for hours in [json!(0), json!(73), json!(1.5)] {
        let r = api
            .post(
                "/v1/notebooks",
                json!({"name": "bad", "auto_stop": {"enabled": true, "duration_hours": hours}}),
            )
            .await;
        r.expect_status(400);
        assert!(r.text.contains("duration_hours"), "{}", r.text);
    }
    let r = api.get("/v1/notebooks?name=bad").await;
    assert_eq!(r.expect_status(200)["items"].as_array().unwrap().len(), 0);

    let id = api
        .post("/v1/notebooks", json!({"name": "lease"}))
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forever = api
        .post(
            "/v1/notebooks",
            json!({"name": "forever", "auto_stop": {"enabled": false}}),
        )
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    gw.wait_status(&alice, &forever, "RUNNING").await;
    let running = gw.wait_status(&alice, &id, "RUNNING").await;
    let auto = &running["auto_stop"];
    assert_eq!(auto["enabled"], true, "{running}");
    assert_eq!(auto["duration_hours"], 1, "{running}");
    assert!(auto["stop_at"].is_string(), "{running}");
    let left = auto["remaining_seconds"].as_i64().unwrap();
    assert!((0..=6).contains(&left), "{running}");
    let nb = notebook(&gw, &alice, &forever).await;
    assert!(nb["auto_stop"]["stop_at"].is_null(), "{nb}");
    std::fs::write(gw.notebook_dir(&id).join("work/keep.txt"), "mine").unwrap();

    // Warned, then stopped, with the reason everywhere it is recorded.
    let stopped = wait_stopped(&gw, &alice, &id).await;
    assert_eq!(
        stopped["status_reason"], "auto-stopped: lease_expired",
        "{stopped}"
    );
    assert!(stopped["auto_stop"]["stop_at"].is_null(), "{stopped}");
    let names = gw.event_lines(&alice, &id).await;
    let warned = names
        .iter()
        .position(|n| n.starts_with("StopNotebookLeaseExpired: will stop at"))
        .unwrap_or_else(|| panic!("no warning in {names:?}"));
    let fired = names
        .iter()
        .position(|n| n.starts_with("StopNotebookLeaseExpired: reason lease_expired"))
        .unwrap_or_else(|| panic!("no stop event in {names:?}"));
    let stop = names
        .iter()
        .rposition(|n| n.starts_with("StopNotebook:"))
        .unwrap_or_else(|| panic!("no StopNotebook in {names:?}"));
    assert!(warned < fired && fired < stop, "{names:?}");
    let audit = gw
        .admin()
        .get("/v1/audit?action=stopNotebook")
        .await
        .expect_status(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    let row = audit
        .iter()
        .find(|a| a["resource_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no audit row in {audit:?}"));
    assert_eq!(row["user"], "atelier", "{row}");
    assert!(
        row["detail"].as_str().unwrap().contains("lease_expired"),
        "{row}"
    );
    let metrics = gw.admin().get("/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    assert!(
        metrics
            .text
            .contains("atelier_notebook_auto_stops_total{reason=\"lease_expired\"} 1"),
        "{}",
        metrics.text
    );
    api.get("/metrics").await.expect_status(403);
    // The notebook without auto-stop kept running; neither can be renewed.
    assert_eq!(notebook(&gw, &alice, &forever).await["status"], "RUNNING");
    let r = api.post_empty(&format!("/v1/notebooks/{id}/renew")).await;
    r.expect_status(409);
    let r = api
        .post_empty(&format!("/v1/notebooks/{forever}/renew"))
        .await;
    r.expect_status(409);
    assert!(r.text.contains("auto-stop off"), "{}", r.text);
    // Files are intact and the notebook starts again, with a lease chosen at start.
    assert_eq!(
        std::fs::read_to_string(gw.notebook_dir(&id).join("work/keep.txt")).unwrap(),
        "mine"
    );
    let r = api
        .post(
            &format!("/v1/notebooks/{id}/start"),
            json!({"auto_stop": {"enabled": true, "duration_hours": 2}}),
        )
        .await;
    r.expect_status(202);
    let running = gw.wait_status(&alice, &id, "RUNNING").await;
    assert_eq!(running["auto_stop"]["duration_hours"], 2, "{running}");
    let first_deadline = parse(running["auto_stop"]["stop_at"].as_str().unwrap());

    // Renew during the warning: the deadline moves by the hours asked for, counted from
    // the old deadline, and the old deadline passes without a stop.
    eventually("the warning", Duration::from_secs(60), || async {
        (lease_events(&gw, &alice, &id, "will stop at").await >= 2).then_some(())
    })
    .await;
    for bad in [
        json!({"hours": 0}),
        json!({"hours": 73}),
        json!({"hours": "x"}),
    ] {
        let r = api.post(&format!("/v1/notebooks/{id}/renew"), bad).await;
        r.expect_status(400);
    }
    let r = api
        .post(&format!("/v1/notebooks/{id}/renew"), json!({"hours": 1}))
        .await;
    let renewed = r.expect_status(200).clone();
    let new_deadline = parse(renewed["auto_stop"]["stop_at"].as_str().unwrap());
    assert_eq!(new_deadline - first_deadline, time::Duration::seconds(6));
    let wait = (first_deadline - time::OffsetDateTime::now_utc()).whole_milliseconds() + 1500;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert_eq!(notebook(&gw, &alice, &id).await["status"], "RUNNING");
    assert!(
        gw.event_lines(&alice, &id)
            .await
            .iter()
            .any(|l| l.starts_with("RenewNotebook: ")),
        "a renew event"
    );
    // The CLI renews too, and shows the deadline.
    let out = gw.cli(&alice, &["notebook", "renew", "lease"], &[]).await;
    out.assert_ok("notebook renew");
    assert!(out.stdout.contains("unless renewed"), "{}", out.stdout);

    // A gateway killed during the countdown keeps the deadline, and a deadline that passed
    // while it was down is acted on right after it starts.
    let before = notebook(&gw, &alice, &id).await["auto_stop"]["stop_at"].clone();
    gw.kill9();
    let deadline = parse(before.as_str().unwrap());
    let wait = (deadline - time::OffsetDateTime::now_utc()).whole_milliseconds() + 1000;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    gw.start_again().await;
    let stopped = wait_stopped(&gw, &alice, &id).await;
    assert_eq!(
        stopped["status_reason"], "auto-stopped: lease_expired",
        "{stopped}"
    );
    api.post_empty(&format!("/v1/notebooks/{id}/start"))
        .await
        .expect_status(202);
    let running = gw.wait_status(&alice, &id, "RUNNING").await;
    let held = running["auto_stop"]["stop_at"].clone();
    gw.kill9();
    gw.start_again().await;
    let after = notebook(&gw, &alice, &id).await;
    assert_eq!(after["auto_stop"]["stop_at"], held, "{after}");
    wait_stopped(&gw, &alice, &id).await;
    assert_eq!(
        std::fs::read_to_string(gw.notebook_dir(&id).join("work/keep.txt")).unwrap(),
        "mine"
    );
}
