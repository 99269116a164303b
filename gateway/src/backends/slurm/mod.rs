//! The `slurm` backend's side of the cluster: Slurm's own commands (`sbatch`, `scontrol`,
//! `scancel`), run with the operator's `SLURM_CONF`.
//!
//! Why the commands and not slurmrestd: a job must run as the gateway's service user (the
//! account the operator gives Atelier on the cluster). slurmrestd with `rest_auth/local`
//! runs every job as the user slurmrestd itself runs as (it refuses root; `nobody` on the
//! test cluster), and with JWT it refuses tokens for root and service accounts alike; the
//! commands need only the munge key and the client configuration every login node has.
//! Slurm 22.05's `scontrol` has no `--json`: a job is read from `scontrol show job -o`
//! (one line of `Key=Value`), parsed here; `squeue --json` lists every job slurmctld
//! knows whatever filter it is given, so it is not used per job.
//!
//! What reaches the shell is built here only: names and partitions are checked against a
//! short alphabet, environment values are single-quoted, and the script goes to `sbatch`
//! on its standard input (no file another user could change between write and submit).

pub mod backend;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A Slurm command that takes longer than this is given up (slurmctld down or wedged).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a command's output kept.
const OUTPUT_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// What the caller asked cannot be submitted (a name, a partition, a variable).
    #[error("{0}")]
    Invalid(String),
    /// A command failed or could not run; the message names it and what it said.
    #[error("{0}")]
    Command(String),
}

/// Where the Slurm commands are and which cluster they talk to.
#[derive(Debug, Clone, Default)]
pub struct SlurmCli {
    /// `SLURM_CONF` for every command (none: Slurm's default, `/etc/slurm/slurm.conf`).
    pub conf: Option<PathBuf>,
    /// The directory holding `sbatch`, `scontrol`, `scancel` (none: `PATH`).
    pub bin_dir: Option<PathBuf>,
}

/// One batch job to submit.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// `--job-name`: what `squeue` shows (`[A-Za-z0-9_.-]`, at most 128).
    pub name: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// `--nodes` and `--ntasks` (at least 1 each).
    pub nodes: u32,
    pub ntasks: u32,
    pub cpus_per_task: u32,
    /// `--mem` per node, in MiB.
    pub mem_mb: Option<u64>,
    /// `--gres=gpu:N` per node.
    pub gpus: u32,
    /// `--time`, in minutes (none: the partition's default).
    pub time_limit_minutes: Option<u64>,
    /// `--chdir`, and where `--output` goes (both absolute).
    pub workdir: PathBuf,
    pub output: PathBuf,
    /// `--requeue` (a preempted or failed node's job runs again) or `--no-requeue`.
    pub requeue: bool,
    /// `--array`, e.g. `0-7%2`.
    pub array: Option<String>,
    /// `--signal`: the signal sent this many seconds before the time limit, to the batch
    /// shell (`B:`), e.g. `B:TERM@60`.
    pub signal: Option<String>,
    /// Exported in the script (names `[A-Za-z_][A-Za-z0-9_]*`).
    pub env: Vec<(String, String)>,
    /// The script's body, after the `#!/bin/sh` line and the exports.
    pub body: String,
}

