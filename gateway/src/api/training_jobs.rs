//! `/v1/training-jobs`: training jobs (`crate::training::jobs`). A job is named by its id
//! or, for its owner, its name.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::{AllQuery, Items};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::store::resource_events::EventRecord;
use crate::store::training_jobs::MetricRow;
use crate::training::algorithms::AlgorithmView;
use crate::training::jobs::{CreateJob, JobView, LogQuery};

/// Bytes of a log one answer (or one streamed piece) carries.
const LOG_PIECE: u64 = 1 << 20;
/// How often a followed log is read again when its job's bell did not ring (the platform's
/// own lines, the end of the attempt): the runner rings it as it copies what workers print.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// A followed log ends after this long even if the job goes on (the client asks again).
const FOLLOW_FOR: Duration = Duration::from_secs(6 * 3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/training-jobs", get(list).post(create))
        .route("/v1/training-jobs/{job}", get(show).delete(delete))
        .route("/v1/training-jobs/{job}/stop", post(stop))
        .route("/v1/training-jobs/{job}/rebuild", post(rebuild))
        .route("/v1/training-jobs/{job}/request", get(request))
        .route("/v1/training-jobs/{job}/save-as-algorithm", post(save_as))
        .route("/v1/training-jobs/{job}/events", get(events))
        .route("/v1/training-jobs/{job}/logs", get(logs))
        .route("/v1/training-jobs/{job}/metrics", get(metrics))
        .route("/v1/training-jobs/{job}/usage", get(usage))
        .route("/v1/training-jobs/{job}/notifications", get(notifications))
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateJob>,
) -> ApiResult<(StatusCode, ApiJson<JobView>)> {
    let j = state.jobs.create(&p, body).await?;
    Ok((StatusCode::CREATED, ApiJson(j)))
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AllQuery>,
) -> ApiResult<ApiJson<Items<JobView>>> {
    let items = state
        .jobs
        .list(&p, q.owner(&p, "training jobs")?.is_none())
        .await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<ApiJson<JobView>> {
    Ok(ApiJson(state.jobs.get(&p, &job).await?))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.jobs.delete(&p, &job).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<ApiJson<JobView>> {
    Ok(ApiJson(state.jobs.stop(&p, &job).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildBody {
    #[serde(default)]
    name: Option<String>,
}

/// A new job with the same request (`{"name": …}` or a new default name).
async fn rebuild(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
    body: Option<ApiJson<RebuildBody>>,
) -> ApiResult<(StatusCode, ApiJson<JobView>)> {
    let name = body.and_then(|ApiJson(b)| b.name);
    let j = state.jobs.rebuild(&p, &job, name).await?;
    Ok((StatusCode::CREATED, ApiJson(j)))
}

/// The create request a rebuild sends (without a name).
async fn request(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<ApiJson<CreateJob>> {
    Ok(ApiJson(state.jobs.request_of(&p, &job).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveAsBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

async fn save_as(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
    ApiJson(b): ApiJson<SaveAsBody>,
) -> ApiResult<(StatusCode, ApiJson<AlgorithmView>)> {
    let a = state
        .jobs
        .save_as_algorithm(&p, &job, &b.name, b.description)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(a)))
}

async fn events(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<ApiJson<Items<EventRecord>>> {
    Ok(ApiJson(Items {
        items: state.jobs.events(&p, &job).await?,
    }))
}

/// The job's webhook deliveries (pending, delivered, failed).
async fn notifications(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<ApiJson<Items<crate::notify::Delivery>>> {
    Ok(ApiJson(Items {
        items: state.jobs.notifications(&p, &job).await?,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsQuery {
    #[serde(default)]
    name: Option<String>,
}

async fn metrics(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<ApiJson<Items<MetricRow>>> {
    Ok(ApiJson(Items {
        items: state
            .jobs
            .metrics(&p, &job, q.name.as_deref(), false)
            .await?,
    }))
}

/// The job's resource usage per worker: `system/cpuUsage` (percent of one CPU),
/// `system/memUsage` (MiB) and `system/gpuUtil` (percent; GPU flavors, with NVML), one
/// sample per sampling period.
async fn usage(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
) -> ApiResult<ApiJson<Items<MetricRow>>> {
    Ok(ApiJson(Items {
        items: state.jobs.metrics(&p, &job, None, true).await?,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    worker: Option<i64>,
    #[serde(default)]
    attempt: Option<i64>,
    /// `false`: the user's lines only.
    #[serde(default)]
    system: Option<bool>,
    /// Lines containing this.
    #[serde(default)]
    q: Option<String>,
    /// Stream lines as they come until the attempt ends.
    #[serde(default)]
    follow: Option<bool>,
    /// From this byte of the log on (what `X-Log-Next` said).
    #[serde(default)]
    from: Option<u64>,
    /// As a file to save.
    #[serde(default)]
    download: Option<bool>,
}

/// `GET …/logs`: one worker's log of one attempt, as text. `follow=true` streams it until
/// the attempt ends; otherwise at most 1 MiB from `from`, with `X-Log-Next` saying where
/// the next piece starts.
async fn logs(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let query = LogQuery {
        worker: q.worker.unwrap_or(0),
        attempt: q.attempt,
        user_only: q.system == Some(false),
        contains: q.q.clone().filter(|s| !s.is_empty()),
    };
    let from = q.from.unwrap_or(0);
    let first = state
        .jobs
        .log_chunk(&p, &job, &query, from, LOG_PIECE)
        .await?;
    if q.follow != Some(true) {
        let mut r = (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (
                    header::HeaderName::from_static("x-log-next"),
                    first.next.to_string(),
                ),
            ],
            first.text,
        )
            .into_response();
        if q.download == Some(true)
            && let Ok(v) = format!(
                "attachment; filename=\"job-worker-{}-attempt-{}.log\"",
                query.worker, first.attempt
            )
            .parse()
        {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(r);
    }
    // Followed: the first piece, then what comes, until the attempt is over.
    let query = LogQuery {
        attempt: Some(first.attempt),
        ..query
    };
    let jobs = state.jobs.clone();
    let until = tokio::time::Instant::now() + FOLLOW_FOR;
    // What was copied between the first read and this subscription: read once more at once.
    let mut bell = jobs.log_bell(&first.job_id);
    bell.mark_changed();
    let start = (Some(first.text), first.next, first.live, bell);
    let stream = futures_util::stream::unfold(start, move |(pending, at, live, mut bell)| {
        let jobs = jobs.clone();
        let p = p.clone();
        let job = job.clone();
        let query = query.clone();
        async move {
            if let Some(text) = pending {
                return Some((Ok::<_, std::io::Error>(text), (None, at, live, bell)));
            }
            let mut live = live;
            loop {
                if !live || tokio::time::Instant::now() >= until {
                    return None;
                }
                tokio::select! {
                    r = bell.changed() => {
                        if r.is_err() {
                            // No bell any more (never while subscribed): poll.
                            tokio::time::sleep(FOLLOW_EVERY).await;
                        }
                    }
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                bell.borrow_and_update();
                let chunk = jobs.log_chunk(&p, &job, &query, at, LOG_PIECE).await.ok()?;
                live = chunk.live;
                if !chunk.text.is_empty() || chunk.next != at {
                    return Some((Ok(chunk.text), (None, chunk.next, live, bell)));
                }
                if !live {
                    // One last read: what was written as it ended.
                    let last = jobs.log_chunk(&p, &job, &query, at, LOG_PIECE).await.ok()?;
                    if last.text.is_empty() {
                        return None;
                    }
                    return Some((Ok(last.text), (None, last.next, false, bell)));
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}
