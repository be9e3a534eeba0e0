//! http-stream: HTTP/1.1 over the instance's `lsnr.sock` (contract §2).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::headers::{self as hdr, FN_CALL_ID, FN_DEADLINE};
use crate::{
    BoxBody, BoxError, CallHandle, CallRequest, ErrorKind, Limits, MAX_HEAD_BUFFER, Outcome,
    ProtocolError, errors,
};

/// The socket's fixed name in the iofs directory.
pub const SOCKET_NAME: &str = "lsnr.sock";

/// A connection to one hot http-stream instance. Serves one call at a time
/// (`call` takes `&mut self`).
///
/// The socket is validated once, at [`HttpStreamConn::connect`]: `lsnr.sock`
/// is a socket or a symlink whose target is a bare file name in the same
/// directory that is itself a socket (not a further symlink). The socket
/// inode is then held open (`O_PATH`), and every later dial goes to that
/// inode, so a function that swaps `lsnr.sock` or its target afterwards cannot
/// point the server at another socket.
///
/// One connection is kept between calls; a connection found closed before the
/// request was written is re-dialled, never reported as a failure (Fn issue
/// #1470). After any call that did not end cleanly the next call uses a fresh
/// connection.
///
/// The HTTP connection has no task of its own: whoever waits on the call (for
/// the response head, then by polling the response body) drives it, so a hot
/// call wakes no other task. A watchdog task per instance enforces the call's
/// deadline, also when nobody polls the body; it sleeps until the earliest
/// deadline that may still matter and is not woken per call.
pub struct HttpStreamConn {
    /// The socket inode, held open.
    _socket: File,
    /// `/proc/self/fd/N` of `_socket`, what we dial.
    dial_path: PathBuf,
    limits: Limits,
    /// The request side of the current connection (its driving half is in
    /// `shared`).
    link: Option<http1::SendRequest<BoxBody>>,
    shared: Arc<Shared>,
    watchdog: tokio::task::AbortHandle,
}

impl std::fmt::Debug for HttpStreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStreamConn")
            .field("dial_path", &self.dial_path)
            .finish_non_exhaustive()
    }
}

fn init_fail(why: impl Into<BoxError>) -> ProtocolError {
    ProtocolError::new(errors::CONTAINER_INIT_FAIL, ErrorKind::Init, false).with_source(why)
}

/// Validate `<dir>/lsnr.sock` and open the socket inode it designates.
fn open_socket(iofs_dir: &Path) -> Result<File, ProtocolError> {
    let link_path = iofs_dir.join(SOCKET_NAME);
    let meta = std::fs::symlink_metadata(&link_path)
        .map_err(|e| init_fail(format!("{}: {e}", link_path.display())))?;
    let target = if meta.file_type().is_symlink() {
        let t = std::fs::read_link(&link_path)
            .map_err(|e| init_fail(format!("{}: {e}", link_path.display())))?;
        let mut comps = t.components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(name)), None) => iofs_dir.join(name),
            _ => {
                return Err(init_fail(format!(
                    "{} points to {}, not to a file in the same directory",
                    link_path.display(),
                    t.display()
                )));
            }
        }
    } else {
        link_path
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&target)
        .map_err(|e| init_fail(format!("{}: {e}", target.display())))?;
    let ft = file
        .metadata()
        .map_err(|e| init_fail(format!("{}: {e}", target.display())))?
        .file_type();
    if !ft.is_socket() {
        return Err(init_fail(format!("{} is not a socket", target.display())));
    }
    Ok(file)
}

impl HttpStreamConn {
    /// Validate `<iofs_dir>/lsnr.sock` and connect to it. A bad socket (a
    /// symlink pointing elsewhere, not a socket, nothing listening) is 502
    /// "Container failed to initialize…" ([`ErrorKind::Init`]).
    pub async fn connect(iofs_dir: &Path, limits: Limits) -> Result<Self, ProtocolError> {
        let socket = open_socket(iofs_dir)?;
        let dial_path = PathBuf::from(format!("/proc/self/fd/{}", socket.as_raw_fd()));
        let (sender, conn) = dial(&dial_path, &limits).await.map_err(|e| {
            ProtocolError::new(errors::CONTAINER_INIT_FAIL, ErrorKind::Init, false)
                .with_source(e.source.unwrap_or_else(|| "connect failed".into()))
        })?;
        let shared = Arc::new(Shared::default());
        shared.lock().conn = Some(conn);
        let watchdog = tokio::spawn(watchdog(shared.clone())).abort_handle();
        Ok(Self {
            _socket: socket,
            dial_path,
            limits,
            link: Some(sender),
            shared,
            watchdog,
        })
    }

