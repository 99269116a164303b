//! Resource limits for process notebooks: one control group per notebook, with the
//! flavor's CPUs, memory and process count.
//!
//! ```text
//! cgroup v2:  <gateway's cgroup>/atelier-notebooks/<id>/{cpu.max, memory.max, pids.max}
//! cgroup v1:  /sys/fs/cgroup/{cpu,memory,pids}/<gateway's cgroup>/atelier-notebooks/<id>/
//! ```
//!
//! The notebook's runtime enters its group between `fork` and `exec` (it writes `0` to
//! `cgroup.procs` through descriptors opened beforehand), so every process of the notebook,
//! also one that double-forks out of the runtime's tree, is counted and limited from its
//! first instruction, and is found and killed at stop. v2 is used where the gateway's own
//! group can delegate the three controllers; else v1 where its hierarchies are writable (as
//! on this project's CI machines).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::Flavor;

/// The directory under the gateway's own group that holds the notebooks' groups.
const PARENT: &str = "atelier-notebooks";
/// CFS period: quota = vCPUs × this (the kernel's default period, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub enum Cgroups {
    /// The parent directory in the unified hierarchy.
    V2(PathBuf),
    /// The parent directory in each of the cpu, memory and pids hierarchies.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        pids: PathBuf,
    },
}

/// Files opened before the notebook's runtime is spawned; [`Entry::enter`] runs in the child
/// between `fork` and `exec`.
pub struct Entry {
    procs: Vec<OwnedFd>,
}

