//! Auto-stop: a running notebook's lease (`auto_stop.duration_hours`, seed AS-01..05).
//!
//! ```text
//! → RUNNING          stop_at = now + duration (if auto-stop is on), stored: survives restarts
//! stop_at − warning  StopNotebookLeaseExpired "will automatically stop" (once per deadline)
//! renew              stop_at = max(stop_at, now) + hours (at most 72 h ahead); warning again
//! stop_at            RUNNING → STOPPING with reason lease_expired: event, audit row, stop
//! ```
//!
//! Idle stops (`auto_stop.idle_timeout_seconds`, default `ATELIER_IDLE_TIMEOUT`, 0 = off):
//!
//! ```text
//! sources (activity::Source), each with its last time:
//!   proxy   user actions through the proxy (not reads, not pings or reconnects)
//!   kernel  a kernel busy (asked from the notebook's Jupyter server)
//!   ssh     SSH channel traffic, or an `exec` command still running
//!   cpu     the notebook's processes above ATELIER_IDLE_CPU_PERCENT of one CPU
//!   gpu     any of its processes above ATELIER_IDLE_GPU_PERCENT of a GPU (NVML; absent
//!           without an NVIDIA driver)
//! idle deadline = max(last activity, running since) + timeout
//! deadline − warning  StopNotebookResourceIdle "will automatically stop" (once per idle period)
//! deadline            RUNNING → STOPPING with reason idle and the sources' times
//! ```
//!
//! One loop checks every running notebook each second, so a deadline that passed while the
//! gateway was down is acted on right after it starts (the sources' times are stored with
//! the notebook every few seconds).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{Lifecycle, RUNNING};
use crate::activity::{self, Source};
use crate::store::events::{self, EventKind};
use crate::store::notebooks::NotebookRow;
use crate::store::{self, notebooks as rows};

/// How often deadlines are checked.
const TICK: Duration = Duration::from_secs(1);

/// Why the gateway stopped a notebook by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    LeaseExpired,
    Idle,
}

impl Reason {
    pub const ALL: [Reason; 2] = [Reason::LeaseExpired, Reason::Idle];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LeaseExpired => "lease_expired",
            Reason::Idle => "idle",
        }
    }

    pub fn event(self) -> EventKind {
        match self {
            Reason::LeaseExpired => EventKind::StopNotebookLeaseExpired,
            Reason::Idle => EventKind::StopNotebookResourceIdle,
        }
    }
}

/// The deadline `hours` lease hours after `from`.
pub fn deadline(from: OffsetDateTime, hours: i64, lease_hour_secs: u64) -> OffsetDateTime {
    let secs = i64::try_from(lease_hour_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(hours);
    from.saturating_add(time::Duration::seconds(secs))
}

pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Seconds left until `stop_at` (negative once it passed).
pub fn remaining_seconds(stop_at: &str) -> Option<i64> {
    let at = parse_time(stop_at)?;
    Some((at - OffsetDateTime::now_utc()).whole_seconds())
}

/// Checks deadlines every second until `stop` is cancelled.
pub async fn run_loop(lc: Lifecycle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle = Sampler::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = check(&lc, &mut idle).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "checking auto-stop deadlines failed"
            );
        }
    }
}

/// What idle detection remembers between passes.
#[derive(Default)]
pub struct Sampler {
    /// notebook id → when its kernels and CPU were last sampled, and the CPU seconds then.
    last: HashMap<String, (Instant, Option<f64>)>,
    /// Where this loop's last GPU reading stopped.
    gpu: crate::gpu::Cursor,
}

/// How often a notebook's kernels and CPU are sampled: a fifth of its idle timeout, between
/// 1 and 30 seconds.
fn sample_every(idle_timeout: i64) -> Duration {
    Duration::from_secs((idle_timeout / 5).clamp(1, 30) as u64)
}

/// The idle timeout that applies to a notebook (0: off).
pub fn idle_timeout(lc: &Lifecycle, row: &NotebookRow) -> i64 {
    row.idle_timeout_seconds
        .unwrap_or_else(|| i64::try_from(lc.settings().idle_timeout_secs).unwrap_or(i64::MAX))
}

/// Whether any kernel of the notebook's Jupyter server is busy.
async fn kernels_busy(lc: &Lifecycle, row: &NotebookRow) -> bool {
    let Some(handle) = row.handle.as_ref() else {
        return false;
    };
    let Ok(up) = lc.backend().upstream(handle) else {
        return false;
    };
    let path = format!("/nb/{}/api/kernels", row.id);
    let reply =
        crate::backends::runconf::jupyter_get(&up.endpoint, &path, &up.token, 4 << 20).await;
    let Ok((status, body)) = reply else {
        return false;
    };
    let Ok(kernels) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    if !status.is_success() {
        return false;
    }
    kernels.as_array().is_some_and(|ks| {
        ks.iter()
            .any(|k| k.get("execution_state").and_then(|s| s.as_str()) == Some("busy"))
    })
}

