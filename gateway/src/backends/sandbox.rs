//! The process backend's sandbox: bubblewrap around each notebook, its own network
//! namespace (with egress through pasta, a user-mode network), and cgroup limits.
//!
//! ```text
//! gateway (root) ──spawn, own session, enters the notebook's cgroup──► runtime (outside)
//!   └─► bwrap: new mount, pid, net, ipc, uts and cgroup namespaces; an empty root with
//!       /usr, /etc, /opt, /sys read-only; only setuid/setgid/chown kept
//!         └─► runtime (inside) ── becomes uid 1000 (ma-user), gid 100 ──► jupyter lab (unix socket),
//!             SSH agent (unix socket)
//! pasta ──joins the notebook's network namespace──► egress only: no host loopback, no
//!         ports in either direction
//! ```
//!
//! What the notebook sees (and nothing else of the host):
//!
//! | path | what | |
//! |---|---|---|
//! | `/home/ma-user/work` | `<nb>/work` | read-write, the notebook's own |
//! | `/home/ma-user` | tmpfs | HOME, gone at stop |
//! | `/data` | `<nb>/data` | object-storage mounts (propagated while running) |
//! | `/run/atelier` | `<nb>/run/agent` | the runtime's status, log and sockets, `atelier.file`'s among them (read-write) |
//! | `/run/atelier-config` | `<nb>/run/config` | Jupyter's config and token (read-only) |
//! | `/tmp`, `/var/tmp`, `/dev/shm` | tmpfs | |
//! | `/usr`, `/etc`, `/opt`, `/sys`, `/bin`… | the host's | read-only |
//! | the JupyterLab virtualenv, its base Python, the runtime binary | at their host paths | read-only |
//!
//! **Invariant:** the notebook's processes never run as root, never hold a capability,
//! never share the host's network namespace, and never see the gateway's data dir, the
//! host's home dirs or another notebook.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::cgroups::Cgroups;
use crate::config::{NetworkMode, SandboxMode, Settings};

/// The notebook's user and group, as in containers (`ma-user`, uid 1000, gid 100).
pub const UID: u32 = super::NOTEBOOK_UID;
pub const GID: u32 = super::NOTEBOOK_GID;

/// Where things are inside the sandbox.
pub const HOME: &str = "/home/ma-user";
pub const WORK: &str = "/home/ma-user/work";
pub const AGENT: &str = "/run/atelier";
pub const CONFIG: &str = "/run/atelier-config";
/// Jupyter's socket, in the agent dir.
pub const JUPYTER_SOCKET: &str = "jupyter.sock";

/// A working sandbox: the programs and the limits it is made of.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub bwrap: PathBuf,
    /// `None` with `ATELIER_NOTEBOOK_NETWORK=none`.
    pub pasta: Option<PathBuf>,
    pub cgroups: Cgroups,
    /// The gateway is root: the runtime inside switches to the notebook's user itself;
    /// otherwise bubblewrap maps the gateway's user to it in a user namespace.
    pub root: bool,
}

/// How process notebooks are confined, decided once at start.
#[derive(Debug, Clone)]
pub enum Confinement {
    Sandboxed(Sandbox),
    /// `ATELIER_SANDBOX=none`: as the gateway's user, on the host's network, no limits.
    Unconfined,
    /// No working sandbox and none asked to do without: notebooks are refused with this.
    Refused(String),
}

/// What unconfined notebooks are told, at start and on every view.
pub const UNCONFINED_WARNING: &str = "ATELIER_SANDBOX=none: notebooks run unconfined, as the gateway's user and on its network; their code can read the gateway's data and reach other notebooks";

impl Confinement {
    /// Decides from the settings; `ATELIER_SANDBOX=bwrap` without a working sandbox is an
    /// error (the gateway does not start), `auto` refuses notebooks and says why.
    pub fn detect(settings: &Settings) -> anyhow::Result<Confinement> {
        match settings.backend.sandbox {
            SandboxMode::None => {
                tracing::warn!("{UNCONFINED_WARNING}");
                Ok(Confinement::Unconfined)
            }
            mode => match Sandbox::detect(settings.backend.network) {
                Ok(s) => {
                    tracing::info!(
                        bwrap = %s.bwrap.display(),
                        network = ?settings.backend.network,
                        cgroups = ?s.cgroups,
                        "notebooks run sandboxed, as uid {UID}, in their own network namespace"
                    );
                    Ok(Confinement::Sandboxed(s))
                }
                Err(why) if mode == SandboxMode::Bwrap => {
                    anyhow::bail!("ATELIER_SANDBOX=bwrap: {why}")
                }
                Err(why) => {
                    let why = format!(
                        "notebooks are refused: no working sandbox here: {why}. Fix that and restart the gateway; only ATELIER_SANDBOX=none runs notebooks unconfined (their code then acts as the gateway's user)"
                    );
                    tracing::error!("{why}");
                    Ok(Confinement::Refused(why))
                }
            },
        }
    }
}

