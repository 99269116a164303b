//! The front door to notebooks: `/nb/{id}/…` over HTTP and WebSocket.
//!
//! ```text
//! request ─► front (host.rs: console or {id}.<notebook domain>)
//!         ─► authn (console: bearer, or the session cookie only with notebook_origin = path;
//!                   notebook host: its own cookie, or the one-time ticket at `/?ticket=`)
//!         ─► route lookup (cached) ─► authz (owner) ─► status check
//!         ─► upstream request (+ Jupyter token, − our credentials)
//!         ─► response (token scrubbed from HTML and headers) │ 101 ─► byte pipe both ways
//! ```
//!
//! A notebook's own host serves the same paths as the console's path form (Jupyter's
//! `base_url` stays `/nb/{id}/`), and nothing else: `/` exchanges a ticket (or goes to
//! `/nb/{id}/lab`), every other path answers 404. `/nb/{id}/.atelier/` is the gateway's own:
//! the auto-stop lease the JupyterLab extension shows and renews (`lease`, `renew`).
//!
//! Bodies stream both ways; only HTML responses are buffered, to scrub the token JupyterLab
//! writes into its page config. WebSockets are relayed as bytes after the upgrade, so no
//! message size limit applies here; each is registered with `auth::revoke` (user, token,
//! notebook) and cut when one of them is revoked.

pub mod host;
pub mod wsscan;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::activity::{ActivityClocks, Source};
use crate::api::error::ApiError;
use crate::api::pages;
use crate::api::state::AppState;
use crate::auth::authz::{self, RouteGrant};
use crate::auth::revoke::{Subject, Watch};
use crate::auth::{Principal, Via, csrf};
use crate::config::NotebookOrigin;
use crate::notebooks::status::RUNNING;
use crate::store::audit::{self, Action, Target};
use crate::upstream::{self, ConnUpstreams, is_upgrade, strip_hop_by_hop};
use crate::urls::encode_path;

/// HTML larger than this is passed through unscrubbed: JupyterLab's pages are a few KiB, and
/// a user's own large HTML file does not hold the server's token.
const HTML_SCRUB_LIMIT: usize = 8 * 1024 * 1024;

