//! Validation of client input, with Fn's exact messages (contract §4.2).
//!
//! Each check returns the first failing rule in the order Fn checks them, as
//! an [`Error`] with Fn's status and message.

use std::sync::OnceLock;

use crate::{ANNOTATION_INVOKE_TOKEN, Annotations, App, Config, Error, Fn, Trigger};

/// Longest app, fn or trigger name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Largest memory a fn may ask for, in MB.
pub const MAX_MEMORY: u64 = 8 * 1024;
/// Longest fn timeout, in seconds.
pub const MAX_TIMEOUT: i32 = 300;
/// Longest fn idle timeout, in seconds.
pub const MAX_IDLE_TIMEOUT: i32 = 3600;
/// Longest annotation key, in bytes.
pub const MAX_ANNOTATION_KEY_BYTES: usize = 128;
/// Longest annotation value, in bytes of compact JSON.
pub const MAX_ANNOTATION_VALUE_BYTES: usize = 512;
/// Most annotation keys on one object.
pub const MAX_ANNOTATION_KEYS: usize = 100;
/// The only trigger type Fn knows.
pub const TRIGGER_TYPE_HTTP: &str = "http";
/// Shapes an app may have (empty = none).
pub const SHAPES: [&str; 3] = ["GENERIC_X86", "GENERIC_ARM", "GENERIC_X86_ARM"];
/// Longest bearer token (server or app), in bytes.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Function formats a fn may carry (absent = `http-stream`).
pub const FORMATS: [&str; 5] = ["http-stream", "default", "http", "json", "cloudevent"];

/// Fn's messages, as constants so tests and callers can refer to them.
pub mod msg {
    pub const MISSING_NAME: &str = "Missing Name";
    pub const APP_ID_PROVIDED: &str = "App ID cannot be supplied on create";
    pub const APP_ID_MISMATCH: &str = "App ID in path does not match ID in body";
    pub const APP_NAME_TOO_LONG: &str = "App name must be 255 characters or less";
    pub const APP_INVALID_NAME: &str = "Invalid app name";
    pub const APP_NAME_IMMUTABLE: &str = "Could not update - name is immutable";
    pub const APP_INVALID_SHAPE: &str = "Invalid app shape";
    pub const FN_ID_PROVIDED: &str = "ID cannot be provided for Fn creation";
    pub const FN_ID_MISMATCH: &str = "Fn ID in path does not match that in body";
    pub const FN_MISSING_APP_ID: &str = "Missing AppID on Fn";
    pub const FN_MISSING_NAME: &str = "Missing Fn name";
    pub const FN_NAME_TOO_LONG: &str = "Fn name must be 255 characters or less";
    pub const FN_INVALID_NAME: &str = "name must be a valid string";
    pub const FN_MISSING_IMAGE: &str = "Missing image on Fn";
    pub const FN_INVALID_TIMEOUT: &str = "timeout value is out of range, must be between 0 and 300";
    pub const FN_INVALID_IDLE_TIMEOUT: &str =
        "idle_timeout value is out of range, must be between 0 and 3600";
    pub const FN_INVALID_MEMORY: &str =
        "memory value is out of range. It should be between 0 and 8192";
    pub const FN_INVALID_FORMAT: &str = "Invalid Protocol";
    pub const TRIGGER_ID_PROVIDED: &str = "ID cannot be provided for Trigger creation";
    pub const TRIGGER_ID_MISMATCH: &str = "ID in path does not match ID in body";
    pub const TRIGGER_CREATED_AT_PROVIDED: &str = "Trigger Created At Provided for Create";
    pub const TRIGGER_UPDATED_AT_PROVIDED: &str = "Trigger ID Provided for Create";
    pub const TRIGGER_MISSING_APP_ID: &str = "Missing App ID on Trigger";
    pub const TRIGGER_MISSING_NAME: &str = "Missing name on Trigger";
    pub const TRIGGER_NAME_TOO_LONG: &str = "Trigger name must be 255 characters or less";
    pub const TRIGGER_INVALID_NAME: &str = "Invalid name for Trigger";
    pub const TRIGGER_MISSING_FN_ID: &str = "Missing Fn ID on Trigger";
    pub const TRIGGER_TYPE_UNKNOWN: &str = "Trigger Type Not Supported";
    pub const TRIGGER_MISSING_SOURCE: &str = "Missing Trigger Source";
    pub const TRIGGER_MISSING_SOURCE_PREFIX: &str = "Missing Trigger Source Prefix '/'";
    pub const TRIGGER_FN_NOT_SAME_APP: &str = "Invalid Fn ID - not owned by specified app";
    pub const ANNOTATION_KEY: &str = "Invalid annotation key, annotation keys must be non-empty ascii strings excluding whitespace";
    pub const ANNOTATION_KEY_LENGTH: &str =
        "Invalid annotation key length, annotation keys may not be larger than 128 bytes";
    pub const ANNOTATION_VALUE: &str = "Invalid annotation value, annotation values may only be non-empty strings, numbers, objects, or arrays";
    pub const ANNOTATION_VALUE_LENGTH: &str = "Invalid annotation value length, annotation values may not be larger than 512 bytes when serialized as JSON";
    pub const ANNOTATION_TOO_MANY_KEYS: &str = "Invalid annotation change, new key(s) exceed maximum permitted number of annotations keys (100)";
    // fnrs's own rules (Fn has none for these).
    pub const CONFIG_KEY: &str = "Invalid config key, config keys must be non-empty and may not contain '=' or NUL characters";
    pub const CONFIG_VALUE: &str =
        "Invalid config value, config values may not contain NUL characters";
    pub const INVOKE_TOKEN: &str = "Invalid annotation value for fnrs.io/invoke-token, it must be a string of 1 to 256 printable ASCII characters without spaces";
    pub const INVOKE_TOKEN_NOT_ON_APP: &str =
        "The fnrs.io/invoke-token annotation is only allowed on apps";
    pub const TRIGGER_INVALID_SOURCE: &str =
        "Invalid Trigger Source, sources may not contain '?', '#', '%' or control characters";
}

