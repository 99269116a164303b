//! Workflow schedules and webhook triggers (`/v1/workflows/{wf}/schedule`,
//! `…/trigger-token`, `POST /v1/workflows/{id}/trigger`; `atelier workflow schedule|
//! trigger-token`): schedules fire runs as their owner and record each firing, a firing
//! while a run is under way is skipped and recorded, disabling or deleting stops them, a
//! firing missed while the gateway was down runs once after it is back; a trigger token
//! starts its own workflow's runs and authenticates nothing else.
//!
//! The gateways run with `ATELIER_CRON_SECONDS` (a 6th, leading seconds field), so the
//! schedules fire every second or two instead of every minute. The workflows have a
//! condition step only: no plugin is needed. A run that waits (a delayed parameter) is under
//! way until it is given its value.

use std::time::Duration;

use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, eventually};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const LONG: Duration = Duration::from_secs(180);

async fn gateway() -> Gateway {
    Gateway::start_with(&[("ATELIER_CRON_SECONDS", "true")]).await
}

/// A workflow whose one step compares `x` with 0.
fn plain(name: &str) -> Value {
    json!({
        "name": name,
        "parameters": [{"name": "x", "placeholder_type": "INT", "default": 1}],
        "steps": [{"name": "c", "step_type": "condition", "properties": {"conditions": [
            {"condition_type": "GT", "left": {"$placeholder": "x"}, "right": 0}]}}]
    })
}

/// A workflow whose step waits for the delayed parameter `y`: its runs stay under way
/// (AWAITING_INPUT) until proceed.
fn waiting(name: &str) -> Value {
    json!({
        "name": name,
        "parameters": [{"name": "x", "placeholder_type": "INT", "default": 1},
                       {"name": "y", "placeholder_type": "INT", "delay": true}],
        "steps": [{"name": "c", "step_type": "condition", "properties": {"conditions": [
            {"condition_type": "GT", "left": {"$placeholder": "y"}, "right": {"$placeholder": "x"}}]}}]
    })
}

async fn create(api: &Api, def: Value) -> String {
    let r = api.post("/v1/workflows", def).await;
    r.expect_status(201)["id"].as_str().unwrap().to_string()
}

