//! `/v1/notebooks`: create, list, get, update, start, stop, delete, events; and `open`,
//! which sends a browser to the notebook's own origin with a one-time ticket.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{Items, paging};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::auth::authz::{self, Access, NotebookGrant};
use crate::notebooks::mounts::{AddMount, MountView};
use crate::notebooks::uploads::{StartUpload, UploadView};
use crate::notebooks::{
    CreateNotebook, NotebookStatus, NotebookView, SshEndpoint, UpdateNotebook, status,
};
use crate::store::events;
use crate::store::notebooks::NotebookRow;
use crate::store::notebooks::{self as rows, ListFilter};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/notebooks", post(create).get(list))
        .route("/v1/notebooks/{id}", get(show).patch(update).delete(delete))
        .route("/v1/notebooks/{id}/start", post(start))
        .route("/v1/notebooks/{id}/stop", post(stop))
        .route("/v1/notebooks/{id}/renew", post(renew))
        .route("/v1/notebooks/{id}/open", get(open))
        .route("/v1/notebooks/{id}/storage/expand", post(expand_storage))
        .route("/v1/notebooks/{id}/save-image", post(save_image))
        .route("/v1/notebooks/{id}/activity", get(activity))
        .route("/v1/notebooks/{id}/events", get(list_events))
        .route(
            "/v1/notebooks/{id}/mounts",
            get(list_mounts).post(add_mount),
        )
        .route(
            "/v1/notebooks/{id}/mounts/{name}",
            get(show_mount).delete(remove_mount),
        )
        .route(
            "/v1/notebooks/{id}/uploads",
            get(list_uploads).post(start_upload),
        )
        .route(
            "/v1/notebooks/{id}/uploads/{upload}",
            get(show_upload).delete(cancel_upload),
        )
        .route(
            "/v1/notebooks/{id}/uploads/{upload}/complete",
            post(complete_upload),
        )
}

/// The API's view of `row`, with the endpoints a client can reach it at. An SSH front door
/// bound to every address is reported at the host the client used for this request.
pub fn view(state: &AppState, headers: &HeaderMap, row: NotebookRow) -> NotebookView {
    view_at(state, ssh_host(state, headers).as_deref(), row)
}

/// The host clients reach the SSH front door at: its IP, or, when it listens on every
/// address, the host this request came to.
fn ssh_host(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let info = state.ssh.as_ref()?;
    if !info.addr.ip().is_unspecified() {
        return Some(info.addr.ip().to_string());
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.host().trim_matches(['[', ']']).to_owned());
    Some(host.unwrap_or_else(|| "127.0.0.1".into()))
}

fn view_at(state: &AppState, ssh_host: Option<&str>, row: NotebookRow) -> NotebookView {
    let mut ssh = Vec::new();
    if let (Some(info), Some(host), true) = (&state.ssh, ssh_host, row.ssh_enabled) {
        let endpoint = |port: u16, user: &str| SshEndpoint {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            host_key_fingerprint: info.fingerprint.clone(),
        };
        ssh.push(endpoint(info.addr.port(), &row.name));
        if let Some(port) = row.ssh_port.and_then(|p| u16::try_from(p).ok()) {
            ssh.push(endpoint(port, crate::ssh::server::MA_USER));
        }
    }
    let idle = crate::notebooks::autostop::idle_timeout(&state.lifecycle, &row);
    let storage = state.lifecycle.backend().work_disk(&row.id);
    let mut v = NotebookView::from(row);
    v.endpoints.ssh = ssh;
    v.storage = storage;
    v.auto_stop.idle_timeout_seconds = idle;
    v.warnings = state.lifecycle.backend().warnings();
    v
}