/// A job's state (`JobState`), as Slurm names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Configuring,
    Running,
    Suspended,
    Completing,
    Completed,
    Cancelled,
    Failed,
    Timeout,
    Preempted,
    NodeFail,
    OutOfMemory,
    BootFail,
    Deadline,
    Requeued,
    RequeueHold,
    RequeueFed,
    Resizing,
    Revoked,
    Signaling,
    SpecialExit,
    StageOut,
    Stopped,
    /// A state this build does not know.
    Other(String),
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        match s {
            "PENDING" => JobState::Pending,
            "CONFIGURING" => JobState::Configuring,
            "RUNNING" => JobState::Running,
            "SUSPENDED" => JobState::Suspended,
            "COMPLETING" => JobState::Completing,
            "COMPLETED" => JobState::Completed,
            "CANCELLED" => JobState::Cancelled,
            "FAILED" => JobState::Failed,
            "TIMEOUT" => JobState::Timeout,
            "PREEMPTED" => JobState::Preempted,
            "NODE_FAIL" => JobState::NodeFail,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "BOOT_FAIL" => JobState::BootFail,
            "DEADLINE" => JobState::Deadline,
            "REQUEUED" => JobState::Requeued,
            "REQUEUE_HOLD" => JobState::RequeueHold,
            "REQUEUE_FED" => JobState::RequeueFed,
            "RESIZING" => JobState::Resizing,
            "REVOKED" => JobState::Revoked,
            "SIGNALING" => JobState::Signaling,
            "SPECIAL_EXIT" => JobState::SpecialExit,
            "STAGE_OUT" => JobState::StageOut,
            "STOPPED" => JobState::Stopped,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Nothing of the job runs any more, and it will not run again by itself.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Cancelled
                | JobState::Failed
                | JobState::Timeout
                | JobState::Preempted
                | JobState::NodeFail
                | JobState::OutOfMemory
                | JobState::BootFail
                | JobState::Deadline
                | JobState::SpecialExit
                | JobState::Revoked
        )
    }

    /// Waiting for the scheduler (it has never run, or runs again after a requeue).
    pub fn is_queued(&self) -> bool {
        matches!(
            self,
            JobState::Pending
                | JobState::Requeued
                | JobState::RequeueHold
                | JobState::RequeueFed
                | JobState::Configuring
        )
    }
}

/// A job as `scontrol show job -o` describes it.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub id: u64,
    pub state: JobState,
    /// `Reason`, when there is one (`None` in Slurm's text is none here).
    pub reason: Option<String>,
    /// `NodeList`: where it runs or ran (`n[1-2]`); empty while it pends.
    pub nodes: String,
    /// `BatchHost`: the node running the batch script.
    pub batch_host: Option<String>,
    /// `ExitCode=code:signal`.
    pub exit: Option<(i32, i32)>,
    /// `Restarts`: how many times it was requeued.
    pub restarts: u32,
    /// Every field, as given.
    pub fields: BTreeMap<String, String>,
}

/// A Slurm duration (`RunTime`, `TimeLimit`): `[D-]HH:MM:SS`, `MM:SS` or `MM`; `None` for
/// `UNLIMITED` and what is not one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, text),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let secs = match parts[..] {
        [h, m, s] => h * 3600 + m * 60 + s,
        [m, s] if days == 0 => m * 60 + s,
        [m] if days == 0 => m * 60,
        [h] => h * 3600,
        [h, m] => h * 3600 + m * 60,
        _ => return None,
    };
    Some(Duration::from_secs(days * 86_400 + secs))
}

impl JobInfo {
    /// How long it has run (`RunTime`).
    pub fn run_time(&self) -> Option<Duration> {
        self.fields.get("RunTime").and_then(|t| parse_duration(t))
    }

    /// Why a queued job waits, in words for its owner (the scheduler's reason named).
    pub fn waiting_for(&self) -> Option<String> {
        if !self.state.is_queued() {
            return None;
        }
        self.reason.as_deref().map(pending_reason)
    }
}

