//! Object-storage folders as FUSE file systems on this host (the host connector of
//! `backends::files` uses it), served by `rclone mount` (Debian's
//! `rclone`): one process per mount, in its own session so it outlives a gateway restart,
//! configured only through its environment (no config file holds the credentials), found
//! again by pid and start time.
//!
//! ```text
//! rclone mount atl:BUCKET/PREFIX STATE/mnt    RCLONE_CONFIG_ATL_* = the connection
//!   --vfs-cache-mode writes                   writes land in STATE/cache, then upload
//!   --dir-cache-time 5s                       objects written elsewhere show within seconds
//!   --uid/--gid --allow-other                 the notebook's user owns the files
//!   --read-only                               EROFS for every write
//! then  mount --bind STATE/mnt /proc/self/fd/N    N: the notebook's folder, opened through
//!                                                 `confined` (no link followed)
//! ```
//!
//! **Invariant:** no path the notebook can write is ever handed to rclone, fusermount or
//! `mount(2)` as a string. rclone mounts at `STATE/mnt` (`<nb>/mounts/<id>/mnt`, the
//! gateway's own), and the gateway binds that onto the folder it opened through
//! [`crate::confined`]; the bind lands on exactly that directory, wherever the notebook
//! moved it since, and propagates like any mount made there (the shared `<nb>/data`).
//! Unmounting finds the binds by the FUSE file system's device in the mount table, wherever
//! the notebook moved them, and unmounts each through `confined` with `UMOUNT_NOFOLLOW`.
//! This needs the gateway to run as root (`CAP_SYS_ADMIN` for the bind).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{MountPlace, workdisk};
use crate::confined::Dir;
use crate::object_storage::ObjectUri;
use crate::object_storage::s3::Target;
use rustix::process::Signal;

/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// The FUSE type rclone mounts show in the mount table.
const FSTYPE: &str = "fuse.rclone";

/// One mount to make.
pub struct MountSpec<'a> {
    pub target: &'a Target,
    pub uri: &'a ObjectUri,
    /// The folder the notebook gets it in, opened through `confined`.
    pub at: &'a Dir,
    pub read_only: bool,
    /// Who owns the files as the notebook sees them; other users may then use the mount
    /// (`--allow-other`). `None`: the gateway's own user only.
    pub owner: Option<(u32, u32)>,
    /// rclone's log, write cache and mount point (`mnt`): the gateway's alone.
    pub state_dir: &'a Path,
}

/// Where rclone itself mounts, in the mount's state dir.
fn private_point(state_dir: &Path) -> PathBuf {
    state_dir.join("mnt")
}

/// The process serving a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub pid: i32,
    pub start_ticks: u64,
}

/// `rclone` from the settings or `PATH`.
pub fn find_rclone(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return p.is_file().then(|| p.to_path_buf());
    }
    which::which("rclone").ok()
}

/// Whether `/dev/fuse` can be opened (FUSE mounts are possible here).
pub fn fuse_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
}

