//! A notebook's work disk (the seed's EVS): a sized filesystem mounted at
//! `<data>/notebooks/{id}/work`, which containers see as `/home/ma-user/work`.
//!
//! ```text
//! <nb>/work.img    sparse image file, formatted once (XFS where xfsprogs is installed: it
//!                  grows while mounted with the CAP_SYS_ADMIN the mount needs anyway; else
//!                  ext4, whose online growth also needs CAP_SYS_RESOURCE)
//! <nb>/work/       its mount point (loop device; autoclear, so unmounting frees it)
//! <nb>/disk.json   {kind, fs, size_gb, note}: what the notebook's storage info shows
//! ```
//!
//! Where a loop mount is impossible (not root, no loop devices, no mkfs), the work disk is
//! a plain directory with no size limit, and `note` says why. A disk survives stop/start and
//! container recreation; only [`remove`] (notebook delete) deletes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Most a single expansion may add, and the largest disk (seed: +100 GB, 4,096 GB).
pub const MAX_STEP_GB: u32 = 100;
pub const MAX_SIZE_GB: u32 = 4096;

const GB: u64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// `disk` (a sized filesystem) or `directory` (no size limit).
    pub kind: String,
    /// `xfs` or `ext4` for a disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<String>,
    pub size_gb: u32,
    /// Why the work disk is a plain directory, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn image_of(nb: &Path) -> PathBuf {
    nb.join("work.img")
}

fn info_path(nb: &Path) -> PathBuf {
    nb.join("disk.json")
}

/// The work disk's mount point (or plain directory).
pub fn work_dir(nb: &Path) -> PathBuf {
    nb.join("work")
}

/// What [`ensure`] recorded, if it ran.
pub fn info(nb: &Path) -> Option<DiskInfo> {
    let text = std::fs::read_to_string(info_path(nb)).ok()?;
    serde_json::from_str(&text).ok()
}

fn save(nb: &Path, info: &DiskInfo) -> anyhow::Result<()> {
    let tmp = nb.join("disk.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
    std::fs::rename(&tmp, info_path(nb))?;
    Ok(())
}

/// Whether `dir` is a mount point (it appears as one in this process's mount table).
pub fn is_mounted(dir: &Path) -> bool {
    mount_source(dir).is_some()
}

/// The device mounted at `dir`, from `/proc/self/mountinfo`.
fn mount_source(dir: &Path) -> Option<String> {
    mount_entry(dir).map(|(_, source)| source)
}

/// The file system type mounted at `dir` (such as `fuse.rclone`), if it is a mount point.
/// Works on a FUSE mount whose server died: only the parent is resolved.
pub fn fstype_at(dir: &Path) -> Option<String> {
    mount_entry(dir).map(|(fstype, _)| fstype)
}

/// The path of `dir` as the mount table writes it, for a `dir` whose path the gateway
/// controls. Only its parent is resolved: a stat of a dead FUSE mount fails (ENOTCONN).
pub fn table_path(dir: &Path) -> Option<PathBuf> {
    match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => Some(parent.canonicalize().ok()?.join(name)),
        _ => dir.canonicalize().ok(),
    }
}

/// (fstype, source) of the topmost mount at `dir`.
fn mount_entry(dir: &Path) -> Option<(String, String)> {
    let dir = table_path(dir)?;
    mount_table()
        .into_iter()
        .rev()
        .find(|m| m.point == dir)
        .map(|m| (m.fstype, m.source))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (a real path: no links in it).
    pub point: PathBuf,
    /// `major:minor` of the mounted file system: a bind mount shares it with its source.
    pub dev: String,
    pub fstype: String,
    pub source: String,
}

/// This process's mount table, in mount order (empty when unreadable).
pub fn mount_table() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

fn parse_mountinfo(table: &str) -> Vec<MountEntry> {
    table
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mountpoint options... - fstype source superoptions
            let mut f = line.split(' ');
            let dev = f.nth(2)?.to_owned();
            let point = PathBuf::from(unescape_mount(f.nth(1)?));
            let mut rest = line.split(" - ").nth(1)?.split(' ');
            Some(MountEntry {
                point,
                dev,
                fstype: rest.next()?.to_owned(),
                source: rest.next()?.to_owned(),
            })
        })
        .collect()
}

