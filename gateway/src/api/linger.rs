//! Lingering read: a request answered before its body was read to the end (413 over a
//! body limit, 401, 403, a validation error) has the rest of its body read and thrown away,
//! up to [`LINGER_BYTES`] and [`LINGER_FOR`], before the answer goes out.
//!
//! Without it the connection closes under a client that is still writing, and clients that
//! write the whole body before they read (reqwest, Python's requests, most SDKs) see a
//! broken pipe instead of the answer that says what was wrong. nginx does the same
//! (`lingering_close`). Past either bound the connection is closed as before.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;

/// The most of a refused body the gateway reads: beyond the largest body limit it sets
/// (plugin uploads), far below what a hostile client could make it read.
pub const LINGER_BYTES: u64 = 64 * 1024 * 1024;
/// The longest the gateway waits for the rest of a refused body.
pub const LINGER_FOR: Duration = Duration::from_secs(10);

/// The middleware: hands the handler a body that gives back its unread rest when dropped,
/// and reads that rest (within the bounds) once the handler has answered.
pub async fn linger(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let (give_back, mut rest) = oneshot::channel();
    let watched = Body::new(Watched {
        inner: Some(body),
        finished: false,
        give_back: Some(give_back),
    });
    let resp = next.run(Request::from_parts(parts, watched)).await;
    // Only a body already dropped: one a handler handed to a task that outlives it is not
    // waited for.
    if let Ok(rest) = rest.try_recv() {
        discard(rest).await;
    }
    resp
}

async fn discard(mut body: Body) {
    let mut read = 0u64;
    let _ = tokio::time::timeout(LINGER_FOR, async {
        while read <= LINGER_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    })
    .await;
}

/// A request body that, dropped before its end, sends itself back to [`linger`].
struct Watched {
    inner: Option<Body>,
    finished: bool,
    give_back: Option<oneshot::Sender<Body>>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Ended, or broken: nothing left worth reading.
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Dropping the sender instead tells `linger` there is nothing to read.
        if let (Some(inner), Some(back)) = (self.inner.take(), self.give_back.take())
            && !self.finished
            && !inner.is_end_stream()
        {
            let _ = back.send(inner);
        }
    }
}
