//! Confined paths: every file operation the gateway does on the host under a tree a notebook
//! can write (its work dir, its `/data`, its agent dir, upload landings, mount points,
//! sockets) goes through here.
//!
//! ```text
//!   Dir::open(<trusted path>)            the root: a path only the gateway controls
//!     └─ open_dir / create_dir_all(rel)  one component at a time, openat(O_NOFOLLOW | O_DIRECTORY)
//!          └─ create / open_read / rename / remove / chown / connect_unix (one name in that dir)
//! ```
//!
//! **Invariant:** below the root, no symbolic link is ever followed and no `..` is accepted.
//! Each step holds a file descriptor of the directory it resolved, so a link swapped in
//! after a step cannot redirect what follows (the operation either fails or acts on what
//! was opened). Ownership and permission changes go through `fchown`/`fchownat` with
//! `AT_SYMLINK_NOFOLLOW`, sockets are connected through the `/proc/self/fd` link of an
//! `O_PATH` descriptor of the socket itself. Errors name the path and say when a link was
//! refused.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// A directory opened without following links, and the path it was reached by (for
/// messages only: nothing is resolved through it again).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Who should own what [`Dir::create_dir_all`] and [`Dir::create`] make (`None`: the
/// gateway's own user).
pub type Owner = Option<(u32, u32)>;

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The name of one path component, or an error for anything that is not a plain name.
fn plain_name(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} is not a plain file name", name),
        ));
    }
    if bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file name with a NUL byte",
        ));
    }
    Ok(name)
}

/// The plain components of a relative path; `..`, a root or a prefix are refused (`.` is
/// skipped).
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(plain_name(n)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: only a relative path without `..` is allowed here",
                        rel.display()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Makes the error of an `O_NOFOLLOW` open say what happened.
fn nofollow_error(e: rustix::io::Errno, path: &Path) -> io::Error {
    match e {
        rustix::io::Errno::LOOP => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link, which is not followed here",
                path.display()
            ),
        ),
        rustix::io::Errno::NOTDIR => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a directory (symbolic links are not followed here)",
                path.display()
            ),
        ),
        e => io::Error::new(errno(e).kind(), format!("{}: {}", path.display(), errno(e))),
    }
}

/// `ELOOP` when `name` (in `dir`) is a symbolic link, else `e`: opening a link with
/// `O_DIRECTORY | O_NOFOLLOW` fails with `ENOTDIR`, and the message should say "link".
fn link_or<Fd: AsFd, P: rustix::path::Arg>(
    e: rustix::io::Errno,
    dir: Fd,
    name: P,
) -> rustix::io::Errno {
    if e != rustix::io::Errno::NOTDIR {
        return e;
    }
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink => {
            rustix::io::Errno::LOOP
        }
        _ => e,
    }
}

