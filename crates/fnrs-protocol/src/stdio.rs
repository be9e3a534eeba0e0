//! Hot formats over stdin/stdout: `http`, `json`, `cloudevent` (contract §3).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::body::ChannelBody;
use crate::headers::{is_cloudevent_request, sniff_content_type, strip_hop_by_hop};
use crate::httpfmt::{self, Chunk, ChunkedDecoder, Framing};
use crate::json::{self, JsonScanner, Scan};
use crate::{
    BUFFERED_REQUEST_CAP, BoxBody, BoxError, CallHandle, CallRequest, ErrorKind, Format, Limits,
    MAX_HEAD_BUFFER, Outcome, ProtocolError, cloudevent, errors, full_body, gojson,
};

type Stdin = Pin<Box<dyn AsyncWrite + Send>>;
type Stdout = Pin<Box<dyn AsyncRead + Send>>;

/// The function's stdout with what was read but not yet used.
struct Reader {
    rd: Stdout,
    buf: BytesMut,
}

impl Reader {
    /// Between calls: whether the function wrote anything but whitespace
    /// (or closed stdout) since its last answer. One poll per read, never a
    /// wait; whitespace is dropped.
    fn stray(&mut self) -> bool {
        use std::future::Future;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Bounded: a function writing whitespace without end is not waited
        // for.
        for _ in 0..4 {
            if json::has_excess(&self.buf) {
                return true;
            }
            self.buf.clear();
            let fill = std::pin::pin!(self.fill());
            match fill.poll(&mut cx) {
                std::task::Poll::Pending => return false,
                std::task::Poll::Ready(Ok(0) | Err(_)) => return true,
                std::task::Poll::Ready(Ok(_)) => {}
            }
        }
        json::has_excess(&self.buf)
    }

    /// Read more into `buf`; `Ok(0)` at EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.rd.read_buf(&mut self.buf).await
    }
}

/// A connection to one hot `http`, `json` or `cloudevent` instance over its
/// stdin and stdout. Serves one call at a time.
///
/// A request with media type `application/cloudevents+json` is passed to
/// `json` and `cloudevent` functions as the client's own CloudEvent (for a
/// `json` function the call is framed as `cloudevent`, as Fn did).
pub struct StdioConn {
    format: Format,
    stdin: Stdin,
    /// stdout, put back after each clean exchange (the `http` body task
    /// returns it when the body ends).
    reader: Arc<Mutex<Option<Reader>>>,
    limits: Limits,
    /// Most bytes of a request body held whole (`cloudevent`).
    request_cap: u64,
}

impl std::fmt::Debug for StdioConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioConn")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn invalid(prefix: &str, err: impl std::fmt::Display, instance_ok: bool) -> ProtocolError {
    ProtocolError::new(
        fnrs_model::Error::with_message(502, format!("{prefix}{err}")),
        ErrorKind::BadResponse,
        instance_ok,
    )
}

const INVALID_HTTP: &str = "invalid http response from function err: ";
const INVALID_JSON: &str = "invalid json response from function err: ";

fn done_now(outcome: Outcome) -> oneshot::Receiver<Outcome> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(outcome);
    rx
}

/// The client's request body failed: 413 or 400, the instance untouched.
fn body_failed(e: &BoxError) -> ProtocolError {
    ProtocolError::new(
        fnrs_model::Error::request_body(&**e),
        ErrorKind::BadRequest,
        true,
    )
}

fn bad_request(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(
        fnrs_model::Error::with_message(400, msg),
        ErrorKind::BadRequest,
        true,
    )
}

impl StdioConn {
    /// Wrap an instance's stdin and stdout. `format` must be `Http`, `Json` or
    /// `CloudEvent` (calls on any other fail with 500).
    pub fn new(format: Format, stdin: Stdin, stdout: Stdout, limits: Limits) -> Self {
        Self {
            format,
            stdin,
            reader: Arc::new(Mutex::new(Some(Reader {
                rd: stdout,
                buf: BytesMut::with_capacity(16 * 1024),
            }))),
            limits,
            request_cap: BUFFERED_REQUEST_CAP,
        }
    }