async fn runs(api: &Api, wf: &str) -> Vec<Value> {
    api.get(&format!("/v1/workflows/{wf}/runs"))
        .await
        .expect_status(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn schedule(api: &Api, wf: &str) -> Value {
    api.get(&format!("/v1/workflows/{wf}/schedule"))
        .await
        .expect_status(200)
        .clone()
}

fn firings(s: &Value) -> Vec<Value> {
    s["firings"].as_array().unwrap().clone()
}

/// Until the schedule's firings satisfy `check`.
async fn firings_until(api: &Api, wf: &str, what: &str, check: impl Fn(&[Value]) -> bool) {
    eventually(what, LONG, || async {
        let f = firings(&schedule(api, wf).await);
        check(&f).then_some(())
    })
    .await;
}

async fn wait_run(api: &Api, wf: &str, n: i64, want: &str) -> Value {
    eventually(&format!("run {n} of {wf} {want}"), LONG, || async {
        let v = api
            .get(&format!("/v1/workflows/{wf}/runs/{n}"))
            .await
            .expect_status(200)
            .clone();
        (v["status"] == want).then_some(v)
    })
    .await
}

fn at(s: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(s.as_str().unwrap(), &Rfc3339).unwrap()
}

/// The number of runs once no firing is in flight: a firing claimed just before a schedule
/// was disabled may still start its run, so the count is read after it had time to.
async fn settled_runs(api: &Api, wf: &str) -> usize {
    tokio::time::sleep(Duration::from_secs(2)).await;
    runs(api, wf).await.len()
}

async fn no_run_under_way(api: &Api, wf: &str) {
    eventually("no run under way", LONG, || async {
        let rs = runs(api, wf).await;
        rs.iter()
            .all(|r| ["COMPLETED", "FAILED", "STOPPED"].contains(&r["status"].as_str().unwrap()))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_runs_as_its_owner_and_records_each_firing_until_disabled_or_deleted() {
    let gw = gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    let bob = gw.api(&gw.create_user("bob").await);
    create(&alice, plain("nightly")).await;
    let path = "/v1/workflows/nightly/schedule";
    alice.get(path).await.expect_status(404);

    // Refused whole, each naming its field; nothing is created.
    for (body, want) in [
        (json!({"cron": "0 25 * * *"}), "the hour field \"25\""),
        (json!({"cron": "0 3 * *"}), "4 fields"),
        (
            json!({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}),
            "timezone",
        ),
        (
            json!({"cron": "0 3 * * *", "parameters": {"x": "ten"}}),
            "parameters",
        ),
        (
            json!({"cron": "0 3 * * *", "parameters": {"nope": 1}}),
            "nope",
        ),
        (
            json!({"cron": "0 3 * * *", "storages": {"nope": "/b/"}}),
            "nope",
        ),
        (
            json!({"cron": "0 3 * * *", "connection": "nope"}),
            "connection: the workflow's owner has no storage connection named \"nope\"",
        ),
        (json!({"cron": "0 3 * * *", "every": 2}), "every"),
        (json!({"timezone": "UTC"}), "cron"),
    ] {
        let r = alice.put(path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{body}: {message}");
    }
    alice.get(path).await.expect_status(404);

    // Every second, in Paris, with a parameter.
    let s = alice
        .put(
            path,
            json!({"cron": "* * * * * *", "timezone": "Europe/Paris", "parameters": {"x": 5}}),
        )
        .await
        .expect_status(200)
        .clone();
    assert_eq!(s["cron"], "* * * * * *");
    assert_eq!(s["timezone"], "Europe/Paris");
    assert_eq!(s["enabled"], true);
    assert!(s["next_due"].is_string(), "{s}");
    // Another user sees nothing of it.
    bob.get(path).await.expect_status(404);
    bob.put(path, json!({"cron": "* * * * *"}))
        .await
        .expect_status(404);

    firings_until(&alice, "nightly", "two started firings", |f| {
        f.iter().filter(|x| x["outcome"] == "started").count() >= 2
    })
    .await;
    let s = schedule(&alice, "nightly").await;
    for f in firings(&s) {
        if f["outcome"] == "started" {
            let n = f["run"].as_i64().unwrap();
            assert_eq!(f["detail"], format!("started run {n}"), "{f}");
            let run = wait_run(&alice, "nightly", n, "COMPLETED").await;
            assert_eq!(run["trigger"], "schedule", "{run}");
            assert_eq!(run["parameters"]["x"], 5, "{run}");
        }
        // Fired at or after its due time.
        assert!(at(&f["fired_at"]) >= at(&f["due_at"]), "{f}");
    }

    // Disabled: kept, fires nothing.
    let s = alice
        .put(path, json!({"cron": "* * * * * *", "enabled": false}))
        .await
        .expect_status(200)
        .clone();
    assert_eq!(s["enabled"], false);
    assert!(s.get("next_due").is_none(), "{s}");
    let before = settled_runs(&alice, "nightly").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&alice, "nightly").await.len(), before);

    // Enabled again, then deleted: fires no more.
    alice
        .put(path, json!({"cron": "* * * * * *"}))
        .await
        .expect_status(200);
    eventually("a run after enabling again", LONG, || async {
        (runs(&alice, "nightly").await.len() > before).then_some(())
    })
    .await;
    alice.delete(path).await.expect_status(204);
    alice.get(path).await.expect_status(404);
    alice.delete(path).await.expect_status(404);
    let before = settled_runs(&alice, "nightly").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&alice, "nightly").await.len(), before);

    let audit = gw
        .admin()
        .get("/v1/audit?limit=500")
        .await
        .expect_status(200)
        .clone();
    let text = audit.to_string();
    for action in ["setWorkflowSchedule", "deleteWorkflowSchedule"] {
        assert!(text.contains(action), "{action}: {text}");
    }
    assert!(text.contains("(schedule)"), "{text}");

    // Deleting the workflow takes its schedule with it.
    alice
        .put(path, json!({"cron": "0 3 * * *"}))
        .await
        .expect_status(200);
    no_run_under_way(&alice, "nightly").await;
    alice
        .delete("/v1/workflows/nightly")
        .await
        .expect_status(204);
    create(&alice, plain("nightly")).await;
    alice.get(path).await.expect_status(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_while_a_run_is_under_way_is_skipped_and_recorded() {
    let gw = gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    create(&alice, waiting("gate")).await;
    // Run 1 waits for y: under way.
    let r = alice
        .post("/v1/workflows/gate/runs", json!({}))
        .await
        .expect_status(201)
        .clone();
    assert_eq!(r["number"], 1);
    wait_run(&alice, "gate", 1, "AWAITING_INPUT").await;

    alice
        .put(
            "/v1/workflows/gate/schedule",
            json!({"cron": "* * * * * *"}),
        )
        .await
        .expect_status(200);
    firings_until(&alice, "gate", "two skipped firings", |f| {
        f.iter().filter(|x| x["outcome"] == "skipped").count() >= 2
    })
    .await;
    for f in firings(&schedule(&alice, "gate").await) {
        assert_eq!(f["outcome"], "skipped", "{f}");
        assert_eq!(f["run"], 1, "{f}");
        assert_eq!(f["detail"], "skipped: run 1 under way", "{f}");
    }
    // Still one run.
    assert_eq!(runs(&alice, "gate").await.len(), 1);

    // Run 1 ends: the next firing starts run 2 (which waits in turn).
    alice
        .post(
            "/v1/workflows/gate/runs/1/steps/c/proceed",
            json!({"values": {"y": 3}}),
        )
        .await
        .expect_status(200);
    wait_run(&alice, "gate", 1, "COMPLETED").await;
    firings_until(&alice, "gate", "run 2 started", |f| {
        f.iter().any(|x| x["detail"] == "started run 2")
    })
    .await;
    let run2 = wait_run(&alice, "gate", 2, "AWAITING_INPUT").await;
    assert_eq!(run2["trigger"], "schedule");
    firings_until(&alice, "gate", "a firing skipped for run 2", |f| {
        f.iter().any(|x| x["detail"] == "skipped: run 2 under way")
    })
    .await;
    // Newest first.
    let f = firings(&schedule(&alice, "gate").await);
    assert!(
        f.windows(2)
            .all(|w| at(&w[0]["due_at"]) >= at(&w[1]["due_at"])),
        "{f:#?}"
    );
    alice
        .post_empty("/v1/workflows/gate/runs/2/stop")
        .await
        .expect_status(200);
    alice
        .delete("/v1/workflows/gate/schedule")
        .await
        .expect_status(204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_missed_while_the_gateway_was_down_runs_once_after_it_is_back() {
    let mut gw = gateway().await;
    let alice = gw.api(&gw.create_user("alice").await);
    create(&alice, plain("tick")).await;
    alice
        .put(
            "/v1/workflows/tick/schedule",
            json!({"cron": "*/2 * * * * *", "timezone": "America/New_York"}),
        )
        .await
        .expect_status(200);
    firings_until(&alice, "tick", "a first firing", |f| !f.is_empty()).await;

    gw.stop();
    // Several due times pass while it is down.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let back = OffsetDateTime::now_utc();
    gw.start_again().await;

    // After the start: the missed due time once, then due times from the start on.
    firings_until(&alice, "tick", "two firings after the restart", |f| {
        f.iter().filter(|x| at(&x["fired_at"]) >= back).count() >= 2
    })
    .await;
    let f = firings(&schedule(&alice, "tick").await);
    let after: Vec<&Value> = f.iter().filter(|x| at(&x["fired_at"]) >= back).collect();
    let missed: Vec<&&Value> = after.iter().filter(|x| at(&x["due_at"]) < back).collect();
    assert_eq!(missed.len(), 1, "one firing for the time down: {after:#?}");
    // Started, or skipped when the run the stop cut short was still going on.
    assert_ne!(missed[0]["outcome"], "failed", "{missed:#?}");
    // No due time was fired twice.
    let mut dues: Vec<&str> = f.iter().map(|x| x["due_at"].as_str().unwrap()).collect();
    dues.sort_unstable();
    let n = dues.len();
    dues.dedup();
    assert_eq!(dues.len(), n, "{f:#?}");
    alice
        .delete("/v1/workflows/tick/schedule")
        .await
        .expect_status(204);
}

/// `POST /v1/workflows/{id}/trigger` with a token in `Authorization: Bearer` or the
/// trigger header (`None`: none).
async fn trigger(gw: &Gateway, id: &str, token: Option<&str>, header: bool, body: &str) -> Value {
    let http = reqwest::Client::new();
    let mut req = http
        .post(format!("{}/v1/workflows/{id}/trigger", gw.base()))
        .header("content-type", "application/json")
        .body(body.to_string());
    match (token, header) {
        (Some(t), true) => req = req.header("X-Atelier-Trigger-Token", t),
        (Some(t), false) => req = req.bearer_auth(t),
        (None, _) => {}
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    json!({"status": status, "body": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_token_starts_its_own_workflows_runs_and_authenticates_nothing_else() {
    let gw = gateway().await;
    let alice_token = gw.create_user("alice").await;
    let alice = gw.api(&alice_token);
    let bob_token = gw.create_user("bob").await;
    let bob = gw.api(&bob_token);
    let one = create(&alice, plain("one")).await;
    let two = create(&alice, waiting("two")).await;
    alice
        .get("/v1/workflows/one/trigger-token")
        .await
        .expect_status(404);
    alice
        .delete("/v1/workflows/one/trigger-token")
        .await
        .expect_status(404);
    // Not for another user's workflow.
    bob.post_empty("/v1/workflows/one/trigger-token")
        .await
        .expect_status(404);
    bob.post_empty(&format!("/v1/workflows/{one}/trigger-token"))
        .await
        .expect_status(404);

    let made = alice
        .post_empty("/v1/workflows/one/trigger-token")
        .await
        .expect_status(201)
        .clone();
    let t1 = made["token"].as_str().unwrap().to_string();
    assert!(t1.starts_with("atw_"), "{made}");
    assert_eq!(made["url"], format!("/v1/workflows/{one}/trigger"));
    let t2 = alice
        .post_empty("/v1/workflows/two/trigger-token")
        .await
        .expect_status(201)["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Shown once: the view has no token.
    let shown = alice
        .get("/v1/workflows/one/trigger-token")
        .await
        .expect_status(200)
        .clone();
    assert!(shown.get("token").is_none(), "{shown}");
    assert!(!shown.to_string().contains(&t1[4..]), "{shown}");
    assert_eq!(shown["created_by"], "alice");

    // Refused, each a 401 that starts nothing.
    let refusals: Vec<(&str, &str, Option<&str>, bool)> = vec![
        ("no token", one.as_str(), None, false),
        (
            "the owner's API token",
            one.as_str(),
            Some(&alice_token),
            false,
        ),
        (
            "the owner's API token in the header",
            one.as_str(),
            Some(&alice_token),
            true,
        ),
        (
            "the admin's API token",
            one.as_str(),
            Some(&gw.admin_token),
            false,
        ),
        (
            "another user's API token",
            one.as_str(),
            Some(&bob_token),
            false,
        ),
        ("another workflow's token", one.as_str(), Some(&t2), false),
        (
            "its token on another workflow",
            two.as_str(),
            Some(&t1),
            true,
        ),
        (
            "the workflow's name instead of its id",
            "one",
            Some(&t1),
            false,
        ),
        ("a mistyped token", one.as_str(), Some("atw_nope"), false),
        ("an empty token", one.as_str(), Some(""), true),
    ];
    let long = "a".repeat(10_000);
    for (what, id, token, header) in
        refusals
            .into_iter()
            .chain([("a huge token", one.as_str(), Some(long.as_str()), true)])
    {
        let r = trigger(&gw, id, token, header, "{}").await;
        assert_eq!(r["status"], 401, "{what}: {r}");
    }
    // The token first: a bad body without a token says nothing about it.
    let r = trigger(&gw, &one, None, false, r#"{"parameters": {"x": "ten"}}"#).await;
    assert_eq!(r["status"], 401, "{r}");
    assert!(runs(&alice, "one").await.is_empty());
    assert!(runs(&alice, "two").await.is_empty());

    // A trigger token is not an API token: nothing else takes it.
    let as_api = gw.api(&t1);
    for path in ["/v1/whoami", "/v1/workflows", "/v1/workflows/one/runs"] {
        assert_eq!(as_api.get(path).await.status, 401, "GET {path}");
    }
    assert_eq!(
        as_api
            .post("/v1/workflows/one/runs", json!({}))
            .await
            .status,
        401
    );
    assert_eq!(
        as_api
            .post_empty("/v1/workflows/one/trigger-token")
            .await
            .status,
        401
    );

    // The right token: a run as alice, with the body's parameters, checked as a run's.
    let r = trigger(
        &gw,
        &one,
        Some(&t1),
        false,
        r#"{"parameters": {"x": "ten"}}"#,
    )
    .await;
    assert_eq!(r["status"], 400, "{r}");
    assert!(r.to_string().contains("parameters"), "{r}");
    assert!(runs(&alice, "one").await.is_empty());
    let r = trigger(&gw, &one, Some(&t1), false, r#"{"parameters": {"x": 7}}"#).await;
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["body"]["trigger"], "webhook");
    assert_eq!(r["body"]["parameters"]["x"], 7);
    wait_run(&alice, "one", 1, "COMPLETED").await;
    // In the header, with an empty body: every default.
    let r = trigger(&gw, &one, Some(&t1), true, "").await;
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["body"]["parameters"]["x"], 1);
    assert_eq!(r["body"]["number"], 2);

    // One run at a time: 409 while one is under way.
    let r = trigger(&gw, &two, Some(&t2), false, "{}").await;
    assert_eq!(r["status"], 201, "{r}");
    wait_run(&alice, "two", 1, "AWAITING_INPUT").await;
    let r = trigger(&gw, &two, Some(&t2), false, "{}").await;
    assert_eq!(r["status"], 409, "{r}");
    assert!(r.to_string().contains("under way"), "{r}");
    assert_eq!(runs(&alice, "two").await.len(), 1);

    // Rotated: the old token stops working.
    let t1b = alice
        .post_empty("/v1/workflows/one/trigger-token")
        .await
        .expect_status(201)["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(t1, t1b);
    wait_run(&alice, "one", 2, "COMPLETED").await;
    assert_eq!(
        trigger(&gw, &one, Some(&t1), false, "{}").await["status"],
        401
    );
    assert_eq!(
        trigger(&gw, &one, Some(&t1b), false, "{}").await["status"],
        201
    );

    // Revoked: refused; revoking again is a 404.
    alice
        .delete("/v1/workflows/one/trigger-token")
        .await
        .expect_status(204);
    assert_eq!(
        trigger(&gw, &one, Some(&t1b), false, "{}").await["status"],
        401
    );
    alice
        .delete("/v1/workflows/one/trigger-token")
        .await
        .expect_status(404);

    // A deleted workflow's token goes with it.
    alice
        .post_empty("/v1/workflows/two/runs/1/stop")
        .await
        .expect_status(200);
    wait_run(&alice, "two", 1, "STOPPED").await;
    alice.delete("/v1/workflows/two").await.expect_status(204);
    assert_eq!(
        trigger(&gw, &two, Some(&t2), false, "{}").await["status"],
        401
    );

    // No token in the audit rows or the gateway's log.
    let audit = gw.admin().get("/v1/audit?limit=500").await;
    audit.expect_status(200);
    let audit = audit.text;
    for action in ["createWorkflowTriggerToken", "revokeWorkflowTriggerToken"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    assert!(audit.contains("(webhook)"), "{audit}");
    let log = gw.log();
    for t in [&t1, &t1b, &t2] {
        assert!(!audit.contains(&t[4..]), "a token in the audit rows");
        assert!(!log.contains(&t[4..]), "a token in the gateway log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_sets_shows_and_deletes_a_schedule_and_makes_and_revokes_a_trigger_token() {
    let gw = gateway().await;
    let token = gw.create_user("alice").await;
    let alice = gw.api(&token);
    let id = create(&alice, plain("etl")).await;

    let out = gw
        .cli(
            &token,
            &[
                "workflow",
                "schedule",
                "etl",
                "--cron",
                "0 3 * * *",
                "--tz",
                "Europe/Paris",
                "-p",
                "x=4",
                "--disable",
            ],
            &[],
        )
        .await;
    out.assert_ok("workflow schedule --cron");
    assert!(out.stdout.contains("Europe/Paris"), "{}", out.stdout);
    assert!(out.stdout.contains("disabled"), "{}", out.stdout);
    let s = schedule(&alice, "etl").await;
    assert_eq!(s["parameters"]["x"], 4);
    assert_eq!(s["enabled"], false);
    assert!(s.get("connection").is_none(), "{s}");
    // Through one of the owner's storage connections.
    let s3 = S3Server::start();
    s3.connect(&alice, "c").await;
    let out = gw
        .cli(
            &token,
            &[
                "workflow",
                "schedule",
                "etl",
                "--cron",
                "* * * * * *",
                "--connection",
                "c",
            ],
            &[],
        )
        .await;
    out.assert_ok("workflow schedule --connection");
    assert_eq!(schedule(&alice, "etl").await["connection"], "c");
    firings_until(&alice, "etl", "a started firing", |f| {
        f.iter().any(|x| x["outcome"] == "started")
    })
    .await;
    let run = wait_run(&alice, "etl", 1, "COMPLETED").await;
    assert_eq!(run["connection"], "c", "{run}");
    assert_eq!(run["trigger"], "schedule", "{run}");

    let out = gw
        .cli(&token, &["workflow", "schedule", "etl", "--show"], &[])
        .await;
    out.assert_ok("workflow schedule --show");
    assert!(out.stdout.contains("* * * * * *"), "{}", out.stdout);
    assert!(out.stdout.contains("started run 1"), "{}", out.stdout);
    // A refusal names the field and exits non-zero.
    let out = gw
        .cli(
            &token,
            &["workflow", "schedule", "etl", "--cron", "0 3 * * 9"],
            &[],
        )
        .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("day-of-week"), "{}", out.stderr);
    let out = gw
        .cli(&token, &["workflow", "schedule", "etl", "--delete"], &[])
        .await;
    out.assert_ok("workflow schedule --delete");
    alice
        .get("/v1/workflows/etl/schedule")
        .await
        .expect_status(404);
    settled_runs(&alice, "etl").await;
    no_run_under_way(&alice, "etl").await;

    let out = gw
        .cli(&token, &["workflow", "trigger-token", "etl"], &[])
        .await;
    out.assert_ok("workflow trigger-token");
    let t = out.stdout.trim().to_string();
    assert!(t.starts_with("atw_"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("/v1/workflows/{id}/trigger")),
        "{}",
        out.stderr
    );
    assert_eq!(
        trigger(&gw, &id, Some(&t), false, "{}").await["status"],
        201
    );
    let out = gw
        .cli(
            &token,
            &["workflow", "trigger-token", "etl", "--revoke"],
            &[],
        )
        .await;
    out.assert_ok("workflow trigger-token --revoke");
    assert_eq!(
        trigger(&gw, &id, Some(&t), false, "{}").await["status"],
        401
    );
}