    /// The limits this connection enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Send one call and wait for the response head (bounded by
    /// `req.timeout`). On success the body streams and the timeout keeps
    /// running over it; `done` tells how it ended.
    ///
    /// If the returned future is dropped before it completes, the function may
    /// still be working on the request: the next call uses a fresh connection,
    /// and the agent should consider ending the instance.
    pub async fn call(&mut self, req: CallRequest) -> Result<CallHandle, ProtocolError> {
        let deadline = Instant::now() + req.timeout;
        let CallRequest {
            call_id,
            deadline: fn_deadline,
            method,
            url,
            mut headers,
            gateway,
            body,
            ..
        } = req;
        hdr::strip_hop_by_hop(&mut headers);
        // Go keeps Host out of its header map; the socket's Host is ours.
        headers.remove(header::HOST);
        let mut headers = if gateway {
            // The client's Content-Length travels as Fn-Http-H-Content-Length.
            hdr::wrap_gateway_request(headers, &method, &url)
        } else {
            // Framing is hyper's, from the body's size.
            headers.remove(header::CONTENT_LENGTH);
            headers
        };
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        // Moved into the header values without a copy.
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(call_id)) {
            headers.insert(FN_CALL_ID, v);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(fn_deadline.to_rfc3339_secs())) {
            headers.insert(FN_DEADLINE, v);
        }

        // A client's upload that fails fails the function's connection too;
        // the instance is fine, and the client gets 413 or 400.
        let failed = Arc::new(std::sync::OnceLock::new());
        let body = WatchedBody {
            inner: body,
            failed: Arc::clone(&failed),
        }
        .boxed_unsync();
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = Uri::from_static("/call");
        *request.headers_mut() = headers;

        // Only a connection whose last call ended cleanly is used again.
        let reuse = self.shared.begin(deadline);
        if !reuse || self.link.as_ref().is_none_or(|s| s.is_closed()) {
            self.drop_link();
        }
        let resp = match self.send(request, deadline).await {
            Ok(resp) => resp,
            Err(e) => {
                self.drop_link();
                return Err(match failed.get() {
                    Some(why) => ProtocolError::new(why.clone(), ErrorKind::BadRequest, true),
                    None => e,
                });
            }
        };
        let shared = self.shared.clone();

        match resp.status().as_u16() {
            200 => {}
            502 => {
                self.drop_link();
                return Err(ProtocolError::new(
                    errors::FUNCTION_FAILED,
                    ErrorKind::FunctionFailed,
                    true,
                ));
            }
            504 => {
                self.drop_link();
                return Err(ProtocolError::new(
                    errors::TIMED_OUT,
                    ErrorKind::Timeout,
                    true,
                ));
            }
            other => {
                self.drop_link();
                return Err(ProtocolError::new(
                    errors::INVALID_RESPONSE,
                    ErrorKind::BadResponse,
                    false,
                )
                .with_source(format!("function answered status {other}")));
            }
        }

        let head_size = 17
            + resp
                .headers()
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head_size > self.limits.max_response_header_bytes {
            self.drop_link();
            return Err(ProtocolError::new(
                errors::HEADER_TOO_LARGE,
                ErrorKind::BadResponse,
                false,
            ));
        }
        let limit = self.limits.max_response_body_bytes;
        if let Some(limit) = limit
            && resp.body().size_hint().lower() > limit
        {
            self.drop_link();
            return Err(ProtocolError::new(
                errors::BODY_TOO_LARGE,
                ErrorKind::BadResponse,
                true,
            ));
        }

