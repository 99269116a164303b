//! `/v1/workflows`: workflow definitions and their versions (`crate::workflows::service`).
//! A definition is sent as JSON, or as YAML with `Content-Type: application/yaml`; a
//! workflow is named by its id or, for its owner, its name.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;

use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{AllQuery, Items};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::workflows::definition::Format;
use crate::workflows::service::{Published, VersionView, WorkflowView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", get(list).post(create))
        .route(
            "/v1/workflows/{workflow}",
            get(show).put(publish).delete(delete),
        )
        .route("/v1/workflows/{workflow}/versions", get(versions))
        .route("/v1/workflows/{workflow}/versions/{version}", get(version))
        .route("/v1/workflow-schema", get(schema))
}

/// The wire format's JSON Schema (`docs/workflow.schema.json`), for editors and the SDK.
async fn schema(_p: Principal) -> ApiJson<serde_json::Value> {
    ApiJson(crate::workflows::schema::json_schema())
}

fn format_of(headers: &HeaderMap) -> Format {
    Format::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, ApiJson<WorkflowView>)> {
    let w = state
        .workflows
        .create(&p, &body, format_of(&headers))
        .await?;
    Ok((StatusCode::CREATED, ApiJson(w)))
}

async fn publish(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<ApiJson<Published>> {
    Ok(ApiJson(
        state
            .workflows
            .publish(&p, &workflow, &body, format_of(&headers))
            .await?,
    ))
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AllQuery>,
) -> ApiResult<ApiJson<Items<WorkflowView>>> {
    let items = state
        .workflows
        .list(&p, q.owner(&p, "workflows")?.is_none())
        .await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<ApiJson<WorkflowView>> {
    Ok(ApiJson(state.workflows.get(&p, &workflow).await?))
}

async fn versions(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<ApiJson<Items<VersionView>>> {
    Ok(ApiJson(Items {
        items: state.workflows.versions(&p, &workflow).await?,
    }))
}

async fn version(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, version)): ApiPath<(String, i64)>,
) -> ApiResult<ApiJson<VersionView>> {
    Ok(ApiJson(
        state.workflows.version(&p, &workflow, version).await?,
    ))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.workflows.delete(&p, &workflow).await?;
    Ok(StatusCode::NO_CONTENT)
}