    /// Sets the most bytes of a request body that a `cloudevent` call holds
    /// to parse it (default [`BUFFERED_REQUEST_CAP`]); beyond it the call is
    /// 413 and the function gets nothing.
    pub fn with_buffered_request_cap(mut self, cap: u64) -> Self {
        self.request_cap = cap;
        self
    }

    /// Whether the instance wrote to stdout (anything but whitespace) or
    /// closed it since its last answer ended, or that exchange did not end
    /// cleanly: it is out of step, and its next answer could be an earlier
    /// one. Reads what is there without waiting. Check before reusing an
    /// idle instance; [`StdioConn::call`] checks it too.
    pub fn has_stray_output(&mut self) -> bool {
        match &mut *self.reader.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(r) => r.stray(),
            None => true,
        }
    }

    /// The format this connection speaks.
    pub fn format(&self) -> Format {
        self.format
    }

    /// One call: write the request, read the answer (bounded by
    /// `req.timeout`). `json` and `cloudevent` answers are whole when this
    /// returns (`done` already resolved); an `http` body streams.
    ///
    /// If the returned future is dropped before it completes, the instance is
    /// out of step with its pipes: every later call fails at once
    /// (`instance_ok: false`), so the agent should end it.
    pub async fn call(&mut self, req: CallRequest) -> Result<CallHandle, ProtocolError> {
        let deadline = Instant::now() + req.timeout;
        let Some(mut reader) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(ProtocolError::receive(
                "the previous exchange did not end cleanly",
            ));
        };
        // Output from before this request (a second answer to the last
        // call) must not become this call's answer.
        if reader.stray() {
            return Err(ProtocolError::receive(
                "the function wrote to stdout between calls",
            ));
        }
        let own_event = is_cloudevent_request(&req.headers);
        let res = match self.format {
            Format::Http => return self.call_http(req, reader, deadline).await,
            Format::Json if !own_event => {
                tokio::time::timeout_at(deadline, self.call_json(req, &mut reader))
                    .await
                    .unwrap_or_else(|_| Err(ProtocolError::timeout()))
            }
            Format::Json | Format::CloudEvent => {
                tokio::time::timeout_at(deadline, self.call_cloudevent(req, &mut reader, own_event))
                    .await
                    .unwrap_or_else(|_| Err(ProtocolError::timeout()))
            }
            Format::HttpStream | Format::Default => {
                Err(
                    ProtocolError::new(fnrs_model::Error::INTERNAL, ErrorKind::Transport, true)
                        .with_source(format!("{} is not a stdin/stdout hot format", self.format)),
                )
            }
        };
        match res {
            Ok((response, instance_ok)) => {
                if instance_ok {
                    self.put_back(reader);
                }
                Ok(CallHandle {
                    response,
                    done: done_now(Outcome {
                        instance_ok,
                        error: None,
                    }),
                })
            }
            Err(e) => {
                if e.instance_ok {
                    self.put_back(reader);
                }
                Err(e)
            }
        }
    }

    fn put_back(&self, reader: Reader) {
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(reader);
    }

    async fn write_stdin(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.stdin
            .write_all(bytes)
            .await
            .map_err(ProtocolError::receive)?;
        self.stdin.flush().await.map_err(ProtocolError::receive)
    }

    /// The most bytes a JSON reply may take.
    fn object_cap(&self) -> u64 {
        self.limits
            .buffered_cap()
            .saturating_mul(2)
            .saturating_add(self.limits.max_response_header_bytes as u64)
    }

    // An associated fn, not a method: a `&self` held across the awaits would
    // make the call future !Send (stdin is not Sync).
    async fn read_object(cap: u64, reader: &mut Reader) -> Result<(Bytes, bool), ProtocolError> {
        let mut scanner = JsonScanner::default();
        loop {
            match scanner.scan(&reader.buf) {
                Scan::Complete { start, end } => {
                    let mut obj = reader.buf.split_to(end);
                    obj.advance(start);
                    let excess = json::has_excess(&reader.buf);
                    reader.buf.clear();
                    return Ok((obj.freeze(), excess));
                }
                Scan::NotAnObject => {
                    return Err(invalid(INVALID_JSON, "reply is not a JSON object", false));
                }
                Scan::More => {}
            }
            if reader.buf.len() as u64 > cap {
                return Err(ProtocolError::body_too_large());
            }
            match reader.fill().await {
                Ok(0) => return Err(invalid(INVALID_JSON, "unexpected EOF", false)),
                Ok(_) => {}
                Err(e) => return Err(ProtocolError::receive(e)),
            }
        }
    }

    /// The whole request body, refused with 413 beyond `cap` bytes (before
    /// anything reached the function, so the instance stays usable).
    async fn collect_body(mut body: BoxBody, cap: u64) -> Result<Bytes, ProtocolError> {
        let too_large =
            || ProtocolError::new(errors::REQUEST_TOO_LARGE, ErrorKind::BadRequest, true);
        if body.size_hint().lower() > cap {
            return Err(too_large());
        }
        let mut all = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| body_failed(&e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if (all.len() + data.len()) as u64 > cap {
                return Err(too_large());
            }
            all.extend_from_slice(&data);
        }
        Ok(all.freeze())
    }

    /// Writes a `json` request line, the body escaped piece by piece as it
    /// arrives: only a piece of it is held at a time.
    async fn send_json_request(&mut self, req: CallRequest) -> Result<(), ProtocolError> {
        /// Escaped and written at a time (a client's piece may be larger).
        const SLICE: usize = 64 * 1024;
        let CallRequest {
            call_id,
            deadline,
            method,
            url,
            mut headers,
            mut body,
            ..
        } = req;
        strip_hop_by_hop(&mut headers);
        let (head, tail) =
            json::request_envelope(&call_id, &deadline.to_string(), &method, &url, &headers);
        // The head waits for the first piece: a body that fails at once
        // leaves the function untouched and the instance usable.
        let mut out = head;
        let mut sent_any = false;
        let mut esc = gojson::StrEscaper::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let mut e = body_failed(&e);
                // Part of a request reached the function: out of step.
                e.instance_ok = !sent_any;
                e
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for slice in data.chunks(SLICE) {
                esc.push(&mut out, slice);
                if !out.is_empty() {
                    sent_any = true;
                    self.stdin
                        .write_all(&out)
                        .await
                        .map_err(ProtocolError::receive)?;
                    out.clear();
                }
            }
        }
        esc.finish(&mut out);
        out.extend_from_slice(&tail);
        self.write_stdin(&out).await
    }

    async fn call_json(
        &mut self,
        req: CallRequest,
        reader: &mut Reader,
    ) -> Result<(Response<BoxBody>, bool), ProtocolError> {
        self.send_json_request(req).await?;
        let (obj, excess) = Self::read_object(self.object_cap(), reader).await?;
        // Fn replaced the instance after any reply it could not decode.
        let reply = json::parse_json_reply(&obj).map_err(|e| invalid(INVALID_JSON, e, false))?;
        if let Some(limit) = self.limits.max_response_body_bytes
            && reply.body.len() as u64 > limit
        {
            let mut e = ProtocolError::body_too_large();
            e.instance_ok = !excess;
            return Err(e);
        }
        let mut resp_headers = HeaderMap::new();
        let mut status = StatusCode::OK;
        if let Some(p) = &reply.protocol {
            for (k, vs) in &p.headers {
                for v in vs {
                    add_header(&mut resp_headers, k, v);
                }
            }
            if p.status_code != 0 {
                status = u16::try_from(p.status_code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| {
                        invalid(
                            INVALID_JSON,
                            format!("invalid status_code {}", p.status_code),
                            !excess,
                        )
                    })?;
            }
        }
        if !reply.content_type.is_empty()
            && let Ok(v) = HeaderValue::from_str(&reply.content_type)
        {
            resp_headers.insert(header::CONTENT_TYPE, v);
        }
        let body = reply.body.into_bytes();
        Ok((finish_response(status, resp_headers, body), !excess))
    }

    async fn call_cloudevent(
        &mut self,
        req: CallRequest,
        reader: &mut Reader,
        own_event: bool,
    ) -> Result<(Response<BoxBody>, bool), ProtocolError> {
        let body = Self::collect_body(req.body, self.request_cap).await?;
        let mut headers = req.headers;
        strip_hop_by_hop(&mut headers);
        let mut line = Vec::with_capacity(body.len() + 512);
        cloudevent::write_request(
            &mut line,
            &req.call_id,
            &req.deadline.to_string(),
            &body,
            own_event,
            &req.method,
            &req.url,
            &headers,
        )
        .map_err(|e| bad_request(e.to_string()))?;
        self.write_stdin(&line).await?;
        let (obj, excess) = Self::read_object(self.object_cap(), reader).await?;
        let reply = cloudevent::parse_cloudevent_reply(&obj, own_event).map_err(|e| {
            let syntax = matches!(e, cloudevent::ReplyError::Json(_));
            invalid(INVALID_JSON, e, !excess && !syntax)
        })?;
        if let Some(limit) = self.limits.max_response_body_bytes
            && reply.body.len() as u64 > limit
        {
            let mut e = ProtocolError::body_too_large();
            e.instance_ok = !excess;
            return Err(e);
        }
        let mut resp_headers = HeaderMap::new();
        for (k, v) in &reply.headers {
            add_header(&mut resp_headers, k, v);
        }
        if !reply.content_type.is_empty()
            && let Ok(v) = HeaderValue::from_str(&reply.content_type)
        {
            resp_headers.insert(header::CONTENT_TYPE, v);
        }
        let status = match reply.status {
            Some(c) => StatusCode::from_u16(c)
                .map_err(|_| invalid(INVALID_JSON, format!("invalid status_code {c}"), !excess))?,
            None => StatusCode::OK,
        };
        Ok((finish_response(status, resp_headers, reply.body), !excess))
    }

    async fn call_http(
        &mut self,
        req: CallRequest,
        mut reader: Reader,
        deadline: Instant,
    ) -> Result<CallHandle, ProtocolError> {
        let res = tokio::time::timeout_at(deadline, self.http_exchange(req, &mut reader))
            .await
            .unwrap_or_else(|_| Err(ProtocolError::timeout()));
        let HttpHead {
            status,
            mut headers,
            exact,
            src,
            first,
        } = match res {
            Ok(x) => x,
            Err(e) => {
                if e.instance_ok {
                    self.put_back(reader);
                }
                return Err(e);
            }
        };
        if !headers.contains_key(header::CONTENT_TYPE) {
            let ct = sniff_content_type(first.as_deref().unwrap_or(&[]));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if exact == Some(0) {
            // More after the answer: the caller keeps this one, the
            // instance ends.
            let instance_ok = !json::has_excess(&reader.buf);
            if instance_ok {
                self.put_back(reader);
            }
            let mut resp = Response::new(full_body(Bytes::new()));
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            return Ok(CallHandle {
                response: resp,
                done: done_now(Outcome {
                    instance_ok,
                    error: None,
                }),
            });
        }
        let (tx, rx) = mpsc::channel(1);
        let (err_tx, err_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let slot = self.reader.clone();
        let limit = self.limits.max_response_body_bytes;
        tokio::spawn(pump_http_body(
            reader, src, first, tx, err_tx, done_tx, slot, limit, deadline,
        ));
        let body = ChannelBody {
            rx,
            err_rx,
            exact,
            ended: false,
        };
        let mut resp = Response::new(body.boxed_unsync());
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(CallHandle {
            response: resp,
            done: done_rx,
        })
    }

    /// Write the request, read the response head (and, when the function gave
    /// no Content-Type, the first piece of body for sniffing).
    async fn http_exchange(
        &mut self,
        req: CallRequest,
        reader: &mut Reader,
    ) -> Result<HttpHead, ProtocolError> {
        let CallRequest {
            call_id,
            deadline,
            method,
            url,
            mut headers,
            mut body,
            ..
        } = req;
        strip_hop_by_hop(&mut headers);
        let exact = body.size_hint().exact();
        let (head, chunked) = httpfmt::write_request_head(
            &method,
            &url,
            &headers,
            exact,
            &call_id,
            &deadline.to_string(),
        );
        self.stdin
            .write_all(&head)
            .await
            .map_err(ProtocolError::receive)?;
        let mut sent: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                // The function got part of a request: it cannot be trusted
                // to be in step any more.
                let mut e = body_failed(&e);
                e.instance_ok = false;
                e
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                self.stdin
                    .write_all(size.as_bytes())
                    .await
                    .map_err(ProtocolError::receive)?;
            }
            self.stdin
                .write_all(&data)
                .await
                .map_err(ProtocolError::receive)?;
            if chunked {
                self.stdin
                    .write_all(b"\r\n")
                    .await
                    .map_err(ProtocolError::receive)?;
            }
        }
        if chunked {
            self.stdin
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(ProtocolError::receive)?;
        } else if exact.is_some_and(|n| n != sent) {
            let mut e = bad_request("request body length does not match its Content-Length");
            e.instance_ok = false;
            return Err(e);
        }
        self.stdin.flush().await.map_err(ProtocolError::receive)?;

        let max_head = self.limits.max_response_header_bytes.min(MAX_HEAD_BUFFER);
        // Parse when the head can be complete (a blank line arrived) and once
        // at the start (a bad status line fails at once), not on every read:
        // a head trickling in must not cost quadratic time.
        let mut scanned = 0;
        let mut first = true;
        let head = loop {
            let end_seen = has_blank_line(&reader.buf, scanned);
            scanned = reader.buf.len();
            if first || end_seen || reader.buf.len() > max_head {
                first = reader.buf.is_empty();
                match httpfmt::parse_response_head(&reader.buf, max_head) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(httpfmt::ParseError::HeadTooLarge) => {
                        return Err(ProtocolError::new(
                            errors::HEADER_TOO_LARGE,
                            ErrorKind::BadResponse,
                            false,
                        ));
                    }
                    Err(e) => return Err(invalid(INVALID_HTTP, e, false)),
                }
            }
            match reader.fill().await {
                Ok(0) => {
                    // Whatever arrived is all there is: say what is wrong.
                    if let Err(e) = httpfmt::parse_response_head(&reader.buf, max_head) {
                        return Err(invalid(INVALID_HTTP, e, false));
                    }
                    return Err(invalid(INVALID_HTTP, "unexpected EOF", false));
                }
                Ok(_) => {}
                Err(e) => return Err(ProtocolError::receive(e)),
            }
        };
        reader.buf.advance(head.head_len);
        if let (Some(limit), Framing::Length(n)) =
            (self.limits.max_response_body_bytes, head.framing)
            && n > limit
        {
            return Err(ProtocolError::body_too_large());
        }
        let mut headers = head.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        let exact = match head.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        let mut src = BodySource::new(head.framing);
        let mut first = None;
        if !headers.contains_key(header::CONTENT_TYPE) && head.framing != Framing::Length(0) {
            // Peek at the first piece of body to sniff a Content-Type, as Go's
            // ResponseWriter did on its first write.
            first = Some(src.next(reader).await?.unwrap_or_default());
        }
        Ok(HttpHead {
            status: head.status,
            headers,
            exact,
            src,
            first,
        })
    }
}

