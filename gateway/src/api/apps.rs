//! `/v1/apps`: applications (`crate::serving::apps::Apps`): a user's apps, their
//! credentials (shown at create and by `secret`, to the owner only), AppCodes and the
//! services bound to them. An app is named by its id or its name.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::Items;
use super::error::{ApiJson, ApiPath, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::serving::apps::{AppCredentials, AppView, CodeView, CreateApp};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", post(create).get(list))
        .route("/v1/apps/{app}", get(show).delete(remove))
        .route("/v1/apps/{app}/secret", get(secret))
        .route("/v1/apps/{app}/reset", post(reset))
        .route("/v1/apps/{app}/app-codes", post(add_code))
        .route("/v1/apps/{app}/app-codes/{code}", delete(delete_code))
        .route("/v1/apps/{app}/services", post(bind))
        .route("/v1/apps/{app}/services/{service}", delete(unbind))
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateApp>,
) -> ApiResult<(StatusCode, ApiJson<AppCredentials>)> {
    let created = state.apps.create(&p, req).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

async fn list(p: Principal, State(state): State<AppState>) -> ApiResult<ApiJson<Items<AppView>>> {
    let items = state.apps.list(&p).await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
) -> ApiResult<ApiJson<AppView>> {
    Ok(ApiJson(state.apps.get(&p, &app).await?))
}

async fn remove(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.apps.delete(&p, &app).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn secret(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
) -> ApiResult<ApiJson<AppCredentials>> {
    Ok(ApiJson(state.apps.secret(&p, &app).await?))
}

async fn reset(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
) -> ApiResult<ApiJson<AppCredentials>> {
    Ok(ApiJson(state.apps.reset(&p, &app).await?))
}

async fn add_code(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<CodeView>)> {
    let code = state.apps.add_code(&p, &app).await?;
    Ok((StatusCode::CREATED, ApiJson(code)))
}

async fn delete_code(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((app, code)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.apps.delete_code(&p, &app, &code).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bind {
    /// The service's id or name (yours).
    service: String,
}

async fn bind(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<Bind>,
) -> ApiResult<ApiJson<AppView>> {
    Ok(ApiJson(state.apps.bind(&p, &app, &req.service).await?))
}

async fn unbind(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((app, service)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<AppView>> {
    Ok(ApiJson(state.apps.unbind(&p, &app, &service).await?))
}
