//! Training jobs through the API, as the tests follow them.

use std::time::Duration;

use serde_json::Value;

use crate::Api;

/// Until the job is `want`; on a time-out, fails with the job, its events and its log.
pub async fn wait(api: &Api, name: &str, want: &str, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = api
            .get(&format!("/v1/training-jobs/{name}"))
            .await
            .expect_status(200)
            .clone();
        if v["status"] == want {
            return v;
        }
        let over = ["COMPLETED", "FAILED", "ABNORMAL", "TERMINATED"]
            .contains(&v["status"].as_str().unwrap_or_default());
        if over || std::time::Instant::now() >= deadline {
            let ev = events(api, name).await;
            let log = log_of(api, name, "").await;
            panic!(
                "job {name} not {want} (within {} s): {v}\nevents: {ev:#?}\nworker 0's log:\n{log}",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn log_of(api: &Api, name: &str, query: &str) -> String {
    let r = api
        .send(api.request(
            reqwest::Method::GET,
            &format!("/v1/training-jobs/{name}/logs?{query}"),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.text.clone()
}

pub async fn events(api: &Api, name: &str) -> Vec<String> {
    api.get(&format!("/v1/training-jobs/{name}/events"))
        .await
        .expect_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}
