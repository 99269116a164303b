//! Bad input gets a 4xx with the common error shape `{"error": {"code", "message"}}` whose
//! message names the field; refused operations leave nothing behind; state and quota rules.

use atelier_tests::{Api, Gateway, json};
use reqwest::Method;

async fn total(api: &Api) -> i64 {
    let r = api.get("/v1/notebooks").await;
    r.expect_status(200)["total"]
        .as_i64()
        .unwrap_or_else(|| panic!("no total in {}", r.text))
}

/// POSTs a notebook create that must be refused with `status`/`code`; checks that nothing was
/// created and returns the message.
async fn refused_create(api: &Api, body: serde_json::Value, status: u16, code: &str) -> String {
    let before = total(api).await;
    let msg = api
        .post("/v1/notebooks", body.clone())
        .await
        .expect_error(status, code);
    assert_eq!(
        total(api).await,
        before,
        "a refused create ({body}) changed the notebook count"
    );
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_states_and_quota() {
    let gw = Gateway::start_with_config("[quota]\nnotebooks_per_user = 3\n", &[]).await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let (a, b) = (gw.api(&alice), gw.api(&bob));

    // Names.
    for name in ["", &"x".repeat(129), "a b", "a.b", "é", "nb/1"] {
        let msg = refused_create(&a, json!({"name": name}), 400, "invalid_argument").await;
        assert!(msg.starts_with("name"), "name {name:?}: {msg}");
    }
    let msg = refused_create(&a, json!({"name": 5}), 400, "invalid_argument").await;
    assert!(msg.contains("name"), "{msg}");

    // Catalogue: the message lists what is available.
    let flavors = a.get("/v1/flavors").await;
    let flavor_ids: Vec<String> = flavors.expect_status(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|f| f["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(flavor_ids.len() >= 2, "{}", flavors.text);
    let msg = refused_create(
        &a,
        json!({"name": "f", "flavor": "gpu-huge"}),
        400,
        "invalid_argument",
    )
    .await;
    assert!(msg.contains("flavor") && msg.contains("gpu-huge"), "{msg}");
    for id in &flavor_ids {
        assert!(msg.contains(id.as_str()), "{msg} does not list {id}");
    }
    let msg = refused_create(
        &a,
        json!({"name": "i", "image": "nope"}),
        400,
        "invalid_argument",
    )
    .await;
    assert!(msg.contains("image") && msg.contains("jupyterlab"), "{msg}");

    // Unknown fields, wrong types, ranges.
    let msg = refused_create(
        &a,
        json!({"name": "u", "bogus": 1}),
        400,
        "invalid_argument",
    )
    .await;
    assert!(msg.contains("bogus"), "{msg}");
    let msg = refused_create(
        &a,
        json!({"name": "u", "auto_stop": {"enabled": true, "duration_hours": 2, "extra": 1}}),
        400,
        "invalid_argument",
    )
    .await;
    assert!(msg.contains("extra"), "{msg}");
    for hours in [json!(0), json!(73), json!(-1), json!(1.5), json!("2")] {
        let msg = refused_create(
            &a,
            json!({"name": "h", "auto_stop": {"enabled": true, "duration_hours": hours}}),
            400,
            "invalid_argument",
        )
        .await;
        assert!(
            msg.contains("auto_stop.duration_hours"),
            "duration_hours {hours}: {msg}"
        );
    }
    let msg = refused_create(
        &a,
        json!({"name": "d", "description": "d".repeat(513)}),
        400,
        "invalid_argument",
    )
    .await;
    assert!(msg.contains("description"), "{msg}");

    // Bodies that are not JSON.
    for (content_type, body) in [
        (Some("text/plain"), r#"{"name": "t"}"#),
        (Some("application/x-www-form-urlencoded"), "name=t"),
        (None, r#"{"name": "t"}"#),
    ] {
        let mut req = a.request(Method::POST, "/v1/notebooks").body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        a.send(req)
            .await
            .expect_error(415, "unsupported_media_type");
    }
    for body in ["{", "", "[1, 2]", "null"] {
        a.send(
            a.request(Method::POST, "/v1/notebooks")
                .header("content-type", "application/json")
                .body(body),
        )
        .await
        .expect_error(400, "invalid_argument");
    }
    assert_eq!(total(&a).await, 0);

    // Query strings.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("status=SLEEPING", "status"),
        ("bogus=1", "bogus"),
    ] {
        let msg = a
            .get(&format!("/v1/notebooks?{query}"))
            .await
            .expect_error(400, "invalid_argument");
        assert!(msg.contains(field), "?{query}: {msg}");
    }

    // Accepted at the edges of each rule; the quota is reached with the third. Each notebook
    // is let come up before the next create: creates that overlap another notebook's bring-up
    // hit a store race of their own (`back_to_back_creates_never_fail` below).
    let long = "n".repeat(128);
    let r = a
        .post(
            "/v1/notebooks",
            json!({"name": long, "auto_stop": {"enabled": true, "duration_hours": 72}}),
        )
        .await;
    r.expect_status(201);
    assert_eq!(r.json["name"], long.as_str());
    assert_eq!(r.json["auto_stop"]["duration_hours"], 72);
    let first = r.json["id"].as_str().expect("id").to_owned();
    gw.wait_status(&alice, &first, "RUNNING").await;
    let r = a
        .post(
            "/v1/notebooks",
            json!({"name": "second", "description": "d".repeat(512),
                   "auto_stop": {"enabled": false, "duration_hours": 1}}),
        )
        .await;
    assert_eq!(r.expect_status(201)["auto_stop"]["enabled"], false);
    let second = r.json["id"].as_str().expect("id").to_owned();
    gw.wait_status(&alice, &second, "RUNNING").await;
    let r = a
        .post(
            "/v1/notebooks",
            json!({"name": "third", "flavor": flavor_ids[1]}),
        )
        .await;
    assert_eq!(r.expect_status(201)["flavor"], flavor_ids[1].as_str());
    let third = r.json["id"].as_str().expect("id").to_owned();
    gw.wait_status(&alice, &third, "RUNNING").await;
    assert_eq!(total(&a).await, 3);

    // Quota: the fourth is refused, for Alice only.
    let msg = refused_create(&a, json!({"name": "fourth"}), 409, "quota_exceeded").await;
    assert!(msg.contains('3'), "{msg}");
    // Another user is not affected, and names are unique per owner only.
    let bobs = gw.create_notebook(&bob, "second").await;
    gw.wait_status(&bob, &bobs, "RUNNING").await;
    let msg = refused_create(&b, json!({"name": "second"}), 409, "conflict").await;
    assert!(msg.contains("second"), "{msg}");
    assert_eq!(total(&b).await, 1);

    // State rules: start of a RUNNING notebook, stop of a STOPPED one.
    let msg = a
        .post_empty(&format!("/v1/notebooks/{first}/start"))
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("RUNNING"), "{msg}");
    a.post_empty(&format!("/v1/notebooks/{second}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &second, "STOPPED").await;
    let msg = a
        .post_empty(&format!("/v1/notebooks/{second}/stop"))
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("STOPPED"), "{msg}");
    // A STOPPED notebook still counts towards the quota.
    refused_create(&a, json!({"name": "fourth"}), 409, "quota_exceeded").await;

    // Updates follow the same rules.
    let msg = a
        .patch(&format!("/v1/notebooks/{second}"), json!({"name": "a b"}))
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.starts_with("name"), "{msg}");
    let msg = a
        .patch(&format!("/v1/notebooks/{second}"), json!({"bogus": true}))
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("bogus"), "{msg}");
    let msg = a
        .patch(&format!("/v1/notebooks/{second}"), json!({"name": "third"}))
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("third"), "{msg}");
    let r = a.get(&format!("/v1/notebooks/{second}")).await;
    assert_eq!(r.expect_status(200)["name"], "second", "{}", r.text);

    // Unknown ids.
    let missing = "00000000-0000-4000-8000-000000000000";
    for (method, path) in [
        (Method::GET, format!("/v1/notebooks/{missing}")),
        (Method::POST, format!("/v1/notebooks/{missing}/start")),
        (Method::GET, format!("/v1/notebooks/{missing}/events")),
        (Method::GET, format!("/nb/{missing}/lab")),
        (Method::GET, "/v1/no-such-endpoint".to_owned()),
    ] {
        a.send(a.request(method, &path))
            .await
            .expect_error(404, "not_found");
    }
    // Admin-only endpoints.
    a.post("/v1/users", json!({"name": "mallory"}))
        .await
        .expect_error(403, "permission_denied");
    a.get("/v1/audit")
        .await
        .expect_error(403, "permission_denied");
}

/// The default quota (10) with the `external` backend, whose notebooks need no processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_quota_is_ten_in_any_status() {
    // The external backend routes every notebook to one server; a listening socket is enough
    // for its readiness and health checks.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let port = upstream.local_addr().expect("address").port();
    let gw = Gateway::start_with_config(
        &format!("[backend]\nkind = \"external\"\nexternal_url = \"http://127.0.0.1:{port}\"\n"),
        &[],
    )
    .await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let a = gw.api(&alice);
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = gw.create_notebook(&alice, &format!("nb-{i}")).await;
        // Let its bring-up finish first (see `back_to_back_creates_never_fail`).
        gw.wait_status(&alice, &id, "RUNNING").await;
        ids.push(id);
    }
    let msg = refused_create(&a, json!({"name": "nb-10"}), 409, "quota_exceeded").await;
    assert!(msg.contains("10"), "{msg}");
    let bobs = gw.create_notebook(&bob, "nb-10").await;
    gw.wait_status(&bob, &bobs, "RUNNING").await;
    assert_eq!(total(&gw.api(&bob)).await, 1);

    // Any status counts; deleting one frees a slot.
    a.post_empty(&format!("/v1/notebooks/{}/stop", ids[1]))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &ids[1], "STOPPED").await;
    refused_create(&a, json!({"name": "nb-10"}), 409, "quota_exceeded").await;
    a.delete(&format!("/v1/notebooks/{}", ids[0]))
        .await
        .expect_status(202);
    gw.wait_gone(&alice, &ids[0]).await;
    a.post("/v1/notebooks", json!({"name": "nb-10"}))
        .await
        .expect_status(201);
    assert_eq!(total(&a).await, 10);
    drop(upstream);
}

