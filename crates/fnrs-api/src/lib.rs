//! The HTTP API of fnrs: Fn's v2 management API (apps, fns, triggers), invoke
//! and HTTP triggers, calls and logs, metrics, health and an OpenAPI document.
//!
//! [`router`] builds the whole service from an [`ApiState`]; errors come out
//! as Fn's `{"message": …}` through [`ApiError`].

mod auth;
mod error;
mod handlers;
mod invoke;
pub mod json;
mod lookup;
mod page;
mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::BodyExt;

pub use auth::BearerToken;
pub use error::{
    ApiError, FN_CALL_ID, FnJson, JSON_CONTENT_TYPE, JsonResponse, RETRY_AFTER_SECS, UNAUTHORIZED,
    error_body,
};
pub use invoke::{BoxBody, FN_INVOKE_TYPE, InvokeError, InvokeRequest, Invoker, NoAgent};
pub use lookup::{Lookup, StoreLookup};
pub use page::{DEFAULT_PER_PAGE, MAX_PER_PAGE};
pub use state::{ApiConfig, ApiState, FN_API_VERSION};

/// The OpenAPI 3 document of this API, as served at `/v2/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn path_not_found(req: Request) -> Response {
    ApiError::path_not_found(req.method(), req.uri().path()).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::method_not_allowed(req.method(), req.uri().path()).into_response()
}

/// Bodies up to this size are read before a 413 is sent (as Go's server does).
const DRAIN_BEFORE_413: u64 = 256 << 10;

/// `FN_MAX_REQUEST_SIZE`: a declared length over the limit is refused at once;
/// a body without a length is cut at the limit.
async fn limit_body(State(max): State<u64>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max => {
            // Read (and drop) a moderate body before answering: closing a
            // connection with unread data resets it, and the client may lose
            // the answer. Larger bodies are refused without reading.
            if n <= DRAIN_BEFORE_413 {
                let mut body = req.into_body();
                while let Some(Ok(_)) = body.frame().await {}
            }
            ApiError::too_large(n, max).into_response()
        }
        Some(_) => next.run(req).await,
        None => {
            let limit = usize::try_from(max).unwrap_or(usize::MAX);
            let req = req.map(|b| {
                axum::body::Body::new(
                    http_body_util::Limited::new(b, limit).map_err(axum::Error::new),
                )
            });
            next.run(req).await
        }
    }
}

/// Counts and times requests of the management API (the invoke path is
/// measured by the invoker).
async fn track(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("fnrs_api_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("fnrs_api_request_duration_seconds", "method" => method.to_string(), "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

fn cors(config: &ApiConfig) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if config.cors_origins.is_empty() {
        return None;
    }
    let origin = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok()),
        )
    };
    let headers: Vec<http::HeaderName> = config
        .cors_headers
        .iter()
        .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PUT,
                http::Method::HEAD,
                http::Method::DELETE,
            ])
            .allow_headers(headers),
    )
}

/// The whole HTTP service.
pub fn router(state: Arc<ApiState>) -> Router {
    use handlers::*;
    let max = state.config.max_request_size;
    let cors = cors(&state.config);
    let invoke = Router::new()
        .route("/invoke/{fn_id}", post(invoke::invoke_fn))
        .route("/t/{app_name}", any(invoke::trigger_call))
        .route("/t/{app_name}/", any(invoke::trigger_call))
        .route("/t/{app_name}/{*source}", any(invoke::trigger_call));
    let open = Router::new()
        .route("/", get(root))
        .route("/version", get(version))
        .route("/health", get(health));
    let managed = Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/openapi.json", get(openapi))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{app_id}",
            get(get_app).put(update_app).delete(delete_app),
        )
        .route("/v2/fns", get(list_fns).post(create_fn))
        .route(
            "/v2/fns/{fn_id}",
            get(get_fn).put(update_fn).delete(delete_fn),
        )
        .route("/v2/fns/{fn_id}/calls", get(list_calls))
        .route("/v2/fns/{fn_id}/calls/{call_id}", get(get_call))
        .route("/v2/fns/{fn_id}/calls/{call_id}/log", get(get_log))
        .route("/v2/triggers", get(list_triggers).post(create_trigger))
        .route(
            "/v2/triggers/{trigger_id}",
            get(get_trigger).put(update_trigger).delete(delete_trigger),
        );
    // Only when there is a token: no work per request otherwise.
    let managed = if state.config.api_token.is_some() {
        managed.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_token,
        ))
    } else {
        managed
    };
    let r = open
        .merge(managed)
        .route_layer(axum::middleware::from_fn(track))
        .merge(invoke)
        .fallback(path_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    let r = if max > 0 {
        r.layer(axum::middleware::from_fn_with_state(max, limit_body))
    } else {
        r
    };
    match cors {
        Some(c) => r.layer(c),
        None => r,
    }
}
