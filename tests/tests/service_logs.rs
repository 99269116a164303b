//! Per-service logs (spec/inference.md §2.17, §5 item 44): the real gateway serving the iris
//! model with the hostile test processor (tests/fixtures/hostile-processor), whose modes
//! log a line, flood its log, or trap; `GET /v1/services/{service}/logs` and
//! `atelier service logs`.

use atelier_tests::s3::S3Server;
use atelier_tests::serving::{
    WAIT, broken_package, deploy, gateway, hostile_package, import, import_version, wait_service,
};
use atelier_tests::{Api, eventually};
use serde_json::{Value, json};

/// The log lines of `service` for `query` (a query string), as JSON.
async fn logs(api: &Api, service: &str, query: &str) -> Value {
    let r = api
        .get(&format!("/v1/services/{service}/logs?{query}"))
        .await;
    r.expect_status(200).clone()
}

fn texts(v: &Value) -> Vec<String> {
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

/// The lines of the last hour once one of them contains `needle`.
async fn once_logged(api: &Api, service: &str, needle: &str) -> Value {
    eventually(&format!("a log line with {needle:?}"), WAIT, || async {
        let v = logs(api, service, "since=1h").await;
        texts(&v).iter().any(|t| t.contains(needle)).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_services_log_says_what_happened_and_is_searched_the_seeds_way() {
    let s3 = S3Server::start();
    hostile_package(&s3.bucket("models").join("hostile")).await;
    broken_package(&s3.bucket("models").join("broken")).await;

    let mut gw = gateway(&[]).await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);
    let bob = gw.api(&gw.create_user("bob").await);
    s3.connect(&api, "local").await;
    import(&api, "hostile", "hostile").await;
    let id = deploy(&api, "hostile", "hostile", "0.0.1").await;
    let url = format!("/v1/infers/{id}");

    // The deploy and its outcome.
    let v = once_logged(&api, &id, "RUNNING").await;
    let t = texts(&v);
    assert!(
        t[0].starts_with("deploy requested by alice: model hostile 0.0.1 (100%)"),
        "{t:?}"
    );
    assert_eq!(v["lines"][0]["source"], "gateway");
    assert_eq!(v["truncated"], false);

    // A call whose processor logs an error and prints; one that traps, with a secret in its
    // body and the caller's token in its header.
    api.post(&url, json!({"mode": "log"}))
        .await
        .expect_status(200);
    let r = api
        .post(
            &url,
            json!({"mode": "raise", "secret": "hunter2-in-the-body"}),
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
    let v = once_logged(&api, &id, "call failed").await;
    let t = texts(&v);
    assert!(
        t.contains(&"[error] an error in preprocess, as asked".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&"[stdout] printed by preprocess".to_string()),
        "{t:?}"
    );
    let failed = t.iter().find(|l| l.contains("call failed")).unwrap();
    assert!(
        failed.starts_with("call failed (model hostile 0.0.1): failed: ")
            && failed.contains("trapped"),
        "{failed}"
    );
    let raw = serde_json::to_string(&v).unwrap();
    assert!(!raw.contains("hunter2") && !raw.contains(&token), "{raw}");

    // §5 item 44: `?since=5m&q=er?or` gives the lines with the word `error`.
    let hits = logs(&api, &id, "since=5m&q=er%3For").await;
    let t = texts(&hits);
    assert!(
        t.contains(&"[error] an error in preprocess, as asked".to_string()),
        "{t:?}"
    );
    for line in &t {
        let words: Vec<String> = line
            .split(|c: char| !c.is_alphanumeric())
            .map(str::to_lowercase)
            .collect();
        assert!(words.iter().any(|w| w == "error"), "{line}");
    }
    // A phrase, OR, case.
    let t = texts(&logs(&api, &id, "since=1h&q=%22AN+Error+in%22").await);
    assert_eq!(t, ["[error] an error in preprocess, as asked"]);
    let t = texts(&logs(&api, &id, "since=1h&q=printed+OR+trapped").await);
    assert_eq!(t.len(), 2, "{t:?}");
    // The name works as well as the id.
    assert_eq!(logs(&api, "hostile", "since=1h").await["lines"], v["lines"]);

    // A query with a delimiter is refused, naming it and the word (§5 item 44).
    let r = api.get(&format!("/v1/services/{id}/logs?q=a%3Bb")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("\\\"a;b\\\" contains ';'"), "{}", r.text);
    // So are a huge query, too many words, a bad window, a bad limit, an unknown parameter.
    for (query, says) in [
        (format!("q={}", "a".repeat(10_000)), "at most 512"),
        (
            format!("q={}", vec!["w"; 40].join("+")),
            "more than 16 words",
        ),
        ("since=yesterday".into(), "since:"),
        ("since=5m&until=10m".into(), "before until"),
        ("limit=0".into(), "limit: 0"),
        ("limit=100000".into(), "between 1 and 10000"),
        ("tail=5".into(), "tail"),
    ] {
        let r = api.get(&format!("/v1/services/{id}/logs?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert!(r.text.contains(says), "{query}: {}", r.text);
    }

    // `since` leaves out older lines, `until` newer ones (the times the lines carry).
    let all = v["lines"].as_array().unwrap().clone();
    let k = (1..all.len())
        .find(|&i| all[i]["time"] != all[i - 1]["time"])
        .expect("two lines with different times");
    let at = all[k]["time"].as_str().unwrap();
    let after = logs(&api, &id, &format!("since={at}")).await;
    assert_eq!(after["lines"].as_array().unwrap()[..], all[k..]);
    let before = logs(&api, &id, &format!("since=1h&until={at}")).await;
    assert_eq!(before["lines"].as_array().unwrap()[..], all[..k]);
    // `limit` keeps the newest, and says it cut.
    let newest = logs(&api, &id, "since=1h&limit=2").await;
    assert_eq!(
        newest["lines"].as_array().unwrap()[..],
        all[all.len() - 2..]
    );
    assert_eq!(newest["truncated"], true);

    // Plain text when asked for.
    let r = api
        .send(
            api.request(
                reqwest::Method::GET,
                &format!("/v1/services/{id}/logs?since=1h"),
            )
            .header("accept", "text/plain"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    let first = r.text.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "{} gateway {}",
            all[0]["time"].as_str().unwrap(),
            texts(&v)[0]
        )
    );

    // Another user's service is not found, by id or name; an admin sees it.
    let r = bob.get(&format!("/v1/services/{id}/logs")).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = bob.get("/v1/services/hostile/logs").await;
    assert_eq!(r.status, 404, "{}", r.text);
    gw.admin()
        .get(&format!("/v1/services/{id}/logs?since=1h"))
        .await
        .expect_status(200);
    // Paths are not service ids.
    for path in ["..%2F..%2Fetc", "x%2F..%2F..%2F..", "%2Fetc"] {
        let r = api.get(&format!("/v1/services/{path}/logs")).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }

    // A processor that floods its log: a page of lines per call, and the rest counted.
    api.post(&url, json!({"mode": "flood"}))
        .await
        .expect_status(200);
    let v = once_logged(&api, &id, "more processor lines of this call were dropped").await;
    let t = texts(&v);
    let kept = t
        .iter()
        .filter(|l| l.starts_with("[info] flood line "))
        .count();
    assert_eq!(kept, 100, "{t:?}");
    assert!(
        t.contains(
            &"900 more processor lines of this call were dropped (at most 100 a call are kept)"
                .to_string()
        ),
        "{t:?}"
    );

    // The log outlives the gateway: after a graceful restart every line is there, and the
    // service says it was loaded again.
    let before = logs(&api, &id, "since=1h").await["lines"].clone();
    gw.restart().await;
    let v = once_logged(&api, &id, "loaded again at the gateway's start").await;
    let after = v["lines"].as_array().unwrap();
    assert_eq!(after[..after.len() - 1], before.as_array().unwrap()[..]);

    // The CLI prints the lines.
    let out = gw
        .cli(
            &token,
            &[
                "service", "logs", "hostile", "--since", "1h", "--q", "er?or",
            ],
            &[],
        )
        .await;
    out.assert_ok("service logs");
    assert!(
        out.stdout
            .contains("processor [error] an error in preprocess, as asked"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("flood line"), "{}", out.stdout);

    // A deploy that fails says why.
    import_version(&api, "hostile", "broken", "0.0.2").await;
    let r = api
        .post(
            "/v1/services",
            json!({"name": "broken", "models": [{"model": "hostile", "version": "0.0.2"}]}),
        )
        .await;
    let broken_id = r.expect_status(202)["id"].as_str().unwrap().to_string();
    wait_service(&api, &broken_id, "FAILED").await;
    let v = once_logged(&api, &broken_id, "FAILED").await;
    let failed = texts(&v)
        .into_iter()
        .find(|t| t.starts_with("FAILED: "))
        .unwrap();
    assert!(failed.contains("model hostile 0.0.2"), "{failed}");

    // Stopping is logged; deleting removes the logs (the gateway's own directory, named by
    // the service's id).
    api.post_empty(&format!("/v1/services/{id}/stop"))
        .await
        .expect_status(200);
    once_logged(&api, &id, "stop requested by alice").await;
    let dir = gw.data_dir.join("services").join(&id);
    assert!(dir.join("logs/gateway.log").is_file());
    api.delete(&format!("/v1/services/{id}"))
        .await
        .expect_status(204);
    assert!(!dir.exists(), "{}", dir.display());
    let r = api.get(&format!("/v1/services/{id}/logs")).await;
    assert_eq!(r.status, 404, "{}", r.text);
}
