//! The SSH front door with the real OpenSSH client: public-key login to a notebook by name,
//! refusals (wrong key, whitelist, SSH off, unknown notebook) with audit rows, a stopped
//! notebook's clear message, and a host key that survives restarts.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use atelier_tests::{Gateway, eventually};
use serde_json::{Value, json};

struct Ssh<'a> {
    gw: &'a Gateway,
    known_hosts: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ssh<'_> {
    fn run(&self, key: &Path, user: &str, extra: &[&str], command: &str) -> Out {
        self.run_on(self.gw.ssh_addr.port(), key, user, extra, command)
    }

    /// `ssh` with this test's options, to `user` on `port`.
    fn command(&self, port: u16, key: &Path, user: &str, extra: &[&str], command: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "ConnectTimeout=20",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args(extra)
        .arg(format!("{user}@{}", self.gw.ssh_addr.ip()))
        .arg(command);
        c
    }

    fn run_on(&self, port: u16, key: &Path, user: &str, extra: &[&str], command: &str) -> Out {
        let out = self
            .command(port, key, user, extra, command)
            .output()
            .expect("running ssh (openssh-client)");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A session left running, with its stdout and stderr piped.
    fn spawn(&self, key: &Path, user: &str, command: &str) -> std::process::Child {
        self.command(self.gw.ssh_addr.port(), key, user, &[], command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running ssh")
    }
}

fn write_key(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn host_fingerprint(gw: &Gateway) -> String {
    let scan = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &gw.ssh_addr.port().to_string()])
        .arg(gw.ssh_addr.ip().to_string())
        .output()
        .expect("ssh-keyscan");
    let line = String::from_utf8_lossy(&scan.stdout).into_owned();
    assert!(
        line.contains("ssh-ed25519"),
        "ssh-keyscan: {line} {}",
        String::from_utf8_lossy(&scan.stderr)
    );
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn audit(gw: &Gateway, action: &str) -> Vec<Value> {
    let r = gw
        .admin()
        .get(&format!("/v1/audit?action={action}&limit=100"))
        .await;
    r.expect_status(200)["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_logins_are_checked_refused_and_audited() {
    let mut gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let dir = gw.data_dir.join("ssh-client");
    std::fs::create_dir_all(&dir).unwrap();
    let ssh = Ssh {
        gw: &gw,
        known_hosts: dir.join("known_hosts"),
    };

    let r = api.post("/v1/keypairs", json!({"name": "k1"})).await;
    let k1 = write_key(
        &dir,
        "k1.pem",
        r.expect_status(201)["private_key"].as_str().unwrap(),
    );
    let r = api.post("/v1/keypairs", json!({"name": "other"})).await;
    let other = write_key(
        &dir,
        "other.pem",
        r.expect_status(201)["private_key"].as_str().unwrap(),
    );
    // A port of the range that another program holds is skipped.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", gw.ssh_ports.0)).ok();
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "remote", "ssh": {"enabled": true, "key_pairs": ["k1"]}}),
        )
        .await;
    let id = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    gw.wait_status(&alice, &id, "RUNNING").await;

    let before = api.get(&format!("/v1/notebooks/{id}")).await;
    assert!(
        before.expect_status(200)["last_activity_at"].is_null(),
        "no activity yet: {}",
        before.text
    );

    // The right key gets in (by name and by id).
    for user in ["remote", id.as_str()] {
        let out = ssh.run(&k1, user, &[], "true");
        assert_ne!(
            out.code, 255,
            "{user}: ssh failed to log in: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("Permission denied"), "{}", out.stderr);
    }
    // A login is user activity (what auto-stop reads), written within the flush interval.
    let api2 = gw.api(&alice);
    let path = format!("/v1/notebooks/{id}");
    eventually(
        "the SSH login to show as notebook activity",
        Duration::from_secs(60),
        || {
            let (api, path) = (&api2, &path);
            async move {
                let r = api.get(path).await;
                (!r.json["last_activity_at"].is_null()).then_some(())
            }
        },
    )
    .await;
    let logins = audit(&gw, "sshLogin").await;
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert_eq!(logins[0]["user"], "alice");
    assert_eq!(logins[0]["resource_name"], "remote");
    assert!(
        logins[0]["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{logins:?}"
    );

    // The API and the CLI tell a client where to go, and a config printed by
    // `ssh-config` with the known_hosts line from `ssh info` works with strict checking.
    let info = gw.api(&alice).get("/v1/ssh").await;
    let info = info.expect_status(200).clone();
    assert_eq!(info["enabled"], true);
    let nb = api.get(&format!("/v1/notebooks/{id}")).await;
    let eps = nb.expect_status(200)["endpoints"]["ssh"].clone();
    let eps = eps.as_array().expect("endpoints.ssh").clone();
    assert_eq!(eps.len(), 2, "{eps:?}");
    let ep = &eps[0];
    assert_eq!(ep["host"], "127.0.0.1", "{ep}");
    assert_eq!(ep["port"], gw.ssh_addr.port(), "{ep}");
    assert_eq!(ep["user"], "remote", "{ep}");
    assert_eq!(ep["host_key_fingerprint"], info["host_key_fingerprint"]);
    // The notebook's own port, user ma-user (the seed's form), from the configured range.
    let own = &eps[1];
    assert_eq!(own["user"], "ma-user", "{own}");
    let own_port = own["port"].as_u64().unwrap() as u16;
    assert!(
        (gw.ssh_ports.0..=gw.ssh_ports.1).contains(&own_port),
        "{own}"
    );
    if squatter.is_some() {
        assert_ne!(
            own_port, gw.ssh_ports.0,
            "the port another program holds is skipped"
        );
    }
    drop(squatter);
    let out = ssh.run_on(own_port, &k1, "ma-user", &[], "true");
    assert_ne!(out.code, 255, "own port: {}", out.stderr);
    let out = ssh.run_on(own_port, &k1, "remote", &[], "true");
    assert_eq!(out.code, 255, "own port takes ma-user only: {}", out.stderr);
    let scanned = host_fingerprint(&gw);
    let served: String = info["host_key"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(scanned, served);
    let k1_arg = k1.to_string_lossy().into_owned();
    let out = gw
        .cli(
            &alice,
            &[
                "notebook",
                "ssh-config",
                "remote",
                "--identity-file",
                &k1_arg,
                "--alias",
                "nb",
            ],
            &[],
        )
        .await;
    out.assert_ok("notebook ssh-config");
    assert!(
        out.stdout.starts_with("Host nb\n  HostName 127.0.0.1\n"),
        "{}",
        out.stdout
    );
    let config = dir.join("config");
    std::fs::write(&config, &out.stdout).unwrap();
    let out = gw.cli(&alice, &["ssh", "info"], &[]).await;
    out.assert_ok("ssh info");
    let known = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("known_hosts"))
        .expect("a known_hosts line")
        .trim()
        .to_owned();
    let strict = dir.join("strict_known_hosts");
    std::fs::write(&strict, format!("{known}\n")).unwrap();
    let run = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", strict.display()))
        .args(["nb", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_ne!(
        run.status.code(),
        Some(255),
        "ssh -F <printed config> nb: {stderr}"
    );
    // A notebook without SSH has no SSH endpoint, and ssh-config says how to turn it on.
    let r = api.post("/v1/notebooks", json!({"name": "plain"})).await;
    let plain = r.expect_status(201).clone();
    assert!(plain["endpoints"].get("ssh").is_none(), "{plain}");
    let out = gw
        .cli(&alice, &["notebook", "ssh-config", "plain"], &[])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("--ssh --key-pair"), "{}", out.stderr);

    // Refusals: another key pair of the same user, an unknown notebook.
    let out = ssh.run(&other, "remote", &[], "true");
    assert_eq!(out.code, 255, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{}",
        out.stderr
    );
    let out = ssh.run(&k1, "nope", &[], "true");
    assert_eq!(out.code, 255);
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{}",
        out.stderr
    );

    // The whitelist: 127.0.0.2 only; connecting from 127.0.0.1 is refused, from .2 it works.
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"whitelist": ["127.0.0.2"]}}),
        )
        .await;
    r.expect_status(200);
    let out = ssh.run(&k1, "remote", &[], "true");
    assert_eq!(out.code, 255, "{}", out.stderr);
    let out = ssh.run(&k1, "remote", &["-b", "127.0.0.2"], "true");
    assert_ne!(
        out.code, 255,
        "from the whitelisted address: {}",
        out.stderr
    );

    let refused = audit(&gw, "sshLoginRefused").await;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|a| a["detail"].as_str().unwrap())
        .collect();
    for want in [
        "not one of the notebook's key pairs",
        "no such notebook",
        "not in the notebook's whitelist",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want} in {reasons:?}"
        );
    }

    // A stopped notebook: the key still authenticates, and the client is told what to do.
    let r = api
        .patch(
            &format!("/v1/notebooks/{id}"),
            json!({"ssh": {"whitelist": []}}),
        )
        .await;
    r.expect_status(200);
    // A session open while the notebook stops ends, and says why.
    let mut open_session = ssh.spawn(&k1, "remote", "echo in; exec sleep 600");
    let mut first = [0u8; 3];
    open_session
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"in\n");
    api.post_empty(&format!("/v1/notebooks/{id}/stop"))
        .await
        .expect_status(202);
    gw.wait_status(&alice, &id, "STOPPED").await;
    let ended = open_session.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&ended.stderr);
    assert!(
        said.contains("the notebook stopped"),
        "{said} {:?}",
        ended.status
    );
    let out = ssh.run(&k1, "remote", &[], "true");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("is STOPPED"), "{}", out.stderr);
    assert!(
        out.stderr.contains("atelier notebook start remote"),
        "{}",
        out.stderr
    );

    // One host key for good: the same after a restart (known_hosts still matches).
    let before = host_fingerprint(&gw);
    gw.restart().await;
    assert_eq!(host_fingerprint(&gw), before);
    let ssh = Ssh {
        gw: &gw,
        known_hosts: dir.join("known_hosts"),
    };
    let out = ssh.run(&k1, "remote", &["-o", "StrictHostKeyChecking=yes"], "true");
    assert!(
        !out.stderr.contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        out.stderr
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
}