/// The scheduler's reason for a pending job, said for a person: "waiting for resources",
/// "priority", and the rest (`PartitionConfig` means it asks more than the partition gives).
pub fn pending_reason(reason: &str) -> String {
    let said = match reason {
        "Resources" => "waiting for resources (the nodes it needs are busy)",
        "Priority" => "waiting behind jobs of higher priority",
        "Dependency" => "waiting for the jobs it depends on",
        "BeginTime" => "waiting for its start time",
        "PartitionConfig" => {
            "it asks more than its partition allows (CPUs, memory, GPUs, nodes or time)"
        }
        "PartitionDown" | "PartitionInactive" => "its partition is not taking jobs now",
        "PartitionNodeLimit" => "it asks more nodes than its partition allows",
        "PartitionTimeLimit" => "its time limit is beyond its partition's",
        "ReqNodeNotAvail" => "a node it needs is not available (down, drained or reserved)",
        "NodeDown" => "a node it needs is down",
        "JobHeldUser" => "held by its owner",
        "JobHeldAdmin" => "held by an administrator",
        "BadConstraints" => "its constraints cannot be met by any node",
        "Reservation" => "waiting for its reservation",
        "QOSMaxJobsPerUserLimit" | "AssocMaxJobsLimit" | "QOSMaxSubmitJobPerUserLimit" => {
            "its owner's account has as many jobs running as it may"
        }
        "QOSMaxCpuPerUserLimit" | "AssocGrpCpuLimit" | "QOSGrpCpuLimit" => {
            "its account's CPU limit is reached"
        }
        "QOSGrpGRES" | "AssocGrpGRES" | "QOSMaxGRESPerUser" => "its account's GPU limit is reached",
        "Licenses" => "waiting for licenses",
        "launch_failed_requeued_held" => "held after its launch failed",
        _ => "",
    };
    if said.is_empty() {
        format!("queued by Slurm ({reason})")
    } else {
        format!("{said} (Slurm: {reason})")
    }
}

/// The shell lines a training job's task runs first (under `srun`, one task per worker): the
/// rendezvous variables of the local backends (`launch::environment`), filled from Slurm's
/// own: the rank from `SLURM_PROCID`, the world from `SLURM_NTASKS`, the workers' hosts
/// from the job's node list, each node by its `NodeAddr` (a node's name need not resolve;
/// its address is what slurmd reaches), the master the first of them. `MASTER_PORT` and
/// the rest of the job's environment come from the script's exports.
pub fn rendezvous_prelude() -> &'static str {
    r#"addrs=""
for n in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
  a=$(scontrol show node "$n" -o | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
  addrs="$addrs${addrs:+,}${a:-$n}"
done
export VC_WORKER_HOSTS="$addrs" MASTER_ADDR="${addrs%%,*}"
export RANK="$SLURM_PROCID" VC_TASK_INDEX="$SLURM_PROCID" VK_TASK_INDEX="$SLURM_PROCID" MA_TASK_INDEX="$SLURM_PROCID"
export WORLD_SIZE="$SLURM_NTASKS" VC_WORKER_NUM="$SLURM_NTASKS" MA_NUM_HOSTS="$SLURM_NTASKS"
export LOCAL_RANK="${SLURM_LOCALID:-0}" MA_CURRENT_IP=$(echo "$addrs" | cut -d, -f$((SLURM_NODEID + 1)))
"#
}

/// `scontrol show job -o`'s one line as fields. A value may hold spaces (a command line, a
/// comment): a token that does not start a new `Key=` goes on with the value before it.
pub fn parse_show_job(line: &str) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for token in line.trim().split(' ').filter(|t| !t.is_empty()) {
        let key = token.split_once('=').map(|(k, _)| k).filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '/' | '.'))
                && k.starts_with(|c: char| c.is_ascii_uppercase())
        });
        match (key, &last) {
            (Some(k), _) => {
                let v = &token[k.len() + 1..];
                fields.insert(k.to_string(), v.to_string());
                last = Some(k.to_string());
            }
            (None, Some(k)) => {
                if let Some(v) = fields.get_mut(k) {
                    v.push(' ');
                    v.push_str(token);
                }
            }
            (None, None) => {}
        }
    }
    fields
}

fn job_info(id: u64, fields: BTreeMap<String, String>) -> JobInfo {
    let get = |k: &str| {
        fields
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && *v != "(null)")
    };
    let exit = get("ExitCode").and_then(|v| {
        let (c, s) = v.split_once(':')?;
        Some((c.parse().ok()?, s.parse().ok()?))
    });
    JobInfo {
        id,
        state: JobState::parse(get("JobState").unwrap_or("")),
        reason: get("Reason").filter(|r| *r != "None").map(str::to_string),
        nodes: get("NodeList").unwrap_or("").to_string(),
        batch_host: get("BatchHost").map(str::to_string),
        exit,
        restarts: get("Restarts").and_then(|r| r.parse().ok()).unwrap_or(0),
        fields,
    }
}

