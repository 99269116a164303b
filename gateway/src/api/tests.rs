//! The HTTP API in process: the router built by `server::build` on a real store and the
//! `external` backend (which starts no process), driven with `tower::ServiceExt::oneshot`.
//! No gateway process and no port: for API behaviour that needs no running notebook.

use std::path::PathBuf;

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::{BackendKind, Settings};

const ADMIN: &str = "atl_router-test-admin-token-0123456789abcdef";

struct App {
    state: crate::api::state::AppState,
    router: axum::Router,
    dir: PathBuf,
}

struct Reply {
    status: StatusCode,
    content_type: String,
    json: Value,
    text: String,
}

impl App {
    async fn new() -> App {
        let dir = std::env::temp_dir().join(format!("atelier-api-{}", uuid::Uuid::new_v4()));
        let mut settings = Settings {
            data_dir: dir.clone(),
            admin_token: Some(ADMIN.into()),
            ssh_addr: None,
            ..Settings::default()
        };
        settings.backend.kind = BackendKind::External;
        // Never dialled: these tests open no notebook.
        settings.backend.external_url = Some("http://127.0.0.1:9".into());
        let state = crate::server::build(settings).await.unwrap();
        App {
            router: super::router(state.clone()),
            state,
            dir,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            content_type,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// A user with role `user` and an API token of theirs.
    async fn user(&self, name: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/v1/users",
                Some(ADMIN),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .call(
                Method::POST,
                &format!("/v1/users/{name}/tokens"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_with_the_json_error_shape() {
    let app = App::new().await;
    for token in [None, Some("atl_not-a-token")] {
        let r = app.call(Method::GET, "/v1/whoami", token, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert!(r.json["error"]["message"].is_string(), "{}", r.text);
        assert!(r.json["error"]["code"].is_string(), "{}", r.text);
    }
    let r = app.call(Method::GET, "/v1/whoami", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "admin", "{}", r.text);
}

#[tokio::test]
async fn unknown_endpoints_and_methods_are_named_in_the_error() {
    let app = App::new().await;
    let r = app
        .call(Method::GET, "/v1/nothing-here", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.contains("/v1/nothing-here"), "{}", r.text);
    let r = app.call(Method::PUT, "/v1/whoami", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.text.contains("PUT"), "{}", r.text);
}

#[tokio::test]
async fn metrics_are_for_admins_and_show_every_auto_stop_reason_from_the_start() {
    let app = App::new().await;
    let alice = app.user("alice").await;
    let r = app.call(Method::GET, "/metrics", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app.call(Method::GET, "/metrics", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{}",
        r.content_type
    );
    for line in [
        "atelier_notebook_auto_stops_total{reason=\"lease_expired\"} 0",
        "atelier_notebook_auto_stops_total{reason=\"idle\"} 0",
        "atelier_plugin_compilations_total 0",
    ] {
        assert!(r.text.contains(line), "{line} missing from:\n{}", r.text);
    }
}

#[tokio::test]
async fn bad_notebook_requests_name_the_field_and_create_nothing() {
    let app = App::new().await;
    let alice = app.user("alice").await;
    for (body, names) in [
        (json!({"name": "no spaces allowed"}), "name"),
        (json!({"name": "ok", "flavor": "no-such-flavor"}), "flavor"),
        (json!({"name": "ok", "colour": "blue"}), "colour"),
    ] {
        let r = app
            .call(
                Method::POST,
                "/v1/notebooks",
                Some(&alice),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(
            r.text.contains(names),
            "{body}: the error should name {names}: {}",
            r.text
        );
    }
    let r = app
        .call(Method::GET, "/v1/notebooks", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["items"], json!([]), "{}", r.text);
}

#[tokio::test]
async fn another_users_notebook_is_not_found_and_an_admin_sees_it() {
    let app = App::new().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let r = app
        .call(
            Method::POST,
            "/v1/notebooks",
            Some(&alice),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/notebooks/{id}");
    let r = app.call(Method::GET, &path, Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app.call(Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app.call(Method::GET, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "mine", "{}", r.text);
    let r = app.call(Method::GET, &path, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// Serves the app on a loopback port the way `atelier serve` does; stops when dropped.
struct Listening {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _server: tokio::task::JoinHandle<()>,
}

impl App {
    async fn listen(&self) -> Listening {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        #[allow(clippy::disallowed_methods, reason = "the test keeps the handle")]
        let server = tokio::spawn(crate::server::serve_http(
            listener,
            self.state.clone(),
            self.router.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Listening {
            addr,
            _stop: stop,
            _server: server,
        }
    }
}

/// What a plain HTTP/1.1 client that writes the whole body before it reads (reqwest,
/// Python's requests) sees: the status line, or the error that ended its write or read.
fn post_then_read(
    addr: std::net::SocketAddr,
    path: &str,
    declared: usize,
    sent: usize,
) -> Result<String, std::io::Error> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    tcp.set_write_timeout(Some(std::time::Duration::from_secs(60)))?;
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )?;
    let chunk = vec![b' '; 64 * 1024];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        tcp.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        if tcp.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_its_413_even_when_the_client_writes_it_all_first() {
    let app = App::new().await;
    let on = app.listen().await;
    let addr = on.addr;
    // 24 MiB against the API's 2 MiB: far more than the sockets buffer, so the client is
    // still writing when the gateway has answered.
    let size = 24 * 1024 * 1024;
    let status =
        tokio::task::spawn_blocking(move || post_then_read(addr, "/v1/notebooks", size, size))
            .await
            .unwrap();
    let status = status
        .expect("the client's write or read failed: the gateway closed before it read the body");
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_is_read_only_up_to_a_bound() {
    let app = App::new().await;
    let on = app.listen().await;
    let addr = on.addr;
    // Declares 4 GiB and writes until the gateway stops reading: it must stop, by closing,
    // well before (the bound is ATELIER's LINGER_BYTES, far below 1 GiB).
    let r = tokio::task::spawn_blocking(move || {
        post_then_read(addr, "/v1/notebooks", 4 << 30, 1 << 30)
    })
    .await
    .unwrap();
    assert!(
        r.is_err(),
        "the gateway read 1 GiB of a refused body: {r:?}"
    );
}

/// What the relay on a notebook's socket answers: the request as code in the notebook sends
/// it (any headers it likes), served for `owner` (a user id).
async fn relayed(
    api: &crate::api::files::NotebookApi,
    owner: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = api.relay(owner, "nb-test", req).await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_notebooks_socket_acts_as_its_owner_on_their_workflows_only_and_never_as_an_admin() {
    let app = App::new().await;
    let api = crate::api::files::NotebookApi::default();
    api.connect(&app.state);
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id_of = |r: Reply| r.json["id"].as_str().unwrap().to_owned();
    let alice_id = id_of(
        app.call(Method::GET, "/v1/whoami", Some(&alice), None)
            .await,
    );
    let bob_id = id_of(app.call(Method::GET, "/v1/whoami", Some(&bob), None).await);
    let admin_id = id_of(app.call(Method::GET, "/v1/whoami", Some(ADMIN), None).await);
    let definition = json!({"name": "etl", "desc": "d", "steps": [
        {"name": "prep", "step_type": "wasm", "properties": {"plugin": "p"}}]});

    // Alice's notebook creates a workflow: it is hers, seen through her token.
    let (s, v) = relayed(
        &api,
        &alice_id,
        Method::POST,
        "/v1/workflows",
        &[],
        Some(definition.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["owner"], "alice", "{v}");
    let wf = v["id"].as_str().unwrap().to_owned();
    let r = app
        .call(Method::GET, "/v1/workflows/etl", Some(&alice), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["id"], wf.as_str());
    let (s, v) = relayed(
        &api,
        &alice_id,
        Method::GET,
        "/v1/workflow-schema",
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Bob's notebook sees none of it, by name or id, listed or not, even with alice's token
    // or the admin's in its headers.
    for headers in [
        vec![],
        vec![("authorization", format!("Bearer {alice}"))],
        vec![("authorization", format!("Bearer {ADMIN}"))],
        vec![("cookie", format!("atelier_session={ADMIN}"))],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in ["/v1/workflows/etl", &format!("/v1/workflows/{wf}")] {
            let (s, v) = relayed(&api, &bob_id, Method::GET, path, &h, None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path} {h:?}: {v}");
        }
        let (s, v) = relayed(&api, &bob_id, Method::GET, "/v1/workflows", &h, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["items"], json!([]), "{h:?}: {v}");
        let (s, v) = relayed(
            &api,
            &bob_id,
            Method::DELETE,
            &format!("/v1/workflows/{wf}"),
            &h,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{h:?}: {v}");
    }

    // The admin's notebook has a user's rights: not everyone's list, not alice's workflow
    // by id (which the admin's token does reach).
    let (s, v) = relayed(
        &api,
        &admin_id,
        Method::GET,
        "/v1/workflows?all=true",
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = relayed(
        &api,
        &admin_id,
        Method::GET,
        &format!("/v1/workflows/{wf}"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let r = app
        .call(
            Method::GET,
            &format!("/v1/workflows/{wf}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Nothing else of the API, however spelt, with the admin's token or not.
    for path in [
        "/v1/users",
        "/v1/whoami",
        "/v1/audit",
        "/metrics",
        "/v1/workflows/../users",
        "/v1/workflows/%2e%2e/users",
        "/v1/workflows/..%2Fusers",
        "/v1//users",
        "/v1/workflows/etl/../../users",
    ] {
        for owner in [&admin_id, &alice_id] {
            let (s, v) = relayed(
                &api,
                owner,
                Method::GET,
                path,
                &[("authorization", &format!("Bearer {ADMIN}"))],
                None,
            )
            .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
            assert!(v["error"]["message"].is_string(), "{path}: {v}");
        }
        let (s, v) = relayed(
            &api,
            &admin_id,
            Method::POST,
            path,
            &[],
            Some(json!({"name": "mallory", "role": "admin"})),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    let r = app.call(Method::GET, "/v1/users", Some(ADMIN), None).await;
    assert!(!r.text.contains("mallory"), "{}", r.text);

    // An owner who no longer exists acts no more.
    let (s, v) = relayed(
        &api,
        "no-such-user",
        Method::GET,
        "/v1/workflows",
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    // Alice's notebook deletes her workflow.
    let (s, v) = relayed(
        &api,
        &alice_id,
        Method::DELETE,
        "/v1/workflows/etl",
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}