/// After SSH is turned on: the notebook's own port, assigned and listening.
async fn with_ssh_port(state: &AppState, row: NotebookRow) -> ApiResult<NotebookRow> {
    let Some(ssh) = &state.ssh else {
        return Ok(row);
    };
    match crate::ssh::ports::ensure(ssh, &row).await {
        Ok(true) => {
            let mut conn = state.store.pool.acquire().await?;
            Ok(rows::get(&mut conn, &row.id).await?.unwrap_or(row))
        }
        Ok(false) => Ok(row),
        Err(e) => {
            tracing::warn!(notebook = %row.id, error = %e, "assigning the notebook's SSH port");
            Ok(row)
        }
    }
}

/// Loads a notebook and checks that `p` may act on it.
async fn grant(
    state: &AppState,
    p: &Principal,
    id: &str,
    access: Access,
) -> ApiResult<NotebookGrant> {
    let mut conn = state.store.pool.acquire().await?;
    let row = rows::get(&mut conn, id)
        .await?
        .ok_or_else(|| authz::not_found(id))?;
    authz::authorize(p, row, access)
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateNotebook>,
) -> ApiResult<(StatusCode, ApiJson<NotebookView>)> {
    let row = state.lifecycle.create(&p, req).await?;
    let row = with_ssh_port(&state, row).await?;
    Ok((StatusCode::CREATED, ApiJson(view(&state, &headers, row))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    name: Option<String>,
    status: Option<String>,
    image: Option<String>,
    flavor: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    all: Option<bool>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<NotebookView>,
    total: i64,
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ApiJson<Page>> {
    let all = q.all.unwrap_or(false);
    super::check_all(&p, all, "notebooks")?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<NotebookStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("status: {e}")))?;
    let (limit, offset) = paging(q.limit, q.offset)?;
    let filter = ListFilter {
        owner_id: (!all).then(|| p.user_id.clone()),
        name_contains: q.name.filter(|n| !n.is_empty()),
        status,
        image: q.image,
        flavor: q.flavor,
        limit,
        offset,
    };
    let mut conn = state.store.pool.acquire().await?;
    let (rows, total) = rows::list(&mut conn, &filter).await?;
    Ok(ApiJson(Page {
        items: {
            let host = ssh_host(&state, &headers);
            rows.into_iter()
                .map(|r| view_at(&state, host.as_deref(), r))
                .collect()
        },
        total,
    }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<NotebookView>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok(ApiJson(view(&state, &headers, g.into_notebook())))
}

async fn update(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateNotebook>,
) -> ApiResult<ApiJson<NotebookView>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let row = state.lifecycle.update(g, req).await?;
    let row = with_ssh_port(&state, row).await?;
    Ok(ApiJson(view(&state, &headers, row)))
}

/// `POST /v1/notebooks/{id}/start`, optionally with `{"auto_stop": {...}}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    auto_stop: Option<crate::notebooks::AutoStop>,
}

async fn start(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<StartRequest>>,
) -> ApiResult<(StatusCode, ApiJson<NotebookView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(view(
            &state,
            &headers,
            state.lifecycle.start(g, req.auto_stop).await?,
        )),
    ))
}

/// `GET /v1/notebooks/{id}/activity`: what idle detection sees.
async fn activity(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<serde_json::Value>> {
    use crate::notebooks::autostop;
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let row = g.notebook().clone();
    let idle = autostop::idle_of(&state.lifecycle, &row);
    let time_of = |secs: i64| -> serde_json::Value {
        if secs <= 0 {
            return serde_json::Value::Null;
        }
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map(|t| crate::store::format_time(t).into())
            .unwrap_or(serde_json::Value::Null)
    };
    let mut sources = serde_json::Map::new();
    // No GPU source without GPUs and a driver.
    for s in autostop::sources() {
        sources.insert(s.as_str().into(), time_of(idle.sources[*s as usize]));
    }
    Ok(ApiJson(serde_json::json!({
        "notebook_id": row.id,
        "status": row.status,
        "idle_timeout_seconds": autostop::idle_timeout(&state.lifecycle, &row),
        "last_activity_at": time_of(idle.last),
        "idle_stop_at": idle.deadline.map(time_of),
        "ssh_commands_running": state.activity.ssh_exec_running(&row.id),
        "sources": sources,
    })))
}

/// `POST /v1/notebooks/{id}/save-image` `{name, tag, description?, namespace?}`: 202, the
/// notebook `SNAPSHOTTING` until the save ends (events tell how).
async fn save_image(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<crate::notebooks::save::SaveImageRequest>,
) -> ApiResult<(StatusCode, ApiJson<NotebookView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let row = state.saves.save_image(g, req).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(view(&state, &headers, row))))
}