/// Mounts `spec.uri` on the folder `spec.at` and returns once it is there.
pub(super) async fn mount(rclone: &Path, spec: &MountSpec<'_>) -> anyhow::Result<Serving> {
    if spec.at.is_mount_root()? {
        bail!("{} is already a mount point", spec.at.path().display());
    }
    let private = private_point(spec.state_dir);
    std::fs::create_dir_all(spec.state_dir.join("cache"))
        .with_context(|| format!("creating {}", spec.state_dir.display()))?;
    std::fs::create_dir_all(&private).with_context(|| format!("creating {}", private.display()))?;
    if workdisk::fstype_at(&private).is_some() {
        bail!("{} is already a mount point", private.display());
    }
    let log_path = spec.state_dir.join("rclone.log");
    // A fresh log per mount: its tail explains a failure.
    let log = std::fs::File::create(&log_path).context("creating rclone.log")?;
    // A trailing '/' says the root is a folder: rclone then does not HEAD its name first.
    let remote = format!("atl:{}/{}", spec.uri.bucket, spec.uri.dir_prefix());
    let mut cmd = std::process::Command::new(rclone);
    cmd.arg("mount")
        .arg(&remote)
        .arg(&private)
        .args(["--vfs-cache-mode", "writes", "--cache-dir"])
        .arg(spec.state_dir.join("cache"))
        .args(["--dir-cache-time", "5s", "--vfs-write-back", "1s"])
        .args(["--devname", &format!("atelier:{remote}")])
        .args(["--s3-no-check-bucket", "--log-level", "NOTICE"]);
    if spec.read_only {
        cmd.arg("--read-only");
    }
    if let Some((uid, gid)) = spec.owner {
        cmd.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()])
            .arg("--allow-other");
    }
    let t = spec.target;
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("RCLONE_CONFIG", "/nonexistent")
        .env("RCLONE_CONFIG_ATL_TYPE", "s3")
        .env("RCLONE_CONFIG_ATL_PROVIDER", "Other")
        .env("RCLONE_CONFIG_ATL_ENV_AUTH", "false")
        .env("RCLONE_CONFIG_ATL_ENDPOINT", &t.endpoint)
        .env("RCLONE_CONFIG_ATL_REGION", &t.region)
        .env("RCLONE_CONFIG_ATL_ACCESS_KEY_ID", &t.access_key_id)
        .env(
            "RCLONE_CONFIG_ATL_SECRET_ACCESS_KEY",
            t.secret_access_key.as_str(),
        )
        .env(
            "RCLONE_CONFIG_ATL_FORCE_PATH_STYLE",
            if t.path_style { "true" } else { "false" },
        );
    // The CA bundle of an HTTPS endpoint signed by a private CA.
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        // Passed through as the gateway got it, not a setting of its own.
        #[allow(clippy::disallowed_methods)]
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("rclone.log")?)
        .stderr(log);
    crate::procs::in_own_session(&mut cmd);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {}", rclone.display()))?;
    let pid = child.id().context("rclone exited at once")? as i32;
    let start_ticks = crate::procs::start_ticks(pid).context("reading rclone's start time")?;
    let serving = Serving { pid, start_ticks };
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if is_mounted(&private) {
            // Reap it when it exits while the gateway runs; after a restart init does.
            // Untracked: rclone outlives the gateway, so shutdown waits for nothing here.
            #[allow(clippy::disallowed_methods)]
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            // Onto the folder that was opened, not onto whatever its name holds now.
            if let Err(e) = spec.at.bind_here(&private) {
                let _ = end(&private, Some(serving)).await;
                bail!("{e}");
            }
            return Ok(serving);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "rclone exited ({status}) before the mount appeared: {}",
                log_tail(&log_path)
            );
        }
        if Instant::now() >= deadline {
            let _ = end(&private, Some(serving)).await;
            bail!(
                "the mount did not appear within {} s: {}",
                MOUNT_TIMEOUT.as_secs(),
                log_tail(&log_path)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether an rclone mount is at `path` (a path the gateway controls).
fn is_mounted(path: &Path) -> bool {
    workdisk::fstype_at(path).is_some_and(|t| t == FSTYPE)
}

/// The mount table's device of the rclone mount at `path`, if one is there.
fn rclone_dev(table: &[workdisk::MountEntry], path: &Path) -> Option<String> {
    let point = workdisk::table_path(path)?;
    table
        .iter()
        .rev()
        .find(|m| m.point == point && m.fstype == FSTYPE)
        .map(|m| m.dev.clone())
}

/// Whether the mount of `place` (state in `state_dir`) is up: served by `serving`, and
/// bound at the place.
pub(super) fn is_serving(place: &MountPlace, state_dir: &Path, serving: Serving) -> bool {
    if !crate::procs::alive(serving.pid, serving.start_ticks) {
        return false;
    }
    let table = workdisk::mount_table();
    let Some(dev) = rclone_dev(&table, &private_point(state_dir)) else {
        return false;
    };
    let Some(root) = workdisk::table_path(&place.root) else {
        return false;
    };
    let at = root.join(&place.rel);
    table.iter().any(|m| m.point == at && m.dev == dev)
}

/// Unmounts the mount of `place` (state in `state_dir`) and ends its rclone process: first
/// every bind of it below `place.root`, wherever the notebook moved it, then rclone's own
/// mount. Never touches the objects. Idempotent.
pub(super) async fn unmount(
    place: &MountPlace,
    state_dir: &Path,
    serving: Option<Serving>,
) -> anyhow::Result<()> {
    let private = private_point(state_dir);
    let table = workdisk::mount_table();
    // No root (never made): nothing can be bound below it.
    let Some(root) = workdisk::table_path(&place.root) else {
        return end(&private, serving).await;
    };
    let binds: Vec<PathBuf> = match rclone_dev(&table, &private) {
        // Copies that propagation made elsewhere go with the bind they were copied from.
        Some(dev) => table
            .iter()
            .filter(|m| m.dev == dev && m.point.starts_with(&root))
            .map(|m| m.point.clone())
            .collect(),
        // Made by an older gateway, rclone straight at the place (or nothing at all).
        None => {
            let at = root.join(&place.rel);
            table
                .iter()
                .filter(|m| m.point == at && m.fstype == FSTYPE)
                .map(|m| m.point.clone())
                .collect()
        }
    };
    for point in binds.iter().rev() {
        workdisk::unmount_below(&place.root, point)
            .with_context(|| format!("unmounting {}/", place.inside))?;
    }
    end(&private, serving).await
}

/// Unmounts rclone's own mount point and ends the process.
async fn end(private: &Path, serving: Option<Serving>) -> anyhow::Result<()> {
    if is_mounted(private) {
        crate::confined::unmount_path(private, private)?;
        if is_mounted(private) {
            bail!("{} could not be unmounted", private.display());
        }
    }
    if let Some(s) = serving {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut signalled = false;
        while crate::procs::alive(s.pid, s.start_ticks) {
            if Instant::now() >= deadline {
                // A pid verified by its start time.
                crate::procs::signal(s.pid, Signal::KILL);
                break;
            }
            if !signalled && Instant::now() + Duration::from_secs(5) >= deadline {
                crate::procs::signal(s.pid, Signal::TERM);
                signalled = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// rclone's last words, on one line (they end up in an API error).
fn log_tail(path: &Path) -> String {
    let tail = crate::backends::runconf::log_tail(path, 5).replace('\n', " | ");
    if tail.trim().is_empty() {
        "rclone wrote nothing".into()
    } else {
        tail
    }
}