fn check_word(what: &str, v: &str) -> Result<(), SlurmError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SlurmError::Invalid(format!(
            "{what} {v:?}: only letters, digits, '_', '.' and '-', at most 128"
        )))
    }
}

fn check_path(what: &str, p: &std::path::Path) -> Result<String, SlurmError> {
    let s = p.to_str().unwrap_or("");
    if !p.is_absolute() || s.is_empty() || s.chars().any(|c| c.is_control() || c == '%') {
        return Err(SlurmError::Invalid(format!(
            "{what} {}: an absolute path without control characters or '%'",
            p.display()
        )));
    }
    Ok(s.to_string())
}

/// `'v'` for the shell, whatever `v` holds.
pub(crate) fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

impl Submission {
    /// `sbatch`'s arguments and the script, or what is wrong with the submission.
    pub fn to_command(&self) -> Result<(Vec<String>, String), SlurmError> {
        check_word("job name", &self.name)?;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.name),
            format!("--chdir={}", check_path("work dir", &self.workdir)?),
            format!("--output={}", check_path("output", &self.output)?),
            format!("--nodes={}", self.nodes.max(1)),
            format!("--ntasks={}", self.ntasks.max(1)),
            format!("--cpus-per-task={}", self.cpus_per_task.max(1)),
            // The job's environment is the script's, not the gateway's.
            "--export=NONE".to_string(),
            if self.requeue {
                "--requeue".to_string()
            } else {
                "--no-requeue".to_string()
            },
        ];
        for (flag, v) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
        ] {
            if let Some(v) = v {
                check_word(flag, v)?;
                args.push(format!("--{flag}={v}"));
            }
        }
        if let Some(mb) = self.mem_mb {
            args.push(format!("--mem={mb}M"));
        }
        if self.gpus > 0 {
            args.push(format!("--gres=gpu:{}", self.gpus));
        }
        if let Some(m) = self.time_limit_minutes {
            args.push(format!("--time={}", m.max(1)));
        }
        if let Some(a) = &self.array {
            if a.is_empty()
                || !a
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '-' | ',' | '%' | ':'))
            {
                return Err(SlurmError::Invalid(format!(
                    "array {a:?}: indexes like 0-7 or 1,3,5, a step after ':' and a limit after '%'"
                )));
            }
            args.push(format!("--array={a}"));
        }
        if let Some(s) = &self.signal {
            if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '@'))
            {
                return Err(SlurmError::Invalid(format!("signal {s:?}: like B:TERM@60")));
            }
            args.push(format!("--signal={s}"));
        }
        let mut script = String::from("#!/bin/sh\n");
        // `--export=NONE` gives the job no PATH: a plain one unless the caller sets its own.
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            script.push_str(
                "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
            );
        }
        for (k, v) in &self.env {
            let name_ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok || v.contains('\0') {
                return Err(SlurmError::Invalid(format!(
                    "environment variable {k:?}: a name of letters, digits and '_' and a value \
                     without NUL"
                )));
            }
            script.push_str(&format!("export {k}={}\n", quote(v)));
        }
        // The job's steps (`srun`) get the script's environment, not sbatch's NONE again.
        script.push_str("export SLURM_EXPORT_ENV=ALL\n");
        script.push_str(&self.body);
        if !script.ends_with('\n') {
            script.push('\n');
        }
        Ok((args, script))
    }
}

