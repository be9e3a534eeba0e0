//! The body of a hot call's answer on its way to the client. When the last
//! byte has gone out (or the client goes away) it finishes the call there and
//! then: the instance goes back to its pool before the client can send its
//! next request, so a sequential client always finds it idle. No task per
//! call is spawned unless the protocol has not decided yet.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fnrs_protocol::{BoxBody, BoxError, Outcome, empty_body};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

/// What to do once the exchange is over.
pub(crate) trait Finish: Send + 'static {
    fn finish(self: Box<Self>, outcome: Option<Outcome>);
}

pub(crate) struct CallBody {
    inner: BoxBody,
    pending: Option<(oneshot::Receiver<Outcome>, Box<dyn Finish>)>,
}

impl CallBody {
    pub(crate) fn new(
        inner: BoxBody,
        done: oneshot::Receiver<Outcome>,
        finish: Box<dyn Finish>,
    ) -> Self {
        Self {
            inner,
            pending: Some((done, finish)),
        }
    }

    /// The body is over: let the protocol settle and finish the call.
    fn complete(&mut self) {
        let Some((mut done, finish)) = self.pending.take() else {
            return;
        };
        // Dropping the protocol's body makes it report how the exchange ended.
        drop(std::mem::replace(&mut self.inner, empty_body()));
        match done.try_recv() {
            Ok(outcome) => finish.finish(Some(outcome)),
            Err(oneshot::error::TryRecvError::Closed) => finish.finish(None),
            Err(oneshot::error::TryRecvError::Empty) => {
                tokio::spawn(async move { finish.finish(done.await.ok()) });
            }
        }
    }
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &r {
            Some(Ok(_)) if this.inner.is_end_stream() => this.complete(),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => this.complete(),
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        self.complete();
    }
}
