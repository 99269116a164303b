//! `/v1/plugins`: Wasm plugins (see `crate::plugins`): upload, list, show, delete, and trial
//! calls with JSON input.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::Items;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::plugins::{Manifest, PluginView};

pub fn routes(state: &AppState) -> Router<AppState> {
    let upload_limit = upload_limit(state);
    Router::new()
        .route(
            "/v1/plugins",
            get(list)
                .post(register)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/plugins/{name}/{version}", get(get_one).delete(delete))
        .route(
            "/v1/plugins/{name}/{version}/invoke",
            post(invoke).layer(DefaultBodyLimit::max(16 * 1024 * 1024)),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    name: Option<String>,
    world: Option<String>,
}

async fn list(
    _p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ApiJson<Items<PluginView>>> {
    if let Some(w) = &q.world
        && atelier_plugins::World::parse(w).is_none()
    {
        return Err(ApiError::invalid(format!(
            "unknown world {w:?}; the worlds are {}",
            atelier_plugins::World::ALL.map(|w| w.name()).join(", ")
        )));
    }
    let mut conn = state.store.pool.acquire().await?;
    let rows =
        crate::store::plugins::list(&mut conn, q.name.as_deref(), q.world.as_deref()).await?;
    Ok(ApiJson(Items {
        items: rows.into_iter().map(PluginView::from).collect(),
    }))
}

async fn get_one(
    _p: Principal,
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<PluginView>> {
    Ok(ApiJson(state.plugins.get(&name, &version).await?.into()))
}

#[derive(Serialize)]
struct Registered {
    #[serde(flatten)]
    plugin: PluginView,
    /// Whether this upload compiled the component (false: its compiled form was cached).
    compiled: bool,
}

/// A plugin upload's parts: the manifest, the component, the model files, and the parts
/// named in `extra` (another route's own, by name).
pub(super) struct PluginForm {
    pub manifest: Manifest,
    pub component: Vec<u8>,
    pub files: Vec<(String, Vec<u8>)>,
    pub extra: Vec<(String, Vec<u8>)>,
}

/// Reads `manifest`, `component`, `file` parts and the `extra` ones; anything else is 400.
pub(super) async fn read_form(
    state: &AppState,
    mut form: Multipart,
    extra: &[&str],
) -> ApiResult<PluginForm> {
    let mut manifest: Option<Manifest> = None;
    let mut component: Option<Vec<u8>> = None;
    let mut files = Vec::new();
    let mut extras = Vec::new();
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                crate::error::Kind::TooLarge,
                "payload_too_large",
                format!(
                    "the upload is larger than the component limit plus the model files limit ({} MB + {} MB)",
                    state.settings.plugins.max_component_mb, state.settings.plugins.max_files_mb
                ),
            )
        } else {
            ApiError::invalid(format!(
                "the multipart upload is malformed: {}",
                e.body_text()
            ))
        }
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            "manifest" => {
                let m = serde_json::from_slice(&data)
                    .map_err(|e| ApiError::invalid(format!("manifest: {e}")))?;
                manifest = Some(m);
            }
            "component" => component = Some(data.to_vec()),
            "file" => {
                let Some(file_name) = file_name else {
                    return Err(ApiError::invalid("a `file` part needs a file name"));
                };
                files.push((file_name, data.to_vec()));
            }
            other if extra.contains(&other) => extras.push((name, data.to_vec())),
            other => {
                let mut parts = vec!["manifest", "component", "file"];
                parts.extend_from_slice(extra);
                return Err(ApiError::invalid(format!(
                    "unexpected multipart part {other:?}; the parts are {}",
                    parts.join(", ")
                )));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        ApiError::invalid(
            "no manifest: send a multipart part `manifest` with {\"name\", \"version\", ...}",
        )
    })?;
    Ok(PluginForm {
        manifest,
        component: component.unwrap_or_default(),
        files,
        extra: extras,
    })
}

/// The body limit of a plugin upload: the component and model files limits, and 1 MB.
pub(super) fn upload_limit(state: &AppState) -> usize {
    let p = &state.settings.plugins;
    ((p.max_component_mb + p.max_files_mb) * 1024 * 1024 + 1024 * 1024) as usize
}

/// `POST /v1/plugins`, multipart: `manifest` (JSON: name, version, world?, description?,
/// limits?), `component` (the .wasm), and any number of `file` parts (model files of an
/// inference processor, by their file names). 201 when registered, 200 when the same
/// component and manifest were registered already.
async fn register(
    p: Principal,
    State(state): State<AppState>,
    form: Multipart,
) -> ApiResult<(StatusCode, ApiJson<Registered>)> {
    let f = read_form(&state, form, &[]).await?;
    let r = state
        .plugins
        .register(&p, f.manifest, f.component, f.files)
        .await?;
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        ApiJson(Registered {
            plugin: r.view,
            compiled: r.compiled,
        }),
    ))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.plugins.delete(&p, &name, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/plugins/{name}/{version}/invoke` with the world's JSON input: the output (or
/// the typed error), logs, stdout/stderr, metrics and timings.
async fn invoke(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<serde_json::Value>,
) -> ApiResult<ApiJson<atelier_plugins::CallReport<serde_json::Value>>> {
    let report = state.plugins.invoke(&p, &name, &version, &input).await?;
    Ok(ApiJson(report))
}