impl SlurmCli {
    fn command(&self, name: &str) -> Command {
        let program = match &self.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        };
        let mut c = Command::new(program);
        if let Some(conf) = &self.conf {
            c.env("SLURM_CONF", conf);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `name args` (with `input` on its standard input): its standard output, or an
    /// error naming the command and what it said.
    async fn run(
        &self,
        name: &str,
        args: &[String],
        input: Option<&str>,
    ) -> Result<Out, SlurmError> {
        let mut c = self.command(name);
        c.args(args).stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let what = format!("{name} {}", args.join(" "));
        let mut child = c.spawn().map_err(|e| {
            SlurmError::Command(format!(
                "{name}: cannot run it: {e} (are Slurm's commands installed on the gateway's host?)"
            ))
        })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .await
                .map_err(|e| SlurmError::Command(format!("{name}: writing its input: {e}")))?;
        }
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                SlurmError::Command(format!(
                    "{what}: no answer in {}s (is slurmctld up?)",
                    COMMAND_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| SlurmError::Command(format!("{what}: {e}")))?;
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(OUTPUT_BYTES)]).into_owned();
        Ok(Out {
            ok: out.status.success(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr).trim().to_string(),
            what,
        })
    }

    /// Submits a batch job: its id.
    pub async fn submit(&self, s: &Submission) -> Result<u64, SlurmError> {
        let mut s = s.clone();
        // The job's own Slurm commands (`srun`, `scontrol`) read the same configuration.
        if let Some(conf) = self.conf.as_ref().and_then(|c| c.to_str())
            && !s.env.iter().any(|(k, _)| k == "SLURM_CONF")
        {
            s.env.push(("SLURM_CONF".into(), conf.to_string()));
        }
        let (args, script) = s.to_command()?;
        let out = self.run("sbatch", &args, Some(&script)).await?.ok()?;
        // `--parsable`: "<id>" or "<id>;<cluster>".
        let first = out.trim().split(';').next().unwrap_or("");
        first
            .parse()
            .map_err(|_| SlurmError::Command(format!("sbatch answered {out:?}, not a job id")))
    }

    /// The job as slurmctld knows it; `None` once it has forgotten it (`MinJobAge` after it
    /// ended) or never knew it.
    pub async fn job(&self, id: u64) -> Result<Option<JobInfo>, SlurmError> {
        let args = vec!["show".into(), "job".into(), "-o".into(), id.to_string()];
        let out = self.run("scontrol", &args, None).await?;
        if !out.ok {
            if out.stderr.contains("Invalid job id") {
                return Ok(None);
            }
            return Err(out.failure());
        }
        // An array job lists one line per task; the first is the one asked for.
        let line = out
            .stdout
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let fields = parse_show_job(line);
        if !fields.contains_key("JobState") {
            return Err(SlurmError::Command(format!(
                "scontrol show job {id} answered {:?}, no JobState",
                line.chars().take(200).collect::<String>()
            )));
        }
        Ok(Some(job_info(id, fields)))
    }

    /// Sends `signal` (`TERM`, `KILL`, …) to the job's every step and its batch shell; a
    /// job that has ended already is no error.
    pub async fn signal(&self, id: u64, signal: &str) -> Result<(), SlurmError> {
        check_word("signal", signal)?;
        let args = vec![
            "--full".to_string(),
            format!("--signal={signal}"),
            id.to_string(),
        ];
        self.cancel_with(args).await
    }

    /// Sets the job's time limit, in minutes (raising it needs an operator's rights on the
    /// cluster: the gateway's service user must be one to renew notebooks' leases).
    pub async fn set_time_limit(&self, id: u64, minutes: u64) -> Result<(), SlurmError> {
        let args = vec![
            "update".to_string(),
            format!("JobId={id}"),
            format!("TimeLimit={}", minutes.max(1)),
        ];
        self.run("scontrol", &args, None).await?.ok().map(|_| ())
    }

    /// Cancels the job (Slurm's own sequence: SIGTERM, then SIGKILL after `KillWait`).
    pub async fn cancel(&self, id: u64) -> Result<(), SlurmError> {
        self.cancel_with(vec![id.to_string()]).await
    }

    async fn cancel_with(&self, args: Vec<String>) -> Result<(), SlurmError> {
        let out = self.run("scancel", &args, None).await?;
        if out.ok || out.stderr.contains("already completing or completed") {
            return Ok(());
        }
        if out.stderr.contains("Invalid job id") {
            return Ok(());
        }
        Err(out.failure())
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
    what: String,
}

