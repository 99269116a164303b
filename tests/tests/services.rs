//! Real-time services (spec/inference.md §3.2, §5 items 13-31): the example iris model
//! (examples/inference/iris: scikit-learn → ONNX with skl2onnx, built here) imported from a
//! real S3 server, served by the gateway's built-in ONNX engine (ONNX Runtime from the
//! onnxruntime wheel), with and without the example's Python processor compiled by
//! componentize-py; calls through `/v1/infers/{id}` and the Open Inference Protocol.

use atelier_tests::Api;
use atelier_tests::s3::S3Server;
use atelier_tests::serving::{
    WAIT, broken_package, deploy, gateway, hostile_package, import, import_version, iris_package,
    wait_service, with_processor,
};
use atelier_tests::{Gateway, eventually};
use serde_json::{Value, json};

async fn event_texts(api: &Api, id: &str) -> Vec<String> {
    atelier_tests::event_texts_at(api, &format!("/v1/services/{id}/events")).await
}

fn v2_body(rows: &[[f32; 4]]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"id": "r1", "inputs": [{"name": "inputs", "shape": [rows.len(), 4], "datatype": "FP32", "data": data}]})
}

const SETOSA: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA: [f32; 4] = [6.7, 3.0, 5.8, 2.2];

struct Setup {
    s3: S3Server,
    gw: Gateway,
    token: String,
}

