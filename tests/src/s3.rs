//! A real S3 server on loopback for the object storage tests: s3s-fs
//! (`ATELIER_TEST_S3S_FS`, built by scripts/test.sh), one per test, with its own root dir
//! (a bucket is a directory there) and key pair. Stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
}

impl S3Server {
    /// Starts s3s-fs with a fresh root and key pair, and waits until it accepts connections.
    pub fn start() -> S3Server {
        let bin = std::env::var("ATELIER_TEST_S3S_FS")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "ATELIER_TEST_S3S_FS is not set: run bash .ci/run (scripts/test.sh), which \
                     builds s3s-fs once (scripts/lib.sh s3s_fs_bin)"
                )
            });
        let root = std::env::temp_dir().join(format!("atelier-s3-{}", crate::unique()));
        std::fs::create_dir_all(&root).unwrap();
        let port = crate::free_port();
        let access_key = format!("AK{}", crate::unique()).to_uppercase();
        let secret_key = format!("sk/{}+{}", crate::unique(), crate::unique());
        let log = std::fs::File::create(root.with_extension("log")).unwrap();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = S3Server {
            root,
            addr,
            access_key,
            secret_key,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited ({status}): {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (a directory under the root).
    pub fn bucket(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.with_extension("log")).unwrap_or_default()
    }

    /// Registers this server as storage connection `name` of the user behind `api`.
    pub async fn connect(&self, api: &crate::Api, name: &str) {
        api.post(
            "/v1/storage/connections",
            serde_json::json!({
                "name": name,
                "endpoint": self.endpoint(),
                "access_key_id": self.access_key,
                "secret_access_key": self.secret_key,
            }),
        )
        .await
        .expect_status(201);
    }

    /// Stops the server (nothing answers at the endpoint any more); its files stay until
    /// drop.
    pub fn kill(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (SIGSTOP): requests hang until [`Self::thaw`], as a stalled
    /// store's would.
    pub fn freeze(&self) {
        // SAFETY: kill(2) with our own child's pid and a signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(self.root.with_extension("log"));
    }
}

/// Waits (at most a minute) until the object stored at `file` (under a bucket's directory)
/// holds `text`: writes through a mount are uploaded shortly after the file is closed.
pub async fn wait_for_object(file: &std::path::Path, text: &str) {
    crate::eventually(
        &format!("{} to hold {text:?}", file.display()),
        Duration::from_secs(60),
        || async move { (std::fs::read_to_string(file).ok()? == text).then_some(()) },
    )
    .await;
}

/// Deterministic bytes that do not compress or repeat (test files).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The files under `dir` (recursively), as paths relative to it: what a bucket's directory
/// holds.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}