/// Proxies one request; `home` holds the upstream connections of the downstream connection
/// it came on.
pub async fn serve(state: &AppState, req: Request, home: Option<&ConnUpstreams>) -> Response {
    match proxy(state, req, home).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

fn notebook_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/nb/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A 4xx/5xx as HTML for browsers, as the JSON error shape for API clients.
fn refuse(e: ApiError, html: bool) -> Response {
    if !html {
        return e.into_response();
    }
    let page = pages::message_page(e.status().canonical_reason().unwrap_or("Error"), &e.message);
    (e.status(), page).into_response()
}

/// Serves one request that came to notebook `id`'s own host ([`host::Front::Notebook`]).
pub async fn serve_notebook_host(
    state: &AppState,
    id: &str,
    req: Request,
    home: Option<&ConnUpstreams>,
) -> Response {
    match notebook_host(state, id, req, home).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

/// A browser asking for a page (not a script's request, nor a WebSocket).
fn is_navigation(req: &Request, html: bool) -> bool {
    html && matches!(*req.method(), Method::GET | Method::HEAD) && !is_upgrade(req.headers())
}

async fn proxy(
    state: &AppState,
    req: Request,
    home: Option<&ConnUpstreams>,
) -> Result<Response, Response> {
    let html = wants_html(req.headers());
    // When the credential check begins: a revocation after it still cuts a WebSocket.
    let since = std::time::Instant::now();
    let Some(id) = notebook_id(req.uri().path()).map(str::to_owned) else {
        return Err(refuse(ApiError::not_found("no such notebook"), html));
    };
    let id = id.as_str();
    let presented = state.auth.presented(req.headers()).map(|p| p.via);
    let principal = match state.auth.authenticate_shared(req.headers()).await {
        Ok(Some(p)) => p,
        outcome => {
            if html && req.method() == Method::GET {
                let next = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                return Err(
                    Redirect::to(&format!("/login?next={}", encode_path(next))).into_response()
                );
            }
            let e = outcome.err().unwrap_or_else(|| {
                ApiError::unauthenticated("authentication required: send Authorization: Bearer <token> or log in at /login")
            });
            return Err(refuse(e, html));
        }
    };
    let via = presented.unwrap_or(Via::Bearer);
    if via == Via::Cookie && state.settings.notebook_origin == NotebookOrigin::Subdomain {
        return Err(cookie_on_path(state, id, &req, html));
    }
    authorized(state, principal, id, via, false, req, html, home, since).await
}

/// The session cookie on the console's `/nb/{id}/` while notebooks have origins of their
/// own: a browser navigating there is sent to the notebook's host (through the console's
/// ticket endpoint); anything else is refused, since a page on the console's origin could
/// make it.
fn cookie_on_path(state: &AppState, id: &str, req: &Request, html: bool) -> Response {
    if is_navigation(req, html) {
        let here = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        return Redirect::to(&format!(
            "/v1/notebooks/{}/open?path={}",
            encode_path(id),
            encode_path(here)
        ))
        .into_response();
    }
    refuse(
        ApiError::forbidden(format!(
            "browser sessions open notebooks at their own origin ({}/nb/{id}/lab, through GET /v1/notebooks/{id}/open); /nb/{id}/ on this host takes an API token (Authorization: Bearer)",
            state.settings.origins.notebook(id)
        )),
        html,
    )
}

async fn notebook_host(
    state: &AppState,
    id: &str,
    req: Request,
    home: Option<&ConnUpstreams>,
) -> Result<Response, Response> {
    let html = wants_html(req.headers());
    // GET only: a HEAD (a link preview, a prefetch) must not spend a ticket.
    if req.uri().path() == "/" && req.method() == Method::GET {
        return Ok(exchange_ticket(state, id, &req, html));
    }
    if notebook_id(req.uri().path()) != Some(id) {
        return Err(refuse(
            ApiError::not_found(format!(
                "nothing here: this host serves notebook {id} under /nb/{id}/ only"
            )),
            html,
        ));
    }
    // When the credential check begins: a revocation after it still cuts a WebSocket.
    let since = std::time::Instant::now();
    let principal = match state
        .auth
        .authenticate_notebook_host(req.headers(), id)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) if is_navigation(&req, html) => {
            // To the console for a ticket (and a login first, where needed).
            let here = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            return Err(Redirect::to(&format!(
                "{}/v1/notebooks/{}/open?path={}",
                state.settings.origins.console(),
                encode_path(id),
                encode_path(here)
            ))
            .into_response());
        }
        Ok(None) => {
            return Err(refuse(
                ApiError::unauthenticated(format!(
                    "not logged in on this notebook's host; open it from the console ({}/v1/notebooks/{id}/open)",
                    state.settings.origins.console()
                )),
                html,
            ));
        }
        Err(e) => return Err(refuse(e, html)),
    };
    authorized(
        state,
        principal,
        id,
        Via::Cookie,
        true,
        req,
        html,
        home,
        since,
    )
    .await
}

/// `GET /?ticket=…` on a notebook's host: a valid ticket for this notebook becomes this
/// host's cookie, and the browser continues to where the ticket was made for. The landing
/// is a page that moves on by itself, so the next request starts on this host and carries
/// the new `SameSite=Strict` cookie (a redirect chain that began on the console may not).
fn exchange_ticket(state: &AppState, id: &str, req: &Request, html: bool) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TicketQuery {
        ticket: Option<String>,
    }
    let open = format!(
        "{}/v1/notebooks/{id}/open",
        state.settings.origins.console()
    );
    let ticket = match axum::extract::Query::<TicketQuery>::try_from_uri(req.uri()) {
        Ok(q) => q.0.ticket,
        Err(_) => {
            return refuse(
                ApiError::invalid("this host's root takes only ?ticket=<ticket>"),
                html,
            );
        }
    };
    let Some(ticket) = ticket else {
        return Redirect::to(&format!("/nb/{id}/lab")).into_response();
    };
    let Some((cookie, _, next)) = state.auth.logins().redeem(&ticket, id) else {
        let e = ApiError::forbidden(format!(
            "this link to the notebook has expired or was used already; open the notebook again from the console ({open})"
        ));
        let mut resp = refuse(e, html);
        pages::no_store(&mut resp);
        return resp;
    };
    let jar = state.auth.cookies();
    let max_age = i64::from(state.settings.session_hours) * 3600;
    let mut resp = pages::continue_page(&next);
    if let Ok(v) = HeaderValue::from_str(&jar.set(jar.notebook(), &cookie, max_age)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    pages::no_store(&mut resp);
    resp
}