/// A gateway with alice's storage connection and the iris packages in the bucket: `plain`
/// (no processor) and `pp` (with the example processor).
async fn setup(env: &[(&str, &str)]) -> Setup {
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    iris_package(&bucket.join("plain"), false).await;
    iris_package(&bucket.join("pp"), true).await;
    let gw = gateway(env).await;
    let token = gw.create_user("alice").await;
    s3.connect(&gw.api(&token), "local").await;
    Setup { s3, gw, token }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_without_a_processor_answers_the_open_inference_protocol() {
    let Setup { gw, token, s3 } = setup(&[]).await;
    let api = gw.api(&token);
    import(&api, "iris", "plain").await;
    let r = api
        .post(
            "/v1/services",
            json!({"name": "iris", "models": [{"model": "iris", "version": "0.0.1"}]}),
        )
        .await;
    let created = r.expect_status(202).clone();
    assert_eq!(created["status"], "DEPLOYING");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["url"], format!("/v1/infers/{id}"));
    let s = wait_service(&api, &id, "RUNNING").await;
    assert!(s["stop_at"].is_string(), "auto-stop is on by default: {s}");
    assert_eq!(
        event_texts(&api, &id).await,
        [
            "The service starts to deploy.",
            "Service iris started.",
            "Auto stop has been enabled. The service will stop after 3600s."
        ]
    );

    // V2 through the seed's path and the V2 path; the answer is the model's.
    for path in [
        format!("/v1/infers/{id}"),
        "/v2/models/iris/infer".to_string(),
    ] {
        let r = api.post(&path, v2_body(&[SETOSA, VIRGINICA])).await;
        let out = r.expect_status(200).clone();
        assert_eq!(r.header("x-model-version"), Some("0.0.1"));
        assert_eq!(out["model_name"], "iris");
        assert_eq!(out["id"], "r1");
        let label = out["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "label")
            .unwrap();
        assert_eq!(label["data"], json!([0, 2]), "setosa, virginica: {out}");
        let probs = out["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "probabilities")
            .unwrap();
        assert_eq!(probs["shape"], json!([2, 3]));
        let sum: f64 = probs["data"].as_array().unwrap()[..3]
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-5, "{probs}");
    }
    // The seed's X-Auth-Token header is a token too.
    let r = Api::new(gw.base(), None)
        .send(
            Api::new(gw.base(), None)
                .request(reqwest::Method::POST, &format!("/v1/infers/{id}"))
                .header("x-auth-token", &token)
                .json(&v2_body(&[SETOSA])),
        )
        .await;
    r.expect_status(200);
    let meta = api.get("/v2/models/iris").await;
    assert_eq!(meta.expect_status(200)["inputs"][0]["name"], "inputs");
    assert_eq!(api.get("/v2/models/iris/ready").await.status, 200);

    // Wrong calls say what is wrong; nothing of them reaches the engine.
    for (body, status, says) in [
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": SETOSA}]}),
            400,
            "no input named `x`",
        ),
        (
            json!({"inputs": [{"name": "inputs", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            400,
            "shape",
        ),
        (
            json!({"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}),
            400,
            "dtype",
        ),
        (
            json!({"instances": [[1, 2, 3, 4]]}),
            400,
            "not an inference request",
        ),
    ] {
        let r = api.post(&format!("/v1/infers/{id}"), body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    // Anonymous: 401; another user: as if there were no such service.
    assert_eq!(
        gw.anon()
            .post(&format!("/v1/infers/{id}"), v2_body(&[SETOSA]))
            .await
            .status,
        401
    );
    let bob = gw.api(&gw.create_user("bob").await);
    assert_eq!(
        bob.post(&format!("/v1/infers/{id}"), v2_body(&[SETOSA]))
            .await
            .status,
        404
    );
    assert_eq!(bob.get(&format!("/v1/services/{id}")).await.status, 404);
    assert_eq!(
        bob.post_empty(&format!("/v1/services/{id}/stop"))
            .await
            .status,
        404
    );
    // An admin manages users' models but does not serve them.
    let model_id = api.get("/v1/models/iris").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw
        .admin()
        .post(
            "/v1/services",
            json!({"name": "taken", "models": [{"model": model_id, "version": "0.0.1"}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("not found"), "{}", r.text);

    // 12 MB is the most a body may hold (before anything reads it).
    let big = vec![b' '; 12 * 1024 * 1024 + 1];
    let r = api
        .send(
            api.request(reqwest::Method::POST, &format!("/v1/infers/{id}"))
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);

    // A version a service runs cannot be deleted.
    let r = api.delete("/v1/models/iris/versions/0.0.1").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("backs service iris"), "{}", r.text);

    // The service survives a gateway restart.
    let mut gw = gw;
    gw.restart().await;
    let api = gw.api(&token);
    let out = eventually("the service answering again", WAIT, || async {
        let r = api
            .post(&format!("/v1/infers/{id}"), v2_body(&[VIRGINICA]))
            .await;
        (r.status == 200).then(|| r.json.clone())
    })
    .await;
    assert_eq!(out["outputs"][0]["data"], json!([2]), "{out}");

    // Stop: calls are refused with why; start: it serves again; restart is only for a
    // running service.
    let r = api.post_empty(&format!("/v1/services/{id}/stop")).await;
    assert_eq!(r.expect_status(200)["status"], "STOPPED");
    let r = api
        .post(&format!("/v1/infers/{id}"), v2_body(&[SETOSA]))
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("STOPPED"), "{}", r.text);
    let r = api.post_empty(&format!("/v1/services/{id}/restart")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    api.post_empty(&format!("/v1/services/{id}/start"))
        .await
        .expect_status(202);
    wait_service(&api, &id, "RUNNING").await;
    api.post(&format!("/v1/infers/{id}"), v2_body(&[SETOSA]))
        .await
        .expect_status(200);
    let texts = event_texts(&api, &id).await;
    for t in [
        "The service is being stopped.",
        "The service has been stopped.",
        "The service is being started.",
    ] {
        assert!(texts.contains(&t.to_string()), "{t}: {texts:?}");
    }

    // Delete: gone, and its model version is free again.
    assert_eq!(api.delete(&format!("/v1/services/{id}")).await.status, 204);
    assert_eq!(api.get(&format!("/v1/services/{id}")).await.status, 404);
    assert_eq!(
        api.delete("/v1/models/iris/versions/0.0.1").await.status,
        204
    );
    drop(s3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_runs_in_the_gateway_around_the_model() {
    let Setup { gw, token, s3: _s3 } = setup(&[]).await;
    let api = gw.api(&token);
    import(&api, "iris", "pp").await;
    let r = api
        .post("/v1/services", json!({"name": "iris", "models": [{"model": "iris", "version": "0.0.1", "instances": 2}]}))
        .await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_service(&api, &id, "RUNNING").await;

    let r = api
        .post(
            &format!("/v1/infers/{id}"),
            json!({"instances": [SETOSA, VIRGINICA], "top_k": 2}),
        )
        .await;
    let out = r.expect_status(200).clone();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let p = &out["predictions"];
    assert_eq!(p[0][0]["label"], "setosa", "{out}");
    assert_eq!(p[1][0]["label"], "virginica", "{out}");
    assert_eq!(p[0].as_array().unwrap().len(), 2);
    // The processor's own refusals keep their kind.
    let r = api
        .post(&format!("/v1/infers/{id}"), json!({"instances": [[1, 2]]}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = api
        .send(
            api.request(reqwest::Method::POST, &format!("/v1/infers/{id}"))
                .header("content-type", "text/plain")
                .body("hello"),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    // Concurrent calls on the instances all answer.
    let mut calls = Vec::new();
    for _ in 0..16 {
        let api = api.clone();
        let path = format!("/v1/infers/{id}");
        calls.push(tokio::spawn(async move {
            api.post(&path, json!({"instances": [VIRGINICA]})).await
        }));
    }
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(
            r.expect_status(200)["predictions"][0][0]["label"],
            "virginica"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_is_split_by_weight_limited_and_counted_against_the_quota() {
    let Setup { gw, token, s3: _s3 } = setup(&[("ATELIER_SERVICE_QUOTA", "2")]).await;
    let api = gw.api(&token);
    import(&api, "iris", "plain").await;
    api.post("/v1/models/iris/versions", json!({}))
        .await
        .expect_status(202);
    eventually("0.0.2", WAIT, || async {
        let v = api.get("/v1/models/iris/versions/0.0.2").await;
        (v.json["status"] == "NORMAL").then_some(())
    })
    .await;

    // Weights must sum to 100.
    let r = api
        .post(
            "/v1/services",
            json!({"name": "split", "models": [
            {"model": "iris", "version": "0.0.1", "weight": 80},
            {"model": "iris", "version": "0.0.2", "weight": 30}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("sum to 110"), "{}", r.text);
    let r = api
        .post(
            "/v1/services",
            json!({"name": "split", "models": [
            {"model": "iris", "version": "0.0.1", "weight": 80},
            {"model": "iris", "version": "0.0.2", "weight": 20}]}),
        )
        .await;
    let split = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_service(&api, &split, "RUNNING").await;
    let mut first = 0;
    for _ in 0..1000 {
        let r = api
            .post(&format!("/v1/infers/{split}"), v2_body(&[SETOSA]))
            .await;
        r.expect_status(200);
        if r.header("x-model-version") == Some("0.0.1") {
            first += 1;
        }
    }
    assert!(
        (750..=850).contains(&first),
        "0.0.1 answered {first} of 1000 (80 % ± 5)"
    );

    // A traffic limit of 5 calls a second: of 20 calls sent at once, no more pass than the
    // limit lets through in the time they took (5, and 5 more each second), and on a machine
    // that is not crawling that leaves most of them refused.
    let r = api
        .post(
            "/v1/services",
            json!({"name": "limited", "traffic_limit": 5,
                                     "models": [{"model": "iris", "version": "0.0.1"}]}),
        )
        .await;
    let limited = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_service(&api, &limited, "RUNNING").await;
    let mut calls = Vec::new();
    let sent = std::time::Instant::now();
    for _ in 0..20 {
        let api = api.clone();
        let path = format!("/v1/infers/{limited}");
        calls.push(tokio::spawn(async move {
            api.post(&path, v2_body(&[SETOSA])).await.status
        }));
    }
    let mut refused = 0;
    for c in calls {
        match c.await.unwrap() {
            429 => refused += 1,
            200 => {}
            other => panic!("status {other}"),
        }
    }
    let took = sent.elapsed().as_secs_f64();
    let passed = 20 - refused;
    assert!(
        f64::from(passed) <= 5.0 + 5.0 * took + 1.0,
        "{passed} of 20 passed in {took:.2} s with a limit of 5 a second"
    );
    assert!(refused > 0, "none refused in {took:.2} s");
    // The seed's service metrics, per service and model, on /metrics.
    let metrics = gw.admin().get("/metrics").await;
    let text = metrics.text.clone();
    assert_eq!(metrics.status, 200);
    let model_id = api.get("/v1/models/iris").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let value = |name: &str| -> f64 {
        let labels = format!("{{service_id=\"{limited}\",model_id=\"{model_id}\"}}");
        let empty = format!("{{service_id=\"{limited}\",model_id=\"\"}}");
        text.lines()
            .filter(|l| l.starts_with(name) && (l.contains(&labels) || l.contains(&empty)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        value("atelier_inference_total_called_times_total"),
        20.0,
        "{text}"
    );
    assert_eq!(
        value("atelier_inference_successfully_called_times_total"),
        f64::from(20 - refused)
    );
    assert_eq!(
        value("atelier_inference_failed_called_times_total"),
        f64::from(refused)
    );
    assert_eq!(
        value("atelier_inference_req_count_2xx_total"),
        f64::from(20 - refused)
    );
    assert_eq!(
        value("atelier_inference_req_count_4xx_total"),
        f64::from(refused)
    );
    assert_eq!(
        value("atelier_inference_latency_seconds_count"),
        20.0,
        "{text}"
    );

    // The quota (2 here): a third service is refused, nothing is created.
    let r = api
        .post(
            "/v1/services",
            json!({"name": "third", "models": [{"model": "iris", "version": "0.0.1"}]}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("ATELIER_SERVICE_QUOTA"), "{}", r.text);
    let list = api.get("/v1/services").await;
    assert_eq!(
        list.expect_status(200)["items"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_deploys_updates_and_calls_services_and_auto_stop_stops_them() {
    // One "hour" of auto-stop lasts 2 seconds here.
    let Setup { gw, token, s3 } = setup(&[("ATELIER_LEASE_HOUR", "2")]).await;
    let api = gw.api(&token);
    import(&api, "iris", "pp").await;
    // A version whose model file is no ONNX model: it imports, but does not load.
    broken_package(&s3.bucket("models").join("broken")).await;
    import_version(&api, "iris", "broken", "0.0.2").await;

    let out = gw
        .cli(
            &token,
            &[
                "service",
                "deploy",
                "iris",
                "--model",
                "iris:0.0.1",
                "--no-auto-stop",
                "--wait",
            ],
            &[],
        )
        .await;
    out.assert_ok("service deploy");
    assert!(out.stderr.contains("is RUNNING"), "{}", out.stderr);
    let out = gw
        .cli(
            &token,
            &[
                "service",
                "predict",
                "iris",
                "--data",
                r#"{"instances": [[6.7, 3.0, 5.8, 2.2]]}"#,
            ],
            &[],
        )
        .await;
    out.assert_ok("service predict");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["predictions"][0][0]["label"], "virginica", "{v}");
    let out = gw.cli(&token, &["service", "list"], &[]).await;
    out.assert_ok("service list");
    assert!(out.stdout.contains("iris 0.0.1 (100%)"), "{}", out.stdout);

    // An update to a version that does not load is rolled back; the service goes on.
    let out = gw
        .cli(
            &token,
            &["service", "update", "iris", "--model", "iris:0.0.2"],
            &[],
        )
        .await;
    out.assert_ok("service update");
    let id = api.get("/v1/services/iris").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the rollback", WAIT, || async {
        let texts = event_texts(&api, &id).await;
        texts
            .contains(&"Failed to update the service. The update has been rolled back.".to_string())
            .then_some(())
    })
    .await;
    let s = wait_service(&api, &id, "RUNNING").await;
    assert_eq!(s["models"][0]["version"], "0.0.1", "{s}");
    api.post(&format!("/v1/infers/{id}"), json!({"instances": [SETOSA]}))
        .await
        .expect_status(200);

    // A deploy of the broken version fails with the seed's event and says why.
    let out = gw
        .cli(
            &token,
            &[
                "service",
                "deploy",
                "broken",
                "--model",
                "iris:0.0.2",
                "--wait",
            ],
            &[],
        )
        .await;
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("FAILED"), "{}", out.stderr);
    let broken_id = api.get("/v1/services/broken").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let texts = event_texts(&api, &broken_id).await;
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Service broken failed. Error: model iris 0.0.2")),
        "{texts:?}"
    );
    let out = gw.cli(&token, &["service", "delete", "broken"], &[]).await;
    out.assert_ok("service delete");

    // Auto-stop on (1 "hour" = 2 s): the service stops by itself.
    let r = api
        .post(
            "/v1/services",
            json!({"name": "short", "models": [{"model": "iris", "version": "0.0.1"}]}),
        )
        .await;
    let short = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_service(&api, &short, "STOPPED").await;
    let texts = event_texts(&api, &short).await;
    assert!(
        texts.contains(&"The service stops when the auto stop time expires.".to_string()),
        "{texts:?}"
    );
    // The other service, without auto-stop, still runs.
    assert_eq!(
        api.get(&format!("/v1/services/{id}")).await.json["status"],
        "RUNNING"
    );

    let out = gw.cli(&token, &["service", "stop", "iris"], &[]).await;
    out.assert_ok("service stop");
    let out = gw
        .cli(&token, &["service", "start", "iris", "--wait"], &[])
        .await;
    out.assert_ok("service start");
    let out = gw.cli(&token, &["service", "events", "iris"], &[]).await;
    out.assert_ok("service events");
    assert!(
        out.stdout.contains("The service has been stopped."),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_processor_ends_only_its_own_call_and_bodies_reach_it_as_the_seed_says() {
    let s3 = S3Server::start();
    hostile_package(&s3.bucket("models").join("hostile")).await;
    let gw = gateway(&[]).await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    import(&api, "hostile", "hostile").await;
    let id = deploy(&api, "hostile", "hostile", "0.0.1").await;
    let url = format!("/v1/infers/{id}");

    // JSON: the text as sent, the API path and query, no credentials among the headers.
    let r = api
        .post(
            &format!("{url}/predictions/poetry?x=1"),
            json!({"mode": "echo", "a": 1}),
        )
        .await;
    let seen = r.expect_status(200).clone();
    assert_eq!(r.header("x-echo"), Some("1"));
    assert_eq!(seen["path"], "/predictions/poetry");
    assert_eq!(seen["query"], json!([["x", "1"]]));
    assert_eq!(seen["body"], "json");
    assert_eq!(seen["json"]["a"], 1);
    assert!(
        !seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "authorization"),
        "{seen}"
    );
    assert_eq!(seen["outputs"], json!(["label", "probabilities"]));
    // X-Auth-Token is not shown to the processor either.
    let r = Api::new(gw.base(), None)
        .send(
            Api::new(gw.base(), None)
                .request(reqwest::Method::POST, &url)
                .header("x-auth-token", &token)
                .json(&json!({"mode": "echo"})),
        )
        .await;
    let seen = r.expect_status(200).clone();
    assert!(
        !seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "x-auth-token"),
        "{seen}"
    );

    // multipart/form-data: the seed's {"<form key>": {"<file name>": <file>}}, repeated keys
    // together, plain values beside the files.
    let form = reqwest::multipart::Form::new()
        .part(
            "images",
            reqwest::multipart::Part::bytes(vec![7u8; 100])
                .file_name("seven.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .part(
            "images",
            reqwest::multipart::Part::bytes(vec![1u8; 10]).file_name("one.png"),
        )
        .text("mode", "echo");
    let r = api
        .send(api.request(reqwest::Method::POST, &url).multipart(form))
        .await;
    let seen = r.expect_status(200).clone();
    assert_eq!(seen["body"], "multipart");
    assert_eq!(
        seen["fields"]["images"]["files"],
        json!([["seven.png", "image/png", 100], ["one.png", null, 10]]),
        "{seen}"
    );
    assert_eq!(seen["fields"]["mode"]["values"], json!(["echo"]));
    // Anything else arrives as bytes.
    let r = api
        .send(
            api.request(reqwest::Method::POST, &url)
                .header("content-type", "application/octet-stream")
                .body(vec![0u8; 33]),
        )
        .await;
    assert_eq!(r.expect_status(200)["size"], 33);

    // Hostile calls end alone: the plugin's time limit (504), a trap and its memory limit
    // (500); the next call is answered.
    for (mode, status, says) in [
        ("loop", 504, "timeout"),
        ("raise", 500, "trapped"),
        ("alloc", 500, "memory"),
    ] {
        let r = api.post(&url, json!({"mode": mode})).await;
        assert_eq!(r.status, status, "{mode}: {}", r.text);
        assert!(r.text.contains(says), "{mode}: {}", r.text);
        api.post(&url, json!({"mode": "echo"}))
            .await
            .expect_status(200);
    }

    // The service's own call timeout, shorter than the plugin's.
    let r = api
        .patch(
            &format!("/v1/services/{id}"),
            json!({"call_timeout_seconds": 1}),
        )
        .await;
    r.expect_status(202);
    eventually("the update", WAIT, || async {
        let s = api.get(&format!("/v1/services/{id}")).await.json.clone();
        (s["status"] == "RUNNING" && s["call_timeout_ms"] == 1000).then_some(())
    })
    .await;
    let r = api.post(&url, json!({"mode": "loop"})).await;
    assert_eq!(r.status, 504, "{}", r.text);
    assert!(r.text.contains("call timeout"), "{}", r.text);
    api.post(&url, json!({"mode": "echo"}))
        .await
        .expect_status(200);
}

/// The iris example's processor written in C (examples/plugins/c-inference-processor, built
/// by `atelier plugin build` with wit-bindgen and clang) answers every request with the
/// bytes the Python processor answers, refuses what the Python one refuses, and refuses
/// hostile JSON (deep nesting, huge numbers, a cut body) with a 400 naming the problem: a
/// guest error, not a trap.
#[tokio::test(flavor = "multi_thread")]
async fn the_c_processor_answers_as_the_python_one_and_refuses_hostile_json_with_400() {
    let s3 = S3Server::start();
    let bucket = s3.bucket("models");
    iris_package(&bucket.join("pp"), true).await;
    iris_package(&bucket.join("cp"), false).await;
    with_processor(
        &bucket.join("cp"),
        &atelier_tests::plugins::repo_root().join("examples/plugins/c-inference-processor"),
    )
    .await;
    let gw = gateway(&[]).await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    s3.connect(&api, "local").await;
    import(&api, "iris-py", "pp").await;
    import(&api, "iris-c", "cp").await;
    let py = deploy(&api, "iris-py", "iris-py", "0.0.1").await;
    let c = deploy(&api, "iris-c", "iris-c", "0.0.1").await;
    let send = |id: &str, body: String| {
        let api = api.clone();
        let url = format!("/v1/infers/{id}");
        async move {
            api.send(
                api.request(reqwest::Method::POST, &url)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        }
    };

    // The same bytes for the same requests: 1 to 45 rows, every top_k, numbers written as
    // integers, with exponents and negative, repeated keys (the last wins), other keys.
    let mut bodies = vec![
        json!({"instances": [SETOSA, VIRGINICA], "top_k": 2}).to_string(),
        r#"{"instances": [[5, 3, 1, 0], [6.7e0, 30E-1, 0.58e1, -2.2]]}"#.to_string(),
        r#"{"top_k": 3, "instances": [[1,2,3,4]], "instances": [[7.9, 4.4, 6.9, 2.5]], "x": {"instances": 1}}"#.to_string(),
        r#" { "instances" : [ [ 0 , 0 , 0 , 0 ] ] , "top_k" : 1 } "#.to_string(),
    ];
    let mut seed = 17u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    for rows in [1, 3, 45] {
        for top_k in [None, Some(1), Some(2), Some(3)] {
            let instances: Vec<Vec<f64>> = (0..rows)
                .map(|_| (0..4).map(|_| (next() * 80.0).round() / 10.0).collect())
                .collect();
            let mut body = json!({ "instances": instances });
            if let Some(k) = top_k {
                body["top_k"] = json!(k);
            }
            bodies.push(body.to_string());
        }
    }
    for body in &bodies {
        let (a, b) = (send(&py, body.clone()).await, send(&c, body.clone()).await);
        assert_eq!(a.status, 200, "python, {body}: {}", a.text);
        assert_eq!(b.status, 200, "c, {body}: {}", b.text);
        assert_eq!(b.text, a.text, "for {body}");
        assert_eq!(b.header("content-type"), Some("application/json"));
    }

    // What the Python processor refuses, the C one refuses with the same status.
    for body in [
        r#"{"instances": [[1, 2]]}"#,
        r#"{"instances": [[1, 2, 3, 4]], "top_k": 4}"#,
        r#"{"instances": [[1, 2, 3, 4]], "top_k": 2.0}"#,
        r#"{"instances": [[1, 2, 3, 4]], "top_k": true}"#,
        r#"{"instances": [[1, 2, "3", 4]]}"#,
        r#"{"instances": [[1, 2, 3, 4], [1, 2, 3]]}"#,
        r#"{"instances": []}"#,
        r#"{"top_k": 1}"#,
        r#"[[1, 2, 3, 4]]"#,
        r#"{"instances": [[1, 2, 3, 4]],}"#,
    ] {
        let (a, b) = (
            send(&py, body.to_string()).await,
            send(&c, body.to_string()).await,
        );
        assert_eq!(a.status, 400, "python, {body}: {}", a.text);
        assert_eq!(b.status, 400, "c, {body}: {}", b.text);
    }
    let r = api
        .send(
            api.request(reqwest::Method::POST, &format!("/v1/infers/{c}"))
                .header("content-type", "text/plain")
                .body("hello"),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);

    // Hostile JSON: a clear 400 from the processor's reader, and the next call answers.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long_number = format!(r#"{{"instances": [[1, 2, 3, {}]]}}"#, "9".repeat(5000));
    let hostile = [
        (deep.clone(), "nests deeper than 64 levels"),
        (
            format!(r#"{{"instances": [[1, 2, 3, 4]], "x": {deep}}}"#),
            "nests deeper than 64 levels",
        ),
        (
            r#"{"instances": [[1, 2, 3, 1e400]]}"#.to_string(),
            "/instances/0/3 is 1e400, outside the range of f32",
        ),
        (
            r#"{"instances": [[1e39, 2, 3, 4]]}"#.to_string(),
            "/instances/0/0 is 1e39, outside the range of f32",
        ),
        (long_number, "a number of more than 256 characters"),
        (
            r#"{"instances": [[1, 2, 3, 4]], "top_k": 99999999999999999999999999999}"#.to_string(),
            "top_k must be 1, 2 or 3",
        ),
        (
            r#"{"instances": [[1, 2, 3, 4], [5, 6"#.to_string(),
            "it ends inside an array",
        ),
        (
            r#"{"instances": [[1, 2, 3, 4]], "k"#.to_string(),
            "does not end",
        ),
        (r#"{"a": "\ud800"}"#.to_string(), "lone high surrogate"),
        (String::new(), "it ends where a value should be"),
    ];
    for (body, says) in hostile {
        let r = send(&c, body.clone()).await;
        let shown: String = body.chars().take(80).collect();
        assert_eq!(r.status, 400, "{shown}: {}", r.text);
        assert!(r.text.contains(says), "{shown}: {}", r.text);
        let r = send(&c, json!({"instances": [SETOSA]}).to_string()).await;
        assert_eq!(r.expect_status(200)["predictions"][0][0]["label"], "setosa");
    }
}
