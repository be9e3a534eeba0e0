//! Bearer tokens: `FN_API_TOKEN` guards the management API; an app's
//! `fnrs.io/invoke-token` annotation guards calls to its fns (where the
//! server's token is accepted too). Tokens are compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fnrs_model::{ANNOTATION_INVOKE_TOKEN, App};
use http::{HeaderMap, HeaderValue, header};

use crate::error::ApiError;
use crate::state::ApiState;

/// A token the server accepts. Its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    /// The token itself, for a client to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True if `presented` is this token (constant time for equal lengths).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Equality that looks at every byte whatever they hold (only the lengths
/// may show in the time taken).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` value (scheme in any case).
fn bearer(v: &HeaderValue) -> Option<&[u8]> {
    let v = v.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    if !scheme[..6].eq_ignore_ascii_case(b"bearer") || scheme[6] != b' ' {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Requests of the management API without the server's token get a 401.
pub(crate) async fn require_api_token(
    State(state): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = state.config.api_token.as_ref().is_none_or(|t| {
        req.headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .any(|v| bearer(v).is_some_and(|p| t.matches(p)))
    });
    if allowed {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// The app's invoke token, if it has one.
fn invoke_token(app: &App) -> Option<&str> {
    if app.annotations.is_empty() {
        return None;
    }
    app.annotations.get(ANNOTATION_INVOKE_TOKEN)?.as_str()
}

/// Checks a call to one of `app`'s fns: with an invoke token on the app, the
/// request must carry it or the server's token. A header holding either is
/// removed, so that no function sees a token (also on open apps).
pub(crate) fn check_call(
    server: Option<&BearerToken>,
    app: &App,
    headers: &mut HeaderMap,
) -> Result<(), ApiError> {
    let app_token = invoke_token(app);
    if app_token.is_none() && server.is_none() {
        return Ok(());
    }
    let matched = headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        bearer(v).is_some_and(|p| {
            app_token.is_some_and(|t| constant_time_eq(t.as_bytes(), p))
                || server.is_some_and(|t| t.matches(p))
        })
    });
    if matched {
        headers.remove(header::AUTHORIZATION);
        Ok(())
    } else if app_token.is_some() {
        Err(ApiError::unauthorized())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        let b = |s: &'static str| bearer(&HeaderValue::from_static(s)).map(<[u8]>::to_vec);
        assert_eq!(b("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(b("bEARER  abc "), Some(b"abc".to_vec()));
        assert_eq!(b("Basic abc"), None);
        assert_eq!(b("Bearerabc"), None);
        assert_eq!(b("Bearer"), None);
        assert_eq!(b("abc"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        let t = BearerToken::new("s3cret");
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3creT"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "BearerToken(<redacted>)");
    }
}
