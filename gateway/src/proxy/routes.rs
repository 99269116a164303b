//! Route lookup for the proxy: notebook id → owner, status and upstream, cached in memory
//! (rebuilt from the store on a miss) and invalidated by every lifecycle transition.
//! Also the per-notebook activity clock that the proxy ticks and auto-stop will read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::backends::{Backend, Handle, Upstream};
use crate::cache::TtlCache;
use crate::store::{self, Store, notebooks as rows};

#[derive(Debug)]
pub struct Route {
    pub notebook_id: String,
    pub name: String,
    pub owner_id: String,
    pub status: String,
    pub target: Option<Target>,
    /// Unix second of the last request recorded, so most requests skip the activity map.
    last_touch: AtomicI64,
}

/// An upstream in the form the proxy uses on every request, prepared once per route.
pub struct Target {
    pub authority: http::uri::Authority,
    /// `Authorization: token …` for the notebook's server.
    pub auth_header: http::HeaderValue,
    /// The secret itself, to scrub it from responses.
    pub token: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Target {
    fn new(u: &Upstream) -> Option<Target> {
        Some(Target {
            authority: u.addr.to_string().parse().ok()?,
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
    /// notebook id → unix time (seconds) of the newest proxied request not yet written.
    activity: Arc<Mutex<HashMap<String, i64>>>,
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

    /// Records traffic for a notebook; cheap enough for every proxied request (the shared
    /// map is touched at most once a second per route).
    pub fn touch(&self, route: &Route) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if route.last_touch.swap(now, Ordering::Relaxed) == now {
            return;
        }
        if let Ok(mut map) = self.activity.lock() {
            match map.get_mut(&route.notebook_id) {
                Some(t) => *t = now,
                None => {
                    map.insert(route.notebook_id.clone(), now);
                }
            }
        }
    }

    /// Records user activity on a notebook from outside the proxy (an SSH login or
    /// session).
    pub fn touch_notebook(&self, notebook_id: &str) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Ok(mut map) = self.activity.lock() {
            map.insert(notebook_id.to_owned(), now);
        }
    }

    /// Writes the activity recorded since the last flush.
    pub async fn flush_activity(&self) -> anyhow::Result<()> {
        let pending: Vec<(String, i64)> = match self.activity.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return Ok(()),
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        for (id, secs) in pending {
            let at = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or_else(|_| OffsetDateTime::now_utc());
            rows::set_activity(&mut tx, &id, &store::format_time(at)).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
