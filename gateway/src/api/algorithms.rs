//! `/v1/algorithms`: training algorithm assets (`crate::training::algorithms`). An
//! algorithm is named by its id or, for its owner, its name.

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{AllQuery, Items};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::training::algorithms::{AlgorithmView, CreateAlgorithm, PluginSpec};
use crate::training::runtime::Runtime;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/algorithms",
            get(list)
                .post(create)
                .layer(DefaultBodyLimit::max(super::plugins::upload_limit(state))),
        )
        .route("/v1/algorithms/{algo}", get(show).delete(delete))
        .route("/v1/algorithms/{algo}/runtime", get(runtime))
}

/// `POST /v1/algorithms`: JSON, or multipart with a component to register as a plugin first
/// (the parts of `POST /v1/plugins` and `algorithm`, the JSON without `plugin`). When the
/// algorithm is refused, a plugin this upload registered is deleted again.
async fn create(
    p: Principal,
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<(StatusCode, ApiJson<AlgorithmView>)> {
    let multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let ApiJson(body) = ApiJson::<CreateAlgorithm>::from_request(req, &state).await?;
        let a = state.algorithms.create(&p, body).await?;
        return Ok((StatusCode::CREATED, ApiJson(a)));
    }
    let form = Multipart::from_request(req, &state)
        .await
        .map_err(|e| ApiError::invalid(e.body_text()))?;
    let f = super::plugins::read_form(&state, form, &["algorithm"]).await?;
    let Some((_, json)) = f.extra.into_iter().next() else {
        return Err(ApiError::invalid(
            "no algorithm: send a multipart part `algorithm` with {\"name\", ...}",
        ));
    };
    let mut body: CreateAlgorithm =
        serde_json::from_slice(&json).map_err(|e| ApiError::invalid(format!("algorithm: {e}")))?;
    if body.plugin.is_some() {
        return Err(ApiError::invalid(
            "algorithm.plugin: the uploaded component is the plugin; leave plugin out",
        ));
    }
    let (name, version) = (f.manifest.name.clone(), f.manifest.version.clone());
    let registered = state
        .plugins
        .register(&p, f.manifest, f.component, f.files)
        .await?;
    body.plugin = Some(PluginSpec {
        name: name.clone(),
        version: version.clone(),
    });
    match state.algorithms.create(&p, body).await {
        Ok(a) => Ok((StatusCode::CREATED, ApiJson(a))),
        Err(e) => {
            if registered.created
                && let Err(d) = state.plugins.delete(&p, &name, &version).await
            {
                tracing::warn!(plugin = %name, version = %version, error = %d.message, "removing the plugin of a refused algorithm failed");
            }
            Err(e.into())
        }
    }
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