/// How deep [`Dir::chown_tree`] walks (each level holds a descriptor).
pub const MAX_DEPTH: usize = 256;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Dir {
    /// Opens `path`, a directory the gateway trusts: every component but the last is the
    /// gateway's own (its data dir, a notebook's dir); the last must be a real directory, not
    /// a link.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::openat(rustix::fs::CWD, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| nofollow_error(link_or(e, rustix::fs::CWD, path), path))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was reached by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same directory, named `shown` in messages from now on (and in those of what is
    /// resolved below it): what its user calls it (`/home/ma-user/work`), not the host path.
    pub fn shown_as(mut self, shown: impl Into<PathBuf>) -> Dir {
        self.path = shown.into();
        self
    }

    fn child(&self, name: &OsStr) -> io::Result<Dir> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| nofollow_error(link_or(e, &self.fd, name), &path))?;
        Ok(Dir { fd, path })
    }

    /// The directory at `rel` below this one, every component a real directory.
    pub fn open_dir(&self, rel: &Path) -> io::Result<Dir> {
        let mut dir = self.try_clone()?;
        for name in components(rel)? {
            dir = dir.child(name)?;
        }
        Ok(dir)
    }

    /// As [`Self::open_dir`], making the missing directories (mode 0755, then owned by
    /// `owner`). Existing ones are used as they are, whoever owns them; a link anywhere is
    /// refused.
    pub fn create_dir_all(&self, rel: &Path, owner: Owner) -> io::Result<Dir> {
        let mut dir = self.try_clone()?;
        for name in components(rel)? {
            match rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let made = dir.child(name)?;
                    if let Some((uid, gid)) = owner {
                        made.chown_self(uid, gid)?;
                    }
                    dir = made;
                }
                Err(rustix::io::Errno::EXIST) => dir = dir.child(name)?,
                Err(e) => {
                    return Err(io::Error::new(
                        errno(e).kind(),
                        format!("creating {}: {}", dir.path.join(name).display(), errno(e)),
                    ));
                }
            }
        }
        Ok(dir)
    }

    /// The parent directory of `rel` (made when `create`, owned by `owner`) and its last
    /// component.
    pub fn parent_of(&self, rel: &Path, create: bool, owner: Owner) -> io::Result<(Dir, OsString)> {
        let mut parts = components(rel)?;
        let Some(name) = parts.pop() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: a file name is needed", rel.display()),
            ));
        };
        let parent: PathBuf = parts.iter().collect();
        let dir = if create {
            self.create_dir_all(&parent, owner)?
        } else {
            self.open_dir(&parent)?
        };
        Ok((dir, name.to_os_string()))
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Creates (or truncates) the regular file `name` in this directory for writing, mode
    /// `mode`; a link there is refused, never followed.
    pub fn create(&self, name: &OsStr, mode: u32, owner: Owner) -> io::Result<File> {
        let name = plain_name(name)?;
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::TRUNC
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NONBLOCK,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| nofollow_error(e, &path))?;
        let file = regular(fd, &path)?;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(&file, Some(uid_of(uid)), Some(gid_of(gid))).map_err(errno)?;
        }
        Ok(file)
    }

    /// Creates the regular file `name` for writing, mode `mode`, given to `owner` through its
    /// descriptor; anything already there (a file, a link, a hard link to another file) is
    /// refused with `AlreadyExists`, so the file written is always a new one.
    pub fn create_new(&self, name: &OsStr, mode: u32, owner: Owner) -> io::Result<File> {
        let name = plain_name(name)?;
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} appeared while it was being written", path.display()),
            ),
            e => nofollow_error(e, &path),
        })?;
        let file = regular(fd, &path)?;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(&file, Some(uid_of(uid)), Some(gid_of(gid))).map_err(errno)?;
        }
        Ok(file)
    }

    /// Opens the regular file `name` for reading; links, FIFOs, devices and sockets are
    /// refused (a FIFO would block the reader forever).
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let name = plain_name(name)?;
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| nofollow_error(e, &path))?;
        regular(fd, &path)
    }

    /// What `name` is, without following it: `None` when there is nothing.
    pub fn file_type(&self, name: &OsStr) -> io::Result<Option<(FileType, u64)>> {
        let name = plain_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((
                FileType::from_raw_mode(st.st_mode as _),
                st.st_size as u64,
            ))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Renames `from` to `to`, both in this directory. A link at `to` is replaced, not
    /// followed.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, plain_name(from)?, &self.fd, plain_name(to)?).map_err(|e| {
            io::Error::new(
                errno(e).kind(),
                format!(
                    "renaming {} to {}: {}",
                    self.path.join(from).display(),
                    to.to_string_lossy(),
                    errno(e)
                ),
            )
        })
    }

    /// Removes the file (or link, never its target) `name`; gone already is fine.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, plain_name(name)?, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// Removes the empty directory `name` (a link there is not a directory: refused).
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, plain_name(name)?, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// Changes the owner of `name` itself (a link's own owner, never its target's).
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            &self.fd,
            plain_name(name)?,
            Some(uid_of(uid)),
            Some(gid_of(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// Changes the owner of this directory.
    pub fn chown_self(&self, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::fchown(&self.fd, Some(uid_of(uid)), Some(gid_of(gid))).map_err(errno)
    }

    /// Changes the mode of this directory.
    pub fn chmod_self(&self, mode: u32) -> io::Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode)).map_err(errno)
    }

    /// Gives this directory and everything below it to `uid:gid`, never following a link
    /// (links themselves are given; what they point to is not). Trees deeper than
    /// [`MAX_DEPTH`] are refused rather than walked. Returns how many entries changed.
    pub fn chown_tree(&self, uid: u32, gid: u32) -> io::Result<u64> {
        self.chown_self(uid, gid)?;
        self.chown_below(uid, gid, 0)
    }

    fn chown_below(&self, uid: u32, gid: u32, depth: usize) -> io::Result<u64> {
        if depth >= MAX_DEPTH {
            return Err(io::Error::other(format!(
                "{}: more than {MAX_DEPTH} directories deep",
                self.path.display()
            )));
        }
        let fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty()).map_err(errno)?;
        let entries = rustix::fs::Dir::read_from(&fd).map_err(errno)?;
        let mut changed = 0;
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name).to_os_string();
            self.chown(&name, uid, gid)?;
            changed += 1;
            if entry.file_type() == FileType::Directory {
                dirs.push(name);
            }
        }
        for name in dirs {
            // Swapped for a link since it was listed: refused by child(), left alone.
            if let Ok(child) = self.child(&name) {
                changed += child.chown_below(uid, gid, depth + 1)?;
            }
        }
        Ok(changed)
    }

    /// The owner of this directory.
    pub fn owner(&self) -> io::Result<(u32, u32)> {
        let st = rustix::fs::fstat(&self.fd).map_err(errno)?;
        Ok((st.st_uid, st.st_gid))
    }

    /// Whether this directory has no entries.
    pub fn is_empty(&self) -> io::Result<bool> {
        let fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty()).map_err(errno)?;
        let entries = rustix::fs::Dir::read_from(&fd).map_err(errno)?;
        for entry in entries {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The names in this directory (not `.` and `..`), sorted; at most `max` (more is an
    /// error naming the directory: a folder a notebook filled is not listed without end).
    pub fn entries(&self, max: usize) -> io::Result<Vec<OsString>> {
        let fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty()).map_err(errno)?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if out.len() == max {
                return Err(io::Error::other(format!(
                    "{} holds more than {max} entries",
                    self.path.display()
                )));
            }
            out.push(OsString::from_vec(name.to_vec()));
        }
        out.sort();
        Ok(out)
    }

    /// A path that names this very directory for as long as `self` lives (the
    /// `/proc/self/fd` link of its descriptor): for tools and syscalls that take a path but
    /// must act on exactly this directory (a mount target).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Whether this directory is the root of a mount (something is mounted where it was
    /// opened).
    pub fn is_mount_root(&self) -> io::Result<bool> {
        use rustix::fs::{StatxAttributes, StatxFlags};
        let st = rustix::fs::statx(
            &self.fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::NO_AUTOMOUNT,
            StatxFlags::BASIC_STATS,
        )
        .map_err(errno)?;
        if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
            return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        }
        // Kernels before 5.8: another device than its parent's (misses a bind mount of the
        // same file system).
        let parent =
            rustix::fs::statat(&self.fd, "..", AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        Ok((st.stx_dev_major, st.stx_dev_minor)
            != (
                rustix::fs::major(parent.st_dev),
                rustix::fs::minor(parent.st_dev),
            ))
    }

    /// Bind-mounts `source` (a path only the gateway controls) on exactly this directory,
    /// wherever it is now: `mount(2)` resolves the `/proc/self/fd` link of its descriptor to
    /// the directory that was opened, never to a link planted at its name since.
    pub fn bind_here(&self, source: &Path) -> io::Result<()> {
        rustix::mount::mount_bind(source, self.proc_path()).map_err(|e| {
            io::Error::new(
                errno(e).kind(),
                format!("mounting at {}: {}", self.path.display(), errno(e)),
            )
        })
    }

    /// Unmounts what is mounted at `name` in this directory, through this directory's
    /// descriptor and with `UMOUNT_NOFOLLOW` (a link at `name` is not followed); a mount
    /// still in use is detached (gone from every path at once, released when its last file
    /// closes). `Ok(false)` when nothing is mounted there.
    pub fn unmount(&self, name: &OsStr) -> io::Result<bool> {
        let name = plain_name(name)?;
        let mut at = self.proc_path().into_os_string();
        at.push("/");
        at.push(name);
        unmount_path(Path::new(&at), &self.path.join(name))
    }

    /// The unix socket `name` in this directory, opened `O_PATH | O_NOFOLLOW`: connecting
    /// through it reaches that very socket, never a link or a socket swapped in elsewhere.
    pub fn socket(&self, name: &OsStr) -> io::Result<SocketRef> {
        let name = plain_name(name)?;
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| nofollow_error(e, &path))?;
        // O_PATH with O_NOFOLLOW opens a link itself rather than failing.
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        match FileType::from_raw_mode(st.st_mode as _) {
            FileType::Socket => Ok(SocketRef { fd, path }),
            FileType::Symlink => Err(nofollow_error(rustix::io::Errno::LOOP, &path)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket", path.display()),
            )),
        }
    }

    /// Connects to the unix socket `name` in this directory (see [`Self::socket`]).
    pub fn connect_unix(&self, name: &OsStr) -> io::Result<std::os::unix::net::UnixStream> {
        let socket = self.socket(name)?;
        std::os::unix::net::UnixStream::connect(socket.connect_path())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.path.display())))
    }

    /// The last `lines` lines of the regular file `name`, reading at most its last
    /// `max_bytes` (empty when it cannot be read: a missing file, a link, a FIFO).
    pub fn read_tail(&self, name: &OsStr, lines: usize, max_bytes: u64) -> String {
        let Ok(mut f) = self.open_read(name) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(max_bytes);
        if f.seek(SeekFrom::Start(start)).is_err() {
            return String::new();
        }
        let mut bytes = Vec::new();
        if f.take(max_bytes).read_to_end(&mut bytes).is_err() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut all: Vec<&str> = text.lines().collect();
        if start > 0 && !all.is_empty() {
            // The first line read is most likely cut.
            all.remove(0);
        }
        let from = all.len().saturating_sub(lines);
        all[from..].join("\n")
    }
}

