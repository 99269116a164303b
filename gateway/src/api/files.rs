//! `atelier.file`'s HTTP API, the front door on each running notebook's file link (the
//! service, links and connections, is `notebooks::files`):
//!
//! ```text
//! GET    /stat?uri=      {"exists", "is_dir", "size"}
//! GET    /list?uri=&recursive=1   {"items": [{"name", "size", "is_dir"}]}
//! GET    /read?uri=      the object's bytes (streamed)
//! PUT    /write?uri=[&append=1]   the body becomes the object, streamed (multipart when
//!                                 large; at most 50 GB; 4 writes at once per notebook)
//! DELETE /remove?uri=[&recursive=1]
//! POST   /copy?src=&dst=[&recursive=1]   store-side copies
//! POST   /mkdir?uri=     a folder marker (`prefix/`)
//! ```
//! Errors are `{"error": "<message>"}` with the status of their kind.
//!
//! The same socket reaches the workflows' API (`/v1/workflows…`, `/v1/workflow-schema`,
//! for `atelier.workflow`): [`notebook_api_path`] decides which paths go there, and
//! [`NotebookApi`] hands them to the gateway's own handlers (`api::for_notebooks`) as the
//! notebook's owner with a user's rights ([`crate::auth::NotebookCaller`]); the notebook holds
//! no token, and no header it sends counts. Every other path is a 404.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use tower::ServiceExt;

use super::error::ApiError;
use super::state::{AppState, WeakAppState};
use crate::notebooks::files::{Connection, FileScope, FileServer, Incoming};
use crate::object_storage::{ObjectUri, transfer};

/// Serves the API on each notebook's socket (given to `notebooks::files::Files`).
pub struct FileApi {
    /// Where requests for the workflows' API go.
    pub api: NotebookApi,
}

/// The gateway's API as a notebook's socket reaches it. Made before the services (which
/// hold the file API), given them by `server::build` once they exist, and held weakly, so
/// that the services do not keep themselves alive.
#[derive(Clone, Default)]
pub struct NotebookApi(Arc<OnceLock<WeakAppState>>);

impl NotebookApi {
    /// Requests go to `state`'s API from now on (the first call wins).
    pub fn connect(&self, state: &AppState) {
        let _ = self.0.set(state.downgrade());
    }

    /// Serves `req`, which arrived on `notebook`'s socket, as `owner` would be served by the
    /// gateway's API, if [`notebook_api_path`] lets its path through; a 404 otherwise.
    pub async fn relay(&self, owner: &str, notebook: &str, req: Request) -> Response {
        let path = req.uri().path();
        if !notebook_api_path(path) {
            return ApiError::not_found(format!(
                "no such endpoint on a notebook's socket: {path} (it serves atelier.file and /v1/workflows)"
            ))
            .into_response();
        }
        let Some(state) = self.0.get().and_then(WeakAppState::upgrade) else {
            return ApiError::unavailable("the gateway is starting or stopping; try again")
                .into_response();
        };
        let caller = match state.auth.notebook_owner(owner, notebook).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return ApiError::unauthenticated("the notebook's owner no longer exists")
                    .into_response();
            }
            Err(e) => return e.into_response(),
        };
        // A new request: the method, path, headers (no credentials) and body, and in its
        // extensions only the caller.
        let (parts, body) = req.into_parts();
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = parts.uri;
        *out.version_mut() = parts.version;
        let mut headers = parts.headers;
        for h in [
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ] {
            headers.remove(h);
        }
        *out.headers_mut() = headers;
        out.extensions_mut().insert(caller);
        match super::for_notebooks(state).oneshot(out).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

/// Whether a path on a notebook's socket goes to the gateway's API: `/v1/workflows`,
/// anything below it, and `/v1/workflow-schema`, spelt plainly: every segment below
/// `/v1/workflows` is letters, digits, `_` and `-` (names, ids and numbers are), so an
/// empty, `.` or `..` segment, a percent-encoding (`%2F`, `%2e`), a backslash or anything
/// else that another layer might read differently is refused.
pub fn notebook_api_path(path: &str) -> bool {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    let mut segments = rest.split('/');
    match segments.next() {
        Some("workflows") => segments.all(plain),
        Some("workflow-schema") => segments.next().is_none(),
        _ => false,
    }
}

