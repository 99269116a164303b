//! Attacks from inside a container notebook (the docker backend on Podman), as its code would
//! try them: the host's addresses (its loopback, its address on the notebook's bridge, IPv4
//! and IPv6), the gateway's ports, another tenant's container, capabilities, and a fork bomb.
//! Each must fail while the notebook keeps its way out. Like containers.rs these tests need
//! Podman's service and the test image (scripts/containers.sh): without them they fail.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use atelier_tests::{Gateway, Kernel, Value, json, podman};

const PROBE_HELPERS: &str = r#"
import json, os, socket, struct
def connect(host, port, family=socket.AF_INET):
    s = socket.socket(family)
    s.settimeout(3)
    try:
        # getaddrinfo reads an IPv6 scope (`%eth0`), which a plain tuple does not.
        s.connect(socket.getaddrinfo(host, port, family)[0][4])
        return 'connected'
    except OSError as e:
        return '%s: %s' % (type(e).__name__, e)
    finally:
        s.close()
def resolve(server, name):
    # One DNS question (type A) to `server`; the addresses in the answer, or the error.
    q = struct.pack('>HHHHHH', 0x4154, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
    q += struct.pack('>HH', 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(q, (server, 53))
        r = s.recv(4096)
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
    count, at, found = struct.unpack('>H', r[6:8])[0], len(q), []
    for _ in range(count):
        if r[at] & 0xc0 == 0xc0:
            at += 2
        else:
            while r[at]:
                at += r[at] + 1
            at += 1
        rtype, _, _, size = struct.unpack('>HHIH', r[at:at + 10])
        at += 10
        if rtype == 1 and size == 4:
            found.append(socket.inet_ntoa(r[at:at + 4]))
        at += size
    return found
routes = [l.split() for l in open('/proc/net/route').read().splitlines()[1:]]
def default_gateway():
    for r in routes:
        if r[1] == '00000000':
            return socket.inet_ntoa(struct.pack('<I', int(r[2], 16)))
nameservers = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')]
"#;

/// A container's address and its gateway (the host's address on the container's bridge),
/// as the engine reports them.
fn addresses(id: &str) -> (Ipv4Addr, Ipv4Addr) {
    let out = podman(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}",
        &format!("atelier-nb-{id}"),
    ]);
    let mut parts = out.split_whitespace().map(|p| {
        p.parse::<Ipv4Addr>()
            .unwrap_or_else(|e| panic!("{e}: {out:?}"))
    });
    match (parts.next(), parts.next()) {
        (Some(ip), Some(gw)) => (ip, gw),
        _ => panic!("no address for notebook {id}: {out:?}"),
    }
}