/// Unmounts the mount at `point`, a real path (from the mount table) at or below `root`, a
/// directory whose path the gateway controls. The part below `root` may be the notebook's
/// (it can swap a directory for a link there at any moment), so it is resolved through
/// [`crate::confined`] from `root` and unmounted with `UMOUNT_NOFOLLOW`: what is unmounted
/// is always the mount at that place below `root`, never one a link leads to. Returns
/// whether something was unmounted (detached when busy).
pub fn unmount_below(root: &Path, point: &Path) -> anyhow::Result<bool> {
    let Some(base) = table_path(root) else {
        bail!("{} cannot be resolved", root.display());
    };
    let Ok(rel) = point.strip_prefix(&base) else {
        bail!(
            "{} is not under {}; not unmounted",
            point.display(),
            root.display()
        );
    };
    if rel.as_os_str().is_empty() {
        return Ok(crate::confined::unmount_path(root, point)?);
    }
    let top = crate::confined::Dir::open(root)?;
    let (dir, name) = top.parent_of(rel, false, None)?;
    Ok(dir.unmount(&name)?)
}

/// Mount table fields escape space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// On `PATH` or in the sbin folders (which a non-login root shell may not have on `PATH`).
fn have(program: &str) -> bool {
    which::which(program).is_ok()
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| which::which_in(program, Some(d), "/").is_ok())
}

/// The filesystem new disks get: XFS when its tools are installed, else ext4.
fn pick_fs() -> Option<&'static str> {
    if have("mkfs.xfs") && have("xfs_growfs") {
        Some("xfs")
    } else if have("mkfs.ext4") {
        Some("ext4")
    } else {
        None
    }
}

/// Makes the work disk ready and mounted (creating it at `size_gb` the first time), owned by
/// `owner` (uid, gid) at its root. Falls back to a plain directory, recorded with a note.
pub async fn ensure(nb: &Path, size_gb: u32, owner: (u32, u32)) -> anyhow::Result<DiskInfo> {
    let work = work_dir(nb);
    tokio::fs::create_dir_all(&work)
        .await
        .with_context(|| format!("creating {}", work.display()))?;
    if let Some(info) = info(nb) {
        if info.kind == "disk" && !is_mounted(&work) {
            mount(nb, info.fs.as_deref().unwrap_or("ext4")).await?;
        }
        return Ok(info);
    }
    let info = match create(nb, size_gb, owner).await {
        Ok(info) => info,
        Err(why) => {
            let _ = tokio::fs::remove_file(image_of(nb)).await;
            chown(&work, owner);
            let note = format!(
                "the work disk is a plain directory without a size limit: a sized disk needs a loop mount as root ({why:#})"
            );
            tracing::warn!(dir = %work.display(), "{note}");
            DiskInfo {
                kind: "directory".into(),
                fs: None,
                size_gb,
                note: Some(note),
            }
        }
    };
    save(nb, &info)?;
    Ok(info)
}

async fn create(nb: &Path, size_gb: u32, owner: (u32, u32)) -> anyhow::Result<DiskInfo> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the gateway does not run as root");
    }
    let Some(fs) = pick_fs() else {
        bail!("neither mkfs.xfs (xfsprogs) nor mkfs.ext4 (e2fsprogs) is installed");
    };
    let work = work_dir(nb);
    if std::fs::read_dir(&work)?.next().is_some() {
        bail!("{} already holds files", work.display());
    }
    let image = image_of(nb);
    let file =
        std::fs::File::create(&image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(u64::from(size_gb) * GB)
        .context("sizing the disk image")?;
    drop(file);
    let image_s = image.to_string_lossy().into_owned();
    match fs {
        "xfs" => run("mkfs.xfs", &["-q", "-f", &image_s]).await?,
        _ => run("mkfs.ext4", &["-q", "-F", "-m", "0", &image_s]).await?,
    }
    mount(nb, fs).await?;
    chown(&work, owner);
    Ok(DiskInfo {
        kind: "disk".into(),
        fs: Some(fs.into()),
        size_gb,
        note: None,
    })
}

async fn mount(nb: &Path, fs: &str) -> anyhow::Result<()> {
    let work = work_dir(nb);
    let image = image_of(nb);
    run(
        "mount",
        &[
            "-t",
            fs,
            "-o",
            "loop,nodev,nosuid",
            &image.to_string_lossy(),
            &work.to_string_lossy(),
        ],
    )
    .await
    .context("mounting the work disk")
}