        let (mut parts, incoming) = resp.into_parts();
        if gateway {
            let (status, headers) = hdr::unwrap_gateway_response(&parts.headers).map_err(|n| {
                self.drop_link();
                ProtocolError::new(errors::INVALID_RESPONSE, ErrorKind::BadResponse, true)
                    .with_source(format!("invalid Fn-Http-Status {n}"))
            })?;
            parts.status = status;
            parts.headers = headers;
        } else {
            hdr::plain_response_headers(&mut parts.headers);
            parts.status = StatusCode::OK;
        }

        let (tx, rx) = oneshot::channel();
        if !shared.arm(tx) {
            // The deadline passed between the head and here.
            self.drop_link();
            return Err(ProtocolError::timeout());
        }
        let body = ResponseBody {
            inner: incoming,
            shared,
            seen: 0,
            limit,
            finished: false,
        };
        Ok(CallHandle {
            response: Response::from_parts(parts, body.boxed_unsync()),
            done: rx,
        })
    }

    /// Forget the current connection (closing it); the next call re-dials.
    fn drop_link(&mut self) {
        self.link = None;
        let conn = self.shared.lock().conn.take();
        drop(conn);
    }

    /// Send on the kept connection, re-dialling once if it is found closed
    /// before the request was written. Drives the connection while waiting.
    async fn send(
        &mut self,
        mut req: Request<BoxBody>,
        deadline: Instant,
    ) -> Result<Response<Incoming>, ProtocolError> {
        let shared = self.shared.clone();
        for attempt in 0..2 {
            if self.link.is_none() {
                // Rare (first call after a failure): a timer of its own.
                let (sender, conn) =
                    tokio::time::timeout_at(deadline, dial(&self.dial_path, &self.limits))
                        .await
                        .map_err(|_| ProtocolError::timeout())??;
                {
                    let mut s = shared.lock();
                    // The watchdog may have fired while the dial ended: it
                    // found no connection to close, so this one is not used.
                    if s.timed_out {
                        return Err(ProtocolError::timeout());
                    }
                    s.conn = Some(conn);
                }
                self.link = Some(sender);
            }
            let Some(sender) = self.link.as_mut() else {
                continue;
            };
            let ready = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = sender.poll_ready(cx) {
                    return Poll::Ready(r);
                }
                shared.drive(cx);
                sender.poll_ready(cx)
            })
            .await;
            if ready.is_err() {
                if shared.timed_out() {
                    return Err(ProtocolError::timeout());
                }
                self.drop_link();
                continue;
            }
            let mut pending = std::pin::pin!(sender.try_send_request(req));
            let sent = std::future::poll_fn(|cx| {
                shared.drive(cx);
                pending.as_mut().poll(cx)
            })
            .await;
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut e) => {
                    if shared.timed_out() {
                        return Err(ProtocolError::timeout());
                    }
                    self.drop_link();
                    match e.take_message() {
                        Some(r) if attempt == 0 => {
                            req = r;
                            continue;
                        }
                        _ => return Err(map_hyper_error(e.into_error())),
                    }
                }
            }
        }
        Err(ProtocolError::receive(
            "connection closed twice before the request was sent",
        ))
    }
}

impl Drop for HttpStreamConn {
    fn drop(&mut self) {
        self.watchdog.abort();
        self.drop_link();
        // A call whose body is still out loses its connection now.
        self.shared.finish(
            Outcome::failed(ProtocolError::receive("connection dropped")),
            false,
        );
    }
}

fn map_hyper_error(e: hyper::Error) -> ProtocolError {
    if e.is_parse_too_large() {
        return ProtocolError::new(errors::HEADER_TOO_LARGE, ErrorKind::BadResponse, false)
            .with_source(e);
    }
    if e.is_body_write_aborted() || is_user_body_error(&e) {
        return ProtocolError::new(errors::RECEIVE, ErrorKind::BadRequest, false)
            .with_source(format!("request body failed: {e}"));
    }
    ProtocolError::receive(e)
}

fn is_user_body_error(e: &hyper::Error) -> bool {
    // hyper reports an error of the request body as "user body" error.
    e.to_string().contains("user body")
}