impl Sandbox {
    fn detect(network: NetworkMode) -> Result<Sandbox, String> {
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let bwrap = find_on_path("bwrap")
            .ok_or("bubblewrap is not installed (apt-get install bubblewrap)")?;
        check_bwrap(&bwrap, root)?;
        let pasta = match network {
            NetworkMode::None => None,
            NetworkMode::Egress => Some(find_on_path("pasta").ok_or(
                "ATELIER_NOTEBOOK_NETWORK=egress needs pasta (apt-get install passt), or set ATELIER_NOTEBOOK_NETWORK=none",
            )?),
        };
        let cgroups = Cgroups::detect().map_err(|e| {
            format!("no cgroups for the notebooks' CPU, memory and process limits ({e}); run the gateway as root, or give its user a delegated cgroup v2 subtree")
        })?;
        Ok(Sandbox {
            bwrap,
            pasta,
            cgroups,
            root,
        })
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

/// Runs a sandbox like a notebook's (empty root, new namespaces) around `true`.
fn check_bwrap(bwrap: &Path, root: bool) -> Result<(), String> {
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
    for d in ["/bin", "/lib", "/lib64"] {
        if let Ok(target) = std::fs::read_link(d) {
            cmd.arg("--symlink").arg(target).arg(d);
        } else if Path::new(d).is_dir() {
            cmd.args(["--ro-bind", d, d]);
        }
    }
    cmd.args([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-pid",
        "--unshare-ipc",
    ]);
    if !root {
        cmd.args(["--unshare-user", "--unshare-net"]);
    }
    cmd.arg("true");
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {}: {e}", bwrap.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "bubblewrap cannot create a sandbox here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The host paths a sandbox is built from.
pub struct Paths<'a> {
    pub venv: &'a Path,
    /// The base interpreter's installation the virtualenv points at, when it is not under a
    /// directory the sandbox shows anyway.
    pub python_home: Option<&'a Path>,
    pub runtime_bin: &'a Path,
    /// A notebook's work dir and `/data` (read-write) and Jupyter's config (read-only);
    /// none for a model engine.
    pub work: Option<&'a Path>,
    pub data: Option<&'a Path>,
    pub agent_dir: &'a Path,
    pub config_dir: Option<&'a Path>,
    /// A model engine's files, shown read-only at [`super::MODEL_DIR`].
    pub model: Option<&'a Path>,
    /// `passwd` and `group` files naming `ma-user`.
    pub passwd: &'a Path,
    pub group: &'a Path,
    /// Extra host directories to show read-only at their paths (the target of a
    /// `/etc/resolv.conf` link, say).
    pub extra_ro: &'a [PathBuf],
    /// Host directories bound at other paths inside: read-write, then read-only (a
    /// training worker's mount and its inputs, in that order, so an input's mount point
    /// may be under the mount).
    pub binds: &'a [(PathBuf, String)],
    pub ro_binds: &'a [(PathBuf, String)],
    /// Shown at `/etc/hosts` (a training job's worker names).
    pub hosts: Option<&'a Path>,
    pub hostname: &'a str,
}

/// What the host's root holds that the sandbox shows read-only: directories bound, links
/// (merged `/usr` systems) copied as links.
pub struct HostRoot {
    pub dirs: Vec<PathBuf>,
    pub links: Vec<(PathBuf, PathBuf)>,
}

impl HostRoot {
    pub fn read() -> HostRoot {
        let mut dirs = Vec::new();
        let mut links = Vec::new();
        for d in [
            "/usr", "/etc", "/opt", "/sys", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
        ] {
            let p = Path::new(d);
            match std::fs::read_link(p) {
                Ok(target) => links.push((target, p.to_path_buf())),
                Err(_) if p.is_dir() => dirs.push(p.to_path_buf()),
                Err(_) => {}
            }
        }
        HostRoot { dirs, links }
    }
}

/// Whether `p` is shown anyway through one of the host's directories.
fn under_host_root(p: &Path, host: &HostRoot) -> bool {
    host.dirs
        .iter()
        .any(|d| p.starts_with(d) && d != Path::new("/sys"))
}

/// bubblewrap's arguments for one notebook, up to and including `--`.
pub fn argv(s: &Sandbox, host: &HostRoot, p: &Paths) -> Vec<String> {
    let str = |p: &Path| p.to_string_lossy().into_owned();
    let mut a: Vec<String> = vec![str(&s.bwrap)];
    let push = |a: &mut Vec<String>, args: &[&str]| a.extend(args.iter().map(|x| x.to_string()));
    // As root the gateway gives the runtime its network namespace before bubblewrap runs
    // ([`enter_new_network`]); otherwise bubblewrap makes one in its user namespace.
    if !s.root {
        push(&mut a, &["--unshare-net"]);
    }
    push(
        &mut a,
        &[
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            p.hostname,
            "--die-with-parent",
            "--new-session",
        ],
    );
    if s.root {
        // Only what the runtime inside needs to become ma-user; the switch drops them.
        push(
            &mut a,
            &[
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_CHOWN",
            ],
        );
    } else {
        let (uid, gid) = (UID.to_string(), GID.to_string());
        push(&mut a, &["--unshare-user", "--uid", &uid, "--gid", &gid]);
    }
    for d in &host.dirs {
        let d = str(d);
        push(&mut a, &["--ro-bind", &d, &d]);
    }
    for (target, link) in &host.links {
        push(&mut a, &["--symlink", &str(target), &str(link)]);
    }
    push(&mut a, &["--ro-bind", &str(p.passwd), "/etc/passwd"]);
    push(&mut a, &["--ro-bind", &str(p.group), "/etc/group"]);
    push(&mut a, &["--proc", "/proc", "--dev", "/dev"]);
    push(&mut a, &["--perms", "0755", "--dir", "/var"]);
    push(
        &mut a,
        &[
            "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/dev/shm",
        ],
    );
    // HOME is made below (0755) and given to ma-user by the runtime inside.
    push(&mut a, &["--tmpfs", "/home"]);
    // Shown read-only at their host paths where the host's dirs do not show them already.
    let mut at_host_paths: Vec<&Path> = p.extra_ro.iter().map(PathBuf::as_path).collect();
    at_host_paths.extend(
        [p.venv, p.runtime_bin]
            .into_iter()
            .chain(p.python_home)
            .filter(|b| !under_host_root(b, host)),
    );
    // bubblewrap makes the missing parents of a mount point mode 0700: they are made here
    // first, 0755, so ma-user can reach what is bound below them.
    let mut made: Vec<PathBuf> = Vec::new();
    let mut dests = vec![Path::new(AGENT)];
    if p.config_dir.is_some() {
        dests.push(Path::new(CONFIG));
    }
    if p.work.is_some() {
        dests.push(Path::new(WORK));
    }
    if p.model.is_some() {
        dests.push(Path::new(super::MODEL_DIR));
    }
    // Read-only binds under a read-write one are mount points in it, not made here.
    let bind_dests: Vec<&Path> = p.binds.iter().map(|(_, d)| Path::new(d.as_str())).collect();
    dests.extend(bind_dests.iter().copied());
    dests.extend(
        p.ro_binds
            .iter()
            .map(|(_, d)| Path::new(d.as_str()))
            .filter(|d| !bind_dests.iter().any(|b| d.starts_with(b))),
    );
    for dest in dests.iter().copied().chain(at_host_paths.iter().copied()) {
        let mut chain: Vec<&Path> = dest.ancestors().skip(1).collect();
        chain.reverse();
        for d in chain {
            if d == Path::new("/")
                || host.dirs.iter().any(|h| d.starts_with(h))
                || made.iter().any(|m| m == d)
            {
                continue;
            }
            push(&mut a, &["--perms", "0755", "--dir", &str(d)]);
            made.push(d.to_path_buf());
        }
    }
    for b in &at_host_paths {
        let b = str(b);
        push(&mut a, &["--ro-bind", &b, &b]);
    }
    if let Some(work) = p.work {
        push(&mut a, &["--bind", &str(work), WORK]);
    }
    if let Some(data) = p.data {
        push(&mut a, &["--bind", &str(data), "/data"]);
    }
    push(&mut a, &["--bind", &str(p.agent_dir), AGENT]);
    if let Some(config) = p.config_dir {
        push(&mut a, &["--ro-bind", &str(config), CONFIG]);
    }
    if let Some(model) = p.model {
        push(&mut a, &["--ro-bind", &str(model), super::MODEL_DIR]);
    }
    for (src, dest) in p.binds {
        push(&mut a, &["--bind", &str(src), dest]);
    }
    for (src, dest) in p.ro_binds {
        push(&mut a, &["--ro-bind", &str(src), dest]);
    }
    if let Some(hosts) = p.hosts {
        push(&mut a, &["--ro-bind", &str(hosts), "/etc/hosts"]);
    }
    let cwd = match (p.work, p.model) {
        (Some(_), _) => WORK,
        (None, Some(_)) => super::MODEL_DIR,
        (None, None) if !p.binds.is_empty() => HOME,
        (None, None) => "/",
    };
    push(&mut a, &["--chdir", cwd, "--"]);
    a
}

/// The base Python installation a virtualenv points at (`home` in `pyvenv.cfg` is its
/// `bin`), to show in the sandbox when it lives somewhere the sandbox hides.
pub fn python_home(venv: &Path) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    let bin = cfg.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "home").then(|| PathBuf::from(v.trim()))
    })?;
    let home = bin.parent()?.to_path_buf();
    home.is_dir().then_some(home)
}

