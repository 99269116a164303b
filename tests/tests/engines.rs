//! Models served by a container or process engine (spec/inference.md §2.5, §2.7, §2.12,
//! §3.2, §5 items 21, 27-29, 32-35): the model's own HTTP server on port 8080
//! (tests/fixtures/echo-engine/server.py) with its files at /home/mind/model, started by the
//! backend under the runtime, probed by the gateway, and called through `/v1/infers/{id}/…`
//! with the body, SSE and WebSocket passed through.

use std::path::Path;
use std::time::Duration;

use atelier_tests::plugins::repo_root;
use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, eventually};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(180);

/// A model package whose engine is the echo server, with `health` in its config.
fn echo_package(dir: &Path, health: Option<Value>) {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let mut config = json!({"model_algorithm": "echo", "model_type": "PyTorch"});
    if let Some(h) = health {
        config["health"] = h;
    }
    std::fs::write(
        model.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("tests/fixtures/echo-engine/server.py"),
        model.join("server.py"),
    )
    .unwrap();
    std::fs::write(model.join("weights.bin"), b"not really weights").unwrap();
}

fn health(period: u32, failures: u32) -> Value {
    json!({"check_method": "HTTP", "url": "/health", "protocol": "http",
           "period_seconds": period, "failure_threshold": failures})
}

async fn import(api: &Api, name: &str, folder: &str) {
    atelier_tests::serving::import_engine(api, name, folder).await;
}

async fn deploy(api: &Api, name: &str, model: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "models": [{"model": model, "version": "0.0.1"}]});
    for (k, v) in extra.as_object().unwrap() {
        if k == "model" {
            for (mk, mv) in v.as_object().unwrap() {
                body["models"][0][mk] = mv.clone();
            }
        } else {
            body[k] = v.clone();
        }
    }
    let r = api.post("/v1/services", body).await;
    r.expect_status(202)["id"].as_str().unwrap().to_string()
}

async fn wait_service(api: &Api, id: &str, want: &str) -> Value {
    atelier_tests::wait_for_status(api, &format!("/v1/services/{id}"), want, WAIT).await
}

async fn event_texts(api: &Api, id: &str) -> Vec<String> {
    atelier_tests::event_texts_at(api, &format!("/v1/services/{id}/events")).await
}

async fn instances(api: &Api, id: &str) -> Vec<Value> {
    let r = api.get(&format!("/v1/services/{id}/instances")).await;
    r.expect_status(200)["items"].as_array().unwrap().clone()
}

/// The instances once all are READY, with their ids.
async fn ready_instances(api: &Api, id: &str) -> Vec<Value> {
    eventually("every instance READY", WAIT, || async {
        let all = instances(api, id).await;
        all.iter()
            .all(|i| i["phase"] == "READY")
            .then_some(all.clone())
    })
    .await
}

async fn whoami(api: &Api, id: &str) -> Value {
    let r = api.get(&format!("/v1/infers/{id}/whoami")).await;
    r.expect_status(200).clone()
}

struct Setup {
    _s3: S3Server,
    gw: Gateway,
    token: String,
}

