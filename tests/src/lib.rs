//! Harness for Atelier's end-to-end tests: it runs the real `atelier serve` binary (which runs
//! real JupyterLab servers through `atelier-notebook-runtime`) on a loopback port with a private
//! data dir, and talks to it over HTTP, WebSocket and the CLI.
//!
//! ```text
//! test ──HTTP/WS──► atelier serve (127.0.0.1:<free port>, data dir /tmp/atelier-e2e-<uuid>)
//!                       └─► atelier-notebook-runtime ─► [bwrap] jupyter lab ─► kernels
//! ```
//!
//! Requirements (each missing one fails with a message saying what to do):
//! - the binaries, from `cargo build --workspace`: found in `ATELIER_BIN_DIR`, else in the
//!   directory two levels above the test executable (`target/<profile>`);
//! - `ATELIER_TEST_JUPYTER_VENV`: a virtualenv with JupyterLab 4 (`bash .ci/run (scripts/test.sh)`).
//!
//! Every wait is a poll with a deadline; nothing sleeps to synchronise. Dropping a [`Gateway`]
//! stops its notebooks, the gateway and any process left over that mentions its data dir,
//! then removes the data dir; when the test is failing it first prints the gateway's log.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
pub use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long a notebook may take to reach a wanted status.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `atelier serve` may take to answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Limit for one kernel execution.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(200);
/// The largest WebSocket message the test client accepts.
const WS_MAX: usize = 128 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Locating what the tests run

