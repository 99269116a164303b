//! Runs a training job's attempts (spec/training.md §3.1, §3.3, §3.4): one task per job,
//! driven by the job's status, so a restarted gateway picks up where the last one was.
//!
//! ```text
//! CREATING  ─► per worker a mount dir (the gateway's): the code dir downloaded into
//!              user-job-dir/<last>, outputs/<name>_0 (predownloaded when asked); inputs
//!              downloaded once into inputs/<name>_0, shown read-only to every worker
//!           ─► PENDING ("…queuing…") | ABNORMAL (the code or an input could not be fetched)
//! PENDING   ─► a slot (training.running_jobs) ─► pre-check (auto restart on) ─► RUNNING
//!              (recorded first) ─► worker 0, then the others in its network, each row
//!              with its handle
//! RUNNING   ─► every 100 ms: the workers' logs copied (metrics parsed); every 300 ms:
//!              exits read from the backend (never from anything a worker writes); each
//!              sampling period:
//!              CPU use; no output and no CPU for the hang time ─► hung
//!           ─► every worker 0 ─► outputs uploaded ─► COMPLETED
//!           ─► a fault ─► the others stopped, outputs uploaded ─► restart (PENDING,
//!              attempt + 1, a recovery row) when allowed, else FAILED
//! TERMINATING ─► workers stopped, outputs uploaded ─► TERMINATED
//! ```
//!
//! Invariant: an attempt's workers are launched only after the job is RUNNING with that
//! attempt, and a RUNNING job found with a worker missing (a gateway killed mid-launch)
//! ends that attempt as lost: no attempt ever runs twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::joblogs::{self, WorkerLog};
use super::jobs::{JobError, JobSpec, Jobs, OUTPUT_LIMITS, check_listing, decode};
use super::launch;
use super::runtime;
use crate::backends::{Handle, StopMode, WORKER_LOG, WorkerExit, WorkerSpec};
use crate::lifecycle::training::JobStatus;
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::store::resource_events::{self, Row, TrainingEvent};
use crate::store::training_jobs::{self as rows, JobRow, MetricRow, RecoveryRow};
use crate::store::transition::Transition;
use crate::store::{Store, storage_connections};

/// How often a running job's logs are copied at the latest (a worker's write wakes the
/// runner at once: `wake.rs`).
const TICK: Duration = Duration::from_millis(100);
/// How often the backend is asked whether the workers still run (a container engine's API
/// call each).
const EXIT_EVERY: Duration = Duration::from_millis(300);
/// Metric rows a job may store.
const MAX_METRICS: i64 = 100_000;

/// Seconds from an RFC 3339 time (a row's `started_at`) to now; 0 without one.
pub(super) fn seconds_since(t: Option<&str>) -> i64 {
    t.and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    })
    .map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0))
    .unwrap_or(0)
}

/// How an attempt ended.
#[derive(Debug)]
enum Ended {
    /// Every worker exited 0.
    Completed,
    /// A worker's code failed (exit 1-127): the user's fault.
    UserError {
        rank: u32,
        code: i32,
    },
    /// The environment's: a worker killed or lost, a failed launch or pre-check.
    Fault {
        rank: u32,
        why: String,
    },
    /// A Wasm algorithm's own failure (its error, a trap, a limit): the user's fault.
    GuestError {
        why: String,
    },
    Hung,
    AutoStop,
    /// The runner was asked to end (a stop, a delete, the gateway's shutdown).
    Interrupted,
}

pub(super) async fn run(jobs: &Jobs, id: &str, token: &CancellationToken) {
    let mut slot: Option<OwnedSemaphorePermit> = None;
    // Bounded: each pass moves the job on or returns; restarts are at most 128.
    for _ in 0..1000 {
        if jobs.inner.shutdown.is_cancelled() {
            return;
        }
        let row = match load(jobs.store(), id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "reading a training job failed");
                return;
            }
        };
        let spec = match decode(&row) {
            Ok(s) => s,
            Err(e) => {
                let _ = to_status(
                    jobs.store(),
                    id,
                    &[row.status],
                    JobStatus::Abnormal,
                    Some(&crate::error::Error::from(e).message),
                    None,
                )
                .await;
                return;
            }
        };
        // A slot is held while an attempt starts and runs; a job waiting for its restart
        // queues again.
        if !matches!(row.status, JobStatus::Pending | JobStatus::Running) {
            slot = None;
        }
        if row.status == JobStatus::Running && slot.is_none() {
            // Found running (a restarted gateway): it counts, whether or not one is free.
            slot = jobs.inner.slots.clone().try_acquire_owned().ok();
        }
        let step = match row.status {
            JobStatus::Creating => prepare(jobs, &row, &spec, token).await,
            JobStatus::Pending => start_attempt(jobs, &row, &spec, token, &mut slot).await,
            JobStatus::Running => {
                let r = supervise(jobs, &row, &spec, token).await;
                slot = None;
                r
            }
            JobStatus::Terminating => terminate(jobs, &row, &spec, None).await,
            _ => return,
        };
        if let Err(e) = step {
            tracing::warn!(job = %id, error = %crate::error::Error::from(e), "a training job's step failed");
            if token.is_cancelled() {
                continue;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

async fn load(store: &Store, id: &str) -> sqlx::Result<Option<JobRow>> {
    let mut conn = store.pool.acquire().await?;
    rows::by_id(&mut conn, id).await
}

/// Moves `id` from one of `from` to `to` with an event; whether it moved.
async fn to_status(
    store: &Store,
    id: &str,
    from: &[JobStatus],
    to: JobStatus,
    reason: Option<&str>,
    event: Option<Row<'_>>,
) -> Result<bool, JobError> {
    let mut tx = store.write().await?;
    let mut t = Transition::new(id, from, to);
    if let Some(r) = reason {
        t = t.reason(Some(r));
    }
    if let Some(e) = event {
        t = t.resource_event(e);
    }
    let moved = t.apply(&mut tx).await?;
    if moved {
        tx.commit().await?;
    }
    Ok(moved)
}

fn job_dir(jobs: &Jobs, id: &str) -> PathBuf {
    jobs.inner.dir.join(id)
}

fn logs_root(jobs: &Jobs) -> PathBuf {
    jobs.inner.dir.join("logs")
}

/// A worker's mount dir (shown at /home/ma-user/modelarts).
fn mount_dir(jobs: &Jobs, id: &str, rank: u32) -> PathBuf {
    job_dir(jobs, id).join(format!("w{rank}"))
}

fn is_wasm(spec: &JobSpec) -> bool {
    matches!(
        spec.engine,
        crate::training::algorithms::Engine::Wasm { .. }
    )
}

/// A Wasm job's channels, staged in its owner's plugin storage (what the plugin host
/// grants): `jobs/<id>/inputs/<name>/` and `jobs/<id>/outputs/<name>/`.
fn wasm_prefix(id: &str, kind: &str, name: &str) -> String {
    format!("jobs/{id}/{kind}/{name}/")
}

/// A deleted job's Wasm staging dir (an empty path for none).
fn wasm_stage_of(jobs: &Jobs, row: Option<&JobRow>) -> PathBuf {
    match row {
        Some(r) if decode(r).is_ok_and(|s| is_wasm(&s)) => wasm_stage(jobs, r),
        _ => PathBuf::new(),
    }
}

fn wasm_stage(jobs: &Jobs, row: &JobRow) -> PathBuf {
    jobs.inner
        .plugins
        .storage_root(&row.owner_id)
        .join("jobs")
        .join(&row.id)
}

/// Where an input is staged on the host (once per job).
fn input_dir(jobs: &Jobs, row: &JobRow, spec: &JobSpec, name: &str) -> PathBuf {
    if is_wasm(spec) {
        wasm_stage(jobs, row).join("inputs").join(name)
    } else {
        job_dir(jobs, &row.id).join(format!("inputs/{name}_0"))
    }
}

/// Where worker `rank` writes an output on the host.
fn output_dir(jobs: &Jobs, row: &JobRow, spec: &JobSpec, rank: u32, name: &str) -> PathBuf {
    if is_wasm(spec) {
        wasm_stage(jobs, row).join("outputs").join(name)
    } else {
        mount_dir(jobs, &row.id, rank).join(format!("outputs/{name}_0"))
    }
}

fn worker_id(id: &str, rank: u32) -> String {
    format!("{id}-{rank}")
}

fn event_worker<'a>(id: &'a str, e: TrainingEvent, values: &[&str]) -> Row<'a> {
    Row::filled(id, None, e, values)
}

