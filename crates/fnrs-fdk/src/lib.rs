//! A small Rust FDK for Fn's `http-stream` contract (contract §2).
//!
//! ```no_run
//! use fnrs_fdk::{Context, Response};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), fnrs_fdk::FdkError> {
//!     fnrs_fdk::run(|ctx: Context, body: fnrs_fdk::Incoming| async move {
//!         let input = fnrs_fdk::read_body(body).await?;
//!         Ok(Response::text(format!("hello {} ({} bytes)", ctx.call_id(), input.len())))
//!     })
//!     .await
//! }
//! ```
//!
//! What it does for the function:
//! - checks `FN_FORMAT` (`http-stream` or empty) and `FN_LISTENER`
//!   (`unix:/abs/path/lsnr.sock`);
//! - binds a phony socket `phony<name>` in the same directory, makes it
//!   0666, listens, and only then creates the relative symlink
//!   `<name> → phony<name>` that tells the server it is ready;
//! - serves `POST /call` over HTTP/1.1 with keep-alive, one call at a time
//!   per connection, request and response bodies streamed;
//! - reads `Fn-Call-Id`, `Fn-Deadline` and, for HTTP-trigger calls
//!   (`Fn-Intent: httprequest`), the gateway headers; answers in gateway form
//!   (`Fn-Http-Status`, `Fn-Http-H-*`) when the call came that way;
//! - a handler error becomes a 502 (the server answers "function failed");
//! - on SIGTERM/SIGINT it removes its socket and symlink and returns.

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

pub use hyper::body::Incoming;

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The FDK's version, sent as `Fn-Fdk-Version`.
pub const FDK_VERSION: &str = concat!("fdk-rust/", env!("CARGO_PKG_VERSION"));

/// Why the FDK could not serve.
#[derive(Debug, thiserror::Error)]
pub enum FdkError {
    /// `FN_FORMAT` is set to something other than `http-stream`.
    #[error("incompatible function format {0:?}: only http-stream is supported")]
    Format(String),
    /// `FN_LISTENER` is missing or not `unix:/absolute/path`.
    #[error("FN_LISTENER is not set or not unix:/absolute/path: {0:?}")]
    Listener(String),
    /// Binding, chmod or symlinking failed.
    #[error("socket setup at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One call as the function sees it.
#[derive(Debug, Clone)]
pub struct Context {
    call_id: String,
    deadline: Option<String>,
    gateway: Option<Gateway>,
    headers: HeaderMap,
}

/// The original HTTP request of a trigger call.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The client's method (`Fn-Http-Method`).
    pub method: String,
    /// The absolute original URL (`Fn-Http-Request-Url`).
    pub request_url: String,
    /// The client's headers (`Fn-Http-H-*` de-prefixed, plus Content-Type).
    pub headers: HeaderMap,
}

const GATEWAY_PREFIX: &str = "fn-http-h-";