/// After authentication, on either front: the owner's grant, the cross-site check, then the
/// gateway's own `.atelier/` endpoints or the notebook's server. `notebook_host`: the request
/// came to the notebook's own host, where the cookie is the only credential (see
/// [`cross_site_with_cookie`]).
#[allow(clippy::too_many_arguments)] // one pipeline stage's inputs; a struct would only rename them
async fn authorized(
    state: &AppState,
    principal: Arc<Principal>,
    id: &str,
    via: Via,
    notebook_host: bool,
    req: Request,
    html: bool,
    home: Option<&ConnUpstreams>,
    since: std::time::Instant,
) -> Result<Response, Response> {
    let route = match state.routes.get(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(refuse(authz::not_found(id), html)),
        Err(e) => return Err(refuse(ApiError::internal(e), html)),
    };
    let grant = authz::authorize_route(principal, route).map_err(|e| refuse(e, html))?;
    if cross_site_with_cookie(req.method(), req.headers(), notebook_host) {
        return Err(refuse(
            ApiError::forbidden(
                "cross-site request refused: the Origin does not match this gateway",
            ),
            html,
        ));
    }
    if let Some(rest) = req
        .uri()
        .path()
        .strip_prefix(&format!("/nb/{id}/.atelier/"))
    {
        let rest = rest.to_owned();
        return page_api(state, &grant, &rest, via, req).await;
    }
    forward(state, grant, req, html, home, since).await
}

/// `/nb/{id}/.atelier/…`: what the JupyterLab extension asks the gateway about its own
/// notebook (a page there may call nothing else of the API): `GET lease`, `POST renew`.
async fn page_api(
    state: &AppState,
    grant: &RouteGrant,
    rest: &str,
    via: Via,
    req: Request,
) -> Result<Response, Response> {
    let id = &grant.route().notebook_id;
    let renew = match (req.method(), rest) {
        (&Method::GET, "lease") => false,
        (&Method::POST, "renew") => {
            if via == Via::Cookie
                && req.headers().get(csrf::HEADER).map(|v| v.as_bytes()) != Some(b"1")
            {
                return Err(ApiError::forbidden(
                    "renewing with the browser's cookie needs the X-Atelier-CSRF: 1 header",
                )
                .into_response());
            }
            true
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "no such endpoint: /nb/{id}/.atelier/{rest} (there are GET lease and POST renew)"
            ))
            .into_response());
        }
    };
    match crate::api::notebooks::page_lease(state, grant.principal(), id, renew).await {
        Ok(v) => Ok(axum::Json(v).into_response()),
        Err(e) => Err(e.into_response()),
    }
}

