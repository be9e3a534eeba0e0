//! http-stream: HTTP/1.1 over the instance's `lsnr.sock` (spec §1.3).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
pub struct HttpStreamConn {
    /// The socket inode, held open.
    _socket: File,
    /// `/proc/self/fd/N` of `_socket`, what we dial.
    dial_path: PathBuf,
    limits: Limits,
    link: Option<Link>,
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
        let link = Link::dial(&dial_path, &limits).await.map_err(|e| {
            ProtocolError::new(errors::CONTAINER_INIT_FAIL, ErrorKind::Init, false)
                .with_source(e.source.unwrap_or_else(|| "connect failed".into()))
        })?;
        Ok(Self {
            _socket: socket,
            dial_path,
            limits,
            link: Some(link),
        })
    }

    /// The limits this connection enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Send one call and wait for the response head (bounded by
    /// `req.timeout`). On success the body streams and the timeout keeps
    /// running over it in the connection's task; `done` tells how it ended.
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

        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = Uri::from_static("/call");
        *request.headers_mut() = headers;

        let resp = match tokio::time::timeout_at(deadline, self.send(request)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                self.link = None;
                return Err(e);
            }
            Err(_) => {
                self.link = None;
                return Err(ProtocolError::timeout());
            }
        };
        let Some(link) = self.link.as_ref() else {
            return Err(ProtocolError::receive("connection lost"));
        };
        let shared = link.shared.clone();
        let conn_task_gone = link.task.is_finished();

        match resp.status().as_u16() {
            200 => {}
            502 => {
                self.link = None;
                return Err(ProtocolError::new(
                    errors::FUNCTION_FAILED,
                    ErrorKind::FunctionFailed,
                    true,
                ));
            }
            504 => {
                self.link = None;
                return Err(ProtocolError::new(
                    errors::TIMED_OUT,
                    ErrorKind::Timeout,
                    true,
                ));
            }
            other => {
                self.link = None;
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
            self.link = None;
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
            self.link = None;
            return Err(ProtocolError::new(
                errors::BODY_TOO_LARGE,
                ErrorKind::BadResponse,
                true,
            ));
        }

        let (mut parts, incoming) = resp.into_parts();
        if gateway {
            let (status, headers) = hdr::unwrap_gateway_response(&parts.headers).map_err(|n| {
                self.link = None;
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
        shared.arm(deadline, tx);
        if conn_task_gone {
            // The connection already ended (the whole body is buffered in
            // hyper): its task cannot enforce the deadline any more.
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                shared.fire_timeout();
            });
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

    /// Send on the kept connection, re-dialling once if it is found closed
    /// before the request was written.
    async fn send(
        &mut self,
        mut req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, ProtocolError> {
        for attempt in 0..2 {
            let usable = self.link.as_ref().is_some_and(Link::usable);
            if !usable {
                self.link = None;
                self.link = Some(Link::dial(&self.dial_path, &self.limits).await?);
            }
            let Some(link) = self.link.as_mut() else {
                continue;
            };
            if link.sender.ready().await.is_err() {
                self.link = None;
                continue;
            }
            link.shared.begin();
            match link.sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => {
                    self.link = None;
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

/// One HTTP/1.1 connection and the task that drives it.
struct Link {
    sender: http1::SendRequest<BoxBody>,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        // A call whose body is still out loses its connection now.
        self.shared.finish(
            Outcome::failed(ProtocolError::receive("connection dropped")),
            false,
        );
    }
}

impl Link {
    async fn dial(path: &Path, limits: &Limits) -> Result<Link, ProtocolError> {
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
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(drive(conn, shared.clone())).abort_handle();
        Ok(Link {
            sender,
            shared,
            task,
        })
    }

    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.shared.reusable.load(Ordering::Acquire)
    }
}

/// State of the call on one connection, shared by the caller, the response
/// body and the connection task.
struct Shared {
    slot: Mutex<Slot>,
    notify: Notify,
    /// The last call ended cleanly (body read to its end).
    reusable: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            slot: Mutex::new(Slot::default()),
            notify: Notify::new(),
            reusable: AtomicBool::new(true),
        }
    }
}

#[derive(Default)]
struct Slot {
    deadline: Option<Instant>,
    done: Option<oneshot::Sender<Outcome>>,
    timed_out: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request is about to go out: until its body ends cleanly the
    /// connection is not reusable.
    fn begin(&self) {
        self.reusable.store(false, Ordering::Release);
        self.lock().timed_out = false;
    }

    /// The response head is back: start the body phase with its deadline.
    fn arm(&self, deadline: Instant, done: oneshot::Sender<Outcome>) {
        {
            let mut s = self.lock();
            s.deadline = Some(deadline);
            s.done = Some(done);
            s.timed_out = false;
        }
        self.notify.notify_one();
    }

    /// End the body phase (first caller wins). Returns whether it was active.
    fn finish(&self, outcome: Outcome, reusable: bool) -> bool {
        let done = {
            let mut s = self.lock();
            s.deadline = None;
            s.done.take()
        };
        match done {
            Some(tx) => {
                if reusable {
                    self.reusable.store(true, Ordering::Release);
                }
                let _ = tx.send(outcome);
                self.notify.notify_one();
                true
            }
            None => false,
        }
    }

    fn fire_timeout(&self) {
        let done = {
            let mut s = self.lock();
            s.deadline = None;
            s.timed_out = true;
            s.done.take()
        };
        if let Some(tx) = done {
            let _ = tx.send(Outcome::failed(ProtocolError::timeout()));
        }
    }

    fn timed_out(&self) -> bool {
        self.lock().timed_out
    }
}

/// Drives one connection and enforces the deadline of the current call's
/// body phase, also when nobody polls the body. Ends (dropping the
/// connection) on timeout.
async fn drive(conn: http1::Connection<TokioIo<UnixStream>, BoxBody>, shared: Arc<Shared>) {
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;
    loop {
        let notified = shared.notify.notified();
        let (deadline, active) = {
            let s = shared.lock();
            (s.deadline, s.done.is_some())
        };
        if conn_done && !active {
            return;
        }
        let far = Instant::now() + std::time::Duration::from_secs(86400 * 365);
        tokio::select! {
            r = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "function connection failed");
                    shared.finish(Outcome::failed(ProtocolError::receive(e)), false);
                }
            }
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                shared.fire_timeout();
                return;
            }
        }
    }
}

/// The function's response body on its way to the client: counts bytes
/// against the limit and reports the end of the exchange.
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
        match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
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
            // connection is not (unread data); the next call re-dials.
            self.shared.finish(Outcome::ok(), false);
        }
    }
}