impl Out {
    fn failure(&self) -> SlurmError {
        SlurmError::Command(format!(
            "{} failed: {}",
            self.what,
            if self.stderr.is_empty() {
                "(it said nothing)"
            } else {
                &self.stderr
            }
        ))
    }

    fn ok(self) -> Result<String, SlurmError> {
        if self.ok {
            Ok(self.stdout)
        } else {
            Err(self.failure())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_durations_read() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("00:01:23"), Some(83));
        assert_eq!(d("1-02:03:04"), Some(86_400 + 7384));
        assert_eq!(d("05:30"), Some(330));
        assert_eq!(d("90"), Some(5400));
        assert_eq!(d("2-12"), Some(2 * 86_400 + 12 * 3600));
        assert_eq!(d("UNLIMITED"), None);
        assert_eq!(d("1:2:3:4"), None);
    }

    /// A line of `scontrol show job -o` from the test cluster (Slurm 22.05), shortened.
    const RUNNING: &str = "JobId=42 JobName=nb-1 UserId=root(0) GroupId=root(0) MCS_label=N/A \
        Priority=1 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None \
        Dependency=(null) Requeue=1 Restarts=2 BatchFlag=1 Reboot=0 ExitCode=0:0 \
        RunTime=00:00:03 TimeLimit=01:00:00 Partition=debug NodeList=n[1-2] BatchHost=n1 \
        NumNodes=2 NumCPUs=4 Command=/opt/a dir/run.sh --flag x WorkDir=/srv/work dir \
        Comment=made by atelier StdOut=/srv/out.log";

