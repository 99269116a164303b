//! What the HTTP side's handlers (the API, the pages and the notebook proxy) are given: the
//! services, in one pointer cloned for every request. Built by `server::build`; nothing
//! below `api/` and the proxy sees it (the SSH front door has its own [`SshDoor`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::activity::ActivityClocks;
use crate::auth::{Authenticator, NotebookCaller, Principal};
use crate::config::Settings;
use crate::error::Error;
use crate::notebooks::Lifecycle;
use crate::routing::RouteTable;
use crate::ssh::SshDoor;
use crate::store::Store;

/// Everything a request handler may need; one pointer, cloned for every request.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }

    /// A handle that does not keep the services alive (for what the services hold: the
    /// notebooks' file API reaches the API through one).
    pub fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.0))
    }
}

/// [`AppState::downgrade`]'s handle.
#[derive(Clone)]
pub struct WeakAppState(std::sync::Weak<Services>);

impl WeakAppState {
    /// The state, while the gateway has it.
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(AppState)
    }
}

pub struct Services {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub auth: Authenticator,
    pub lifecycle: Lifecycle,
    /// The services beside the lifecycle (it holds the same ones, for start, stop, delete).
    pub mounts: crate::notebooks::mounts::Mounts,
    pub uploads: crate::notebooks::uploads::Uploads,
    pub saves: crate::notebooks::save::Saves,
    pub routes: RouteTable,
    pub activity: ActivityClocks,
    /// The SSH front door, when it is on.
    pub ssh: Option<SshDoor>,
    /// The model registry.
    pub models: crate::models::Models,
    /// Real-time services and their calls.
    pub services: crate::serving::Services,
    /// Applications: app credentials and the services bound to them.
    pub apps: crate::serving::apps::Apps,
    /// Batch services and their jobs.
    pub batches: crate::batch::Batches,
    /// Training algorithm assets.
    pub algorithms: crate::training::algorithms::Algorithms,
    /// Training jobs and their runners.
    pub jobs: crate::training::jobs::Jobs,
    /// Hyperparameter searches and their runners.
    pub searches: crate::training::search::Searches,
    /// Workflows: their definitions and versions.
    pub workflows: crate::workflows::service::Workflows,
    /// The plugin registry and its Wasm host.
    pub plugins: crate::plugins::Plugins,
    /// Seals and opens stored secrets.
    pub secrets: Arc<crate::secrets::SecretBox>,
    /// What `GET /metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// The WebSockets relayed to model engines (cut at shutdown).
    pub engine_relays: crate::upstream::Relays,
    /// The connect-back tunnel, when it is on (`tunnel.listen`): backends whose runtimes
    /// run on other machines register their launches with it and hand out its endpoints.
    pub tunnel: Option<atelier_tunnel::hub::TunnelHub>,
}

/// Every handler that takes a [`Principal`] authenticates the request: a bearer token, or
/// the console's session cookie; a request the notebook relay (`api::files`) hands in carries
/// its caller instead ([`NotebookCaller`]), and no header counts then.
impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // A request relayed from a notebook's socket: its owner, whatever the headers say.
        if let Some(caller) = parts.extensions.get::<NotebookCaller>() {
            return Ok(caller.principal().clone());
        }
        state.auth.authenticate(&parts.headers).await?.ok_or_else(|| {
            Error::unauthenticated(
                "authentication required: send Authorization: Bearer <token> or log in at /login",
            )
        })
    }
}
