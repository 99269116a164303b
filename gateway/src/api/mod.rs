//! The HTTP API (`/v1`, JSON) and the browser pages, as one axum router. The notebook proxy
//! (`/nb/…`) is not a route: `server::serve_http` hands those requests to `proxy::serve`.
//! One file per resource; every handler authenticates through the [`Principal`] extractor
//! and returns [`error::ApiError`] on failure. A write to `/v1` that rides on the browser's
//! session cookie passes [`csrf_guard`] first.
//!
//! [`Principal`]: crate::auth::Principal

pub mod algorithms;
pub mod apps;
pub mod batch;
pub mod engine_proxy;
pub mod error;
pub mod files;
pub mod images;
pub mod infer;
pub mod keypairs;
mod linger;
pub mod models;
pub mod notebooks;
pub mod pages;
pub mod plugins;
pub mod services;
pub mod state;
pub mod storage;
pub mod training_jobs;
pub mod training_searches;
pub mod users;
pub mod workflow_triggers;
pub mod workflows;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::routing::get;
use serde::Serialize;

use crate::api::state::AppState;
use crate::auth::Principal;
use error::{ApiJson, ApiQuery, ApiResult};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/flavors", get(flavors))
        .route("/v1/accelerators", get(accelerators))
        .route("/v1/audit", get(audit_list))
        .route("/v1/ssh", get(ssh_info))
        .route("/metrics", get(metrics))
        .merge(users::routes())
        .merge(keypairs::routes())
        .merge(images::routes())
        .merge(notebooks::routes())
        .merge(plugins::routes(&state))
        .merge(storage::routes())
        .merge(models::routes())
        .merge(algorithms::routes(&state))
        .merge(training_jobs::routes())
        .merge(training_searches::routes())
        .merge(workflows::routes())
        .merge(workflow_triggers::routes())
        .merge(workflow_triggers::trigger_routes())
        .merge(services::routes())
        .merge(apps::routes())
        .merge(batch::routes())
        .merge(infer::routes())
        .merge(pages::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf_guard,
        ))
        .layer(axum::middleware::from_fn(linger::linger))
        .with_state(state)
}

/// The part of the API that code in a notebook reaches through its `atelier` socket, acting
/// as the notebook's owner (`files::NotebookApi`): the workflows' routes and nothing else
/// (`files::notebook_api_path` decides which paths get here). A workflow route added
/// outside `workflows::routes()` must be merged here too to be reached from notebooks.
/// The webhook (`workflow_triggers::trigger_routes`) is not: it takes a trigger token,
/// which a notebook's socket never passes on.
pub fn for_notebooks(state: AppState) -> Router {
    Router::new()
        .merge(workflows::routes())
        .merge(workflow_triggers::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Cookie-authenticated writes to `/v1` need `Origin: <console>` and `X-Atelier-CSRF: 1`
/// ([`crate::auth::csrf`]); bearer-token requests and reads pass untouched.
async fn csrf_guard(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let cookie_write = req.uri().path().starts_with("/v1/")
        && !crate::auth::csrf::is_safe(req.method())
        && state
            .auth
            .presented(req.headers())
            .is_some_and(|p| p.via == crate::auth::Via::Cookie);
    if cookie_write
        && let Err(e) =
            crate::auth::csrf::check_api_write(req.headers(), &state.settings.origins.console())
    {
        return e.into_response();
    }
    next.run(req).await
}

pub use crate::lifecycle::is_plain_name;

/// `?all=true` of the list endpoints whose rows have an owner: everyone's, for admins.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllQuery {
    all: Option<bool>,
}

impl AllQuery {
    /// Whose rows to list: the caller's, or everyone's (`None`) with `all=true`.
    pub fn owner<'a>(&self, p: &'a Principal, what: &str) -> ApiResult<Option<&'a str>> {
        let all = self.all.unwrap_or(false);
        check_all(p, all, what)?;
        Ok((!all).then_some(p.user_id.as_str()))
    }
}

/// `?all=true` (everyone's items) is for admins; `what` names the items in the refusal.
pub fn check_all(p: &Principal, all: bool, what: &str) -> ApiResult<()> {
    if all && !p.is_admin() {
        return Err(error::ApiError::forbidden(format!(
            "all=true (everyone's {what}) needs the admin role"
        )));
    }
    Ok(())
}

