//! Inference calls: the seed's `POST /v1/infers/{service}[/{api path}]` and the Open
//! Inference Protocol (KServe V2: `/v2/models/{name}/infer`, `/ready`, metadata,
//! `/v2/health/*`), so existing V2 clients work. `{service}` is a service's id, or the
//! caller's service's name.
//!
//! A call authenticates with `Authorization: Bearer <token>` or the seed's `X-Auth-Token`,
//! or, without either, as an app (`serving::apps`) with `X-Apig-AppCode: <AppCode>` or
//! `apikey: <AppKey>`, or signed with its AppKey and AppSecret (`Authorization:
//! SDK-HMAC-SHA256 …`, `serving::signing`: the body is read under the limit first, since it
//! is signed); an app calls the services bound to it that have `app_auth` on. Its
//! body is refused with 413 past the service's body limit (12 MB unless the service
//! sets another) before any of it reaches a processor. JSON and `multipart/form-data`
//! bodies reach the processor as the seed's `_preprocess` gets them (spec/inference.md
//! §2.6); anything else as raw bytes.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::serving::Caller;
use crate::serving::apps::AppCredential;
use crate::serving::call::{CREDENTIALS, HOP_BY_HOP};
use crate::serving::signing;
use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/infers/{service}", any(infer_seed))
        .route("/v1/infers/{service}/{*path}", any(infer_seed_path))
        .route("/v2/models/{name}/infer", post(infer_v2))
        .route("/v2/models/{name}/ready", get(ready_v2))
        .route("/v2/models/{name}", get(metadata_v2))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(live))
}

/// The caller, from `Authorization: Bearer` (or the console's cookie) or `X-Auth-Token`;
/// without those, an app's `X-Apig-AppCode` or `apikey`.
async fn caller(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
) -> Result<Caller, ApiError> {
    let has_token = parts.headers.contains_key(header::AUTHORIZATION);
    if let Some(t) = parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .filter(|_| !has_token)
    {
        return match state.auth.resolve(t.trim()).await? {
            Some(p) => Ok(Caller::User(p)),
            None => Err(ApiError::unauthenticated(
                "the token is not valid (revoked, expired or mistyped)",
            )),
        };
    }
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or(""))
    };
    if !has_token && !parts.headers.contains_key("x-auth-token") {
        let presented = match (text("x-apig-appcode"), text("apikey")) {
            (Some(_), Some(_)) => {
                return Err(ApiError::unauthenticated(
                    "send one of X-Apig-AppCode and apikey, not both",
                ));
            }
            (Some(code), None) => Some(AppCredential::Code(code)),
            (None, Some(key)) => Some(AppCredential::Key(key)),
            (None, None) => None,
        };
        if let Some(presented) = presented {
            return match state.apps.resolve(presented).await? {
                Some(app) => Ok(Caller::App(app)),
                None => Err(ApiError::unauthenticated(match presented {
                    AppCredential::Code(_) => {
                        "the AppCode is not valid (deleted, its app deleted, or mistyped)"
                    }
                    AppCredential::Key(_) => {
                        "the AppKey is not valid (its app deleted, or mistyped)"
                    }
                })),
            };
        }
    }
    Ok(Caller::User(
        Principal::from_request_parts(parts, state).await?,
    ))
}

/// The caller and the body: a signed call's body is read (under `service`'s body limit,
/// none without a service) and checked with the signature; any other call's is left as it
/// came.
async fn authenticate(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
    body: Body,
    service: Option<&str>,
) -> ApiResult<(Caller, Body)> {
    if !signing::is_signed(&parts.headers) {
        return Ok((caller(state, parts).await?, body));
    }
    let refused = |why: String| ApiError::unauthenticated(format!("signed call refused: {why}"));
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let presented = signing::parse_authorization(auth).map_err(refused)?;
    let date =
        signing::check_date(&parts.headers, time::OffsetDateTime::now_utc()).map_err(refused)?;
    let app = state
        .apps
        .resolve(AppCredential::Key(&presented.access))
        .await?
        .ok_or_else(|| {
            refused("the AppKey in Access is not valid (its app deleted, or mistyped)".into())
        })?;
    let who = Caller::App(app.clone());
    let limit = service.map_or(0, |s| state.services.body_limit(&who, s));
    let too_large = || {
        ApiError::too_large(match service {
            Some(s) => format!(
                "the request body is larger than service {s}'s body limit ({limit} bytes; body_limit_mb)"
            ),
            None => "this request takes no body".to_owned(),
        })
    };
    if declared_over(&parts.headers, limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|_| too_large())?;
    let secret = state
        .apps
        .signing_secret(&app.app_id)
        .await?
        .ok_or_else(|| refused("the app was deleted".into()))?;
    let canonical = signing::canonical_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        parts.uri.authority().map(|a| a.as_str()),
        &presented.signed_headers,
        &bytes,
    )
    .map_err(refused)?;
    let expected = signing::sign(secret.as_bytes(), &date, &canonical);
    if !signing::matches(&expected, &presented.signature) {
        return Err(refused(
            "the signature does not match the request (signed with another AppSecret, or the method, path, query, a signed header or the body changed after signing)".into(),
        ));
    }
    Ok((who, Body::from(bytes)))
}

async fn infer_seed(
    State(state): State<AppState>,
    Path(service): Path<String>,
    req: Request,
) -> Response {
    respond(infer(state, service, String::new(), req).await)
}

