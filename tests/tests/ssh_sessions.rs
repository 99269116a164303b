//! SSH sessions into a running notebook with stock clients (OpenSSH's ssh, scp, sftp, and
//! paramiko): commands and exit codes, a terminal with TERM and window size, large file
//! copies both ways, sftp, port forwarding both ways, the VS Code Remote-SSH pattern, and
//! refusals for other keys and deleted notebooks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use atelier_tests::{Gateway, free_port, tools_python};
use serde_json::json;

/// OpenSSH client options shared by ssh, scp and sftp.
struct Client {
    host: String,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Client {
    fn options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "ConnectTimeout=20".into(),
            "-o".into(),
            "ServerAliveInterval=10".into(),
            "-i".into(),
            self.key.to_string_lossy().into_owned(),
        ]
    }

    fn ssh(&self, user: &str, extra: &[&str], command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.options())
            .args(["-p", &self.port.to_string()])
            .args(extra)
            .arg(format!("{user}@{}", self.host))
            .arg(command);
        cmd
    }

    fn run(&self, user: &str, command: &str) -> Output {
        self.ssh(user, &[], command)
            .stdin(Stdio::null())
            .output()
            .expect("running ssh")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn write_key(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Kills a helper process (a forwarding ssh) when the test ends, passing or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-shot echo server inside the notebook, started over ssh; prints its port.
const ECHO_SERVER: &str = "python3 -c 'import socket\ns=socket.socket()\ns.bind((\"127.0.0.1\",0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\nc,_=s.accept()\nd=c.recv(100)\nc.sendall(b\"echo:\"+d)\nc.close()'";

/// Connects (retrying while a forward comes up) and returns what an echo server answers.
fn ask(port: u16, message: &[u8]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(message).unwrap();
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if !answer.is_empty() || Instant::now() > deadline {
                    return answer;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("connecting to 127.0.0.1:{port}: {e}"),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_files_and_forwards_reach_inside_the_notebook() {
    // Sandboxed, process notebooks run as ma-user in /home/ma-user/work, as containers do.
    let gw = Gateway::start().await;
    let inside = gw.sandboxed().then_some("/home/ma-user/work");
    session_checks(gw, inside).await;
}

/// The same checks against a container notebook (docker backend on Podman): the agent is the
/// container's PID 1 runtime, and the work dir is `/home/ma-user/work` inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_files_and_forwards_reach_inside_a_container_notebook() {
    let gw = Gateway::start_docker("", &[]).await;
    session_checks(gw, Some("/home/ma-user/work")).await;
}

/// `work_inside`: the notebook's work dir as its processes see it (`None`: the host path).
async fn session_checks(mut gw: Gateway, work_inside: Option<&str>) {
    let alice = gw.create_user("alice").await;
    let api = gw.api(&alice);
    let dir = gw.data_dir.join("ssh-client");
    std::fs::create_dir_all(&dir).unwrap();
    let r = api.post("/v1/keypairs", json!({"name": "k1"})).await;
    let k1 = write_key(
        &dir,
        "k1.pem",
        r.expect_status(201)["private_key"].as_str().unwrap(),
    );
    let r = api.post("/v1/keypairs", json!({"name": "k2"})).await;
    let k2 = write_key(
        &dir,
        "k2.pem",
        r.expect_status(201)["private_key"].as_str().unwrap(),
    );
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "box", "ssh": {"enabled": true, "key_pairs": ["k1"]}}),
        )
        .await;
    let id = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            "/v1/notebooks",
            json!({"name": "other", "ssh": {"enabled": true, "key_pairs": ["k2"]}}),
        )
        .await;
    let other = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    gw.wait_status(&alice, &id, "RUNNING").await;
    gw.wait_status(&alice, &other, "RUNNING").await;
    let ssh = Client {
        host: gw.ssh_addr.ip().to_string(),
        port: gw.ssh_addr.port(),
        key: k1.clone(),
        known_hosts: dir.join("known_hosts"),
    };
    let work = gw.notebook_dir(&id).join("work");

    // Traffic on an open session is notebook activity (auto-stop reads it): a command on
    // the other notebook prints for about 20 s, and nothing else touches that notebook.
    let started = time::OffsetDateTime::now_utc();
    let ticker = Client {
        key: k2.clone(),
        host: ssh.host.clone(),
        port: ssh.port,
        known_hosts: dir.join("known_hosts_ticker"),
    }
    .ssh(
        "other",
        &[],
        "for i in 1 2 3 4 5 6; do echo tick; sleep 4; done",
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // Commands: output, stderr, exit codes, and they run in the notebook's work dir with its
    // environment.
    let out = ssh.run("box", "echo hi; echo oops >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));
    let out = ssh.run("box", "pwd; echo $ATELIER_NOTEBOOK_ID");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen_work = work_inside
        .map(str::to_owned)
        .unwrap_or_else(|| work.display().to_string());
    assert_eq!(
        text(&out.stdout),
        format!("{seen_work}\n{id}\n"),
        "{}",
        text(&out.stderr)
    );
    if work_inside.is_some() {
        let out = ssh.run("box", "id -u; id -g");
        assert_eq!(text(&out.stdout), "1000\n100\n", "{}", text(&out.stderr));
    }
    // A container is its own sandbox (asked first: a docker gateway logs no sandbox line).
    if work_inside.is_some() || gw.sandboxed() {
        // Inside the notebook's sandbox: the gateway's database is hidden there.
        let db = gw.data_dir.join("atelier.db");
        assert!(db.exists());
        let out = ssh.run(
            "box",
            &format!("test -e {} && echo visible || echo hidden", db.display()),
        );
        assert_eq!(text(&out.stdout), "hidden\n", "{}", text(&out.stderr));
    }
    // Input reaches the command, all of it, and its end is seen.
    let mut child = ssh
        .ssh("box", &[], "wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = vec![b'x'; 3 * 1024 * 1024 + 17];
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(text(&out.stdout).trim(), (3 * 1024 * 1024 + 17).to_string());
    // A process killed by a signal is reported as such (OpenSSH exits 255 and says so).
    let out = ssh.run("box", "kill -TERM $$");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The notebook's own port, user ma-user, is the same notebook.
    let nb = api.get(&format!("/v1/notebooks/{id}")).await;
    let own_port = nb.expect_status(200)["endpoints"]["ssh"][1]["port"]
        .as_u64()
        .unwrap() as u16;
    let own = Client {
        port: own_port,
        ..Client {
            host: ssh.host.clone(),
            port: 0,
            key: k1.clone(),
            known_hosts: ssh.known_hosts.clone(),
        }
    };
    let out = own.run("ma-user", "echo $ATELIER_NOTEBOOK_ID; exit 7");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{id}\n"));

    // A terminal: TERM and the window size of the client's terminal arrive (`script` gives
    // ssh a terminal of 40x100).
    let command = format!(
        "stty cols 100 rows 40; ssh {} -p {} -tt box@{} 'echo TERM=$TERM; stty size; exit 5'",
        ssh.options()
            .iter()
            .map(|o| format!("'{o}'"))
            .collect::<Vec<_>>()
            .join(" "),
        ssh.port,
        ssh.host
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils)");
    let shown = text(&out.stdout);
    assert!(shown.contains("TERM=xterm-256color"), "{shown}");
    assert!(shown.contains("40 100"), "{shown}");
    assert_eq!(out.status.code(), Some(5), "{shown}");

    // scp of 100 MB in and out, checksums equal.
    let big = dir.join("big.bin");
    let status = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=100", "status=none"])
        .arg(format!("of={}", big.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let scp = |from: String, to: String| {
        let out = Command::new("scp")
            .args(ssh.options())
            .args(["-q", "-P", &ssh.port.to_string()])
            .args([from, to])
            .output()
            .unwrap();
        assert!(out.status.success(), "scp: {}", text(&out.stderr));
    };
    scp(
        big.to_string_lossy().into_owned(),
        format!("box@{}:big.bin", ssh.host),
    );
    assert_eq!(sha256(&work.join("big.bin")), sha256(&big));
    let back = dir.join("back.bin");
    scp(
        format!("box@{}:big.bin", ssh.host),
        back.to_string_lossy().into_owned(),
    );
    assert_eq!(sha256(&back), sha256(&big));
    std::fs::remove_file(&back).unwrap();

    // An sftp batch: mkdir, put, rename, get, ls, rm, rmdir.
    std::fs::write(dir.join("note.txt"), "hello sftp\n").unwrap();
    let got = dir.join("got.txt");
    let batch = dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir d\nput {} d/a.txt\nrename d/a.txt d/b.txt\nget d/b.txt {}\nls -l d\nrm d/b.txt\nrmdir d\nls\n",
            dir.join("note.txt").display(),
            got.display()
        ),
    )
    .unwrap();
    let out = Command::new("sftp")
        .args(ssh.options())
        .args(["-P", &ssh.port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("box@{}", ssh.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sftp: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "hello sftp\n");
    let listing = text(&out.stdout);
    assert!(listing.contains("b.txt"), "{listing}");
    assert!(listing.contains("big.bin"), "{listing}");
    assert!(!work.join("d").exists());

    // ssh -L: a server started inside the notebook, reached from here.
    let mut server = ssh
        .ssh("box", &[], ECHO_SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Reaped(server);
    let inner: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port: {line:?}"));
    let local = free_port();
    let forward = ssh
        .ssh(
            "box",
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                &format!("127.0.0.1:{local}:127.0.0.1:{inner}"),
            ],
            "",
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _forward = Reaped(forward);
    assert_eq!(ask(local, b"ping"), "echo:ping");

    // ssh -R: a server here, reached from inside the notebook.
    let here = TcpListener::bind("127.0.0.1:0").unwrap();
    let here_port = here.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        let (mut c, _) = here.accept().unwrap();
        let mut buf = [0u8; 100];
        let n = c.read(&mut buf).unwrap();
        let mut answer = b"back:".to_vec();
        answer.extend_from_slice(&buf[..n]);
        c.write_all(&answer).unwrap();
    });
    let remote = free_port();
    let client_side = format!(
        "python3 -c 'import socket\ns=socket.create_connection((\"127.0.0.1\",{remote}))\ns.sendall(b\"hello\")\nprint(s.makefile(\"rb\").read().decode())'"
    );
    let out = ssh
        .ssh(
            "box",
            &[
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &format!("127.0.0.1:{remote}:127.0.0.1:{here_port}"),
            ],
            &client_side,
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "back:hello",
        "{}",
        text(&out.stderr)
    );
    echo.join().unwrap();

    // The VS Code Remote-SSH pattern with paramiko: one connection, an exec that starts a
    // server on 127.0.0.1:<random> and prints the port, then a direct-tcpip channel to it.
    let script = dir.join("vscode.py");
    std::fs::write(&script, PARAMIKO_VSCODE).unwrap();
    let out = Command::new(tools_python())
        .arg(&script)
        .args([&ssh.host, &ssh.port.to_string(), "box"])
        .arg(&k1)
        .arg(ECHO_SERVER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "paramiko: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "echo:vscode");

    let out = ticker.wait_with_output().unwrap();
    assert_eq!(
        text(&out.stdout).lines().count(),
        6,
        "{}",
        text(&out.stderr)
    );
    let path = format!("/v1/notebooks/{other}");
    let seen = atelier_tests::eventually(
        "the session's traffic to show as the notebook's activity",
        Duration::from_secs(60),
        || {
            let (api, path) = (&api, &path);
            async move {
                let r = api.get(path).await;
                let at = r.json["last_activity_at"].as_str()?;
                let at =
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .ok()?;
                (at - started >= time::Duration::seconds(15)).then_some(at)
            }
        },
    )
    .await;
    assert!(seen > started);

    // A client that vanishes (killed, network gone) leaves nothing running in the notebook.
    let seconds = 4000 + std::process::id() % 1000;
    let marker = format!("sleep {seconds}");
    // As /proc/PID/cmdline has it (arguments end with NUL); the client's own has a space.
    let needle = format!("sleep\0{seconds}\0");
    let mut client = ssh
        .ssh("box", &[], &format!("exec {marker}"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let client_pid = client.id() as i32;
    let remote = || {
        atelier_tests::processes_mentioning(std::ffi::OsStr::new(&needle))
            .into_iter()
            .filter(|p| *p != client_pid)
            .collect::<Vec<_>>()
    };
    atelier_tests::eventually(
        "the remote command to start",
        Duration::from_secs(30),
        || {
            let found = remote();
            async move { (!found.is_empty()).then_some(()) }
        },
    )
    .await;
    client.kill().unwrap();
    client.wait().unwrap();
    atelier_tests::eventually(
        "the remote command to end with its client",
        Duration::from_secs(30),
        || {
            let found = remote();
            async move { found.is_empty().then_some(()) }
        },
    )
    .await;

    // What OpenSSH's client never sends: a window change mid-session, and a signal (with
    // the program's death by it reported back as exit-signal).
    let pem = std::fs::read_to_string(&k1).unwrap();
    russh_checks(gw.ssh_addr, "box", &pem).await;

    // The notebook outlives a gateway restart, and so does SSH into it (same host key).
    gw.restart().await;
    let out = ssh.run("box", "echo again");
    assert_eq!(text(&out.stdout), "again\n", "{}", text(&out.stderr));
    let api = gw.api(&alice);

    // Refusals: another notebook's key; a deleted notebook (its own port closes too).
    let theirs = Client {
        key: k2.clone(),
        host: ssh.host.clone(),
        port: ssh.port,
        known_hosts: ssh.known_hosts.clone(),
    };
    let out = theirs.run("box", "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );
    let out = theirs.run("other", "echo mine");
    assert_eq!(text(&out.stdout), "mine\n", "{}", text(&out.stderr));
    api.delete(&format!("/v1/notebooks/{id}"))
        .await
        .expect_status(202);
    gw.wait_gone(&alice, &id).await;
    let out = ssh.run("box", "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );
    let out = own.run("ma-user", "true");
    assert_eq!(out.status.code(), Some(255));
}

struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Reads a channel to its end: (stdout, exit status, exit signal).
async fn drain(
    channel: &mut russh::Channel<russh::client::Msg>,
) -> (String, Option<u32>, Option<russh::Sig>) {
    let (mut out, mut status, mut signal) = (Vec::new(), None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            russh::ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    (text(&out), status, signal)
}

async fn russh_checks(addr: std::net::SocketAddr, user: &str, pem: &str) {
    let key = russh::keys::PrivateKey::from_openssh(pem).unwrap();
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, addr, AnyHost).await.unwrap();
    let auth = session
        .authenticate_publickey(
            user,
            russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(key), None),
        )
        .await
        .unwrap();
    assert!(auth.success());

    // The terminal is 80x24 at first and 100x40 by the time `stty size` runs.
    let mut channel = session.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel
        .exec(true, "stty size; sleep 2; stty size")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    channel.window_change(100, 40, 0, 0).await.unwrap();
    let (out, status, _) = drain(&mut channel).await;
    assert!(out.contains("24 80"), "{out:?}");
    assert!(out.contains("40 100"), "{out:?}");
    assert_eq!(status, Some(0));

    // A signal reaches the command; its death by that signal comes back.
    let mut channel = session.channel_open_session().await.unwrap();
    channel
        .exec(true, "echo ready; exec sleep 60")
        .await
        .unwrap();
    let mut ready = false;
    while let Some(msg) = channel.wait().await {
        if let russh::ChannelMsg::Data { data } = msg {
            ready = text(&data).contains("ready");
            break;
        }
    }
    assert!(ready);
    tokio::time::sleep(Duration::from_millis(300)).await;
    channel.signal(russh::Sig::TERM).await.unwrap();
    let (_, status, signal) = drain(&mut channel).await;
    assert!(
        matches!(signal, Some(russh::Sig::TERM)),
        "exit signal {signal:?}, exit status {status:?}"
    );
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

/// paramiko: exec a server, read its port, then tunnel to it over the same connection.
const PARAMIKO_VSCODE: &str = r#"
import sys, paramiko
host, port, user, key, server = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect(host, port=port, username=user, key_filename=key, look_for_keys=False, allow_agent=False, timeout=20)
stdin, stdout, stderr = c.exec_command(server)
inner = int(stdout.readline().strip())
ch = c.get_transport().open_channel("direct-tcpip", ("127.0.0.1", inner), ("127.0.0.1", 0))
ch.sendall(b"vscode")
data = b""
while True:
    chunk = ch.recv(100)
    if not chunk:
        break
    data += chunk
print(data.decode())
ch.close()
assert stdout.channel.recv_exit_status() == 0
c.close()
"#;