/// A unix socket found by [`Dir::socket`]; connect to [`SocketRef::connect_path`] while it
/// lives.
#[derive(Debug)]
pub struct SocketRef {
    fd: OwnedFd,
    path: PathBuf,
}

impl SocketRef {
    /// The `/proc/self/fd` link of the socket's descriptor: `connect(2)` through it reaches
    /// exactly the socket that was opened.
    pub fn connect_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The path it was found at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Connects to the unix socket `name` in `dir` (a directory a notebook can write) without
/// following links; see [`Dir::socket`].
pub async fn connect_unix(dir: &Path, name: &OsStr) -> io::Result<tokio::net::UnixStream> {
    let socket = Dir::open(dir)?.socket(name)?;
    tokio::net::UnixStream::connect(socket.connect_path())
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.path.display())))
}

/// Unmounts the mount at `at` (`UMOUNT_NOFOLLOW`; detached when busy); `shown` names it in
/// errors. `Ok(false)` when nothing is mounted there. For a path whose every component the
/// gateway controls, or one made by [`Dir::unmount`].
pub fn unmount_path(at: &Path, shown: &Path) -> io::Result<bool> {
    use rustix::mount::UnmountFlags;
    let fail = |e: rustix::io::Errno| {
        io::Error::new(
            errno(e).kind(),
            format!("unmounting {}: {}", shown.display(), errno(e)),
        )
    };
    match rustix::mount::unmount(at, UnmountFlags::NOFOLLOW) {
        Ok(()) => Ok(true),
        // Not a mount point (or a link there, which is not followed), or nothing there.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(false),
        Err(rustix::io::Errno::BUSY) => {
            rustix::mount::unmount(at, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                .map_err(fail)?;
            Ok(true)
        }
        Err(e) => Err(fail(e)),
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

/// A file opened with `O_NONBLOCK` (so a FIFO planted there cannot block the open), made a
/// plain blocking file if it is a regular file, refused otherwise.
fn regular(fd: OwnedFd, path: &Path) -> io::Result<File> {
    let st = rustix::fs::fstat(&fd).map_err(errno)?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(errno)?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// A scratch tree: `root` (what a notebook writes) beside `outside` (what it must never
    /// reach through the gateway).
    struct Scratch {
        base: PathBuf,
    }

    impl Scratch {
        fn new() -> Scratch {
            let base =
                std::env::temp_dir().join(format!("atelier-confined-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(base.join("root")).unwrap();
            std::fs::create_dir_all(base.join("outside")).unwrap();
            std::fs::write(base.join("outside/secret"), "secret").unwrap();
            Scratch { base }
        }
        fn root(&self) -> PathBuf {
            self.base.join("root")
        }
        fn outside(&self) -> PathBuf {
            self.base.join("outside")
        }
        /// Everything under `outside`, with contents, to compare before and after.
        fn outside_state(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
            let mut out = Vec::new();
            let mut stack = vec![self.outside()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    let p = e.path();
                    let meta = std::fs::symlink_metadata(&p).unwrap();
                    if meta.is_dir() {
                        stack.push(p.clone());
                        out.push((p, None));
                    } else {
                        out.push((p.clone(), std::fs::read(&p).ok()));
                    }
                }
            }
            out.sort();
            out
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // What a failed mount test left mounted goes first (deepest first).
            let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let base = self.base.to_string_lossy().into_owned();
            let mut points: Vec<&str> = table
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&base))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
            }
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn a_planted_link_to_a_directory_is_never_followed() {
        let s = Scratch::new();
        symlink(s.outside(), s.root().join("r")).unwrap();
        let before = s.outside_state();
        let root = Dir::open(&s.root()).unwrap();
        let e = root.create_dir_all(Path::new("r/etc"), None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = root
            .parent_of(Path::new("r/secret"), true, None)
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(root.open_dir(Path::new("r")).is_err());
        assert_eq!(before, s.outside_state());
    }

    #[test]
    fn a_planted_link_to_a_file_is_not_written_read_or_chowned_through() {
        let s = Scratch::new();
        symlink(s.outside().join("secret"), s.root().join("f")).unwrap();
        let before = s.outside_state();
        let root = Dir::open(&s.root()).unwrap();
        let e = root.create(OsStr::new("f"), 0o644, None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(root.open_read(OsStr::new("f")).is_err());
        assert_eq!(root.read_tail(OsStr::new("f"), 10, 1024), "");
        let owner_before = std::fs::metadata(s.outside().join("secret")).unwrap().uid();
        if rustix::process::geteuid().is_root() {
            root.chown(OsStr::new("f"), 12345, 12345).unwrap();
            // The link's own owner changed; the target's did not.
            assert_eq!(
                std::fs::symlink_metadata(s.root().join("f")).unwrap().uid(),
                12345
            );
        }
        assert_eq!(
            std::fs::metadata(s.outside().join("secret")).unwrap().uid(),
            owner_before
        );
        // A rename onto the link replaces the link.
        root.create(OsStr::new("new"), 0o644, None).unwrap();
        root.rename(OsStr::new("new"), OsStr::new("f")).unwrap();
        assert!(
            std::fs::symlink_metadata(s.root().join("f"))
                .unwrap()
                .is_file()
        );
        assert_eq!(before, s.outside_state());
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused() {
        let s = Scratch::new();
        let root = Dir::open(&s.root()).unwrap();
        for bad in ["../outside", "a/../../outside", "/etc", ""] {
            let r = root.parent_of(Path::new(bad), true, None);
            assert!(r.is_err(), "{bad} accepted");
        }
        assert!(root.create(OsStr::new(".."), 0o644, None).is_err());
        assert!(root.create(OsStr::new("a/b"), 0o644, None).is_err());
        assert!(!s.base.join("etc").exists());
    }

    #[test]
    fn the_root_itself_must_not_be_a_link() {
        let s = Scratch::new();
        symlink(s.outside(), s.base.join("link")).unwrap();
        let e = Dir::open(&s.base.join("link")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    /// A directory swapped for a link after it was resolved: what follows acts on the
    /// directory that was opened (now detached), never on the link's target.
    #[test]
    fn a_link_swapped_in_after_resolution_does_not_redirect_the_operation() {
        let s = Scratch::new();
        let root = Dir::open(&s.root()).unwrap();
        let (dir, name) = root
            .parent_of(Path::new("sub/file.txt"), true, None)
            .unwrap();
        // The notebook moves the directory away and plants a link in its place.
        std::fs::rename(s.root().join("sub"), s.root().join("moved")).unwrap();
        symlink(s.outside(), s.root().join("sub")).unwrap();
        let before = s.outside_state();
        let mut f = dir.create(&name, 0o644, None).unwrap();
        std::io::Write::write_all(&mut f, b"landed").unwrap();
        drop(f);
        assert_eq!(before, s.outside_state());
        assert_eq!(
            std::fs::read(s.root().join("moved/file.txt")).unwrap(),
            b"landed"
        );
    }

    /// The same swap raced against many operations: nothing ever lands outside.
    #[test]
    fn racing_link_swaps_never_reach_outside() {
        let s = Scratch::new();
        let root_path = s.root();
        std::fs::create_dir_all(root_path.join("d")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let root_path = root_path.clone();
            let outside = s.outside();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                    let d = root_path.join("d");
                    let _ = std::fs::rename(&d, root_path.join(format!("gone-{n}")));
                    let _ = symlink(&outside, &d);
                    let _ = std::fs::remove_file(&d);
                    let _ = std::fs::create_dir(&d);
                    n += 1;
                }
            })
        };
        let root = Dir::open(&root_path).unwrap();
        for i in 0..2000 {
            let name = format!("f{i}");
            if let Ok((dir, leaf)) = root.parent_of(&Path::new("d").join(&name), true, None)
                && let Ok(mut f) = dir.create(&leaf, 0o644, None)
            {
                let _ = std::io::Write::write_all(&mut f, b"x");
            }
            let _ = root.create_dir_all(&Path::new("d").join("x").join(&name), None);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        let state = s.outside_state();
        assert_eq!(state.len(), 1, "something landed outside: {state:?}");
    }

    #[test]
    fn sockets_are_connected_only_where_they_are() {
        let s = Scratch::new();
        let outside_sock = s.outside().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&outside_sock).unwrap();
        symlink(&outside_sock, s.root().join("link.sock")).unwrap();
        let root = Dir::open(&s.root()).unwrap();
        let e = root.connect_unix(OsStr::new("link.sock")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::write(s.root().join("plain"), "x").unwrap();
        assert!(root.connect_unix(OsStr::new("plain")).is_err());
        let own = std::os::unix::net::UnixListener::bind(s.root().join("own.sock")).unwrap();
        let _c = root.connect_unix(OsStr::new("own.sock")).unwrap();
        assert!(own.accept().is_ok());
    }

    #[test]
    fn a_fifo_does_not_block_a_reader() {
        let s = Scratch::new();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            s.root().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let root = Dir::open(&s.root()).unwrap();
        assert!(root.open_read(OsStr::new("fifo")).is_err());
        assert_eq!(root.read_tail(OsStr::new("fifo"), 5, 100), "");
    }

    #[test]
    fn the_tail_of_a_log_reads_only_its_end() {
        let s = Scratch::new();
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(s.root().join("log"), &text).unwrap();
        let root = Dir::open(&s.root()).unwrap();
        assert_eq!(
            root.read_tail(OsStr::new("log"), 3, 1 << 20),
            "line 997\nline 998\nline 999"
        );
        // A small window: whole lines only.
        assert_eq!(
            root.read_tail(OsStr::new("log"), 100, 20),
            "line 998\nline 999"
        );
    }

    #[test]
    fn a_tree_is_given_away_without_following_its_links() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let s = Scratch::new();
        std::fs::create_dir_all(s.root().join("a/b")).unwrap();
        std::fs::write(s.root().join("a/b/f"), "x").unwrap();
        symlink(s.outside(), s.root().join("a/out")).unwrap();
        symlink(s.outside().join("secret"), s.root().join("a/b/secret")).unwrap();
        let root = Dir::open(&s.root()).unwrap();
        assert_eq!(root.chown_tree(1000, 100).unwrap(), 5);
        for p in ["", "a", "a/b", "a/b/f"] {
            let m = std::fs::symlink_metadata(s.root().join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 100), "{p}");
        }
        assert_eq!(std::fs::metadata(s.outside()).unwrap().uid(), 0);
        assert_eq!(
            std::fs::metadata(s.outside().join("secret")).unwrap().uid(),
            0
        );
    }

    #[test]
    fn made_directories_get_the_owner_asked_for() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let s = Scratch::new();
        let root = Dir::open(&s.root()).unwrap();
        std::fs::create_dir(s.root().join("existing")).unwrap();
        root.create_dir_all(Path::new("existing/a/b"), Some((1000, 100)))
            .unwrap();
        assert_eq!(
            std::fs::metadata(s.root().join("existing")).unwrap().uid(),
            0
        );
        assert_eq!(
            std::fs::metadata(s.root().join("existing/a"))
                .unwrap()
                .uid(),
            1000
        );
        let m = std::fs::metadata(s.root().join("existing/a/b")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 100));
        let f = root
            .open_dir(Path::new("existing/a"))
            .unwrap()
            .create(OsStr::new("f"), 0o600, Some((1000, 100)))
            .unwrap();
        assert_eq!(f.metadata().unwrap().uid(), 1000);
    }

    #[test]
    fn create_new_writes_only_a_new_file() {
        let s = Scratch::new();
        let root = Dir::open(&s.root()).unwrap();
        symlink(s.outside().join("secret"), s.root().join("link")).unwrap();
        std::fs::write(s.root().join("there"), "old").unwrap();
        std::fs::hard_link(s.outside().join("secret"), s.root().join("hard")).unwrap();
        let before = s.outside_state();
        for name in ["link", "there", "hard"] {
            let e = root.create_new(OsStr::new(name), 0o644, None).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
        }
        assert_eq!(before, s.outside_state());
        let mut f = root.create_new(OsStr::new("fresh"), 0o600, None).unwrap();
        std::io::Write::write_all(&mut f, b"new").unwrap();
        assert_eq!(std::fs::read(s.root().join("fresh")).unwrap(), b"new");
        // Messages name the directory as its user knows it.
        let shown = Dir::open(&s.root()).unwrap().shown_as("/home/ma-user/work");
        let e = shown.open_dir(Path::new("link")).unwrap_err();
        assert!(
            e.to_string().starts_with("/home/ma-user/work/link is "),
            "{e}"
        );
    }

    /// Mounts a tmpfs at `at` (root only).
    fn tmpfs(at: &Path) {
        rustix::mount::mount(
            "atelier-test",
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
    }

    fn mounted(at: &Path) -> bool {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let at = at.to_string_lossy();
        table
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(at.as_ref()))
    }

    /// A directory opened, then moved away and replaced by a link to outside: the bind lands
    /// on the directory that was opened; an unmount through a link unmounts nothing.
    #[test]
    fn binds_and_unmounts_never_go_through_a_link() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let s = Scratch::new();
        std::fs::create_dir_all(s.base.join("source")).unwrap();
        std::fs::write(s.base.join("source/hello"), "bound").unwrap();
        std::fs::create_dir_all(s.outside().join("target")).unwrap();
        let root = Dir::open(&s.root()).unwrap();
        let made = root.create_dir_all(Path::new("d"), None).unwrap();
        assert!(!made.is_mount_root().unwrap());
        std::fs::rename(s.root().join("d"), s.root().join("moved")).unwrap();
        symlink(s.outside().join("target"), s.root().join("d")).unwrap();
        made.bind_here(&s.base.join("source")).unwrap();
        assert!(mounted(&s.root().join("moved")));
        assert!(!mounted(&s.outside().join("target")));
        assert_eq!(
            std::fs::read(s.root().join("moved/hello")).unwrap(),
            b"bound"
        );
        assert!(
            root.open_dir(Path::new("moved"))
                .unwrap()
                .is_mount_root()
                .unwrap()
        );

        // Something mounted where the link leads: unmounting the link's name leaves it.
        tmpfs(&s.outside().join("target"));
        assert!(!root.unmount(OsStr::new("d")).unwrap());
        assert!(mounted(&s.outside().join("target")));
        assert!(root.unmount(OsStr::new("moved")).unwrap());
        assert!(!mounted(&s.root().join("moved")));
        assert!(!root.unmount(OsStr::new("moved")).unwrap());
        assert!(!root.unmount(OsStr::new("missing")).unwrap());
        // A mount in use is detached.
        tmpfs(&s.root().join("moved"));
        let busy = std::fs::File::create(s.root().join("moved/open")).unwrap();
        assert!(root.unmount(OsStr::new("moved")).unwrap());
        assert!(!mounted(&s.root().join("moved")));
        drop(busy);
        assert!(unmount_path(&s.outside().join("target"), Path::new("target")).unwrap());
    }
}
