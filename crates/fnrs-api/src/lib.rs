//! The HTTP API of fnrs: Fn's v2 management API (apps, fns, triggers), invoke
//! and HTTP triggers, calls and logs, metrics, health and an OpenAPI document.
//!
//! [`router`] builds the whole service from an [`ApiState`]; errors come out
//! as Fn's `{"message": …}` through [`ApiError`].

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

pub use error::{ApiError, FN_CALL_ID, FnJson, JSON_CONTENT_TYPE, JsonResponse};
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

/// `FN_MAX_REQUEST_SIZE`: a declared length over the limit is refused at once;
/// a body without a length is cut at the limit.
async fn limit_body(State(max): State<u64>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max => ApiError::too_large(n, max).into_response(),
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

/// The whole HTTP service.
pub fn router(state: Arc<ApiState>) -> Router {
    use handlers::*;
    let max = state.config.max_request_size;
    let r = Router::new()
        .route("/", get(root))
        .route("/version", get(version))
        .route("/health", get(health))
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
        )
        .route("/invoke/{fn_id}", post(invoke::invoke_fn))
        .route("/t/{app_name}", any(invoke::trigger_call))
        .route("/t/{app_name}/", any(invoke::trigger_call))
        .route("/t/{app_name}/{*source}", any(invoke::trigger_call))
        .fallback(path_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    if max > 0 {
        r.layer(axum::middleware::from_fn_with_state(max, limit_body))
    } else {
        r
    }
}