/// Where `atelier` and `atelier-notebook-runtime` are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ATELIER_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test exe> → target/<profile>
    let exe = std::env::current_exe().expect("locating the test executable");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("cannot derive the binary dir from {}", exe.display()))
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace` first (same CARGO_TARGET_DIR and profile as \
         the tests), or set ATELIER_BIN_DIR to the directory holding `atelier` and \
         `atelier-notebook-runtime`",
        path.display()
    );
    path
}

/// The `atelier` binary (server and CLI).
pub fn atelier_bin() -> PathBuf {
    binary("atelier")
}

/// The `atelier-notebook-runtime` binary.
pub fn runtime_bin() -> PathBuf {
    binary("atelier-notebook-runtime")
}

/// A virtualenv that scripts/test.sh prepares and names in the environment variable `var`.
fn prepared_venv(var: &str, what: &str, needs: &str) -> PathBuf {
    let venv = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{var} is not set: run bash .ci/run (scripts/test.sh), which prepares {what} \
                 under ~/.cache/atelier, and point {var} at it"
            )
        });
    assert!(
        venv.is_absolute(),
        "{var}={} must be an absolute path",
        venv.display()
    );
    assert!(
        venv.join(needs).is_file(),
        "{var}={} holds no {needs}: run bash .ci/run (scripts/test.sh) to prepare it",
        venv.display()
    );
    venv
}

/// The JupyterLab virtualenv the gateway runs notebooks from (`ATELIER_TEST_JUPYTER_VENV`).
pub fn jupyter_venv() -> PathBuf {
    prepared_venv(
        "ATELIER_TEST_JUPYTER_VENV",
        "a JupyterLab 4 virtualenv",
        "bin/jupyter-lab",
    )
}

/// The Python interpreter of the test tools virtualenv (paramiko), `ATELIER_TEST_TOOLS_VENV`.
pub fn tools_python() -> PathBuf {
    prepared_venv(
        "ATELIER_TEST_TOOLS_VENV",
        "a virtualenv with paramiko",
        "bin/python",
    )
    .join("bin/python")
}

/// The Python interpreter of the ML virtualenv (onnxruntime, scikit-learn, skl2onnx),
/// `ATELIER_TEST_ML_VENV`: it builds the test models.
pub fn ml_python() -> PathBuf {
    prepared_venv(
        "ATELIER_TEST_ML_VENV",
        "a virtualenv with onnxruntime, scikit-learn and skl2onnx",
        "bin/python",
    )
    .join("bin/python")
}

/// The virtualenv training jobs run in for the distributed tests (PyTorch),
/// `ATELIER_TEST_TRAINING_VENV`.
pub fn training_venv() -> PathBuf {
    prepared_venv(
        "ATELIER_TEST_TRAINING_VENV",
        "a virtualenv with PyTorch (scripts/training-requirements.txt)",
        "bin/python",
    )
}

/// ONNX Runtime's library, which the gateway's built-in engine loads
/// (`ATELIER_ONNXRUNTIME_LIB`, the ML virtualenv's wheel's; scripts/test.sh finds it).
pub fn onnxruntime_lib() -> String {
    let lib = std::env::var("ATELIER_ONNXRUNTIME_LIB").unwrap_or_default();
    assert!(
        !lib.is_empty() && Path::new(&lib).is_file(),
        "ATELIER_ONNXRUNTIME_LIB={lib:?} is no file: run bash .ci/run (scripts/test.sh), which \
         finds the libonnxruntime.so of the ML virtualenv's onnxruntime wheel"
    );
    lib
}

/// Builds the test ONNX models into `out` (inference/tests/fixtures/make_models.py: the
/// MLP, the logistic regression, `expected.json` with ONNX Runtime's answers).
pub fn make_models(out: &Path) {
    let script = plugins::repo_root().join("inference/tests/fixtures/make_models.py");
    let status = Command::new(ml_python())
        .arg(&script)
        .arg(out)
        .status()
        .expect("running make_models.py");
    assert!(status.success(), "make_models.py failed");
}

/// The container engine (`ATELIER_TEST_DOCKER_HOST`, Podman's Docker-compatible socket) and
/// the offline-built notebook image (`ATELIER_TEST_IMAGE`) the docker-backend tests use;
/// scripts/test.sh prepares both (scripts/containers.sh).
pub fn docker_env() -> (String, String) {
    let get = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{var} is not set: run bash .ci/run (scripts/test.sh), which starts Podman's \
                     service and builds the test image (scripts/containers.sh)"
                )
            })
    };
    (get("ATELIER_TEST_DOCKER_HOST"), get("ATELIER_TEST_IMAGE"))
}

/// The plain-HTTP registry on loopback the save-image tests push to (`ATELIER_TEST_REGISTRY`,
/// `127.0.0.1:5000`; scripts/containers.sh runs it).
pub fn test_registry() -> String {
    std::env::var("ATELIER_TEST_REGISTRY")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "ATELIER_TEST_REGISTRY is not set: run bash .ci/run (scripts/test.sh), which starts \
                 a registry on 127.0.0.1 (scripts/containers.sh)"
            )
        })
}

/// `podman --url <engine> ARGS…` against the tests' engine; its output, or a panic saying
/// what failed.
pub fn podman(args: &[&str]) -> String {
    let (host, _) = docker_env();
    let out = Command::new("podman")
        .arg("--url")
        .arg(&host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running podman: {e}"));
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free loopback port")
}

/// A training script that checkpoints each of 5 steps to `train_url` and resumes after the
/// newest; on its first attempt it prints `MARK-KILL-ME` at step 3 and waits to be killed.
pub const TRAINING_CHECKPOINTS: &str = r#"
import os, re, sys, time
out = os.environ["train_url"]
steps = [int(m.group(1)) for f in os.listdir(out) if (m := re.fullmatch(r"ckpt_(\d+)\.pth", f))]
start = max(steps) + 1 if steps else 1
print(f"resumed at step {start}" if steps else "starting at step 1", flush=True)
for step in range(start, 6):
    open(os.path.join(out, f"ckpt_{step}.pth"), "w").write(str(step))
    print(f"step {step}", flush=True)
    if step == 3 and not steps:
        # Wait here to be killed (the test does), on the first attempt only.
        print("MARK-KILL-ME", flush=True)
        time.sleep(600)
print("finished")
"#;

/// SIGKILLs the Python process running `script` in training job `job_id`'s workers (found
/// by the job's host names in their environment): how many were killed.
pub fn kill_training_python(job_id: &str, script: &str) -> usize {
    let python: Vec<i32> = processes_mentioning(OsStr::new(&format!("ma-job-{job_id}")))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains(script) && !c.contains("/bin/sh"))
        })
        .collect();
    for p in &python {
        // SAFETY: kill(2) on pids found just now.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    python.len()
}

/// A private key written where OpenSSH accepts it (mode 0600).
pub fn write_private_key(dir: &Path, name: &str, pem: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("securing {}: {e}", path.display()));
    path
}

/// The options of `ssh`/`scp` for a test: no user config, `key` only, no prompts, the
/// gateway's host key learned into `known_hosts` on first use.
pub fn ssh_client_args(known_hosts: &Path, key: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "ConnectTimeout=20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-o".into());
    a.push(format!("UserKnownHostsFile={}", known_hosts.display()));
    a.push("-i".into());
    a.push(key.to_string_lossy().into_owned());
    a
}

/// A short unique suffix for names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// Where tests cache what they build (`ATELIER_CACHE`, as the scripts set it, else
/// ~/.cache/atelier).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ATELIER_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache/atelier"),
    }
}

/// The environment the plugin CLI gets in tests: the same cache (so componentize-py is
/// installed once).
pub fn plugin_cli_env() -> Vec<(&'static str, &'static str)> {
    let cache: &'static str =
        Box::leak(cache_dir().to_string_lossy().into_owned().into_boxed_str());
    vec![("ATELIER_CACHE", cache)]
}

pub mod plugins;
pub mod s3;
pub mod serving;
pub mod slurm;
pub mod training;

fn clear_atelier_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"ATELIER_") {
            cmd.env_remove(k);
        }
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        // A fresh connection per request: a restarted gateway never meets a stale one.
        .pool_max_idle_per_host(0)
        .build()
        .expect("building the HTTP client")
}

// ---------------------------------------------------------------------------------------------
// The gateway under test

/// One `atelier serve` with its own data dir, port and admin token.
/// What the gateway logs when it is told to run notebooks unconfined (ATELIER_SANDBOX=none).
const UNCONFINED_LINE: &str = "ATELIER_SANDBOX=none: notebooks run unconfined";

pub struct Gateway {
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    /// The SSH front door.
    pub ssh_addr: SocketAddr,
    /// The range notebooks' own SSH ports come from.
    pub ssh_ports: (u16, u16),
    pub admin_token: String,
    log_path: PathBuf,
    /// Length of the log when the current process was spawned.
    log_offset: u64,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Gateway {
    /// A gateway with the default settings.
    pub async fn start() -> Gateway {
        Self::launch(None, &[]).await
    }

    /// A gateway with extra environment variables (they win over the harness's).
    pub async fn start_with(env: &[(&str, &str)]) -> Gateway {
        Self::launch(None, env).await
    }

    /// A gateway with a TOML settings file (passed as `ATELIER_CONFIG`) and extra environment.
    pub async fn start_with_config(toml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(Some(toml), env).await
    }

    /// A gateway on the `docker` backend (the tests' Podman and image, see [`docker_env`]),
    /// whose default image `jupyterlab` is the test image; `extra_toml` adds settings.
    pub async fn start_docker(extra_toml: &str, env: &[(&str, &str)]) -> Gateway {
        let (host, image) = docker_env();
        let toml = format!(
            "{extra_toml}\n[[images]]\nid = \"jupyterlab\"\nref = \"{image}\"\ndescription = \"the offline test image\"\n"
        );
        let mut all = vec![
            ("ATELIER_BACKEND", "docker"),
            ("ATELIER_DOCKER_HOST", host.as_str()),
        ];
        all.extend_from_slice(env);
        Self::launch(Some(&toml), &all).await
    }

    async fn launch(config: Option<&str>, env: &[(&str, &str)]) -> Gateway {
        // Fail early and clearly when something is missing.
        let _ = (atelier_bin(), runtime_bin(), jupyter_venv());
        let data_dir =
            std::env::temp_dir().join(format!("atelier-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", data_dir.display()));
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(toml) = config {
            let path = data_dir.join("test-config.toml");
            std::fs::write(&path, toml)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            env.push(("ATELIER_CONFIG".into(), path.to_string_lossy().into_owned()));
        }
        let mut gw = Gateway {
            log_path: data_dir.join("gateway.log"),
            data_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ssh_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ssh_ports: (0, 0),
            admin_token: format!("atl_e2e_admin_{}", uuid::Uuid::new_v4().simple()),
            log_offset: 0,
            env,
            child: None,
        };
        // The port can be taken between the probe and the gateway's bind: try a few.
        for attempt in 1..=3 {
            gw.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            gw.ssh_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let first = free_port().min(65535 - 40);
            gw.ssh_ports = (first, first + 40);
            gw.spawn();
            match gw.wait_ready().await {
                Ok(()) => return gw,
                Err(_)
                    if attempt < 3
                        && (gw.log().contains("is another gateway running")
                            || gw.log().contains("listening for SSH")) =>
                {
                    gw.kill9();
                }
                Err(e) => gw.fail(&format!("the gateway did not start: {e}")),
            }
        }
        unreachable!("the loop returns or fails")
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let _ = writeln!(
            log,
            "---- test harness: atelier serve on {} ----",
            self.addr
        );
        self.log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let err = log.try_clone().expect("cloning the log file handle");
        let mut cmd = Command::new(atelier_bin());
        cmd.arg("serve");
        clear_atelier_env(&mut cmd);
        cmd.env("ATELIER_DATA_DIR", &self.data_dir)
            .env("ATELIER_HTTP_ADDR", self.addr.to_string())
            .env("ATELIER_SSH_ADDR", self.ssh_addr.to_string())
            .env(
                "ATELIER_SSH_PORTS",
                format!("{}-{}", self.ssh_ports.0, self.ssh_ports.1),
            )
            .env("ATELIER_ADMIN_TOKEN", &self.admin_token)
            .env("ATELIER_JUPYTER_VENV", jupyter_venv())
            .env("ATELIER_RUNTIME_BIN", runtime_bin())
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} serve: {e}", atelier_bin().display()));
        self.child = Some(child);
    }

    /// Until the process says it listens and `/healthz` answers `ok`.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/healthz", self.base());
        let listening = format!("Atelier is listening on http://{}/", self.addr);
        let http = http_client(Duration::from_secs(2));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("atelier serve exited at once ({status})"));
            }
            if self.log_since_spawn().contains(&listening)
                && let Ok(r) = http.get(&url).send().await
                && r.status() == 200
                && r.text().await.is_ok_and(|t| t.trim() == "ok")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{url} did not answer within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gateway's process id (panics when it is not running).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("the gateway is not running")
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded; SIGKILL after 20 s).
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: plain syscall on our own child, which has not been reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c.try_wait() {
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return;
                }
                _ => return,
            }
        }
    }

    /// Starts the gateway again on the same data dir, port and settings.
    pub async fn start_again(&mut self) {
        assert!(!self.is_running(), "start_again: the gateway still runs");
        self.spawn();
        if let Err(e) = self.wait_ready().await {
            self.fail(&format!("the gateway did not start again: {e}"));
        }
    }

    /// A graceful stop (SIGTERM) and a start on the same data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    /// The whole gateway log (all starts).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    fn log_since_spawn(&self) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let from = (self.log_offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails the test; the gateway log is printed when the gateway is dropped.
    #[track_caller]
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n(the gateway log tail is printed below)")
    }

    // -- clients ---------------------------------------------------------------------------

    pub fn api(&self, token: &str) -> Api {
        Api::new(self.base(), Some(token))
    }

    pub fn admin(&self) -> Api {
        self.api(&self.admin_token)
    }

    /// A client that sends no credentials.
    pub fn anon(&self) -> Api {
        Api::new(self.base(), None)
    }

    // -- users and notebooks ---------------------------------------------------------------

    /// Creates a user (role `user`) and returns a new API token of theirs.
    pub async fn create_user(&self, name: &str) -> String {
        let admin = self.admin();
        admin
            .post("/v1/users", json!({"name": name, "role": "user"}))
            .await
            .expect_status(201);
        let r = admin
            .post(&format!("/v1/users/{name}/tokens"), json!({"label": "e2e"}))
            .await;
        r.expect_status(201);
        r.json["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {}", r.text))
            .to_owned()
    }

    /// Creates a notebook (201, CREATING) and returns its id.
    pub async fn create_notebook(&self, token: &str, name: &str) -> String {
        let r = self
            .api(token)
            .post("/v1/notebooks", json!({"name": name}))
            .await;
        r.expect_status(201);
        assert_eq!(r.json["status"], "CREATING", "{}", r.text);
        r.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", r.text))
            .to_owned()
    }

    /// Polls the notebook until it is `want` (fails early on a *_FAILED or ERROR status).
    pub async fn wait_status(&self, token: &str, id: &str, want: &str) -> Value {
        let api = self.api(token);
        let deadline = Instant::now() + STATUS_TIMEOUT;
        loop {
            let r = api.get(&format!("/v1/notebooks/{id}")).await;
            if r.status != 200 {
                self.fail(&format!(
                    "waiting for notebook {id} to be {want}: GET answered {}: {}",
                    r.status, r.text
                ));
            }
            let status = r.json["status"].as_str().unwrap_or_default().to_owned();
            if status == want {
                return r.json;
            }
            if status.ends_with("_FAILED") || status == "ERROR" {
                let events = api.get(&format!("/v1/notebooks/{id}/events")).await;
                self.fail(&format!(
                    "notebook {id} is {status} (status_reason: {}) while waiting for {want}\nevents: {}",
                    r.json["status_reason"], events.text
                ));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "notebook {id} did not become {want} within {} s; last seen: {}",
                    STATUS_TIMEOUT.as_secs(),
                    r.text
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `GET /v1/notebooks/{id}` answers 404.
    pub async fn wait_gone(&self, token: &str, id: &str) {
        let api = self.api(token);
        let deadline = Instant::now() + STATUS_TIMEOUT;
        loop {
            let r = api.get(&format!("/v1/notebooks/{id}")).await;
            if r.status == 404 {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "notebook {id} still exists after {} s: {} {}",
                    STATUS_TIMEOUT.as_secs(),
                    r.status,
                    r.text
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The event names of a notebook, oldest first.
    pub async fn event_names(&self, token: &str, id: &str) -> Vec<String> {
        self.events(token, id)
            .await
            .iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The notebook as `GET /v1/notebooks/{id}` shows it (200 expected).
    pub async fn notebook(&self, token: &str, id: &str) -> Value {
        self.api(token)
            .get(&format!("/v1/notebooks/{id}"))
            .await
            .expect_status(200)
            .clone()
    }

    /// The notebook's events, each as `Name: detail`, oldest first.
    pub async fn event_lines(&self, token: &str, id: &str) -> Vec<String> {
        self.events(token, id)
            .await
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["event"].as_str().unwrap_or_default(),
                    e["detail"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    async fn events(&self, token: &str, id: &str) -> Vec<Value> {
        let r = self
            .api(token)
            .get(&format!("/v1/notebooks/{id}/events"))
            .await;
        r.expect_status(200);
        r.json["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {}", r.text))
            .clone()
    }

    // -- a browser, by hand ------------------------------------------------------------------

    /// `{id}.nb.localhost:<port>`: notebook `id`'s own host (the default notebook domain).
    pub fn notebook_host(&self, id: &str) -> String {
        format!("{id}.nb.localhost:{}", self.addr.port())
    }

    /// `http://{id}.nb.localhost:<port>`, the origin notebook `id` is served at in browsers.
    pub fn notebook_origin(&self, id: &str) -> String {
        format!("http://{}", self.notebook_host(id))
    }

    /// A client without credentials for notebook `id`'s own host; the name resolves to the
    /// gateway's loopback address (as `*.localhost` does in browsers).
    pub fn notebook_client(&self, id: &str) -> Api {
        let host = format!("{id}.nb.localhost");
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(0)
            .resolve(&host, self.addr)
            .build()
            .expect("building the HTTP client");
        Api {
            base: self.notebook_origin(id),
            token: None,
            http,
        }
    }

    /// What the login page gives a browser: its form token cookie (`name=value`, when the
    /// page sets one) and the form's hidden `csrf` field (when there is one).
    pub async fn login_form(&self) -> (Option<String>, Option<String>) {
        let page = self.anon().get("/login").await;
        page.expect_status(200);
        let cookie = page
            .set_cookies()
            .into_iter()
            .find(|c| c.contains("atelier_csrf="))
            .map(|c| cookie_pair(&c));
        let field = page
            .text
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned);
        (cookie, field)
    }

    /// Logs in through the login form as a browser does (the page's form token, the
    /// console's `Origin`); returns the session cookie as `name=value`.
    pub async fn browser_login(&self, token: &str) -> String {
        let (csrf_cookie, csrf) = self.login_form().await;
        let anon = self.anon();
        let mut body = format!("token={token}&next=%2F");
        if let Some(csrf) = &csrf {
            body.push_str(&format!("&csrf={csrf}"));
        }
        let mut req = anon
            .request(reqwest::Method::POST, "/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", self.base())
            .body(body);
        if let Some(c) = &csrf_cookie {
            req = req.header("cookie", c);
        }
        let r = anon.send(req).await;
        assert!(
            matches!(r.status, 302 | 303),
            "logging in: {} {}",
            r.status,
            shorten(&r.text)
        );
        r.set_cookies()
            .into_iter()
            .find(|c| c.contains("atelier_session=") && !c.contains("atelier_session=;"))
            .map(|c| cookie_pair(&c))
            .unwrap_or_else(|| panic!("no session cookie after logging in: {:?}", r.headers))
    }

    /// A notebook's URL on its own host with a fresh ticket, from `GET /v1/notebooks/{id}/open`
    /// with `cookie` (the console session); panics unless that answers 303.
    pub async fn ticket_url(&self, cookie: &str, id: &str) -> String {
        let anon = self.anon();
        let r = anon
            .send(
                anon.request(reqwest::Method::GET, &format!("/v1/notebooks/{id}/open"))
                    .header("cookie", cookie),
            )
            .await;
        assert_eq!(r.status, 303, "{}: {}", r.what, shorten(&r.text));
        r.header("location")
            .unwrap_or_else(|| panic!("no Location: {:?}", r.headers))
            .to_owned()
    }

    /// Opens notebook `id` in a browser logged in with `cookie`: a ticket from the console,
    /// exchanged on the notebook's host; returns that host's cookie as `name=value`.
    pub async fn open_on_notebook_host(&self, cookie: &str, id: &str) -> String {
        let url = self.ticket_url(cookie, id).await;
        let nb = self.notebook_client(id);
        let path = url
            .strip_prefix(&self.notebook_origin(id))
            .unwrap_or_else(|| panic!("{url} is not on {}", self.notebook_origin(id)));
        let r = nb.get(path).await;
        r.expect_status(200);
        r.set_cookies()
            .into_iter()
            .find(|c| c.contains("atelier_nb="))
            .map(|c| cookie_pair(&c))
            .unwrap_or_else(|| panic!("no notebook-host cookie from {url}: {:?}", r.headers))
    }

    // -- what the process backend leaves on disk -------------------------------------------

    /// `<data>/notebooks/{id}`
    pub fn notebook_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("notebooks").join(id)
    }

    /// The token the notebook's Jupyter server expects (from its generated config).
    pub fn jupyter_token(&self, id: &str) -> String {
        let path = self
            .notebook_dir(id)
            .join("run/config/jupyter_server_config.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        let token = v["IdentityProvider"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no IdentityProvider.token in {}", path.display()))
            .to_owned();
        assert!(token.len() >= 16, "suspiciously short Jupyter token");
        token
    }

    /// The runtime's `run/status.json` (`runtime_pid`, `child_pid`, `state`, …).
    pub fn runtime_status(&self, id: &str) -> Value {
        let path = self.notebook_dir(id).join("run/status.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    }

    /// Whether the gateway runs process notebooks sandboxed (from its startup log line). In
    /// CI it must: a missing sandbox fails the test run instead of passing it silently.
    pub fn sandboxed(&self) -> bool {
        if self
            .env
            .iter()
            .any(|(k, v)| k == "ATELIER_BACKEND" && v != "process")
        {
            // Containers are the engine's to confine.
            return false;
        }
        let yes = self.log().contains("notebooks run sandboxed");
        if !yes && std::env::var_os("CI").is_some() && !self.log().contains(UNCONFINED_LINE) {
            self.fail(
                "CI needs the sandbox (bubblewrap, pasta, cgroups), and this gateway has none",
            );
        }
        yes
    }

    // -- the CLI ---------------------------------------------------------------------------

    /// Runs the `atelier` CLI against this gateway with `token`, and a client config file of
    /// its own in the data dir; `env` adds or overrides variables (an empty value removes one).
    pub async fn cli(&self, token: &str, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let config = self.data_dir.join("cli-config.toml");
        let base = self.base();
        let config = config.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = vec![
            ("ATELIER_URL", base.as_str()),
            ("ATELIER_TOKEN", token),
            ("ATELIER_CLI_CONFIG", config.as_str()),
        ];
        all.extend_from_slice(env);
        run_cli(args, &all).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log {} (last 80 lines) ----\n{}\n---- end of gateway log ----",
                self.log_path.display(),
                self.log_tail(80)
            );
        }
        if self.is_running() {
            // Drop may run inside the test's runtime: use a thread with its own.
            let (base, token) = (self.base(), self.admin_token.clone());
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(stop_all_notebooks(&base, &token));
                }
            })
            .join();
        }
        self.stop();
        kill_leftovers(&self.data_dir);
        remove_containers(&self.data_dir);
        unmount_under(&self.data_dir);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Stops every notebook of every user through the API (bounded).