const fn bad(message: &'static str) -> Error {
    Error::new(400, message)
}

/// Unicode letters and digits, `_` and `-` (Go's `unicode.IsLetter`/`IsNumber`).
fn is_name_char_run(s: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"^[\p{L}\p{N}_-]*$").expect("valid regex"))
        .is_match(s)
}

/// An app's name: present, ≤255 bytes, letters/digits/`_`/`-`.
pub fn app_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(bad(msg::MISSING_NAME));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(msg::APP_NAME_TOO_LONG));
    }
    if !is_name_char_run(name) {
        return Err(bad(msg::APP_INVALID_NAME));
    }
    Ok(())
}

/// A fn's name: present, ≤255 bytes, unchanged by URL path-segment escaping.
pub fn fn_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(bad(msg::FN_MISSING_NAME));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(msg::FN_NAME_TOO_LONG));
    }
    // Bytes Go's url.PathEscape leaves alone.
    let ok = name.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'~' | b'$' | b'&' | b'+' | b':' | b'=' | b'@'
            )
    });
    // `.` and `..` survive escaping but name no file and no path segment.
    if !ok || name == "." || name == ".." {
        return Err(bad(msg::FN_INVALID_NAME));
    }
    Ok(())
}

/// A trigger's name: present, ≤255 bytes, letters/digits/`_`/`-`.
pub fn trigger_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(bad(msg::TRIGGER_MISSING_NAME));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(msg::TRIGGER_NAME_TOO_LONG));
    }
    if !is_name_char_run(name) {
        return Err(bad(msg::TRIGGER_INVALID_NAME));
    }
    Ok(())
}

