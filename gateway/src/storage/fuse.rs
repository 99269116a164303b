//! Object-storage folders as FUSE file systems on the host, served by `rclone mount` (Debian's
//! `rclone`): one process per mount, in its own session so it outlives a gateway restart,
//! configured only through its environment (no config file holds the credentials), found
//! again by pid and start time.
//!
//! ```text
//! rclone mount atl:BUCKET/PREFIX MOUNTPOINT   RCLONE_CONFIG_ATL_* = the connection
//!   --vfs-cache-mode writes                   writes land in STATE/cache, then upload
//!   --dir-cache-time 5s                       objects written elsewhere show within seconds
//!   --uid/--gid --allow-other                 the notebook's user owns the files
//!   --read-only                               EROFS for every write
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::ObjectUri;
use super::s3::Target;
use crate::backends::workdisk;

/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// The FUSE type rclone mounts show in the mount table.
const FSTYPE: &str = "fuse.rclone";

/// One mount to make.
pub struct MountSpec<'a> {
    pub target: &'a Target,
    pub uri: &'a ObjectUri,
    pub mountpoint: &'a Path,
    pub read_only: bool,
    /// Who owns the files as the notebook sees them; other users may then use the mount
    /// (`--allow-other`). `None`: the gateway's own user only.
    pub owner: Option<(u32, u32)>,
    /// rclone's log and write cache.
    pub state_dir: &'a Path,
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
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("rclone"))
        .find(|p| p.is_file())
}

/// Whether `/dev/fuse` can be opened (FUSE mounts are possible here).
pub fn fuse_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
}

/// Mounts `spec.uri` at `spec.mountpoint` (which must exist) and returns once the mount is
/// in the mount table.
pub async fn mount(rclone: &Path, spec: &MountSpec<'_>) -> anyhow::Result<Serving> {
    if workdisk::fstype_at(spec.mountpoint).is_some() {
        bail!(
            "{} is already a mount point",
            spec.mountpoint.to_string_lossy()
        );
    }
    std::fs::create_dir_all(spec.state_dir.join("cache"))
        .with_context(|| format!("creating {}", spec.state_dir.display()))?;
    let log_path = spec.state_dir.join("rclone.log");
    // A fresh log per mount: its tail explains a failure.
    let log = std::fs::File::create(&log_path).context("creating rclone.log")?;
    // A trailing '/' says the root is a folder: rclone then does not HEAD its name first.
    let remote = format!("atl:{}/{}", spec.uri.bucket, spec.uri.dir_prefix());
    let mut cmd = std::process::Command::new(rclone);
    cmd.arg("mount")
        .arg(&remote)
        .arg(spec.mountpoint)
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
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("rclone.log")?)
        .stderr(log);
    crate::backends::process::in_own_session(&mut cmd);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {}", rclone.display()))?;
    let pid = child.id().context("rclone exited at once")? as i32;
    let start_ticks =
        crate::backends::process::proc_start_ticks(pid).context("reading rclone's start time")?;
    let serving = Serving { pid, start_ticks };
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if is_mounted(spec.mountpoint) {
            // Reap it when it exits while the gateway runs; after a restart init does.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(serving);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "rclone exited ({status}) before the mount appeared: {}",
                log_tail(&log_path)
            );
        }
        if Instant::now() >= deadline {
            let _ = unmount(spec.mountpoint, Some(serving)).await;
            bail!(
                "the mount did not appear within {} s: {}",
                MOUNT_TIMEOUT.as_secs(),
                log_tail(&log_path)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether an rclone mount is at `path`.
pub fn is_mounted(path: &Path) -> bool {
    workdisk::fstype_at(path).is_some_and(|t| t == FSTYPE)
}

/// Whether the mount at `path` is up and served by `serving`.
pub fn is_serving(path: &Path, serving: Serving) -> bool {
    crate::backends::process::alive(serving.pid, serving.start_ticks) && is_mounted(path)
}

/// Unmounts `path` (if mounted) and ends its rclone process. Never touches the objects.
/// Idempotent.
pub async fn unmount(path: &Path, serving: Option<Serving>) -> anyhow::Result<()> {
    if is_mounted(path) {
        let p = path.to_string_lossy().into_owned();
        // A file still open in the notebook makes a plain unmount fail (EBUSY); detach then,
        // so the name is free at once and the mount goes when the last file closes.
        if !fusermount(&["-u", &p]).await {
            fusermount(&["-u", "-z", &p]).await;
        }
        if is_mounted(path) {
            bail!("{p} could not be unmounted");
        }
    }
    if let Some(s) = serving {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut signalled = false;
        while crate::backends::process::alive(s.pid, s.start_ticks) {
            if Instant::now() >= deadline {
                // SAFETY: plain syscall on a pid verified by its start time.
                unsafe { libc::kill(s.pid, libc::SIGKILL) };
                break;
            }
            if !signalled && Instant::now() + Duration::from_secs(5) >= deadline {
                // SAFETY: as above.
                unsafe { libc::kill(s.pid, libc::SIGTERM) };
                signalled = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn fusermount(args: &[&str]) -> bool {
    for program in ["fusermount3", "fusermount", "umount"] {
        let args: Vec<&str> = if program == "umount" {
            // umount's lazy flag is -l; as root it unmounts FUSE too.
            args.iter()
                .filter(|a| **a != "-u")
                .map(|a| if *a == "-z" { "-l" } else { *a })
                .collect()
        } else {
            args.to_vec()
        };
        match tokio::process::Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
        {
            Ok(s) => return s.success(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return false,
        }
    }
    false
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