async fn stop_all_notebooks(base: &str, admin_token: &str) {
    let http = http_client(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut asked: std::collections::HashMap<String, u32> = Default::default();
    loop {
        let Ok(resp) = http
            .get(format!("{base}/v1/notebooks?all=true&limit=500"))
            .bearer_auth(admin_token)
            .send()
            .await
        else {
            return;
        };
        let Ok(list) = resp.json::<Value>().await else {
            return;
        };
        let mut busy = false;
        for nb in list["items"].as_array().into_iter().flatten() {
            let id = nb["id"].as_str().unwrap_or_default().to_owned();
            match nb["status"].as_str().unwrap_or_default() {
                "RUNNING" | "ERROR" => {
                    let n = asked.entry(id.clone()).or_default();
                    if *n < 3 {
                        *n += 1;
                        busy = true;
                        let _ = http
                            .post(format!("{base}/v1/notebooks/{id}/stop"))
                            .bearer_auth(admin_token)
                            .send()
                            .await;
                    }
                }
                "CREATING" | "STARTING" | "STOPPING" | "DELETING" => busy = true,
                _ => {}
            }
        }
        if !busy || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Live processes (not this one) whose command line, environment or working directory
/// mention `needle`.
pub fn processes_mentioning(needle: &OsStr) -> Vec<i32> {
    let needle = needle.as_bytes();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || !process_alive(pid) {
            continue;
        }
        let p = entry.path();
        let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(p.join("environ")).unwrap_or_default();
        let cwd = std::fs::read_link(p.join("cwd"))
            .map(|c| c.into_os_string().into_encoded_bytes())
            .unwrap_or_default();
        if contains(&cmdline, needle) || contains(&environ, needle) || contains(&cwd, needle) {
            found.push(pid);
        }
    }
    found
}

/// The fallback: whatever still runs for this data dir (runtimes, bwrap, JupyterLab, kernels)
/// gets SIGTERM, then SIGKILL.
/// Removes the containers and networks a docker-backend gateway with this data dir left
/// (label `io.atelier.gateway`); nothing when no engine is configured.
fn remove_containers(data_dir: &Path) {
    let Some(host) = std::env::var_os("ATELIER_TEST_DOCKER_HOST").filter(|h| !h.is_empty()) else {
        return;
    };
    let filter = format!("label=io.atelier.gateway={}", data_dir.display());
    let Ok(out) = Command::new("podman")
        .arg("--url")
        .arg(&host)
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        eprintln!("test harness: removing {} leftover container(s)", ids.len());
        let _ = Command::new("podman")
            .arg("--url")
            .arg(&host)
            .args(["rm", "-f", "-t", "2"])
            .args(&ids)
            .output();
    }
    // Each notebook's network, which a stop or delete removes (not a kill -9).
    let Ok(out) = Command::new("podman")
        .arg("--url")
        .arg(&host)
        .args(["network", "ls", "-q", "--filter", &filter])
        .output()
    else {
        return;
    };
    let networks: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !networks.is_empty() {
        eprintln!(
            "test harness: removing {} leftover network(s)",
            networks.len()
        );
        let _ = Command::new("podman")
            .arg("--url")
            .arg(&host)
            .args(["network", "rm", "-f"])
            .args(&networks)
            .output();
    }
}

/// Unmounts what is mounted below `dir` (work disks of container notebooks), deepest first,
/// so removing the dir deletes no mounted filesystem's files and leaks no loop device.
fn unmount_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg(p).output();
    }
}