/// True for the values Fn treats as "delete this key" (`""` and `null`).
pub fn is_empty_annotation_value(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A complete (merged) annotation map, as Fn checks it before storing.
pub fn annotations(a: &Annotations) -> Result<(), Error> {
    for (k, v) in a {
        annotation(k, v)?;
    }
    if a.len() > MAX_ANNOTATION_KEYS {
        return Err(bad(msg::ANNOTATION_TOO_MANY_KEYS));
    }
    Ok(())
}

/// One annotation key and value.
pub fn annotation(key: &str, value: &serde_json::Value) -> Result<(), Error> {
    if key.is_empty() || !key.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err(bad(msg::ANNOTATION_KEY));
    }
    if key.len() > MAX_ANNOTATION_KEY_BYTES {
        return Err(bad(msg::ANNOTATION_KEY_LENGTH));
    }
    if is_empty_annotation_value(value) {
        return Err(bad(msg::ANNOTATION_VALUE));
    }
    let len = serde_json::to_string(value)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if len > MAX_ANNOTATION_VALUE_BYTES {
        return Err(bad(msg::ANNOTATION_VALUE_LENGTH));
    }
    Ok(())
}

/// A bearer token as fnrs accepts one: 1 to [`MAX_TOKEN_BYTES`]
/// printable ASCII characters, no spaces.
pub fn is_valid_token(t: &str) -> bool {
    (1..=MAX_TOKEN_BYTES).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic())
}

/// The app's `fnrs.io/invoke-token` annotation, if any, must be a token.
fn invoke_token(a: &Annotations) -> Result<(), Error> {
    match a.get(ANNOTATION_INVOKE_TOKEN) {
        None => Ok(()),
        Some(serde_json::Value::String(t)) if is_valid_token(t) => Ok(()),
        Some(_) => Err(bad(msg::INVOKE_TOKEN)),
    }
}

/// Only apps carry an invoke token: on a fn or trigger it would protect nothing.
fn no_invoke_token(a: &Annotations) -> Result<(), Error> {
    if a.contains_key(ANNOTATION_INVOKE_TOKEN) {
        return Err(bad(msg::INVOKE_TOKEN_NOT_ON_APP));
    }
    Ok(())
}

/// A config map: its entries become the function's environment variables,
/// so a key may not be empty or hold `=` or NUL, and a value may not hold NUL.
pub fn config(c: &Config) -> Result<(), Error> {
    for (k, v) in c {
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(bad(msg::CONFIG_KEY));
        }
        if v.contains('\0') {
            return Err(bad(msg::CONFIG_VALUE));
        }
    }
    Ok(())
}

/// A trigger's source is compared with the request's decoded path, and its
/// endpoint URL is the source as is: a query or fragment mark, a percent
/// sign or a control character could never be reached through that URL.
pub fn trigger_source(source: &str) -> Result<(), Error> {
    if source.is_empty() {
        return Err(bad(msg::TRIGGER_MISSING_SOURCE));
    }
    if !source.starts_with('/') {
        return Err(bad(msg::TRIGGER_MISSING_SOURCE_PREFIX));
    }
    if source
        .chars()
        .any(|c| matches!(c, '?' | '#' | '%') || c.is_control())
    {
        return Err(bad(msg::TRIGGER_INVALID_SOURCE));
    }
    Ok(())
}

/// An app's syslog URL (empty = none): it must parse as a URL with scheme
/// udp, tcp, unix, unixgram or tcp+tls.
pub fn syslog_url(raw: &str) -> Result<(), Error> {
    if raw.is_empty() {
        return Ok(());
    }
    let problem = match go_url_scheme(raw.trim()) {
        Err(parse) => parse,
        Ok(scheme) => match scheme.as_str() {
            "udp" | "tcp" | "unix" | "unixgram" | "tcp+tls" => return Ok(()),
            _ => "invalid scheme, only [tcp, udp, unix, unixgram, tcp+tls] are supported".into(),
        },
    };
    Err(Error::with_message(
        400,
        format!("invalid syslog url: {} {problem}", go_quote(raw)),
    ))
}