/// The host's interface that holds `addr`, and that interface's IPv6 link-local address
/// with its scope (what a container on the bridge can reach without any IPv4 rule).
fn link_local_of(addr: Ipv4Addr) -> (String, SocketAddrV6) {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("running ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let iface = text
        .lines()
        .find(|l| l.contains(&format!(" inet {addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no interface holds {addr}: {text}"))
        .to_owned();
    let ll: Ipv6Addr = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(iface.as_str()))
        .find_map(|l| {
            let a = l.split(" inet6 ").nth(1)?.split('/').next()?;
            a.starts_with("fe80:").then(|| a.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{iface} has no link-local address: {text}"));
    let index: u32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (iface, SocketAddrV6::new(ll, 0, 0, index))
}

/// The notebook's networks on the engine (by label), running or not.
fn networks_of(id: &str) -> Vec<String> {
    podman(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.atelier.notebook={id}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// From inside a container notebook nothing of the host answers (its loopback, its address on
/// the bridge over IPv4 and IPv6, the gateway's HTTP and SSH ports there), nor another
/// tenant's container or bridge; the notebook still has a route out and the engine's
/// resolver, runs with no capability, and its network goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_notebooks_reach_neither_the_host_nor_the_gateway_nor_each_other() {
    let gw = Gateway::start_docker("", &[]).await;
    let alice = gw.create_user("alice").await;
    let bob = gw.create_user("bob").await;
    let a = gw.create_notebook(&alice, "attacker").await;
    let b = gw.create_notebook(&bob, "victim").await;
    gw.wait_status(&alice, &a, "RUNNING").await;
    gw.wait_status(&bob, &b, "RUNNING").await;
    let (a_ip, a_gw) = addresses(&a);
    let (b_ip, b_gw) = addresses(&b);

    // Services of the host: on its loopback, and on its addresses on both bridges. The test
    // gateway listens on loopback only; stand-ins listen at its HTTP and SSH port numbers on
    // the bridge address, as a gateway listening on all addresses would.
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let on_bridge = TcpListener::bind((a_gw, 0)).unwrap();
    let http_on_bridge = TcpListener::bind((a_gw, gw.addr.port())).unwrap();
    let ssh_on_bridge = TcpListener::bind((a_gw, gw.ssh_addr.port())).unwrap();
    let on_b_bridge = (b_gw != a_gw).then(|| TcpListener::bind((b_gw, 0)).unwrap());
    let b_bridge_port = on_b_bridge
        .as_ref()
        .map_or(on_bridge.local_addr().unwrap().port(), |l| {
            l.local_addr().unwrap().port()
        });
    let (iface, ll) = link_local_of(a_gw);
    let v6 = TcpListener::bind(SocketAddr::V6(ll)).unwrap();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();

    let code = format!(
        r#"{PROBE_HELPERS}
status = dict(l.split(':\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\t' in l)
print(json.dumps({{
    'gateway_http': connect('127.0.0.1', {http}),
    'gateway_ssh': connect('127.0.0.1', {ssh}),
    'host_loopback': connect('127.0.0.1', {loopback}),
    'host_bridge': connect('{a_gw}', {on_bridge}),
    'gateway_http_on_bridge': connect('{a_gw}', {http}),
    'gateway_ssh_on_bridge': connect('{a_gw}', {ssh}),
    'host_bridge_v6': connect('{ll}%eth0', {v6}, socket.AF_INET6),
    'other_bridge': connect('{b_gw}', {b_bridge_port}),
    'other_notebook': connect('{b_ip}', 8888),
    'default_gateway': default_gateway(),
    'nameservers': nameservers,
    'caps': {{k: status[k].strip() for k in ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']}},
    'no_new_privs': status['NoNewPrivs'].strip(),
    'uid': os.getuid(),
}}))
"#,
        http = gw.addr.port(),
        ssh = gw.ssh_addr.port(),
        loopback = port(&loopback),
        on_bridge = port(&on_bridge),
        ll = ll.ip(),
        v6 = port(&v6),
    );
    let api_a = gw.api(&alice);
    let mut kernel = Kernel::start(&api_a, &a).await;
    let out = kernel.run(&code).await;
    let res: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("from inside {a}: {res}");
    for what in [
        "gateway_http",
        "gateway_ssh",
        "host_loopback",
        "host_bridge",
        "gateway_http_on_bridge",
        "gateway_ssh_on_bridge",
        "host_bridge_v6",
        "other_bridge",
        "other_notebook",
    ] {
        assert_ne!(
            res[what], "connected",
            "{what} reachable from a container notebook ({iface}): {res}"
        );
    }
    // The container is the only one on its network, which is not the engine's default.
    assert_ne!(a_gw, b_gw, "two notebooks share a bridge");
    assert_eq!(networks_of(&a).len(), 1, "{:?}", networks_of(&a));

    // The way out: a default route through its bridge, and the engine's resolver there (the
    // only host port it may use), which knows the notebook's own name. Nothing outside is
    // asked: the question is for a name only the engine answers.
    assert_eq!(res["default_gateway"], a_gw.to_string(), "{res}");
    let server = res["nameservers"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        server == a_gw.to_string() || server == "127.0.0.11",
        "the notebook's resolver is not the engine's: {res}"
    );
    let resolved = kernel
        .run(&format!(
            "{PROBE_HELPERS}\nprint(json.dumps(resolve('{server}', 'atelier-nb-{a}')))"
        ))
        .await;
    let resolved: Value =
        serde_json::from_str(resolved.trim()).unwrap_or_else(|e| panic!("{e}: {resolved}"));
    assert_eq!(resolved, json!([a_ip.to_string()]), "{res}");

    // No capability at all, and none to gain.
    for (cap, value) in res["caps"].as_object().unwrap() {
        assert_eq!(value, "0000000000000000", "{cap}: {res}");
    }
    assert_eq!(res["no_new_privs"], "1", "{res}");
    assert_eq!(res["uid"], 1000, "{res}");
    drop(kernel);

    // B itself still serves its owner; its network goes when it stops, A's when deleted.
    gw.api(&bob)
        .get(&format!("/nb/{b}/api/status"))
        .await
        .expect_status(200);
    gw.api(&bob)
        .post_empty(&format!("/v1/notebooks/{b}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&bob, &b, "STOPPED").await;
    assert_eq!(networks_of(&b), Vec::<String>::new());
    api_a
        .delete(&format!("/v1/notebooks/{a}"))
        .await
        .expect_status(202);
    gw.wait_gone(&alice, &a).await;
    assert_eq!(networks_of(&a), Vec::<String>::new());
    drop((
        loopback,
        on_bridge,
        http_on_bridge,
        ssh_on_bridge,
        on_b_bridge,
        v6,
    ));
}

/// The container's own pids cgroup file `file` (v1's pids hierarchy or v2's unified one),
/// found from its init process.
fn container_cgroup_file(id: &str, file: &str) -> PathBuf {
    let pid = podman(&[
        "inspect",
        "--format",
        "{{.State.Pid}}",
        &format!("atelier-nb-{id}"),
    ]);
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (_, list, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let path = path.trim_start_matches('/');
        if list.split(',').any(|c| c == "pids") {
            return PathBuf::from("/sys/fs/cgroup/pids").join(path).join(file);
        }
        if list.is_empty() && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return PathBuf::from("/sys/fs/cgroup").join(path).join(file);
        }
    }
    panic!("no pids cgroup for notebook {id} in {cgroup}");
}

/// A fork bomb in a container notebook stops at its flavor's process limit: the gateway and
/// a neighbour container notebook keep answering, and stopping the notebook ends the bomb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_in_a_container_stops_at_its_flavors_pids_limit() {
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
    let gw = Gateway::start_docker(toml, &[]).await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let r = api
        .post("/v1/notebooks", json!({"name": "bomb", "flavor": "tiny"}))
        .await;
    r.expect_status(201);
    let bomb = r.json["id"].as_str().unwrap().to_owned();
    let calm = gw.create_notebook(&alice, "calm").await;
    gw.wait_status(&alice, &bomb, "RUNNING").await;
    gw.wait_status(&alice, &calm, "RUNNING").await;

    // The engine holds the container to the flavor's limit, not its own default.
    let pids_max = container_cgroup_file(&bomb, "pids.max");
    let pids_current = pids_max.with_file_name("pids.current");
    assert_eq!(
        std::fs::read_to_string(&pids_max).unwrap().trim(),
        "128",
        "{}",
        pids_max.display()
    );
    let calm_max = container_cgroup_file(&calm, "pids.max");
    assert_eq!(std::fs::read_to_string(&calm_max).unwrap().trim(), "4096");

    // The bomb runs on after this cell returns.
    let mut k = Kernel::start(&api, &bomb).await;
    k.run(
        "import subprocess\np = subprocess.Popen(['bash', '-c', 'f(){ f|f& }; f'])\nprint(p.pid)",
    )
    .await;
    // The gateway and the neighbour answer while it rages.
    let mut calm_kernel =
        atelier_tests::fork_bomb_stays_within(&gw, &api, &calm, &pids_current, 128).await;
    drop(k);

    // Stopping ends all of it: the container's cgroup (which cannot go while a process is in
    // it) is gone.
    api.post_empty(&format!("/v1/notebooks/{bomb}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &bomb, "STOPPED").await;
    assert!(
        !pids_current.exists(),
        "the bomb's cgroup outlived the stop: {}",
        pids_current.display()
    );
    assert_eq!(calm_kernel.run("print(6 * 7)").await.trim(), "42");
}

/// With `ATELIER_NOTEBOOK_NETWORK=none` a container notebook has no network at all, only its
/// loopback (nothing of the host, no way out), and still serves its owner: Jupyter listens
/// on a socket the gateway reaches through the agent dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_network_a_container_notebook_has_only_its_loopback() {
    let gw = Gateway::start_docker("", &[("ATELIER_NOTEBOOK_NETWORK", "none")]).await;
    let alice = gw.create_user("alice").await;
    let a = gw.create_notebook(&alice, "offline").await;
    gw.wait_status(&alice, &a, "RUNNING").await;
    let mode = podman(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}}",
        &format!("atelier-nb-{a}"),
    ]);
    assert_eq!(mode.trim(), "none");
    assert_eq!(networks_of(&a), Vec::<String>::new());
    let code = format!(
        r#"{PROBE_HELPERS}
print(json.dumps({{
    'interfaces': sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]),
    'default_gateway': default_gateway(),
    'gateway_http': connect('127.0.0.1', {http}),
}}))
"#,
        http = gw.addr.port(),
    );
    let mut kernel = Kernel::start(&gw.api(&alice), &a).await;
    let out = kernel.run(&code).await;
    let res: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(res["interfaces"], json!(["lo"]), "{res}");
    assert_eq!(res["default_gateway"], Value::Null, "{res}");
    assert_ne!(res["gateway_http"], "connected", "{res}");
    gw.api(&alice)
        .get(&format!("/nb/{a}/api/status"))
        .await
        .expect_status(200);
}

/// Without nftables the gateway cannot keep containers off the host: notebooks are refused
/// (503, saying what to install) and nothing is created, instead of running unprotected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_firewall_container_notebooks_are_refused() {
    // No `nft` on this gateway's PATH.
    let empty =
        std::env::temp_dir().join(format!("atelier-empty-path-{}", atelier_tests::unique()));
    std::fs::create_dir_all(&empty).unwrap();
    let gw = Gateway::start_docker("", &[("PATH", &empty.to_string_lossy())]).await;
    atelier_tests::eventually(
        "the gateway to find it cannot install its firewall",
        Duration::from_secs(60),
        || {
            let seen = gw.log().contains("container notebooks are refused");
            async move { seen.then_some(()) }
        },
    )
    .await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let msg = api
        .post("/v1/notebooks", json!({"name": "nope"}))
        .await
        .expect_error(503, "sandbox_unavailable");
    assert!(msg.contains("nftables"), "{msg}");
    let list = api.get("/v1/notebooks").await;
    assert_eq!(
        list.expect_status(200)["items"],
        json!([]),
        "a refused create left a notebook"
    );
    drop(gw);
    let _ = std::fs::remove_dir(&empty);
}
