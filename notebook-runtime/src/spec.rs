//! The launch spec the gateway hands to the runtime (`--spec <path>`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Grace period used when the spec does not set `grace_seconds`.
pub const DEFAULT_GRACE_SECONDS: u64 = 10;

/// Upper bound for `grace_seconds`, so deadlines stay sane.
pub const MAX_GRACE_SECONDS: u64 = 3600;

/// What to run and where to report about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Program and arguments; `argv[0]` is resolved against the spec's `PATH`.
    pub argv: Vec<String>,
    /// The child's whole environment (nothing is inherited from the runtime).
    pub env: BTreeMap<String, String>,
    /// Working directory of the child.
    pub cwd: PathBuf,
    /// The child's stdout and stderr are appended here (created with mode 0600).
    pub log_file: PathBuf,
    /// Status JSON, replaced atomically on every state change.
    pub status_file: PathBuf,
    /// How long to wait after SIGTERM before SIGKILL.
    #[serde(default = "default_grace_seconds")]
    pub grace_seconds: u64,
    /// Serve the notebook's SSH agent (sessions, sftp, port forwarding) on a unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
    /// Become this user before anything else (the runtime starts as root inside a sandbox
    /// and keeps nothing of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    /// Relay a unix socket to a TCP port on the instance's own loopback: how the gateway
    /// reaches a model engine that listens on `127.0.0.1:8080` in a network namespace (or a
    /// container without a network) of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardSpec>,
    /// Dial the gateway and serve its streams from here (a runtime on another machine,
    /// whose ports and files the gateway cannot reach): Jupyter (`jupyter` below), the SSH
    /// agent (`ssh.socket`; `atelier.file` rides its link) and the engine (`forward.port`).
    /// Holds the launch's secret: the spec file must be readable by the launch alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_back: Option<ConnectBackSpec>,
}

/// Where the runtime dials its gateway, and what it serves (see [`Spec::connect_back`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectBackSpec {
    /// The gateway's tunnel address, its certificate's fingerprint, the launch id and its
    /// secret, as the gateway's tunnel hub hands them out.
    pub gateway: atelier_tunnel::ConnectBack,
    /// Where Jupyter listens here; `None`: no Jupyter (an engine instance, a worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jupyter: Option<LocalSpec>,
    /// Where the notebook's SSH agent listens, when another runtime runs it (a sandboxed
    /// notebook's inner runtime); `None`: this runtime's own agent ([`Spec::ssh`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<PathBuf>,
    /// Where a model engine is reached, when another runtime relays it (a sandboxed
    /// instance's inner runtime, on a unix socket); `None`: this runtime's own relay's port
    /// ([`Spec::forward`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<PathBuf>,
}

/// A server on this machine: `{"unix": "/path/jupyter.sock"}` or `{"port": 8888}` (on
/// 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LocalSpec {
    Unix(PathBuf),
    Port(u16),
}

/// A unix socket relayed to a loopback port (see [`Spec::forward`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    /// Where the runtime listens (created with mode 0600; a stale one or a link planted in
    /// its place is replaced, never followed).
    pub socket: PathBuf,
    /// The port on `127.0.0.1` each connection is relayed to.
    pub port: u16,
}

/// The unprivileged user the notebook runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    /// Made (if missing) and given to the user before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
}

/// Where the SSH agent listens and whom it lets in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// Unix socket the agent listens on (created with mode 0600; a stale one is replaced).
    pub socket: PathBuf,
    /// The gateway's public key for this notebook (OpenSSH format); the only key accepted.
    pub authorized_key: String,
    /// Shell for sessions; default `$SHELL` of `env`, else `/bin/bash`, else `/bin/sh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Where `atelier.file` connects inside the notebook. The agent listens there only while
    /// a gateway connection asks it to (`streamlocal-forward@openssh.com` for exactly this
    /// path) and relays each connection back over that link as a `forwarded-streamlocal`
    /// channel, so the file API reaches the gateway wherever the notebook runs. No other
    /// path is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_socket: Option<PathBuf>,
}

fn default_grace_seconds() -> u64 {
    DEFAULT_GRACE_SECONDS
}