impl Context {
    /// Build the context from the request headers the server sent.
    pub fn from_headers(headers: HeaderMap) -> Self {
        let get = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let call_id = get("fn-call-id").unwrap_or_default();
        let deadline = get("fn-deadline");
        let gateway = headers
            .get("fn-intent")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"httprequest"))
            .then(|| {
                let mut h = HeaderMap::new();
                for (name, value) in &headers {
                    if let Some(rest) = name.as_str().strip_prefix(GATEWAY_PREFIX) {
                        if let Ok(n) = HeaderName::from_bytes(rest.as_bytes()) {
                            h.append(n, value.clone());
                        }
                    } else if name == header::CONTENT_TYPE {
                        h.append(name.clone(), value.clone());
                    }
                }
                Gateway {
                    method: get("fn-http-method").unwrap_or_default(),
                    request_url: get("fn-http-request-url").unwrap_or_default(),
                    headers: h,
                }
            });
        Self {
            call_id,
            deadline,
            gateway,
            headers,
        }
    }

    /// `Fn-Call-Id`.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// `Fn-Deadline` as sent (RFC 3339), if any.
    pub fn deadline(&self) -> Option<&str> {
        self.deadline.as_deref()
    }

    /// The original request of a trigger call, `None` for `/invoke`.
    pub fn gateway(&self) -> Option<&Gateway> {
        self.gateway.as_ref()
    }

    /// The headers as the server sent them.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The client's headers: de-prefixed for a trigger call, as sent for
    /// `/invoke`.
    pub fn http_headers(&self) -> &HeaderMap {
        self.gateway
            .as_ref()
            .map(|g| &g.headers)
            .unwrap_or(&self.headers)
    }

    /// `FN_APP_ID`.
    pub fn app_id(&self) -> String {
        std::env::var("FN_APP_ID").unwrap_or_default()
    }

    /// `FN_FN_ID`.
    pub fn fn_id(&self) -> String {
        std::env::var("FN_FN_ID").unwrap_or_default()
    }

    /// A config value (app and fn config are the process environment).
    pub fn config(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// What a handler answers: the status and headers the *client* should see
/// (the FDK moves them into gateway headers for trigger calls) and a
/// streaming body.
pub struct Response {
    /// The client's status (default 200).
    pub status: StatusCode,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Body,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// A 200 with the given body.
    pub fn new(body: Body) -> Self {
        Self {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body,
        }
    }

    /// A 200 `text/plain` answer.
    pub fn text(s: impl Into<String>) -> Self {
        Self::bytes(s.into()).header("content-type", "text/plain")
    }

    /// A 200 answer with these bytes (no Content-Type).
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        Self::new(
            Full::new(b.into())
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
    }

    /// A 200 answer streaming the given chunks.
    pub fn stream<S, E>(s: S) -> Self
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures::TryStreamExt;
        let body =
            http_body_util::StreamBody::new(s.map_ok(http_body::Frame::data).map_err(Into::into));
        Self::new(UnsyncBoxBody::new(body))
    }

    /// Set the client's status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        self
    }

    /// Add a client header (invalid names or values are ignored).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(n, v);
        }
        self
    }
}

/// Read a whole request body.
pub async fn read_body(body: Incoming) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn plain(status: StatusCode, msg: &str) -> http::Response<Body> {
    let mut r = http::Response::new(full(msg.to_owned()));
    *r.status_mut() = status;
    r
}

/// Turn a handler's answer into what goes to the server.
fn to_wire(ctx: &Context, resp: Response) -> http::Response<Body> {
    let mut out = http::Response::new(resp.body);
    let mut h = HeaderMap::with_capacity(resp.headers.len() + 3);
    let status;
    if ctx.gateway.is_some() {
        // Fn-* metadata and Content-Type stay as they are, the rest is
        // prefixed; the real status travels in Fn-Http-Status.
        for (name, value) in &resp.headers {
            let s = name.as_str();
            if name == header::CONTENT_TYPE || s.starts_with("fn-") {
                h.append(name.clone(), value.clone());
            } else if let Ok(n) = HeaderName::from_bytes(format!("{GATEWAY_PREFIX}{s}").as_bytes())
            {
                h.append(n, value.clone());
            }
        }
        h.insert("fn-http-status", HeaderValue::from(resp.status.as_u16()));
        status = StatusCode::OK;
    } else {
        h = resp.headers;
        // Only 200, 502 and 504 mean something to the server.
        status = match resp.status.as_u16() {
            502 => StatusCode::BAD_GATEWAY,
            504 => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::OK,
        };
    }
    h.insert("fn-fdk-version", HeaderValue::from_static(FDK_VERSION));
    h.insert("fn-fdk-runtime", HeaderValue::from_static("rust"));
    *out.status_mut() = status;
    *out.headers_mut() = h;
    out
}

/// Read `FN_FORMAT` and `FN_LISTENER` and return the socket path.
pub fn listener_from_env() -> Result<PathBuf, FdkError> {
    let format = std::env::var("FN_FORMAT").unwrap_or_default();
    if !format.is_empty() && !format.eq_ignore_ascii_case("http-stream") {
        return Err(FdkError::Format(format));
    }
    let listener = std::env::var("FN_LISTENER").unwrap_or_default();
    match listener.strip_prefix("unix:") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        _ => Err(FdkError::Listener(listener)),
    }
}