/// What one sample of a notebook found: a busy kernel, and its processes.
struct Probe {
    busy: bool,
    usage: Option<crate::backends::Usage>,
    at: Instant,
}

/// Asks a notebook's Jupyter server and backend what idle detection cannot see go by.
async fn probe(lc: &Lifecycle, row: &NotebookRow) -> Probe {
    let busy = kernels_busy(lc, row).await;
    let usage = match row.handle.as_ref() {
        Some(h) => lc.backend().usage(h).await,
        None => None,
    };
    Probe {
        busy,
        usage,
        at: Instant::now(),
    }
}

/// Samples the sources the gateway has to ask for (busy kernels, CPU, GPU) of every notebook
/// whose turn it is, all at once, and records what they show as activity; running SSH
/// commands count at every pass.
async fn sample(lc: &Lifecycle, sampler: &mut Sampler, running: &[NotebookRow]) {
    let clocks = lc.clocks();
    let mut due = Vec::new();
    for row in running {
        let timeout = idle_timeout(lc, row);
        if timeout <= 0 {
            sampler.last.remove(&row.id);
            continue;
        }
        if clocks.ssh_exec_running(&row.id) > 0 {
            clocks.touch_notebook(&row.id, Source::Ssh);
        }
        if sampler
            .last
            .get(&row.id)
            .is_none_or(|(at, _)| at.elapsed() >= sample_every(timeout))
        {
            due.push(row);
        }
    }
    if due.is_empty() {
        return;
    }
    let probes = futures_util::future::join_all(due.iter().map(|row| probe(lc, row))).await;
    // GPU use since the previous reading, per host pid (NVML is quick: no need to leave the
    // loop's task for it).
    let gpu = crate::gpu::read(&mut sampler.gpu);
    for (row, p) in due.into_iter().zip(probes) {
        if p.busy {
            clocks.touch_notebook(&row.id, Source::Kernel);
        }
        if let (Some(util), Some(usage)) = (&gpu, &p.usage)
            && crate::gpu::busy(util, &usage.pids, lc.settings().idle_gpu_percent)
        {
            clocks.touch_notebook(&row.id, Source::Gpu);
        }
        let cpu = p.usage.map(|u| u.cpu_seconds);
        if let (Some(cpu), Some((then, Some(before)))) = (cpu, sampler.last.get(&row.id)) {
            let wall = p.at.duration_since(*then).as_secs_f64();
            if wall > 0.0
                && (cpu - before).max(0.0) / wall * 100.0 >= lc.settings().idle_cpu_percent
            {
                clocks.touch_notebook(&row.id, Source::Cpu);
            }
        }
        sampler.last.insert(row.id.clone(), (p.at, cpu));
    }
}

fn at_text(secs: i64) -> String {
    if secs <= 0 {
        return "-".into();
    }
    OffsetDateTime::from_unix_timestamp(secs)
        .map(store::format_time)
        .unwrap_or_else(|_| "-".into())
}

/// The idle picture of a running notebook: sources' times, the newest activity (or when it
/// started running), and the idle deadline.
pub struct Idle {
    pub sources: activity::Activity,
    pub last: i64,
    pub deadline: Option<i64>,
}

pub fn idle_of(lc: &Lifecycle, row: &NotebookRow) -> Idle {
    let clocks = lc.clocks();
    clocks.load(&row.id, row.activity.as_deref());
    let sources = clocks.get(&row.id).unwrap_or_default();
    let since = parse_time(&row.updated_at)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0);
    let last = sources.iter().copied().max().unwrap_or(0).max(since);
    let timeout = idle_timeout(lc, row);
    Idle {
        sources,
        last,
        deadline: (timeout > 0 && row.status == RUNNING).then(|| last.saturating_add(timeout)),
    }
}

/// The activity sources this gateway can see: GPU only where NVML is present.
pub fn sources() -> &'static [Source] {
    if crate::gpu::meter().is_some() {
        &Source::ALL
    } else {
        &Source::ALL[..4]
    }
}