impl Spec {
    /// Parses and validates a spec from JSON text.
    pub fn from_json(text: &str) -> Result<Spec> {
        let spec: Spec = serde_json::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        let Some(program) = self.argv.first() else {
            bail!("argv must not be empty");
        };
        if program.is_empty() {
            bail!("argv[0] (the program) must not be empty");
        }
        for (i, arg) in self.argv.iter().enumerate() {
            if arg.contains('\0') {
                bail!("argv[{i}] contains a NUL byte");
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                bail!("env key {key:?} is not a valid variable name");
            }
            if value.contains('\0') {
                bail!("env value for {key:?} contains a NUL byte");
            }
        }
        check_path("cwd", &self.cwd, false)?;
        check_path("log_file", &self.log_file, true)?;
        check_path("status_file", &self.status_file, true)?;
        if let Some(ssh) = &self.ssh {
            check_path("ssh.socket", &ssh.socket, true)?;
            if russh::keys::PublicKey::from_openssh(ssh.authorized_key.trim()).is_err() {
                bail!("ssh.authorized_key is not an OpenSSH public key");
            }
            if ssh
                .shell
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.contains('\0'))
            {
                bail!("ssh.shell must be a program path");
            }
        }
        if let Some(user) = &self.user {
            if user.uid == 0 {
                bail!("user.uid must not be 0: the runtime switches to an unprivileged user");
            }
            if let Some(home) = &user.home {
                check_path("user.home", home, true)?;
            }
        }
        if let Some(f) = &self.forward {
            check_path("forward.socket", &f.socket, true)?;
            if f.port == 0 {
                bail!("forward.port must not be 0");
            }
        }
        if let Some(c) = &self.connect_back {
            c.gateway.validate()?;
            match &c.jupyter {
                Some(LocalSpec::Unix(path)) => check_path("connect_back.jupyter.unix", path, true)?,
                Some(LocalSpec::Port(0)) => bail!("connect_back.jupyter.port must not be 0"),
                Some(LocalSpec::Port(_)) | None => {}
            }
            if let Some(agent) = &c.agent {
                check_path("connect_back.agent", agent, true)?;
            }
            if let Some(engine) = &c.engine {
                check_path("connect_back.engine", engine, true)?;
            }
        }
        if self.grace_seconds > MAX_GRACE_SECONDS {
            bail!(
                "grace_seconds must be at most {MAX_GRACE_SECONDS} (got {})",
                self.grace_seconds
            );
        }
        Ok(())
    }
}

fn check_path(field: &str, path: &Path, needs_file_name: bool) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{field} must not be empty");
    }
    if path.to_string_lossy().contains('\0') {
        bail!("{field} contains a NUL byte");
    }
    if needs_file_name && path.file_name().is_none() {
        bail!("{field} must name a file (got {})", path.display());
    }
    Ok(())
}