fn kill_leftovers(data_dir: &Path) {
    let needle = data_dir.as_os_str();
    let first = processes_mentioning(needle);
    if first.is_empty() {
        return;
    }
    eprintln!(
        "test harness: stopping {} leftover process(es) of {}: {first:?}",
        first.len(),
        data_dir.display()
    );
    for pid in &first {
        // SAFETY: plain syscall; the pid was just seen alive with our data dir.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !processes_mentioning(needle).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || Instant::now() >= deadline {
            if !left.is_empty() {
                eprintln!("test harness: processes survive SIGKILL: {left:?}");
            }
            return;
        }
        for pid in left {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    !matches!(
        stat[close + 1..].split_whitespace().next(),
        Some("Z") | Some("X") | None
    )
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line:?}"));
    kb * 1024
}

/// A fork bomb raging in a notebook whose pids cgroup file is `pids_current`: its processes
/// fill up to `limit` and no further, while the gateway's API and the `calm` notebook's
/// kernel still answer. Returns that kernel.
pub async fn fork_bomb_stays_within(
    gw: &Gateway,
    api: &Api,
    calm: &str,
    pids_current: &std::path::Path,
    limit: u64,
) -> Kernel {
    let read = |p: &std::path::Path| -> Option<u64> {
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    let peak = eventually(
        "the bomb to fill its process limit",
        Duration::from_secs(120),
        || {
            let n = read(pids_current);
            async move { n.filter(|n| *n >= limit.min(100)) }
        },
    )
    .await;
    assert!(peak <= limit, "{peak} processes, past the flavor's {limit}");
    gw.admin()
        .get("/v1/notebooks?all=true")
        .await
        .expect_status(200);
    let mut calm_kernel = Kernel::start(api, calm).await;
    assert_eq!(calm_kernel.run("print(6 * 7)").await.trim(), "42");
    let current = read(pids_current).expect("the pids cgroup file is readable");
    assert!(
        current <= limit,
        "{current} processes, past the flavor's {limit}"
    );
    calm_kernel
}

/// The texts of the events at `path` (`/v1/models/{m}/events`, `/v1/services/{s}/events`).
pub async fn event_texts_at(api: &Api, path: &str) -> Vec<String> {
    let r = api.get(path).await;
    r.expect_status(200)["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no items: {}", r.text))
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until the resource at `path` has `status` `want`; returns it.
pub async fn wait_for_status(api: &Api, path: &str, want: &str, timeout: Duration) -> Value {
    eventually(&format!("{path} {want}"), timeout, || async {
        let v = api.get(path).await;
        let v = v.expect_status(200).clone();
        (v["status"] == want).then_some(v)
    })
    .await
}

/// Polls `check` until it gives a value, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {} s waiting for {what}",
            timeout.as_secs()
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A client of the gateway with one identity (or none).
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// One response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// `METHOD /path?query`, for messages.
    pub what: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, or `Null` when it is not JSON.
    pub json: Value,
}