/// `POST /v1/notebooks/{id}/storage/expand` `{"size_gb": N}`: the work disk's new size.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpandRequest {
    size_gb: i64,
}

async fn expand_storage(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ExpandRequest>,
) -> ApiResult<ApiJson<NotebookView>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let row = state.lifecycle.expand_storage(g, req.size_gb).await?;
    Ok(ApiJson(view(&state, &headers, row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenQuery {
    /// Where to land in the notebook: a path under `/nb/{id}/` (default `/nb/{id}/lab`).
    path: Option<String>,
}

/// `GET /v1/notebooks/{id}/open[?path=/nb/{id}/…]`: the owner's browser goes to the notebook.
/// With `notebook_origin = subdomain` this mints a one-time ticket (bound to the notebook,
/// the user and the credential presented, good for 60 s) and answers 303 to
/// `http://{id}.<notebook domain>:port/?ticket=…`, whose host exchanges it for a cookie of its
/// own; with `path`, 303 to the path on this host. The body has the same URL as JSON.
///
/// A browser without a session is sent to `/login` and back here. It may arrive from another
/// site (the notebook's host sends it here when its own cookie is missing), where the
/// `SameSite=Strict` session cookie is not sent: then it first gets a page that reloads this
/// URL from the console itself, which does send it.
async fn open(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OpenQuery>,
) -> axum::response::Response {
    use axum::response::{IntoResponse, Redirect};
    let html = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let fail = |e: ApiError| {
        if html {
            let page = super::pages::message_page(
                e.status().canonical_reason().unwrap_or("Error"),
                &e.message,
            );
            (e.status(), page).into_response()
        } else {
            e.into_response()
        }
    };
    let principal = match state.auth.authenticate(&headers).await {
        Ok(Some(p)) => p,
        outcome if html => {
            let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
            if outcome.is_ok() && site.is_some_and(|s| s != "same-origin" && s != "none") {
                return super::pages::continue_page(here);
            }
            return Redirect::to(&format!("/login?next={}", crate::urls::encode_path(here)))
                .into_response();
        }
        Ok(None) => {
            return fail(ApiError::unauthenticated(
                "authentication required: send Authorization: Bearer <token> or log in at /login",
            ));
        }
        Err(e) => return fail(e),
    };
    let base = format!("/nb/{id}");
    let path = match q.path {
        None => format!("{base}/lab"),
        Some(p) => {
            let ok = crate::auth::csrf::safe_next(&p).is_some()
                && (p == base || p.starts_with(&format!("{base}/")));
            if !ok {
                return fail(ApiError::invalid(format!(
                    "path: {p:?} is not a path in this notebook; use one starting with {base}/"
                )));
            }
            p
        }
    };
    let g = match grant(&state, &principal, &id, Access::Open).await {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let nb = g.notebook();
    if nb.status != status::RUNNING {
        return fail(ApiError::conflict(format!(
            "notebook {} is {}, not RUNNING; start it first (atelier notebook start {})",
            nb.name, nb.status, nb.name
        )));
    }
    let url = match state.settings.notebook_origin {
        crate::config::NotebookOrigin::Path => path,
        crate::config::NotebookOrigin::Subdomain => {
            let Some(presented) = state.auth.presented(&headers) else {
                return fail(ApiError::unauthenticated("no credential"));
            };
            let ticket = state.auth.logins().mint_ticket(
                crate::auth::tickets::Grant {
                    notebook_id: nb.id.clone(),
                    user_id: principal.user_id.clone(),
                    parent: crate::auth::digest(presented.secret),
                },
                path,
            );
            match ticket {
                Ok(t) => format!("{}/?ticket={t}", state.settings.origins.notebook(&nb.id)),
                Err(crate::auth::tickets::MintError::Full) => {
                    return fail(ApiError::new(
                        crate::error::Kind::Unavailable,
                        "unavailable",
                        "too many notebook logins are pending; try again in a minute",
                    ));
                }
            }
        }
    };
    let mut resp = (
        StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, url.clone())],
        axum::Json(serde_json::json!({ "url": url })),
    )
        .into_response();
    super::pages::no_store(&mut resp);
    resp
}

/// What a notebook's page may ask about its own notebook (`/nb/{id}/.atelier/lease` and
/// `…/renew`, served on the notebook's host for the auto-stop countdown): its status and
/// auto-stop lease, renewed first with `renew`. The principal holds a route grant for `id`.
pub async fn page_lease(
    state: &AppState,
    p: &Principal,
    id: &str,
    renew: bool,
) -> ApiResult<serde_json::Value> {
    let g = grant(state, p, id, Access::Manage).await?;
    let row = if renew {
        state.lifecycle.renew(g, None).await?
    } else {
        g.into_notebook()
    };
    let v = view(state, &HeaderMap::new(), row);
    Ok(serde_json::json!({"id": v.id, "status": v.status, "auto_stop": v.auto_stop}))
}

/// `POST /v1/notebooks/{id}/renew`, optionally with `{"hours": N}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    hours: Option<i64>,
}

async fn renew(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<RenewRequest>>,
) -> ApiResult<ApiJson<NotebookView>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    Ok(ApiJson(view(
        &state,
        &headers,
        state.lifecycle.renew(g, req.hours).await?,
    )))
}

