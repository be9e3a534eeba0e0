//! The function formats of Fn's protocol factory: `http-stream` over a unix
//! socket; `default` (cold), `http`, `json` and `cloudevent` over stdin/stdout.
//!
//! This crate owns everything about talking to **one** function instance for
//! one call at a time. The agent owns starting instances, the iofs directory and
//! the wait for `lsnr.sock`, logs, pooling and the timeout *policy*; it hands
//! this crate a [`CallRequest`] (with the fn's timeout) and gets back either a
//! [`CallHandle`] (a streaming response plus a `done` signal that says whether
//! the instance may serve another call) or a [`ProtocolError`] with Fn's status
//! and message.
//!
//! - [`HttpStreamConn`]: one per hot http-stream instance (HTTP/1.1 over the
//!   instance's `lsnr.sock`, contract §2).
//! - [`StdioConn`]: one per hot `http`, `json` or `cloudevent` instance (contract
//!   §3).
//! - [`cold_env`] / [`cold_call`]: the `default` format, one process per call.
//!
//! Every exchange is bounded by the call's timeout, also when nobody polls the
//! response body, and `done` always resolves (also when the client drops the
//! body), so the agent never leaks a busy instance.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

mod body;
mod cloudevent;
mod cold;
pub mod gojson;
mod headers;
pub mod httpfmt;
mod json;
mod stdio;
mod stream;

pub use cloudevent::{CloudEventReply, parse_cloudevent_reply};
pub use cold::{cold_call, cold_env};
pub use headers::{
    go_canonical_header_key, is_cloudevent_request, sniff_content_type, strip_hop_by_hop,
    unwrap_gateway_response, wrap_gateway_request,
};
pub use json::{JsonReply, JsonScanner, ReplyProtocol, Scan, parse_json_reply};
pub use stdio::StdioConn;
pub use stream::HttpStreamConn;

/// A boxed error, as carried by bodies and error sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests to and responses from functions.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty [`BoxBody`].
pub fn empty_body() -> BoxBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A [`BoxBody`] holding the given bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> BoxBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The function formats of Fn's 2018 protocol factory (contract §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The current contract: HTTP/1.1 over a unix socket (hot).
    HttpStream,
    /// Cold: one process per call, body on stdin, response on stdout.
    Default,
    /// Hot: one HTTP/1.1 request and response per call over stdin/stdout.
    Http,
    /// Hot: Fn's JSON envelope per call over stdin/stdout.
    Json,
    /// Hot: a CloudEvents 0.1 event per call over stdin/stdout.
    CloudEvent,
}

/// Fn's error for an unknown format name.
pub const INVALID_PROTOCOL: fnrs_model::Error = fnrs_model::Error::new(400, "Invalid Protocol");

impl Format {
    /// Parse a fn's `format` field. Absent or empty means `http-stream`; an
    /// unknown name is 400 "Invalid Protocol".
    pub fn parse(s: Option<&str>) -> Result<Format, fnrs_model::Error> {
        match s {
            None | Some("") | Some("http-stream") => Ok(Format::HttpStream),
            Some("default") => Ok(Format::Default),
            Some("http") => Ok(Format::Http),
            Some("json") => Ok(Format::Json),
            Some("cloudevent") => Ok(Format::CloudEvent),
            Some(_) => Err(INVALID_PROTOCOL),
        }
    }

    /// Whether an instance serves many calls (Fn's `IsStreamable`). Only
    /// `default` is cold.
    pub fn is_hot(&self) -> bool {
        !matches!(self, Format::Default)
    }

