//! Applications and custom settings (spec/inference.md §1.4 AUTH-03/04, §2.10, §2.14, §2.15;
//! §5 items 18, 23, 42, 43): the example iris model with the echoing test processor
//! (tests/fixtures/hostile-processor, which answers with the header names it was given),
//! served by the real gateway; apps call it with X-Apig-AppCode and apikey; rules pick
//! versions by header and by Java's hashCode and add their header; the latency figures
//! appear on /metrics.

use std::path::Path;
use std::time::Duration;

use atelier_tests::plugins::{built_python, repo_root};
use atelier_tests::s3::S3Server;
use atelier_tests::{Api, Gateway, Reply, eventually, ml_python, onnxruntime_lib};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// The iris package with the echoing processor, under `dir`.
async fn echo_package(dir: &Path) {
    let example = repo_root().join("examples/inference/iris");
    let status = std::process::Command::new(ml_python())
        .arg(example.join("train.py"))
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running train.py");
    assert!(status.success(), "train.py failed");
    let fixture = repo_root().join("tests/fixtures/hostile-processor");
    let wasm = built_python(&fixture).await;
    std::fs::copy(&wasm, dir.join("model/customize_service.wasm")).unwrap();
    std::fs::copy(fixture.join("plugin.json"), dir.join("model/plugin.json")).unwrap();
}

struct Setup {
    _s3: S3Server,
    gw: Gateway,
    alice: Api,
}

/// A gateway where alice has imported the model `echo` (0.0.1, and 0.0.2 when `two`).
async fn setup(two: bool) -> Setup {
    let s3 = S3Server::start();
    echo_package(&s3.bucket("models").join("echo")).await;
    let lib = onnxruntime_lib();
    let gw = Gateway::start_with(&[("ATELIER_ONNXRUNTIME_LIB", lib.as_str())]).await;
    let alice = gw.api(&gw.create_user("alice").await);
    s3.connect(&alice, "local").await;
    alice
        .post(
            "/v1/models",
            json!({"name": "echo", "source": {"type": "obs", "connection": "local",
                   "path": "obs://models/echo/"}}),
        )
        .await
        .expect_status(202);
    let mut versions = vec!["0.0.1"];
    if two {
        versions.push("0.0.2");
    }
    for v in versions {
        if v != "0.0.1" {
            alice
                .post("/v1/models/echo/versions", json!({}))
                .await
                .expect_status(202);
        }
        let got = eventually(&format!("echo {v}"), WAIT, || async {
            let r = alice.get(&format!("/v1/models/echo/versions/{v}")).await;
            let r = r.expect_status(200).clone();
            (r["status"] != "IMPORTING").then_some(r)
        })
        .await;
        assert_eq!(got["status"], "NORMAL", "{got}");
    }
    Setup { _s3: s3, gw, alice }
}

async fn deploy(api: &Api, body: Value) -> String {
    let r = api.post("/v1/services", body).await;
    let id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_running(api, &id).await;
    id
}

async fn wait_running(api: &Api, id: &str) -> Value {
    eventually(&format!("service {id} RUNNING"), WAIT, || async {
        let s = api.get(&format!("/v1/services/{id}")).await;
        let s = s.expect_status(200).clone();
        assert_ne!(s["status"], "FAILED", "{s}");
        (s["status"] == "RUNNING").then_some(s)
    })
    .await
}

