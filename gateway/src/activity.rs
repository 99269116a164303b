//! The per-notebook activity clocks, one per source (user actions through the proxy, busy
//! kernels, SSH, CPU, GPU), that auto-stop reads; kept in memory, written to the store every
//! few seconds ([`ActivityClocks::flush`]). Invariant: a clock only moves forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::lifecycle::clock::Clock;
use crate::routing::Route;
use crate::store::{self, Store, notebooks as rows};

/// What auto-stop knows of each notebook's activity, shared by every front door.
#[derive(Clone)]
pub struct ActivityClocks {
    store: Store,
    /// The lifecycle's clock, so idle deadlines and activity read the same time.
    clock: Arc<dyn Clock>,
    /// notebook id → the last activity per source.
    activity: Arc<Mutex<HashMap<String, Seen>>>,
    /// notebook id → SSH `exec` commands running.
    ssh_running: Arc<Mutex<HashMap<String, usize>>>,
}

impl ActivityClocks {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        ActivityClocks {
            store,
            clock,
            activity: Arc::new(Mutex::new(HashMap::new())),
            ssh_running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Records a user action through the proxy (not polling); cheap enough for every
    /// request (the shared map is touched at most once a second per route).
    pub fn touch(&self, route: &Route) {
        let now = self.clock.now().unix_timestamp();
        if !route.first_touch_in(now) {
            return;
        }
        self.record(&route.notebook_id, Source::Proxy, now);
    }

    /// Records activity of one source on a notebook.
    pub fn touch_notebook(&self, notebook_id: &str, source: Source) {
        self.record(notebook_id, source, self.clock.now().unix_timestamp());
    }

    fn record(&self, notebook_id: &str, source: Source, now: i64) {
        if let Ok(mut map) = self.activity.lock() {
            let seen = match map.get_mut(notebook_id) {
                Some(s) => s,
                None => map.entry(notebook_id.to_owned()).or_default(),
            };
            let slot = &mut seen.at[source as usize];
            if *slot < now {
                *slot = now;
                seen.dirty = true;
            }
        }
    }

    /// The last activity per source known in memory (since this gateway started, or loaded
    /// from the store with [`ActivityClocks::load`]).
    pub fn get(&self, notebook_id: &str) -> Option<Activity> {
        let map = self.activity.lock().ok()?;
        map.get(notebook_id).map(|s| s.at)
    }

    /// Seeds the in-memory clocks from what the store had (the `activity` JSON), once per
    /// notebook and gateway run; newer times in memory win.
    pub fn load(&self, notebook_id: &str, stored: Option<&str>) {
        if let Ok(mut map) = self.activity.lock() {
            let seen = map.entry(notebook_id.to_owned()).or_default();
            if std::mem::replace(&mut seen.loaded, true) {
                return;
            }
            let stored = stored.map(parse_activity_json).unwrap_or_default();
            for (slot, at) in seen.at.iter_mut().zip(&stored) {
                *slot = (*slot).max(*at);
            }
        }
    }

    /// Forgets a deleted notebook's clocks.
    pub fn forget(&self, notebook_id: &str) {
        if let Ok(mut map) = self.activity.lock() {
            map.remove(notebook_id);
        }
    }

    /// SSH `exec` commands still running per notebook (work, even when silent).
    pub fn ssh_exec_started(&self, notebook_id: &str) {
        if let Ok(mut map) = self.ssh_running.lock() {
            *map.entry(notebook_id.to_owned()).or_default() += 1;
        }
    }

    pub fn ssh_exec_ended(&self, notebook_id: &str) {
        if let Ok(mut map) = self.ssh_running.lock()
            && let Some(n) = map.get_mut(notebook_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(notebook_id);
            }
        }
    }

    pub fn ssh_exec_running(&self, notebook_id: &str) -> usize {
        self.ssh_running
            .lock()
            .ok()
            .and_then(|m| m.get(notebook_id).copied())
            .unwrap_or(0)
    }

    /// Writes the activity recorded since the last flush: each source's time and
    /// `last_activity_at` (the newest of them).
    pub async fn flush(&self) -> anyhow::Result<()> {
        let pending: Vec<(String, Activity)> = match self.activity.lock() {
            Ok(mut map) => map
                .iter_mut()
                .filter(|(_, s)| s.dirty)
                .map(|(id, s)| {
                    s.dirty = false;
                    (id.clone(), s.at)
                })
                .collect(),
            Err(_) => return Ok(()),
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        for (id, at) in pending {
            let newest = at.iter().copied().max().unwrap_or(0);
            if newest == 0 {
                continue;
            }
            let newest =
                OffsetDateTime::from_unix_timestamp(newest).unwrap_or_else(|_| self.clock.now());
            rows::set_activity(
                &mut tx,
                &id,
                &store::format_time(newest),
                &activity_json(&at),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Where activity comes from (auto-stop's idle detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A user action through the proxy: a request other than a read, a kernel
    /// `execute_request`/`input_reply`, terminal input.
    Proxy = 0,
    /// A kernel whose `execution_state` is `busy`.
    Kernel = 1,
    /// SSH channel traffic, or an SSH `exec` command still running.
    Ssh = 2,
    /// The notebook's processes using CPU above the threshold.
    Cpu = 3,
    /// Its GPUs busy above the threshold (where it has GPUs and a driver).
    Gpu = 4,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Proxy,
        Source::Kernel,
        Source::Ssh,
        Source::Cpu,
        Source::Gpu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Proxy => "proxy",
            Source::Kernel => "kernel",
            Source::Ssh => "ssh",
            Source::Cpu => "cpu",
            Source::Gpu => "gpu",
        }
    }
}

/// Unix seconds of the last activity per [`Source`] (0: never).
pub type Activity = [i64; 5];

#[derive(Debug, Default)]
struct Seen {
    at: Activity,
    /// Changed since the last flush.
    dirty: bool,
    /// The stored times were merged in ([`ActivityClocks::load`]).
    loaded: bool,
}

/// `{"proxy": 1764300000, …}` (sources never seen left out).
pub fn activity_json(at: &Activity) -> String {
    let map: serde_json::Map<String, serde_json::Value> = Source::ALL
        .iter()
        .filter(|s| at[**s as usize] > 0)
        .map(|s| (s.as_str().to_owned(), at[*s as usize].into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub fn parse_activity_json(text: &str) -> Activity {
    let mut at = [0; 5];
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        for s in Source::ALL {
            if let Some(v) = map.get(s.as_str()).and_then(|v| v.as_i64()) {
                at[s as usize] = v;
            }
        }
    }
    at
}