    /// The name as written in a fn's `format` and in `FN_FORMAT`.
    pub fn name(&self) -> &'static str {
        match self {
            Format::HttpStream => "http-stream",
            Format::Default => "default",
            Format::Http => "http",
            Format::Json => "json",
            Format::CloudEvent => "cloudevent",
        }
    }

    /// Whether the instance talks over stdin/stdout (every format but
    /// http-stream, whose stdout is a log stream like stderr).
    pub fn uses_stdin(&self) -> bool {
        !matches!(self, Format::HttpStream)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One call as handed to a function instance.
pub struct CallRequest {
    /// The 26-character call id (`Fn-Call-Id`, `FN_CALL_ID`, `call_id`).
    pub call_id: String,
    /// Now + the fn's timeout (`Fn-Deadline`, `FN_DEADLINE`, json `deadline`).
    pub deadline: fnrs_model::DateTime,
    /// The fn's timeout counted from now; enforced over the whole exchange
    /// (request, response head and response body).
    pub timeout: Duration,
    /// The client's method.
    pub method: http::Method,
    /// The absolute original URL (`http://host/invoke/…?q=1`).
    pub url: String,
    /// The headers as the client sent them (hop-by-hop ones are stripped
    /// here).
    pub headers: http::HeaderMap,
    /// The call came through an HTTP trigger: wrap the request in Fn's HTTP
    /// gateway headers and unwrap the answer (http-stream only; contract §2.6).
    pub gateway: bool,
    /// The request body, streamed to the function.
    pub body: BoxBody,
}

impl fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRequest")
            .field("call_id", &self.call_id)
            .field("deadline", &self.deadline)
            .field("timeout", &self.timeout)
            .field("method", &self.method)
            .field("url", &self.url)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// Limits on what a function may answer (`FN_MAX_HDR_RESPONSE_SIZE`,
/// `FN_MAX_RESPONSE_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of response head (status line and headers). Fn's default is
    /// 10 MiB; for http-stream the effective ceiling is [`MAX_HEAD_BUFFER`].
    pub max_response_header_bytes: usize,
    /// Bytes of response body; `None` = unlimited (then formats that must
    /// buffer a whole answer hold at most [`BUFFERED_REPLY_CAP`]).
    pub max_response_body_bytes: Option<u64>,
}

/// Fn's default response-header limit (Go's HTTP client default, 10 MiB).
pub const DEFAULT_MAX_RESPONSE_HEADER_BYTES: usize = 10 << 20;

/// The most a response head may occupy in the http-stream client's read
/// buffer; a bigger head is "function response header too large" whatever the
/// configured limit.
pub const MAX_HEAD_BUFFER: usize = 1 << 20;

/// What formats that must hold a whole answer before replying (`default`,
/// `json`, `cloudevent`) buffer at most when no body limit is configured.
pub const BUFFERED_REPLY_CAP: u64 = 64 << 20;

/// What the `cloudevent` format (and a client's own CloudEvent to a `json`
/// fn) holds of a request body at most by default: it is parsed whole to
/// become the event's `data`. Beyond it the call is 413
/// [`errors::REQUEST_TOO_LARGE`]. The `json` format streams its body and
/// holds only a piece at a time.
pub const BUFFERED_REQUEST_CAP: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_response_header_bytes: DEFAULT_MAX_RESPONSE_HEADER_BYTES,
            max_response_body_bytes: None,
        }
    }
}

impl Limits {
    /// From Fn's settings, where 0 means "default" (headers) and "unlimited"
    /// (body).
    pub fn from_fn_settings(max_hdr_response_size: u64, max_response_size: u64) -> Self {
        Self {
            max_response_header_bytes: if max_hdr_response_size == 0 {
                DEFAULT_MAX_RESPONSE_HEADER_BYTES
            } else {
                usize::try_from(max_hdr_response_size).unwrap_or(usize::MAX)
            },
            max_response_body_bytes: (max_response_size != 0).then_some(max_response_size),
        }
    }

    pub(crate) fn buffered_cap(&self) -> u64 {
        self.max_response_body_bytes.unwrap_or(BUFFERED_REPLY_CAP)
    }
}

/// The answer of a call that started well: status and headers are final, the
/// body streams. `done` resolves when the exchange is over (body fully sent,
/// failed, timed out, or dropped by the client).
pub struct CallHandle {
    /// What to send to the client (the agent adds `Fn-Call-Id`).
    pub response: http::Response<BoxBody>,
    /// Whether the instance may serve another call, and the error that ended
    /// the exchange, if any. Always resolves; a closed channel means "not ok".
    pub done: tokio::sync::oneshot::Receiver<Outcome>,
}

impl fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallHandle")
            .field("status", &self.response.status())
            .finish_non_exhaustive()
    }
}

/// How an exchange ended.
#[derive(Debug)]
pub struct Outcome {
    /// The instance may take another call.
    pub instance_ok: bool,
    /// What went wrong after the response head was sent (body too large,
    /// timeout, function died mid-body…), for the call record and logs.
    pub error: Option<ProtocolError>,
}

impl Outcome {
    pub(crate) fn ok() -> Self {
        Self {
            instance_ok: true,
            error: None,
        }
    }

    pub(crate) fn failed(err: ProtocolError) -> Self {
        Self {
            instance_ok: err.instance_ok,
            error: Some(err),
        }
    }
}