impl FileServer for FileApi {
    fn serve(
        &self,
        incoming: Incoming,
        scope: FileScope,
        stop: CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let notebook = scope.notebook_id.clone();
        let (api, owner) = (self.api.clone(), scope.owner_id().to_owned());
        let relay_for = notebook.clone();
        let app = Router::new()
            .route("/stat", get(stat))
            .route("/list", get(list))
            .route("/read", get(read))
            .route("/write", put(write))
            .route("/remove", delete(remove))
            .route("/copy", post(copy))
            .route("/mkdir", post(mkdir))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(scope)
            .fallback(move |req: Request| {
                let (api, owner, notebook) = (api.clone(), owner.clone(), relay_for.clone());
                async move { api.relay(&owner, &notebook, req).await }
            });
        Box::pin(async move {
            if let Err(e) = axum::serve(incoming, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                tracing::warn!(notebook = %notebook, error = %e, "atelier.file");
            }
        })
    }
}

/// A notebook's link is the listener axum serves: its connections, one by one. When the
/// link is gone for good the server waits for its stop.
impl axum::serve::Listener for Incoming {
    type Io = Connection;
    type Addr = ();

    async fn accept(&mut self) -> (Connection, ()) {
        match self.next().await {
            Some(c) => (c, ()),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct Params {
    uri: Option<String>,
    src: Option<String>,
    dst: Option<String>,
    connection: Option<String>,
    #[serde(default)]
    recursive: Option<String>,
    #[serde(default)]
    append: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "yes"))
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, msg.into())
}

fn store_error(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_GATEWAY, msg.into())
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        if let Some(source) = e.source() {
            tracing::error!(error = format!("{source:#}"), "atelier.file request failed");
        }
        Failure(e.status(), e.message)
    }
}

fn uri(text: &Option<String>, name: &str) -> Result<ObjectUri, Failure> {
    let t = text
        .as_deref()
        .ok_or_else(|| bad(format!("{name} is missing")))?;
    ObjectUri::parse(t).map_err(bad)
}

/// (exists, is_dir, size). A folder is a prefix with something under it (or its marker).
async fn stat_of(c: &aws_sdk_s3::Client, u: &ObjectUri) -> Result<(bool, bool, u64), Failure> {
    // The listing first: some stores answer a HEAD of a folder's name slowly, with an error.
    if u.key.is_empty() || transfer::is_folder(c, u).await {
        return Ok((true, true, 0));
    }
    match c.head_object().bucket(&u.bucket).key(&u.key).send().await {
        Ok(h) => Ok((true, false, h.content_length().unwrap_or(0).max(0) as u64)),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
            Ok((false, false, 0))
        }
        Err(e) => Err(store_error(transfer::s3_error(&e, &format!("reading {u}")))),
    }
}

async fn stat(State(s): State<FileScope>, Query(p): Query<Params>) -> Result<Response, Failure> {
    let u = uri(&p.uri, "uri")?;
    let c = s
        .client(&u.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let (exists, is_dir, size) = stat_of(&c, &u).await?;
    Ok(axum::Json(json!({"exists": exists, "is_dir": is_dir, "size": size})).into_response())
}

async fn list(State(s): State<FileScope>, Query(p): Query<Params>) -> Result<Response, Failure> {
    let u = uri(&p.uri, "uri")?;
    let c = s
        .client(&u.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let prefix = u.dir_prefix();
    let mut items = Vec::new();
    if flag(&p.recursive) {
        for (key, size) in transfer::list_all(&c, &u.bucket, &prefix)
            .await
            .map_err(store_error)?
        {
            let name = key[prefix.len()..].to_string();
            if !name.is_empty() && !name.ends_with('/') {
                items.push(json!({"name": name, "size": size, "is_dir": false}));
            }
        }
    } else {
        let mut pages = c
            .list_objects_v2()
            .bucket(&u.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| store_error(transfer::s3_error(&e, &format!("listing {u}"))))?;
            for d in page.common_prefixes() {
                if let Some(k) = d.prefix() {
                    let name = k[prefix.len()..].trim_end_matches('/').to_string();
                    items.push(json!({"name": name, "size": 0, "is_dir": true}));
                }
            }
            for o in page.contents() {
                if let Some(k) = o.key() {
                    let name = &k[prefix.len()..];
                    if !name.is_empty() {
                        items.push(
                            json!({"name": name, "size": o.size().unwrap_or(0), "is_dir": false}),
                        );
                    }
                }
            }
        }
    }
    Ok(axum::Json(json!({"items": items})).into_response())
}

async fn read(State(s): State<FileScope>, Query(p): Query<Params>) -> Result<Response, Failure> {
    let u = uri(&p.uri, "uri")?;
    let c = s
        .client(&u.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let out = match c.get_object().bucket(&u.bucket).key(&u.key).send().await {
        Ok(o) => o,
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("{u}: no such object"),
            ));
        }
        Err(e) => return Err(store_error(transfer::s3_error(&e, &format!("reading {u}")))),
    };
    let stream = futures_util::stream::unfold(out.body, |mut body| async move {
        body.next()
            .await
            .map(|chunk| (chunk.map_err(std::io::Error::other), body))
    });
    Ok(Body::from_stream(stream).into_response())
}

