//! The `json` format: Fn's JSON envelope in and out (contract §3.3).

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Deserialize;

use crate::gojson;
use crate::headers::go_canonical_header_key;

/// The request side of the `protocol` object: `{"type":"http","method",
/// "request_url","headers":{K:[v…]}}` with Go-canonical, sorted header keys
/// (no `Host`, no hop-by-hop headers).
pub(crate) fn write_protocol(
    out: &mut Vec<u8>,
    method: &http::Method,
    url: &str,
    headers: &HeaderMap,
) {
    out.extend_from_slice(b"{\"type\":\"http\",\"method\":");
    gojson::write_str(out, method.as_str());
    out.extend_from_slice(b",\"request_url\":");
    gojson::write_str(out, url);
    out.extend_from_slice(b",\"headers\":{");
    let mut map: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    for (name, value) in headers {
        if name == http::header::HOST {
            continue;
        }
        map.entry(go_canonical_header_key(name.as_str()))
            .or_default()
            .push(value.as_bytes());
    }
    for (i, (k, vs)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gojson::write_str(out, k);
        out.extend_from_slice(b":[");
        for (j, v) in vs.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            gojson::write_bytes_as_str(out, v);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
}

/// The first `Content-Type` of a request, or "".
pub(crate) fn content_type(headers: &HeaderMap) -> &[u8] {
    headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .unwrap_or(b"")
}

/// One line of `json` input around a body streamed in between:
/// `{"call_id","deadline","body","content_type","protocol"}` and `\n`,
/// compact, Go-escaped. The first part ends inside the opening quote of
/// `body`, the second starts with its closing quote; the body goes between,
/// escaped by a [`gojson::StrEscaper`].
pub(crate) fn request_envelope(
    call_id: &str,
    deadline: &str,
    method: &http::Method,
    url: &str,
    headers: &HeaderMap,
) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"{\"call_id\":");
    gojson::write_str(&mut head, call_id);
    head.extend_from_slice(b",\"deadline\":");
    gojson::write_str(&mut head, deadline);
    head.extend_from_slice(b",\"body\":\"");
    let mut tail = Vec::with_capacity(512);
    tail.extend_from_slice(b"\",\"content_type\":");
    gojson::write_bytes_as_str(&mut tail, content_type(headers));
    tail.extend_from_slice(b",\"protocol\":");
    write_protocol(&mut tail, method, url, headers);
    tail.extend_from_slice(b"}\n");
    (head, tail)
}

/// The whole line for a body at hand, as it was written before requests
/// streamed: the reference the streamed line must equal.
#[cfg(test)]
pub(crate) fn write_request(
    out: &mut Vec<u8>,
    call_id: &str,
    deadline: &str,
    body: &[u8],
    method: &http::Method,
    url: &str,
    headers: &HeaderMap,
) {
    out.extend_from_slice(b"{\"call_id\":");
    gojson::write_str(out, call_id);
    out.extend_from_slice(b",\"deadline\":");
    gojson::write_str(out, deadline);
    out.extend_from_slice(b",\"body\":");
    gojson::write_bytes_as_str(out, body);
    out.extend_from_slice(b",\"content_type\":");
    gojson::write_bytes_as_str(out, content_type(headers));
    out.extend_from_slice(b",\"protocol\":");
    write_protocol(out, method, url, headers);
    out.extend_from_slice(b"}\n");
}

/// A function's `json` reply.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct JsonReply {
    /// The response body.
    #[serde(default, deserialize_with = "null_as_default")]
    pub body: String,
    /// Overrides `Content-Type` when not empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub content_type: String,
    /// Status and headers.
    #[serde(default)]
    pub protocol: Option<ReplyProtocol>,
}

/// The `protocol` object of a reply.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ReplyProtocol {
    /// 0 or absent = 200.
    #[serde(default, deserialize_with = "null_as_default")]
    pub status_code: i64,
    /// Headers to add.
    #[serde(default, deserialize_with = "null_as_default")]
    pub headers: BTreeMap<String, Vec<String>>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Parse one complete `json` reply object (as delimited by
/// [`JsonScanner`]).
pub fn parse_json_reply(bytes: &[u8]) -> Result<JsonReply, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Finds the end of one top-level JSON object in a stream of bytes fed in
/// pieces, without parsing it (the parse happens once, at the end).
#[derive(Debug, Default, Clone)]
pub struct JsonScanner {
    started: bool,
    depth: u32,
    in_string: bool,
    escape: bool,
    /// Bytes of `buf` already scanned.
    pos: usize,
}

/// What the scanner found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The object spans `buf[start..end]`.
    Complete { start: usize, end: usize },
    /// Need more bytes.
    More,
    /// The first non-space byte does not start an object.
    NotAnObject,
}

