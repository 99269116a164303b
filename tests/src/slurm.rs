//! The Slurm test cluster of `scripts/slurm.sh` (docs/slurm.md): nodes n1 and n2 on this host,
//! slurmctld and slurmd on 127.0.0.1, slurmrestd on a unix socket. `scripts/test.sh` brings it
//! up and exports what the script prints: `ATELIER_TEST_SLURM=1`, `SLURM_CONF` (which the Slurm
//! commands read) and `ATELIER_SLURM_REST` (the REST socket).
//!
//! Slurm 22.05 (Debian bookworm) shapes these helpers: `scontrol` has no `--json`, so a job's
//! fields come from `scontrol show job -o`; `squeue --json` ignores `-j` and `-t` and lists
//! every job slurmctld still knows (finished ones too, for `MinJobAge`), so it is filtered here.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a job may take to reach a wanted state: it catches hangs, it is no time limit
/// (the scheduler runs every few seconds at worst; CI is a busy 2-core machine).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// The cluster the environment names.
pub struct Cluster {
    pub conf: PathBuf,
    /// slurmrestd's socket (`ATELIER_SLURM_REST`), when it runs.
    pub rest_socket: Option<PathBuf>,
}

/// The test cluster, or `None` to skip with a line saying so; under CI a missing cluster fails
/// the test instead (CI runs the Slurm tests).
pub fn cluster() -> Option<Cluster> {
    let up = std::env::var("ATELIER_TEST_SLURM").is_ok_and(|v| v == "1");
    let conf = std::env::var_os("SLURM_CONF")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (true, Some(conf)) = (up, conf) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ATELIER_TEST_SLURM=1 and SLURM_CONF are not set: CI runs the Slurm tests \
             (scripts/test.sh brings the cluster up with scripts/slurm.sh and exports them)"
        );
        eprintln!(
            "skipped: no Slurm test cluster (run eval \"$(sudo bash scripts/slurm.sh up)\", or \
             scripts/test.sh)"
        );
        return None;
    };
    assert!(
        conf.is_file(),
        "SLURM_CONF={} is no file: is the cluster up? (bash scripts/slurm.sh status)",
        conf.display()
    );
    let rest_socket = std::env::var_os("ATELIER_SLURM_REST")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    Some(Cluster { conf, rest_socket })
}

/// A job as `scontrol show job -o` describes it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    /// `JobState`: PENDING, RUNNING, COMPLETED, CANCELLED, FAILED…
    pub state: String,
    /// `Reason`: why it pends (Resources, Priority, PartitionConfig…), `None` otherwise.
    pub reason: String,
    /// `NodeList`: the nodes it runs or ran on (`n[1-2]`), empty while it pends.
    pub nodes: String,
    pub fields: HashMap<String, String>,
}

/// A flavor a test node holds (2 CPUs, 4000 MB each).
pub const NODE_FLAVOR: &str =
    "[[flavors]]\nid = \"slurm-1-2\"\ntype = \"cpu\"\nvcpus = 1\nmemory_gib = 2\n";

impl Cluster {
    /// A gateway on the `slurm` backend of this cluster (partition `debug`, the tunnel on a
    /// loopback port) with the settings `toml` (flavors: [`NODE_FLAVOR`] for one a node
    /// holds) and `env` besides.
    pub async fn gateway(&self, toml: &str, env: &[(&str, &str)]) -> crate::Gateway {
        let tunnel = format!("127.0.0.1:{}", crate::free_port());
        let conf = self.conf.to_string_lossy().into_owned();
        let mut all = vec![
            ("ATELIER_BACKEND", "slurm"),
            ("ATELIER_TUNNEL_ADDR", tunnel.as_str()),
            ("ATELIER_SLURM_CONF", conf.as_str()),
            ("ATELIER_SLURM_PARTITION", "debug"),
        ];
        all.extend_from_slice(env);
        crate::Gateway::start_with_config(toml, &all).await
    }