async fn infer_seed_path(
    State(state): State<AppState>,
    Path((service, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    respond(infer(state, service, path, req).await)
}

async fn infer_v2(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    respond(infer(state, name, "infer".into(), req).await)
}

/// Whether the request's `Content-Length` is over `limit` (refused before reading any).
fn declared_over(headers: &axum::http::HeaderMap, limit: u64) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

fn respond(r: ApiResult<Response>) -> Response {
    match r {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn infer(
    state: AppState,
    service: String,
    path: String,
    req: Request,
) -> ApiResult<Response> {
    let (mut parts, body) = req.into_parts();
    let (who, body) = authenticate(&state, &mut parts, body, Some(&service)).await?;
    let limit = state.services.body_limit(&who, &service);
    let too_large = || {
        ApiError::too_large(format!(
            "the request body is larger than service {service}'s body limit ({} bytes; body_limit_mb)",
            limit
        ))
    };
    if declared_over(&parts.headers, limit) {
        return Err(too_large());
    }
    // A service on a container or process engine: the request goes to its instance as it
    // came (streamed both ways; WebSocket and SSE included).
    match state
        .services
        .proxy_target(&who, &service, &parts.headers)
        .await
    {
        Ok(None) => {}
        Ok(Some(target)) => {
            let upstream_path = if parts.uri.path().starts_with("/v2/") {
                parts.uri.path().to_owned()
            } else {
                format!("/{path}")
            };
            return super::engine_proxy::forward(
                &state,
                target,
                parts,
                body,
                &upstream_path,
                limit,
            )
            .await;
        }
        Err((e, at)) => {
            let e = ApiError::from(e);
            if let Some((id, model)) = at {
                state
                    .services
                    .metrics()
                    .record(&id, &model, e.status().as_u16(), 0.0);
            }
            return Err(e);
        }
    }
    let bytes = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|_| too_large())?;
    let request = wit_request(&parts, &path, bytes).await?;
    let started = std::time::Instant::now();
    let answer = match state.services.call(&who, &service, request).await {
        Ok(a) => a,
        Err((e, at)) => {
            let e = ApiError::from(e);
            if let Some((id, model)) = at {
                let seconds = started.elapsed().as_secs_f64();
                state
                    .services
                    .metrics()
                    .record(&id, &model, e.status().as_u16(), seconds);
            }
            return Err(e);
        }
    };
    state.services.metrics().record(
        &answer.service_id,
        &answer.model_id,
        answer.response.status,
        started.elapsed().as_secs_f64(),
    );
    let r = answer.response;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        for (k, v) in &r.headers {
            let lower = k.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str()) || lower == "set-cookie" {
                continue;
            }
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(lower), HeaderValue::from_str(v)) {
                h.append(k, v);
            }
        }
        if let Ok(ct) = HeaderValue::from_str(&r.content_type) {
            h.insert(header::CONTENT_TYPE, ct);
        }
        if let Ok(v) = HeaderValue::from_str(&answer.version) {
            h.insert("x-model-version", v);
        }
    }
    out.body(Body::from(r.body))
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))
}

/// The request as the processor's `request` record: lower-case headers without
/// credentials, the query, and the body by its content type.
async fn wit_request(
    parts: &axum::http::request::Parts,
    path: &str,
    bytes: bytes::Bytes,
) -> ApiResult<inf::Request> {
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !CREDENTIALS.contains(&k) && !HOP_BY_HOP.contains(&k)
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let query: Vec<(String, String)> = match parts.uri.query() {
        Some(q) => axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .map_err(|e| ApiError::invalid(format!("the query string {q:?}: {e}")))?,
        None => Vec::new(),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = match media.as_str() {
        "application/json" => inf::Body::Json(String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::invalid("the body is declared application/json but is not UTF-8")
        })?),
        "multipart/form-data" => inf::Body::Multipart(multipart(&content_type, bytes).await?),
        _ => inf::Body::Raw(bytes.to_vec()),
    };
    Ok(inf::Request {
        method: parts.method.as_str().to_string(),
        path: format!("/{path}"),
        query,
        headers,
        content_type: media,
        body,
    })
}

/// A multipart body as the seed's `{"<form key>": {"<file name>": <file>}}`: each key once,
/// its files and its plain values together.
async fn multipart(content_type: &str, bytes: bytes::Bytes) -> ApiResult<Vec<inf::FormField>> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::invalid(format!("multipart/form-data: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields: Vec<inf::FormField> = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::invalid(format!("multipart/form-data: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::invalid(format!("multipart/form-data: {e}")))?;
        let at = match fields.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                fields.push(inf::FormField {
                    name,
                    files: Vec::new(),
                    values: Vec::new(),
                });
                fields.len() - 1
            }
        };
        match file_name {
            Some(file_name) => fields[at].files.push(inf::File {
                name: file_name,
                content_type,
                data: data.to_vec(),
            }),
            None => fields[at]
                .values
                .push(String::from_utf8_lossy(&data).into_owned()),
        }
    }
    Ok(fields)
}

async fn ready_v2(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (mut parts, body) = req.into_parts();
    match authenticate(&state, &mut parts, body, None).await {
        Ok((who, _)) => {
            if state.services.metadata(&who, &name).is_some() {
                StatusCode::OK.into_response()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": {"code": "unavailable", "message": format!("service {name} is not ready")}})),
                )
                    .into_response()
            }
        }
        Err(e) => e.into_response(),
    }
}

async fn metadata_v2(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (mut parts, body) = req.into_parts();
    match authenticate(&state, &mut parts, body, None).await {
        Ok((who, _)) => match state.services.metadata(&who, &name) {
            Some(m) => axum::Json(m).into_response(),
            None => ApiError::not_found(format!("no running service {name}")).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

async fn live() -> Response {
    axum::Json(json!({"live": true})).into_response()
}
