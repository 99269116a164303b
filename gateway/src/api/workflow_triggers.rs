//! A workflow's schedule and webhook trigger (`crate::workflows::{schedule, triggers}`):
//! `/v1/workflows/{wf}/schedule` and `/v1/workflows/{wf}/trigger-token` for its owner, and
//! `POST /v1/workflows/{id}/trigger`, which takes the workflow's trigger token and nothing
//! else (no API token, no session: [`trigger_routes`] has no [`Principal`] extractor).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};

use super::error::{ApiJson, ApiPath, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::error::Error;
use crate::workflows::runs::{RunView, StartRun};
use crate::workflows::schedule::{ScheduleView, SetSchedule};
use crate::workflows::triggers::{NewTriggerToken, TriggerTokenView};

/// The header a trigger token may come in instead of `Authorization: Bearer`.
pub const TRIGGER_HEADER: &str = "x-atelier-trigger-token";

/// The owner's routes (reached from notebooks' sockets too, as the rest of the workflows').
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/workflows/{workflow}/schedule",
            get(show_schedule).put(set_schedule).delete(delete_schedule),
        )
        .route(
            "/v1/workflows/{workflow}/trigger-token",
            get(show_token).post(create_token).delete(revoke_token),
        )
}

/// The webhook: authenticated by the workflow's trigger token only.
pub fn trigger_routes() -> Router<AppState> {
    Router::new().route("/v1/workflows/{workflow}/trigger", post(trigger))
}

async fn show_schedule(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<ApiJson<ScheduleView>> {
    Ok(ApiJson(state.workflows.schedule(&p, &workflow).await?))
}

async fn set_schedule(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    body: Bytes,
) -> ApiResult<ApiJson<ScheduleView>> {
    let req: SetSchedule = json_body(&body)?;
    Ok(ApiJson(
        state.workflows.set_schedule(&p, &workflow, req).await?,
    ))
}

async fn delete_schedule(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.workflows.delete_schedule(&p, &workflow).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show_token(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<ApiJson<TriggerTokenView>> {
    Ok(ApiJson(state.workflows.trigger_token(&p, &workflow).await?))
}

async fn create_token(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<NewTriggerToken>)> {
    let t = state.workflows.create_trigger_token(&p, &workflow).await?;
    Ok((StatusCode::CREATED, ApiJson(t)))
}

async fn revoke_token(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.workflows.revoke_trigger_token(&p, &workflow).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The token a webhook call presents: `X-Atelier-Trigger-Token`, else `Authorization:
/// Bearer`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(TRIGGER_HEADER) {
        return v.to_str().ok().map(str::trim);
    }
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

async fn trigger(
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, ApiJson<RunView>)> {
    let Some(token) = presented(&headers) else {
        return Err(Error::unauthenticated(format!(
            "a workflow's trigger token is needed: Authorization: Bearer <token> or \
             {TRIGGER_HEADER} (atelier workflow trigger-token makes one)"
        )));
    };
    // The token first: nothing about the workflow or the body is said without it.
    let allowed = state.workflows.trigger_check(&workflow, token).await?;
    // An empty body starts a run with every default.
    let req: StartRun = if body.iter().all(u8::is_ascii_whitespace) {
        StartRun::default()
    } else {
        json_body(&body)?
    };
    let r = state.workflows.trigger(allowed, req).await?;
    Ok((StatusCode::CREATED, ApiJson(r)))
}

/// A JSON body, refused naming the field.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
        .map_err(|e| Error::invalid(format!("{}: {}", e.path(), e.inner())))
}