/// Creates that follow each other closely, as a script or several users send them, all
/// succeed. Each create runs a transaction that reads (quota, name) and then writes; when the
/// previous notebook's bring-up task commits in between, SQLite refuses the upgrade to a write
/// (SQLITE_BUSY_SNAPSHOT, "database is locked", code 517) at once, and the client gets a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_creates_never_fail() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let port = upstream.local_addr().expect("address").port();
    let gw = Gateway::start_with_config(
        &format!("[backend]\nkind = \"external\"\nexternal_url = \"http://127.0.0.1:{port}\"\n"),
        &[],
    )
    .await;
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3"] {
        users.push(gw.api(&gw.create_user(name).await));
    }
    let runs = users.iter().map(|api| async move {
        let mut failures = Vec::new();
        for i in 0..9 {
            let r = api
                .post("/v1/notebooks", json!({"name": format!("nb-{i}")}))
                .await;
            if r.status != 201 {
                failures.push(format!("{} {}", r.status, r.text));
            }
        }
        failures
    });
    let failures: Vec<String> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let locked = gw.log().matches("database is locked").count();
    assert!(
        failures.is_empty(),
        "{} of 27 creates failed ({locked} \"database is locked\" errors in the gateway log): {:?}",
        failures.len(),
        failures
    );
    drop(upstream);
}