impl Entry {
    /// Moves the calling process into the notebook's groups. Async-signal-safe: only
    /// `write(2)` on descriptors opened before the fork.
    pub fn enter(&self) -> std::io::Result<()> {
        for fd in &self.procs {
            // SAFETY: a write of a static buffer to an open descriptor.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// `(hierarchy root, the process's path in it)` for each cgroup mount of this process:
/// controllers ("" for the unified hierarchy) → absolute directory of our own group.
fn own_groups() -> std::io::Result<Vec<(String, PathBuf)>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // ... mount point (field 5) ... " - " fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let opts = r.nth(1).unwrap_or("");
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let root = left.split_whitespace().nth(3).unwrap_or("/");
        let controllers: Vec<&str> = match fstype {
            "cgroup2" => vec![""],
            "cgroup" => opts
                .split(',')
                .filter(|o| matches!(*o, "cpu" | "memory" | "pids"))
                .collect(),
            _ => continue,
        };
        for c in controllers {
            // /proc/self/cgroup: "hierarchy-id:controller,list:/path"; v2 has an empty list.
            let own = cgroup.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, list, path) = (f.next()?, f.next()?, f.next()?);
                let hit = if c.is_empty() {
                    list.is_empty()
                } else {
                    list.split(',').any(|x| x == c)
                };
                hit.then(|| path.to_owned())
            });
            let Some(own) = own else { continue };
            // The path is relative to the hierarchy's root as this mount shows it.
            let rel = own
                .strip_prefix(root)
                .unwrap_or(&own)
                .trim_start_matches('/');
            out.push((c.to_owned(), Path::new(mount_point).join(rel)));
        }
    }
    Ok(out)
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn mkdir(path: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(std::io::Error::new(
            e.kind(),
            format!("creating {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

impl Cgroups {
    /// Finds where notebooks' groups can be made, and makes their parent; the error says
    /// why none can.
    pub fn detect() -> Result<Cgroups, String> {
        let groups = own_groups().map_err(|e| format!("reading this process's cgroups: {e}"))?;
        let v2 = groups.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p);
        let mut v2_error = None;
        if let Some(own) = v2 {
            match Self::v2_parent(own) {
                Ok(parent) => return Ok(Cgroups::V2(parent)),
                Err(e) => v2_error = Some(e),
            }
        }
        let find = |c: &str| groups.iter().find(|(x, _)| x == c).map(|(_, p)| p.clone());
        match (find("cpu"), find("memory"), find("pids")) {
            (Some(cpu), Some(memory), Some(pids)) => {
                let (cpu, memory, pids) =
                    (cpu.join(PARENT), memory.join(PARENT), pids.join(PARENT));
                for d in [&cpu, &memory, &pids] {
                    mkdir(d).map_err(|e| format!("cgroup v1: {e}"))?;
                }
                Ok(Cgroups::V1 { cpu, memory, pids })
            }
            _ => Err(v2_error.unwrap_or_else(|| {
                "no cgroup hierarchy with the cpu, memory and pids controllers is mounted".into()
            })),
        }
    }

    /// v2: `<own>/atelier-notebooks` with cpu, memory and pids enabled for its children.
    /// A group with processes cannot enable controllers for children, so the gateway first
    /// moves itself into a leaf of its own (`<own>/gateway`), as systemd's delegation asks.
    fn v2_parent(own: &Path) -> Result<PathBuf, String> {
        let available = std::fs::read_to_string(own.join("cgroup.controllers"))
            .map_err(|e| format!("cgroup v2: {e}"))?;
        let have = |c: &str| available.split_whitespace().any(|x| x == c);
        if !(have("cpu") && have("memory") && have("pids")) {
            return Err(format!(
                "cgroup v2: the gateway's group {} does not delegate the cpu, memory and pids controllers (it has: {:?})",
                own.display(),
                available.trim()
            ));
        }
        let enabled =
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap_or_default();
        if !["cpu", "memory", "pids"]
            .iter()
            .all(|c| enabled.split_whitespace().any(|x| x == *c))
        {
            let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
            if !procs.trim().is_empty() {
                let leaf = own.join("gateway");
                mkdir(&leaf).map_err(|e| format!("cgroup v2: {e}"))?;
                for pid in procs.split_whitespace() {
                    // Threads of other processes in the group move with their process.
                    let _ = write(&leaf.join("cgroup.procs"), pid);
                }
            }
            write(&own.join("cgroup.subtree_control"), "+cpu +memory +pids")
                .map_err(|e| format!("cgroup v2: enabling controllers: {e}"))?;
        }
        let parent = own.join(PARENT);
        mkdir(&parent).map_err(|e| format!("cgroup v2: {e}"))?;
        write(&parent.join("cgroup.subtree_control"), "+cpu +memory +pids")
            .map_err(|e| format!("cgroup v2: enabling controllers: {e}"))?;
        Ok(parent)
    }

    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V2(p) => vec![p.join(id)],
            Cgroups::V1 { cpu, memory, pids } => {
                vec![cpu.join(id), memory.join(id), pids.join(id)]
            }
        }
    }

    /// Makes (or reuses) notebook `id`'s groups with `flavor`'s limits, and opens what its
    /// runtime writes to enter them.
    pub fn prepare(&self, id: &str, flavor: &Flavor) -> std::io::Result<Entry> {
        let memory = u64::from(flavor.memory_gib) << 30;
        let quota = u64::from(flavor.vcpus) * CPU_PERIOD_US;
        let pids = flavor.pids().to_string();
        match self {
            Cgroups::V2(p) => {
                let d = p.join(id);
                mkdir(&d)?;
                write(&d.join("memory.max"), &memory.to_string())?;
                // No swap beyond the limit: the limit means what it says.
                let _ = write(&d.join("memory.swap.max"), "0");
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&d.join("pids.max"), &pids)?;
            }
            Cgroups::V1 {
                cpu,
                memory: mem,
                pids: pid,
            } => {
                let (c, m, p) = (cpu.join(id), mem.join(id), pid.join(id));
                for d in [&c, &m, &p] {
                    mkdir(d)?;
                }
                write(&m.join("memory.limit_in_bytes"), &memory.to_string())?;
                let _ = write(&m.join("memory.memsw.limit_in_bytes"), &memory.to_string());
                write(&c.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&c.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(&p.join("pids.max"), &pids)?;
            }
        }
        let mut procs = Vec::new();
        for d in self.dirs(id) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}/cgroup.procs: {e}", d.display()))
                })?;
            procs.push(OwnedFd::from(f));
        }
        Ok(Entry { procs })
    }

    /// The processes in notebook `id`'s groups now.
    pub fn pids(&self, id: &str) -> Vec<i32> {
        let Some(d) = self.dirs(id).into_iter().next_back() else {
            return Vec::new();
        };
        std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills every process left in notebook `id`'s groups and removes them (missing already
    /// is fine). Bounded: a group that keeps forking is frozen out by its pids limit.
    pub async fn remove(&self, id: &str) {
        for _ in 0..50 {
            let left = self.pids(id);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // The pid is in the notebook's own group.
                crate::procs::signal(pid, rustix::process::Signal::KILL);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for d in self.dirs(id) {
            if let Err(e) = std::fs::remove_dir(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(cgroup = %d.display(), error = %e, "removing a notebook's cgroup");
            }
        }
    }

    /// The group's memory limit in bytes.
    pub fn memory_limit(&self, id: &str) -> Option<u64> {
        let path = match self {
            Cgroups::V2(p) => p.join(id).join("memory.max"),
            Cgroups::V1 { memory, .. } => memory.join(id).join("memory.limit_in_bytes"),
        };
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(pids: u32) -> Flavor {
        Flavor {
            id: "t".into(),
            kind: "cpu".into(),
            vcpus: 1,
            memory_gib: 1,
            accelerators: None,
            max_pids: Some(pids),
            description: String::new(),
            backend: None,
            slurm: None,
        }
    }

    /// Where this machine has cgroups the tests can write (root on v1 or a delegated v2),
    /// a child that enters a notebook's group is limited and killed with it.
    #[tokio::test]
    async fn a_child_enters_its_group_before_exec_and_dies_with_it() {
        let cg = match Cgroups::detect() {
            Ok(cg) => cg,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none() || unsafe { libc::geteuid() } != 0,
                    "CI runs as root and must have cgroups: {e}"
                );
                return;
            }
        };
        let id = format!("test-{}", uuid::Uuid::new_v4());
        let entry = cg.prepare(&id, &flavor(64)).unwrap();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("600");
        // SAFETY: Entry::enter only writes to descriptors opened before the fork.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || entry.enter());
        }
        let mut child = cmd.spawn().unwrap();
        assert_eq!(cg.pids(&id), vec![child.id() as i32]);
        assert_eq!(cg.memory_limit(&id), Some(1 << 30));
        cg.remove(&id).await;
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(cg.pids(&id).is_empty());
        assert!(cg.dirs(&id).iter().all(|d| !d.exists()));
    }
}
