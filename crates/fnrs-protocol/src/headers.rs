//! Header rules shared by the formats: hop-by-hop stripping, Go's canonical
//! header names, the HTTP gateway wrap/unwrap, content-type sniffing.

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Fn-Intent: httprequest` marks a gateway request.
pub(crate) const FN_INTENT: HeaderName = HeaderName::from_static("fn-intent");
pub(crate) const FN_HTTP_METHOD: HeaderName = HeaderName::from_static("fn-http-method");
pub(crate) const FN_HTTP_REQUEST_URL: HeaderName = HeaderName::from_static("fn-http-request-url");
pub(crate) const FN_HTTP_STATUS: HeaderName = HeaderName::from_static("fn-http-status");
pub(crate) const FN_CALL_ID: HeaderName = HeaderName::from_static(fnrs_model::CALL_ID_HEADER);
pub(crate) const FN_DEADLINE: HeaderName = HeaderName::from_static("fn-deadline");
const GATEWAY_PREFIX: &str = "fn-http-h-";

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers (`Connection` and the headers it names,
/// `Proxy-Connection`, `Keep-Alive`, `Proxy-Authenticate`,
/// `Proxy-Authorization`, `Te` unless it is `trailers`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup
    // per hop-by-hop name.
    if !headers
        .keys()
        .any(|n| n == header::TE || HOP_BY_HOP.contains(n))
    {
        return;
    }
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Go's `CanonicalMIMEHeaderKey`: the first letter and every letter after a
/// `-` upper case, the rest lower case (`x-lower-case` → `X-Lower-Case`,
/// `FN_CALL_ID` → `Fn_call_id`). A name with a byte that is not a token byte is
/// returned unchanged.
pub fn go_canonical_header_key(name: &str) -> String {
    if !name.bytes().all(is_token_byte) {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// Whether the request's media type is `application/cloudevents+json`: the
/// client sent its own CloudEvent (contract §3.4).
pub fn is_cloudevent_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/cloudevents+json")
        })
        .unwrap_or(false)
}

/// The HTTP gateway wrap for trigger calls (contract §2.6): every
/// header `K` becomes `Fn-Http-H-K` except `Content-Type`; adds
/// `Fn-Http-Method`, `Fn-Http-Request-Url` and `Fn-Intent: httprequest`.
/// Hop-by-hop headers must have been stripped already.
pub fn wrap_gateway_request(headers: HeaderMap, method: &http::Method, url: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 5);
    let mut name_buf = String::with_capacity(64);
    let mut current: Option<HeaderName> = None;
    for (name, value) in headers {
        if let Some(name) = name {
            current = Some(if name == header::CONTENT_TYPE {
                name
            } else {
                name_buf.clear();
                name_buf.push_str(GATEWAY_PREFIX);
                name_buf.push_str(name.as_str());
                match HeaderName::from_bytes(name_buf.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        current = None;
                        continue;
                    }
                }
            });
        }
        if let Some(n) = &current {
            out.append(n.clone(), value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(method.as_str()) {
        out.insert(FN_HTTP_METHOD, v);
    }
    if let Ok(v) = HeaderValue::from_str(url) {
        out.insert(FN_HTTP_REQUEST_URL, v);
    }
    out.insert(FN_INTENT, HeaderValue::from_static("httprequest"));
    out
}

/// The HTTP gateway unwrap of a trigger answer (contract §2.6): keep only
/// `Fn-Http-H-X` as `X` (empty `X` dropped), `Content-Type` and `Fn-Call-Id`;
/// the status is `Fn-Http-Status` when it parses as a status code > 0, else 200.
/// `Err` when `Fn-Http-Status` is a number that is no valid HTTP status.
pub fn unwrap_gateway_response(headers: &HeaderMap) -> Result<(StatusCode, HeaderMap), u64> {
    let mut status = StatusCode::OK;
    if let Some(n) = headers
        .get(FN_HTTP_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && n > 0
    {
        status = u16::try_from(n)
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or(n)?;
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let s = name.as_str();
        if let Some(rest) = s.strip_prefix(GATEWAY_PREFIX) {
            if rest.is_empty() {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(rest.as_bytes()) {
                out.append(n, value.clone());
            }
        } else if name == header::CONTENT_TYPE || name == FN_CALL_ID {
            out.append(name.clone(), value.clone());
        }
    }
    strip_hop_by_hop(&mut out);
    out.remove(header::CONTENT_LENGTH);
    Ok((status, out))
}

/// The Content-Type Fn gave an answer without one: `application/json;
/// charset=utf-8` when the body starts with `{`, else sniffed from the first
/// 512 bytes as Go's `http.DetectContentType` does (a subset of the WHATWG
/// rules), `text/plain; charset=utf-8` for an empty body.
pub fn sniff_content_type(body: &[u8]) -> &'static str {
    if body.first() == Some(&b'{') {
        return "application/json; charset=utf-8";
    }
    let data = &body[..body.len().min(512)];
    if data.is_empty() {
        return "text/plain; charset=utf-8";
    }
    let start = data
        .iter()
        .position(|b| !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' '))
        .unwrap_or(data.len());
    let trimmed = &data[start..];
    const HTML: [&[u8]; 17] = [
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    for sig in HTML {
        if trimmed.len() > sig.len()
            && trimmed[..sig.len()].eq_ignore_ascii_case(sig)
            && matches!(trimmed[sig.len()], b' ' | b'>')
        {
            return "text/html; charset=utf-8";
        }
    }
    if trimmed.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    const EXACT: [(&[u8], &str); 14] = [
        (b"%PDF-", "application/pdf"),
        (b"%!PS-Adobe-", "application/postscript"),
        (b"\xFE\xFF", "text/plain; charset=utf-16be"),
        (b"\xFF\xFE", "text/plain; charset=utf-16le"),
        (b"\xEF\xBB\xBF", "text/plain; charset=utf-8"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"BM", "image/bmp"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1F\x8B\x08", "application/x-gzip"),
        (b"\x00asm", "application/wasm"),
        (b"OggS\x00", "application/ogg"),
    ];
    for (sig, ct) in EXACT {
        if data.starts_with(sig) {
            return ct;
        }
    }
    if data.len() >= 14 && &data[..4] == b"RIFF" && &data[8..14] == b"WEBPVP" {
        return "image/webp";
    }
    let binary = data
        .iter()
        .any(|&b| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F));
    if binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Response headers of a plain (non-gateway) http-stream answer: the
/// function's minus hop-by-hop and framing.
pub(crate) fn plain_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys_like_go() {
        assert_eq!(go_canonical_header_key("x-lower-case"), "X-Lower-Case");
        assert_eq!(go_canonical_header_key("FN_CALL_ID"), "Fn_call_id");
        assert_eq!(go_canonical_header_key("content-type"), "Content-Type");
        assert_eq!(go_canonical_header_key("bad key"), "bad key");
    }

    #[test]
    fn hop_by_hop_goes_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "75".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("te") && h.contains_key("x-keep"));
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn gateway_wrap_and_unwrap() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        let w = wrap_gateway_request(h, &http::Method::PUT, "http://h/t/a/b?x=1");
        assert_eq!(w["content-type"], "application/json");
        let multi: Vec<_> = w.get_all("fn-http-h-x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert_eq!(w["fn-http-method"], "PUT");
        assert_eq!(w["fn-http-request-url"], "http://h/t/a/b?x=1");
        assert_eq!(w["fn-intent"], "httprequest");

        let mut r = HeaderMap::new();
        r.insert("content-type", "text/plain".parse().unwrap());
        r.insert("fn-http-h-location", "/x".parse().unwrap());
        r.insert("fn-http-status", "404".parse().unwrap());
        r.insert("fn-fdk-version", "fdk-python/0.1".parse().unwrap());
        r.insert("content-length", "3".parse().unwrap());
        let (s, h) = unwrap_gateway_response(&r).unwrap();
        assert_eq!(s, 404);
        assert_eq!(h.len(), 2);
        assert_eq!(h["location"], "/x");
        r.insert("fn-http-status", "0".parse().unwrap());
        assert_eq!(unwrap_gateway_response(&r).unwrap().0, 200);
        r.insert("fn-http-status", "nope".parse().unwrap());
        assert_eq!(unwrap_gateway_response(&r).unwrap().0, 200);
        r.insert("fn-http-status", "1000".parse().unwrap());
        assert_eq!(unwrap_gateway_response(&r).unwrap_err(), 1000);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff_content_type(b""), "text/plain; charset=utf-8");
        assert_eq!(
            sniff_content_type(b"{\"a\":1}"),
            "application/json; charset=utf-8"
        );
        assert_eq!(sniff_content_type(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(
            sniff_content_type(b"  <html><body>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            sniff_content_type(b"\x00\x01\x02"),
            "application/octet-stream"
        );
        assert_eq!(sniff_content_type(b"\x89PNG\r\n\x1a\n...."), "image/png");
    }
}
