//! Calls to services whose models run on a container or process engine: the request goes
//! to a ready instance's server as it came (method, the API path, query, headers without
//! the caller's credentials, the body streamed under the service's body limit), and the
//! answer comes back as the engine streams it (SSE unbuffered); a WebSocket upgrade becomes
//! a byte pipe both ways (spec/inference.md §2.12). The call timeout bounds the wait for the
//! answer's head; a stream or a WebSocket may then run longer.
//!
//! ```text
//! caller ─► /v1/infers/{svc}/{path} ─► auth ─► Services::proxy_target (limit, version,
//!        ready instance) ─► instance's relay socket (upstream.rs) ─► engine :8080 /{path}
//! ```

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::error::{ApiError, ApiResult};
use crate::api::state::AppState;
use crate::routing::Endpoint;
use crate::serving::call::ProxyTarget;
use crate::upstream::{self, ConnUpstreams};

/// Sends the call to `target` and returns the engine's answer. `path` is what the engine
/// gets (`/` + the API path of `/v1/infers/{svc}/…`, or the Open Inference Protocol's own
/// path).
pub async fn forward(
    state: &AppState,
    target: ProxyTarget,
    mut parts: http::request::Parts,
    body: Body,
    path: &str,
    limit: u64,
) -> ApiResult<Response> {
    let started = Instant::now();
    let record = |status: u16| {
        state.services.metrics().record(
            &target.service_id,
            &target.model_id,
            status,
            started.elapsed().as_secs_f64(),
        );
    };
    // A call the gateway failed goes to the service's log (the engine logs its own).
    let failed = |e: ApiError| {
        let at = format!("{} {}", target.model, target.version);
        state
            .services
            .log()
            .call_failed(&target.service_id, e.code, &e.message, Some(&at));
        e
    };
    let Some((endpoint, _)) = Endpoint::of(&target.endpoint) else {
        record(502);
        return Err(failed(ApiError::unavailable(format!(
            "service {}'s instance cannot be reached",
            target.service
        ))));
    };
    let home = parts.extensions.get::<ConnUpstreams>().cloned();
    let upgrade = upstream::is_upgrade(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let mut req = http::Request::new(if upgrade {
        Body::empty()
    } else {
        Body::new(http_body_util::Limited::new(body, limit as usize))
    });
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    *req.uri_mut() = uri
        .parse()
        .map_err(|e| ApiError::invalid(format!("the request path {uri:?}: {e}")))?;
    *req.method_mut() = parts.method.clone();
    let mut headers = std::mem::take(&mut parts.headers);
    upstream::strip_hop_by_hop(&mut headers, upgrade);
    // The caller's credentials (and cookies: the gateway's console session) stay here.
    for name in crate::serving::call::CREDENTIALS {
        headers.remove(*name);
    }
    headers.insert(header::HOST, HeaderValue::from_static("localhost:8080"));
    if let Some((name, value)) = &target.header
        && let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        )
    {
        // A custom setting's header wins over one the caller sent.
        headers.insert(name, value);
    }
    *req.headers_mut() = headers;

    let sent = if upgrade {
        tokio::time::timeout(target.timeout, upstream::send_upgrade(&endpoint, req)).await
    } else {
        tokio::time::timeout(
            target.timeout,
            upstream::send(home.as_ref(), &endpoint, req),
        )
        .await
    };
    let mut resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if too_large(&e) {
                record(413);
                return Err(failed(ApiError::too_large(format!(
                    "the request body is larger than service {}'s body limit ({limit} bytes; body_limit_mb)",
                    target.service
                ))));
            }
            tracing::warn!(service = %target.service_id, error = %e, "an engine instance did not answer");
            record(502);
            return Err(failed(ApiError::unavailable(format!(
                "service {}'s instance did not answer: {e}",
                target.service
            ))));
        }
        Err(_) => {
            record(504);
            return Err(failed(ApiError::of(
                crate::error::Kind::TimedOut,
                format!(
                    "the call took longer than {} s (service {}'s call timeout, call_timeout_seconds)",
                    target.timeout.as_secs_f64(),
                    target.service
                ),
            )));
        }
    };
    record(resp.status().as_u16());

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::unavailable(
                "the engine switched protocols unasked",
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let service = target.service_id.clone();
        #[allow(clippy::disallowed_methods)]
        // the WebSocket relay ends with either side, not with the request
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, engine)) => {
                    let (mut c, mut e) = (TokioIo::new(client), TokioIo::new(engine));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut e).await;
                }
                Err(e) => {
                    tracing::debug!(service = %service, error = %e, "engine WebSocket upgrade failed")
                }
            }
        });
        let (mut parts, _) = resp.into_parts();
        parts.headers.remove(header::SET_COOKIE);
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    upstream::strip_hop_by_hop(&mut parts.headers, false);
    // An engine sets no cookie of the gateway's origin.
    parts.headers.remove(header::SET_COOKIE);
    if let Ok(v) = HeaderValue::from_str(&target.version) {
        parts.headers.insert("x-model-version", v);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Whether a failed send failed on the body limit.
fn too_large(e: &upstream::UpstreamError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
