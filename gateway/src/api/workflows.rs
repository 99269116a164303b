//! `/v1/workflows`: workflow definitions and their versions (`crate::workflows::service`),
//! and their runs (`crate::workflows::runs`).
//! A definition is sent as JSON, or as YAML with `Content-Type: application/yaml`; a
//! workflow is named by its id or, for its owner, its name.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde::Deserialize;

use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{AllQuery, Items};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::workflows::definition::Format;
use crate::workflows::runs::{Comparison, RunFilter, RunView, StartRun};
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
        .route("/v1/workflows/{workflow}/config", get(config))
        .route("/v1/workflows/{workflow}/copy", post(copy))
        .route("/v1/workflows/{workflow}/runs", get(runs).post(start_run))
        .route("/v1/workflows/{workflow}/runs/compare", get(compare))
        .route(
            "/v1/workflows/{workflow}/runs/{run}",
            get(show_run).delete(delete_run),
        )
        .route("/v1/workflows/{workflow}/runs/{run}/stop", post(stop_run))
        .route("/v1/workflows/{workflow}/runs/{run}/retry", post(retry_run))
        .route("/v1/workflows/{workflow}/runs/{run}/rerun", post(rerun))
        .route(
            "/v1/workflows/{workflow}/runs/{run}/steps/{step}/retry",
            post(retry_step),
        )
        .route(
            "/v1/workflows/{workflow}/runs/{run}/steps/{step}/proceed",
            post(proceed),
        )
        .route(
            "/v1/workflows/{workflow}/runs/{run}/steps/{step}/log",
            get(step_log),
        )
}

async fn start_run(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, ApiJson<RunView>)> {
    // An empty body starts a run with every default.
    let req: StartRun = if body.iter().all(u8::is_ascii_whitespace) {
        StartRun::default()
    } else {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| crate::error::Error::invalid(format!("{}: {}", e.path(), e.inner())))?
    };
    let r = state.workflows.start_run(&p, &workflow, req).await?;
    Ok((StatusCode::CREATED, ApiJson(r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    #[serde(default)]
    status: Option<String>,
    /// `key=value`; several, comma-separated, must all hold.
    #[serde(default)]
    tag: Option<String>,
}

async fn runs(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> ApiResult<ApiJson<Items<RunView>>> {
    let mut filter = RunFilter::default();
    if let Some(s) = &q.status {
        filter.status = Some(
            s.parse()
                .map_err(|e| crate::error::Error::invalid(format!("status: {e}")))?,
        );
    }
    for t in q
        .tag
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty())
    {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| crate::error::Error::invalid(format!("tag: {t:?} is not key=value")))?;
        filter.tags.insert(k.to_owned(), v.to_owned());
    }
    Ok(ApiJson(Items {
        items: state.workflows.runs_where(&p, &workflow, &filter).await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    #[serde(default)]
    version: Option<i64>,
}

async fn config(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<ApiJson<serde_json::Value>> {
    Ok(ApiJson(
        state.workflows.config(&p, &workflow, q.version).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CopyBody {
    #[serde(default)]
    name: Option<String>,
}

async fn copy(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, ApiJson<WorkflowView>)> {
    let req: CopyBody = if body.iter().all(u8::is_ascii_whitespace) {
        CopyBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| crate::error::Error::invalid(format!("the body: {e}")))?
    };
    let w = state
        .workflows
        .copy(&p, &workflow, req.name.as_deref())
        .await?;
    Ok((StatusCode::CREATED, ApiJson(w)))
}

async fn show_run(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<RunView>> {
    Ok(ApiJson(state.workflows.run(&p, &workflow, &run).await?))
}

async fn delete_run(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.workflows.delete_run(&p, &workflow, &run).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop_run(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<RunView>> {
    Ok(ApiJson(
        state.workflows.stop_run(&p, &workflow, &run).await?,
    ))
}

async fn retry_run(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<RunView>> {
    Ok(ApiJson(
        state.workflows.retry_run(&p, &workflow, &run, None).await?,
    ))
}

async fn rerun(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, ApiJson<RunView>)> {
    let r = state.workflows.rerun(&p, &workflow, &run).await?;
    Ok((StatusCode::CREATED, ApiJson(r)))
}

async fn retry_step(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run, step)): ApiPath<(String, String, String)>,
) -> ApiResult<ApiJson<RunView>> {
    Ok(ApiJson(
        state
            .workflows
            .retry_run(&p, &workflow, &run, Some(&step))
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProceedBody {
    #[serde(default)]
    values: serde_json::Map<String, serde_json::Value>,
}

async fn proceed(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run, step)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<ProceedBody>,
) -> ApiResult<ApiJson<RunView>> {
    Ok(ApiJson(
        state
            .workflows
            .proceed(&p, &workflow, &run, &step, body.values)
            .await?,
    ))
}

async fn step_log(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((workflow, run, step)): ApiPath<(String, String, String)>,
) -> ApiResult<String> {
    Ok(state.workflows.step_log(&p, &workflow, &run, &step).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareQuery {
    /// Run numbers, comma-separated (none: the 10 newest).
    #[serde(default)]
    runs: Option<String>,
}

async fn compare(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(workflow): ApiPath<String>,
    ApiQuery(q): ApiQuery<CompareQuery>,
) -> ApiResult<ApiJson<Comparison>> {
    let mut numbers = Vec::new();
    for part in q
        .runs
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        numbers.push(part.trim().parse::<i64>().map_err(|_| {
            crate::error::Error::invalid(format!("runs: {part:?} is not a run number"))
        })?);
    }
    Ok(ApiJson(
        state.workflows.compare(&p, &workflow, &numbers).await?,
    ))
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
