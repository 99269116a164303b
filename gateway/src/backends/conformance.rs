//! The `Backend` contract, checked the same way on every backend: the fake (always), the
//! process backend (with the JupyterLab virtualenv of the test setup), the docker backend
//! (with the test setup's Podman and image), the slurm backend (with the test cluster of
//! `scripts/slurm.sh`, its notebooks reached through the connect-back tunnel). One notebook goes through every operation the
//! lifecycle relies on:
//!
//! ```text
//! refuse an unreadable handle → prepare → launch (a handle of this backend) → wait_ready
//! → poll: Running → stream to Jupyter (GET <base_url>api through `upstream`)
//! → a restarted gateway's backend: poll Running, stream again (reattach)
//! → the agent link speaks SSH, takes the link key, serves atelier.file's socket and runs a
//!   command as the notebook's user
//!   (or Unsupported where there is no agent)
//! → the files connector names the work dir, a folder in it and /data/<name> as the
//!   notebook sees them and opens the work dir (or Unsupported) → stop (twice)
//! → poll: not Running
//! → delete (twice)
//! ```
//! Whatever fails, the notebook is stopped and deleted before the test ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Backend, BackendError, Handle, NotebookSpec, Observed, Progress, StopMode};
use crate::config::Settings;
use crate::store::events::EventKind;

/// A backend under test and how to build it again.
pub struct Subject {
    pub backend: Arc<dyn Backend>,
    /// The backend a restarted gateway builds (same settings, a new instance).
    pub restart: Box<dyn Fn() -> Arc<dyn Backend> + Send + Sync>,
    pub spec: NotebookSpec,
    /// Whether it runs a Jupyter server to stream to (the fake runs nothing).
    pub serves_jupyter: bool,
    /// Whether the notebook has an agent the gateway reaches for SSH sessions and commands
    /// (else `ssh_link` must answer `Unsupported`).
    pub agent: bool,
    /// Whether object storage can be mounted into its notebooks (`Backend::files`; else
    /// `Unsupported`).
    pub files: bool,
}

/// Where the backend's progress events go: nowhere (the lifecycle's tests check events).
struct Quiet;

#[async_trait]
impl Progress for Quiet {
    async fn event(&self, _kind: EventKind, _detail: Option<&str>) {}
}

/// `GET <base_url>api` with the notebook's token over the backend's endpoint: the status
/// line and the body.
async fn ask_jupyter(backend: &dyn Backend, handle: &Handle, base_url: &str) -> (String, String) {
    let up = backend
        .upstream(handle)
        .expect("upstream of a running notebook");
    let request = format!(
        "GET {base_url}api HTTP/1.1\r\nHost: notebook\r\nAuthorization: token {}\r\nConnection: close\r\n\r\n",
        up.token
    );
    let mut reply = Vec::new();
    let mut s = up.endpoint.dial().await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    s.read_to_end(&mut reply).await.expect("read");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

fn assert_jupyter_answers(status: &str, body: &str, who: &str) {
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "{who}: {status}\n{body}"
    );
    assert!(body.contains("\"version\""), "{who}: {body}");
}