impl Api {
    pub fn new(base: impl Into<String>, token: Option<&str>) -> Api {
        Api {
            base: base.into(),
            token: token.map(str::to_owned),
            http: http_client(REQUEST_TIMEOUT),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request with this client's bearer token; `path` starts with `/`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        let req = builder.build().expect("building a request");
        let what = format!(
            "{} {}{}",
            req.method(),
            req.url().path(),
            req.url()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        );
        let resp = self
            .http
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            what,
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    /// A POST without a body (start, stop).
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// Asserts the status; returns the JSON body.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Value {
        assert_eq!(
            self.status,
            status,
            "{}: expected HTTP {status}, got {}: {}",
            self.what,
            self.status,
            shorten(&self.text)
        );
        &self.json
    }

    /// Asserts the status and the common error shape `{"error": {"code", "message"}}` with
    /// `code`; returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        self.expect_status(status);
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "{}: error content-type {ct:?}, body {:?}",
            self.what,
            shorten(&self.text)
        );
        let error = &self.json["error"];
        let (Some(got), Some(message)) = (error["code"].as_str(), error["message"].as_str()) else {
            panic!(
                "{}: HTTP {} without the error shape {{\"error\":{{\"code\",\"message\"}}}}: {:?}",
                self.what,
                self.status,
                shorten(&self.text)
            );
        };
        assert_eq!(got, code, "{}: error code; message: {message}", self.what);
        assert!(!message.is_empty(), "{}: empty error message", self.what);
        message.to_owned()
    }
}

