//! Early answers that do not break proxies.
//!
//! Many answers come before the request body is read: a 401 to a client that sent an
//! upload chunk without credentials (or whose token expired half-way), a 404 for an
//! unknown upload, a 413, a 416, a 429. If the server then closes the connection while
//! the client, or a proxy streaming the body (nginx with `proxy_request_buffering off`),
//! is still sending, the peer gets `EPIPE`/`ECONNRESET` instead of the answer; nginx
//! counts that as a failure of the replica (`max_fails`) and takes it out of rotation,
//! so one client's mistake becomes everybody's 502.
//!
//! So every request's body is watched: when the handler has answered without reading
//! it to the end, the rest is read and discarded before the answer goes out, bounded by
//! [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`]. Then the connection stays usable. Past
//! either bound the answer says `Connection: close`, and the server closes after it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

/// The most of an unread body that is read and discarded after an early answer. Upload
/// chunks of clients that start unauthenticated are usually well below it; a larger
/// one costs a closed connection, not an unbounded read.
pub const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// The longest an unread body is read for after an early answer: a slow or stalled
/// sender cannot hold the answer back for longer.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Middleware: answers, then drains what the handler left of the request body.
pub async fn drain_unread_body(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let left = Arc::new(Mutex::new(None));
    let (parts, body) = req.into_parts();
    let watched = Watched {
        inner: Some(body),
        polled: false,
        left: left.clone(),
    };
    let mut resp = next
        .run(Request::from_parts(parts, Body::new(watched)))
        .await;
    let Some(rest) = left.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return resp; // read to the end, or still held by someone who will
    };
    if expects_continue && !rest.polled {
        // The client waits for `100 Continue` before it sends the body, and never got
        // it: it sends nothing more. Reading now would invite the body we refused.
        return resp;
    }
    if !drain(rest.body).await {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads and discards `body` within the bounds; whether it reached its end.
async fn drain(mut body: Body) -> bool {
    if body.size_hint().lower() > DRAIN_MAX_BYTES {
        return false; // its Content-Length says so already
    }
    let read_to_end = async {
        let mut read = 0u64;
        loop {
            match body.frame().await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
            }
        }
    };
    let drained = tokio::time::timeout(DRAIN_MAX_TIME, read_to_end)
        .await
        .unwrap_or(false);
    if !drained {
        tracing::debug!("an early answer's request body was not read to its end; closing the connection after the answer");
    }
    drained
}

/// What a handler dropped of a request body before its end.
struct Unread {
    body: Body,
    /// Whether anyone asked for data (hyper sends `100 Continue` on the first poll).
    polled: bool,
}

/// A request body that, dropped before its end, hands the rest back to the middleware.
struct Watched {
    inner: Option<Body>,
    polled: bool,
    left: Arc<Mutex<Option<Unread>>>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // At its end (or broken): nothing for the middleware to drain.
            self.inner = None;
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
        if let Some(body) = self.inner.take().filter(|b| !b.is_end_stream()) {
            *self.left.lock().unwrap_or_else(|p| p.into_inner()) = Some(Unread {
                body,
                polled: self.polled,
            });
        }
    }
}