/// The largest object one write may make: the seed's limit for a file uploaded into a
/// notebook (50 GB), which also keeps a multipart upload of 16 MiB parts far from S3's
/// 10,000 parts.
const MAX_WRITE_BYTES: u64 = 50 * 1000 * 1000 * 1000;
/// What one write holds in memory at most (a part); nothing is staged on disk.
const WRITE_PART_BYTES: usize = 16 * 1024 * 1024;

async fn write(
    State(s): State<FileScope>,
    Query(p): Query<Params>,
    body: Body,
) -> Result<Response, Failure> {
    let u = uri(&p.uri, "uri")?;
    if u.key.is_empty() || u.key.ends_with('/') {
        return Err(bad(format!("{u} is a folder; name an object")));
    }
    let c = s
        .client(&u.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let _turn = s
        .writes
        .acquire()
        .await
        .map_err(|_| store_error("the notebook's file service is stopping"))?;
    // Streamed to the store as it arrives (in parts when large): nothing is staged on the
    // gateway's disks, and one write holds at most one part in memory.
    let body = body
        .into_data_stream()
        .map(|c| c.map_err(|e| format!("reading the request: {e}")));
    let existing = if flag(&p.append) {
        // Object stores cannot append: the object is read again in front of the new bytes.
        match c.get_object().bucket(&u.bucket).key(&u.key).send().await {
            Ok(o) => Some(futures_util::stream::unfold(o.body, |mut b| async move {
                b.next()
                    .await
                    .map(|c| (c.map_err(|e| format!("reading {e}")), b))
            })),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
            Err(e) => {
                return Err(store_error(transfer::s3_error(
                    &e,
                    &format!("reading {u} to append to it"),
                )));
            }
        }
    } else {
        None
    };
    let chunks = futures_util::stream::iter(existing)
        .flatten()
        .chain(body)
        .boxed();
    match transfer::upload_stream(&c, &u, chunks, WRITE_PART_BYTES, MAX_WRITE_BYTES).await {
        Ok(size) => Ok(axum::Json(json!({"size": size})).into_response()),
        Err(transfer::StreamError::TooLarge(max)) => Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{u}: a write may make an object of at most {max} bytes; nothing was written"),
        )),
        Err(transfer::StreamError::Source(e)) => Err(bad(format!("{e}; nothing was written"))),
        Err(transfer::StreamError::Store(e)) => Err(store_error(e)),
    }
}

async fn remove(State(s): State<FileScope>, Query(p): Query<Params>) -> Result<Response, Failure> {
    let u = uri(&p.uri, "uri")?;
    let c = s
        .client(&u.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let keys: Vec<String> = if flag(&p.recursive) {
        let prefix = u.dir_prefix();
        if prefix.is_empty() {
            return Err(bad("refusing to remove a whole bucket; name a folder"));
        }
        transfer::list_all(&c, &u.bucket, &prefix)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    } else {
        let (exists, is_dir, _) = stat_of(&c, &u).await?;
        if !exists {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("{u}: no such object"),
            ));
        }
        if is_dir {
            return Err(bad(format!(
                "{u} is a folder; remove it with recursive=True"
            )));
        }
        vec![u.key.clone()]
    };
    for k in &keys {
        c.delete_object()
            .bucket(&u.bucket)
            .key(k)
            .send()
            .await
            .map_err(|e| {
                store_error(transfer::s3_error(
                    &e,
                    &format!("removing obs://{}/{k}", u.bucket),
                ))
            })?;
    }
    Ok(axum::Json(json!({"removed": keys.len()})).into_response())
}

