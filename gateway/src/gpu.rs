//! GPU use per process, read from NVIDIA's management library (NVML) for idle detection.
//!
//! NVML (`libnvidia-ml.so.1`) is loaded at run time, so the gateway builds and runs on hosts
//! without it: there [`meter`] is `None`, and idle detection simply has no GPU source. Where
//! it loads, each sample asks every device for the per-process SM utilisation it recorded
//! since the consumer's previous sample (`nvmlDeviceGetProcessUtilization`; each consumer
//! keeps its own [`Cursor`], so the notebooks' idle loop and every training job read the same
//! samples without taking them from each other). The process IDs are those of the host's PID
//! namespace, the same ones the backends report for a notebook's or a worker's processes
//! ([`crate::backends::Usage`]), so the same reading serves process and container ones.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

/// The host's GPUs.
pub struct GpuMeter {
    nvml: Nvml,
    devices: u32,
}

/// Where one consumer's last reading of each device stopped: per device index, the newest
/// sample timestamp it has seen (µs, NVML's clock). A new cursor reads what NVML still keeps.
#[derive(Debug, Default, Clone)]
pub struct Cursor(Vec<u64>);

static METER: OnceLock<Option<Mutex<GpuMeter>>> = OnceLock::new();

/// The process-wide meter: `None` where there is no NVIDIA driver or no GPU. Opened on first
/// use; the outcome is logged once.
pub fn meter() -> Option<&'static Mutex<GpuMeter>> {
    METER
        .get_or_init(|| match GpuMeter::open() {
            Ok(Some(m)) => {
                tracing::info!(
                    gpus = m.devices,
                    "NVML loaded: GPU use counts as notebook activity"
                );
                Some(Mutex::new(m))
            }
            Ok(None) => {
                tracing::info!("NVML loaded but it reports no GPU: no GPU activity source");
                None
            }
            Err(e) => {
                tracing::info!(reason = %e, "no NVIDIA driver (NVML): no GPU activity source");
                None
            }
        })
        .as_ref()
}

/// One GPU as `GET /v1/accelerators` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    /// Percent of the last sample period a kernel ran.
    pub utilization_percent: u32,
}

/// The host's GPUs (empty without a driver). Fields a device cannot tell are left empty/0.
pub fn inventory() -> Vec<GpuInfo> {
    let Some(m) = meter() else {
        return Vec::new();
    };
    let Ok(m) = m.lock() else {
        return Vec::new();
    };
    (0..m.devices)
        .filter_map(|index| {
            let d = m.nvml.device_by_index(index).ok()?;
            let mem = d.memory_info().ok();
            Some(GpuInfo {
                index,
                uuid: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                memory_bytes: mem.as_ref().map(|m| m.total).unwrap_or(0),
                memory_used_bytes: mem.as_ref().map(|m| m.used).unwrap_or(0),
                utilization_percent: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
            })
        })
        .collect()
}

/// Picks `n` of `all` that are not in `taken`, in order; `None` when too few are free.
pub fn allocate(
    all: &[String],
    taken: &std::collections::HashSet<String>,
    n: usize,
) -> Option<Vec<String>> {
    let free: Vec<String> = all
        .iter()
        .filter(|d| !taken.contains(*d))
        .take(n)
        .cloned()
        .collect();
    (free.len() == n).then_some(free)
}

/// Ascend NPUs on this host (`/dev/davinci0`, `/dev/davinci1`, …), in index order.
pub fn npu_devices() -> Vec<String> {
    let mut found: Vec<(u32, String)> = std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    let n: u32 = name.strip_prefix("davinci")?.parse().ok()?;
                    Some((n, format!("/dev/{name}")))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The control devices an Ascend NPU container needs besides its `/dev/davinciN`.
pub const NPU_CONTROL_DEVICES: [&str; 3] =
    ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"];

/// How many NVIDIA GPUs this host has (0 without a driver).
pub fn device_count() -> u32 {
    meter()
        .and_then(|m| m.lock().ok().map(|m| m.devices))
        .unwrap_or(0)
}

impl GpuMeter {
    /// Loads NVML; `Ok(None)` when it works but sees no device.
    fn open() -> Result<Option<GpuMeter>, NvmlError> {
        let nvml = Nvml::init()?;
        let n = nvml.device_count()?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(GpuMeter { nvml, devices: n }))
    }

    /// pid → highest SM utilisation (percent) any device recorded for it since `cursor`'s
    /// previous reading; moves the cursor on. A device that cannot tell (too old, or an
    /// error) contributes nothing.
    pub fn sample(&self, cursor: &mut Cursor) -> HashMap<u32, u32> {
        let mut by_pid = HashMap::new();
        cursor.0.resize(self.devices as usize, 0);
        for (index, last) in cursor.0.iter_mut().enumerate() {
            let device = match self.nvml.device_by_index(index as u32) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(index, error = %e, "NVML device");
                    continue;
                }
            };
            let samples = match device.process_utilization_stats(*last) {
                Ok(s) => s,
                // No process used the device since `last`.
                Err(NvmlError::NotFound) => continue,
                Err(e) => {
                    tracing::debug!(index, error = %e, "NVML process utilisation");
                    continue;
                }
            };
            for s in samples {
                *last = (*last).max(s.timestamp);
                let u = by_pid.entry(s.pid).or_insert(0);
                *u = (*u).max(s.sm_util);
            }
        }
        by_pid
    }
}

