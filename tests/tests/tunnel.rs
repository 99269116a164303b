//! The real `atelier-notebook-runtime` with a `connect_back` section dials an in-process
//! tunnel hub and serves its Jupyter (a test server on 127.0.0.1) and its SSH agent through
//! it: the gateway reaches neither by any port or path of its own.

use std::io::Write;
use std::time::Duration;

use atelier_tests::runtime_bin;
use atelier_tunnel::Target;
use atelier_tunnel::hub::{HubSettings, TunnelHub};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Only catches hangs.
const DEADLINE: Duration = Duration::from_secs(300);
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEzhOvjHPu9F5jVQCwQiwVaDwzAQfxqPA2WSXYshXmC4 gw";

/// Ends the runtime (by its own pid) however the test ends.
struct Runtime(std::process::Child);

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: signalling the child this test started, by its pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_runtime_connects_back_and_serves_jupyter_and_its_agent_through_the_tunnel() {
    let dir = std::env::temp_dir().join(format!("atelier-tunnel-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Jupyter's stand-in: one HTTP answer per connection.
    let jupyter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jupyter_port = jupyter.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = jupyter.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\njupyter",
                )
                .await;
            let _ = tcp.shutdown().await;
        }
    });

    let mut settings = HubSettings::new("127.0.0.1:0".parse().unwrap(), dir.join("gateway"));
    settings.session_wait = DEADLINE;
    let hub = TunnelHub::start(settings).await.unwrap();
    let reg = hub.register("nb-runtime-1").unwrap();

    let spec = serde_json::json!({
        "argv": ["/bin/sleep", "600"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": dir,
        "log_file": dir.join("child.log"),
        "status_file": dir.join("status.json"),
        "grace_seconds": 1,
        "ssh": {"socket": dir.join("agent/ssh.sock"), "authorized_key": KEY},
        "connect_back": {
            "gateway": reg.connect_back,
            "jupyter": {"port": jupyter_port},
        },
    });
    let spec_path = dir.join("spec.json");
    let mut f = std::fs::File::create(&spec_path).unwrap();
    f.write_all(spec.to_string().as_bytes()).unwrap();
    drop(f);
    let log = std::fs::File::create(dir.join("runtime.log")).unwrap();
    let _runtime = Runtime(
        std::process::Command::new(runtime_bin())
            .arg("--spec")
            .arg(&spec_path)
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let connected = hub.wait_connected("nb-runtime-1", DEADLINE).await;
    let runtime_log = std::fs::read_to_string(dir.join("runtime.log")).unwrap_or_default();
    assert!(
        connected,
        "the runtime never connected back:\n{runtime_log}"
    );

    // Jupyter, as the proxy dials it.
    let endpoint = hub.endpoint("nb-runtime-1", Target::Jupyter).unwrap();
    let mut s = endpoint.dial().await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.ends_with("\r\n\r\njupyter"), "{answer}");

    // The SSH agent, as the front door dials it: its banner comes back.
    let s = hub.dial("nb-runtime-1", Target::Agent).await.unwrap();
    let mut lines = tokio::io::BufReader::new(s);
    let mut banner = String::new();
    tokio::time::timeout(DEADLINE, lines.read_line(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert!(
        banner.starts_with("SSH-2.0-AtelierNotebookAgent"),
        "{banner:?}"
    );

    // No engine in this launch: refused, not hung.
    let err = hub.dial("nb-runtime-1", Target::Engine).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    server.abort();
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