async fn forward(
    state: &AppState,
    grant: RouteGrant,
    req: Request,
    html: bool,
    home: Option<&ConnUpstreams>,
    since: std::time::Instant,
) -> Result<Response, Response> {
    let route = grant.route();
    let upstream = match (&route.status, &route.target) {
        (s, Some(t)) if *s == RUNNING => t,
        (s, _) => {
            return Err(refuse(
                ApiError::conflict(format!(
                    "notebook {} is {s}, not RUNNING; start it first (atelier notebook start {})",
                    route.name, route.name
                )),
                html,
            ));
        }
    };
    // A request that changes something (a file save or upload, a kernel started or
    // interrupted) is a user action; reads are what an open tab polls by itself.
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        state.activity.touch(route);
    }

    let (mut parts, body) = req.into_parts();
    if parts.method == Method::GET && parts.uri.path().trim_end_matches('/').ends_with("/lab") {
        audit_open(state, &grant);
    }
    let upgrade = is_upgrade(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    // Origin-form to the notebook server; the browser's Host goes along (Jupyter compares it
    // with the Origin of WebSockets).
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in the URI.
        let host = parts.uri.authority().unwrap_or(&upstream.authority);
        if let Ok(h) = HeaderValue::from_str(host.as_str()) {
            parts.headers.insert(header::HOST, h);
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = http::Uri::from(path);
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    strip_credentials(&mut parts.headers);
    if html {
        // The token is scrubbed from HTML, which needs it uncompressed.
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    parts
        .headers
        .insert(header::AUTHORIZATION, upstream.auth_header.clone());
    let req = http::Request::from_parts(parts, body);
    let sent = if upgrade {
        upstream::send_upgrade(&upstream.endpoint, req).await
    } else {
        upstream::send(home, &upstream.endpoint, req).await
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(notebook = %route.notebook_id, error = %e, "upstream request failed");
            return Err(refuse(
                ApiError::unavailable(format!(
                    "notebook {}'s server does not answer; try again shortly",
                    route.name
                )),
                html,
            ));
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(refuse(
                ApiError::unavailable("unexpected protocol switch from the notebook"),
                html,
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let notebook = route.notebook_id.clone();
        let clocks = state.activity.clone();
        let p = grant.principal();
        let registration = state.auth.revocations().register(
            Watch::new(),
            vec![
                Subject::User(p.user_id.clone()),
                Subject::Token(p.token_id.clone()),
                Subject::Notebook(notebook.clone()),
            ],
            since,
        );
        #[allow(clippy::disallowed_methods)]
        // the WebSocket relay ends with either side or a revocation, not with the gateway
        tokio::spawn(async move {
            let relay = async {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client_io, upstream_io)) => {
                        let c = TokioIo::new(client_io);
                        let u = TokioIo::new(upstream_io);
                        relay_websocket(c, u, &clocks, &notebook).await;
                    }
                    Err(e) => {
                        tracing::debug!(notebook = %notebook, error = %e, "websocket upgrade failed")
                    }
                }
            };
            // Revoked: both connections are dropped, so both ends see them close.
            tokio::select! {
                _ = relay => {}
                why = registration.watch().revoked() => {
                    tracing::info!(notebook = %notebook, reason = why.as_str(), "WebSocket cut: access revoked");
                }
            }
        });
        let (mut parts, _) = resp.into_parts();
        scrub_headers(&mut parts.headers, &upstream.token);
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    scrub_headers(&mut parts.headers, &upstream.token);
    let is_html = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let small = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|n| n <= HTML_SCRUB_LIMIT);
    if is_html && small && !parts.headers.contains_key(header::CONTENT_ENCODING) {
        let bytes = match http_body_util::Limited::new(body, HTML_SCRUB_LIMIT)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                return Err(refuse(
                    ApiError::unavailable(format!("reading the notebook's page: {e}")),
                    html,
                ));
            }
        };
        let scrubbed = scrub_bytes(&bytes, upstream.token.as_bytes());
        parts.headers.remove(header::CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, Body::from(scrubbed)));
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn audit_open(state: &AppState, grant: &RouteGrant) {
    let store = state.store.clone();
    // Tracked with the lifecycle's tasks: a shutdown waits for the audit row.
    let tasks = state.lifecycle.tasks().clone();
    let (user, id, name) = (
        grant.user().to_owned(),
        grant.route().notebook_id.clone(),
        grant.route().name.clone(),
    );
    tasks.spawn(async move {
        let result = async {
            let mut conn = store.pool.acquire().await?;
            audit::record(
                &mut conn,
                &user,
                Action::OpenNotebook,
                Target {
                    kind: "notebook",
                    id: &id,
                    name: &name,
                },
                "ok",
                None,
            )
            .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "recording openNotebook failed");
        }
    });
}

/// A state-changing request (or a WebSocket) from another site that rides on a cookie.
/// Jupyter skips its own XSRF check for token-authenticated requests, and every proxied
/// request carries the token, so the gateway checks the Origin instead. On the console a
/// bearer token is the credential (no browser sends one by itself) and a request without
/// `Origin` is not a browser's; on a notebook's own host the cookie is the only credential,
/// so `Authorization` exempts nothing and a write or WebSocket must name its Origin (every
/// browser does).
fn cross_site_with_cookie(method: &Method, headers: &HeaderMap, notebook_host: bool) -> bool {
    if !notebook_host && headers.contains_key(header::AUTHORIZATION) {
        return false;
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !is_upgrade(headers) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return notebook_host;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !origin_host.eq_ignore_ascii_case(host)
}

/// Relays a WebSocket both ways as bytes; what the client sends is watched for user actions
/// (kernel `execute_request`/`input_reply`, terminal input), which count as activity.
/// Pings, reconnects and what an open tab exchanges by itself do not.
async fn relay_websocket<C, U>(client: C, upstream: U, clocks: &ActivityClocks, notebook: &str)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
    let to_upstream = async {
        let mut scanner = wsscan::Scanner::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if scanner.feed(&buf[..n]) > 0 {
                clocks.touch_notebook(notebook, Source::Proxy);
            }
            if up_wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = up_wr.shutdown().await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut up_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    };
    tokio::join!(to_upstream, to_client);
}