/// `name=value` of a `Set-Cookie` value.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// At most 600 characters of `s`, for messages.
pub fn shorten(s: &str) -> String {
    if s.len() <= 600 {
        return s.to_owned();
    }
    let mut end = 600;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

// ---------------------------------------------------------------------------------------------
// Jupyter kernels over the proxy

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A kernel of a notebook, with its channels WebSocket open through the gateway.
pub struct Kernel {
    pub id: String,
    pub notebook: String,
    /// The headers of the 101 answer, as the client saw them.
    pub handshake_headers: Vec<(String, String)>,
    session: String,
    ws: Ws,
}

/// A WebSocket handshake that did not succeed.
#[derive(Debug)]
pub struct WsRefused {
    pub url: String,
    /// The HTTP status of the refusal, when there was an HTTP answer.
    pub status: Option<u16>,
    pub body: String,
}

impl std::fmt::Display for WsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "connecting to {}: HTTP {s}: {}", self.url, self.body),
            None => write!(f, "connecting to {}: {}", self.url, self.body),
        }
    }
}

/// What one `execute_request` produced.
#[derive(Debug, Default)]
pub struct Execution {
    /// `execute_reply` status: `ok`, `error`, `aborted`.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    /// The `data` of each `execute_result`.
    pub results: Vec<Value>,
    /// `ename: evalue` of an `error` message.
    pub error: Option<String>,
}

