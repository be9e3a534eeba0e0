//! The HTTP side of calling functions: `POST /invoke/{fn_id}` and the HTTP
//! triggers `/t/{app_name}/{source…}`. The API looks the function up and hands
//! the request to an [`Invoker`] (the agent, or a pool of remote runners);
//! bodies stream through in both directions.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use fnrs_model::{App, Error, Fn, Trigger};
use http::HeaderValue;
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::state::ApiState;

/// A streamed body in either direction.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// One call as the API hands it to the invoker.
pub struct InvokeRequest {
    /// The fn's app.
    pub app: Arc<App>,
    /// The fn to call.
    pub func: Arc<Fn>,
    /// The HTTP trigger the call came through (`/t/…`), if any.
    pub trigger: Option<Arc<Trigger>>,
    /// The request's method (always POST on `/invoke`).
    pub method: http::Method,
    /// Absolute original URL, `scheme://Host/path?query` (Fn's `Fn-Http-Request-Url`).
    pub url: String,
    /// Request headers as received (the invoker strips hop-by-hop headers and
    /// wraps them for triggers).
    pub headers: http::HeaderMap,
    /// The request body, streamed; capped at `FN_MAX_REQUEST_SIZE` when set.
    pub body: BoxBody,
    /// `Fn-Invoke-Type: detached` on `/invoke`.
    pub detached: bool,
}

/// A call that failed: Fn's status and message, and the call id if the call
/// had been created (then the answer carries `Fn-Call-Id`).
#[derive(Debug, Clone)]
pub struct InvokeError {
    /// The call's id, once the call exists.
    pub call_id: Option<String>,
    /// Fn's status and message.
    pub error: Error,
}

impl From<Error> for InvokeError {
    fn from(error: Error) -> Self {
        Self {
            call_id: None,
            error,
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        ApiError {
            error: e.error,
            call_id: e.call_id,
        }
    }
}

/// Runs calls. The local agent implements it; so will a load balancer's pool
/// of remote runners.
#[async_trait]
pub trait Invoker: Send + Sync + 'static {
    /// The full answer (status, headers including `Fn-Call-Id`, streamed
    /// body) or an error the API renders as Fn's `{"message"}`.
    async fn invoke(&self, req: InvokeRequest) -> Result<http::Response<BoxBody>, InvokeError>;
    /// What `/health` shows about the invoker.
    async fn health(&self) -> serde_json::Value;
    /// Check a fn's image when the fn is created or its image changes: an
    /// image the invoker can never run is refused (400) before it is stored.
    async fn check_image(&self, image: &str) -> Result<(), Error> {
        let _ = image;
        Ok(())
    }
    /// The invoker's own lines of `/metrics` (Prometheus text), after the
    /// registry's.
    fn metrics_text(&self) -> String {
        String::new()
    }
}

/// An invoker for a server without an agent: every call is a 500
/// `no agent configured`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAgent;

#[async_trait]
impl Invoker for NoAgent {
    async fn invoke(&self, _req: InvokeRequest) -> Result<http::Response<BoxBody>, InvokeError> {
        Err(Error::new(500, "no agent configured").into())
    }
    async fn health(&self) -> serde_json::Value {
        serde_json::json!({"agent": "none"})
    }
}

/// The header that asks for a detached call.
pub const FN_INVOKE_TYPE: &str = "fn-invoke-type";

fn request_url(parts: &http::request::Parts) -> String {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let pq = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    format!("http://{host}{pq}")
}

fn into_box_body(body: Body) -> BoxBody {
    body.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        .boxed_unsync()
}

async fn run(
    state: &ApiState,
    req: Request,
    app: Arc<App>,
    func: Arc<Fn>,
    trigger: Option<Arc<Trigger>>,
) -> Response {
    let (parts, body) = req.into_parts();
    let detached = trigger.is_none()
        && parts
            .headers
            .get(FN_INVOKE_TYPE)
            .is_some_and(|v| v == HeaderValue::from_static("detached"));
    let ireq = InvokeRequest {
        app,
        func,
        trigger,
        url: request_url(&parts),
        method: parts.method,
        headers: parts.headers,
        body: into_box_body(body),
        detached,
    };
    match state.invoker.invoke(ireq).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /invoke/{fn_id}`.
pub(crate) async fn invoke_fn(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path(fn_id): axum::extract::Path<String>,
    mut req: Request,
) -> Response {
    let func = match state.lookup.func(&fn_id).await {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let app = match state.lookup.app(&func.app_id).await {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) =
        crate::auth::check_call(state.config.api_token.as_ref(), &app, req.headers_mut())
    {
        return e.into_response();
    }
    run(&state, req, app, func, None).await
}

/// Any method on `/t/{app_name}` and `/t/{app_name}/{*source}`.
pub(crate) async fn trigger_call(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    // `/t/<app>[/<source>]`, percent-decoded as Go's URL.Path.
    let path = percent_encoding::percent_decode_str(parts.uri.path()).decode_utf8_lossy();
    let rest = path.strip_prefix("/t/").unwrap_or("");
    let (app_name, source) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let app = match state.lookup.app_by_name(app_name).await {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Before the trigger lookup: a caller without the token learns nothing
    // of the app's triggers.
    if let Err(e) =
        crate::auth::check_call(state.config.api_token.as_ref(), &app, &mut parts.headers)
    {
        return e.into_response();
    }
    let trigger = match state.lookup.http_trigger(&app.id, source).await {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let func = match state.lookup.func(&trigger.fn_id).await {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    drop(path); // borrows parts.uri
    let req = Request::from_parts(parts, body);
    run(&state, req, app, func, Some(trigger)).await
}
