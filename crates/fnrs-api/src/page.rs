//! Query parameters and pagination as Fn reads them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_PER_PAGE: u32 = 30;
/// Largest page size.
pub const MAX_PER_PAGE: u32 = 100;

/// The query string as first-value-wins pairs.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `key`, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `per_page`: over 100 → 100; missing, invalid or ≤ 0 → 30.
    pub fn per_page(&self) -> u32 {
        match self.get("per_page").and_then(|v| v.parse::<i64>().ok()) {
            Some(n) if n > MAX_PER_PAGE as i64 => MAX_PER_PAGE,
            Some(n) if n > 0 => n as u32,
            _ => DEFAULT_PER_PAGE,
        }
    }

    /// The decoded `cursor` (base64url without padding); a bad one is a 400.
    pub fn cursor(&self) -> Result<Option<String>, ApiError> {
        let Some(c) = self.get("cursor") else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(400, "Invalid cursor"))
    }
}

/// The cursor for the page after one ending with `last`.
pub fn encode_cursor(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}
