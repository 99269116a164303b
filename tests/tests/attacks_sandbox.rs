//! Attacks from inside a process notebook, as its code would try them: the host's secrets,
//! the gateway's data and ports, other notebooks, the gateway's own sockets, and resources
//! (a fork bomb). Each must fail with nothing changed outside the notebook. These tests need
//! the sandbox (bubblewrap, pasta, cgroups): in CI a gateway without it fails them.

use atelier_tests::{Gateway, Kernel, Value, json};

/// The gateway's log says it sandboxes notebooks; outside CI a machine without a sandbox
/// skips with a note, in CI it fails (`Gateway::sandboxed`).
fn require_sandbox(gw: &Gateway, test: &str) -> bool {
    if gw.sandboxed() {
        return true;
    }
    eprintln!("NOTE: {test} skipped: no sandbox on this machine (bubblewrap, pasta, cgroups)");
    false
}

/// Runs `code` (which prints one JSON line) in a new kernel of `notebook`.
async fn probe(gw: &Gateway, token: &str, notebook: &str, code: &str) -> Value {
    let mut kernel = Kernel::start(&gw.api(token), notebook).await;
    let out = kernel.run(code).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

const PROBE_HELPERS: &str = r#"
import json, os, socket
def read(path):
    try:
        with open(path, 'rb') as f:
            return 'read %d bytes' % len(f.read())
    except OSError as e:
        return type(e).__name__
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return type(e).__name__
def connect(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return 'connected'
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
def unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    try:
        s.connect(path)
        return 'connected'
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
"#;

/// The notebook's code runs as ma-user (uid 1000) with no capability, in its own work dir,
/// and can read none of the host's secrets, the gateway's data or another notebook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_code_runs_unprivileged_and_sees_no_host_secret() {
    let gw = Gateway::start().await;
    if !require_sandbox(
        &gw,
        "notebook_code_runs_unprivileged_and_sees_no_host_secret",
    ) {
        return;
    }
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let a = gw.create_notebook(&alice, "mine").await;
    gw.wait_status(&alice, &a, "RUNNING").await;
    let b = gw.create_notebook(&bob, "theirs").await;
    gw.wait_status(&bob, &b, "RUNNING").await;
    let b_dir = gw.notebook_dir(&b);
    std::fs::write(b_dir.join("work/secret.txt"), "bob's").unwrap();
    // A secret in the home of the user the gateway runs as (its ~/.ssh, say).
    let home = std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let secret_name = format!(".atelier-test-secret-{}", atelier_tests::unique());
    let host_secret = home.join(&secret_name);
    std::fs::write(&host_secret, "the host's").unwrap();
    let code = format!(
        r#"{PROBE_HELPERS}
data, b_dir, host_secret = {data}, {b_dir}, {host_secret}
status = open('/proc/self/status').read()
cap_eff = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff:')][0]
print(json.dumps({{
    'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
    'cap_eff': cap_eff,
    'cwd': os.getcwd(), 'home': os.environ.get('HOME'),
    'shadow': read('/etc/shadow'),
    'host_secret': read(host_secret),
    'host_home': listing(os.path.dirname(host_secret)),
    'homes': listing('/home'),
    'data_dir': os.path.exists(data),
    'other_work': read(b_dir + '/work/secret.txt'),
    'other_socket': unix(b_dir + '/run/agent/jupyter.sock'),
}}))
try:
    os.setuid(0)
    print(json.dumps({{'setuid': 'became root'}}))
except OSError as e:
    print(json.dumps({{'setuid': type(e).__name__}}))
"#,
        data = json!(gw.data_dir.to_string_lossy()),
        b_dir = json!(b_dir.to_string_lossy()),
        host_secret = json!(host_secret.to_string_lossy()),
    );
    let mut kernel = Kernel::start(&gw.api(&alice), &a).await;
    let out = kernel.run(&code).await;
    let _ = std::fs::remove_file(&host_secret);
    let mut lines = out.lines();
    let res: Value =
        serde_json::from_str(lines.next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"));
    let setuid: Value =
        serde_json::from_str(lines.next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"));

    assert_eq!(res["uid"], 1000, "{res}");
    assert_eq!(res["euid"], 1000, "{res}");
    assert_eq!(res["gid"], 100, "{res}");
    assert_eq!(res["groups"], json!([100]), "{res}");
    assert_eq!(res["cap_eff"], "0000000000000000", "{res}");
    assert_eq!(setuid["setuid"], "PermissionError", "{setuid}");
    assert_eq!(res["cwd"], "/home/ma-user/work", "{res}");
    assert_eq!(res["home"], "/home/ma-user", "{res}");
    assert_eq!(res["shadow"], "PermissionError", "{res}");
    assert_eq!(res["host_secret"], "FileNotFoundError", "{res}");
    assert!(
        !res["host_home"].to_string().contains(&secret_name),
        "the gateway user's home shows: {res}"
    );
    assert_eq!(
        res["homes"],
        json!(["ma-user"]),
        "the host's homes show: {res}"
    );
    assert_eq!(
        res["data_dir"], false,
        "the gateway's data dir shows: {res}"
    );
    assert_eq!(res["other_work"], "FileNotFoundError", "{res}");
    assert_ne!(res["other_socket"], "connected", "{res}");
    // And the file the kernel writes is ma-user's on the host.
    kernel.run("open('mine.txt', 'w').write('x')").await;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(gw.notebook_dir(&a).join("work/mine.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 100));
}

/// The notebook has a network of its own: the gateway's HTTP and SSH ports and anything
/// else on the host's loopback are out of reach; with egress it has a route out, with
/// `ATELIER_NOTEBOOK_NETWORK=none` only its loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_code_reaches_no_port_of_the_host() {
    // A service on the host's loopback that a notebook must not reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = listener.local_addr().unwrap().port();
    for network in ["egress", "none"] {
        let gw = Gateway::start_with(&[("ATELIER_NOTEBOOK_NETWORK", network)]).await;
        if !require_sandbox(&gw, "notebook_code_reaches_no_port_of_the_host") {
            return;
        }
        let alice = gw.create_user("alice").await;
        let a = gw.create_notebook(&alice, "net").await;
        gw.wait_status(&alice, &a, "RUNNING").await;
        let code = format!(
            r#"{PROBE_HELPERS}
routes = [l.split() for l in open('/proc/net/route').read().splitlines()[1:]]
ifaces = sorted(set(r[0] for r in routes))
print(json.dumps({{
    'gateway_http': connect('127.0.0.1', {http}),
    'gateway_ssh': connect('127.0.0.1', {ssh}),
    'host_service': connect('127.0.0.1', {host}),
    'default_route': any(r[1] == '00000000' for r in routes),
    'interfaces': ifaces,
}}))
"#,
            http = gw.addr.port(),
            ssh = gw.ssh_addr.port(),
            host = host_port,
        );
        let res = probe(&gw, &alice, &a, &code).await;
        for what in ["gateway_http", "gateway_ssh", "host_service"] {
            assert_eq!(
                res[what], "ConnectionRefusedError",
                "{network}: {what} reachable from the notebook: {res}"
            );
        }
        match network {
            "egress" => assert_eq!(res["default_route"], true, "no way out: {res}"),
            _ => {
                assert_eq!(res["default_route"], false, "{res}");
                assert_eq!(res["interfaces"], json!([]), "{res}");
            }
        }
    }
    drop(listener);
}

/// A notebook replaces its Jupyter and SSH sockets with links to another notebook's: the
/// gateway follows neither, so the owner's requests and SSH logins never reach the other
/// notebook (nor anything else the link names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_a_notebook_replaces_with_links_are_never_followed() {
    let gw = Gateway::start().await;
    if !require_sandbox(
        &gw,
        "sockets_a_notebook_replaces_with_links_are_never_followed",
    ) {
        return;
    }
    let alice = gw.create_user("alice").await;
    let a = gw.create_notebook(&alice, "planter").await;
    gw.wait_status(&alice, &a, "RUNNING").await;
    let b = gw.create_notebook(&alice, "victim").await;
    gw.wait_status(&alice, &b, "RUNNING").await;
    let b_agent = gw.notebook_dir(&b).join("run/agent");
    let code = format!(
        r#"{PROBE_HELPERS}
b = {b_agent}
out = {{}}
for name in ['jupyter.sock', 'ssh.sock']:
    os.rename('/run/atelier/' + name, '/run/atelier/' + name + '.moved')
    os.symlink(b + '/' + name, '/run/atelier/' + name)
    out[name] = os.readlink('/run/atelier/' + name)
# Nothing of the gateway's is in the notebook any more: atelier.file's socket is the
# agent's (the gateway reaches it over its agent link, never by a path).
out['gw_dir'] = os.path.exists('/run/atelier-gw')
print(json.dumps(out))
"#,
        b_agent = json!(b_agent.to_string_lossy()),
    );
    let res = probe(&gw, &alice, &a, &code).await;
    assert!(
        res["jupyter.sock"]
            .as_str()
            .unwrap_or("")
            .ends_with("jupyter.sock"),
        "{res}"
    );
    assert_eq!(res["gw_dir"], false, "{res}");

    // A fresh client (no pooled connection to A's real server): the proxy refuses to follow.
    let api = gw.api(&alice);
    let r = api.get(&format!("/nb/{a}/api/status")).await;
    assert_eq!(
        r.status, 502,
        "the proxy answered through the planted link: {}",
        r.text
    );
    let r = api.get(&format!("/nb/{a}/api/kernels")).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(
        gw.log().contains("symbolic link"),
        "the gateway's log should say it refused a link"
    );
    // B itself is untouched and still serves its owner.
    api.get(&format!("/nb/{b}/api/status"))
        .await
        .expect_status(200);
}

/// A fork bomb in one notebook stops at its flavor's process limit and CPU share: the
/// gateway and a neighbour notebook keep answering, and stopping the notebook ends every
/// process of the bomb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_held_by_its_flavors_limits() {
    let toml = r#"
[[flavors]]
id = "cpu-2-8"
type = "cpu"
vcpus = 2
memory_gib = 8
[[flavors]]
id = "tiny"
type = "cpu"
vcpus = 1
memory_gib = 1
max_pids = 128
"#;
    let gw = Gateway::start_with_config(toml, &[]).await;
    if !require_sandbox(&gw, "a_fork_bomb_is_held_by_its_flavors_limits") {
        return;
    }
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let r = api
        .post("/v1/notebooks", json!({"name": "bomb", "flavor": "tiny"}))
        .await;
    r.expect_status(201);
    let bomb = r.json["id"].as_str().unwrap().to_owned();
    gw.wait_status(&alice, &bomb, "RUNNING").await;
    let calm = gw.create_notebook(&alice, "calm").await;
    gw.wait_status(&alice, &calm, "RUNNING").await;

    // The bomb runs on after this cell returns.
    let mut k = Kernel::start(&api, &bomb).await;
    k.run(
        "import subprocess\np = subprocess.Popen(['bash', '-c', 'f(){ f|f& }; f'])\nprint(p.pid)",
    )
    .await;
    // The group fills up to its limit and no further.
    let pids_current = cgroup_file(&gw, &bomb, "pids", "pids.current");
    // The host and the neighbour answer while it rages.
    atelier_tests::fork_bomb_stays_within(&gw, &api, &calm, &pids_current, 128).await;
    // Stopping ends all of it.
    api.post_empty(&format!("/v1/notebooks/{bomb}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &bomb, "STOPPED").await;
    assert!(
        !pids_current.exists(),
        "the notebook's cgroup (and so its processes) outlived the stop"
    );
}

/// `<controller hierarchy>/<the gateway's group>/atelier-notebooks/<id>/<file>`, found from
/// the gateway's own `/proc/<pid>/cgroup` (v1 here; v2 uses the unified hierarchy).
fn cgroup_file(gw: &Gateway, id: &str, controller: &str, file: &str) -> std::path::PathBuf {
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", gw.pid())).unwrap();
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (_, list, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let path = path.trim_start_matches('/');
        if list.split(',').any(|c| c == controller) {
            return std::path::Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path)
                .join("atelier-notebooks")
                .join(id)
                .join(file);
        }
        if list.is_empty() && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let own = std::path::Path::new("/sys/fs/cgroup").join(path);
            let base = own
                .parent()
                .filter(|_| own.ends_with("gateway"))
                .unwrap_or(&own);
            return base.join("atelier-notebooks").join(id).join(file);
        }
    }
    panic!("no {controller} cgroup for the gateway in {cgroup}");
}

/// Without a working sandbox, `auto` refuses notebooks and says how to fix it (nothing is
/// created); only an explicit `ATELIER_SANDBOX=none` runs them unconfined, with a warning
/// at start and on the notebook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sandbox_notebooks_are_refused_unless_unconfined_is_asked_for() {
    // No bubblewrap on this gateway's PATH.
    let empty =
        std::env::temp_dir().join(format!("atelier-empty-path-{}", atelier_tests::unique()));
    std::fs::create_dir_all(&empty).unwrap();
    let gw = Gateway::start_with(&[("PATH", &empty.to_string_lossy())]).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let msg = api
        .post("/v1/notebooks", json!({"name": "nope"}))
        .await
        .expect_error(503, "sandbox_unavailable");
    assert!(msg.contains("bubblewrap"), "{msg}");
    assert!(msg.contains("ATELIER_SANDBOX=none"), "{msg}");
    let list = api.get("/v1/notebooks").await;
    assert_eq!(
        list.expect_status(200)["items"],
        json!([]),
        "a refused create left a notebook"
    );
    assert!(
        gw.log().contains("notebooks are refused"),
        "{}",
        gw.log_tail(20)
    );
    drop(gw);
    let _ = std::fs::remove_dir(&empty);

    let gw = Gateway::start_with(&[("ATELIER_SANDBOX", "none")]).await;
    assert!(
        gw.log().contains("notebooks run unconfined"),
        "{}",
        gw.log_tail(20)
    );
    let alice = gw.create_user("alice").await;
    let r = gw
        .api(&alice)
        .post("/v1/notebooks", json!({"name": "bare"}))
        .await;
    r.expect_status(201);
    let warning = r.json["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(warning.contains("unconfined"), "{}", r.text);
}