/// The scheme of a URL as Go's `url.Parse` finds it (lower-cased, may be
/// empty), or the text of the parse error Go reports for the common cases.
fn go_url_scheme(u: &str) -> Result<String, String> {
    let perr = |what: &str| format!("parse {}: {what}", go_quote(u));
    if u.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(perr("net/url: invalid control character in URL"));
    }
    let without_fragment = u.split('#').next().unwrap_or("");
    let mut scheme = "";
    let mut rest = without_fragment;
    for (i, b) in without_fragment.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err(perr("missing protocol scheme")),
            b':' => {
                scheme = &without_fragment[..i];
                rest = &without_fragment[i + 1..];
                break;
            }
            _ => break,
        }
    }
    // Percent escapes must be well formed.
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                let end = (i + 3).min(bytes.len());
                let esc = String::from_utf8_lossy(&bytes[i..end]);
                return Err(perr(&format!("invalid URL escape {}", go_quote(&esc))));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    if scheme.is_empty() {
        let first_segment = rest.split(['/', '?']).next().unwrap_or("");
        if first_segment.contains(':') && !rest.starts_with('/') {
            return Err(perr("first path segment in URL cannot contain colon"));
        }
    } else if let Some(authority) = rest.strip_prefix("//") {
        let authority = authority.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let port = if host.starts_with('[') {
            host.rsplit_once("]:").map(|(_, p)| p)
        } else {
            host.rsplit_once(':').map(|(_, p)| p)
        };
        if let Some(p) = port
            && !p.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(perr(&format!(
                "invalid port {} after host",
                go_quote(&format!(":{p}"))
            )));
        }
    }
    Ok(scheme.to_ascii_lowercase())
}

/// A string quoted as Go's `%q` does for printable text.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// An app's shape: empty or one of [`SHAPES`].
pub fn shape(shape: &str) -> Result<(), Error> {
    if shape.is_empty() || SHAPES.contains(&shape) {
        Ok(())
    } else {
        Err(bad(msg::APP_INVALID_SHAPE))
    }
}

/// A fn's format: absent or one of [`FORMATS`].
pub fn format(format: Option<&str>) -> Result<(), Error> {
    match format {
        None => Ok(()),
        Some(f) if FORMATS.contains(&f) => Ok(()),
        Some(_) => Err(bad(msg::FN_INVALID_FORMAT)),
    }
}

/// A whole app, in Fn's order: name, annotations, syslog URL, shape; then
/// fnrs's config rules.
pub fn app(a: &App) -> Result<(), Error> {
    app_name(&a.name)?;
    annotations(&a.annotations)?;
    invoke_token(&a.annotations)?;
    if let Some(url) = &a.syslog_url {
        syslog_url(url)?;
    }
    shape(&a.shape)?;
    config(&a.config)
}

/// A whole fn, in Fn's order: name, app id, image, timeouts, memory,
/// format, annotations; then fnrs's config rules.
pub fn func(f: &Fn) -> Result<(), Error> {
    fn_name(&f.name)?;
    if f.app_id.is_empty() {
        return Err(bad(msg::FN_MISSING_APP_ID));
    }
    if f.image.is_empty() {
        return Err(bad(msg::FN_MISSING_IMAGE));
    }
    if f.timeout <= 0 || f.timeout > MAX_TIMEOUT {
        return Err(bad(msg::FN_INVALID_TIMEOUT));
    }
    if f.idle_timeout <= 0 || f.idle_timeout > MAX_IDLE_TIMEOUT {
        return Err(bad(msg::FN_INVALID_IDLE_TIMEOUT));
    }
    if f.memory < 1 || f.memory > MAX_MEMORY {
        return Err(bad(msg::FN_INVALID_MEMORY));
    }
    format(f.format.as_deref())?;
    annotations(&f.annotations)?;
    no_invoke_token(&f.annotations)?;
    config(&f.config)
}

