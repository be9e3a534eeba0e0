//! The HTTP/1.1 server under the router: the accept loop with a bound on
//! open connections, timeouts for clients that are slow to send a request
//! head or stay silent, and Fn's error shape for request lines too long for
//! hyper.
//!
//! hyper asks its timer for a deadline each time a connection starts waiting
//! for a request head (hyper's `header_read_timeout`; the timer is ours). That
//! wait ends when the head is read; a running call or a streamed answer is
//! never under it. Our timer gives, as Go's server (and so Fn) does:
//! - a new connection: the header timeout, from accept;
//! - a kept-alive connection: the idle timeout until the first byte of the
//!   next request arrives, then the header timeout from that byte.
//!
//! A connection over the limit is accepted and answered with a 503 at once
//! (rather than left in the listen backlog, where no timeout applies and the
//! client learns nothing).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest request line (method, target and version) let through. hyper
/// refuses targets over 65 534 bytes with a 414 without a body; lines over
/// this get Fn's error shape instead.
pub const MAX_REQUEST_LINE: usize = 63 * 1024;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to send a request head: from accept on a new connection, from
    /// its first byte on a kept-alive one. `None` = no limit.
    pub header_timeout: Option<Duration>,
    /// Time a kept-alive connection may wait for the next request.
    pub idle_timeout: Option<Duration>,
    /// Most open connections; `None` = no limit.
    pub max_connections: Option<usize>,
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets the open
/// connections finish their requests (hyper's graceful shutdown) and returns
/// when they have closed.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                tracing::error!(error = %e, "accepting a connection");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        };
        // Answers leave at once (a streamed answer's head and first chunk
        // are separate writes, which Nagle's algorithm would hold back).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let permit = match &slots {
            None => None,
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    refuse(tcp);
                    continue;
                }
            },
        };
        tracker.spawn(connection(tcp, app.clone(), limits, stop.clone(), permit));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Accept errors that concern one connection only.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// An answer written straight to the socket, in Fn's error shape.
fn canned_answer(status: http::StatusCode, message: &str, extra: &str) -> Vec<u8> {
    let body = fnrs_api::error_body(message);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        fnrs_api::JSON_CONTENT_TYPE,
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Closes a connection over the limit with a 503 (best effort: a socket just
/// accepted has room for it, and nothing waits for it).
fn refuse(tcp: TcpStream) {
    tracing::debug!("too many connections");
    let answer = canned_answer(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "Too many connections",
        &format!("retry-after: {}\r\n", fnrs_api::RETRY_AFTER_SECS),
    );
    let _ = tcp.try_write(&answer);
}

async fn connection(
    tcp: TcpStream,
    app: axum::Router,
    limits: ConnLimits,
    stop: CancellationToken,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Guarded {
        tcp,
        state: state.clone(),
        refused: false,
    });
    let service =
        hyper::service::service_fn(move |req| tower::ServiceExt::oneshot(app.clone(), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer { state, limits })
        // Only switches the timer on: the timer sets the deadlines.
        .header_read_timeout(Duration::from_secs(1));
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_end(r),
        _ = stop.cancelled() => {
            // Idle connections close now; busy ones after their answer.
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        }
    }
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// `ConnState::line` once the request line has ended.
const LINE_DONE: u32 = u32::MAX;

/// What a connection's timer and reader share.
struct ConnState {
    /// When the connection was accepted.
    epoch: Instant,
    /// When the first byte of the current request head arrived, as
    /// nanoseconds after `epoch` plus one; 0 = none yet.
    first_byte: AtomicU64,
    /// Bytes of the current request line seen so far, or [`LINE_DONE`].
    line: AtomicU32,
    /// Head waits started on this connection.
    heads: AtomicU32,
}

impl ConnState {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            // A new connection's first head is timed from accept.
            first_byte: AtomicU64::new(1),
            line: AtomicU32::new(0),
            heads: AtomicU32::new(0),
        }
    }

    /// A new request head is awaited (hyper asks the timer).
    fn head_started(&self) {
        if self.heads.fetch_add(1, Ordering::Relaxed) > 0 {
            self.first_byte.store(0, Ordering::Relaxed);
            self.line.store(0, Ordering::Relaxed);
        }
    }

    fn first_byte_at(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }

    /// Bytes read from the client: notes the first byte of a head and
    /// follows the request line. False if the line is too long.
    fn on_bytes(&self, new: &[u8]) -> bool {
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.first_byte.store(nanos + 1, Ordering::Relaxed);
        }
        let line = self.line.load(Ordering::Relaxed);
        if line == LINE_DONE {
            return true;
        }
        match new.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line.store(LINE_DONE, Ordering::Relaxed);
                line as usize + i <= MAX_REQUEST_LINE + 1
            }
            None => {
                let seen = (line as usize).saturating_add(new.len());
                self.line.store(
                    u32::try_from(seen)
                        .unwrap_or(LINE_DONE - 1)
                        .min(LINE_DONE - 1),
                    Ordering::Relaxed,
                );
                // Refused when the line ends (so that the client has sent it
                // and reads the answer); hyper's buffer bounds a line that
                // never ends.
                true
            }
        }
    }
}