struct HttpHead {
    status: StatusCode,
    headers: HeaderMap,
    exact: Option<u64>,
    src: BodySource,
    first: Option<Bytes>,
}

/// Whether `buf` holds an empty line (`\n\n` or `\n\r\n`) ending at or
/// after `from`.
fn has_blank_line(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    let tail = &buf[start..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

fn add_header(headers: &mut HeaderMap, k: &str, v: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(k.as_bytes()),
        HeaderValue::from_str(v),
    ) {
        headers.append(n, v);
    }
}

/// A buffered answer: the function's headers minus hop-by-hop and framing,
/// a sniffed Content-Type when it gave none.
fn finish_response(status: StatusCode, mut headers: HeaderMap, body: Vec<u8>) -> Response<BoxBody> {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(sniff_content_type(&body)),
        );
    }
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Reads body pieces of one `http` answer from the function's stdout.
struct BodySource {
    kind: SourceKind,
}

enum SourceKind {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

impl BodySource {
    fn new(framing: Framing) -> Self {
        Self {
            kind: match framing {
                Framing::Length(n) => SourceKind::Length(n),
                Framing::Chunked => SourceKind::Chunked(ChunkedDecoder::default()),
            },
        }
    }

    /// The next piece of body; `None` at its end.
    async fn next(&mut self, reader: &mut Reader) -> Result<Option<Bytes>, ProtocolError> {
        loop {
            match &mut self.kind {
                SourceKind::Done => return Ok(None),
                SourceKind::Length(0) => {
                    self.kind = SourceKind::Done;
                    return Ok(None);
                }
                SourceKind::Length(left) => {
                    if !reader.buf.is_empty() {
                        let take = (reader.buf.len() as u64).min(*left) as usize;
                        *left -= take as u64;
                        return Ok(Some(reader.buf.split_to(take).freeze()));
                    }
                }
                SourceKind::Chunked(d) => match d.decode(&mut reader.buf) {
                    Ok(Chunk::Data(b)) => return Ok(Some(b)),
                    Ok(Chunk::End) => {
                        self.kind = SourceKind::Done;
                        return Ok(None);
                    }
                    Ok(Chunk::NeedMore) => {}
                    Err(e) => return Err(invalid(INVALID_HTTP, e, false)),
                },
            }
            match reader.fill().await {
                Ok(0) => return Err(ProtocolError::receive("function closed stdout mid-body")),
                Ok(_) => {}
                Err(e) => return Err(ProtocolError::receive(e)),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump_http_body(
    mut reader: Reader,
    mut src: BodySource,
    first: Option<Bytes>,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
    err_tx: oneshot::Sender<BoxError>,
    done: oneshot::Sender<Outcome>,
    slot: Arc<Mutex<Option<Reader>>>,
    limit: Option<u64>,
    deadline: Instant,
) {
    let mut seen = 0u64;
    let mut client_gone = false;
    let mut pending = first.filter(|b| !b.is_empty());
    let work = async {
        loop {
            let piece = match pending.take() {
                Some(b) => Some(b),
                None => src.next(&mut reader).await?,
            };
            let Some(piece) = piece else {
                return Ok(());
            };
            seen += piece.len() as u64;
            if limit.is_some_and(|l| seen > l) {
                return Err(ProtocolError::body_too_large());
            }
            // A client that went away does not stop the exchange: the rest
            // is read and dropped so the instance stays in step.
            if !client_gone && tx.send(Ok(piece)).await.is_err() {
                client_gone = true;
            }
        }
    };
    let result = tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(ProtocolError::timeout()));
    match result {
        Ok(()) => {
            // More after the answer (a second response): the caller keeps
            // this one, the instance ends.
            let instance_ok = !json::has_excess(&reader.buf);
            if instance_ok {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(reader);
            }
            drop(tx);
            let _ = done.send(Outcome {
                instance_ok,
                error: None,
            });
        }
        Err(e) => {
            let _ = err_tx.send(e.error.message.to_string().into());
            drop(tx);
            let _ = done.send(Outcome::failed(e));
        }
    }
}
