//! A deadline on every request body: a client that sends its body slower
//! than `--body-read-timeout` allows (a slow-loris) gets 408, and
//! its handler stops waiting, whichever route it chose. Ingest routes
//! also time their own read (from the moment they hold their share of
//! the ingest budget); batch imports, whose files may take hours, time
//! each wait for the next chunk instead (see `import.rs`) and are not
//! covered here.
//!
//! The body is wrapped so that a read still pending at the deadline fails;
//! whatever the handler then answers (a body it could not read is usually a
//! 400), the answer becomes a JSON 408.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub(crate) async fn body_deadline(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    // Nothing to wait for on a body-less request (most reads).
    if req.uri().path().starts_with("/v1/import/") || req.body().is_end_stream() {
        return next.run(req).await;
    }
    let after = state.body_read_timeout;
    let fired = Arc::new(AtomicBool::new(false));
    let flag = fired.clone();
    let req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(after)),
            fired: flag,
        })
    });
    let resp = next.run(req).await;
    if fired.load(Ordering::Acquire) {
        return ApiError::Timeout {
            what: "reading the request body",
            after,
        }
        .into_response();
    }
    resp
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.fired.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(axum::Error::new(
                        "the request body did not arrive in time",
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