impl JsonScanner {
    /// Scan `buf` (which grows between calls; earlier bytes unchanged).
    pub fn scan(&mut self, buf: &[u8]) -> Scan {
        let mut start = None;
        let mut i = self.pos;
        while i < buf.len() {
            let b = buf[i];
            if !self.started {
                if b.is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                if b != b'{' {
                    return Scan::NotAnObject;
                }
                self.started = true;
                self.depth = 1;
                start = Some(i);
                i += 1;
                continue;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.pos = i + 1;
                            let start = start.unwrap_or_else(|| first_non_space(buf));
                            return Scan::Complete { start, end: i + 1 };
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.pos = buf.len();
        Scan::More
    }
}

fn first_non_space(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0)
}

/// Whether anything but whitespace follows a reply (Fn ends the instance
/// then, keeping the answer).
pub(crate) fn has_excess(rest: &[u8]) -> bool {
    !String::from_utf8_lossy(rest)
        .chars()
        .all(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_like_seed_server() {
        let mut h = HeaderMap::new();
        h.insert("host", "localhost:8080".parse().unwrap());
        h.insert("user-agent", "curl/7.88.1".parse().unwrap());
        h.insert("content-length", "23".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-custom-header", "Custom Value".parse().unwrap());
        h.insert("x-lower-case", "lc1".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        let mut out = Vec::new();
        write_request(
            &mut out,
            "01M8A8FQ3HFW00008ZJ000001F",
            "2026-11-25T21:06:28.033Z",
            br#"{"hello":"world","n":1}"#,
            &http::Method::POST,
            "http://localhost:8080/invoke/01M8A8E1Z0FW00008ZJ0000004?q=1&x=a%20b",
            &h,
        );
        let expected = r#"{"call_id":"01M8A8FQ3HFW00008ZJ000001F","deadline":"2026-11-25T21:06:28.033Z","body":"{\"hello\":\"world\",\"n\":1}","content_type":"application/json","protocol":{"type":"http","method":"POST","request_url":"http://localhost:8080/invoke/01M8A8E1Z0FW00008ZJ0000004?q=1\u0026x=a%20b","headers":{"Accept":["*/*"],"Content-Length":["23"],"Content-Type":["application/json"],"User-Agent":["curl/7.88.1"],"X-Custom-Header":["Custom Value"],"X-Lower-Case":["lc1"],"X-Multi":["a","b"]}}}"#;
        assert_eq!(String::from_utf8(out).unwrap(), format!("{expected}\n"));
    }

    /// The streamed line (envelope, body escaped piece by piece) is byte
    /// for byte the whole-body line, for random bodies and cuts.
    #[test]
    fn streamed_request_matches_the_whole_body_line() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/plain; charset=<x>".parse().unwrap());
        h.append("x-multi", "a&b".parse().unwrap());
        h.append("x-multi", "c".parse().unwrap());
        let mut rng = crate::gojson::tests::Rng(0x2545_f491_4f6c_dd1d);
        for case in 0..5_000 {
            let body = rng.body(if case % 10 == 0 { 300 } else { 30 });
            let mut want = Vec::new();
            write_request(
                &mut want,
                "CALL",
                "2026-11-25T21:06:28.033Z",
                &body,
                &http::Method::POST,
                "http://h/invoke/f?a=1&b=<2>",
                &h,
            );
            let (head, tail) = request_envelope(
                "CALL",
                "2026-11-25T21:06:28.033Z",
                &http::Method::POST,
                "http://h/invoke/f?a=1&b=<2>",
                &h,
            );
            let mut got = head;
            let mut esc = gojson::StrEscaper::default();
            for p in rng.cuts(&body) {
                esc.push(&mut got, p);
            }
            esc.finish(&mut got);
            got.extend_from_slice(&tail);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "body {body:?}"
            );
        }
    }

    #[test]
    fn scanner_finds_object_end_across_pieces() {
        let doc = br#"  {"body":"a}\"{","x":[1,{"y":2}]} junk"#;
        for split in 0..doc.len() {
            let mut s = JsonScanner::default();
            let first = s.scan(&doc[..split]);
            let r = if let Scan::Complete { .. } = first {
                first
            } else {
                s.scan(doc)
            };
            assert_eq!(r, Scan::Complete { start: 2, end: 34 }, "split {split}");
        }
        assert_eq!(JsonScanner::default().scan(b" [1]"), Scan::NotAnObject);
        assert!(has_excess(b" junk"));
        assert!(!has_excess(b" \n\t"));
    }

    #[test]
    fn replies() {
        let r = parse_json_reply(br#"{"body":"hi","content_type":"text/plain","protocol":{"status_code":418,"headers":{"X-A":["1","2"]}}}"#).unwrap();
        assert_eq!(r.body, "hi");
        let p = r.protocol.unwrap();
        assert_eq!(p.status_code, 418);
        assert_eq!(p.headers["X-A"], ["1", "2"]);
        let r = parse_json_reply(br#"{"body":"only"}"#).unwrap();
        assert!(r.protocol.is_none() && r.content_type.is_empty());
        assert!(parse_json_reply(br#"{"body":1}"#).is_err());
    }
}
