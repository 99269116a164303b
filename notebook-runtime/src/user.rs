//! Becoming the notebook's unprivileged user. Inside the process backend's sandbox the
//! runtime starts as root with only the capabilities to do this (setuid, setgid, chown);
//! after the switch every user, group and saved id is the notebook's, so no capability is
//! left and none can come back (the sandbox also sets `no_new_privs`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result, bail};

use crate::spec::UserSpec;

/// Switches to `user` (nothing to do without one, or when already that user).
pub fn become_user(user: Option<&UserSpec>) -> Result<()> {
    let Some(user) = user else {
        return Ok(());
    };
    // SAFETY: plain syscalls without preconditions.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid == user.uid && euid == user.uid {
        return Ok(());
    }
    if euid != 0 {
        bail!(
            "cannot become uid {}: the runtime runs as uid {euid}, not root",
            user.uid
        );
    }
    if let Some(home) = &user.home {
        std::fs::create_dir_all(home)
            .with_context(|| format!("creating the home dir {}", home.display()))?;
        let c = CString::new(home.as_os_str().as_bytes()).context("home dir")?;
        // SAFETY: a valid C string; lchown never follows a link.
        if unsafe { libc::lchown(c.as_ptr(), user.uid, user.gid) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("giving {} to uid {}", home.display(), user.uid));
        }
    }
    // SAFETY: plain syscalls; order matters (groups and gid while still root).
    unsafe {
        let groups = [user.gid];
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgroups");
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setresgid");
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setresuid");
        }
        // Checked, not assumed: a failed switch must never leave root running Jupyter.
        if libc::getuid() != user.uid || libc::geteuid() != user.uid || libc::setuid(0) == 0 {
            bail!("switching to uid {} did not hold", user.uid);
        }
    }
    Ok(())
}