fn chown(dir: &Path, (uid, gid): (u32, u32)) {
    if let Err(e) = std::os::unix::fs::chown(dir, Some(uid), Some(gid)) {
        tracing::debug!(dir = %dir.display(), error = %e, "chown of the work dir");
    }
}

/// Grows a mounted disk to `size_gb` while it is in use.
pub async fn expand(nb: &Path, size_gb: u32) -> anyhow::Result<DiskInfo> {
    let Some(mut info) = info(nb) else {
        bail!("the notebook has no work disk yet");
    };
    if info.kind != "disk" {
        bail!(
            "the work disk is a plain directory with no size limit, so it cannot be expanded{}",
            info.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    let work = work_dir(nb);
    let Some(device) = mount_source(&work) else {
        bail!("the work disk is not mounted");
    };
    let image = image_of(nb);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .with_context(|| format!("opening {}", image.display()))?;
    file.set_len(u64::from(size_gb) * GB)
        .context("growing the disk image")?;
    drop(file);
    run("losetup", &["-c", &device]).await?;
    match info.fs.as_deref() {
        Some("xfs") => run("xfs_growfs", &[&work.to_string_lossy()]).await?,
        _ => run("resize2fs", &[&device]).await?,
    }
    info.size_gb = size_gb;
    save(nb, &info)?;
    Ok(info)
}

/// Makes `dir` a mount point of its own with shared propagation (a bind onto itself), so
/// that what is mounted under it later (dynamic `/data` mounts) also appears in containers
/// that bind it with `rslave`. Returns false (and says why in the log) where that is not
/// possible, e.g. without root.
pub async fn ensure_shared(dir: &Path) -> bool {
    if is_mounted(dir) {
        return true;
    }
    let d = dir.to_string_lossy();
    let made = async {
        run("mount", &["--bind", &d, &d]).await?;
        run("mount", &["--make-shared", &d]).await
    }
    .await;
    match made {
        Ok(()) => true,
        Err(e) => {
            if is_mounted(dir) {
                let _ = run("umount", &[&d]).await;
            }
            tracing::warn!(dir = %dir.display(), error = format!("{e:#}"), "mounts made under /data later will not show in the running notebook");
            false
        }
    }
}

/// The mount points at or below `dir` (deepest first).
pub fn mounted_under(dir: &Path) -> Vec<String> {
    let Some(dir) = table_path(dir) else {
        return Vec::new();
    };
    let mut points: Vec<String> = mount_table()
        .into_iter()
        .filter(|m| m.point.starts_with(&dir))
        .map(|m| m.point.to_string_lossy().into_owned())
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

/// Unmounts everything at or below `dir` (deepest first), never through a link planted
/// below it ([`unmount_below`]). Idempotent.
pub async fn unmount_all(dir: &Path) -> anyhow::Result<()> {
    for p in mounted_under(dir) {
        unmount_below(dir, Path::new(&p))?;
    }
    Ok(())
}

/// Unmounts the disk (at stop: nothing uses it until the next start). Idempotent.
pub async fn release(nb: &Path) -> anyhow::Result<()> {
    let work = work_dir(nb);
    if is_mounted(&work) {
        run("umount", &[&work.to_string_lossy()]).await?;
    }
    Ok(())
}

/// Unmounts and deletes the disk and everything on it (notebook delete only).
pub async fn remove(nb: &Path) -> anyhow::Result<()> {
    release(nb).await?;
    if is_mounted(&work_dir(nb)) {
        bail!("the work disk is still mounted");
    }
    match tokio::fs::remove_file(image_of(nb)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing the disk image"),
    }
    let _ = tokio::fs::remove_file(info_path(nb)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_table_is_read_with_devices_and_escapes() {
        let t = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                 90 22 0:55 / /srv/nb/mounts/m1/mnt rw,nosuid - fuse.rclone atelier:atl:b/p/ rw\n\
                 91 22 0:55 / /srv/nb/data/my\\040x rw,nosuid shared:5 - fuse.rclone atelier:atl:b/p/ rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].point, PathBuf::from("/srv/nb/mounts/m1/mnt"));
        assert_eq!(m[1].dev, "0:55");
        assert_eq!(m[1].fstype, "fuse.rclone");
        assert_eq!(m[2].point, PathBuf::from("/srv/nb/data/my x"));
        assert_eq!(m[2].dev, m[1].dev, "a bind shares its source's device");
        assert_eq!(m[0].source, "/dev/sda1");
    }

    /// Unmounts through `confined` only below the given root: a mount point elsewhere is
    /// refused; one reached through a link in the root is not unmounted.
    #[test]
    fn unmounts_stay_below_their_root() {
        let base = std::env::temp_dir().join(format!("wd-below-{}", uuid::Uuid::new_v4()));
        let root = base.join("data");
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        let e = unmount_below(&root, &base.join("outside")).unwrap_err();
        assert!(e.to_string().contains("not under"), "{e}");
        // Nothing mounted at x: nothing to do.
        let x = root.canonicalize().unwrap().join("x");
        assert!(!unmount_below(&root, &x).unwrap());
        if unsafe { libc::geteuid() } == 0 {
            let outside = base.join("outside").canonicalize().unwrap();
            rustix::mount::mount(
                "wd-test",
                &outside,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                None,
            )
            .unwrap();
            std::fs::remove_dir(root.join("x")).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("x")).unwrap();
            assert!(!unmount_below(&root, &x).unwrap());
            assert!(is_mounted(&outside));
            rustix::mount::unmount(&outside, rustix::mount::UnmountFlags::DETACH).unwrap();
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A mount anywhere below a notebook's dir (rclone's own, deep in `mounts/`) stops its
    /// removal, and what is behind the mount stays; once unmounted, the dir goes.
    #[tokio::test]
    async fn a_notebook_dir_is_never_deleted_through_a_mount() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let nb = std::env::temp_dir().join(format!("wd-nb-{}", uuid::Uuid::new_v4()));
        let point = nb.join("mounts/m1/mnt");
        std::fs::create_dir_all(&point).unwrap();
        rustix::mount::mount(
            "wd-test",
            &point,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        std::fs::write(point.join("object"), "not the notebook dir's").unwrap();
        let under = mounted_under(&nb);
        assert_eq!(under, [point.canonicalize().unwrap().to_string_lossy()]);
        let e = crate::backends::runconf::remove_notebook_dir(&nb)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("still mounted") && e.contains("mounts/m1/mnt"),
            "{e}"
        );
        assert!(point.join("object").is_file());
        unmount_all(&nb).await.unwrap();
        assert!(mounted_under(&nb).is_empty());
        crate::backends::runconf::remove_notebook_dir(&nb)
            .await
            .unwrap();
        assert!(!nb.exists());
    }

    #[test]
    fn mount_table_escapes_are_undone() {
        assert_eq!(unescape_mount("/a\\040b\\134c"), "/a b\\c");
    }

    /// Where no disk can be made (here: the work dir already holds files, as after a switch
    /// from the process backend), the work dir stays a plain directory, says why, keeps
    /// the files, and refuses to expand.
    #[tokio::test]
    async fn without_a_disk_the_work_dir_is_a_directory_that_says_why() {
        let nb = std::env::temp_dir().join(format!("wd-fallback-{}", std::process::id()));
        std::fs::create_dir_all(work_dir(&nb)).unwrap();
        std::fs::write(work_dir(&nb).join("notes.txt"), "mine").unwrap();
        let owner = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
        let info = ensure(&nb, 5, owner).await.unwrap();
        assert_eq!(info.kind, "directory");
        let note = info.note.clone().unwrap();
        assert!(note.contains("plain directory"), "{note}");
        assert!(!is_mounted(&work_dir(&nb)));
        assert_eq!(
            std::fs::read_to_string(work_dir(&nb).join("notes.txt")).unwrap(),
            "mine"
        );
        // Recorded: the next start does not try again, and the API can show it.
        assert_eq!(super::info(&nb), Some(info));
        let e = expand(&nb, 6).await.unwrap_err().to_string();
        assert!(e.contains("cannot be expanded"), "{e}");
        remove(&nb).await.unwrap();
        assert!(
            work_dir(&nb).join("notes.txt").exists(),
            "remove leaves the dir to its owner"
        );
        std::fs::remove_dir_all(&nb).unwrap();
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")));
        let dir = std::env::temp_dir().join(format!("wd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_mounted(&dir));
        std::fs::remove_dir(&dir).unwrap();
    }
}