/// The timer hyper uses for request heads; see the module comment.
struct HeadTimer {
    state: Arc<ConnState>,
    limits: ConnLimits,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep {
            inner: tokio::time::sleep(duration),
        })
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.state.head_started();
        Box::pin(HeadSleep {
            state: self.state.clone(),
            limits: self.limits,
            started: Instant::now(),
            timer: None,
        })
    }
}

pin_project_lite::pin_project! {
    struct PlainSleep {
        #[pin]
        inner: tokio::time::Sleep,
    }
}

impl Future for PlainSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

pin_project_lite::pin_project! {
    /// Fires when the connection has waited too long for a request head.
    struct HeadSleep {
        state: Arc<ConnState>,
        limits: ConnLimits,
        // When the wait began.
        started: Instant,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl Future for HeadSleep {
    type Output = ();

    /// hyper polls this whenever the head is still incomplete after a read,
    /// so the deadline moves from idle to header when the first byte comes.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let deadline = match this.state.first_byte_at() {
            Some(t) => this.limits.header_timeout.map(|d| t + d),
            None => this.limits.idle_timeout.map(|d| *this.started + d),
        };
        let Some(deadline) = deadline.map(tokio::time::Instant::from_std) else {
            this.timer.set(None);
            return Poll::Pending;
        };
        match this.timer.as_mut().as_pin_mut() {
            Some(t) if t.deadline() == deadline => {}
            Some(t) => t.reset(deadline),
            None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
        }
        match this.timer.as_pin_mut() {
            Some(t) => t.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// The client's socket as hyper reads it: bytes pass through and are
/// watched (first byte of a head, length of the request line).
struct Guarded {
    tcp: TcpStream,
    state: Arc<ConnState>,
    /// Answered with a 414: reads end.
    refused: bool,
}

impl Guarded {
    /// Answers 414 in Fn's shape and ends the connection (best effort: the
    /// previous answer has been written, so the socket has room).
    fn refuse_long_line(&mut self, cx: &mut Context<'_>) {
        let answer = canned_answer(http::StatusCode::URI_TOO_LONG, "URI too long", "");
        let _ = self.tcp.try_write(&answer);
        // Read what already arrived so that closing does not reset the
        // connection before the client reads the answer.
        let mut scratch = [0u8; 4096];
        for _ in 0..64 {
            match self.tcp.try_read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let _ = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.refused = true;
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() && !this.state.on_bytes(new) {
            // hyper sees the end of the stream instead of the long line.
            buf.set_filled(before);
            this.refuse_long_line(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_measured_across_reads() {
        let s = ConnState::new();
        assert!(s.on_bytes(&vec![b'a'; MAX_REQUEST_LINE - 10]));
        assert!(s.on_bytes(b"0123456789\r\nHost: x\r\n\r\n"), "at the limit");
        // Later bytes of the same head are not counted.
        assert!(s.on_bytes(&vec![b'a'; MAX_REQUEST_LINE * 2]));
        s.head_started();
        s.head_started();
        assert!(s.on_bytes(&vec![b'a'; MAX_REQUEST_LINE]));
        assert!(!s.on_bytes(b"a\r\n"), "one byte over");
    }

    #[test]
    fn the_first_head_is_timed_from_accept_later_ones_from_their_first_byte() {
        let s = ConnState::new();
        s.head_started();
        assert_eq!(s.first_byte_at(), Some(s.epoch));
        s.head_started();
        assert_eq!(s.first_byte_at(), None);
        s.on_bytes(b"G");
        assert!(s.first_byte_at().is_some_and(|t| t >= s.epoch));
    }
}
