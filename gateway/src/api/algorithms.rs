//! `/v1/algorithms`: training algorithm assets (`crate::training::algorithms`). An
//! algorithm is named by its id or, for its owner, its name.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{AllQuery, Items};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::training::algorithms::{AlgorithmView, CreateAlgorithm};
use crate::training::runtime::Runtime;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/algorithms", post(create).get(list))
        .route("/v1/algorithms/{algo}", get(show).delete(delete))
        .route("/v1/algorithms/{algo}/runtime", get(runtime))
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateAlgorithm>,
) -> ApiResult<(StatusCode, ApiJson<AlgorithmView>)> {
    let a = state.algorithms.create(&p, req).await?;
    Ok((StatusCode::CREATED, ApiJson(a)))
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AllQuery>,
) -> ApiResult<ApiJson<Items<AlgorithmView>>> {
    let items = state.algorithms.list(q.owner(&p, "algorithms")?).await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(algo): ApiPath<String>,
) -> ApiResult<ApiJson<AlgorithmView>> {
    Ok(ApiJson(state.algorithms.get(&p, &algo).await?))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(algo): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.algorithms.delete(&p, &algo).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The seed's "preview runtime environment": the paths, command, arguments and
/// environment a job of the algorithm sees.
async fn runtime(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(algo): ApiPath<String>,
) -> ApiResult<ApiJson<Runtime>> {
    Ok(ApiJson(state.algorithms.runtime(&p, &algo).await?))
}
