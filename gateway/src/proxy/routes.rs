//! Route lookup for the proxy: notebook id → owner, status and upstream, cached in memory
//! (rebuilt from the store on a miss) and invalidated by every lifecycle transition.
//! Also the per-notebook activity clocks, one per source (user actions through the proxy,
//! busy kernels, SSH, CPU), that auto-stop reads; flushed to the store every few seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::backends::{Backend, Handle, Upstream};
use crate::cache::TtlCache;
use crate::lifecycle::notebook::NotebookStatus;
use crate::store::{self, Store, notebooks as rows};

#[derive(Debug)]
pub struct Route {
    pub notebook_id: String,
    pub name: String,
    pub owner_id: String,
    pub status: NotebookStatus,
    pub target: Option<Target>,
    /// Unix second of the last request recorded, so most requests skip the activity map.
    last_touch: AtomicI64,
}

/// An upstream in the form the proxy uses on every request, prepared once per route.
pub struct Target {
    pub endpoint: super::upstream::Endpoint,
    /// The `Host` sent when the client sent none (HTTP/2 without an authority).
    pub authority: http::uri::Authority,
    /// `Authorization: token …` for the notebook's server.
    pub auth_header: http::HeaderValue,
    /// The secret itself, to scrub it from responses.
    pub token: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Target {
    pub fn new(u: &Upstream) -> Option<Target> {
        let (endpoint, authority) = super::upstream::Endpoint::of(&u.endpoint)?;
        Some(Target {
            endpoint,
            authority,
            auth_header: http::HeaderValue::from_str(&format!("token {}", u.token)).ok()?,
            token: u.token.clone(),
        })
    }
}

#[derive(Clone)]
pub struct RouteTable {
    cache: Arc<TtlCache<String, Arc<Route>>>,
    store: Store,
    backend: Arc<dyn Backend>,
    /// notebook id → the last activity per source.
    activity: Arc<Mutex<HashMap<String, Seen>>>,
    /// notebook id → SSH `exec` commands running.
    ssh_running: Arc<Mutex<HashMap<String, usize>>>,
}

impl RouteTable {
    pub fn new(store: Store, backend: Arc<dyn Backend>) -> Self {
        RouteTable {
            // The TTL only bounds staleness if another gateway changes the store; this
            // gateway's own transitions invalidate at once.
            cache: Arc::new(TtlCache::new(100_000, Duration::from_secs(30))),
            store,
            backend,
            activity: Arc::new(Mutex::new(HashMap::new())),
            ssh_running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Arc<Route>>> {
        if let Some(r) = self.cache.get(id) {
            return Ok(Some(r));
        }
        let mut conn = self.store.pool.acquire().await?;
        let Some(row) = rows::get(&mut conn, id).await? else {
            return Ok(None);
        };
        let upstream = row
            .handle
            .as_deref()
            .and_then(|h| serde_json::from_str::<Handle>(h).ok())
            .and_then(|h| self.backend.upstream(&h).ok());
        let route = Arc::new(Route {
            notebook_id: row.id,
            name: row.name,
            owner_id: row.owner_id,
            status: row.status,
            target: upstream.as_ref().and_then(Target::new),
            last_touch: AtomicI64::new(0),
        });
        self.cache.insert(id.to_owned(), route.clone());
        Ok(Some(route))
    }

    pub fn invalidate(&self, id: &str) {
        self.cache.invalidate(id);
    }

    /// Records a user action through the proxy (not polling); cheap enough for every
    /// request (the shared map is touched at most once a second per route).
    pub fn touch(&self, route: &Route) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if route.last_touch.swap(now, Ordering::Relaxed) == now {
            return;
        }
        self.record(&route.notebook_id, Source::Proxy, now);
    }

    /// Records activity of one source on a notebook.
    pub fn touch_notebook(&self, notebook_id: &str, source: Source) {
        self.record(
            notebook_id,
            source,
            OffsetDateTime::now_utc().unix_timestamp(),
        );
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
    /// from the store with [`RouteTable::load_activity`]).
    pub fn activity(&self, notebook_id: &str) -> Option<Activity> {
        let map = self.activity.lock().ok()?;
        map.get(notebook_id).map(|s| s.at)
    }

    /// Seeds the in-memory clocks from what the store had (the `activity` JSON), once per
    /// notebook and gateway run; newer times in memory win.
    pub fn load_activity(&self, notebook_id: &str, stored: Option<&str>) {
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
    pub fn forget_activity(&self, notebook_id: &str) {
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
    pub async fn flush_activity(&self) -> anyhow::Result<()> {
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
            let newest = OffsetDateTime::from_unix_timestamp(newest)
                .unwrap_or_else(|_| OffsetDateTime::now_utc());
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
    /// The stored times were merged in ([`RouteTable::load_activity`]).
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