async fn stop(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<NotebookView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(view(&state, &headers, state.lifecycle.stop(g).await?)),
    ))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<NotebookView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(view(&state, &headers, {
            let row = state.lifecycle.delete(g).await?;
            if let Some(ssh) = &state.ssh {
                ssh.ports.close(&row.id);
            }
            row
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<i64>,
}

async fn list_events(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<ApiJson<Items<events::EventRecord>>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let mut conn = state.store.pool.acquire().await?;
    let items = events::list(&mut conn, &g.notebook().id, limit).await?;
    Ok(ApiJson(Items { items }))
}

async fn list_mounts(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<Items<MountView>>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let items = state.mounts.mounts(&g).await?;
    Ok(ApiJson(Items { items }))
}

async fn show_mount(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<MountView>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let nb_name = g.notebook().name.clone();
    state
        .mounts
        .mounts(&g)
        .await?
        .into_iter()
        .find(|m| m.row.name == name)
        .map(ApiJson)
        .ok_or_else(|| {
            ApiError::not_found(format!("notebook {nb_name} has no mount named {name:?}"))
        })
}

async fn add_mount(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AddMount>,
) -> ApiResult<(StatusCode, ApiJson<MountView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(state.mounts.add_mount(g, req).await?),
    ))
}

async fn remove_mount(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    state.mounts.remove_mount(g, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_uploads(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<Items<UploadView>>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    let items = state.uploads.uploads(&g).await?;
    Ok(ApiJson(Items { items }))
}

async fn start_upload(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<StartUpload>,
) -> ApiResult<(StatusCode, ApiJson<UploadView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(state.uploads.start_upload(g, req).await?),
    ))
}

async fn show_upload(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((id, upload)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<UploadView>> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok(ApiJson(state.uploads.upload(&g, &upload).await?))
}

async fn complete_upload(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((id, upload)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, ApiJson<UploadView>)> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(state.uploads.complete_upload(g, &upload).await?),
    ))
}

async fn cancel_upload(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((id, upload)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let g = grant(&state, &p, &id, Access::Manage).await?;
    state.uploads.cancel_upload(g, &upload).await?;
    Ok(StatusCode::NO_CONTENT)
}