/// Runs the contract on `s`; see the module.
pub async fn check(s: Subject) {
    let backend = s.backend.clone();
    let spec = s.spec.clone();
    let handle: Arc<Mutex<Option<Handle>>> = Arc::default();
    let outcome = std::panic::AssertUnwindSafe(cases(&s, handle.clone()))
        .catch_unwind()
        .await;
    // Whatever happened: nothing of the notebook stays.
    let left = handle.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(h) = left {
        let _ = backend
            .stop(
                &h,
                StopMode {
                    grace: Duration::from_secs(2),
                },
            )
            .await;
    }
    let _ = backend.delete(&spec.id).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn cases(s: &Subject, keep: Arc<Mutex<Option<Handle>>>) {
    let b = s.backend.as_ref();
    let name = b.name();
    let spec = &s.spec;
    let mode = StopMode {
        grace: Duration::from_secs(5),
    };

    // A handle that cannot be read is refused, with the reason, and is never "running".
    let damaged = Handle::Unreadable("damaged".into());
    assert_ne!(b.poll(&damaged).await, Observed::Running, "{name}");
    let e = b
        .upstream(&damaged)
        .expect_err("upstream of a damaged handle");
    assert!(e.to_string().contains("cannot be read"), "{name}: {e}");

    b.prepare(spec, &Quiet)
        .await
        .unwrap_or_else(|e| panic!("{name}: prepare: {e}"));
    let handle = b
        .launch(spec)
        .await
        .unwrap_or_else(|e| panic!("{name}: launch: {e}"));
    *keep.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.clone());
    assert_eq!(handle.backend(), name, "the handle is the backend's own");
    b.wait_ready(spec, &handle, Duration::from_secs(180), &Quiet)
        .await
        .unwrap_or_else(|e| panic!("{name}: wait_ready: {e}"));
    assert_eq!(b.poll(&handle).await, Observed::Running, "{name}");
    if s.serves_jupyter {
        let (status, body) = ask_jupyter(b, &handle, &spec.base_url).await;
        assert_jupyter_answers(&status, &body, name);
    } else {
        assert!(
            matches!(b.upstream(&handle), Err(BackendError::Unsupported(_))),
            "{name}: a backend that serves no Jupyter says so"
        );
    }

    // A restarted gateway finds the notebook running and reaches it.
    let again = (s.restart)();
    assert_eq!(
        again.poll(&handle).await,
        Observed::Running,
        "{name} after a restart"
    );
    if s.serves_jupyter {
        let (status, body) = ask_jupyter(again.as_ref(), &handle, &spec.base_url).await;
        assert_jupyter_answers(&status, &body, &format!("{name} after a restart"));
    }

    // The stream to the notebook's agent (SSH sessions, the file API): it speaks SSH, takes
    // the launch's link key, and serves `atelier.file` at the path the backend names.
    match again.ssh_link(&handle).await {
        Ok(link) if s.agent => {
            let mut stream = link
                .endpoint
                .dial()
                .await
                .unwrap_or_else(|e| panic!("{name}: connecting to the agent: {e}"));
            let mut banner = [0u8; 8];
            stream
                .read_exact(&mut banner)
                .await
                .unwrap_or_else(|e| panic!("{name}: the agent's banner: {e}"));
            assert_eq!(&banner, b"SSH-2.0-", "{name}: the agent speaks SSH");
            drop(stream);
            let socket = link
                .file_socket
                .clone()
                .unwrap_or_else(|| panic!("{name}: an agent without atelier.file's socket"));
            let client = super::agent::connect(link, AnyServer)
                .await
                .unwrap_or_else(|e| panic!("{name}: the agent link: {e}"));
            client
                .streamlocal_forward(socket.clone())
                .await
                .unwrap_or_else(|e| panic!("{name}: the agent refused to serve {socket}: {e}"));
            // A command runs inside the notebook, as its user, and says so.
            let mut channel = client
                .channel_open_session()
                .await
                .unwrap_or_else(|e| panic!("{name}: a session channel: {e}"));
            channel
                .exec(true, "id -u; echo conformance")
                .await
                .unwrap_or_else(|e| panic!("{name}: exec: {e}"));
            let (mut out, mut code) = (Vec::new(), None);
            while let Some(msg) = channel.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    _ => {}
                }
            }
            let out = String::from_utf8_lossy(&out);
            assert_eq!(code, Some(0), "{name}: exec: {out}");
            assert!(out.ends_with("conformance\n"), "{name}: exec: {out:?}");
            let uid: u32 = out.lines().next().unwrap_or_default().parse().unwrap_or(0);
            // SAFETY: no preconditions.
            let gateway_uid = unsafe { libc::geteuid() };
            assert!(
                uid == super::NOTEBOOK_UID || (uid == gateway_uid && gateway_uid != 0),
                "{name}: commands run as the notebook's user (or, unconfined, the gateway's unprivileged one), not {uid}"
            );
            let _ = client
                .disconnect(russh::Disconnect::ByApplication, "", "")
                .await;
        }
        Err(BackendError::Unsupported(_)) if !s.agent => {}
        Ok(_) => panic!("{name}: an agent link where none was expected"),
        Err(e) => panic!("{name}: ssh_link (agent: {}): {e}", s.agent),
    }

    // The notebook's files, named as the notebook sees them: the work dir and what is in it,
    // `/data/<name>`, the work dir opened for a landing.
    match again.files(&spec.id) {
        Ok(files) if s.files => {
            let work = files
                .place(super::WORK_DIR)
                .unwrap_or_else(|e| panic!("{name}: the work dir's place: {e}"));
            assert!(work.is_work_dir(), "{name}: {work:?}");
            let sub = files
                .place(&format!("{}/ds", super::WORK_DIR))
                .unwrap_or_else(|e| panic!("{name}: a folder in the work dir: {e}"));
            assert_eq!(sub.inside(), format!("{}/ds", work.inside()), "{name}");
            assert!(!sub.is_work_dir(), "{name}");
            let data = files
                .data_place("d")
                .unwrap_or_else(|e| panic!("{name}: a place under /data: {e}"));
            assert!(data.inside().ends_with("/data/d"), "{name}: {data:?}");
            let opened = files
                .work()
                .unwrap_or_else(|e| panic!("{name}: opening the work dir: {e}"));
            assert_eq!(opened.inside, work.inside(), "{name}");
            assert!(
                !files.holds_files(&sub).unwrap_or(true),
                "{name}: a folder not made yet holds nothing"
            );
        }
        Err(BackendError::Unsupported(_)) if !s.files => {}
        Ok(_) => panic!("{name}: a files connector where none was expected"),
        Err(e) => panic!("{name}: files (expected: {}): {e}", s.files),
    }

    again
        .stop(&handle, mode)
        .await
        .unwrap_or_else(|e| panic!("{name}: stop: {e}"));
    again
        .stop(&handle, mode)
        .await
        .unwrap_or_else(|e| panic!("{name}: a second stop: {e}"));
    assert_ne!(
        again.poll(&handle).await,
        Observed::Running,
        "{name} stopped"
    );
    keep.lock().unwrap_or_else(|e| e.into_inner()).take();
    again
        .delete(&spec.id)
        .await
        .unwrap_or_else(|e| panic!("{name}: delete: {e}"));
    again
        .delete(&spec.id)
        .await
        .unwrap_or_else(|e| panic!("{name}: a second delete: {e}"));
}

