//! Wake-ups when a job's workers write: inotify on their agent dirs, so a line a job prints
//! is copied into its log (and reaches `logs?follow=true`) at once instead of at the runner's
//! next tick. Only a wake-up: what was written is still read through `confined`, the tick
//! still runs without it (where inotify is not to be had, the runner just ticks), and a
//! worker that writes all the time wakes the runner at most once per [`MIN_GAP`].
//!
//! The dirs are the gateway's own (made by the backend, the worker writes inside them): each
//! is watched with `IN_ONLYDIR | IN_DONTFOLLOW`, so a path that is not a directory is not
//! watched at all.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

/// The least time between two wake-ups.
pub const MIN_GAP: Duration = Duration::from_millis(10);
/// Reads of queued events per wake-up (each up to 4 KiB of events): a flood waits for the
/// next one.
const READS: usize = 16;

pub struct LogWake {
    fd: AsyncFd<OwnedFd>,
    last: Instant,
    /// Set once reading failed: from then on only the tick wakes the runner.
    broken: bool,
}

impl LogWake {
    /// Watches `dirs` for files written, created or moved in; `None` when inotify is not to
    /// be had or no dir could be watched.
    pub fn new<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Option<LogWake> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let flags = WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::ONLYDIR
            | WatchFlags::DONT_FOLLOW;
        let mut watched = 0;
        for d in dirs {
            match inotify::add_watch(&fd, d, flags) {
                Ok(_) => watched += 1,
                Err(e) => tracing::debug!(dir = %d.display(), error = %e, "inotify watch"),
            }
        }
        if watched == 0 {
            return None;
        }
        // SAFETY: an OwnedFd is a valid open descriptor, owned by the AsyncFd from here to
        // its drop, and its as_raw_fd is always that descriptor.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()?;
        Some(LogWake {
            fd,
            last: Instant::now(),
            broken: false,
        })
    }

    /// Returns once a watched dir changed since the last return (its events drained), but
    /// not sooner than [`MIN_GAP`] after it. Never returns once reading failed.
    pub async fn changed(&mut self) {
        let gap = MIN_GAP.saturating_sub(self.last.elapsed());
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        while !self.broken {
            let Ok(mut ready) = self.fd.readable().await else {
                self.broken = true;
                break;
            };
            let mut buf = [0u8; 4096];
            let mut got = false;
            for _ in 0..READS {
                match rustix::io::read(self.fd.get_ref(), &mut buf) {
                    Ok(0) | Err(rustix::io::Errno::WOULDBLOCK) => {
                        // Drained (an inotify read never ends a file; 0 counts as empty).
                        ready.clear_ready();
                        break;
                    }
                    Ok(_) => got = true,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "reading inotify events");
                        self.broken = true;
                        break;
                    }
                }
            }
            if got {
                self.last = Instant::now();
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("atelier-wake-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn woke(w: &mut LogWake) -> bool {
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_write_in_a_watched_dir_wakes_and_nothing_else_does() {
        let (a, b, other) = (temp(), temp(), temp());
        let mut w = LogWake::new([a.as_path(), b.as_path()]).unwrap();
        std::fs::write(b.join("worker.log"), "line\n").unwrap();
        assert!(woke(&mut w).await, "a file written in a watched dir");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(b.join("worker.log"))
            .unwrap();
        f.write_all(b"more\n").unwrap();
        assert!(woke(&mut w).await, "an append to it");
        // Drained: a write elsewhere does not wake it.
        std::fs::write(other.join("worker.log"), "x").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), w.changed())
                .await
                .is_err()
        );
        for d in [a, b, other] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_link_or_a_file_is_not_watched() {
        let d = temp();
        let real = temp();
        std::os::unix::fs::symlink(&real, d.join("link")).unwrap();
        std::fs::write(d.join("file"), "x").unwrap();
        assert!(LogWake::new([d.join("link").as_path()]).is_none());
        assert!(LogWake::new([d.join("file").as_path()]).is_none());
        assert!(LogWake::new([d.join("missing").as_path()]).is_none());
        assert!(LogWake::new(std::iter::empty()).is_none());
        std::fs::remove_dir_all(d).unwrap();
        std::fs::remove_dir_all(real).unwrap();
    }
}