    #[test]
    fn a_show_job_line_parses_with_spaces_in_values() {
        let f = parse_show_job(RUNNING);
        assert_eq!(f["JobState"], "RUNNING");
        assert_eq!(f["Command"], "/opt/a dir/run.sh --flag x");
        assert_eq!(f["WorkDir"], "/srv/work dir");
        assert_eq!(f["Comment"], "made by atelier");
        let j = job_info(42, f);
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.reason, None);
        assert_eq!(j.nodes, "n[1-2]");
        assert_eq!(j.batch_host.as_deref(), Some("n1"));
        assert_eq!(j.exit, Some((0, 0)));
        assert_eq!(j.restarts, 2);
        assert!(j.waiting_for().is_none());
    }

    #[test]
    fn a_pending_job_says_why_it_waits() {
        let j = job_info(
            7,
            parse_show_job("JobId=7 JobState=PENDING Reason=Resources NodeList=(null)"),
        );
        assert!(j.state.is_queued() && !j.state.is_final());
        assert_eq!(j.nodes, "");
        let why = j.waiting_for().unwrap();
        assert!(why.contains("waiting for resources"), "{why}");
        assert!(pending_reason("Priority").contains("priority"));
        assert_eq!(
            pending_reason("Frobnicated"),
            "queued by Slurm (Frobnicated)"
        );
        for s in [
            "COMPLETED",
            "CANCELLED",
            "FAILED",
            "TIMEOUT",
            "PREEMPTED",
            "NODE_FAIL",
        ] {
            assert!(JobState::parse(s).is_final(), "{s}");
        }
        assert_eq!(
            JobState::parse("WHATEVER"),
            JobState::Other("WHATEVER".into())
        );
    }

    fn submission() -> Submission {
        Submission {
            name: "atelier-nb-1".into(),
            nodes: 1,
            ntasks: 1,
            cpus_per_task: 2,
            workdir: "/srv/work".into(),
            output: "/srv/out.log".into(),
            body: "exec true".into(),
            ..Submission::default()
        }
    }

    /// Nothing a user names reaches `sbatch`'s options or the script's shell unquoted.
    #[test]
    fn names_and_values_cannot_inject_options_or_shell() {
        let mut s = submission();
        s.env = vec![("TOKEN".into(), "a'b; rm -rf / $(x) `y`".into())];
        let (args, script) = s.to_command().unwrap();
        assert!(args.contains(&"--export=NONE".to_string()));
        assert!(
            script.contains(r"export TOKEN='a'\''b; rm -rf / $(x) `y`'"),
            "{script}"
        );
        let refused = |f: &dyn Fn(&mut Submission)| {
            let mut s = submission();
            f(&mut s);
            s.to_command().unwrap_err().to_string()
        };
        assert!(refused(&|s| s.name = "x --uid=0".into()).contains("job name"));
        assert!(refused(&|s| s.partition = Some("debug,urgent".into())).contains("partition"));
        assert!(refused(&|s| s.account = Some("".into())).contains("account"));
        assert!(refused(&|s| s.env = vec![("A B".into(), "1".into())]).contains("A B"));
        assert!(refused(&|s| s.env = vec![("A".into(), "\0".into())]).contains("NUL"));
        assert!(refused(&|s| s.workdir = "relative".into()).contains("work dir"));
        assert!(refused(&|s| s.output = "/srv/%j.log".into()).contains("output"));
        assert!(refused(&|s| s.array = Some("0-3 --uid=0".into())).contains("array"));
        assert!(refused(&|s| s.signal = Some("B:TERM@60 x".into())).contains("signal"));
    }

    fn cluster() -> Option<SlurmCli> {
        // The test cluster of scripts/slurm.sh, as scripts/test.sh exports it.
        #[allow(clippy::disallowed_methods)]
        let (up, conf) = (
            std::env::var("ATELIER_TEST_SLURM").is_ok_and(|v| v == "1"),
            std::env::var_os("SLURM_CONF"),
        );
        match (up, conf) {
            (true, Some(conf)) => Some(SlurmCli {
                conf: Some(conf.into()),
                bin_dir: None,
            }),
            _ => {
                #[allow(clippy::disallowed_methods)]
                let ci = std::env::var_os("CI").is_some();
                assert!(
                    !ci,
                    "ATELIER_TEST_SLURM=1 and SLURM_CONF are not set: CI runs the Slurm tests"
                );
                eprintln!("no Slurm test cluster: skipped");
                None
            }
        }
    }

    async fn wait(cli: &SlurmCli, id: u64, what: &str, f: impl Fn(&JobInfo) -> bool) -> JobInfo {
        let mut last = None;
        for _ in 0..900 {
            if let Some(j) = cli.job(id).await.unwrap() {
                if f(&j) {
                    return j;
                }
                last = Some(j);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("job {id} never became {what}: {last:?}");
    }

    /// Against the test cluster: a job submitted runs with its exports, a job that asks
    /// more than the cluster has waits with the scheduler's reason, a cancel ends a running
    /// job, and a job slurmctld does not know is none.
    #[tokio::test]
    async fn submit_follow_and_cancel_on_the_test_cluster() {
        let Some(cli) = cluster() else { return };
        let dir = std::env::temp_dir().join(format!("atelier-slurm-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.log");
        let mut s = submission();
        s.cpus_per_task = 1;
        s.workdir = dir.clone();
        s.output = out.clone();
        s.env = vec![("GREETING".into(), "it's here".into())];
        s.body = "echo \"$GREETING on $SLURMD_NODENAME\"\nexec sleep 300".into();
        let id = cli.submit(&s).await.unwrap();
        let running = wait(&cli, id, "RUNNING", |j| j.state == JobState::Running).await;
        assert!(!running.nodes.is_empty());
        // Its output names what it was given.
        for _ in 0..100 {
            if std::fs::read_to_string(&out).is_ok_and(|t| t.contains("on ")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let said = std::fs::read_to_string(&out).unwrap();
        assert!(said.starts_with("it's here on n"), "{said}");

        // More CPUs than the cluster has: queued, with a reason said for a person.
        let mut big = submission();
        big.name = "atelier-too-big".into();
        big.workdir = dir.clone();
        big.output = dir.join("big.log");
        // The test cluster has 4 CPUs in all: 5 tasks pend (PartitionConfig), where a far
        // larger ask is refused at submission.
        big.ntasks = 5;
        let big_id = cli.submit(&big).await.unwrap();
        let pending = wait(&cli, big_id, "PENDING with a reason", |j| {
            j.state == JobState::Pending && j.reason.is_some()
        })
        .await;
        let why = pending.waiting_for().unwrap();
        assert!(why.contains("Slurm:"), "{why}");
        eprintln!("a too-big job waits: {why}");

        cli.cancel(id).await.unwrap();
        cli.cancel(big_id).await.unwrap();
        let ended = wait(&cli, id, "CANCELLED", |j| j.state.is_final()).await;
        assert_eq!(ended.state, JobState::Cancelled);
        // Cancelling again, or a job slurmctld never knew: no error, none.
        cli.cancel(id).await.unwrap();
        assert!(cli.job(999_999_999).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A 2-task job on the test cluster's two nodes: each task gets its rank, the world, and
    /// the same master, an address, as a torch.distributed rendezvous needs.
    #[tokio::test]
    async fn a_two_task_job_gets_the_rendezvous_of_its_ranks() {
        let Some(cli) = cluster() else { return };
        let dir = std::env::temp_dir().join(format!("atelier-slurm-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = submission();
        s.name = "atelier-rendezvous".into();
        s.nodes = 2;
        s.ntasks = 2;
        s.cpus_per_task = 1;
        s.workdir = dir.clone();
        s.output = dir.join("out.log");
        s.body = format!(
            "srun --ntasks-per-node=1 sh -c '{}echo \"rank=$RANK world=$WORLD_SIZE master=$MASTER_ADDR \
             hosts=$VC_WORKER_HOSTS index=$VC_TASK_INDEX me=$MA_CURRENT_IP\" > {}/rank-$SLURM_PROCID'",
            rendezvous_prelude().replace('\'', r"'\''"),
            dir.display()
        );
        let id = cli.submit(&s).await.unwrap();
        let ended = wait(&cli, id, "ended", |j| j.state.is_final()).await;
        let read =
            |r: u32| std::fs::read_to_string(dir.join(format!("rank-{r}"))).unwrap_or_default();
        assert_eq!(
            ended.state,
            JobState::Completed,
            "{ended:?}\n{}",
            std::fs::read_to_string(dir.join("out.log")).unwrap_or_default()
        );
        let (r0, r1) = (read(0), read(1));
        assert!(r0.starts_with("rank=0 world=2 master="), "{r0}");
        assert!(r1.starts_with("rank=1 world=2 master="), "{r1}");
        let field = |line: &str, k: &str| {
            line.split_whitespace()
                .find_map(|t| t.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_default()
        };
        // One master for both, an address (the test cluster's nodes are 127.0.0.1).
        assert_eq!(field(&r0, "master"), field(&r1, "master"));
        assert!(
            field(&r0, "master").parse::<std::net::IpAddr>().is_ok(),
            "{r0}"
        );
        assert_eq!(field(&r0, "hosts").split(',').count(), 2, "{r0}");
        assert_eq!(field(&r1, "index"), "1");
        assert!(!field(&r1, "me").is_empty(), "{r1}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Slurm's commands missing on the gateway's host: the error names the command.
    #[tokio::test]
    async fn a_missing_command_is_named() {
        let cli = SlurmCli {
            conf: None,
            bin_dir: Some("/nonexistent-slurm-bin".into()),
        };
        let e = cli.job(1).await.unwrap_err().to_string();
        assert!(e.contains("scontrol: cannot run it"), "{e}");
    }
}