/// A call with only `headers` (no token).
async fn call_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let anon = Api::new(gw.base(), None);
    let mut req = anon
        .request(reqwest::Method::POST, path)
        .json(&json!({"mode": "echo"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    anon.send(req).await
}

fn header_names(seen: &Value) -> Vec<String> {
    seen["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in {seen}"))
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_call_the_services_bound_to_them_and_nothing_else() {
    let Setup { _s3, gw, alice } = setup(false).await;
    let bob = gw.api(&gw.create_user("bob").await);
    let svc = deploy(
        &alice,
        json!({"name": "svc", "models": [{"model": "echo", "version": "0.0.1"}]}),
    )
    .await;
    let other = deploy(
        &alice,
        json!({"name": "other", "app_auth": true,
               "models": [{"model": "echo", "version": "0.0.1"}]}),
    )
    .await;
    assert_eq!(
        alice.get(&format!("/v1/services/{svc}")).await.json["app_auth"],
        false
    );

    // Created with a generated name and credentials, shown once here.
    let r = alice.post("/v1/apps", json!({})).await;
    let created = r.expect_status(201).clone();
    let app = created["id"].as_str().unwrap().to_string();
    let name = created["name"].as_str().unwrap();
    assert!(name.starts_with("app_"), "{created}");
    let key = created["app_key"].as_str().unwrap().to_string();
    let secret = created["app_secret"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 32);
    assert!(secret.len() >= 43, "{created}");
    // Names follow the seed's rule; one per name.
    let r = alice.post("/v1/apps", json!({"name": "a b"})).await;
    assert!(r.expect_error(400, "invalid_argument").contains("name"));
    let r = alice.post("/v1/apps", json!({"name": name})).await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Up to 5 AppCodes.
    let mut codes = Vec::new();
    for _ in 0..5 {
        let c = alice.post_empty(&format!("/v1/apps/{app}/app-codes")).await;
        let c = c.expect_status(201).clone();
        codes.push((
            c["id"].as_str().unwrap().to_string(),
            c["code"].as_str().unwrap().to_string(),
        ));
    }
    let r = alice.post_empty(&format!("/v1/apps/{app}/app-codes")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("at most") || r.text.contains("most allowed"));
    let code = codes[0].1.clone();

    // The view shows no credential.
    let shown = alice.get(&format!("/v1/apps/{app}")).await;
    shown.expect_status(200);
    for hidden in [&key, &secret, &code] {
        assert!(!shown.text.contains(hidden.as_str()), "{}", shown.text);
    }
    assert_eq!(shown.json["app_codes"].as_array().unwrap().len(), 5);

    // Another user's apps and services are not found; bob cannot bind alice's service.
    bob.get(&format!("/v1/apps/{app}")).await.expect_status(404);
    bob.get(&format!("/v1/apps/{app}/secret"))
        .await
        .expect_status(404);
    let bobs = bob.post("/v1/apps", json!({"name": "bobs"})).await;
    let bobs = bobs.expect_status(201).clone();
    let bob_key = bobs["app_key"].as_str().unwrap().to_string();
    let r = bob
        .post("/v1/apps/bobs/services", json!({"service": svc}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = alice
        .post(
            &format!("/v1/apps/{}/services", bobs["id"].as_str().unwrap()),
            json!({"service": svc}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Bound, but the service does not take app authentication yet.
    let r = alice
        .post(
            &format!("/v1/apps/{app}/services"),
            json!({"service": "svc"}),
        )
        .await;
    assert_eq!(r.expect_status(200)["services"][0]["id"], svc.as_str());
    let url = format!("/v1/infers/{svc}");
    let r = call_with(&gw, &url, &[("x-apig-appcode", &code)]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("app_auth is off"), "{}", r.text);

    // Turned on (the seed's "Modify"): calls with the code and with the key are answered,
    // by id and by name, on both paths; the processor never sees the credentials.
    alice
        .patch(&format!("/v1/services/{svc}"), json!({"app_auth": true}))
        .await
        .expect_status(202);
    eventually("app_auth on", WAIT, || async {
        let s = alice.get(&format!("/v1/services/{svc}")).await.json.clone();
        (s["status"] == "RUNNING" && s["app_auth"] == true).then_some(())
    })
    .await;
    for (path, header, value) in [
        (url.as_str(), "x-apig-appcode", code.as_str()),
        ("/v1/infers/svc", "X-Apig-AppCode", code.as_str()),
        (url.as_str(), "apikey", key.as_str()),
        ("/v2/models/svc/infer", "apikey", key.as_str()),
    ] {
        let r = call_with(&gw, path, &[(header, value)]).await;
        let seen = r.expect_status(200).clone();
        let names = header_names(&seen);
        for credential in ["x-apig-appcode", "apikey", "authorization"] {
            assert!(!names.iter().any(|h| h == credential), "{path}: {seen}");
        }
    }

    // Mistakes and attacks: a made-up code or key, both at once, bob's key on alice's
    // service, and a service of alice's the app is not bound to, which reads exactly like
    // one that does not exist.
    for headers in [
        vec![("x-apig-appcode", "0".repeat(64))],
        vec![("apikey", "nope".to_string())],
        vec![("apikey", bob_key.clone())],
        vec![("x-apig-appcode", code.clone()), ("apikey", key.clone())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call_with(&gw, &url, &h).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text);
    }
    let unbound = call_with(&gw, &format!("/v1/infers/{other}"), &[("apikey", &key)]).await;
    assert_eq!(unbound.status, 401, "{}", unbound.text);
    let missing = call_with(
        &gw,
        "/v1/infers/00000000-0000-4000-8000-000000000000",
        &[("apikey", &key)],
    )
    .await;
    assert_eq!(missing.status, 401, "{}", missing.text);
    assert_eq!(
        unbound.json["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&other, "X"),
        missing.json["error"]["message"]
            .as_str()
            .unwrap()
            .replace("00000000-0000-4000-8000-000000000000", "X"),
    );
    // Nor does the V2 metadata say more.
    let r = Api::new(gw.base(), None)
        .send(
            Api::new(gw.base(), None)
                .request(reqwest::Method::GET, "/v2/models/other")
                .header("apikey", &key),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Query plaintext and reset: the key stays, the secret changes.
    let plain = alice.get(&format!("/v1/apps/{app}/secret")).await;
    let plain = plain.expect_status(200).clone();
    assert_eq!(plain["app_key"], key.as_str());
    assert_eq!(plain["app_secret"], secret.as_str());
    assert_eq!(plain["app_codes"][0]["code"], code.as_str());
    let reset = alice.post_empty(&format!("/v1/apps/{app}/reset")).await;
    let reset = reset.expect_status(200).clone();
    assert_eq!(reset["app_key"], key.as_str());
    assert_ne!(reset["app_secret"], secret.as_str());
    call_with(&gw, &url, &[("apikey", &key)])
        .await
        .expect_status(200);

    // Unbound: refused at once.
    alice
        .delete(&format!("/v1/apps/{app}/services/svc"))
        .await
        .expect_status(200);
    let r = call_with(&gw, &url, &[("x-apig-appcode", &code)]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("not bound"), "{}", r.text);

    // A deleted code, then a deleted app, no longer authenticate.
    alice
        .post(&format!("/v1/apps/{app}/services"), json!({"service": svc}))
        .await
        .expect_status(200);
    call_with(&gw, &url, &[("x-apig-appcode", &codes[1].1)])
        .await
        .expect_status(200);
    alice
        .delete(&format!("/v1/apps/{app}/app-codes/{}", codes[1].0))
        .await
        .expect_status(204);
    let r = call_with(&gw, &url, &[("x-apig-appcode", &codes[1].1)]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    alice
        .delete(&format!("/v1/apps/{app}"))
        .await
        .expect_status(204);
    for (h, v) in [("x-apig-appcode", &code), ("apikey", &key)] {
        let r = call_with(&gw, &url, &[(h, v)]).await;
        assert_eq!(r.status, 401, "{h}: {}", r.text);
    }
    // The owner's token still calls.
    alice
        .post(&url, json!({"mode": "echo"}))
        .await
        .expect_status(200);

    // Each change is audited.
    let audit = gw.admin().get("/v1/audit").await;
    for action in [
        "createApp",
        "addAppCode",
        "bindAppService",
        "viewAppSecret",
        "resetAppSecret",
        "unbindAppService",
        "deleteAppCode",
        "deleteApp",
    ] {
        assert!(audit.text.contains(action), "{action}: {}", audit.text);
    }

    // The CLI.
    let out = gw
        .cli(
            alice.token().unwrap(),
            &["app", "create", "--name", "cli-app"],
            &[],
        )
        .await;
    out.assert_ok("app create");
    assert!(out.stdout.contains("AppKey"), "{}", out.stdout);
    gw.cli(
        alice.token().unwrap(),
        &["app", "bind", "cli-app", "svc"],
        &[],
    )
    .await
    .assert_ok("app bind");
    let out = gw.cli(alice.token().unwrap(), &["app", "list"], &[]).await;
    out.assert_ok("app list");
    assert!(out.stdout.contains("cli-app"), "{}", out.stdout);
    let out = gw
        .cli(alice.token().unwrap(), &["app", "add-code", "cli-app"], &[])
        .await;
    out.assert_ok("app add-code");
    let cli_code = out.stdout.split_whitespace().next().unwrap().to_string();
    call_with(&gw, &url, &[("x-apig-appcode", &cli_code)])
        .await
        .expect_status(200);
    gw.cli(alice.token().unwrap(), &["app", "delete", "cli-app"], &[])
        .await
        .assert_ok("app delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_settings_pick_versions_by_header_and_hash_and_add_their_header() {
    let Setup { _s3, gw, alice } = setup(true).await;
    let models = json!([
        {"model": "echo", "version": "0.0.1", "weight": 50},
        {"model": "echo", "version": "0.0.2", "weight": 50}]);
    let rule = |setting: &str, version: &str| json!({"setting": setting, "version": version});

    // Refused with the field and what is wrong, nothing half-done.
    let cases = [
        (
            json!(vec![rule("#HEADER_version == '0.0.1'", "0.0.1"); 11]),
            "at most 10",
        ),
        (
            json!([rule("#HEADER_version == '0.0.1'", "9.9.9")]),
            "custom_settings[0].version",
        ),
        (
            json!([
                rule("#USER_NAME == 'a'", "0.0.1"),
                rule("#HEADER_version = '1'", "0.0.2")
            ]),
            "custom_settings[1].setting: at character 17",
        ),
        (
            json!([rule("#HEADER_x matches '(a{100}){100}'", "0.0.1")]),
            "too large",
        ),
        (
            json!([rule("#HEADER_x matches '(?<=a)b'", "0.0.1")]),
            "look-around",
        ),
        (
            json!([{"setting": "#USER_NAME == 'alice'", "version": "0.0.1",
                    "header_name": "X-Cfg", "header_value": "A\r\nX-Evil: 1"}]),
            "custom_settings[0].header_value",
        ),
        (
            json!([{"setting": "#USER_NAME == 'alice'", "version": "0.0.1",
                    "header_name": "Authorization", "header_value": "Bearer x"}]),
            "custom_settings[0].header_name",
        ),
        (
            json!([rule(
                &format!("#USER_NAME == '{}'", "a".repeat(2000)),
                "0.0.1"
            )]),
            "longer than",
        ),
    ];
    for (rules, says) in cases {
        let r = alice
            .post(
                "/v1/services",
                json!({"name": "routed", "models": models, "custom_settings": rules}),
            )
            .await;
        let e = r.expect_error(400, "invalid_argument");
        assert!(e.contains(says), "{says}: {e}");
    }
    assert!(
        alice.get("/v1/services").await.json["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let id = deploy(
        &alice,
        json!({"name": "routed", "models": models, "custom_settings": [
            {"setting": "#HEADER_version == '0.0.1'", "version": "0.0.1",
             "header_name": "X-Cfg", "header_value": "A"},
            {"setting": "#HEADER_uid.hashCode() % 100 < 10", "version": "0.0.2",
             "header_name": "X-Canary", "header_value": "yes"},
        ]}),
    )
    .await;
    let shown = alice.get(&format!("/v1/services/{id}")).await;
    assert_eq!(
        shown.json["custom_settings"][1]["setting"],
        "#HEADER_uid.hashCode() % 100 < 10"
    );
    let url = format!("/v1/infers/{id}");
    let call = |headers: Vec<(&'static str, &'static str)>| {
        let alice = alice.clone();
        let url = url.clone();
        async move {
            let mut req = alice
                .request(reqwest::Method::POST, &url)
                .json(&json!({"mode": "echo"}));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let r = alice.send(req).await;
            let seen = r.expect_status(200).clone();
            (
                r.header("x-model-version").unwrap().to_string(),
                header_names(&seen),
            )
        }
    };

    // `version: 0.0.1` always hits 0.0.1, and the processor sees X-Cfg.
    for _ in 0..100 {
        let (v, names) = call(vec![("version", "0.0.1")]).await;
        assert_eq!(v, "0.0.1");
        assert!(names.iter().any(|h| h == "x-cfg"), "{names:?}");
    }
    // Java's hashCode: "user-42" is -147182656, % 100 = -56 < 10: always 0.0.2;
    // "uid-12345" is 1478843510, % 100 = 10: the weights decide, and no header is added.
    for _ in 0..20 {
        let (v, names) = call(vec![("uid", "user-42")]).await;
        assert_eq!(v, "0.0.2");
        assert!(names.iter().any(|h| h == "x-canary"), "{names:?}");
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let (v, names) = call(vec![("uid", "uid-12345")]).await;
        assert!(
            !names.iter().any(|h| h == "x-canary" || h == "x-cfg"),
            "{names:?}"
        );
        seen.insert(v);
    }
    assert_eq!(seen.len(), 2, "both versions answer by weight: {seen:?}");

    // PATCH checks them the same way; [] removes them.
    let r = alice
        .patch(
            &format!("/v1/services/{id}"),
            json!({"custom_settings": vec![rule("#USER_NAME == 'alice'", "0.0.1"); 11]}),
        )
        .await;
    r.expect_error(400, "invalid_argument");
    alice
        .patch(
            &format!("/v1/services/{id}"),
            json!({"custom_settings": []}),
        )
        .await
        .expect_status(202);
    eventually("the rules gone", WAIT, || async {
        let s = alice.get(&format!("/v1/services/{id}")).await.json.clone();
        (s["status"] == "RUNNING" && s["custom_settings"] == json!([])).then_some(())
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(call(vec![("version", "0.0.1")]).await.0);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The CLI sets rules as typed.
    let out = gw
        .cli(
            alice.token().unwrap(),
            &[
                "service",
                "update",
                "routed",
                "--rule",
                "#HEADER_version == '0.0.2'=>0.0.2;X-Cfg=B",
            ],
            &[],
        )
        .await;
    out.assert_ok("service update --rule");
    eventually("the CLI's rule", WAIT, || async {
        let s = alice.get(&format!("/v1/services/{id}")).await.json.clone();
        (s["status"] == "RUNNING" && s["custom_settings"][0]["header_name"] == "X-Cfg")
            .then_some(())
    })
    .await;
    assert_eq!(call(vec![("version", "0.0.2")]).await.0, "0.0.2");

    // The seed's latency figures, per service and model, after calls.
    let model_id = alice.get("/v1/models/echo").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let metrics = gw.admin().get("/metrics").await;
    for name in ["tp_99", "tp_999", "avg_latency"] {
        let line =
            format!("atelier_inference_{name}{{service_id=\"{id}\",model_id=\"{model_id}\"}} ");
        assert!(metrics.text.contains(&line), "{line}: {}", metrics.text);
    }
}

/// The headers Huawei Cloud's SDK signer gives a request with this AppKey and AppSecret
/// (tests/fixtures/apig-sign.py), signed `skew` minutes off the clock.
fn sdk_signed(
    method: &str,
    url: &str,
    (key, secret): (&str, &str),
    body: &[u8],
    content_type: &str,
    skew: i32,
) -> Vec<(String, String)> {
    let file = std::env::temp_dir().join(format!("apig-body-{}", atelier_tests::unique()));
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new(atelier_tests::tools_python())
        .arg(repo_root().join("tests/fixtures/apig-sign.py"))
        .args([method, url, key, secret])
        .arg(&file)
        .args([content_type, &skew.to_string()])
        .output()
        .expect("running apig-sign.py");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "apig-sign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    headers
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect()
}

async fn send_signed(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Reply {
    let anon = Api::new(gw.base(), None);
    let mut req = anon.request(method, path).body(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    anon.send(req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_sign_calls_with_their_secret_as_huawei_clouds_sdk_does() {
    let Setup { _s3, gw, alice } = setup(false).await;
    let svc = deploy(
        &alice,
        json!({"name": "svc", "app_auth": true,
               "models": [{"model": "echo", "version": "0.0.1"}]}),
    )
    .await;
    let created = alice.post("/v1/apps", json!({"name": "signer"})).await;
    let created = created.expect_status(201).clone();
    let key = created["app_key"].as_str().unwrap().to_string();
    let secret = created["app_secret"].as_str().unwrap().to_string();
    let creds = (key.as_str(), secret.as_str());
    alice
        .post("/v1/apps/signer/services", json!({"service": svc}))
        .await
        .expect_status(200);
    let base = gw.base();
    let body = br#"{"mode": "echo"}"#.to_vec();

    // Signed by the SDK, with a query and a path the SDK encodes: answered, and the
    // processor sees neither the signature nor anything else of the credentials.
    for path in [
        format!("/v1/infers/{svc}?b=2&a=x%20y&a=%C3%A9"),
        "/v1/infers/svc/some%20api/sub".to_string(),
        "/v2/models/svc/infer".to_string(),
    ] {
        let h = sdk_signed(
            "POST",
            &format!("{base}{path}"),
            creds,
            &body,
            "application/json",
            0,
        );
        let r = send_signed(&gw, reqwest::Method::POST, &path, &h, body.clone()).await;
        let seen = r.expect_status(200).clone();
        let names = header_names(&seen);
        assert!(!names.iter().any(|n| n == "authorization"), "{seen}");
        assert!(names.iter().any(|n| n == "x-sdk-date"), "{seen}");
    }
    // A multipart body: the SDK sends it unsigned (UNSIGNED-PAYLOAD), as APIG allows.
    let multipart =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\necho\r\n--XyZ--\r\n"
            .to_vec();
    let path = format!("/v1/infers/{svc}");
    let h = sdk_signed(
        "POST",
        &format!("{base}{path}"),
        creds,
        &multipart,
        "multipart/form-data; boundary=XyZ",
        0,
    );
    assert!(
        h.iter().any(|(k, v)| k.eq_ignore_ascii_case("x-sdk-content-sha256") && v == "UNSIGNED-PAYLOAD"),
        "{h:?}"
    );
    let r = send_signed(&gw, reqwest::Method::POST, &path, &h, multipart).await;
    assert_eq!(r.expect_status(200)["body"], "multipart", "{}", r.text);
    // V2 readiness, a GET with no body.
    let ready = format!("{base}/v2/models/svc/ready");
    let h = sdk_signed("GET", &ready, creds, b"", "application/json", 0);
    send_signed(
        &gw,
        reqwest::Method::GET,
        "/v2/models/svc/ready",
        &h,
        Vec::new(),
    )
    .await
    .expect_status(200);

    // What must fail: a body changed after signing, a path changed, a signing time 16
    // minutes off, another secret, an unknown AppKey, a signed header dropped.
    let url = format!("{base}{path}");
    let good = sdk_signed("POST", &url, creds, &body, "application/json", 0);
    let tampered = br#"{"mode": "echo", "more": 1}"#.to_vec();
    let r = send_signed(&gw, reqwest::Method::POST, &path, &good, tampered).await;
    assert!(
        r.expect_error(401, "unauthenticated")
            .contains("does not match"),
        "{}",
        r.text
    );
    let r = send_signed(
        &gw,
        reqwest::Method::POST,
        &format!("{path}/other"),
        &good,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    for skew in [-16, 16] {
        let late = sdk_signed("POST", &url, creds, &body, "application/json", skew);
        let r = send_signed(&gw, reqwest::Method::POST, &path, &late, body.clone()).await;
        let msg = r.expect_error(401, "unauthenticated");
        assert!(
            msg.contains("X-Sdk-Date") && msg.contains("15 minutes"),
            "{msg}"
        );
    }
    let forged = sdk_signed(
        "POST",
        &url,
        (&key, "not-the-secret"),
        &body,
        "application/json",
        0,
    );
    let r = send_signed(&gw, reqwest::Method::POST, &path, &forged, body.clone()).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let unknown = sdk_signed(
        "POST",
        &url,
        ("0".repeat(32).as_str(), &secret),
        &body,
        "application/json",
        0,
    );
    let r = send_signed(&gw, reqwest::Method::POST, &path, &unknown, body.clone()).await;
    assert!(
        r.expect_error(401, "unauthenticated").contains("AppKey"),
        "{}",
        r.text
    );
    let dropped: Vec<(String, String)> = good
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .cloned()
        .collect();
    let r = send_signed(&gw, reqwest::Method::POST, &path, &dropped, body.clone()).await;
    assert!(
        r.expect_error(401, "unauthenticated")
            .contains("content-type"),
        "{}",
        r.text
    );

    // After a reset the old secret signs nothing; the new one does.
    let reset = alice.post_empty("/v1/apps/signer/reset").await;
    let new_secret = reset.expect_status(200)["app_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let old = sdk_signed("POST", &url, creds, &body, "application/json", 0);
    let r = send_signed(&gw, reqwest::Method::POST, &path, &old, body.clone()).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let new = sdk_signed(
        "POST",
        &url,
        (&key, &new_secret),
        &body,
        "application/json",
        0,
    );
    send_signed(&gw, reqwest::Method::POST, &path, &new, body.clone())
        .await
        .expect_status(200);

    // A signed body over the service's limit: 413 before the signature is even checked.
    let big = vec![b' '; 13 * 1024 * 1024];
    let h = sdk_signed(
        "POST",
        &url,
        (&key, &new_secret),
        b"{}",
        "application/json",
        0,
    );
    let r = send_signed(&gw, reqwest::Method::POST, &path, &h, big).await;
    assert_eq!(r.status, 413, "{}", r.text);
}