/// `/etc/resolv.conf` may be a link into `/run` (systemd-resolved); the sandbox shows
/// `/etc` but not `/run`, so the link's directory is shown too.
pub fn resolv_conf_dir() -> Option<PathBuf> {
    let target = std::fs::canonicalize("/etc/resolv.conf").ok()?;
    if target.starts_with("/etc") {
        return None;
    }
    target.parent().map(Path::to_path_buf)
}

/// `passwd` and `group` for inside: root, ma-user, nobody (the host's accounts stay hidden).
pub fn passwd_files() -> (String, String) {
    (
        format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nma-user:x:{UID}:{GID}:ma-user:{HOME}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        format!("root:x:0:\nusers:x:{GID}:ma-user\nnogroup:x:65534:\n"),
    )
}

/// In the child between `fork` and `exec` (async-signal-safe: syscalls on stack data):
/// moves the calling process into a new network namespace and brings its loopback up (the
/// kernel gives it 127.0.0.1 and ::1), for the notebook's runtime and everything under it.
/// Done here rather than by bubblewrap (`--unshare-net`), whose netlink setup of the
/// loopback fails now and then when many namespaces come and go ("loopback: Failed
/// RTM_NEWADDR"); needs root (CAP_SYS_ADMIN).
pub fn enter_new_network() -> std::io::Result<()> {
    // SAFETY: unshare, socket, ioctl and close on a zeroed struct; no allocation.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The network namespace of a running sandbox (its runtime's, made by
/// [`enter_new_network`]), opened now so that a later worker of the same training job can
/// join it between fork and exec ([`join_network`]).
pub fn open_network_of(runtime_pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    let own = std::fs::read_link("/proc/self/ns/net")?;
    let path = format!("/proc/{runtime_pid}/ns/net");
    if std::fs::read_link(&path)? == own {
        return Err(std::io::Error::other(
            "the first worker has no network namespace of its own",
        ));
    }
    Ok(std::fs::File::open(path)?.into())
}

/// In the child between `fork` and `exec`: moves it into the namespace `fd` holds.
pub fn join_network(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: setns on a descriptor opened before the fork.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A process in the notebook's network namespace: `runtime_pid` itself when the gateway
/// made the namespace ([`enter_new_network`]), else a descendant of it (bubblewrap made
/// it) whose `/proc/<pid>/ns/net` differs from the gateway's.
fn sandbox_member(runtime_pid: i32) -> Option<i32> {
    let own = std::fs::read_link("/proc/self/ns/net").ok()?;
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<i32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
    }
    if std::fs::read_link(format!("/proc/{runtime_pid}/ns/net")).is_ok_and(|ns| ns != own) {
        return Some(runtime_pid);
    }
    let descends = |mut p: i32| {
        for _ in 0..8 {
            match parent.get(&p) {
                Some(&pp) if pp == runtime_pid => return true,
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .copied()
        .filter(|&p| descends(p))
        .find(|p| std::fs::read_link(format!("/proc/{p}/ns/net")).is_ok_and(|ns| ns != own))
}

/// Gives the notebook's namespace egress through pasta, once: no port is forwarded either
/// way, and the gateway address is not mapped to the host (`--no-map-gw`), so the host's
/// loopback (the gateway, other notebooks' nothing, any local service) is out of reach.
/// pasta runs in the notebook's cgroup (its traffic counts there; it dies with the
/// notebook, whose stop kills everything in that cgroup: pasta holds the namespace itself,
/// so it would not notice the notebook's end on its own).
pub async fn attach_network(
    s: &Sandbox,
    notebook_id: &str,
    runtime_pid: i32,
    run_dir: &Path,
    entry: super::cgroups::Entry,
    deadline: Instant,
) -> Result<(), String> {
    let Some(pasta) = &s.pasta else {
        return Ok(());
    };
    let pid_file = run_dir.join("pasta.pid");
    // Already given (a gateway restarted while the notebook started): its pasta, which
    // writes its pid after it forked to the background, is in the notebook's cgroup.
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        && s.cgroups.pids(notebook_id).contains(&pid)
    {
        return Ok(());
    }
    let member = loop {
        if let Some(p) = sandbox_member(runtime_pid) {
            break p;
        }
        if Instant::now() >= deadline {
            return Err("the sandbox's network namespace did not appear".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // pasta opens the namespace by path after setting itself up: a bind of the
    // namespace on a file only the gateway can reach, removed once pasta holds it.
    let ns_file = run_dir.join("netns");
    std::fs::write(&ns_file, b"").map_err(|e| format!("{}: {e}", ns_file.display()))?;
    rustix::mount::mount_bind(format!("/proc/{member}/ns/net"), &ns_file)
        .map_err(|e| format!("binding the notebook's network namespace: {e}"))?;
    let mut cmd = std::process::Command::new(pasta);
    cmd.args([
        "--quiet",
        "--config-net",
        // The file it was given goes right after it starts; it ends with the notebook's
        // cgroup instead.
        "--no-netns-quit",
        "--no-map-gw",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
    ]);
    if s.root {
        // Joining a namespace owned by the host's user namespace needs root; pasta then
        // confines itself (its own empty mount namespace, seccomp).
        cmd.args(["--runas", "0:0"]);
    }
    cmd.arg("--pid")
        .arg(&pid_file)
        .arg("--netns")
        .arg(&ns_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::procs::in_own_session(&mut cmd);
    // SAFETY: Entry::enter only writes to descriptors opened before the fork.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || entry.enter());
    }
    let out = tokio::process::Command::from(cmd).output().await;
    let _ = rustix::mount::unmount(&ns_file, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(&ns_file);
    let out = out.map_err(|e| format!("starting {}: {e}", pasta.display()))?;
    if !out.status.success() {
        return Err(format!(
            "pasta failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(root: bool) -> Sandbox {
        Sandbox {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            pasta: None,
            cgroups: Cgroups::V2(PathBuf::from("/sys/fs/cgroup/x")),
            root,
        }
    }

    fn args(root: bool, python_home: Option<&Path>) -> String {
        let p = PathBuf::from;
        let host = HostRoot {
            dirs: vec![p("/usr"), p("/etc"), p("/sys")],
            links: vec![(p("usr/bin"), p("/bin"))],
        };
        argv(
            &sandbox(root),
            &host,
            &Paths {
                venv: &p("/root/.local/share/atelier/jupyter-venv"),
                python_home,
                runtime_bin: &p("/opt/atelier/atelier-notebook-runtime"),
                work: Some(&p("/d/nb/1/work")),
                data: Some(&p("/d/nb/1/data")),
                agent_dir: &p("/d/nb/1/run/agent"),
                config_dir: Some(&p("/d/nb/1/run/config")),
                model: None,
                passwd: &p("/d/nb/1/run/passwd"),
                group: &p("/d/nb/1/run/group"),
                extra_ro: &[],
                binds: &[],
                ro_binds: &[],
                hosts: None,
                hostname: "nb-1",
            },
        )
        .join(" ")
    }

    #[test]
    fn the_sandbox_shows_only_what_the_notebook_needs() {
        let a = args(true, Some(Path::new("/root/.pyenv/versions/3.11.7")));
        for needed in [
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--ro-bind /usr /usr",
            "--symlink usr/bin /bin",
            "--ro-bind /d/nb/1/run/passwd /etc/passwd",
            "--tmpfs /home",
            "--tmpfs /tmp",
            "--ro-bind /root/.local/share/atelier/jupyter-venv /root/.local/share/atelier/jupyter-venv",
            "--ro-bind /root/.pyenv/versions/3.11.7 /root/.pyenv/versions/3.11.7",
            "--perms 0755 --dir /run",
            "--perms 0755 --dir /home/ma-user",
            "--perms 0755 --dir /root --perms 0755 --dir /root/.local",
            "--bind /d/nb/1/work /home/ma-user/work",
            "--bind /d/nb/1/data /data",
            "--bind /d/nb/1/run/agent /run/atelier",
            "--ro-bind /d/nb/1/run/config /run/atelier-config",
            "--chdir /home/ma-user/work --",
        ] {
            assert!(a.contains(needed), "{needed} missing from {a}");
        }
        // Parents are made before what is mounted below them, and after the tmpfs of /home.
        let at = |x: &str| a.find(x).unwrap_or_else(|| panic!("{x} missing"));
        assert!(at("--tmpfs /home") < at("--dir /home/ma-user"));
        assert!(at("--dir /home/ma-user") < at("--bind /d/nb/1/work"));
        assert!(at("--dir /root/.local") < at("--ro-bind /root/.local/share"));
        // No view of the host's root, its homes, or the gateway's data dir as a whole.
        for absent in [
            "--ro-bind / /",
            "--bind / ",
            "/d/nb/1 ",
            "--ro-bind /root ",
            "--ro-bind /home",
        ] {
            assert!(!a.contains(absent), "{absent} in {a}");
        }
    }

    #[test]
    fn an_engine_instance_sees_its_model_read_only_and_no_work_dir() {
        let p = PathBuf::from;
        let host = HostRoot {
            dirs: vec![p("/usr"), p("/etc")],
            links: vec![],
        };
        let a = argv(
            &sandbox(true),
            &host,
            &Paths {
                venv: &p("/v"),
                python_home: None,
                runtime_bin: &p("/opt/atelier/atelier-notebook-runtime"),
                work: None,
                data: None,
                agent_dir: &p("/d/engines/1/run/agent"),
                config_dir: None,
                model: Some(&p("/d/models/trees/v1/model")),
                passwd: &p("/d/engines/1/run/passwd"),
                group: &p("/d/engines/1/run/group"),
                extra_ro: &[],
                binds: &[],
                ro_binds: &[],
                hosts: None,
                hostname: "engine-1",
            },
        )
        .join(" ");
        for needed in [
            "--perms 0755 --dir /home/mind",
            "--ro-bind /d/models/trees/v1/model /home/mind/model",
            "--bind /d/engines/1/run/agent /run/atelier",
            "--chdir /home/mind/model --",
        ] {
            assert!(a.contains(needed), "{needed} missing from {a}");
        }
        for absent in [
            "/home/ma-user/work",
            "/data",
            "/run/atelier-config",
            "--bind /d/models",
        ] {
            assert!(!a.contains(absent), "{absent} in {a}");
        }
    }

    #[test]
    fn as_root_only_the_capabilities_to_become_ma_user_are_kept() {
        let a = args(true, None);
        assert!(
            a.contains(
                "--cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_CHOWN"
            ),
            "{a}"
        );
        assert!(!a.contains("--unshare-user"), "{a}");
        // The gateway made its network namespace already.
        assert!(!a.contains("--unshare-net"), "{a}");
        let a = args(false, None);
        assert!(a.contains("--unshare-user --uid 1000 --gid 100"), "{a}");
        assert!(a.contains("--unshare-net"), "{a}");
        assert!(!a.contains("--cap-add"), "{a}");
    }

    #[test]
    fn python_installs_under_the_shown_host_dirs_are_not_bound_again() {
        let a = args(true, Some(Path::new("/usr/local/python3.12")));
        assert!(!a.contains("--ro-bind /usr/local/python3.12"), "{a}");
    }

    #[test]
    fn the_base_python_of_a_virtualenv_is_found() {
        let d = std::env::temp_dir().join(format!("atelier-venv-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(d.join("base/bin")).unwrap();
        std::fs::create_dir_all(d.join("venv")).unwrap();
        std::fs::write(
            d.join("venv/pyvenv.cfg"),
            format!(
                "home = {}\nversion = 3.11.7\n",
                d.join("base/bin").display()
            ),
        )
        .unwrap();
        assert_eq!(python_home(&d.join("venv")), Some(d.join("base")));
        assert_eq!(python_home(&d.join("nothing")), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