/// The gateway's own credentials (the bearer token, every `atelier_` cookie) stay at the
/// gateway.
fn strip_credentials(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            !c.is_empty()
                && c.split_once('=')
                    .is_none_or(|(k, _)| !crate::auth::is_gateway_cookie(k.trim()))
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !cookies.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

fn scrub_headers(headers: &mut HeaderMap, token: &str) {
    if token.is_empty() {
        return;
    }
    let leaking: Vec<header::HeaderName> = headers
        .iter()
        .filter(|(_, v)| {
            v.as_bytes()
                .windows(token.len())
                .any(|w| w == token.as_bytes())
        })
        .map(|(k, _)| k.clone())
        .collect();
    for name in leaking {
        let values: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .filter_map(|v| {
                HeaderValue::from_bytes(&scrub_bytes(v.as_bytes(), token.as_bytes())).ok()
            })
            .collect();
        headers.remove(&name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
}

fn scrub_bytes(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    // memchr's searcher (SIMD) instead of comparing at every byte: a JupyterLab page is a
    // few KiB, a user's HTML file may be megabytes.
    let mut out = Vec::with_capacity(haystack.len());
    let mut at = 0;
    // Leftmost, non-overlapping matches: what a scan that skips each match finds.
    for found in memchr::memmem::find_iter(haystack, needle) {
        out.extend_from_slice(&haystack[at..found]);
        at = found + needle.len();
    }
    out.extend_from_slice(&haystack[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_paths() {
        assert_eq!(notebook_id("/nb/abc/lab"), Some("abc"));
        assert_eq!(notebook_id("/nb/abc"), Some("abc"));
        assert_eq!(notebook_id("/nb//lab"), None);
        assert_eq!(notebook_id("/v1/x"), None);
    }

    #[test]
    fn cross_site_requests_on_the_cookie_are_refused() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        let same = h(&[
            ("host", "gw:8000"),
            ("origin", "http://gw:8000"),
            ("cookie", "atelier_session=x"),
        ]);
        let other = h(&[
            ("host", "gw:8000"),
            ("origin", "https://evil.example"),
            ("cookie", "atelier_session=x"),
        ]);
        let bearer = h(&[
            ("host", "gw:8000"),
            ("origin", "https://evil.example"),
            ("authorization", "Bearer t"),
        ]);
        let ws = h(&[
            ("host", "gw:8000"),
            ("origin", "https://evil.example"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let no_origin = h(&[("host", "gw:8000")]);
        for notebook_host in [false, true] {
            assert!(!cross_site_with_cookie(&Method::POST, &same, notebook_host));
            assert!(cross_site_with_cookie(&Method::POST, &other, notebook_host));
            assert!(!cross_site_with_cookie(&Method::GET, &other, notebook_host));
            assert!(cross_site_with_cookie(&Method::GET, &ws, notebook_host));
            assert!(!cross_site_with_cookie(
                &Method::GET,
                &no_origin,
                notebook_host
            ));
        }
        assert!(!cross_site_with_cookie(&Method::POST, &bearer, false));
        assert!(!cross_site_with_cookie(&Method::POST, &no_origin, false));
        // On a notebook's host the cookie is the only credential: Authorization exempts
        // nothing, and a write must say where it comes from.
        assert!(cross_site_with_cookie(&Method::POST, &bearer, true));
        assert!(cross_site_with_cookie(&Method::POST, &no_origin, true));
    }

    #[test]
    fn scrubbing() {
        assert_eq!(scrub_bytes(b"a TOK b TOKTOK", b"TOK"), b"a  b ".to_vec());
        assert_eq!(scrub_bytes(b"aaaa", b"aa"), b"".to_vec());
        assert_eq!(scrub_bytes(b"aaa", b"aa"), b"a".to_vec());
        assert_eq!(scrub_bytes(b"TOK", b""), b"TOK".to_vec());
        assert_eq!(scrub_bytes(b"no match", b"TOK"), b"no match".to_vec());
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, "/nb/x/lab?token=TOK".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        scrub_headers(&mut h, "TOK");
        assert_eq!(h[header::LOCATION], "/nb/x/lab?token=");
        assert_eq!(h[header::CONTENT_TYPE], "text/html");
    }

    #[test]
    fn our_credentials_do_not_travel() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer atl_x".parse().unwrap());
        h.insert(
            header::COOKIE,
            "_xsrf=1; atelier_session=ats_y; username-x=2; atelier_nb=n; __Host-atelier_csrf=c"
                .parse()
                .unwrap(),
        );
        strip_credentials(&mut h);
        assert!(!h.contains_key(header::AUTHORIZATION));
        assert_eq!(h[header::COOKIE], "_xsrf=1; username-x=2");
    }

    #[test]
    fn upgrade_detection_and_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