async fn setup(env: &[(&str, &str)]) -> Setup {
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    echo_package(&bucket.join("plain"), None);
    echo_package(&bucket.join("checked"), Some(health(1, 2)));
    let gw = Gateway::start_with(env).await;
    let token = gw.create_user("alice").await;
    s3.connect(&gw.api(&token), "local").await;
    Setup { _s3: s3, gw, token }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_engine_serves_its_model_and_calls_pass_through() {
    let Setup { _s3, mut gw, token } = setup(&[]).await;
    if !gw.sandboxed() {
        eprintln!("skipping: model engines need the process backend's sandbox");
        return;
    }
    let api = gw.api(&token);
    import(&api, "echo", "plain").await;
    let id = deploy(
        &api,
        "echo-svc",
        "echo",
        json!({"call_timeout_seconds": 1, "body_limit_mb": 1, "app_auth": true,
               "custom_settings": [{"setting": "#HEADER_tint == 'blue'", "version": "0.0.1",
                                    "header_name": "X-Cfg", "header_value": "A"}],
               "model": {"envs": {"GREETING": "hello"}, "instances": 2}}),
    )
    .await;
    wait_service(&api, &id, "RUNNING").await;
    let first = ready_instances(&api, &id).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|i| i["engine"] == "process"), "{first:?}");

    // The engine runs as ma-user with the model's files read-only at /home/mind/model and
    // the service's variables.
    let me = whoami(&api, &id).await;
    assert_eq!(me["uid"], 1000, "{me}");
    assert_eq!(me["gid"], 100, "{me}");
    assert_eq!(me["greeting"], "hello", "{me}");
    assert_eq!(
        me["model_files"],
        json!(["config.json", "server.py", "weights.bin"]),
        "{me}"
    );
    // Calls go to both instances in turn.
    let mut boots = std::collections::HashSet::new();
    for _ in 0..6 {
        boots.insert(whoami(&api, &id).await["boot"].to_string());
    }
    assert_eq!(boots.len(), 2, "{boots:?}");

    // A sub-path reaches the engine as it is (the seed's apis[].url), with the query and
    // the body; the caller's credentials do not.
    let r = api
        .send(
            api.request(
                reqwest::Method::POST,
                &format!("/v1/infers/{id}/predictions/poetry?n=2"),
            )
            .header("x-auth-token", "leaked?")
            .header("cookie", "atelier_session=secret")
            .header("x-custom", "kept")
            .json(&json!({"poem": "roses"})),
        )
        .await;
    let echo = r.expect_status(200).clone();
    assert_eq!(echo["path"], "/predictions/poetry?n=2", "{echo}");
    assert_eq!(echo["body"], r#"{"poem":"roses"}"#, "{echo}");
    let headers = echo["headers"].as_object().unwrap();
    for secret in ["authorization", "x-auth-token", "cookie"] {
        assert!(
            !headers.contains_key(secret),
            "{secret} reached the engine: {echo}"
        );
    }
    assert_eq!(headers["x-custom"], "kept", "{echo}");
    assert_eq!(r.header("x-model-version"), Some("0.0.1"));

    // A custom setting's header reaches the engine when its rule holds.
    let r = api
        .send(
            api.request(reqwest::Method::POST, &format!("/v1/infers/{id}/x"))
                .header("tint", "blue")
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.expect_status(200)["headers"]["x-cfg"], "A", "{}", r.text);
    let r = api.post(&format!("/v1/infers/{id}/x"), json!({})).await;
    assert!(
        r.expect_status(200)["headers"].get("x-cfg").is_none(),
        "{}",
        r.text
    );

    // An app bound to the service calls it with its AppCode, which the engine never sees.
    let app = api
        .post("/v1/apps", json!({}))
        .await
        .expect_status(201)
        .clone();
    let app_id = app["id"].as_str().unwrap();
    let code = api
        .post_empty(&format!("/v1/apps/{app_id}/app-codes"))
        .await
        .expect_status(201)["code"]
        .as_str()
        .unwrap()
        .to_string();
    let anon = gw.anon();
    let r = anon
        .send(
            anon.request(reqwest::Method::POST, &format!("/v1/infers/{id}/x"))
                .header("x-apig-appcode", &code)
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.status, 401, "an unbound app: {}", r.text);
    api.post(
        &format!("/v1/apps/{app_id}/services"),
        json!({"service": id}),
    )
    .await
    .expect_status(200);
    let r = anon
        .send(
            anon.request(reqwest::Method::POST, &format!("/v1/infers/{id}/x"))
                .header("x-apig-appcode", &code)
                .json(&json!({})),
        )
        .await;
    let echo = r.expect_status(200).clone();
    assert!(echo["headers"].get("x-apig-appcode").is_none(), "{echo}");

    // The body limit and the call timeout hold for proxied calls too.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = api
        .send(
            api.request(reqwest::Method::POST, &format!("/v1/infers/{id}/upload"))
                .body(big),
        )
        .await;
    r.expect_error(413, "payload_too_large");
    let r = api.get(&format!("/v1/infers/{id}/slow")).await;
    assert_eq!(r.status, 504, "{}", r.text);
    // The service's log has what the engine printed and the call the gateway failed.
    let logs = eventually("the engine's lines in the service's log", WAIT, || async {
        let r = api
            .get(&format!(
                "/v1/services/{id}/logs?since=1h&q=listening%20OR%20timed_out"
            ))
            .await;
        let lines = r.expect_status(200)["lines"].as_array().unwrap().clone();
        let engine = lines.iter().any(|l| {
            l["source"] == "engine"
                && l["text"]
                    .as_str()
                    .unwrap()
                    .ends_with("engine: listening on 8080")
        });
        let failed = lines
            .iter()
            .any(|l| l["source"] == "gateway" && l["text"].as_str().unwrap().contains("timed_out"));
        (engine && failed).then_some(lines)
    })
    .await;
    assert!(!logs.is_empty());
    // An engine that replaces its log with a link to a host file gets nothing of that file
    // into the service's log: the gateway reads the log without following links.
    api.post(&format!("/v1/infers/{id}/plant-link"), json!({}))
        .await
        .expect_status(200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = api
        .get(&format!("/v1/services/{id}/logs?since=1h&q=root"))
        .await;
    let lines = r.expect_status(200)["lines"].as_array().unwrap().clone();
    assert!(
        lines
            .iter()
            .all(|l| !l["text"].as_str().unwrap().contains("root:x:0:0")),
        "{lines:?}"
    );

    // Without a token: 401, and nothing reaches the engine.
    let r = anon.get(&format!("/v1/infers/{id}/whoami")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    // Another user's call finds nothing.
    let bob = gw.create_user("bob").await;
    let r = gw.api(&bob).get(&format!("/v1/infers/{id}/whoami")).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // SSE passes through unbuffered: the first event arrives while the engine holds the
    // rest back until told.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/infers/{id}/sse", gw.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=UTF-8"
    );
    let mut stream = resp.bytes_stream();
    let first_chunk = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the first event")
        .unwrap()
        .unwrap();
    assert_eq!(&first_chunk[..], b"data: 1\n\n");
    // Released now (either instance holds a waiting stream; both are told, in turn).
    for _ in 0..2 {
        api.post(&format!("/v1/infers/{id}/sse-release"), json!({}))
            .await
            .expect_status(200);
    }
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the rest")
    {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "data: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n"
    );

    // WebSocket: text and binary echoed; the handshake needs the token.
    let url = format!("{}/v1/infers/{id}/ws", gw.base().replacen("http", "ws", 1));
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got, Message::text("ping"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got, Message::binary(vec![1u8, 2, 3]));
    drop(ws);
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("a WebSocket without a token: {other:?}"),
    }

    // An engine that exits is restarted (a new instance in its place, counted).
    let r = api.post(&format!("/v1/infers/{id}/crash"), json!({})).await;
    assert!(r.status >= 500, "{}", r.text);
    let after = eventually("a restarted instance", WAIT, || async {
        let all = instances(&api, &id).await;
        (all.iter().all(|i| i["phase"] == "READY")
            && all
                .iter()
                .map(|i| i["restarts"].as_u64().unwrap())
                .sum::<u64>()
                == 1)
            .then_some(all)
    })
    .await;
    assert_eq!(after.len(), 2);

    // Deleting an instance brings a new one (not counted as a restart).
    let victim = after[0]["id"].as_str().unwrap().to_string();
    api.delete(&format!("/v1/services/{id}/instances/{victim}"))
        .await
        .expect_status(202);
    let replaced = eventually("a replacement", WAIT, || async {
        let all = instances(&api, &id).await;
        (all.iter()
            .all(|i| i["phase"] == "READY" && i["id"] != victim.as_str()))
        .then_some(all)
    })
    .await;
    assert_eq!(replaced.len(), 2);
    let r = api
        .delete(&format!("/v1/services/{id}/instances/no-such"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // A restarted gateway re-attaches to the instances that kept running.
    let ids: Vec<String> = replaced
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let boot = whoami(&api, &id).await["boot"].clone();
    gw.restart().await;
    let api = gw.api(&token);
    wait_service(&api, &id, "RUNNING").await;
    let again = ready_instances(&api, &id).await;
    let mut again_ids: Vec<String> = again
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let mut ids = ids;
    ids.sort();
    again_ids.sort();
    assert_eq!(again_ids, ids, "the same instances after a gateway restart");
    let mut seen = false;
    for _ in 0..4 {
        seen |= whoami(&api, &id).await["boot"] == boot;
    }
    assert!(seen, "the instance that answered before still answers");

    // A stop ends the instances; their directories go.
    api.post_empty(&format!("/v1/services/{id}/stop"))
        .await
        .expect_status(200);
    assert!(instances(&api, &id).await.is_empty());
    let engines = gw.data_dir.join("engines");
    let left: Vec<_> = std::fs::read_dir(&engines)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left after the stop: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_drive_abnormal_alarm_and_restarts() {
    let Setup { _s3, gw, token } = setup(&[]).await;
    if !gw.sandboxed() {
        eprintln!("skipping: model engines need the process backend's sandbox");
        return;
    }
    let api = gw.api(&token);
    import(&api, "checked", "checked").await;

    // /health fails from the start: after the most failures the service is ABNORMAL, with
    // the seed's event, and nothing of it keeps running.
    let bad = deploy(
        &api,
        "never-healthy",
        "checked",
        json!({"model": {"envs": {"FAIL_HEALTH": "1"}}}),
    )
    .await;
    let s = wait_service(&api, &bad, "ABNORMAL").await;
    assert!(
        s["status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("startup check failed 2 times"),
        "{s}"
    );
    let texts = event_texts(&api, &bad).await;
    assert!(
        texts
            .iter()
            .any(|t| t == "Failed to start service never-healthy."),
        "{texts:?}"
    );
    assert!(instances(&api, &bad).await.is_empty());
    // The seed's refusals: an ABNORMAL service is started, not restarted.
    let r = api.post_empty(&format!("/v1/services/{bad}/restart")).await;
    r.expect_error(409, "conflict");
    api.delete(&format!("/v1/services/{bad}"))
        .await
        .expect_status(204);

    // Healthy at first; once /health fails, the instance leaves the rotation (ALARM) and
    // its liveness failures restart it; the new one is healthy (RUNNING again).
    let id = deploy(&api, "checked-svc", "checked", json!({})).await;
    wait_service(&api, &id, "RUNNING").await;
    let before = ready_instances(&api, &id).await;
    api.post(&format!("/v1/infers/{id}/unhealthy"), json!({}))
        .await
        .expect_status(200);
    let after = eventually("the instance restarted", WAIT, || async {
        let all = instances(&api, &id).await;
        (all.len() == 1 && all[0]["restarts"] == 1 && all[0]["phase"] == "READY").then_some(all)
    })
    .await;
    assert_ne!(after[0]["id"], before[0]["id"]);
    wait_service(&api, &id, "RUNNING").await;
    let texts = event_texts(&api, &id).await;
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Service checked-svc is unhealthy. Error: ")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t == "Service checked-svc recovered."),
        "{texts:?}"
    );
    api.delete(&format!("/v1/services/{id}"))
        .await
        .expect_status(204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_versions_probes_set_one_by_one_take_an_instance_out_of_rotation_without_a_restart() {
    let Setup { _s3, gw, token } = setup(&[]).await;
    if !gw.sandboxed() {
        eprintln!("skipping: model engines need the process backend's sandbox");
        return;
    }
    let api = gw.api(&token);
    let body = |checks: Value| {
        json!({"name": "probed",
               "source": {"type": "obs", "connection": "local", "path": "obs://models/plain/"},
               "start_command": "python3 /home/mind/model/server.py",
               "health_checks": checks})
    };

    // Bad probes are refused with the field named, and nothing is created.
    for (checks, names) in [
        (
            json!({"readiness": {"check_method": "HTTP", "url": "/health", "period_seconds": 1}}),
            "health_checks.readiness.failure_threshold",
        ),
        (
            json!({"readiness": {"check_method": "HTTP", "url": "/health", "period_seconds": "0",
                                 "failure_threshold": 1}}),
            "health_checks.readiness.period_seconds",
        ),
        (
            json!({"liveliness": {"check_method": "HTTP", "url": "/health"}}),
            "health_checks.\"liveliness\": unknown probe",
        ),
        (
            json!({"startup": {"check_method": "EXEC", "url": "/health"}}),
            "health_checks.startup.url",
        ),
        (
            json!({"liveness": {"check_method": "HTTP", "url": "/health", "bogus": 1}}),
            "health_checks.liveness",
        ),
        (json!(["startup"]), "health_checks"),
    ] {
        let r = api.post("/v1/models", body(checks.clone())).await;
        let msg = r.expect_error(400, "invalid_argument").to_string();
        assert!(msg.contains(names), "{checks}: {msg}");
    }
    api.get("/v1/models/probed")
        .await
        .expect_error(404, "not_found");

    // An image model's probes must check /health over HTTP, as its config's health must.
    let config = json!({"model_algorithm": "echo", "model_type": "Image",
                        "health": health(1, 3)});
    let r = api
        .post(
            "/v1/models",
            json!({"name": "probed-image",
                   "source": {"type": "image", "image": "localhost/whatever:1"},
                   "config": config,
                   "health_checks": {"liveness": {"check_method": "HTTP", "url": "/whoami",
                                                  "period_seconds": 1, "failure_threshold": 1}}}),
        )
        .await;
    let msg = r.expect_error(400, "invalid_argument").to_string();
    assert!(
        msg.contains("health_checks.liveness") && msg.contains("/health"),
        "{msg}"
    );

    // Readiness on /health, liveness on /whoami: an instance whose /health fails for a
    // while leaves the rotation (ALARM) and comes back (RUNNING) without a restart.
    let checks = json!({
        "readiness": {"check_method": "HTTP", "url": "/health", "period_seconds": "1",
                      "failure_threshold": "1"},
        "liveness": {"check_method": "HTTP", "url": "/whoami", "period_seconds": 1,
                     "failure_threshold": 2},
    });
    api.post("/v1/models", body(checks))
        .await
        .expect_status(202);
    let v = eventually("the import", WAIT, || async {
        let v = api.get("/v1/models/probed/versions/0.0.1").await;
        let v = v.expect_status(200).clone();
        (v["status"] != "IMPORTING").then_some(v)
    })
    .await;
    assert_eq!(v["status"], "NORMAL", "{v}");
    assert_eq!(v["health_checks"]["readiness"]["url"], "/health", "{v}");
    assert_eq!(v["health_checks"]["liveness"]["period_seconds"], 1, "{v}");
    assert!(v["health_checks"].get("startup").is_none(), "{v}");
    // A new version copies them.
    let r = api
        .post(
            "/v1/models/probed/versions",
            json!({"description": "again"}),
        )
        .await;
    let v2 = r.expect_status(202).clone();
    assert_eq!(v2["health_checks"], v["health_checks"], "{v2}");

    let id = deploy(&api, "probed-svc", "probed", json!({})).await;
    wait_service(&api, &id, "RUNNING").await;
    let before = ready_instances(&api, &id).await;
    let boot = whoami(&api, &id).await["boot"].clone();
    api.post(&format!("/v1/infers/{id}/unhealthy?seconds=4"), json!({}))
        .await
        .expect_status(200);
    wait_service(&api, &id, "ALARM").await;
    wait_service(&api, &id, "RUNNING").await;
    let after = ready_instances(&api, &id).await;
    assert_eq!(after[0]["id"], before[0]["id"], "{after:?}");
    assert_eq!(after[0]["restarts"], 0, "{after:?}");
    assert_eq!(whoami(&api, &id).await["boot"], boot);
    let texts = event_texts(&api, &id).await;
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Service probed-svc is unhealthy. Error: ")),
        "{texts:?}"
    );
    api.delete(&format!("/v1/services/{id}"))
        .await
        .expect_status(204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_whose_instances_never_answer_times_out_and_leaves_nothing() {
    // A minute of deploy timeout lasts a second here: the seed's least, 3 minutes, is 3 s.
    let Setup { _s3, gw, token } = setup(&[("ATELIER_DEPLOY_MINUTE", "1")]).await;
    if !gw.sandboxed() {
        eprintln!("skipping: model engines need the process backend's sandbox");
        return;
    }
    let api = gw.api(&token);
    import(&api, "echo", "plain").await;
    api.post(
        "/v1/models/echo/versions",
        json!({"start_command": "sleep 3600"}),
    )
    .await
    .expect_status(202);
    eventually("version 0.0.2", WAIT, || async {
        let v = api.get("/v1/models/echo/versions/0.0.2").await;
        (v.expect_status(200)["status"] == "NORMAL").then_some(())
    })
    .await;
    let body = json!({"name": "silent", "timeout_minutes": 3,
                      "models": [{"model": "echo", "version": "0.0.2"}]});
    let id = api.post("/v1/services", body).await.expect_status(202)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = wait_service(&api, &id, "FAILED").await;
    assert!(
        s["status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("deploy timeout (3 minutes)"),
        "{s}"
    );
    let texts = event_texts(&api, &id).await;
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Service deployment timed out. Error: ")),
        "{texts:?}"
    );
    // Its instance was stopped and removed.
    let engines = gw.data_dir.join("engines");
    let left = eventually("the instance gone", WAIT, || async {
        let left: Vec<_> = std::fs::read_dir(&engines)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        left.is_empty().then_some(left)
    })
    .await;
    assert!(left.is_empty());
}

/// A CPU flavor and a one-GPU flavor.
const FLAVORS_WITH_A_GPU: &str = r#"
[[flavors]]
id = "cpu-2-8"
type = "cpu"
vcpus = 2
memory_gib = 8

[[flavors]]
id = "gpu-1"
type = "gpu"
vcpus = 8
memory_gib = 32
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_process_backend_refuses_accelerator_flavors_for_engine_instances() {
    let s3 = S3Server::start();
    echo_package(&s3.bucket("models").join("plain"), None);
    let gw = Gateway::start_with_config(FLAVORS_WITH_A_GPU, &[]).await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    import(&api, "echo", "plain").await;
    let r = api
        .post(
            "/v1/services",
            json!({"name": "gpu-svc", "models": [{"model": "echo", "version": "0.0.1",
                                                  "flavor": "gpu-1"}]}),
        )
        .await;
    let msg = r.expect_error(400, "invalid_argument");
    assert!(
        msg.contains("models[0].flavor")
            && msg.contains("gpu-1")
            && msg.contains("process backend"),
        "{msg}"
    );
    let list = api.get("/v1/services").await;
    assert_eq!(list.expect_status(200)["items"], json!([]), "{}", list.text);
}

/// The echo server as an image of its own, built once from the test notebook image (offline:
/// the base is local); its reference.
fn echo_image() -> String {
    let (_, base) = atelier_tests::docker_env();
    let server = std::fs::read(repo_root().join("tests/fixtures/echo-engine/server.py")).unwrap();
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&base, &server).hash(&mut h);
        h.finish()
    };
    let tag = format!("localhost/atelier-echo-engine:{digest:016x}");
    let present = std::process::Command::new("podman")
        .args([
            "--url",
            &atelier_tests::docker_env().0,
            "image",
            "exists",
            &tag,
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let dir = std::env::temp_dir().join(format!("echo-engine-{}", atelier_tests::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.py"), &server).unwrap();
        std::fs::write(
            dir.join("Containerfile"),
            format!(
                "FROM {base}\nCOPY server.py /opt/engine/server.py\nCMD [\"python3\", \"/opt/engine/server.py\"]\n"
            ),
        )
        .unwrap();
        atelier_tests::podman(&["build", "-t", &tag, &dir.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
    tag
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_backend_runs_a_models_image_and_a_package_in_the_default_image() {
    let image = echo_image();
    let s3 = S3Server::start();
    echo_package(&s3.bucket("models").join("plain"), None);
    let gw = Gateway::start_docker(FLAVORS_WITH_A_GPU, &[]).await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;

    // The model's own image, as the seed's custom engine: its CMD serves on 8080.
    let config = json!({"model_algorithm": "echo", "model_type": "Image",
                        "apis": [{"url": "/predictions/poetry", "method": "post"}],
                        "health": health(1, 3)});
    let r = api
        .post(
            "/v1/models",
            json!({"name": "img", "config": config,
                   "source": {"type": "image", "image": image}}),
        )
        .await;
    r.expect_status(202);
    eventually("the image model", WAIT, || async {
        let v = api.get("/v1/models/img/versions/0.0.1").await;
        (v.expect_status(200)["status"] == "NORMAL").then_some(())
    })
    .await;
    let id = deploy(&api, "img-svc", "img", json!({})).await;
    wait_service(&api, &id, "RUNNING").await;
    let me = whoami(&api, &id).await;
    assert_eq!(me["uid"], 1000, "{me}");
    assert_eq!(me["gid"], 100, "{me}");
    let r = api
        .post(
            &format!("/v1/infers/{id}/predictions/poetry"),
            json!({"a": 1}),
        )
        .await;
    let echo = r.expect_status(200).clone();
    assert_eq!(echo["path"], "/predictions/poetry", "{echo}");
    let all = ready_instances(&api, &id).await;
    assert_eq!(all[0]["engine"], "docker", "{all:?}");
    // The instance's container has no network of the host's.
    let labels = format!("label=io.atelier.service={id}");
    let listed = atelier_tests::podman(&[
        "ps",
        "--filter",
        &labels,
        "--format",
        "{{.ID}} {{.Networks}}",
    ]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(!listed.contains("podman"), "{listed}");

    // A package with a start command runs in the default notebook image, its files at
    // /home/mind/model.
    import(&api, "echo", "plain").await;
    // A GPU flavor: the docker backend gives instances GPUs, but this host has none.
    let r = api
        .post(
            "/v1/services",
            json!({"name": "gpu-svc", "models": [{"model": "echo", "version": "0.0.1",
                                                  "flavor": "gpu-1", "instances": 2}]}),
        )
        .await;
    let msg = r.expect_error(400, "invalid_argument");
    assert!(
        msg.contains("gpu-1") && msg.contains("2 for 2 instance(s)") && msg.contains("has 0"),
        "{msg}"
    );
    let pkg = deploy(&api, "pkg-svc", "echo", json!({})).await;
    wait_service(&api, &pkg, "RUNNING").await;
    let me = whoami(&api, &pkg).await;
    assert_eq!(
        me["model_files"],
        json!(["config.json", "server.py", "weights.bin"]),
        "{me}"
    );

    // Stopped: the containers are gone.
    for s in [&id, &pkg] {
        api.post_empty(&format!("/v1/services/{s}/stop"))
            .await
            .expect_status(200);
        let labels = format!("label=io.atelier.service={s}");
        let left = atelier_tests::podman(&["ps", "-a", "--filter", &labels, "--format", "{{.ID}}"]);
        assert!(left.trim().is_empty(), "left after the stop: {left}");
    }
}

/// A gateway (with `env`) where service `name` of the echo model, deployed with `extra`, is
/// RUNNING, and its id; `None` (said) where model engines cannot run.
async fn echo_service(env: &[(&str, &str)], name: &str, extra: Value) -> Option<(Setup, String)> {
    let s = setup(env).await;
    if !s.gw.sandboxed() {
        eprintln!("skipping: model engines need the process backend's sandbox");
        return None;
    }
    let api = s.gw.api(&s.token);
    import(&api, "echo", "plain").await;
    let id = deploy(&api, name, "echo", extra).await;
    wait_service(&api, &id, "RUNNING").await;
    Some((s, id))
}

/// GET `path` of service `id` on a client of its own (its own connection to the gateway).
async fn get_alone(gw: &Gateway, token: &str, id: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/infers/{id}/{path}", gw.base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn many_callers_share_a_few_connections_to_an_engine_with_a_tiny_backlog() {
    let Some((Setup { _s3, gw, token }, id)) = echo_service(
        &[("ATELIER_ENGINE_CONNECTIONS", "4")],
        "busy",
        json!({"model": {"envs": {"BACKLOG": "1"}}}),
    )
    .await
    else {
        return;
    };
    let api = gw.api(&token);
    // 32 callers at once, each on a connection of its own to the gateway.
    let calls = (0..32).map(|_| get_alone(&gw, &token, &id, "sleep?ms=100"));
    let answers = futures_util::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let (status, seen) = get_alone(&gw, &token, &id, "connections").await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        seen["max"].as_u64().unwrap() <= 4,
        "the engine had more connections at once than the cap: {seen}"
    );
    // The callers' connections are gone; the gateway's to the engine stay for the next.
    let (_, again) = get_alone(&gw, &token, &id, "connections").await;
    assert_eq!(again["accepted"], seen["accepted"], "{again} after {seen}");
    api.delete(&format!("/v1/services/{id}"))
        .await
        .expect_status(204);
}

/// A `GET /hold` call to service `id`, on a task; returns once the engine holds it.
async fn held_call(gw: &Gateway, token: &str, id: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let held = {
        let (gw_base, token, id) = (gw.base(), token.to_owned(), id.to_owned());
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .get(format!("{gw_base}/v1/infers/{id}/hold"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        })
    };
    eventually("the call held", WAIT, || async {
        let (_, h) = get_alone(gw, token, id, "holding").await;
        (h["holding"] == 1).then_some(())
    })
    .await;
    held
}

/// Releases the calls instance `instance` holds, through its own socket (nothing of the
/// service reaches an instance out of the rotation).
async fn release_hold(gw: &Gateway, instance: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // (through a short link to its directory: the full path is too long for a socket's)
    let link = std::env::temp_dir().join(format!("hold-{}", atelier_tests::unique()));
    std::os::unix::fs::symlink(
        gw.data_dir.join("engines").join(instance).join("run/agent"),
        &link,
    )
    .unwrap();
    let mut unix = tokio::net::UnixStream::connect(link.join("engine.sock"))
        .await
        .unwrap();
    std::fs::remove_file(&link).unwrap();
    unix.write_all(
        b"POST /hold-release HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    unix.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_through_a_service_lives_while_it_runs_and_is_cut_when_it_stops() {
    let Some((Setup { _s3, gw, token }, id)) =
        echo_service(&[], "ws-svc", json!({"call_timeout_seconds": 300})).await
    else {
        return;
    };
    let api = gw.api(&token);
    let instance = ready_instances(&api, &id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/v1/infers/{id}/ws", gw.base().replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));
    // While the service runs, the WebSocket outlives other calls.
    for _ in 0..3 {
        whoami(&api, &id).await;
    }
    ws.send(Message::text("two")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("two"));

    // Stopped while a call is in flight: the stop lets the call finish, so the instance
    // still runs when the gateway closes the WebSocket.
    let held = held_call(&gw, &token, &id).await;
    let stop = {
        let api = gw.api(&token);
        let id = id.clone();
        tokio::spawn(async move { api.post_empty(&format!("/v1/services/{id}/stop")).await })
    };
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the WebSocket is still open after the stop");
    assert!(
        !held.is_finished() && !stop.is_finished(),
        "the instance stopped before the WebSocket was closed"
    );
    release_hold(&gw, &instance).await;
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    stop.await.unwrap().expect_status(200);
    assert!(instances(&api, &id).await.is_empty());
    api.delete(&format!("/v1/services/{id}"))
        .await
        .expect_status(204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_in_flight_during_an_update_ends_on_the_old_instance() {
    let Some((Setup { _s3, gw, token }, id)) = echo_service(
        &[],
        "swap",
        json!({"call_timeout_seconds": 300, "model": {"envs": {"GREETING": "old"}}}),
    )
    .await
    else {
        return;
    };
    let api = gw.api(&token);
    let old = ready_instances(&api, &id).await;
    let old_id = old[0]["id"].as_str().unwrap().to_string();

    // A call the old instance holds until told.
    let held = held_call(&gw, &token, &id).await;

    // The update swaps in a new instance; new calls go there while the old one drains.
    api.patch(
        &format!("/v1/services/{id}"),
        json!({"models": [{"model": "echo", "version": "0.0.1",
                           "envs": {"GREETING": "new"}}]}),
    )
    .await
    .expect_status(202);
    eventually("calls answered by the new instance", WAIT, || async {
        (whoami(&api, &id).await["greeting"] == "new").then_some(())
    })
    .await;
    assert!(
        !held.is_finished(),
        "the held call ended before its release"
    );

    release_hold(&gw, &old_id).await;
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["greeting"], "old", "{body}");
    assert_eq!(body["released"], true, "{body}");
    // Then the old instance goes.
    wait_service(&api, &id, "RUNNING").await;
    let now = ready_instances(&api, &id).await;
    assert!(now.iter().all(|i| i["id"] != old_id.as_str()), "{now:?}");
    let old_dir = gw.data_dir.join("engines").join(&old_id);
    eventually("the old instance removed", WAIT, || async {
        (!old_dir.exists()).then_some(())
    })
    .await;
    api.delete(&format!("/v1/services/{id}"))
        .await
        .expect_status(204);
}

/// On the `slurm` backend an instance is a Slurm job on a node of the test cluster
/// (`scripts/slurm.sh`), reached through the connect-back tunnel: the same engine serves,
/// as ma-user with the model's files; stopping the service ends the job.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_engine_runs_as_a_slurm_job_on_the_slurm_backend() {
    let Some(cluster) = atelier_tests::slurm::cluster() else {
        return;
    };
    let s3 = S3Server::start();
    echo_package(&s3.bucket("models").join("plain"), None);
    let gw = cluster
        .gateway(atelier_tests::slurm::NODE_FLAVOR, &[])
        .await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    import(&api, "echo", "plain").await;
    let id = deploy(
        &api,
        "echo-slurm",
        "echo",
        json!({"model": {"envs": {"GREETING": "from a node"}, "instances": 1}}),
    )
    .await;
    wait_service(&api, &id, "RUNNING").await;
    let ready = ready_instances(&api, &id).await;
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0]["engine"], "slurm", "{ready:?}");
    let me = whoami(&api, &id).await;
    assert_eq!(
        (me["uid"].as_i64(), me["gid"].as_i64()),
        (Some(1000), Some(100)),
        "{me}"
    );
    assert_eq!(me["greeting"], "from a node", "{me}");
    assert_eq!(
        me["model_files"],
        json!(["config.json", "server.py", "weights.bin"]),
        "{me}"
    );
    let listed = cluster.run("scontrol", &["show", "job", "-o"]);
    let running: Vec<&str> = listed
        .lines()
        .filter(|l| l.contains("JobName=atelier-engine-") && l.contains("JobState=RUNNING"))
        .collect();
    assert_eq!(running.len(), 1, "{listed}");
    api.post_empty(&format!("/v1/services/{id}/stop"))
        .await
        .expect_status(200);
    wait_service(&api, &id, "STOPPED").await;
    let job: u64 = running[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("JobId="))
        .and_then(|n| n.parse().ok())
        .expect("a job id");
    let ended = cluster.wait_job(job, "the stopped instance's job to end", |j| {
        !matches!(j.state.as_str(), "RUNNING" | "COMPLETING")
    });
    assert_ne!(ended.state, "RUNNING");
}