/// Serve the contract at `FN_LISTENER` until SIGTERM or SIGINT.
pub async fn run<H, F>(handler: H) -> Result<(), FdkError>
where
    H: Fn(Context, Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response, BoxError>> + Send + 'static,
{
    let path = listener_from_env()?;
    let shutdown = async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    serve(&path, handler, shutdown).await
}

/// Serve the contract at `socket` (the path the server watches, e.g.
/// `/tmp/iofs/lsnr.sock`) until `shutdown` resolves; then remove the socket
/// and the symlink.
pub async fn serve<H, F>(
    socket: &Path,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FdkError>
where
    H: Fn(Context, Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response, BoxError>> + Send + 'static,
{
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FdkError::Io { path, source }
    };
    let dir = socket
        .parent()
        .ok_or_else(|| FdkError::Listener(socket.display().to_string()))?;
    let name = socket
        .file_name()
        .ok_or_else(|| FdkError::Listener(socket.display().to_string()))?;
    let phony_name = format!("phony{}", name.to_string_lossy());
    let phony = dir.join(&phony_name);
    let _ = std::fs::remove_file(&phony);
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(&phony).map_err(io_err(&phony))?;
    std::fs::set_permissions(&phony, std::fs::Permissions::from_mode(0o666))
        .map_err(io_err(&phony))?;
    std::os::unix::fs::symlink(&phony_name, socket).map_err(io_err(socket))?;

    let handler = Arc::new(handler);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handle(&*handler, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(&phony);
    Ok(())
}

async fn handle<H, F>(handler: &H, req: http::Request<Incoming>) -> http::Response<Body>
where
    H: Fn(Context, Incoming) -> F,
    F: Future<Output = Result<Response, BoxError>>,
{
    if req.uri().path() != "/call" {
        return plain(StatusCode::NOT_FOUND, "no such route");
    }
    if req.method() != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only POST /call");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let (parts, body) = req.into_parts();
    let ctx = Context::from_headers(parts.headers);
    match handler(ctx.clone(), body).await {
        Ok(resp) => to_wire(&ctx, resp),
        Err(e) => {
            tracing::error!(call_id = ctx.call_id(), error = %e, "function failed");
            let mut r = to_wire(&ctx, Response::text(e.to_string()).status(502));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_context_and_reply() {
        let mut h = HeaderMap::new();
        h.insert("fn-call-id", "C1".parse().unwrap());
        h.insert("fn-intent", "httprequest".parse().unwrap());
        h.insert("fn-http-method", "PUT".parse().unwrap());
        h.insert("fn-http-request-url", "http://x/t/a/b".parse().unwrap());
        h.insert("fn-http-h-x-my", "foo".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let ctx = Context::from_headers(h);
        let g = ctx.gateway().unwrap();
        assert_eq!(g.method, "PUT");
        assert_eq!(ctx.http_headers()["x-my"], "foo");
        assert_eq!(ctx.http_headers()["content-type"], "application/json");
        let wire = to_wire(
            &ctx,
            Response::text("x").status(404).header("location", "/y"),
        );
        assert_eq!(wire.status(), 200);
        assert_eq!(wire.headers()["fn-http-status"], "404");
        assert_eq!(wire.headers()["fn-http-h-location"], "/y");
        assert_eq!(wire.headers()["content-type"], "text/plain");

        let plain_ctx = Context::from_headers(HeaderMap::new());
        assert!(plain_ctx.gateway().is_none());
        let wire = to_wire(
            &plain_ctx,
            Response::text("x").status(404).header("location", "/y"),
        );
        assert_eq!(wire.status(), 200);
        assert_eq!(wire.headers()["location"], "/y");
        assert!(!wire.headers().contains_key("fn-http-status"));
    }
}