    /// Runs the Slurm command `cmd` with `args` against this cluster: its stdout, or a panic
    /// with its stderr.
    pub fn run(&self, cmd: &str, args: &[&str]) -> String {
        let out = self
            .command(cmd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {cmd}: {e} (is Slurm installed?)"));
        assert!(
            out.status.success(),
            "{cmd} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cmd` with `SLURM_CONF` set to this cluster's.
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new(cmd);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `sbatch --parsable ARGS`: the new job, which is cancelled when the guard drops.
    pub fn sbatch(&self, args: &[&str]) -> JobGuard<'_> {
        let out = self.run("sbatch", &[&["--parsable"], args].concat());
        // --parsable prints "id" or "id;cluster".
        let id = out
            .trim()
            .split(';')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("sbatch printed no job id: {out:?}"));
        JobGuard { cluster: self, id }
    }

    /// The compute nodes of partition `debug` (the default) and their CPUs.
    pub fn nodes(&self) -> Vec<(String, u32)> {
        self.run("sinfo", &["-h", "-N", "-p", "debug", "-o", "%N %c"])
            .lines()
            .filter_map(|l| {
                let (name, cpus) = l.split_once(' ')?;
                Some((name.to_owned(), cpus.trim().parse().ok()?))
            })
            .collect()
    }

    /// The job as `squeue --json` lists it, `None` when slurmctld does not list it.
    pub fn squeue_job(&self, id: u64) -> Option<Value> {
        let out = self.run("squeue", &["--json"]);
        let all: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("squeue --json printed no JSON ({e}): {out}"));
        all["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("squeue --json has no jobs list: {out}"))
            .iter()
            .find(|j| j["job_id"].as_u64() == Some(id))
            .cloned()
    }

    /// The job's state as `squeue --json` lists it; panics when it is not listed.
    pub fn listed_state(&self, id: u64) -> String {
        let job = self
            .squeue_job(id)
            .unwrap_or_else(|| panic!("squeue --json does not list job {id}"));
        json_state(&job)
    }

    /// The job's fields from `scontrol show job -o`, `None` when slurmctld no longer knows it.
    pub fn job(&self, id: u64) -> Option<Job> {
        let out = self
            .command("scontrol")
            .args(["show", "job", "-o", &id.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running scontrol: {e}"));
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Invalid job id"),
                "scontrol show job {id} failed: {err}"
            );
            return None;
        }
        let fields = parse_show_line(&String::from_utf8_lossy(&out.stdout));
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        Some(Job {
            id,
            state: get("JobState"),
            reason: get("Reason"),
            nodes: get("NodeList"),
            fields,
        })
    }

    /// Polls the job (every 200 ms) until `done` holds for it; panics after [`JOB_TIMEOUT`]
    /// with its last fields and `what` was waited for.
    pub fn wait_job(&self, id: u64, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let job = self.job(id);
            if let Some(job) = job.as_ref().filter(|j| done(j)) {
                return job.clone();
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not become {what} in {JOB_TIMEOUT:?}: {job:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET path` on slurmrestd's socket: the status code and the JSON body.
    pub fn rest_get(&self, path: &str) -> (u16, Value) {
        let socket = self
            .rest_socket
            .as_ref()
            .expect("ATELIER_SLURM_REST is not set: slurmrestd is not up");
        let mut stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connecting to slurmrestd at {}: {e}", socket.display()));
        stream.set_read_timeout(Some(JOB_TIMEOUT)).unwrap();
        // One write: slurmrestd 22.05 parses what its first read got, and answers a request
        // cut in pieces (as `write!` sends it) with "HTTP/0.9 400 BAD REQUEST".
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: slurmrestd\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("slurmrestd answered no HTTP: {raw:?}"));
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("slurmrestd answered no status line: {head}"));
        // The body is Content-Length bytes: 22.05 writes a stray "Connection: Close" line
        // after the body of a request that asked to close.
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("slurmrestd answered no Content-Length: {head}"));
        let body = raw
            .get(split + 4..split + 4 + len)
            .unwrap_or_else(|| panic!("slurmrestd's body is shorter than {len} bytes"));
        let body = String::from_utf8_lossy(body);
        let body = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("slurmrestd answered no JSON ({e}): {body}"));
        (status, body)
    }
}

/// `job_state` of a `squeue --json` job: a string in 22.05, a list of flags in later releases.
pub fn json_state(job: &Value) -> String {
    match &job["job_state"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => panic!("squeue --json: a job_state that is neither text nor a list: {other}"),
    }
}

/// A job that is cancelled (`scancel`) when the guard drops, so a failing test leaves nothing
/// queued on the shared cluster.
pub struct JobGuard<'a> {
    cluster: &'a Cluster,
    pub id: u64,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .command("scancel")
            .arg(self.id.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `Key=Value Key=Value …` of `scontrol show … -o` as a map; a word that does not start with
/// a key (`Capital…=`) belongs to the value before it (values such as `Command=` may hold
/// spaces and `=`).
fn parse_show_line(line: &str) -> HashMap<String, String> {
    let is_key = |k: &str| {
        k.starts_with(|c: char| c.is_ascii_uppercase())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_/:".contains(c))
    };
    let mut fields = HashMap::new();
    let mut last: Option<String> = None;
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if is_key(k) => {
                fields.insert(k.to_owned(), v.to_owned());
                last = Some(k.to_owned());
            }
            _ => {
                if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                    v.push(' ');
                    v.push_str(word);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::parse_show_line;

    #[test]
    fn a_show_line_splits_into_fields_and_keeps_spaces_in_values() {
        let f = parse_show_line(
            "JobId=7 JobName=wrap JobState=PENDING Reason=PartitionConfig Dependency=(null) \
             NodeList= Command=/bin/sh -c x=1 WorkDir=/tmp/x y CPUs/Task=1 AllocNode:Sid=h:1\n",
        );
        assert_eq!(f["JobId"], "7");
        assert_eq!(f["JobState"], "PENDING");
        assert_eq!(f["Reason"], "PartitionConfig");
        assert_eq!(f["NodeList"], "");
        assert_eq!(f["Command"], "/bin/sh -c x=1");
        assert_eq!(f["WorkDir"], "/tmp/x y");
        assert_eq!(f["CPUs/Task"], "1");
        assert_eq!(f["AllocNode:Sid"], "h:1");
    }
}