/// The metrics in the OpenMetrics text format (admins, or a scraper with an admin token).
async fn metrics(
    p: Principal,
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<impl axum::response::IntoResponse> {
    p.require_admin()?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    ))
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::of(
        crate::error::Kind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[derive(Serialize)]
struct SshInfoView {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// One `known_hosts` key (`ssh-ed25519 AAAA…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_key_fingerprint: Option<String>,
}

/// The SSH front door: where it listens and its host key, for `known_hosts`.
async fn ssh_info(_p: Principal, state: axum::extract::State<AppState>) -> ApiJson<SshInfoView> {
    ApiJson(match &state.ssh {
        Some(ssh) => SshInfoView {
            enabled: true,
            address: Some(ssh.addr.to_string()),
            host_key: Some(ssh.public_key.clone()),
            host_key_fingerprint: Some(ssh.fingerprint.clone()),
        },
        None => SshInfoView {
            enabled: false,
            address: None,
            host_key: None,
            host_key_fingerprint: None,
        },
    })
}

#[derive(Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

#[derive(Serialize)]
struct WhoAmI {
    id: String,
    name: String,
    role: &'static str,
}

async fn whoami(p: Principal) -> ApiJson<WhoAmI> {
    ApiJson(WhoAmI {
        id: p.user_id,
        name: p.name,
        role: p.role.as_str(),
    })
}

#[derive(Serialize)]
struct FlavorView {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    vcpus: u32,
    memory_gib: u32,
    /// GPUs (type gpu) or NPUs (type npu) a notebook of this flavor gets.
    accelerators: u32,
    description: String,
    default: bool,
}

/// `GET /v1/accelerators`: the host's GPUs (NVML) and NPUs, and the notebook holding each
/// (its id for admins; "another notebook" for others).
async fn accelerators(
    p: Principal,
    state: axum::extract::State<AppState>,
) -> ApiJson<Items<serde_json::Value>> {
    let in_use = state.lifecycle.backend().accelerators_in_use();
    let holder = |dev: &str| {
        in_use
            .iter()
            .find(|(_, devs)| devs.iter().any(|d| d == dev))
            .map(|(nb, _)| nb.clone())
    };
    let shown = |nb: Option<String>| match (nb, p.is_admin()) {
        (Some(nb), true) => serde_json::json!(nb),
        (Some(_), false) => serde_json::json!("another notebook"),
        (None, _) => serde_json::Value::Null,
    };
    let mut items: Vec<serde_json::Value> = crate::gpu::inventory()
        .into_iter()
        .map(|g| {
            let mut v = serde_json::to_value(&g).unwrap_or_default();
            v["type"] = "gpu".into();
            v["notebook"] = shown(holder(&g.uuid));
            v
        })
        .collect();
    items.extend(crate::gpu::npu_devices().into_iter().enumerate().map(|(i, dev)| {
        serde_json::json!({"type": "npu", "index": i, "device": dev, "notebook": shown(holder(&dev))})
    }));
    ApiJson(Items { items })
}

async fn flavors(
    _p: Principal,
    state: axum::extract::State<AppState>,
) -> ApiJson<Items<FlavorView>> {
    let items = state
        .settings
        .flavors
        .iter()
        .enumerate()
        .map(|(i, f)| FlavorView {
            id: f.id.clone(),
            kind: f.kind.clone(),
            vcpus: f.vcpus,
            memory_gib: f.memory_gib,
            accelerators: f.accelerator_count(),
            description: f.description.clone(),
            default: i == 0,
        })
        .collect();
    ApiJson(Items { items })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    action: Option<String>,
    user: Option<String>,
}

async fn audit_list(
    p: Principal,
    state: axum::extract::State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<ApiJson<Items<crate::store::audit::AuditRecord>>> {
    p.require_admin()?;
    let (limit, offset) = paging(q.limit, q.offset)?;
    let mut conn = state.store.pool.acquire().await?;
    let items = crate::store::audit::list(
        &mut conn,
        &crate::store::audit::AuditFilter {
            action: q.action,
            user: q.user,
            limit,
            offset,
        },
    )
    .await?;
    Ok(ApiJson(Items { items }))
}

/// Page size 1–500 (default 100); offset ≥ 0.
pub fn paging(limit: Option<i64>, offset: Option<i64>) -> ApiResult<(i64, i64)> {
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(error::ApiError::invalid(format!(
            "limit: {limit} is out of range; use 1 to 500"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(error::ApiError::invalid("offset: must not be negative"));
    }
    Ok((limit, offset))
}
