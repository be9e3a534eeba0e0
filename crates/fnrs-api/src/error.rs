//! One place that turns errors into Fn's `{"message": …}` answers, and the
//! JSON body extractor whose rejections come out the same way.

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::json;

/// `Content-Type` of every JSON answer, as Fn sends it.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// Header carrying the id of a call on every answer once the call exists.
pub use fnrs_model::CALL_ID_HEADER as FN_CALL_ID;
/// The message of a 401.
pub const UNAUTHORIZED: &str = "Invalid or missing authorization token";
/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "15";

/// An error answer: Fn's status and message, and the call id if a call was made.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Fn's status and message.
    pub error: fnrs_model::Error,
    /// Sent as `Fn-Call-Id` when set.
    pub call_id: Option<String>,
}

impl ApiError {
    /// An error with Fn's status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        fnrs_model::Error::with_message(status, message).into()
    }

    /// 404 `Path not found: <METHOD> <path>`.
    pub fn path_not_found(method: &http::Method, path: &str) -> Self {
        Self::new(
            404,
            format!("Path not found: {method} {}", decode_path(path)),
        )
    }

    /// 405 `Method not allowed: <METHOD> <path>`.
    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            405,
            format!("Method not allowed: {method} {}", decode_path(path)),
        )
    }

    /// 413 for a body whose declared length is over the limit.
    pub fn too_large(len: u64, max: u64) -> Self {
        fnrs_model::Error::too_large(len, max).into()
    }

    /// 401 for a request without the token it needs (sent with
    /// `WWW-Authenticate: Bearer`).
    pub fn unauthorized() -> Self {
        Self::new(401, UNAUTHORIZED)
    }

    /// 413 for a body without a length that ran over the limit.
    pub fn content_too_large() -> Self {
        fnrs_model::Error::CONTENT_TOO_LARGE.into()
    }
}

/// The path as Go's `URL.Path` shows it (percent-decoded).
fn decode_path(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

impl From<fnrs_model::Error> for ApiError {
    fn from(error: fnrs_model::Error) -> Self {
        Self {
            error,
            call_id: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Function faults (502, 504) and a busy server (503) are the callers'
        // business; only internal errors deserve the operator's attention.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(status = status.as_u16(), message = %self.error.message, "api error");
        }
        let body = error_body(&self.error.message);
        let mut resp = (status, Bytes::from(body)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        );
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot be reused.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let Some(id) = self.call_id.and_then(|id| HeaderValue::try_from(id).ok()) {
            h.insert(FN_CALL_ID, id);
        }
        resp
    }
}

/// The body of an error answer, `{"message": …}` as Fn writes it (compact
/// JSON, then a newline); also for answers written below the router.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut body = json::to_vec(&serde_json::json!({ "message": message }));
    body.push(b'\n');
    body
}

/// A JSON answer written as Fn writes it (compact, Go's HTML escaping).
pub struct JsonResponse(pub StatusCode, pub Vec<u8>);

impl JsonResponse {
    /// 200 with `value` as the body.
    pub fn ok<T: serde::Serialize>(value: &T) -> Self {
        Self(StatusCode::OK, json::to_vec(value))
    }
}

impl IntoResponse for JsonResponse {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Bytes::from(self.1)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        );
        resp
    }
}

/// Largest JSON body of the management API, whatever `FN_MAX_REQUEST_SIZE`
/// says (an app, fn or trigger is a few KiB; this only stops absurd bodies
/// from being held in memory).
pub const MAX_JSON_BODY: usize = 16 << 20;

/// How much of a refused body is still read before answering (closing a
/// connection with unread data resets it, and the client may lose the answer).
const DRAIN_LIMIT: usize = 256 << 10;

/// A JSON request body. Anything that is not JSON of the expected shape is a
/// 400 "Invalid JSON"; a body over `FN_MAX_REQUEST_SIZE` is a 413.
pub struct FnJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FnJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut body = req.into_body();
        let mut bytes = Vec::new();
        let mut over = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                // The FN_MAX_REQUEST_SIZE limit, or a broken body.
                Err(e) => {
                    let why = fnrs_model::Error::request_body(&e);
                    return Err(if why.status == 413 {
                        ApiError::content_too_large()
                    } else {
                        fnrs_model::Error::INVALID_JSON.into()
                    });
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if over > 0 || bytes.len() + data.len() > MAX_JSON_BODY {
                // Over the cap: read (and drop) a little more so that the
                // client gets the answer, then stop.
                over += data.len();
                if over > DRAIN_LIMIT {
                    break;
                }
                continue;
            }
            bytes.extend_from_slice(&data);
        }
        if over > 0 {
            return Err(ApiError::content_too_large());
        }
        serde_json::from_slice(&bytes)
            .map(FnJson)
            .map_err(|_| fnrs_model::Error::INVALID_JSON.into())
    }
}