async fn copy(State(s): State<FileScope>, Query(p): Query<Params>) -> Result<Response, Failure> {
    let src = uri(&p.src, "src")?;
    let dst = uri(&p.dst, "dst")?;
    let c = s
        .client(&src.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let pairs: Vec<(String, String)> = if flag(&p.recursive) {
        let (from, to) = (src.dir_prefix(), dst.dir_prefix());
        transfer::list_all(&c, &src.bucket, &from)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|(k, _)| (k.clone(), format!("{to}{}", &k[from.len()..])))
            .collect()
    } else {
        vec![(src.key.clone(), dst.key.clone())]
    };
    for (from, to) in &pairs {
        let source = format!("{}/{}", src.bucket, crate::urls::encode_path(from));
        c.copy_object()
            .bucket(&dst.bucket)
            .key(to)
            .copy_source(source)
            .send()
            .await
            .map_err(|e| {
                store_error(transfer::s3_error(
                    &e,
                    &format!("copying obs://{}/{from}", src.bucket),
                ))
            })?;
    }
    Ok(axum::Json(json!({"copied": pairs.len()})).into_response())
}

async fn mkdir(State(s): State<FileScope>, Query(p): Query<Params>) -> Result<Response, Failure> {
    let u = uri(&p.uri, "uri")?;
    let c = s
        .client(&u.bucket, &p.connection)
        .await
        .map_err(Failure::from)?;
    let marker = u.dir_prefix();
    if !marker.is_empty() {
        c.put_object()
            .bucket(&u.bucket)
            .key(&marker)
            .body(Vec::new().into())
            .send()
            .await
            .map_err(|e| store_error(transfer::s3_error(&e, &format!("making {u}"))))?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::notebook_api_path;

    #[test]
    fn a_notebooks_socket_reaches_the_workflows_api_only_by_its_plain_paths() {
        for ok in [
            "/v1/workflows",
            "/v1/workflows/etl",
            "/v1/workflows/wf-0b6f2c1e-7d1c-4a57-9a2e-3f1d2f6a9b10",
            "/v1/workflows/etl/versions/2",
            "/v1/workflows/etl/runs",
            "/v1/workflows/etl/runs/3/steps/train_1/retry",
            "/v1/workflow-schema",
        ] {
            assert!(notebook_api_path(ok), "{ok} should be relayed");
        }
        for refused in [
            // Other parts of the API, the pages, the file API's own names.
            "/v1/users",
            "/v1/users/alice/tokens",
            "/v1/whoami",
            "/v1/notebooks",
            "/v1/audit",
            "/metrics",
            "/",
            "",
            "/stat",
            "/v1",
            "/v1/",
            // Look-alikes.
            "/v1/workflowsx",
            "/v1/workflows-admin",
            "/v1/workflow-schema/x",
            "/v1/workflow-schema/",
            "/V1/workflows",
            "/v1/Workflows",
            "/v2/workflows",
            "v1/workflows",
            "//v1/workflows",
            "/v1//workflows",
            // Traversal, in every spelling another layer might decode or normalise.
            "/v1/workflows/../users",
            "/v1/workflows/..",
            "/v1/workflows/./etl",
            "/v1/workflows/%2e%2e/users",
            "/v1/workflows/.%2e/users",
            "/v1/workflows/..%2Fusers",
            "/v1/workflows/etl%2F..%2F..%2Fusers",
            "/v1/workflows/etl%00",
            "/v1/workflows\\..\\users",
            "/v1/workflows/etl\\..\\..\\users",
            "/v1/workflows/etl;/../../users",
            // Empty segments and trailing slashes.
            "/v1/workflows/",
            "/v1/workflows//etl",
            "/v1/workflows/etl/",
            // Not ASCII, spaces, other punctuation.
            "/v1/workflows/ét",
            "/v1/workflows/a b",
            "/v1/workflows/a.b",
            "/v1/workflows/a:b",
            "/v1/workflows/@admin",
        ] {
            assert!(
                !notebook_api_path(refused),
                "{refused:?} must not be relayed"
            );
        }
    }
}