impl Kernel {
    /// Starts a `python3` kernel (`POST /nb/{id}/api/kernels`) and connects to it.
    pub async fn start(api: &Api, notebook: &str) -> Kernel {
        let r = api
            .post(
                &format!("/nb/{notebook}/api/kernels"),
                json!({"name": "python3"}),
            )
            .await;
        r.expect_status(201);
        let id = r.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no kernel id in {}", r.text))
            .to_owned();
        Self::connect(api, notebook, &id).await
    }

    /// Opens `ws://…/nb/{notebook}/api/kernels/{id}/channels` with the client's bearer token.
    pub async fn connect(api: &Api, notebook: &str, id: &str) -> Kernel {
        match Self::try_connect(api, notebook, id).await {
            Ok(k) => k,
            Err(refused) => panic!("{refused}"),
        }
    }

    /// Like [`Kernel::connect`], but a refused handshake is returned, not a panic.
    pub async fn try_connect(api: &Api, notebook: &str, id: &str) -> Result<Kernel, WsRefused> {
        let session = uuid::Uuid::new_v4().to_string();
        let ws_base = api.base().replacen("http://", "ws://", 1);
        let url = format!("{ws_base}/nb/{notebook}/api/kernels/{id}/channels?session_id={session}");
        let mut req = url
            .as_str()
            .into_client_request()
            .expect("a WebSocket request");
        if let Some(t) = api.token() {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("a header value"),
            );
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(WS_MAX))
            .max_frame_size(Some(WS_MAX));
        let connect = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
        let refused = |status: Option<u16>, body: String| WsRefused {
            url: url.clone(),
            status,
            body,
        };
        let (ws, resp) = match tokio::time::timeout(Duration::from_secs(60), connect).await {
            Err(_) => return Err(refused(None, "no answer within 60 s".into())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
                return Err(refused(
                    Some(r.status().as_u16()),
                    String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
                ));
            }
            Ok(Err(e)) => return Err(refused(None, e.to_string())),
            Ok(Ok(pair)) => pair,
        };
        let handshake_headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(Kernel {
            id: id.to_owned(),
            notebook: notebook.to_owned(),
            handshake_headers,
            session,
            ws,
        })
    }

    /// Sends one message on the shell channel and returns at once (no waiting for replies).
    pub async fn send(&mut self, msg_type: &str, content: Value) {
        let msg = json!({
            "header": {
                "msg_id": uuid::Uuid::new_v4().to_string(),
                "username": "e2e",
                "session": self.session,
                "msg_type": msg_type,
                "version": "5.3",
                "date": now_rfc3339(),
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": "shell",
            "buffers": [],
        });
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("sending {msg_type} to kernel {}: {e}", self.id));
    }

    /// Starts running `code` and returns without waiting for it (a tab that is then closed).
    pub async fn start_execute(&mut self, code: &str) {
        self.send(
            "execute_request",
            json!({"code": code, "silent": false, "store_history": true,
                   "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}),
        )
        .await;
    }

    /// Sends a WebSocket ping (what a browser does on an open socket).
    pub async fn ping(&mut self) {
        let _ = self.ws.send(Message::Ping(Vec::new().into())).await;
    }

    /// Sends an `execute_request` (messaging protocol 5.3) and collects what it produced
    /// until the kernel is idle again and the reply has come.
    pub async fn execute(&mut self, code: &str) -> Execution {
        let msg_id = uuid::Uuid::new_v4().to_string();
        let msg = json!({
            "header": {
                "msg_id": msg_id,
                "username": "e2e",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": now_rfc3339(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": false,
                "store_history": true,
                "user_expressions": {},
                "allow_stdin": false,
                "stop_on_error": true,
            },
            "channel": "shell",
            "buffers": [],
        });
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("sending execute_request to kernel {}: {e}", self.id));
        let deadline = Instant::now() + EXECUTE_TIMEOUT;
        let mut out = Execution::default();
        let (mut idle, mut replied) = (false, false);
        while !(idle && replied) {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => panic!(
                    "kernel {} did not finish within {} s; so far: {}",
                    self.id,
                    EXECUTE_TIMEOUT.as_secs(),
                    shorten(&format!("{out:?}"))
                ),
                Ok(None) => panic!("kernel {}: the WebSocket closed", self.id),
                Ok(Some(Err(e))) => panic!("kernel {}: WebSocket error: {e}", self.id),
                Ok(Some(Ok(f))) => f,
            };
            let text = match frame {
                Message::Text(t) => t,
                Message::Close(c) => panic!("kernel {}: the WebSocket closed: {c:?}", self.id),
                _ => continue,
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                panic!(
                    "kernel {}: unparsable message ({e}): {}",
                    self.id,
                    shorten(&text)
                )
            });
            if v["parent_header"]["msg_id"] != msg_id.as_str() {
                continue;
            }
            let content = &v["content"];
            match (
                v["channel"].as_str().unwrap_or_default(),
                v["header"]["msg_type"].as_str().unwrap_or_default(),
            ) {
                ("iopub", "stream") => {
                    let chunk = content["text"].as_str().unwrap_or_default();
                    if content["name"] == "stdout" {
                        out.stdout.push_str(chunk);
                    } else {
                        out.stderr.push_str(chunk);
                    }
                }
                ("iopub", "execute_result") => out.results.push(content["data"].clone()),
                ("iopub", "error") => {
                    out.error = Some(format!(
                        "{}: {}",
                        content["ename"].as_str().unwrap_or_default(),
                        content["evalue"].as_str().unwrap_or_default()
                    ));
                }
                ("iopub", "status") if content["execution_state"] == "idle" => idle = true,
                ("shell", "execute_reply") => {
                    replied = true;
                    out.status = content["status"].as_str().unwrap_or_default().to_owned();
                }
                _ => {}
            }
        }
        out
    }

    /// Executes `code`, asserts it succeeded, and returns its stdout.
    pub async fn run(&mut self, code: &str) -> String {
        let e = self.execute(code).await;
        assert!(
            e.status == "ok" && e.error.is_none(),
            "code failed in kernel {} of notebook {}: status {:?}, error {:?}, stderr {:?}\n--- code ---\n{}",
            self.id,
            self.notebook,
            e.status,
            e.error,
            shorten(&e.stderr),
            shorten(code)
        );
        e.stdout
    }
}