/// Reads, parses and validates the spec file at `path`.
pub fn load(path: &Path) -> Result<Spec> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read spec file {}", path.display()))?;
    Spec::from_json(&text).with_context(|| format!("invalid spec file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "argv": ["/bin/true"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": "/tmp",
        "log_file": "/tmp/x.log",
        "status_file": "/tmp/status.json"
    }"#;

    fn err_of(text: &str) -> String {
        match Spec::from_json(text) {
            Ok(spec) => panic!("expected an error, got {spec:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn parses_minimal_spec_with_default_grace() {
        let spec = Spec::from_json(MINIMAL).expect("valid spec");
        assert_eq!(spec.argv, vec!["/bin/true".to_string()]);
        assert_eq!(
            spec.env.get("PATH").map(String::as_str),
            Some("/usr/bin:/bin")
        );
        assert_eq!(spec.grace_seconds, DEFAULT_GRACE_SECONDS);
    }

    #[test]
    fn parses_explicit_grace() {
        let text = MINIMAL.replace("\"argv\"", "\"grace_seconds\": 2, \"argv\"");
        assert_eq!(Spec::from_json(&text).expect("valid").grace_seconds, 2);
    }

    #[test]
    fn rejects_unknown_field() {
        let text = MINIMAL.replace("\"argv\"", "\"bogus\": 1, \"argv\"");
        let err = err_of(&text);
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn rejects_missing_field() {
        let text = r#"{"argv": ["x"], "env": {}, "cwd": "/", "log_file": "/l"}"#;
        let err = err_of(text);
        assert!(err.contains("status_file"), "{err}");
    }

    #[test]
    fn rejects_empty_argv() {
        let text = MINIMAL.replace(r#"["/bin/true"]"#, "[]");
        assert!(err_of(&text).contains("argv must not be empty"));
        let text = MINIMAL.replace(r#"["/bin/true"]"#, r#"[""]"#);
        assert!(err_of(&text).contains("argv[0]"));
    }

    #[test]
    fn rejects_bad_env_key() {
        let text = MINIMAL.replace(r#""PATH": "#, r#""A=B": "#);
        assert!(err_of(&text).contains("env key"));
    }

    #[test]
    fn rejects_huge_grace() {
        let text = MINIMAL.replace("\"argv\"", "\"grace_seconds\": 99999999, \"argv\"");
        assert!(err_of(&text).contains("grace_seconds"));
    }

    #[test]
    fn parses_ssh_section_and_rejects_bad_keys() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEzhOvjHPu9F5jVQCwQiwVaDwzAQfxqPA2WSXYshXmC4 gw";
        let text = MINIMAL.replace(
            "\"argv\"",
            &format!(
                r#""ssh": {{"socket": "/tmp/a/ssh.sock", "authorized_key": "{key}"}}, "argv""#
            ),
        );
        let spec = Spec::from_json(&text).expect("valid");
        let ssh = spec.ssh.expect("ssh section");
        assert_eq!(ssh.socket, PathBuf::from("/tmp/a/ssh.sock"));
        assert_eq!(ssh.shell, None);
        let bad = text.replace(key, "ssh-ed25519 nonsense");
        assert!(
            err_of(&bad).contains("ssh.authorized_key"),
            "{}",
            err_of(&bad)
        );
        let unknown = text.replace("\"socket\"", "\"bogus\": 1, \"socket\"");
        assert!(err_of(&unknown).contains("bogus"));
    }

    #[test]
    fn parses_the_user_and_refuses_root() {
        let text = MINIMAL.replace(
            "\"argv\"",
            r#""user": {"uid": 1000, "gid": 100, "home": "/home/ma-user"}, "argv""#,
        );
        let spec = Spec::from_json(&text).expect("valid");
        assert_eq!(
            spec.user,
            Some(UserSpec {
                uid: 1000,
                gid: 100,
                home: Some(PathBuf::from("/home/ma-user"))
            })
        );
        let root = text.replace("\"uid\": 1000", "\"uid\": 0");
        assert!(err_of(&root).contains("user.uid"), "{}", err_of(&root));
    }

    #[test]
    fn parses_the_forward_and_refuses_port_zero() {
        let text = MINIMAL.replace(
            "\"argv\"",
            r#""forward": {"socket": "/run/a/engine.sock", "port": 8080}, "argv""#,
        );
        let spec = Spec::from_json(&text).expect("valid");
        assert_eq!(
            spec.forward,
            Some(ForwardSpec {
                socket: PathBuf::from("/run/a/engine.sock"),
                port: 8080
            })
        );
        let zero = text.replace("8080", "0");
        assert!(err_of(&zero).contains("forward.port"), "{}", err_of(&zero));
    }

    #[test]
    fn parses_connect_back_and_names_a_wrong_field() {
        let fingerprint = format!("sha256:{}", "ab".repeat(32));
        let secret = "cd".repeat(32);
        let text = MINIMAL.replace(
            "\"argv\"",
            &format!(
                r#""connect_back": {{"gateway": {{"address": "10.0.0.1:7443", "fingerprint": "{fingerprint}", "launch": "nb-1", "secret": "{secret}"}}, "jupyter": {{"unix": "/run/a/jupyter.sock"}}}}, "argv""#
            ),
        );
        let spec = Spec::from_json(&text).expect("valid");
        let c = spec.connect_back.expect("connect_back");
        assert_eq!(c.gateway.launch, "nb-1");
        assert_eq!(
            c.jupyter,
            Some(LocalSpec::Unix(PathBuf::from("/run/a/jupyter.sock")))
        );
        let port = text.replace(r#"{"unix": "/run/a/jupyter.sock"}"#, r#"{"port": 8888}"#);
        assert_eq!(
            Spec::from_json(&port)
                .expect("valid")
                .connect_back
                .expect("cb")
                .jupyter,
            Some(LocalSpec::Port(8888))
        );
        let agent = text.replace(
            r#""jupyter": {"unix""#,
            r#""agent": "/run/a/ssh.sock", "jupyter": {"unix""#,
        );
        assert_eq!(
            Spec::from_json(&agent)
                .expect("valid")
                .connect_back
                .expect("cb")
                .agent,
            Some(PathBuf::from("/run/a/ssh.sock"))
        );
        let bad = agent.replace("/run/a/ssh.sock", "/");
        assert!(
            err_of(&bad).contains("connect_back.agent"),
            "{}",
            err_of(&bad)
        );
        for (from, to, field) in [
            ("10.0.0.1:7443", "10.0.0.1", "connect_back.address"),
            ("nb-1", "../nb", "connect_back.launch"),
            (secret.as_str(), "short", "connect_back.secret"),
            (fingerprint.as_str(), "md5:00", "connect_back.fingerprint"),
            (
                r#"{"port": 8888}"#,
                r#"{"port": 0}"#,
                "connect_back.jupyter.port",
            ),
            (r#"{"port": 8888}"#, r#"{"tcp": 1}"#, "unknown variant"),
        ] {
            let bad = port.replace(from, to);
            let err = err_of(&bad);
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn rejects_status_file_without_name() {
        let text = MINIMAL.replace("/tmp/status.json", "/");
        assert!(err_of(&text).contains("status_file"));
    }
}
