//! Isolation between users, authentication, the secrecy of each notebook's Jupyter token, and
//! the bubblewrap sandbox around JupyterLab.

use atelier_tests::{Gateway, Kernel, Reply, json, shorten};
use reqwest::Method;
use serde_json::Value;

/// Another user sees nothing of a notebook; no credentials get 401 (or the login page for a
/// browser); revoked tokens stop working at once; a browser session opens JupyterLab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_and_authentication() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let id = gw.create_notebook(&alice, "private-work").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    // Bob has a notebook of his own (created only once Alice's is up: see
    // validation.rs's `back_to_back_creates_never_fail`).
    let bob_id = gw.create_notebook(&bob, "bobs").await;
    gw.wait_status(&bob, &bob_id, "RUNNING").await;
    let (a, b, admin, anon) = (gw.api(&alice), gw.api(&bob), gw.admin(), gw.anon());

    // The owner can use it; a kernel of hers will be a target below.
    a.get(&format!("/nb/{id}/api/contents"))
        .await
        .expect_status(200);
    let kernel = Kernel::start(&a, &id).await;

    // Bob: 404 everywhere, without learning the name or the owner.
    let probes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/notebooks/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/notebooks/{id}"),
            Some(json!({"description": "mine now"})),
        ),
        (Method::POST, format!("/v1/notebooks/{id}/start"), None),
        (Method::POST, format!("/v1/notebooks/{id}/stop"), None),
        (Method::DELETE, format!("/v1/notebooks/{id}"), None),
        (Method::GET, format!("/v1/notebooks/{id}/events"), None),
        (Method::GET, format!("/nb/{id}/lab"), None),
        (Method::GET, format!("/nb/{id}/api/contents"), None),
        (Method::GET, format!("/nb/{id}/api/kernels"), None),
        (
            Method::POST,
            format!("/nb/{id}/api/kernels"),
            Some(json!({"name": "python3"})),
        ),
        (
            Method::PUT,
            format!("/nb/{id}/api/contents/planted.txt"),
            Some(json!({"type": "file", "format": "text", "content": "x"})),
        ),
    ];
    for (method, path, body) in &probes {
        let mut req = b.request(method.clone(), path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let msg = b.send(req).await.expect_error(404, "not_found");
        assert!(
            !msg.contains("private-work") && !msg.contains("alice"),
            "{method} {path}: the 404 reveals the notebook: {msg}"
        );
    }
    let html = b
        .send(
            b.request(Method::GET, &format!("/nb/{id}/lab"))
                .header("accept", "text/html"),
        )
        .await;
    html.expect_status(404);
    let refused = Kernel::try_connect(&b, &id, &kernel.id)
        .await
        .err()
        .expect("bob opened alice's kernel channels");
    assert_eq!(refused.status, Some(404), "{refused}");
    // …and nothing he tried had an effect.
    let nb = gw.wait_status(&alice, &id, "RUNNING").await;
    assert_eq!(nb["description"], "", "{nb}");
    assert!(!gw.notebook_dir(&id).join("work/planted.txt").exists());

    // Lists: Bob's shows only his own; only an admin may ask for everyone's.
    let list = b.get("/v1/notebooks").await;
    assert_eq!(list.expect_status(200)["total"], 1, "{}", list.text);
    assert_eq!(
        list.json["items"][0]["id"],
        bob_id.as_str(),
        "{}",
        list.text
    );
    let msg = b
        .get("/v1/notebooks?all=true")
        .await
        .expect_error(403, "permission_denied");
    assert!(msg.contains("admin"), "{msg}");
    let all = admin.get("/v1/notebooks?all=true").await;
    let items = all.expect_status(200)["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|n| n["id"] == id.as_str() && n["owner"] == "alice")
            && items
                .iter()
                .any(|n| n["id"] == bob_id.as_str() && n["owner"] == "bob"),
        "{}",
        all.text
    );
    // An admin manages the notebook but does not read its work through the proxy.
    admin
        .get(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(200);
    admin
        .get(&format!("/nb/{id}/api/contents"))
        .await
        .expect_error(404, "not_found");

    // No credentials: 401 JSON for API clients, the login page for browsers.
    for path in [
        "/v1/whoami".to_owned(),
        "/v1/notebooks".to_owned(),
        format!("/v1/notebooks/{id}"),
        format!("/nb/{id}/lab"),
        format!("/nb/{id}/api/contents"),
    ] {
        anon.get(&path).await.expect_error(401, "unauthenticated");
    }
    anon.post("/v1/notebooks", json!({"name": "sneaky"}))
        .await
        .expect_error(401, "unauthenticated");
    let browser = anon
        .send(
            anon.request(Method::GET, &format!("/nb/{id}/lab"))
                .header("accept", "text/html,application/xhtml+xml"),
        )
        .await;
    assert!(
        matches!(browser.status, 302 | 303 | 307),
        "browser without a session: {} {}",
        browser.status,
        browser.text
    );
    assert_eq!(
        browser.header("location"),
        Some(format!("/login?next=/nb/{id}/lab").as_str()),
        "{:?}",
        browser.headers
    );
    let login_page = anon.get("/login").await;
    login_page.expect_status(200);
    assert!(
        login_page.text.contains("name=\"token\""),
        "{}",
        login_page.text
    );
    let bogus = gw.api("atl_not-a-real-token-at-all-000000000000");
    bogus
        .get("/v1/whoami")
        .await
        .expect_error(401, "unauthenticated");
    bogus
        .get(&format!("/nb/{id}/api/contents"))
        .await
        .expect_error(401, "unauthenticated");

    // A revoked token gets 401 at once (it was just used, so any cache holds it).
    let r = a
        .post("/v1/users/alice/tokens", json!({"label": "laptop"}))
        .await;
    r.expect_status(201);
    let (token_id, second) = (
        r.json["id"].as_str().expect("id").to_owned(),
        r.json["token"].as_str().expect("token").to_owned(),
    );
    let laptop = gw.api(&second);
    assert_eq!(
        laptop.get("/v1/whoami").await.expect_status(200)["name"],
        "alice"
    );
    laptop
        .get(&format!("/nb/{id}/api/contents"))
        .await
        .expect_status(200);
    a.delete(&format!("/v1/tokens/{token_id}"))
        .await
        .expect_status(204);
    laptop
        .get("/v1/whoami")
        .await
        .expect_error(401, "unauthenticated");
    laptop
        .get(&format!("/nb/{id}/api/contents"))
        .await
        .expect_error(401, "unauthenticated");
    let tokens = a.get("/v1/users/alice/tokens").await;
    assert!(
        !tokens.expect_status(200)["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|t| t["id"] == token_id.as_str()),
        "{}",
        tokens.text
    );
    a.get("/v1/whoami").await.expect_status(200);

    // Browser login: a bad token goes back to the form; a good one sets an HttpOnly session
    // cookie, which opens JupyterLab on the notebook's own origin (through a one-time ticket),
    // not on the console's.
    let (csrf_cookie, csrf) = gw.login_form().await;
    let (csrf_cookie, csrf) = (csrf_cookie.expect("form cookie"), csrf.expect("form field"));
    let form = |token: &str| format!("token={token}&next=%2Fnb%2F{id}%2Flab&csrf={csrf}");
    let bad = anon
        .send(
            anon.request(Method::POST, "/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", &csrf_cookie)
                .body(form("atl_wrong")),
        )
        .await;
    assert!(
        matches!(bad.status, 302 | 303)
            && bad
                .header("location")
                .unwrap_or_default()
                .starts_with("/login?error"),
        "bad login: {} {:?}",
        bad.status,
        bad.headers
    );
    assert!(bad.header("set-cookie").is_none(), "{:?}", bad.headers);
    let good = anon
        .send(
            anon.request(Method::POST, "/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", &csrf_cookie)
                .header("origin", gw.base())
                .body(form(&alice)),
        )
        .await;
    assert!(
        matches!(good.status, 302 | 303),
        "{} {}",
        good.status,
        good.text
    );
    assert_eq!(
        good.header("location"),
        Some(format!("/nb/{id}/lab").as_str())
    );
    let set_cookie = good
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {:?}", good.headers))
        .to_owned();
    assert!(
        set_cookie.starts_with("atelier_session=")
            && set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .to_owned();
    // On the console's /nb/ the browser is sent on to the notebook's origin.
    let on_path = anon
        .send(
            anon.request(Method::GET, &format!("/nb/{id}/lab"))
                .header("accept", "text/html")
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(on_path.status, 303, "{}", shorten(&on_path.text));
    assert_eq!(
        on_path.header("location"),
        Some(format!("/v1/notebooks/{id}/open?path=/nb/{id}/lab").as_str())
    );
    let nb_cookie = gw.open_on_notebook_host(&cookie, &id).await;
    let nb = gw.notebook_client(&id);
    let lab = nb
        .send(
            nb.request(Method::GET, &format!("/nb/{id}/lab"))
                .header("accept", "text/html")
                .header("cookie", &nb_cookie),
        )
        .await;
    lab.expect_status(200);
    assert!(
        lab.text.contains("JupyterLab") || lab.text.contains("jupyter-config-data"),
        "{}",
        shorten(&lab.text)
    );
    let me = anon
        .send(
            anon.request(Method::GET, "/v1/whoami")
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(me.expect_status(200)["name"], "alice");
    // The session is Alice's: Bob's notebook stays closed to it.
    let cross = anon
        .send(
            anon.request(Method::GET, &format!("/v1/notebooks/{bob_id}"))
                .header("cookie", &cookie),
        )
        .await;
    cross.expect_error(404, "not_found");
    drop(kernel);
}

/// The token the gateway adds upstream appears in nothing the client receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_token_never_reaches_the_client() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "secret-keeper").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let a = gw.api(&alice);
    let token = gw.jupyter_token(&id);

    a.put(
        &format!("/nb/{id}/api/contents/hello.txt"),
        json!({"type": "file", "format": "text", "content": "hi"}),
    )
    .await
    .expect_status(201);

    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let requests: Vec<(Method, String, Option<&str>, Option<Value>)> = vec![
        (Method::GET, format!("/nb/{id}/lab"), None, None),
        (Method::GET, format!("/nb/{id}/lab"), Some(html), None),
        (Method::HEAD, format!("/nb/{id}/lab"), Some(html), None),
        (
            Method::GET,
            format!("/nb/{id}/lab/tree/hello.txt"),
            Some(html),
            None,
        ),
        (Method::GET, format!("/nb/{id}/tree"), Some(html), None),
        (Method::GET, format!("/nb/{id}/"), Some(html), None),
        (Method::GET, format!("/nb/{id}"), Some(html), None),
        (Method::GET, format!("/nb/{id}/login"), Some(html), None),
        (
            Method::GET,
            format!("/nb/{id}/no-such-page"),
            Some(html),
            None,
        ),
        (Method::GET, format!("/nb/{id}/api/status"), None, None),
        (Method::GET, format!("/nb/{id}/api/me"), None, None),
        (Method::GET, format!("/nb/{id}/api/contents"), None, None),
        (
            Method::GET,
            format!("/nb/{id}/api/contents/hello.txt?content=1"),
            None,
            None,
        ),
        (
            Method::GET,
            format!("/nb/{id}/api/contents/missing"),
            None,
            None,
        ),
        (Method::GET, format!("/nb/{id}/files/hello.txt"), None, None),
        (
            Method::POST,
            format!("/nb/{id}/api/kernels"),
            None,
            Some(json!({"name": "python3"})),
        ),
        (Method::GET, format!("/nb/{id}/api/kernels"), None, None),
        (Method::GET, format!("/nb/{id}/api/sessions"), None, None),
        (Method::GET, format!("/nb/{id}/api/kernelspecs"), None, None),
        (
            Method::GET,
            format!("/nb/{id}/lab/api/settings"),
            None,
            None,
        ),
    ];
    let mut redirects = 0;
    let mut html_pages = 0;
    for (method, path, accept, body) in requests {
        let mut req = a
            .request(method.clone(), &path)
            .header("accept-encoding", "gzip, deflate, br");
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = a.send(req).await;
        assert!(
            r.status < 500,
            "{}: {} {}",
            r.what,
            r.status,
            shorten(&r.text)
        );
        assert_no_token(&r, &token);
        if (300..400).contains(&r.status) {
            redirects += 1;
        }
        if r.text.contains("<html") || r.text.contains("<!DOCTYPE") {
            html_pages += 1;
        }
    }
    assert!(redirects > 0, "no redirect was checked");
    assert!(html_pages >= 3, "too few HTML pages were checked");

    // JupyterLab's page still carries its page config, minus the token.
    let lab = a
        .send(
            a.request(Method::GET, &format!("/nb/{id}/lab"))
                .header("accept", html),
        )
        .await;
    lab.expect_status(200);
    assert!(
        lab.text.contains("jupyter-config-data"),
        "{}",
        shorten(&lab.text)
    );

    // The WebSocket handshake and the messages on it.
    let mut kernel = Kernel::start(&a, &id).await;
    for (k, v) in &kernel.handshake_headers {
        assert!(!v.contains(&token), "101 header {k} carries the token");
    }
    let e = kernel
        .execute("import os; print(sorted(k for k in os.environ if 'TOKEN' in k))")
        .await;
    assert!(!e.stdout.contains(&token) && !e.stderr.contains(&token));
}

#[track_caller]
fn assert_no_token(r: &Reply, token: &str) {
    assert!(
        !r.text.contains(token),
        "{} ({}): the body carries the notebook's Jupyter token",
        r.what,
        r.status
    );
    for (k, v) in &r.headers {
        assert!(
            !String::from_utf8_lossy(v.as_bytes()).contains(token),
            "{} ({}): header {k} carries the notebook's Jupyter token",
            r.what,
            r.status
        );
    }
}

/// Inside a kernel: the work dir is writable; the rest of the filesystem is not; the gateway's
/// data dir (database, other notebooks) is not visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_confines_the_kernel() {
    let gw = Gateway::start().await;
    if !gw.sandboxed() {
        eprintln!(
            "NOTE: sandbox_confines_the_kernel skipped: the gateway runs notebooks without \
             bubblewrap here (install bubblewrap to run this check)"
        );
        return;
    }
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    // One at a time: a create that overlaps another notebook's bring-up can hit the store
    // race that validation.rs's `back_to_back_creates_never_fail` shows.
    let a_id = gw.create_notebook(&alice, "confined").await;
    gw.wait_status(&alice, &a_id, "RUNNING").await;
    let b_id = gw.create_notebook(&bob, "neighbour").await;
    gw.wait_status(&bob, &b_id, "RUNNING").await;
    std::fs::write(gw.notebook_dir(&b_id).join("work/secret.txt"), "bob's").expect("secret");

    let probe = format!("atelier-probe-{}", atelier_tests::unique());
    let data = gw.data_dir.to_string_lossy().into_owned();
    let venv = atelier_tests::jupyter_venv().to_string_lossy().into_owned();
    let host_etc = std::path::PathBuf::from("/etc").join(&probe);
    let host_venv = atelier_tests::jupyter_venv().join(&probe);
    let host_data = gw.data_dir.join(&probe);
    let code = format!(
        r#"
import json, os
data, venv, probe, other = {data}, {venv}, {probe}, {other}
res = {{}}
def attempt(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return 'written'
    except OSError as e:
        return type(e).__name__
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return type(e).__name__
def read(path):
    try:
        with open(path) as f:
            return 'read: ' + f.read()
    except OSError as e:
        return type(e).__name__
res['work'] = attempt('probe-in-work.txt')
res['etc'] = attempt('/etc/' + probe)
res['venv'] = attempt(venv + '/' + probe)
res['data'] = attempt(data + '/' + probe)
res['data_list'] = listing(data)
res['notebooks_list'] = listing(data + '/notebooks')
res['db'] = os.path.exists(data + '/atelier.db')
res['other_secret'] = read(data + '/notebooks/' + other + '/work/secret.txt')
print(json.dumps(res))
"#,
        data = json!(data),
        venv = json!(venv),
        probe = json!(probe),
        other = json!(b_id),
    );
    let mut kernel = Kernel::start(&gw.api(&alice), &a_id).await;
    let out = kernel.run(&code).await;
    // Whatever happened, leave nothing behind outside the test's own dirs.
    let leaked_etc = host_etc.exists();
    let leaked_venv = host_venv.exists();
    let _ = std::fs::remove_file(&host_etc);
    let _ = std::fs::remove_file(&host_venv);
    let res: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    assert_eq!(res["work"], "written", "{res}");
    assert!(
        gw.notebook_dir(&a_id)
            .join("work/probe-in-work.txt")
            .exists(),
        "the kernel's write did not land in the work dir"
    );
    assert_ne!(res["etc"], "written", "the kernel wrote to /etc: {res}");
    assert!(!leaked_etc, "{} appeared on the host", host_etc.display());
    assert_ne!(
        res["venv"], "written",
        "the kernel wrote into the venv: {res}"
    );
    assert!(!leaked_venv, "{} appeared on the host", host_venv.display());
    assert!(
        !host_data.exists(),
        "the kernel wrote into the gateway's data dir ({res})"
    );
    assert_eq!(res["db"], false, "the kernel sees atelier.db: {res}");
    let data_list = res["data_list"].to_string();
    assert!(!data_list.contains("atelier.db"), "{res}");
    let notebooks = res["notebooks_list"].to_string();
    assert!(
        !notebooks.contains(&b_id),
        "the kernel sees another notebook's dir: {res}"
    );
    assert!(
        !res["other_secret"]
            .as_str()
            .unwrap_or_default()
            .starts_with("read"),
        "the kernel read another notebook's file: {res}"
    );
}

/// The sandbox must also hold against the obvious detours: `/proc/<pid>/root` of a process
/// outside it (the gateway's view of the filesystem) and unmounting the tmpfs that hides the
/// data dir. Both work when the confined kernel keeps root's capabilities and sees the host's
/// processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cannot_be_bypassed_through_proc_or_mounts() {
    let gw = Gateway::start().await;
    if !gw.sandboxed() {
        eprintln!(
            "NOTE: sandbox_cannot_be_bypassed_through_proc_or_mounts skipped: the gateway runs \
             notebooks without bubblewrap here"
        );
        return;
    }
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "detours").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let probe = format!("escape-probe-{}", atelier_tests::unique());
    let code = format!(
        r#"
import ctypes, json, os
data, probe = {data}, {probe}
pids = [p for p in os.listdir('/proc') if p.isdigit()]
read, wrote = [], []
for pid in pids:
    path = '/proc/' + pid + '/root' + data + '/atelier.db'
    try:
        with open(path, 'rb') as f:
            f.read(16)
        read.append(path)
    except OSError:
        pass
for pid in pids:
    path = '/proc/' + pid + '/root' + data + '/' + probe
    try:
        with open(path, 'w') as f:
            f.write('x')
        wrote.append(path)
        break
    except OSError:
        pass
with open('/proc/self/status') as f:
    caps = [l.split()[1] for l in f if l.startswith('CapEff')][0]
# Peel the mounts that hide the data dir: on it, then on its parents (never '/').
libc = ctypes.CDLL(None, use_errno=True)
unmounted, seen = [], False
targets = [data]
parent = os.path.dirname(data)
while parent not in ('/', ''):
    targets.append(parent)
    parent = os.path.dirname(parent)
for target in targets:
    for _ in range(3):
        if libc.umount2(target.encode(), 2) != 0:
            break
        unmounted.append(target)
        if os.path.exists(data + '/atelier.db'):
            seen = True
            break
    if seen:
        break
print(json.dumps({{'read': read[:3], 'wrote': wrote, 'cap_eff': caps,
                  'unmounted': unmounted, 'db_after_unmount': seen}}))
"#,
        data = json!(gw.data_dir.to_string_lossy()),
        probe = json!(probe),
    );
    let mut kernel = Kernel::start(&gw.api(&alice), &id).await;
    let out = kernel.run(&code).await;
    let res: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let wrote_on_host = gw.data_dir.join(&probe).exists();
    let mut breaches = Vec::new();
    // Writing through /proc/1/root is fine while it lands in the sandbox's own tmpfs (PID 1
    // is then the sandbox's init): only what reaches the real data dir counts.
    if res["read"] != json!([]) || wrote_on_host {
        breaches.push(format!(
            "through /proc/<pid>/root of a process outside the sandbox it read {} and wrote {} \
             (file on the host: {wrote_on_host})",
            res["read"], res["wrote"]
        ));
    }
    if res["db_after_unmount"] != false {
        breaches.push(format!(
            "it unmounted {} and then saw atelier.db in the data dir",
            res["unmounted"]
        ));
    }
    assert!(
        breaches.is_empty(),
        "a kernel reaches the gateway's data dir (kernel CapEff={}):\n- {}",
        res["cap_eff"],
        breaches.join("\n- ")
    );
}

/// Deleting a user ends their credentials at once (API tokens, even one the gateway has
/// cached) and is audited; it is refused while they own anything, for oneself, and for
/// non-admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_ends_their_credentials_and_loses_nothing_of_theirs() {
    let gw = Gateway::start().await;
    let admin = gw.admin();
    let bob = gw.create_user("bob").await;
    let carol = gw.create_user("carol").await;
    let bob_api = gw.api(&bob);
    // Cached: the credential resolves once before the deletion.
    bob_api.get("/v1/whoami").await.expect_status(200);

    // Non-admins cannot; an admin cannot delete themselves.
    gw.api(&carol)
        .delete("/v1/users/bob")
        .await
        .expect_error(403, "permission_denied");
    admin
        .delete("/v1/users/admin")
        .await
        .expect_error(409, "conflict");
    admin
        .delete("/v1/users/nobody")
        .await
        .expect_error(404, "not_found");

    // Bob owns a notebook: refused, and the refusal says what is in the way.
    let id = gw.create_notebook(&bob, "work").await;
    gw.wait_status(&bob, &id, "RUNNING").await;
    let msg = admin
        .delete("/v1/users/bob")
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("notebooks (1)"), "{msg}");
    bob_api.get("/v1/whoami").await.expect_status(200);
    bob_api
        .delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&bob, &id).await;

    // Now it goes, and Bob's token is refused at once (not after the credential cache's
    // minute), while Carol's still works.
    admin.delete("/v1/users/bob").await.expect_status(204);
    let r = admin.get("/v1/users").await;
    assert!(
        !r.expect_status(200).to_string().contains("\"bob\""),
        "{}",
        r.text
    );
    bob_api.get("/v1/whoami").await.expect_status(401);
    gw.api(&carol).get("/v1/whoami").await.expect_status(200);
    let audit = admin.get("/v1/audit?limit=20").await;
    assert!(audit.text.contains("deleteUser"), "{}", audit.text);
}