/// What kind of failure, for call status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The function reported a failure (http-stream 502, cold non-zero exit).
    FunctionFailed,
    /// The call's timeout passed, or the function reported one (504).
    Timeout,
    /// The function's answer broke the contract (bad status, garbage, bad
    /// JSON, too large…).
    BadResponse,
    /// The connection or pipe to the function failed.
    Transport,
    /// The instance's socket is not usable (bad symlink, not a socket).
    Init,
    /// The client's request could not be turned into the format's input
    /// (e.g. a body that is not JSON for a cloudevent fn), or the client's
    /// body failed while it was being sent.
    BadRequest,
}

/// A failed exchange, with Fn's status and message for the client.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ProtocolError {
    /// Status and message for the client (`{"message": …}`).
    pub error: fnrs_model::Error,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The instance may take another call.
    pub instance_ok: bool,
    /// The underlying cause, for logs.
    #[source]
    pub source: Option<BoxError>,
}

impl ProtocolError {
    /// A new error without a source.
    pub fn new(error: fnrs_model::Error, kind: ErrorKind, instance_ok: bool) -> Self {
        Self {
            error,
            kind,
            instance_ok,
            source: None,
        }
    }

    /// Attach a cause for logs.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn timeout() -> Self {
        Self::new(errors::TIMED_OUT, ErrorKind::Timeout, false)
    }

    pub(crate) fn receive(source: impl Into<BoxError>) -> Self {
        Self::new(errors::RECEIVE, ErrorKind::Transport, false).with_source(source)
    }

    pub(crate) fn body_too_large() -> Self {
        Self::new(errors::BODY_TOO_LARGE, ErrorKind::BadResponse, false)
    }
}

/// Fn's messages for function failures.
pub mod errors {
    use fnrs_model::Error;

    /// The FDK answered 502.
    pub const FUNCTION_FAILED: Error = Error::new(502, "function failed");
    /// The call's timeout passed, or the FDK answered 504.
    pub const TIMED_OUT: Error = Error::new(504, "Timed out");
    /// The FDK answered a status other than 200, 502 or 504.
    pub const INVALID_RESPONSE: Error = Error::new(502, "invalid function response");
    /// The connection failed or the answer was not HTTP.
    pub const RECEIVE: Error = Error::new(502, "error receiving function response");
    /// More than `FN_MAX_RESPONSE_SIZE` bytes of body.
    pub const BODY_TOO_LARGE: Error = Error::new(502, "function response body too large");
    /// More than `FN_MAX_HDR_RESPONSE_SIZE` bytes of head.
    pub const HEADER_TOO_LARGE: Error = Error::new(502, "function response header too large");
    /// A request body that must be held whole is over its cap (Fn's 413).
    pub const REQUEST_TOO_LARGE: Error = Error::CONTENT_TOO_LARGE;
    /// The socket is not usable.
    pub const CONTAINER_INIT_FAIL: Error = Error::new(
        502,
        "Container failed to initialize, please ensure you are using the latest fdk and check the logs",
    );
    /// A cold process was killed by the OOM killer (exit 137).
    pub const OUT_OF_MEMORY: Error = Error::new(
        502,
        "container out of memory, you may want to raise fn.memory for this function (default: 128MB)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_factory() {
        assert_eq!(Format::parse(None).unwrap(), Format::HttpStream);
        assert_eq!(Format::parse(Some("")).unwrap(), Format::HttpStream);
        for f in [
            Format::HttpStream,
            Format::Default,
            Format::Http,
            Format::Json,
            Format::CloudEvent,
        ] {
            assert_eq!(Format::parse(Some(f.name())).unwrap(), f);
            assert_eq!(f.is_hot(), f != Format::Default);
            assert_eq!(f.uses_stdin(), f != Format::HttpStream);
        }
        let e = Format::parse(Some("xml")).unwrap_err();
        assert_eq!((e.status, &*e.message), (400, "Invalid Protocol"));
    }

    #[test]
    fn limits_from_fn_settings() {
        let l = Limits::from_fn_settings(0, 0);
        assert_eq!(l, Limits::default());
        assert_eq!(l.max_response_header_bytes, 10 << 20);
        let l = Limits::from_fn_settings(4096, 1000);
        assert_eq!(l.max_response_header_bytes, 4096);
        assert_eq!(l.max_response_body_bytes, Some(1000));
    }
}