type Connection = http1::Connection<TokioIo<UnixStream>, BoxBody>;

/// Open one HTTP/1.1 connection to the function's socket.
async fn dial(
    path: &Path,
    limits: &Limits,
) -> Result<(http1::SendRequest<BoxBody>, Pin<Box<Connection>>), ProtocolError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(ProtocolError::receive)?;
    let buf = limits
        .max_response_header_bytes
        .saturating_add(1024)
        .clamp(8192, MAX_HEAD_BUFFER);
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(buf)
        .handshake::<_, BoxBody>(TokioIo::new(stream))
        .await
        .map_err(ProtocolError::receive)?;
    Ok((sender, Box::pin(conn)))
}

/// State of the instance's connection and current call, shared by the
/// caller, the response body and the watchdog.
struct Shared {
    state: Mutex<State>,
    /// Wakes the watchdog when it must look at an earlier deadline.
    notify: Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                conn: None,
                deadline: None,
                done: None,
                timed_out: false,
                reusable: true,
                watch_until: None,
            }),
            notify: Notify::new(),
        }
    }
}

struct State {
    /// The driving half of the current HTTP connection.
    conn: Option<Pin<Box<Connection>>>,
    /// Deadline of the call in progress (head and body).
    deadline: Option<Instant>,
    /// Reports how the body phase ended.
    done: Option<oneshot::Sender<Outcome>>,
    timed_out: bool,
    /// The last call ended cleanly (body read to its end).
    reusable: bool,
    /// When the watchdog wakes next; `None` while it waits for a call.
    watch_until: Option<Instant>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call starts with this deadline: until its body ends cleanly the
    /// connection is not reusable. Returns whether the connection kept from
    /// the last call may be used.
    fn begin(&self, deadline: Instant) -> bool {
        let (wake, reuse) = {
            let mut s = self.lock();
            let reuse = s.reusable && s.conn.is_some();
            s.reusable = false;
            s.timed_out = false;
            s.done = None;
            s.deadline = Some(deadline);
            let wake = s.watch_until.is_none_or(|w| deadline < w);
            if wake {
                s.watch_until = Some(deadline);
            }
            (wake, reuse)
        };
        if wake {
            self.notify.notify_one();
        }
        reuse
    }

    /// The response head is back: the body phase reports through `done`.
    /// False if the call already timed out.
    fn arm(&self, done: oneshot::Sender<Outcome>) -> bool {
        let mut s = self.lock();
        if s.timed_out || s.deadline.is_none() {
            return false;
        }
        s.done = Some(done);
        true
    }

    /// Poll the connection once with the caller's context.
    fn drive(&self, cx: &mut Context<'_>) {
        let mut s = self.lock();
        let Some(conn) = s.conn.as_mut() else {
            return;
        };
        let Poll::Ready(r) = conn.as_mut().poll(cx) else {
            return;
        };
        let conn = s.conn.take();
        drop(s);
        drop(conn);
        if let Err(e) = r {
            tracing::debug!(error = %e, "function connection failed");
            self.finish(Outcome::failed(ProtocolError::receive(e)), false);
        }
    }

    /// End the body phase (first caller wins). Returns whether it was active.
    /// A connection that is not reusable is closed now.
    fn finish(&self, outcome: Outcome, reusable: bool) -> bool {
        let (done, conn) = {
            let mut s = self.lock();
            s.deadline = None;
            let done = s.done.take();
            if done.is_some() && reusable {
                s.reusable = true;
            }
            let conn = if reusable { None } else { s.conn.take() };
            (done, conn)
        };
        drop(conn);
        match done {
            Some(tx) => {
                let _ = tx.send(outcome);
                true
            }
            None => false,
        }
    }

    /// The deadline of the call in progress passed: close the connection
    /// (waking whoever waits on it) and report the timeout. Checked and done
    /// under one lock, so that a call which ended (or a next one which began)
    /// in the meantime is left alone.
    fn fire_if_due(&self, now: Instant) -> bool {
        let (done, conn) = {
            let mut s = self.lock();
            if s.deadline.is_none_or(|d| d > now) {
                return false;
            }
            s.deadline = None;
            s.timed_out = true;
            (s.done.take(), s.conn.take())
        };
        drop(conn);
        if let Some(tx) = done {
            let _ = tx.send(Outcome::failed(ProtocolError::timeout()));
        }
        true
    }