/// The sources' last times as `proxy T, kernel T, ssh T, cpu T` (`, gpu T` with GPUs).
pub fn snapshot(sources: &activity::Activity) -> String {
    self::sources()
        .iter()
        .map(|s| format!("{} {}", s.as_str(), at_text(sources[*s as usize])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The idle half of a pass for one notebook.
async fn check_idle(
    lc: &Lifecycle,
    sampler: &mut Sampler,
    row: &NotebookRow,
    now: OffsetDateTime,
    warning: i64,
) -> anyhow::Result<()> {
    let timeout = idle_timeout(lc, row);
    if timeout <= 0 {
        return Ok(());
    }
    let idle = idle_of(lc, row);
    let Some(deadline) = idle.deadline else {
        return Ok(());
    };
    let now = now.unix_timestamp();
    if now >= deadline {
        let detail = format!(
            "reason {}: no activity for {timeout} s, since {}; last activity: {}",
            Reason::Idle.as_str(),
            at_text(idle.last),
            snapshot(&idle.sources)
        );
        sampler.last.remove(&row.id);
        return lc.auto_stop(row, Reason::Idle, &detail).await;
    }
    let warn_at = deadline.saturating_sub(warning).max(idle.last);
    let warned_this_period = row
        .idle_warned_at
        .as_deref()
        .and_then(parse_time)
        // Strictly after: activity in the second of the warning starts a period that gets
        // its own warning (a spare warning, never a stop without one).
        .is_some_and(|w| w.unix_timestamp() > idle.last);
    if now >= warn_at && !warned_this_period {
        let mut tx = lc.store().write().await?;
        rows::set_idle_warned(&mut tx, &row.id, Some(&store::format_time(lc.now()))).await?;
        let detail = format!(
            "will stop at {} unless there is activity (idle for {} s; last activity: {})",
            at_text(deadline),
            now - idle.last,
            snapshot(&idle.sources)
        );
        events::record(
            &mut tx,
            &row.id,
            EventKind::StopNotebookResourceIdle,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(notebook = %row.id, "idle-stop warning");
    }
    Ok(())
}

/// One pass: warn before deadlines, stop at them.
pub async fn check(lc: &Lifecycle, sampler: &mut Sampler) -> anyhow::Result<()> {
    let running = {
        let mut conn = lc.store().pool.acquire().await?;
        rows::in_statuses(&mut conn, &[RUNNING]).await?
    };
    let now = lc.now();
    let warning_secs = i64::try_from(lc.settings().stop_warning_secs).unwrap_or(i64::MAX);
    let warning = time::Duration::seconds(warning_secs);
    sampler
        .last
        .retain(|id, _| running.iter().any(|r| &r.id == id));
    sample(lc, sampler, &running).await;
    for row in running {
        check_idle(lc, sampler, &row, now, warning_secs).await?;
        if !row.auto_stop_enabled || row.status != RUNNING {
            continue;
        }
        let Some(stop_at) = row.stop_at.as_deref().and_then(parse_time) else {
            continue;
        };
        let at = store::format_time(stop_at);
        if now >= stop_at {
            let detail = format!(
                "reason {}: the auto-stop time {at} was reached ({} h lease)",
                Reason::LeaseExpired.as_str(),
                row.auto_stop_hours
            );
            lc.auto_stop(&row, Reason::LeaseExpired, &detail).await?;
        } else if now >= stop_at - warning && row.stop_warned_at.is_none() {
            let mut tx = lc.store().write().await?;
            if rows::mark_stop_warned(&mut tx, &row.id, &store::now()).await? {
                let detail = format!(
                    "will stop at {at} unless renewed (atelier notebook renew {})",
                    row.name
                );
                events::record(
                    &mut tx,
                    &row.id,
                    EventKind::StopNotebookLeaseExpired,
                    Some(&detail),
                )
                .await?;
                tracing::info!(notebook = %row.id, stop_at = %at, "auto-stop warning");
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_scale_with_the_lease_hour() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(deadline(t0, 2, 3600) - t0, time::Duration::hours(2));
        assert_eq!(deadline(t0, 3, 5) - t0, time::Duration::seconds(15));
        // No overflow panics on absurd values.
        let _ = deadline(t0, i64::MAX, u64::MAX);
    }

    #[test]
    fn remaining_time_is_signed() {
        let past = store::format_time(OffsetDateTime::now_utc() - time::Duration::seconds(30));
        assert!(remaining_seconds(&past).unwrap() <= -29);
        let future = store::format_time(OffsetDateTime::now_utc() + time::Duration::seconds(90));
        let left = remaining_seconds(&future).unwrap();
        assert!((1..=90).contains(&left), "{left}");
        assert_eq!(remaining_seconds("not a time"), None);
    }
}
