//! A notebook's whole life through the API and the proxy, against real JupyterLab:
//! create → RUNNING → JupyterLab page, kernel, files → stop → 409 → start → files kept → delete.

use atelier_tests::{Gateway, Kernel, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_lifecycle() {
    let gw = Gateway::start().await;
    let token = gw.create_user("alice").await;
    let api = gw.api(&token);

    // Create: 201 CREATING, then RUNNING by itself.
    let id = gw.create_notebook(&token, "lifecycle").await;
    let nb = gw.wait_status(&token, &id, "RUNNING").await;
    assert_eq!(nb["name"], "lifecycle");
    assert_eq!(nb["owner"], "alice");
    assert_eq!(nb["url"], format!("/nb/{id}/lab"));
    assert_eq!(nb["status_reason"], json!(null));

    // Events: the seed's names and severities, in order.
    let r = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let events = r.expect_status(200)["items"]
        .as_array()
        .expect("items")
        .clone();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default(),
                e["severity"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Scheduled", "Warning"),
            ("PullingImage", "Warning"),
            ("PulledImage", "Warning"),
            ("NotebookHealthy", "Major"),
        ],
        "{}",
        r.text
    );
    for e in &events {
        assert_eq!(e["notebook_id"], id.as_str());
        assert!(!e["description"].as_str().unwrap_or_default().is_empty());
    }
    let times: Vec<&str> = events.iter().filter_map(|e| e["time"].as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "event times out of order: {times:?}"
    );

    // JupyterLab's page through the proxy.
    let lab = api.get(&format!("/nb/{id}/lab")).await;
    lab.expect_status(200);
    assert!(
        lab.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        lab.headers
    );
    assert!(
        lab.text.contains("JupyterLab") || lab.text.contains("jupyter-config-data"),
        "not JupyterLab's page: {}",
        atelier_tests::shorten(&lab.text)
    );

    // A kernel runs code.
    let mut kernel = Kernel::start(&api, &id).await;
    assert_eq!(kernel.run("print(6*7)").await, "42\n");

    // A file through Jupyter's contents API.
    let put = api
        .put(
            &format!("/nb/{id}/api/contents/hello.txt"),
            json!({"type": "file", "format": "text", "content": "hi"}),
        )
        .await;
    assert!(
        put.status == 201 || put.status == 200,
        "{}: {}",
        put.status,
        put.text
    );
    let got = api
        .get(&format!("/nb/{id}/api/contents/hello.txt?content=1"))
        .await;
    assert_eq!(got.expect_status(200)["content"], "hi", "{}", got.text);
    assert_eq!(
        std::fs::read_to_string(gw.notebook_dir(&id).join("work/hello.txt")).unwrap_or_default(),
        "hi",
        "the file is in the notebook's work dir"
    );
    drop(kernel);

    // Stop: 202 STOPPING, then STOPPED with a StopNotebook event.
    let r = api.post_empty(&format!("/v1/notebooks/{id}/stop")).await;
    assert_eq!(r.expect_status(202)["status"], "STOPPING", "{}", r.text);
    gw.wait_status(&token, &id, "STOPPED").await;
    let r = api.get(&format!("/v1/notebooks/{id}/events")).await;
    let last = r.expect_status(200)["items"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("events");
    assert_eq!(last["event"], "StopNotebook", "{}", r.text);
    assert_eq!(last["severity"], "Major", "{}", r.text);

    // While stopped the proxy answers 409: JSON for API clients, HTML for browsers.
    let msg = api
        .get(&format!("/nb/{id}/lab"))
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("STOPPED"), "{msg}");
    api.get(&format!("/nb/{id}/api/contents/hello.txt"))
        .await
        .expect_error(409, "conflict");
    let page = api
        .send(
            api.request(reqwest::Method::GET, &format!("/nb/{id}/lab"))
                .header("accept", "text/html,application/xhtml+xml"),
        )
        .await;
    page.expect_status(409);
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    assert!(
        page.text.contains("<html") && page.text.contains("STOPPED"),
        "{}",
        page.text
    );

    // Start again: the file is still there, and a new kernel sees it in its working dir.
    let r = api.post_empty(&format!("/v1/notebooks/{id}/start")).await;
    assert_eq!(r.expect_status(202)["status"], "STARTING", "{}", r.text);
    gw.wait_status(&token, &id, "RUNNING").await;
    let got = api
        .get(&format!("/nb/{id}/api/contents/hello.txt?content=1"))
        .await;
    assert_eq!(got.expect_status(200)["content"], "hi", "{}", got.text);
    let mut kernel = Kernel::start(&api, &id).await;
    assert_eq!(kernel.run("print(open('hello.txt').read())").await, "hi\n");
    drop(kernel);

    // Delete: 202 DELETING, then gone from the API, the list, the proxy and the disk.
    let r = api.delete(&format!("/v1/notebooks/{id}")).await;
    assert_eq!(r.expect_status(202)["status"], "DELETING", "{}", r.text);
    gw.wait_gone(&token, &id).await;
    api.get(&format!("/v1/notebooks/{id}"))
        .await
        .expect_error(404, "not_found");
    let list = api.get("/v1/notebooks").await;
    assert_eq!(list.expect_status(200)["total"], 0, "{}", list.text);
    assert_eq!(list.json["items"], json!([]), "{}", list.text);
    api.get(&format!("/nb/{id}/lab"))
        .await
        .expect_error(404, "not_found");
    assert!(
        !gw.notebook_dir(&id).exists(),
        "{} still exists after delete",
        gw.notebook_dir(&id).display()
    );
}