    fn timed_out(&self) -> bool {
        self.lock().timed_out
    }
}

/// Enforces the current call's deadline. Sleeps until the deadline it last
/// saw; a call that starts meanwhile with a later deadline (the usual case:
/// same timeout, later start) does not wake it, it just sleeps again until
/// that one. Only a call starting while it waits idle, or one with an earlier
/// deadline, notifies it.
async fn watchdog(shared: Arc<Shared>) {
    loop {
        let notified = shared.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if shared.fire_if_due(Instant::now()) {
            continue;
        }
        let target = {
            let mut s = shared.lock();
            s.watch_until = s.deadline;
            s.deadline
        };
        match target {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(d) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// The function's response body on its way to the client: drives the
/// connection, counts bytes against the limit and reports the end of the
/// exchange.
struct ResponseBody {
    inner: Incoming,
    shared: Arc<Shared>,
    seen: u64,
    limit: Option<u64>,
    finished: bool,
}

impl ResponseBody {
    fn fail(&mut self, err: ProtocolError) -> BoxError {
        self.finished = true;
        let msg = err.error.message.to_string();
        self.shared.finish(Outcome::failed(err), false);
        msg.into()
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r);
        }
        // Nothing buffered: let the connection read (it wakes us when there
        // is more), then look again.
        self.shared.drive(cx);
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        match std::task::ready!(this.poll_inner(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        return Poll::Ready(Some(Err(this.fail(ProtocolError::body_too_large()))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let err = if this.shared.timed_out() {
                    ProtocolError::timeout()
                } else {
                    ProtocolError::receive(e)
                };
                Poll::Ready(Some(Err(this.fail(err))))
            }
            None => {
                if this.shared.timed_out() {
                    return Poll::Ready(Some(Err(this.fail(ProtocolError::timeout()))));
                }
                this.finished = true;
                this.shared.finish(Outcome::ok(), true);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.inner.is_end_stream() && !self.shared.timed_out() {
            // Everything was read; the server stopped polling at the known end.
            self.shared.finish(Outcome::ok(), true);
        } else {
            // The client went away mid-body: the instance is fine, this
            // connection is not (unread data); it is closed and the next call
            // re-dials.
            self.shared.finish(Outcome::ok(), false);
        }
    }
}

/// A request body that remembers how it failed (see [`HttpStreamConn::call`]).
struct WatchedBody {
    inner: BoxBody,
    failed: Arc<std::sync::OnceLock<fnrs_model::Error>>,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let r = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Err(e)) = &r {
            let _ = self.failed.set(fnrs_model::Error::request_body(&**e));
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The watchdog's check and its timeout are one step: a call that began
    /// after the one it saw due is not cut, and a due call is.
    #[tokio::test]
    async fn a_deadline_fires_only_for_the_call_it_belongs_to() {
        let shared = Shared::default();
        let t0 = Instant::now();
        shared.begin(t0 + Duration::from_millis(10));
        let (tx, mut rx) = oneshot::channel();
        assert!(shared.arm(tx));
        // The call ends, the next one begins with a later deadline: at the
        // first call's deadline nothing fires.
        assert!(shared.finish(Outcome::ok(), true));
        assert!(rx.try_recv().unwrap().error.is_none());
        shared.begin(t0 + Duration::from_secs(30));
        assert!(!shared.fire_if_due(t0 + Duration::from_millis(10)));
        assert!(!shared.timed_out());
        // At its own deadline it does, and its body learns of it.
        let (tx, mut rx) = oneshot::channel();
        assert!(shared.arm(tx));
        assert!(shared.fire_if_due(t0 + Duration::from_secs(30)));
        assert!(shared.timed_out());
        let o = rx.try_recv().unwrap();
        assert_eq!(o.error.unwrap().error.status, 504);
        // A response head arriving after that is refused.
        let (tx, _rx) = oneshot::channel();
        assert!(!shared.arm(tx));
    }
}