async fn record(store: &Store, row: Row<'_>) {
    let r = async {
        let mut tx = store.write().await?;
        resource_events::record(&mut tx, &row).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "recording a training event failed");
    }
}

/// The S3 client of the job's connection.
pub(crate) async fn client(jobs: &Jobs, connection_id: &str) -> Result<aws_sdk_s3::Client, String> {
    let mut conn = jobs
        .store()
        .pool
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let c = storage_connections::by_id(&mut conn, connection_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the job's storage connection was deleted")?;
    let target = connections::target(&c, &jobs.inner.secrets).map_err(|e| format!("{e:#}"))?;
    Ok(s3::client(&target, Duration::from_secs(60), 3))
}

/// A key under `prefix` as a relative path of plain names; `None` for a folder marker or a
/// key that would leave the folder (`..`, empty or odd names).
fn relative(prefix: &str, key: &str) -> Option<PathBuf> {
    let rest = key.strip_prefix(prefix)?;
    if rest.is_empty() || rest.ends_with('/') {
        return None;
    }
    let mut p = PathBuf::new();
    for part in rest.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        p.push(part);
    }
    Some(p)
}

/// Downloads every object under `uri` (a folder) into `dest` (the gateway's, fresh).
pub(crate) async fn download_folder(
    client: &aws_sdk_s3::Client,
    uri: &str,
    dest: &Path,
) -> Result<usize, String> {
    let u = ObjectUri::parse(uri).map_err(|e| e.to_string())?;
    let listing = transfer::list_all(client, &u.bucket, &u.key).await?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let opts = transfer::Options::default();
    let progress = transfer::Progress::default();
    let mut n = 0;
    for (key, size) in listing {
        let Some(rel) = relative(&u.key, &key) else {
            continue;
        };
        let local = dest.join(rel);
        let obj = ObjectUri {
            bucket: u.bucket.clone(),
            key,
        };
        transfer::download(
            client,
            &obj,
            transfer::Dest::Path(&local),
            size,
            &opts,
            &progress,
        )
        .await?;
        n += 1;
    }
    Ok(n)
}

