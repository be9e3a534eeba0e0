//! A response body fed by a channel from a task that owns the function's
//! output stream (used by the legacy `http` format, whose body timer must run
//! even when nobody polls the body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use crate::BoxError;

pub(crate) struct ChannelBody {
    pub(crate) rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    /// Set before `rx` closes when the body ended in an error.
    pub(crate) err_rx: oneshot::Receiver<BoxError>,
    pub(crate) exact: Option<u64>,
    pub(crate) ended: bool,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(Ok(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Some(Err(e)) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                self.ended = true;
                match self.err_rx.try_recv() {
                    Ok(e) => Poll::Ready(Some(Err(e))),
                    Err(_) => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
