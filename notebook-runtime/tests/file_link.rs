//! The agent's side of the gateway's file link: it listens on `atelier.file`'s socket only
//! when asked for exactly the path of its spec, replaces what was planted there without
//! touching what a link points to, relays each connection back as a `forwarded-streamlocal`
//! channel, and stops listening when the link ends.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_atelier-notebook-runtime");

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Runtime(Child);

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway's end: hands every forwarded channel (and the path it names) to the test.
struct Gateway {
    channels: mpsc::UnboundedSender<(String, russh::Channel<client::Msg>)>,
}

impl client::Handler for Gateway {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: russh::Channel<client::Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let _ = self.channels.send((socket_path.to_owned(), channel));
        Ok(())
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("atelier-file-link-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

/// Starts a runtime whose agent has `file_socket` as atelier.file's socket.
fn start(dir: &Path, file_socket: &Path) -> (Runtime, PrivateKey) {
    let key = PrivateKey::new(
        KeypairData::from(Ed25519Keypair::from_seed(&[7u8; 32])),
        "test",
    )
    .expect("key");
    let spec = json!({
        "argv": ["/bin/sh", "-c", "sleep 300"],
        "env": {"PATH": "/usr/bin:/bin", "HOME": dir},
        "cwd": dir,
        "log_file": dir.join("child.log"),
        "status_file": dir.join("status.json"),
        "grace_seconds": 1,
        "ssh": {
            "socket": dir.join("agent/ssh.sock"),
            "authorized_key": key.public_key().to_openssh().expect("openssh"),
            "file_socket": file_socket,
        }
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("json")).expect("spec");
    let child = Command::new(BIN)
        .arg("--spec")
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("runtime.stderr")).expect("stderr"))
        .spawn()
        .expect("spawn runtime");
    (Runtime(child), key)
}

/// Connects to the agent as the gateway does (retrying while it starts, at most 30 s).
async fn link(
    dir: &Path,
    key: &PrivateKey,
) -> (
    client::Handle<Gateway>,
    mpsc::UnboundedReceiver<(String, russh::Channel<client::Msg>)>,
) {
    let socket = dir.join("agent/ssh.sock");
    let mut stream = None;
    for _ in 0..600 {
        if let Ok(s) = tokio::net::UnixStream::connect(&socket).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = stream.expect("the agent never listened");
    let (tx, rx) = mpsc::unbounded_channel();
    // The agent's link is local: the `none` cipher, as the gateway asks for it.
    let config = client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[russh::cipher::NONE]),
            mac: std::borrow::Cow::Borrowed(&[russh::mac::NONE]),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut handle = client::connect_stream(Arc::new(config), stream, Gateway { channels: tx })
        .await
        .expect("handshake");
    let auth = handle
        .authenticate_publickey(
            "atelier-gateway",
            PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None),
        )
        .await
        .expect("auth");
    assert!(auth.success(), "the agent refused the link key");
    (handle, rx)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

#[test]
fn only_atelier_files_socket_is_served_and_a_planted_link_is_replaced_not_followed() {
    let tmp = scratch("attack");
    let dir = tmp.0.clone();
    std::fs::create_dir_all(dir.join("agent")).unwrap();
    let file_socket = dir.join("agent/storage.sock");
    // The notebook planted a link where the socket goes, to a file it wants destroyed.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &file_socket).unwrap();
    let (_rt, key) = start(&dir, &file_socket);
    runtime().block_on(async {
        let (handle, mut channels) = link(&dir, &key).await;

        // Any other path is refused, and nothing is made there.
        let elsewhere = dir.join("elsewhere.sock");
        assert!(
            handle
                .streamlocal_forward(elsewhere.to_string_lossy())
                .await
                .is_err(),
            "the agent listened on a path that is not atelier.file's"
        );
        assert!(!elsewhere.exists());

        handle
            .streamlocal_forward(file_socket.to_string_lossy())
            .await
            .expect("the agent serves atelier.file's socket when asked");
        let meta = std::fs::symlink_metadata(&file_socket).unwrap();
        assert!(meta.file_type().is_socket(), "the link was not replaced");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

        // A program in the notebook connects; the gateway gets the bytes over the link.
        let mut program = tokio::net::UnixStream::connect(&file_socket).await.unwrap();
        program.write_all(b"GET /stat").await.unwrap();
        let (path, channel) = tokio::time::timeout(Duration::from_secs(30), channels.recv())
            .await
            .expect("no channel came back")
            .expect("link closed");
        assert_eq!(path, file_socket.to_string_lossy());
        let mut gateway_end = channel.into_stream();
        let mut got = [0u8; 9];
        gateway_end.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET /stat");
        gateway_end.write_all(b"200").await.unwrap();
        let mut answer = [0u8; 3];
        program.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"200");

        // The link ends: the agent stops listening and removes its socket.
        handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await
            .unwrap();
        drop(handle);
        let mut gone = false;
        for _ in 0..600 {
            if !file_socket.exists() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the socket outlived the link");
    });
}