/// CREATING: the workers' dirs, the code, the inputs, the outputs to resume from.
async fn prepare(
    jobs: &Jobs,
    row: &JobRow,
    spec: &JobSpec,
    token: &CancellationToken,
) -> Result<(), JobError> {
    let id = row.id.as_str();
    let dir = job_dir(jobs, id);
    let started = Instant::now();
    let made: Result<(), String> = async {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
        let data_client = match &spec.connection {
            Some((_, cid)) => Some(client(jobs, cid).await?),
            None => None,
        };
        if is_wasm(spec) {
            let stage = wasm_stage(jobs, row);
            let _ = tokio::fs::remove_dir_all(&stage).await;
            for o in &spec.outputs {
                tokio::fs::create_dir_all(stage.join("outputs").join(&o.name))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        // The code, once into worker 0's dir; copied to the others.
        let rt = view(spec);
        let code_local = rt
            .code_dir
            .as_deref()
            .and_then(|c| c.strip_prefix(runtime::MOUNT_PATH))
            .map(|rel| rel.trim_start_matches('/').to_string());
        for rank in (0..spec.nodes).filter(|_| !is_wasm(spec)) {
            let m = mount_dir(jobs, id, rank);
            for sub in ["user-job-dir", "inputs", "outputs", "log"] {
                tokio::fs::create_dir_all(m.join(sub))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for o in &spec.outputs {
                tokio::fs::create_dir_all(m.join(format!("outputs/{}_0", o.name)))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for i in &spec.inputs {
                // Mount points of the read-only inputs.
                tokio::fs::create_dir_all(m.join(format!("inputs/{}_0", i.name)))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if let (
            crate::training::algorithms::Engine::Container {
                code_dir: Some(c), ..
            },
            Some(local),
        ) = (&spec.engine, &code_local)
        {
            record(
                jobs.store(),
                event_worker(id, TrainingEvent::WorkerCodeDownloading, &["0"]),
            )
            .await;
            let code_client = client(jobs, &c.connection_id)
                .await
                .map_err(|e| format!("the code dir: {e}"))?;
            let t = Instant::now();
            let dest = mount_dir(jobs, id, 0).join(local);
            if let Err(e) = download_folder(&code_client, &c.path, &dest).await {
                record(
                    jobs.store(),
                    event_worker(id, TrainingEvent::WorkerCodeFailed, &["0", &e]),
                )
                .await;
                return Err(format!("downloading the code dir {}: {e}", c.path));
            }
            record(
                jobs.store(),
                event_worker(
                    id,
                    TrainingEvent::WorkerCodeDownloaded,
                    &["0", &format!("{:.1}", t.elapsed().as_secs_f64())],
                ),
            )
            .await;
            for rank in 1..spec.nodes {
                copy_tree(&dest, &mount_dir(jobs, id, rank).join(local))
                    .map_err(|e| e.to_string())?;
            }
        }
        if token.is_cancelled() {
            return Ok(());
        }
        for i in &spec.inputs {
            let Some(c) = &data_client else { break };
            record(
                jobs.store(),
                event_worker(id, TrainingEvent::WorkerInputDownloading, &["0"]),
            )
            .await;
            let t = Instant::now();
            if let Err(e) = download_folder(c, &i.path, &input_dir(jobs, row, spec, &i.name)).await
            {
                record(
                    jobs.store(),
                    event_worker(id, TrainingEvent::WorkerInputFailed, &["0", &i.name, &e]),
                )
                .await;
                return Err(format!(
                    "downloading the input {} ({}): {e}",
                    i.name, i.path
                ));
            }
            record(
                jobs.store(),
                event_worker(
                    id,
                    TrainingEvent::WorkerInputDownloaded,
                    &["0", &format!("{:.1}", t.elapsed().as_secs_f64()), &i.name],
                ),
            )
            .await;
        }
        for o in spec.outputs.iter().filter(|o| o.predownload) {
            let Some(c) = &data_client else { break };
            for rank in 0..spec.nodes {
                let dest = output_dir(jobs, row, spec, rank, &o.name);
                download_folder(c, &o.path, &dest).await.map_err(|e| {
                    format!("predownloading the output {} ({}): {e}", o.name, o.path)
                })?;
            }
        }
        // Everything in the workers' dirs is ma-user's from here on (and hostile).
        if rustix::process::geteuid().is_root() && !is_wasm(spec) {
            for rank in 0..spec.nodes {
                crate::confined::Dir::open(&mount_dir(jobs, id, rank))
                    .and_then(|d| {
                        d.chown_tree(crate::backends::NOTEBOOK_UID, crate::backends::NOTEBOOK_GID)
                    })
                    .map_err(|e| format!("handing the workers' dirs over: {e}"))?;
            }
        }
        Ok(())
    }
    .await;
    tracing::debug!(job = %id, secs = started.elapsed().as_secs_f64(), "training job prepared");
    match made {
        Ok(()) => {
            to_status(
                jobs.store(),
                id,
                &[JobStatus::Creating],
                JobStatus::Pending,
                None,
                Some(Row::of(id, None, TrainingEvent::Queuing)),
            )
            .await?;
        }
        Err(e) => {
            to_status(
                jobs.store(),
                id,
                &[JobStatus::Creating],
                JobStatus::Abnormal,
                Some(&e),
                Some(Row::filled(id, None, TrainingEvent::Abnormal, &[&e])),
            )
            .await?;
        }
    }
    Ok(())
}

/// Resident memory of `pids` (host pids), from `/proc/<pid>/status`.
fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// Queues the job's webhook `event` (when it has one that asks for it), in `tx`.
async fn notify_in(
    tx: &mut crate::store::Conn,
    row: &JobRow,
    spec: &JobSpec,
    event: &str,
    status: JobStatus,
) -> sqlx::Result<()> {
    let Some(sub) = &spec.notification else {
        return Ok(());
    };
    let payload = serde_json::json!({
        "id": row.id,
        "name": row.name,
        "status": status,
        "attempt": row.attempt,
        "retries": row.retries,
    });
    crate::notify::enqueue(tx, "job", &row.id, sub, event, &payload).await
}

/// A copy of a tree the gateway just made (no links in it).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = e.file_type()?;
        let dest = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// What the job's workers see, from its spec.
fn view(spec: &JobSpec) -> runtime::Runtime {
    let boot = match &spec.engine {
        crate::training::algorithms::Engine::Container {
            code_dir,
            boot_file,
            boot_command,
            ..
        } => runtime::Boot {
            code_dir: code_dir
                .as_ref()
                .map(|c| c.path.strip_prefix("obs://").unwrap_or(&c.path)),
            boot_file: boot_file.as_deref(),
            boot_command: boot_command.as_deref(),
        },
        crate::training::algorithms::Engine::Wasm { .. } => runtime::Boot {
            code_dir: None,
            boot_file: None,
            boot_command: None,
        },
    };
    runtime::runtime(
        boot,
        &JobSpec::channels(&spec.inputs),
        &JobSpec::channels(&spec.outputs),
        &spec.valued(),
    )
}

/// PENDING: a slot, the pre-check, RUNNING, then the workers.
async fn start_attempt(
    jobs: &Jobs,
    row: &JobRow,
    spec: &JobSpec,
    token: &CancellationToken,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), JobError> {
    let id = row.id.as_str();
    if slot.is_none() {
        let slots = jobs.inner.slots.clone();
        *slot = Some(tokio::select! {
            p = slots.acquire_owned() => p.map_err(|e| JobError::Internal(e.into()))?,
            _ = token.cancelled() => return Ok(()),
        });
    }
    let attempt = row.attempt;
    let now = crate::store::now();
    {
        let mut tx = jobs.store().write().await?;
        let moved = Transition::new(id, &[JobStatus::Pending], JobStatus::Running)
            .resource_event(Row::of(id, None, TrainingEvent::Started))
            .apply(&mut tx)
            .await?;
        if !moved {
            return Ok(());
        }
        notify_in(&mut tx, row, spec, "JobStarted", JobStatus::Running).await?;
        rows::set_started(&mut tx, id, attempt, &now).await?;
        crate::store::operations::progressed::<JobStatus>(&mut tx, id).await?;
        tx.commit().await?;
    }
    if is_wasm(spec) {
        let Some(row) = load(jobs.store(), id).await? else {
            return Ok(());
        };
        return match run_wasm(jobs, &row, spec, token).await? {
            Ended::Interrupted => Ok(()),
            ended => end_attempt(jobs, &row, spec, ended, &mut []).await,
        };
    }
    let root = logs_root(jobs);
    let cap = jobs.inner.settings.log_mb * 1024 * 1024;
    // Pre-check (seed 8.10.1): with auto restart, unless MA_SKIP_IMAGE_DETECT=0.
    if spec.auto_restart.is_some()
        && spec.env.get("MA_SKIP_IMAGE_DETECT").map(String::as_str) != Some("0")
    {
        let mut log = WorkerLog::open(&root, id, attempt, 0, cap).map_err(anyhow::Error::from)?;
        log.platform("[pre-check] The training environment is being pre-checked.");
        let need = jobs
            .inner
            .flavors
            .iter()
            .find(|f| f.id == spec.flavor)
            .map(|f| (f.kind.clone(), f.accelerator_count() * spec.nodes))
            .unwrap_or_default();
        let free = free_bytes(&job_dir(jobs, id));
        let gpu = (need.1 > 0).then(|| crate::gpu::shortfall(&need.0, need.1));
        for (item, verdict) in precheck(free, need.1, gpu) {
            match verdict {
                Ok(()) => log.platform(&format!("[pre-check] item {item} passed")),
                Err(e) => {
                    log.platform(&format!("[pre-check] item {item} failed: {e}"));
                    let why = format!("Pre-check failed. Error: {e}");
                    record(
                        jobs.store(),
                        Row::filled(id, None, TrainingEvent::WorkerExited, &["0", "-"])
                            .detail(Some(&why)),
                    )
                    .await;
                    return end_attempt(jobs, row, spec, Ended::Fault { rank: 0, why }, &mut [])
                        .await;
                }
            }
        }
        log.platform("[pre-check] Pre-check completed.");
    }
    let rt = view(spec);
    let command = match launch::launcher(&launch::Launch {
        rt: &rt,
        run_method: spec.env.get("MA_RUN_METHOD").map(String::as_str),
        nodes: spec.nodes,
        job_id: id,
    }) {
        Ok(c) => c,
        Err(e) => {
            return end_attempt(jobs, row, spec, Ended::Fault { rank: 0, why: e }, &mut []).await;
        }
    };
    let flavor = jobs
        .inner
        .flavors
        .iter()
        .find(|f| f.id == spec.flavor)
        .cloned()
        .ok_or_else(|| JobError::Invalid(format!("flavor {} is no longer offered", spec.flavor)))?;
    let hosts = job_dir(jobs, id).join("hosts");
    std::fs::write(&hosts, launch::hosts_file(id, spec.nodes)).map_err(anyhow::Error::from)?;
    let s3env = match &spec.connection {
        Some((_, cid)) => {
            let mut conn = jobs.store().pool.acquire().await?;
            storage_connections::by_id(&mut conn, cid)
                .await?
                .map(|c| launch::S3Env {
                    https: c.endpoint.starts_with("https://"),
                    endpoint: c.endpoint,
                })
        }
        None => None,
    };
    let read_only: Vec<(PathBuf, String)> = spec
        .inputs
        .iter()
        .map(|i| {
            (
                input_dir(jobs, row, spec, &i.name),
                runtime::input_path(&i.name),
            )
        })
        .collect();
    let mut handles: Vec<Handle> = Vec::new();
    for rank in 0..spec.nodes {
        let env = launch::environment(
            &launch::Worker {
                job_id: id,
                owner_id: &row.owner_id,
                rank,
                nodes: spec.nodes,
                gpus: flavor.accelerator_count(),
                hang_minutes: spec.hang_detect_seconds.div_ceil(60),
            },
            &rt,
            s3env.as_ref(),
            &spec.env,
        );
        let mut log = WorkerLog::open(&root, id, attempt, i64::from(rank), cap)
            .map_err(anyhow::Error::from)?;
        log.platform(&format!(
            "[init] attempt {attempt}, worker {rank} of {}",
            spec.nodes
        ));
        let ws = WorkerSpec {
            id: worker_id(id, rank),
            owner: row.owner_id.clone(),
            job_id: id.to_string(),
            rank,
            flavor: flavor.clone(),
            image: match &spec.engine {
                crate::training::algorithms::Engine::Container { image, .. } => image.clone(),
                _ => None,
            },
            command: command.clone(),
            env,
            mount: mount_dir(jobs, id, rank),
            read_only: read_only.clone(),
            hosts: Some(hosts.clone()),
            network_of: handles.first().cloned(),
            hostname: launch::instance_name(id, rank),
        };
        match jobs.inner.backend.launch_worker(&ws).await {
            Ok(h) => {
                let mut tx = jobs.store().write().await?;
                rows::insert_worker(
                    &mut tx,
                    id,
                    attempt,
                    i64::from(rank),
                    &h,
                    &crate::store::now(),
                )
                .await?;
                resource_events::record(
                    &mut tx,
                    &event_worker(id, TrainingEvent::WorkerRunning, &[&rank.to_string()]),
                )
                .await?;
                tx.commit().await?;
                handles.push(h);
            }
            Err(e) => {
                let why = format!("starting worker {rank}: {e}");
                log.platform(&why);
                let unsupported = matches!(e, crate::backends::BackendError::Unsupported(_));
                for h in &handles {
                    stop_worker(jobs, h).await;
                }
                if unsupported {
                    let mut tx = jobs.store().write().await?;
                    rows::set_attempt_ended(&mut tx, id, 0, None, &crate::store::now()).await?;
                    let moved = Transition::new(id, &[JobStatus::Running], JobStatus::Abnormal)
                        .reason(Some(&why))
                        .resource_event(Row::filled(id, None, TrainingEvent::Abnormal, &[&why]))
                        .apply(&mut tx)
                        .await?;
                    if moved {
                        tx.commit().await?;
                    }
                    return Ok(());
                }
                return end_attempt(jobs, row, spec, Ended::Fault { rank, why }, &mut []).await;
            }
        }
    }
    Ok(())
}

/// Bytes free on the file system of `dir`, or why it cannot be told.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let st = rustix::fs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The pre-check's items in order, each passed or failed with why (seed 8.10.1): `disk-size`
/// (room where the job's files are: `free`), and `gpu-check` when the workers need `need`
/// accelerators (`gpu`: what the host lacks now, from [`crate::gpu::shortfall`]; a GPU
/// that went away since the job was accepted fails it).
fn precheck(
    free: Result<u64, String>,
    need: u32,
    gpu: Option<Option<(u32, &str)>>,
) -> Vec<(&'static str, Result<(), String>)> {
    let disk = free.and_then(|free| {
        if free < 1 << 30 {
            return Err(format!(
                "disk-size: {} MiB free where the job's files are; at least 1024 MiB",
                free >> 20
            ));
        }
        Ok(())
    });
    let mut items = vec![("disk-size", disk)];
    if let Some(lack) = gpu {
        items.push((
            "gpu-check",
            match lack {
                None => Ok(()),
                Some((have, what)) => Err(format!(
                    "gpu-check: the workers need {need} {what}(s) and {have} are visible on this host"
                )),
            },
        ));
    }
    items
}

async fn stop_worker(jobs: &Jobs, h: &Handle) {
    if let Err(e) = jobs
        .inner
        .backend
        .stop(
            h,
            StopMode {
                grace: Duration::from_secs(5),
            },
        )
        .await
    {
        tracing::warn!(error = %e, "stopping a training worker failed");
    }
}

/// One worker as the supervisor follows it.
struct Watched {
    rank: u32,
    handle: Handle,
    log: WorkerLog,
    agent: Option<PathBuf>,
    cpu: Option<f64>,
    exit: Option<WorkerExit>,
}

/// RUNNING: follows the attempt's workers to its end.
async fn supervise(
    jobs: &Jobs,
    row: &JobRow,
    spec: &JobSpec,
    token: &CancellationToken,
) -> Result<(), JobError> {
    let id = row.id.as_str();
    let attempt = row.attempt;
    let workers = {
        let mut conn = jobs.store().pool.acquire().await?;
        rows::workers(&mut conn, id, attempt).await?
    };
    let root = logs_root(jobs);
    let cap = jobs.inner.settings.log_mb * 1024 * 1024;
    let mut watched = Vec::new();
    for w in &workers {
        let Some(h) = w.handle.clone() else { continue };
        watched.push(Watched {
            rank: w.rank as u32,
            agent: jobs.inner.backend.engine_log_dir(&h),
            log: WorkerLog::open(&root, id, attempt, w.rank, cap).map_err(anyhow::Error::from)?,
            handle: h,
            cpu: None,
            exit: w.exit_code.map(|c| WorkerExit::Code(c as i32)),
        });
    }
    if is_wasm(spec) {
        // Its run was in the gateway that stopped: that attempt is over.
        let why =
            "the gateway stopped while the Wasm algorithm ran; its run ended with it".to_string();
        return end_attempt(jobs, row, spec, Ended::Fault { rank: 0, why }, &mut []).await;
    }
    if watched.len() < spec.nodes as usize {
        // Cut short while launching (a gateway killed): this attempt is lost.
        let missing = (0..spec.nodes)
            .find(|r| !watched.iter().any(|w| w.rank == *r))
            .unwrap_or(0);
        for w in &watched {
            stop_worker(jobs, &w.handle).await;
        }
        for r in 0..spec.nodes {
            let _ = jobs.inner.backend.remove_worker(&worker_id(id, r)).await;
        }
        let why = format!(
            "worker {missing} was never started (the gateway stopped while it launched the attempt)"
        );
        return end_attempt(
            jobs,
            row,
            spec,
            Ended::Fault { rank: missing, why },
            &mut watched,
        )
        .await;
    }
    let hang = Duration::from_secs(spec.hang_detect_seconds);
    let period = (hang / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut last_activity = Instant::now();
    let mut last_sample = Instant::now() - period;
    // GPU use (NVML, where present) for a GPU flavor's workers: `system/gpuUtil`, and
    // activity for hang detection.
    let gpus = jobs.has_gpus(spec);
    let mut gpu_cursor = crate::gpu::Cursor::default();
    let mut metrics_left = {
        let mut conn = jobs.store().pool.acquire().await?;
        MAX_METRICS - rows::count_metrics(&mut conn, id).await?
    };
    let mut looked: Option<Instant> = None;
    let mut wake = super::wake::LogWake::new(watched.iter().filter_map(|w| w.agent.as_deref()));
    let ended = loop {
        // Logs and metrics.
        let mut fresh = Vec::new();
        for w in watched.iter_mut() {
            let Some(agent) = &w.agent else { continue };
            let (n, found) = w
                .log
                .pump(agent, WORKER_LOG, &root, id, attempt, i64::from(w.rank));
            if n > 0 {
                last_activity = Instant::now();
                jobs.ring(id);
            }
            let now = crate::store::now();
            for (values, step) in found {
                for (name, value) in values {
                    fresh.push(MetricRow {
                        attempt,
                        worker: i64::from(w.rank),
                        name,
                        step,
                        value,
                        time: now.clone(),
                    });
                }
            }
        }
        if !fresh.is_empty() && metrics_left > 0 {
            fresh.truncate(metrics_left as usize);
            metrics_left -= fresh.len() as i64;
            let mut tx = jobs.store().write().await?;
            rows::insert_metrics(&mut tx, id, &fresh).await?;
            tx.commit().await?;
        }
        // Exits, from the backend.
        let mut failed = None;
        let look = looked.is_none_or(|t| t.elapsed() >= EXIT_EVERY);
        if look {
            looked = Some(Instant::now());
        }
        for w in watched.iter_mut().filter(|w| look && w.exit.is_none()) {
            if let Some(exit) = jobs.inner.backend.worker_exit(&w.handle).await {
                w.exit = Some(exit);
                let code = match exit {
                    WorkerExit::Code(c) => Some(i64::from(c)),
                    _ => None,
                };
                let shown = code.map_or("lost".to_string(), |c| c.to_string());
                w.log
                    .platform(&format!("[run] Training finished. Exit code {shown}."));
                let mut tx = jobs.store().write().await?;
                rows::worker_ended(
                    &mut tx,
                    id,
                    attempt,
                    i64::from(w.rank),
                    code,
                    &crate::store::now(),
                )
                .await?;
                resource_events::record(
                    &mut tx,
                    &event_worker(
                        id,
                        TrainingEvent::WorkerExited,
                        &[&w.rank.to_string(), &shown],
                    ),
                )
                .await?;
                tx.commit().await?;
            }
            match w.exit {
                Some(WorkerExit::Code(0)) | None => {}
                Some(WorkerExit::Code(c)) if (1..128).contains(&c) => {
                    failed.get_or_insert(Ended::UserError {
                        rank: w.rank,
                        code: c,
                    });
                }
                Some(WorkerExit::Code(c)) => {
                    failed.get_or_insert(Ended::Fault {
                        rank: w.rank,
                        why: format!(
                            "worker {} was killed (exit code {c}: signal {})",
                            w.rank,
                            c - 128
                        ),
                    });
                }
                Some(WorkerExit::Stopped) | Some(WorkerExit::Lost) => {
                    failed.get_or_insert(Ended::Fault {
                        rank: w.rank,
                        why: format!(
                            "worker {} was lost (it ended without an exit status)",
                            w.rank
                        ),
                    });
                }
            }
        }
        if let Some(f) = failed {
            break f;
        }
        if watched.iter().all(|w| w.exit == Some(WorkerExit::Code(0))) {
            break Ended::Completed;
        }
        // CPU and GPU use, each sampling period: hang detection, and the job's resource usage
        // (`system/cpuUsage` in percent of one CPU, `system/memUsage` in MiB,
        // `system/gpuUtil` in percent for GPU flavors where NVML is; seed T8-30).
        if last_sample.elapsed() >= period {
            let elapsed = last_sample.elapsed().as_secs_f64();
            last_sample = Instant::now();
            let mut usage = Vec::new();
            let now_text = crate::store::now();
            let gpu = gpus.then(|| crate::gpu::read(&mut gpu_cursor)).flatten();
            for w in watched.iter_mut().filter(|w| w.exit.is_none()) {
                let u = jobs.inner.backend.usage(&w.handle).await;
                if let (Some(util), Some(u)) = (&gpu, &u) {
                    let peak = crate::gpu::peak(util, &u.pids);
                    if peak > 0 {
                        last_activity = Instant::now();
                    }
                    usage.push(MetricRow {
                        attempt,
                        worker: i64::from(w.rank),
                        name: "system/gpuUtil".into(),
                        step: None,
                        value: f64::from(peak),
                        time: now_text.clone(),
                    });
                }
                let now = u.as_ref().map(|u| u.cpu_seconds);
                if let (Some(before), Some(now)) = (w.cpu, now) {
                    if now - before >= 0.01 * period.as_secs_f64() {
                        last_activity = Instant::now();
                    }
                    usage.push(MetricRow {
                        attempt,
                        worker: i64::from(w.rank),
                        name: "system/cpuUsage".into(),
                        step: None,
                        value: ((now - before).max(0.0) / elapsed * 100.0 * 10.0).round() / 10.0,
                        time: now_text.clone(),
                    });
                }
                if let Some(u) = &u {
                    usage.push(MetricRow {
                        attempt,
                        worker: i64::from(w.rank),
                        name: "system/memUsage".into(),
                        step: None,
                        value: (rss_bytes(&u.pids) as f64 / 1048576.0 * 10.0).round() / 10.0,
                        time: now_text.clone(),
                    });
                }
                w.cpu = now.or(w.cpu);
            }
            if !usage.is_empty() && metrics_left > usage.len() as i64 {
                metrics_left -= usage.len() as i64;
                let mut tx = jobs.store().write().await?;
                rows::insert_metrics(&mut tx, id, &usage).await?;
                tx.commit().await?;
            }
        }
        if last_activity.elapsed() >= hang {
            break Ended::Hung;
        }
        if let Some(hours) = spec.auto_stop_hours {
            let ran = row.run_seconds + seconds_since(row.started_at.as_deref());
            if ran >= i64::from(hours) * jobs.inner.hour_secs as i64 {
                break Ended::AutoStop;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = async {
                match wake.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = token.cancelled() => break Ended::Interrupted,
        }
    };
    if let Ended::Interrupted = ended {
        // A stop or delete goes on from the status; a shutdown leaves the workers running.
        return Ok(());
    }
    end_attempt(jobs, row, spec, ended, &mut watched).await
}

/// A Wasm algorithm's attempt: `train` through the plugin host, its log lines, metrics and
/// liveness followed each tick (hang detection: no heartbeat, log or metric for the hang
/// time), a stop or shutdown passed on as `should-stop` (the run is awaited to its end:
/// the host interrupts a guest that ignores it after the grace).
async fn run_wasm(
    jobs: &Jobs,
    row: &JobRow,
    spec: &JobSpec,
    token: &CancellationToken,
) -> Result<Ended, JobError> {
    let id = row.id.as_str();
    let crate::training::algorithms::Engine::Wasm { plugin } = &spec.engine else {
        return Ok(Ended::Fault {
            rank: 0,
            why: "not a Wasm algorithm".into(),
        });
    };
    let root = logs_root(jobs);
    let cap = jobs.inner.settings.log_mb * 1024 * 1024;
    let mut log = WorkerLog::open(&root, id, row.attempt, 0, cap).map_err(anyhow::Error::from)?;
    log.platform(&format!(
        "[init] attempt {}: the Wasm algorithm {}@{} in the plugin host",
        row.attempt, plugin.name, plugin.version
    ));
    record(
        jobs.store(),
        event_worker(id, TrainingEvent::WorkerRunning, &["0"]),
    )
    .await;
    let time_limit = match spec.auto_stop_hours {
        Some(h) => Duration::from_secs(
            (u64::from(h) * jobs.inner.hour_secs).saturating_sub(row.run_seconds.max(0) as u64),
        ),
        // Without auto stop: the longest a job may run (720 hours).
        None => Duration::from_secs(u64::from(super::jobs::AUTO_STOP_HOURS.1) * 3600),
    };
    let call = crate::plugins::TrainingCall {
        plugin_name: plugin.name.clone(),
        plugin_version: plugin.version.clone(),
        job_name: row.name.clone(),
        attempt: row.attempt as u32,
        inputs: spec
            .inputs
            .iter()
            .map(|i| (i.name.clone(), wasm_prefix(id, "inputs", &i.name)))
            .collect(),
        outputs: spec
            .outputs
            .iter()
            .map(|o| (o.name.clone(), wasm_prefix(id, "outputs", &o.name)))
            .collect(),
        hyperparameters: spec
            .hyperparameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        resume_from_step: None,
        time_limit,
        grace: atelier_plugins::training::DEFAULT_GRACE,
    };
    let watch = atelier_plugins::TrainWatch::new(atelier_plugins::WatchLimits::default());
    let plugins = jobs.inner.plugins.clone();
    let owner = row.owner_id.clone();
    let w = watch.clone();
    let mut run = std::pin::pin!(async move { plugins.train(&owner, call, w).await });
    let hang = Duration::from_secs(spec.hang_detect_seconds);
    let mut activity = 0u64;
    let mut last_activity = Instant::now();
    let mut stopping = false;
    let mut hung = false;
    let report = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tokio::time::sleep(TICK) => {}
            _ = token.cancelled(), if !stopping => {
                stopping = true;
                watch.stop();
                continue;
            }
        }
        drain_wasm(jobs, &watch, &mut log, id, row.attempt).await?;
        let live = watch.snapshot();
        if live.activity != activity {
            activity = live.activity;
            last_activity = Instant::now();
        }
        if !stopping && last_activity.elapsed() >= hang {
            log.platform(&format!(
                "[hang] {}: the job is taken as hung",
                hang_reason(jobs, spec)
            ));
            hung = true;
            stopping = true;
            watch.stop();
        }
    };
    drain_wasm(jobs, &watch, &mut log, id, row.attempt).await?;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let why = format!("the Wasm algorithm could not start: {}", e.message);
            log.platform(&why);
            return Ok(Ended::Fault { rank: 0, why });
        }
    };
    use atelier_plugins::{StopReason, TrainOutcome};
    let ended = match report.outcome {
        TrainOutcome::Completed { final_metrics } => {
            let now = crate::store::now();
            let rows_: Vec<MetricRow> = final_metrics
                .into_iter()
                .map(|(name, value)| MetricRow {
                    attempt: row.attempt,
                    worker: 0,
                    name: format!("final/{name}"),
                    step: None,
                    value,
                    time: now.clone(),
                })
                .collect();
            let mut tx = jobs.store().write().await?;
            rows::insert_metrics(&mut tx, id, &rows_).await?;
            tx.commit().await?;
            log.platform("[run] Training finished. Exit code 0.");
            Ended::Completed
        }
        TrainOutcome::Terminated { .. } if hung => Ended::Hung,
        TrainOutcome::Terminated {
            reason: StopReason::TimeLimit,
            ..
        } => Ended::AutoStop,
        TrainOutcome::Terminated { interrupted, .. } => {
            log.platform(if interrupted {
                "[stop] the algorithm ignored the stop and was interrupted after the grace"
            } else {
                "[stop] the algorithm returned cancelled"
            });
            Ended::Interrupted
        }
        TrainOutcome::Failed { kind, message, .. } => {
            let why = format!("the Wasm algorithm failed ({kind:?}): {message}");
            log.platform(&why);
            if kind.restartable() {
                Ended::Fault { rank: 0, why }
            } else {
                Ended::GuestError { why }
            }
        }
    };
    Ok(ended)
}

/// Why a job was taken as hung: what its workers did not do for the hang time.
fn hang_reason(jobs: &Jobs, spec: &JobSpec) -> String {
    let missing = if is_wasm(spec) {
        "no heartbeat, log line or metric"
    } else if jobs.has_gpus(spec) {
        "no output, no CPU use and no GPU use"
    } else {
        "no output and no CPU use"
    };
    format!("{missing} for {} s", spec.hang_detect_seconds)
}

/// The run's queued log lines into the job's log, its metrics into the store.
async fn drain_wasm(
    jobs: &Jobs,
    watch: &atelier_plugins::TrainWatch,
    log: &mut WorkerLog,
    id: &str,
    attempt: i64,
) -> Result<(), JobError> {
    let d = watch.drain();
    for l in &d.logs {
        let line = match l.source {
            atelier_plugins::training::LogSource::Log => format!("[{}] {}\n", l.level, l.message),
            _ => format!("{}\n", l.message),
        };
        log.user(line.as_bytes());
    }
    if !d.logs.is_empty() {
        jobs.ring(id);
    }
    if d.logs_dropped > 0 {
        log.platform(&format!(
            "[log] {} lines dropped (the queue was full)",
            d.logs_dropped
        ));
    }
    if !d.metrics.is_empty() {
        let now = crate::store::now();
        let m: Vec<MetricRow> = d
            .metrics
            .into_iter()
            .map(|p| MetricRow {
                attempt,
                worker: 0,
                name: p.name,
                step: i64::try_from(p.step).ok(),
                value: p.value,
                time: now.clone(),
            })
            .collect();
        let mut tx = jobs.store().write().await?;
        rows::insert_metrics(&mut tx, id, &m).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The end of an attempt: the other workers stopped, logs and outputs saved, then the
/// job's next status.
async fn end_attempt(
    jobs: &Jobs,
    row: &JobRow,
    spec: &JobSpec,
    ended: Ended,
    watched: &mut [Watched],
) -> Result<(), JobError> {
    let id = row.id.as_str();
    for w in watched.iter_mut().filter(|w| w.exit.is_none()) {
        stop_worker(jobs, &w.handle).await;
        let _ = jobs.inner.backend.worker_exit(&w.handle).await;
    }
    let root = logs_root(jobs);
    for w in watched.iter_mut() {
        if let Some(agent) = &w.agent {
            w.log
                .pump(agent, WORKER_LOG, &root, id, row.attempt, i64::from(w.rank));
        }
    }
    // What is left of each worker (its container, its dir) goes; its log was copied.
    for rank in (0..spec.nodes).filter(|_| !is_wasm(spec)) {
        if let Err(e) = jobs.inner.backend.remove_worker(&worker_id(id, rank)).await {
            tracing::warn!(job = %id, error = %e, "removing a training worker failed");
        }
    }
    if let Ended::Hung = ended {
        record(jobs.store(), Row::of(id, None, TrainingEvent::Hanged)).await;
        for w in watched.iter_mut() {
            w.log.platform(&format!(
                "[hang] {}: the job is taken as hung",
                hang_reason(jobs, spec)
            ));
        }
    }
    let uploaded = save_outputs(jobs, row, spec).await;
    save_logs(jobs, row, spec).await;
    let seconds = seconds_since(row.started_at.as_deref());
    let restarts_left = i64::from(spec.restarts()) - row.retries;
    let unconditional = spec.auto_restart.is_some_and(|a| a.unconditional);
    // (next status, fault source and reason, restart with this streak)
    let (fault, restart): (Option<(u32, String)>, Option<i64>) = match &ended {
        Ended::Completed => (None, None),
        Ended::UserError { rank, code } => (
            Some((*rank, format!("worker {rank} exited with code {code}"))),
            (unconditional && restarts_left > 0 && row.streak < super::jobs::MAX_STREAK)
                .then_some(row.streak + 1),
        ),
        Ended::Fault { rank, why } => {
            (Some((*rank, why.clone())), (restarts_left > 0).then_some(0))
        }
        Ended::GuestError { why } => (
            Some((0, why.clone())),
            (unconditional && restarts_left > 0 && row.streak < super::jobs::MAX_STREAK)
                .then_some(row.streak + 1),
        ),
        Ended::Hung => (
            Some((0, hang_reason(jobs, spec))),
            (restarts_left > 0 && row.streak < super::jobs::MAX_STREAK).then_some(row.streak + 1),
        ),
        Ended::AutoStop | Ended::Interrupted => (None, None),
    };
    let now = crate::store::now();
    let mut tx = jobs.store().write().await?;
    rows::set_attempt_ended(&mut tx, id, seconds, restart, &now).await?;
    if let Some((rank, why)) = &fault {
        rows::insert_recovery(
            &mut tx,
            id,
            &RecoveryRow {
                attempt: row.attempt,
                started_at: row.started_at.clone().unwrap_or_else(|| now.clone()),
                ended_at: now.clone(),
                fault_source: format!("worker-{rank}"),
                reason: why.clone(),
                action: if restart.is_some() {
                    "restarted"
                } else {
                    "none: the job failed"
                }
                .into(),
            },
        )
        .await?;
    }
    let from = [JobStatus::Running, JobStatus::Pending];
    // The webhook's event for where the job goes (JobHanged besides, on a hang).
    let (to, event) = match (&ended, restart, &uploaded) {
        (Ended::AutoStop, _, _) => (JobStatus::Terminated, Some("JobTerminated")),
        (_, Some(_), _) => (JobStatus::Pending, None),
        (Ended::Completed, None, Ok(())) => (JobStatus::Completed, Some("JobCompleted")),
        (_, None, _) => (JobStatus::Failed, Some("JobFailed")),
    };
    if let Ended::Hung = ended {
        notify_in(&mut tx, row, spec, "JobHanged", JobStatus::Running).await?;
    }
    if let Some(e) = event {
        notify_in(&mut tx, row, spec, e, to).await?;
    }
    let moved = match (&ended, restart, &uploaded) {
        (Ended::AutoStop, _, _) => {
            let hours = spec.auto_stop_hours.unwrap_or(1);
            let text = if hours == 1 {
                "1 hour".to_string()
            } else {
                format!("{hours} hours")
            };
            Transition::new(id, &from, JobStatus::Terminated)
                .reason(Some("auto stop"))
                .resource_event(Row::filled(id, None, TrainingEvent::AutoStopped, &[&text]))
                .apply(&mut tx)
                .await?
        }
        (_, Some(_), _) => {
            Transition::new(id, &from, JobStatus::Pending)
                .resource_event(Row::of(id, None, TrainingEvent::Restarted))
                .apply(&mut tx)
                .await?
        }
        (Ended::Completed, None, Ok(())) => {
            Transition::new(id, &from, JobStatus::Completed)
                .resource_event(Row::of(id, None, TrainingEvent::Executed))
                .apply(&mut tx)
                .await?
        }
        (_, None, _) => {
            let why = match (&fault, &uploaded) {
                (Some((_, w)), _) => w.clone(),
                (None, Err(e)) => e.clone(),
                _ => "failed".into(),
            };
            Transition::new(id, &from, JobStatus::Failed)
                .reason(Some(&why))
                .resource_event(Row::of(id, None, TrainingEvent::Failed).detail(Some(&why)))
                .apply(&mut tx)
                .await?
        }
    };
    if moved {
        tx.commit().await?;
    }
    Ok(())
}

/// Uploads each worker's outputs (read through `confined`: the worker wrote them) to the
/// output paths, within the seed's limits.
async fn save_outputs(jobs: &Jobs, row: &JobRow, spec: &JobSpec) -> Result<(), String> {
    let Some((_, cid)) = &spec.connection else {
        return Ok(());
    };
    if spec.outputs.is_empty() {
        return Ok(());
    }
    let client = client(jobs, cid).await?;
    let id = row.id.as_str();
    let mut result = Ok(());
    for rank in 0..spec.nodes {
        for o in &spec.outputs {
            let r = rank.to_string();
            record(
                jobs.store(),
                event_worker(id, TrainingEvent::WorkerOutputUploading, &[&r]),
            )
            .await;
            let dir = output_dir(jobs, row, spec, rank, &o.name);
            match upload_dir(&client, &dir, &o.path).await {
                Ok(_) => {
                    record(
                        jobs.store(),
                        event_worker(id, TrainingEvent::WorkerOutputUploaded, &[&r, &o.name]),
                    )
                    .await
                }
                Err(e) => {
                    record(
                        jobs.store(),
                        event_worker(id, TrainingEvent::WorkerOutputFailed, &[&r, &o.name, &e]),
                    )
                    .await;
                    result = Err(format!("uploading the output {} ({}): {e}", o.name, o.path));
                }
            }
        }
    }
    result
}

/// A folder the worker wrote, uploaded under `uri`: regular files only (a link or special
/// file is skipped), at most [`OUTPUT_LIMITS`].
pub(crate) async fn upload_dir(
    client: &aws_sdk_s3::Client,
    dir: &Path,
    uri: &str,
) -> Result<usize, String> {
    let u = ObjectUri::parse(uri).map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || list_confined(&dir))
        .await
        .map_err(|e| e.to_string())??;
    let listing: Vec<(String, u64)> = files
        .iter()
        .map(|(rel, _, size)| (rel.clone(), *size))
        .collect();
    check_listing(&listing, &OUTPUT_LIMITS)?;
    for (rel, (parent, name), _) in &files {
        let f = parent
            .open_read(std::ffi::OsStr::new(name))
            .map_err(|e| format!("{rel}: {e}"))?;
        let stream = file_chunks(tokio::fs::File::from_std(f));
        let key = ObjectUri {
            bucket: u.bucket.clone(),
            key: format!("{}{rel}", u.key),
        };
        transfer::upload_stream(
            client,
            &key,
            Box::pin(stream),
            8 << 20,
            OUTPUT_LIMITS.file_bytes,
        )
        .await
        .map_err(|e| format!("{rel}: {e}"))?;
    }
    Ok(files.len())
}

type Listed = (String, (crate::confined::Dir, String), u64);

/// The regular files under `dir`, walked through `confined` (nothing followed), at most
/// one past the output limit.
fn list_confined(dir: &Path) -> Result<Vec<Listed>, String> {
    let top = match crate::confined::Dir::open(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    let mut stack = vec![(top, String::new(), 0usize)];
    while let Some((d, at, depth)) = stack.pop() {
        for name in d
            .entries(OUTPUT_LIMITS.files + 1)
            .map_err(|e| e.to_string())?
        {
            let Some(name) = name.to_str().map(str::to_string) else {
                continue;
            };
            let rel = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            match d
                .file_type(std::ffi::OsStr::new(&name))
                .map_err(|e| e.to_string())?
            {
                Some((rustix::fs::FileType::RegularFile, size)) => {
                    out.push((rel, (d.try_clone().map_err(|e| e.to_string())?, name), size));
                    if out.len() > OUTPUT_LIMITS.files {
                        return Err(format!("more than {} files", OUTPUT_LIMITS.files));
                    }
                }
                Some((rustix::fs::FileType::Directory, _)) if depth < 32 => {
                    let sub = d.open_dir(Path::new(&name)).map_err(|e| e.to_string())?;
                    stack.push((sub, rel, depth + 1));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn file_chunks(
    f: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> {
    tokio_util::io::ReaderStream::new(f).map_err_to_string()
}

trait MapErrToString {
    fn map_err_to_string(self) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>>;
}

impl<S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>>> MapErrToString for S {
    fn map_err_to_string(self) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> {
        use futures_util::StreamExt;
        self.map(|r| r.map_err(|e| e.to_string()))
    }
}

/// Each worker's log of the attempt, copied to the job's log path (seed naming:
/// `modelarts-job-<id>-worker-<n>.log`, with `-attempt-<a>` after a restart).
async fn save_logs(jobs: &Jobs, row: &JobRow, spec: &JobSpec) {
    let (Some(path), Some((_, cid))) = (&spec.log_path, &spec.connection) else {
        return;
    };
    let Ok(client) = client(jobs, cid).await else {
        return;
    };
    let Ok(u) = ObjectUri::parse(path) else {
        return;
    };
    let root = logs_root(jobs);
    for rank in 0..spec.nodes {
        let file = joblogs::file(&root, &row.id, row.attempt, i64::from(rank));
        let Ok(size) = std::fs::metadata(&file).map(|m| m.len()) else {
            continue;
        };
        if size == 0 {
            continue;
        }
        let suffix = if row.attempt > 0 {
            format!("-attempt-{}", row.attempt)
        } else {
            String::new()
        };
        let key = ObjectUri {
            bucket: u.bucket.clone(),
            key: format!(
                "{}modelarts-job-{}-worker-{rank}{suffix}.log",
                u.key, row.id
            ),
        };
        let opts = transfer::Options::default();
        if let Err(e) = transfer::upload(
            &client,
            &file,
            &key,
            size,
            &opts,
            &transfer::Progress::default(),
        )
        .await
        {
            tracing::warn!(job = %row.id, error = %e, "copying a training log to its log path failed");
        }
    }
}

/// TERMINATING: the workers stopped, outputs saved, TERMINATED.
async fn terminate(
    jobs: &Jobs,
    row: &JobRow,
    spec: &JobSpec,
    _why: Option<&str>,
) -> Result<(), JobError> {
    let id = row.id.as_str();
    let workers = {
        let mut conn = jobs.store().pool.acquire().await?;
        rows::workers(&mut conn, id, row.attempt).await?
    };
    let root = logs_root(jobs);
    let cap = jobs.inner.settings.log_mb * 1024 * 1024;
    let ran = row.started_at.is_some();
    for w in workers.iter().filter(|w| w.ended_at.is_none()) {
        let Some(h) = &w.handle else { continue };
        stop_worker(jobs, h).await;
        if let Ok(mut log) = WorkerLog::open(&root, id, row.attempt, w.rank, cap) {
            if let Some(agent) = jobs.inner.backend.engine_log_dir(h) {
                log.pump(&agent, WORKER_LOG, &root, id, row.attempt, w.rank);
            }
            log.platform("[stop] The training job has been manually stopped.");
        }
        let mut tx = jobs.store().write().await?;
        rows::worker_ended(&mut tx, id, row.attempt, w.rank, None, &crate::store::now()).await?;
        tx.commit().await?;
    }
    for rank in (0..spec.nodes).filter(|_| !is_wasm(spec)) {
        if let Err(e) = jobs.inner.backend.remove_worker(&worker_id(id, rank)).await {
            tracing::warn!(job = %id, error = %e, "removing a training worker failed");
        }
    }
    if ran {
        let _ = save_outputs(jobs, row, spec).await;
        save_logs(jobs, row, spec).await;
    }
    let seconds = seconds_since(row.started_at.as_deref());
    let mut tx = jobs.store().write().await?;
    rows::set_attempt_ended(&mut tx, id, seconds, None, &crate::store::now()).await?;
    notify_in(&mut tx, row, spec, "JobTerminated", JobStatus::Terminated).await?;
    let moved = Transition::new(id, &[JobStatus::Terminating], JobStatus::Terminated)
        .resource_event(Row::of(id, None, TrainingEvent::Stopped))
        .apply(&mut tx)
        .await?;
    if moved {
        tx.commit().await?;
    }
    Ok(())
}

/// DELETING: every worker stopped and removed, the job's dirs and logs gone, its row too.
pub(super) async fn finish_delete(jobs: &Jobs, id: &str) -> Result<(), JobError> {
    let row = load(jobs.store(), id).await?;
    if let Some(row) = &row {
        let nodes = decode(row).map(|s| s.nodes).unwrap_or(1);
        let workers = {
            let mut conn = jobs.store().pool.acquire().await?;
            rows::workers(&mut conn, id, row.attempt).await?
        };
        for w in workers.iter().filter(|w| w.ended_at.is_none()) {
            if let Some(h) = &w.handle {
                stop_worker(jobs, h).await;
            }
        }
        for r in 0..nodes.max(workers.len() as u32) {
            if let Err(e) = jobs.inner.backend.remove_worker(&worker_id(id, r)).await {
                tracing::warn!(job = %id, error = %e, "removing a training worker failed");
            }
        }
    }
    let _ = tokio::fs::remove_dir_all(job_dir(jobs, id)).await;
    let _ = tokio::fs::remove_dir_all(joblogs::job_dir(&logs_root(jobs), id)).await;
    let _ = tokio::fs::remove_dir_all(wasm_stage_of(jobs, row.as_ref())).await;
    let mut tx = jobs.store().write().await?;
    crate::notify::forget(&mut tx, id).await?;
    rows::delete(&mut tx, id).await?;
    crate::store::operations::end::<JobStatus>(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) fn log_path(jobs: &Jobs, id: &str, attempt: i64, rank: i64) -> PathBuf {
    joblogs::file(&logs_root(jobs), id, attempt, rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_never_leave_their_folder() {
        assert_eq!(relative("a/", "a/x/y.py"), Some(PathBuf::from("x/y.py")));
        for bad in [
            "a/",
            "a/x/",
            "a/../etc/passwd",
            "a/x/../../y",
            "a//y",
            "b/x",
            "a/./x",
        ] {
            assert_eq!(relative("a/", bad), None, "{bad}");
        }
    }

    #[test]
    fn the_precheck_names_the_item_that_failed() {
        let gib = 1u64 << 30;
        let ok = precheck(Ok(2 * gib), 0, None);
        assert_eq!(ok, vec![("disk-size", Ok(()))], "a CPU job: no gpu-check");
        let low = precheck(Ok(gib / 2), 0, None);
        assert_eq!(
            low[0].1,
            Err("disk-size: 512 MiB free where the job's files are; at least 1024 MiB".into())
        );
        assert!(
            precheck(Err("statvfs x: gone".into()), 0, None)[0]
                .1
                .is_err()
        );
        let gpus = precheck(Ok(2 * gib), 4, Some(None));
        assert_eq!(gpus[1], ("gpu-check", Ok(())));
        let gone = precheck(Ok(2 * gib), 4, Some(Some((2, "NVIDIA GPU"))));
        assert_eq!(
            gone[1].1,
            Err(
                "gpu-check: the workers need 4 NVIDIA GPU(s) and 2 are visible on this host".into()
            )
        );
    }
}