/// docs/api.md: "Every 4xx/5xx body is {"error": {"code", "message"}}" — a wrong method too.
#[tokio::test]
async fn wrong_method_has_the_error_shape() {
    let gw = Gateway::start().await;
    let admin = gw.admin();
    for (method, path) in [
        (Method::PUT, "/v1/notebooks"),
        (Method::DELETE, "/v1/whoami"),
        (Method::POST, "/v1/flavors"),
    ] {
        let r = admin.send(admin.request(method, path)).await;
        assert_eq!(r.status, 405, "{}: {}", r.what, r.text);
        assert!(
            r.json["error"]["code"].is_string() && r.json["error"]["message"].is_string(),
            "{}: 405 without the error shape {{\"error\":{{\"code\",\"message\"}}}}: body {:?}, \
             content-type {:?}",
            r.what,
            r.text,
            r.header("content-type")
        );
    }
}

/// docs/api.md lists `payload_too_large` (413): a JSON body over the server's limit gets it.
#[tokio::test]
async fn oversized_body_is_payload_too_large() {
    let gw = Gateway::start().await;
    let admin = gw.admin();
    // Just over the 2 MiB limit: the gateway stops reading at the limit and answers, and the
    // rest of the body still fits in the socket buffers, so the client reads that answer
    // instead of failing its write with a broken pipe.
    let body = json!({"name": "big", "description": "d".repeat(2 * 1024 * 1024 + 64 * 1024)});
    let before = total(&admin).await;
    let r = admin.post("/v1/notebooks", body).await;
    assert_eq!(total(&admin).await, before);
    assert!(
        r.status == 413 && r.json["error"]["code"] == "payload_too_large",
        "a 2.06 MiB JSON body: expected 413 payload_too_large, got {} {}",
        r.status,
        r.text
    );
}
