//! `/v1/training-searches`: hyperparameter searches (`crate::training::search`). A search is
//! named by its id or, for its owner, its name.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{AllQuery, Items};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::store::resource_events::EventRecord;
use crate::training::search::{CreateSearch, SearchView, TrialView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/training-searches", get(list).post(create))
        .route("/v1/training-searches/{search}", get(show).delete(delete))
        .route("/v1/training-searches/{search}/stop", post(stop))
        .route("/v1/training-searches/{search}/trials", get(trials))
        .route("/v1/training-searches/{search}/events", get(events))
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSearch>,
) -> ApiResult<(StatusCode, ApiJson<SearchView>)> {
    let s = state.searches.create(&p, body).await?;
    Ok((StatusCode::CREATED, ApiJson(s)))
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AllQuery>,
) -> ApiResult<ApiJson<Items<SearchView>>> {
    let items = state
        .searches
        .list(&p, q.owner(&p, "training searches")?.is_none())
        .await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(search): ApiPath<String>,
) -> ApiResult<ApiJson<SearchView>> {
    Ok(ApiJson(state.searches.get(&p, &search).await?))
}

async fn trials(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(search): ApiPath<String>,
) -> ApiResult<ApiJson<Items<TrialView>>> {
    Ok(ApiJson(Items {
        items: state.searches.trials(&p, &search).await?,
    }))
}

async fn events(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(search): ApiPath<String>,
) -> ApiResult<ApiJson<Items<EventRecord>>> {
    Ok(ApiJson(Items {
        items: state.searches.events(&p, &search).await?,
    }))
}

async fn stop(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(search): ApiPath<String>,
) -> ApiResult<ApiJson<SearchView>> {
    Ok(ApiJson(state.searches.stop(&p, &search).await?))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(search): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.searches.delete(&p, &search).await?;
    Ok(StatusCode::NO_CONTENT)
}
