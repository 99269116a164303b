//! Calls to services whose models run on a container or process engine: the request goes
//! to a ready instance's server as it came (method, the API path, query, headers without
//! the caller's credentials, the body streamed under the service's body limit), and the
//! answer comes back as the engine streams it (SSE unbuffered); a WebSocket upgrade becomes
//! a byte pipe both ways (spec/inference.md §2.12). The call timeout bounds the wait for the
//! answer's head (a wait for one of the instance's connections included); a stream or a
//! WebSocket may then run longer.
//!
//! ```text
//! caller ─► /v1/infers/{svc}/{path} ─► auth ─► Services::proxy_target (limit, version,
//!        ready instance, leased) ─► the instance's shared connections (upstream::Shared)
//!        ─► its relay socket ─► engine :8080 /{path}
//! ```
//!
//! The call holds its lease on the instance until the answer's body ends, so a retirement
//! (an update's swap, a stop) lets it finish. A WebSocket gets a connection of its own and
//! runs on [`upstream::Relays`]; it is cut when its instance goes (retired, restarted,
//! replaced: [`Lease::gone`]) and at the gateway's shutdown.

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::error::{ApiError, ApiResult};
use crate::api::state::AppState;
use crate::routing::Endpoint;
use crate::serving::call::ProxyTarget;
use crate::serving::instances::Lease;
use crate::upstream;

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
    let lease = target.lease;
    let Some((endpoint, _)) = Endpoint::of(lease.endpoint()) else {
        record(502);
        return Err(failed(ApiError::unavailable(format!(
            "service {}'s instance cannot be reached",
            target.service
        ))));
    };
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
        let upgrade = async {
            let mut resp = upstream::send_upgrade(&endpoint, req).await?;
            let on = hyper::upgrade::on(&mut resp);
            Ok((resp.map(Body::new), Some(on)))
        };
        tokio::time::timeout(target.timeout, upgrade).await
    } else {
        // The instance's connections, shared by every call to it.
        let cap = state.settings.engine_connections;
        let Some(conns) = lease.attached(|| upstream::Shared::new(endpoint.clone(), cap)) else {
            record(500);
            return Err(failed(ApiError::internal(anyhow::anyhow!(
                "the instance's connections are of another kind"
            ))));
        };
        let call = async { Ok((conns.send(req).await?, None)) };
        tokio::time::timeout(target.timeout, call).await
    };
    let (resp, upstream_upgrade) = match sent {
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
        let (Some(client_upgrade), Some(upstream_upgrade)) = (client_upgrade, upstream_upgrade)
        else {
            return Err(ApiError::unavailable(
                "the engine switched protocols unasked",
            ));
        };
        let service = target.service_id.clone();
        // A retirement does not wait for a WebSocket; it is cut when the instance goes.
        let lease = lease.detach();
        let gone = lease.gone();
        state.engine_relays.spawn(async move {
            let _lease = lease;
            let relay = async {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, engine)) => {
                        let (mut c, mut e) = (TokioIo::new(client), TokioIo::new(engine));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut e).await;
                    }
                    Err(e) => {
                        tracing::debug!(service = %service, error = %e, "engine WebSocket upgrade failed")
                    }
                }
            };
            // Cut: both connections are dropped, so both ends see them close.
            tokio::select! {
                _ = relay => {}
                _ = gone.cancelled() => {
                    tracing::info!(service = %service, "engine WebSocket cut: its instance went");
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
    // The call is in flight (for a retirement's drain) until its body ends.
    let body = Leased {
        body,
        _lease: lease,
    };
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// An answer's body that holds the call's lease on its instance until it ends.
struct Leased {
    body: Body,
    _lease: Lease,
}

impl hyper::body::Body for Leased {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
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