/// A whole trigger, in Fn's order: app id, name, fn id, type, source,
/// annotations.
pub fn trigger(t: &Trigger) -> Result<(), Error> {
    if t.app_id.is_empty() {
        return Err(bad(msg::TRIGGER_MISSING_APP_ID));
    }
    trigger_name(&t.name)?;
    if t.fn_id.is_empty() {
        return Err(bad(msg::TRIGGER_MISSING_FN_ID));
    }
    if t.kind != TRIGGER_TYPE_HTTP {
        return Err(bad(msg::TRIGGER_TYPE_UNKNOWN));
    }
    trigger_source(&t.source)?;
    annotations(&t.annotations)?;
    no_invoke_token(&t.annotations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(app_name("héllo_1-ü").is_ok());
        assert!(app_name("١٢٣").is_ok());
        assert_eq!(app_name("a b").unwrap_err().message, msg::APP_INVALID_NAME);
        assert_eq!(app_name("").unwrap_err().message, msg::MISSING_NAME);
        assert_eq!(
            app_name(&"a".repeat(256)).unwrap_err().message,
            msg::APP_NAME_TOO_LONG
        );
        assert!(app_name(&"a".repeat(255)).is_ok());
        assert!(fn_name("a.b~c$d&e+f:g=h@i").is_ok());
        for bad in ["a/b", "a b", "a;b", "a,b", "a?b", "é", "a%b", ".", ".."] {
            assert_eq!(
                fn_name(bad).unwrap_err().message,
                msg::FN_INVALID_NAME,
                "{bad}"
            );
        }
    }

    #[test]
    fn config_entries() {
        let c = |k: &str, v: &str| config(&Config::from([(k.to_owned(), v.to_owned())]));
        assert!(c("K", "a=b c").is_ok());
        for k in ["", "A=B", "=", "K\0"] {
            assert_eq!(c(k, "v").unwrap_err().message, msg::CONFIG_KEY, "{k:?}");
        }
        assert_eq!(c("K", "a\0").unwrap_err().message, msg::CONFIG_VALUE);
    }

    #[test]
    fn tokens() {
        assert!(is_valid_token("a"));
        assert!(is_valid_token(&"~".repeat(MAX_TOKEN_BYTES)));
        for bad in ["", "a b", "a\tb", "é", "a\n"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
        assert!(!is_valid_token(&"a".repeat(MAX_TOKEN_BYTES + 1)));
    }

    #[test]
    fn trigger_sources() {
        for ok in ["/", "/a/b", "/a b", "/é", "/a.b~c"] {
            assert!(trigger_source(ok).is_ok(), "{ok}");
        }
        for bad in ["/a?b", "/a#", "/a%2Fb", "/%", "/a\0", "/a\r\n", "/\u{7f}"] {
            assert_eq!(
                trigger_source(bad).unwrap_err().message,
                msg::TRIGGER_INVALID_SOURCE,
                "{bad:?}"
            );
        }
        assert_eq!(
            trigger_source("a").unwrap_err().message,
            msg::TRIGGER_MISSING_SOURCE_PREFIX
        );
    }

    #[test]
    fn syslog() {
        for ok in [
            "tcp://h:1",
            "udp://h",
            "unix:///x",
            "unixgram:///x",
            "tcp+tls://h:1",
            "TCP://h",
        ] {
            assert!(syslog_url(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            syslog_url("http://h").unwrap_err().message,
            "invalid syslog url: \"http://h\" invalid scheme, only [tcp, udp, unix, unixgram, tcp+tls] are supported"
        );
        assert_eq!(
            syslog_url("://h").unwrap_err().message,
            "invalid syslog url: \"://h\" parse \"://h\": missing protocol scheme"
        );
        assert_eq!(
            syslog_url("tcp://h:x").unwrap_err().message,
            "invalid syslog url: \"tcp://h:x\" parse \"tcp://h:x\": invalid port \":x\" after host"
        );
    }

    #[test]
    fn annotation_rules() {
        use serde_json::json;
        assert!(annotation("a/b", &json!(1)).is_ok());
        assert_eq!(
            annotation("a b", &json!(1)).unwrap_err().message,
            msg::ANNOTATION_KEY
        );
        assert_eq!(
            annotation("", &json!(1)).unwrap_err().message,
            msg::ANNOTATION_KEY
        );
        assert_eq!(
            annotation(&"k".repeat(129), &json!(1)).unwrap_err().message,
            msg::ANNOTATION_KEY_LENGTH
        );
        assert_eq!(
            annotation("k", &json!("")).unwrap_err().message,
            msg::ANNOTATION_VALUE
        );
        assert_eq!(
            annotation("k", &json!(null)).unwrap_err().message,
            msg::ANNOTATION_VALUE
        );
        assert_eq!(
            annotation("k", &json!("x".repeat(511)))
                .unwrap_err()
                .message,
            msg::ANNOTATION_VALUE_LENGTH
        );
        assert!(annotation("k", &json!("x".repeat(510))).is_ok());
    }
}