/// One reading for the consumer of `cursor` (pid → SM percent); `None` without NVML.
pub fn read(cursor: &mut Cursor) -> Option<HashMap<u32, u32>> {
    let m = meter()?;
    Some(match m.lock() {
        Ok(m) => m.sample(cursor),
        Err(_) => HashMap::new(),
    })
}

/// The highest SM utilisation (percent) any of `pids` had in `util` (a [`read`]); 0 when
/// none of them used a GPU.
pub fn peak(util: &HashMap<u32, u32>, pids: &[u32]) -> u32 {
    pids.iter()
        .filter_map(|p| util.get(p))
        .copied()
        .max()
        .unwrap_or(0)
}

/// Whether any of `pids` used a GPU at `threshold` percent or more in `util` (a
/// [`read`]).
pub fn busy(util: &HashMap<u32, u32>, pids: &[u32], threshold: f64) -> bool {
    pids.iter()
        .any(|p| util.get(p).is_some_and(|&u| f64::from(u) >= threshold))
}

/// What a flavor needing `need` accelerators of `kind` (`gpu`, else NPUs) lacks on this
/// host: `Some((have, "NVIDIA GPU"))` when the host has fewer than `need`, whatever is
/// in use.
pub fn shortfall(kind: &str, need: u32) -> Option<(u32, &'static str)> {
    if need == 0 {
        return None;
    }
    let (have, what) = match kind {
        "gpu" => (device_count(), "NVIDIA GPU"),
        _ => (npu_devices().len() as u32, "NPU"),
    };
    (have < need).then_some((have, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_never_hands_out_a_taken_device() {
        let all: Vec<String> = ["g0", "g1", "g2"].iter().map(|s| s.to_string()).collect();
        let mut taken = std::collections::HashSet::new();
        let first = allocate(&all, &taken, 2).unwrap();
        assert_eq!(first, ["g0", "g1"]);
        taken.extend(first);
        assert_eq!(allocate(&all, &taken, 1).unwrap(), ["g2"]);
        assert_eq!(
            allocate(&all, &taken, 2),
            None,
            "one is free, two are asked for"
        );
        assert_eq!(allocate(&all, &taken, 0).unwrap(), Vec::<String>::new());
        assert!(inventory().len() as u32 == device_count());
    }

    #[test]
    fn busy_counts_only_the_notebooks_processes_at_the_threshold() {
        let util = HashMap::from([(10, 50), (11, 3), (99, 100)]);
        assert!(busy(&util, &[1, 10], 10.0));
        assert!(!busy(&util, &[11, 12], 10.0), "3 % is below 10 %");
        assert!(busy(&util, &[11], 3.0), "at the threshold counts");
        assert!(
            !busy(&util, &[1, 2], 10.0),
            "another notebook's process is not ours"
        );
        assert!(!busy(&HashMap::new(), &[10], 10.0));
        assert_eq!(
            peak(&util, &[1, 10, 11]),
            50,
            "the busiest of the job's processes"
        );
        assert_eq!(peak(&util, &[1, 2]), 0, "another job's process is not ours");
    }

    /// On a machine without an NVIDIA driver (this project's CI) the meter is absent, and asking
    /// for it again does not retry or fail; with a driver it reads without error.
    #[test]
    fn meter_is_absent_without_a_driver_and_reads_with_one() {
        let driver = std::path::Path::new("/proc/driver/nvidia/version").exists();
        match meter() {
            None => assert!(!driver, "a driver is loaded but NVML did not open"),
            Some(m) => {
                let _ = m.lock().unwrap().sample(&mut Cursor::default());
            }
        }
        assert_eq!(meter().is_some(), meter().is_some());
    }
}
