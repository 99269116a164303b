//! `/v1/services`: real-time services (`crate::serving::Services`). A service is named by
//! its id or, for its owner, its name. Calls go to `/v1/infers/{id}` (`api/infer.rs`).
//! `…/logs` answers JSON, or plain text lines when the client accepts `text/plain`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::Items;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::serving::ServiceView;
use crate::serving::instances::InstanceView;
use crate::serving::logs::LogParams;
use crate::serving::spec::{DeployService, UpdateService};
use crate::store::resource_events::EventRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/services", post(deploy).get(list))
        .route(
            "/v1/services/{service}",
            get(show).patch(update).delete(delete),
        )
        .route("/v1/services/{service}/start", post(start))
        .route("/v1/services/{service}/stop", post(stop))
        .route("/v1/services/{service}/restart", post(restart))
        .route("/v1/services/{service}/events", get(events))
        .route("/v1/services/{service}/logs", get(logs))
        .route("/v1/services/{service}/instances", get(instances))
        .route(
            "/v1/services/{service}/instances/{instance}",
            axum::routing::delete(delete_instance),
        )
}

async fn instances(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<ApiJson<Items<InstanceView>>> {
    let items = state.services.instances(&p, &service).await?;
    Ok(ApiJson(Items { items }))
}

/// Deletes an engine instance; a new one takes its place.
async fn delete_instance(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((service, instance)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .services
        .delete_instance(&p, &service, &instance)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn deploy(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DeployService>,
) -> ApiResult<(StatusCode, ApiJson<ServiceView>)> {
    let v = state.services.deploy(&p, req).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ApiJson<Items<ServiceView>>> {
    let items = state.services.list(&p, q.all).await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<ApiJson<ServiceView>> {
    Ok(ApiJson(state.services.get(&p, &service).await?))
}

async fn update(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateService>,
) -> ApiResult<(StatusCode, ApiJson<ServiceView>)> {
    let v = state.services.update(&p, &service, req).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.services.delete(&p, &service).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<ServiceView>)> {
    let v = state.services.start(&p, &service).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

async fn stop(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<ApiJson<ServiceView>> {
    Ok(ApiJson(state.services.stop(&p, &service).await?))
}

async fn restart(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<ServiceView>)> {
    let v = state.services.restart(&p, &service).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

async fn events(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
) -> ApiResult<ApiJson<Items<EventRecord>>> {
    let items = state.services.events(&p, &service).await?;
    Ok(ApiJson(Items { items }))
}

/// Says that more lines matched than a logs answer holds, in the plain-text form.
const TRUNCATED: &str = "atelier-truncated";

async fn logs(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(service): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = state.services.logs(&p, &service, &q).await?;
    logs_answer(found, &headers)
}

/// A logs answer: JSON, or plain text lines when the client accepts `text/plain` (also
/// a batch service's, `api/batch.rs`).
pub(super) fn logs_answer(
    found: crate::serving::logs::sources::Found,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/plain") && !v.contains("application/json"));
    if !text {
        return Ok(ApiJson(found).into_response());
    }
    let mut body = String::new();
    for l in &found.lines {
        // A line's own line breaks become indented continuation lines.
        let shown = l.text.replace('\n', "\n    ");
        body.push_str(&format!("{} {} {}\n", l.time, l.source, shown));
    }
    let mut r = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    if found.truncated {
        r.headers_mut()
            .insert(TRUNCATED, HeaderValue::from_static("true"));
    }
    Ok(r)
}
