use std::borrow::Cow;

/// An error with the HTTP status and message Fn answers with (`{"message": …}`).
///
/// Every layer (validation, datastore, agent) reports client-visible failures
/// as this type; the API turns it into a response in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub status: u16,
    pub message: Cow<'static, str>,
}

impl Error {
    pub const fn new(status: u16, message: &'static str) -> Self {
        Self {
            status,
            message: Cow::Borrowed(message),
        }
    }

    pub fn with_message(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: Cow::Owned(message.into()),
        }
    }

    /// 413 for a request body over `max` bytes (`len` declared or read so far).
    pub fn too_large(len: u64, max: u64) -> Self {
        Self::with_message(
            413,
            format!("Content-Length too large for this server, {len} > max {max}"),
        )
    }

    /// 413 for a body without a length that ran over the limit.
    pub const CONTENT_TOO_LARGE: Error = Error::new(413, "Request content too large");
    /// 400 for a request body that broke off (the client went away or sent
    /// a malformed body).
    pub const BODY_BROKEN: Error = Error::new(400, "error reading request body");

    /// How a client's request body failed, from its error: over
    /// `FN_MAX_REQUEST_SIZE` (413), or broken (400).
    pub fn request_body(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut cur = Some(e);
        while let Some(e) = cur {
            if e.is::<http_body_util::LengthLimitError>() {
                return Self::CONTENT_TOO_LARGE;
            }
            cur = e.source();
        }
        Self::BODY_BROKEN
    }

    pub const INTERNAL: Error = Error::new(500, "internal server error");
    pub const INVALID_JSON: Error = Error::new(400, "Invalid JSON");

    pub const APP_NOT_FOUND: Error = Error::new(404, "App not found");
    pub const APP_ALREADY_EXISTS: Error = Error::new(409, "App already exists");
    pub const FN_NOT_FOUND: Error = Error::new(404, "Fn not found");
    pub const FN_ALREADY_EXISTS: Error = Error::new(409, "Fn with specified name already exists");
    pub const TRIGGER_NOT_FOUND: Error = Error::new(404, "Trigger not found");
    pub const TRIGGER_EXISTS: Error = Error::new(409, "Trigger already exists");
    pub const TRIGGER_SOURCE_EXISTS: Error = Error::new(
        409,
        "Trigger with the same type and source exists on this app",
    );
    pub const CALL_NOT_FOUND: Error = Error::new(404, "Call not found");
    pub const CALL_LOG_NOT_FOUND: Error = Error::new(404, "Call log not found");
}