/// Now as RFC 3339 UTC with microseconds.
fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

// ---------------------------------------------------------------------------------------------
// The CLI

#[derive(Debug)]
pub struct CliOutput {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Fails the test, with both outputs, unless the command exited 0.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) {
        assert_eq!(
            self.code, 0,
            "{what}: exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
    }
}

/// Runs `atelier <args>` with no inherited `ATELIER_*` variables and then `env` (an empty
/// value leaves the variable unset), stdin closed, for at most 180 s.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut std_cmd = Command::new(atelier_bin());
    std_cmd.args(args);
    clear_atelier_env(&mut std_cmd);
    for (k, v) in env {
        if v.is_empty() {
            std_cmd.env_remove(k);
        } else {
            std_cmd.env(k, v);
        }
    }
    std_cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("atelier {args:?} did not finish within 180 s"))
        .unwrap_or_else(|e| panic!("running atelier {args:?}: {e}"));
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let s = now_rfc3339();
        assert_eq!(s.len(), "2026-11-27T18:43:23.123456Z".len(), "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }

    #[test]
    fn byte_search_and_shortening() {
        assert!(contains(b"abc/tmp/x/def", b"/tmp/x"));
        assert!(!contains(b"abc", b""));
        assert_eq!(shorten("short"), "short");
        assert!(shorten(&"é".repeat(700)).contains("bytes"));
    }
}