/// A notebook spec as the lifecycle builds it, on the settings' defaults.
pub fn spec(settings: &Settings, image_ref: &str) -> NotebookSpec {
    let id = uuid::Uuid::new_v4().to_string();
    NotebookSpec {
        base_url: format!("/nb/{id}/"),
        id,
        owner: "conformance".into(),
        flavor: settings.default_flavor().clone(),
        image: settings.default_image().id.clone(),
        image_ref: image_ref.into(),
        work_on_object_storage: false,
        extended_storage: Vec::new(),
        lease: None,
    }
}

/// The suite's side of an agent link: accepts the agent (as the gateway does).
struct AnyServer;

impl russh::client::Handler for AnyServer {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::backends::fake::FakeBackend;

    /// A test-setup variable; under `CI=true` a missing one fails the test instead of
    /// skipping the backend it is for.
    #[allow(clippy::disallowed_methods, reason = "the test setup's variables")]
    fn setup(var: &str) -> Option<String> {
        let v = std::env::var(var).ok().filter(|v| !v.is_empty());
        if v.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set: CI runs every backend's conformance (bash .ci/run prepares them)"
            );
            eprintln!("{var} is not set: this backend's conformance is skipped");
        }
        v
    }

    /// The cargo target dir's profile folder (`target/debug`), where the workspace's binaries are.
    fn profile_dir() -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary");
        // target/debug/deps/<test binary>
        exe.parent()
            .and_then(|deps| deps.parent())
            .expect("target/debug")
            .to_path_buf()
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir()
                .join(format!("atelier-conf-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The contract on a backend that runs Jupyter and its agent, built from `settings` by
    /// `make` (again for the restarted gateway).
    async fn on_real_backend(
        settings: Settings,
        image: &str,
        make: impl Fn(&Settings) -> Arc<dyn Backend> + Send + Sync + 'static,
    ) {
        let settings = Arc::new(settings);
        let build = {
            let settings = settings.clone();
            move || make(&settings)
        };
        check(Subject {
            backend: build(),
            restart: Box::new(build),
            spec: spec(&settings, image),
            serves_jupyter: true,
            agent: true,
            files: true,
        })
        .await;
    }

    #[tokio::test]
    async fn the_fake_backend_keeps_the_contract() {
        let settings = Settings::default();
        let fake = Arc::new(FakeBackend::default());
        let again = fake.clone();
        check(Subject {
            backend: fake,
            restart: Box::new(move || Arc::new(again.restarted())),
            spec: spec(&settings, "fake"),
            serves_jupyter: false,
            agent: false,
            files: false,
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_process_backend_keeps_the_contract() {
        let Some(venv) = setup("ATELIER_TEST_JUPYTER_VENV") else {
            return;
        };
        let dir = TempDir::new();
        let mut settings = Settings {
            data_dir: dir.0.clone(),
            ..Settings::default()
        };
        settings.backend.jupyter_venv = Some(venv.into());
        settings.backend.runtime_bin = Some(profile_dir().join("atelier-notebook-runtime"));
        let default = settings.default_image();
        let image = default
            .reference
            .clone()
            .unwrap_or_else(|| default.id.clone());
        on_real_backend(settings, &image, |s| {
            Arc::new(super::super::process::ProcessBackend::new(s).expect("process backend"))
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_docker_backend_keeps_the_contract() {
        let (Some(host), Some(image)) = (
            setup("ATELIER_TEST_DOCKER_HOST"),
            setup("ATELIER_TEST_IMAGE"),
        ) else {
            return;
        };
        let dir = TempDir::new();
        let mut settings = Settings {
            data_dir: dir.0.clone(),
            ..Settings::default()
        };
        settings.backend.docker_host = Some(host);
        // Where scripts/build-static-runtime.sh builds it, beside this profile's folder.
        let profile = profile_dir();
        let static_runtime = profile
            .parent()
            .expect("the target dir")
            .join("x86_64-unknown-linux-gnu")
            .join(profile.file_name().expect("the profile"))
            .join("atelier-notebook-runtime");
        settings.backend.container_runtime_bin = Some(static_runtime);
        on_real_backend(settings, &image, |s| {
            Arc::new(super::super::docker::DockerBackend::new(s).expect("docker backend"))
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_slurm_backend_keeps_the_contract() {
        let (Some(venv), Some(_), Some(conf)) = (
            setup("ATELIER_TEST_JUPYTER_VENV"),
            setup("ATELIER_TEST_SLURM"),
            setup("SLURM_CONF"),
        ) else {
            return;
        };
        let dir = TempDir::new();
        let mut settings = Settings {
            data_dir: dir.0.clone(),
            ..Settings::default()
        };
        settings.backend.jupyter_venv = Some(venv.into());
        settings.backend.runtime_bin = Some(profile_dir().join("atelier-notebook-runtime"));
        settings.slurm.conf = Some(conf.into());
        settings.slurm.partition = Some("debug".into());
        // A flavor a test node holds (2 CPUs, 4000 MB each).
        settings.flavors[0].vcpus = 1;
        settings.flavors[0].memory_gib = 2;
        let hub = atelier_tunnel::hub::TunnelHub::start(atelier_tunnel::hub::HubSettings::new(
            ([127, 0, 0, 1], 0).into(),
            dir.0.join("tunnel"),
        ))
        .await
        .expect("the tunnel hub");
        let default = settings.default_image();
        let image = default
            .reference
            .clone()
            .unwrap_or_else(|| default.id.clone());
        let shared = hub.clone();
        on_real_backend(settings, &image, move |s| {
            Arc::new(
                super::super::slurm::backend::SlurmBackend::new(s, Some(shared.clone()))
                    .expect("slurm backend"),
            )
        })
        .await;
        hub.shutdown().await;
    }
}
