//! Route lookup: notebook id → owner, status and the endpoint its server listens at, cached
//! in memory (rebuilt from the store on a miss) and invalidated by every lifecycle
//! transition. The proxy and the SSH front door read it on every request; the lifecycle
//! invalidates it. Invariant: a route is never newer than the store's row it was built
//! from, and this gateway's own transitions invalidate it before they return.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::uri::Authority;

use crate::backends::{Backend, Upstream};
use crate::cache::TtlCache;
use crate::lifecycle::notebook::NotebookStatus;
use crate::store::{Store, notebooks as rows};

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

impl Route {
    /// Whether `now` (a unix second) is the first time this route is touched in that
    /// second: the activity clocks are written at most once a second per route.
    pub fn first_touch_in(&self, now: i64) -> bool {
        self.last_touch.swap(now, Ordering::Relaxed) != now
    }
}

/// An upstream in the form the proxy uses on every request, prepared once per route.
pub struct Target {
    pub endpoint: Endpoint,
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
        let (endpoint, authority) = Endpoint::of(&u.endpoint)?;
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
}

impl RouteTable {
    pub fn new(store: Store, backend: Arc<dyn Backend>) -> Self {
        RouteTable {
            // The TTL only bounds staleness if another gateway changes the store; this
            // gateway's own transitions invalidate at once.
            cache: Arc::new(TtlCache::new(100_000, Duration::from_secs(30))),
            store,
            backend,
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
            .clone()
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
}

/// Where a notebook server listens, as the proxy connects to it (prepared once per route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(Authority),
    /// The unix socket `name` in `dir`, a directory the notebook can write.
    Unix {
        dir: Arc<std::path::Path>,
        name: Arc<std::ffi::OsStr>,
    },
    /// A target of a runtime on another machine, over the connection it opened to the
    /// gateway (`atelier_tunnel`).
    Tunnel(atelier_tunnel::hub::TunnelEndpoint),
}

impl Endpoint {
    /// The backend's endpoint as the proxy uses it, and the `Host` to send when a client
    /// sent none.
    pub fn of(e: &crate::backends::Endpoint) -> Option<(Endpoint, Authority)> {
        Some(match e {
            crate::backends::Endpoint::Tcp(addr) => {
                let authority: Authority = addr.to_string().parse().ok()?;
                (Endpoint::Tcp(authority.clone()), authority)
            }
            crate::backends::Endpoint::Unix { dir, name } => (
                Endpoint::Unix {
                    dir: Arc::from(dir.as_path()),
                    name: Arc::from(std::ffi::OsStr::new(name)),
                },
                Authority::from_static("localhost"),
            ),
            crate::backends::Endpoint::Tunnel(t) => (
                Endpoint::Tunnel(t.clone()),
                Authority::from_static("localhost"),
            ),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => f.write_str(a.as_str()),
            Endpoint::Unix { dir, name } => {
                write!(f, "unix:{}", dir.join(&**name).display())
            }
            Endpoint::Tunnel(t) => write!(f, "{t}"),
        }
    }
}
