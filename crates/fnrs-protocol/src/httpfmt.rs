//! The `http` format's wire pieces: the request Fn wrote to a function's
//! stdin (contract §3.2) and an incremental parser of the HTTP/1.1 response the
//! function writes to stdout (Content-Length or chunked framing).

use bytes::{Buf, BytesMut};
use http::{HeaderMap, StatusCode};

use crate::headers::go_canonical_header_key;

/// The head of the request written to stdin for one call: request line with
/// the original path and raw query, `Host`, `User-Agent`, the framing header,
/// then every other header (plus `Fn_call_id`, `Fn_deadline`, `Fn_method`,
/// `Fn_request_url`) sorted by Go-canonical name.
///
/// `body_len` is the exact body length if known (`Some(0)` for none);
/// `None` means the body is sent chunked. Returns the head and whether the
/// body is to be chunked.
pub fn write_request_head(
    method: &http::Method,
    url: &str,
    headers: &HeaderMap,
    body_len: Option<u64>,
    call_id: &str,
    deadline: &str,
) -> (Vec<u8>, bool) {
    let (host, path) = split_url(url);
    let mut out = Vec::with_capacity(256 + headers.len() * 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(host);
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUser-Agent: ");
    match headers.get(http::header::USER_AGENT) {
        Some(ua) => out.extend_from_slice(ua.as_bytes()),
        None => out.extend_from_slice(b"Go-http-client/1.1"),
    }
    out.extend_from_slice(b"\r\n");
    let chunked = match body_len {
        Some(0) if matches!(*method, http::Method::GET | http::Method::HEAD) => false,
        Some(n) => {
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
            false
        }
        None => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            true
        }
    };
    let mut rest: Vec<(String, &[u8])> = Vec::with_capacity(headers.len() + 4);
    for (name, value) in headers {
        if matches!(
            name.as_str(),
            "host" | "user-agent" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        rest.push((go_canonical_header_key(name.as_str()), value.as_bytes()));
    }
    rest.push(("Fn_call_id".into(), call_id.as_bytes()));
    rest.push(("Fn_deadline".into(), deadline.as_bytes()));
    rest.push(("Fn_method".into(), method.as_str().as_bytes()));
    rest.push(("Fn_request_url".into(), url.as_bytes()));
    // Stable: repeated headers keep their order.
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in rest {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (out, chunked)
}

/// Split an absolute URL into host and origin-form path (`/p?q`).
pub(crate) fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map(|i| &url[i + 3..]).unwrap_or(url);
    match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => match after_scheme.find('?') {
            Some(i) => (&after_scheme[..i], "/"),
            None => (after_scheme, "/"),
        },
    }
}

/// Why a function's HTTP answer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("response header too large")]
    HeadTooLarge,
    #[error("response has neither Content-Length nor chunked framing")]
    NoFraming,
    #[error("malformed chunked encoding")]
    BadChunk,
}

/// How the body of a parsed response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Bytes of the head, consumed from the buffer.
    pub head_len: usize,
}

/// Try to parse a response head from the start of `buf`. `Ok(None)` means
/// more bytes are needed; a head longer than `max_head` is an error.
pub fn parse_response_head(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<ResponseHead>, ParseError> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut storage);
    let status = match resp.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadTooLarge),
        Err(e) => return Err(ParseError::Malformed(e.to_string())),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if buf.len() > max_head {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(None);
        }
    };
    if head_len > max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| ParseError::Malformed(format!("invalid status {code}")))?;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ParseError::Malformed(format!("invalid header name {:?}", h.name)))?;
        let value = http::HeaderValue::from_bytes(h.value)
            .map_err(|_| ParseError::Malformed("invalid header value".into()))?;
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ParseError::Malformed("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::Malformed("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(|s| s.trim_ascii())
                .unwrap_or(b"");
            if last.eq_ignore_ascii_case(b"chunked") {
                chunked = true;
            } else {
                return Err(ParseError::Malformed(
                    "unsupported Transfer-Encoding".into(),
                ));
            }
        }
        headers.append(name, value);
    }
    let no_body = status.is_informational() || status == 204 || status == 304;
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if no_body {
        Framing::Length(0)
    } else {
        return Err(ParseError::NoFraming);
    };
    Ok(Some(ResponseHead {
        status,
        headers,
        framing,
        head_len,
    }))
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a size line.
    #[default]
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// Finished.
    Done,
}

/// What one decode step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes.
    Data(bytes::Bytes),
    /// Need more input.
    NeedMore,
    /// The body ended.
    End,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

impl ChunkedDecoder {
    /// Decode from `buf`, consuming what was used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ParseError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Chunk::End),
                ChunkState::Size => {
                    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_LINE {
                            return Err(ParseError::BadChunk);
                        }
                        return Ok(Chunk::NeedMore);
                    };
                    let line = &buf[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let size_part = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii();
                    if size_part.is_empty() || size_part.len() > 16 {
                        return Err(ParseError::BadChunk);
                    }
                    let s = std::str::from_utf8(size_part).map_err(|_| ParseError::BadChunk)?;
                    let n = u64::from_str_radix(s, 16).map_err(|_| ParseError::BadChunk)?;
                    buf.advance(nl + 1);
                    self.state = if n == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(n)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let take = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Chunk::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r' && b != b'\n') {
                            return Err(ParseError::BadChunk);
                        }
                        if buf.first() == Some(&b'\n') {
                            buf.advance(1);
                            self.state = ChunkState::Size;
                            continue;
                        }
                        return Ok(Chunk::NeedMore);
                    }
                    if &buf[..2] == b"\r\n" {
                        buf.advance(2);
                    } else if buf[0] == b'\n' {
                        buf.advance(1);
                    } else {
                        return Err(ParseError::BadChunk);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_LINE {
                            return Err(ParseError::BadChunk);
                        }
                        return Ok(Chunk::NeedMore);
                    };
                    let empty = nl == 0 || (nl == 1 && buf[0] == b'\r');
                    buf.advance(nl + 1);
                    if empty {
                        self.state = ChunkState::Done;
                        return Ok(Chunk::End);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_like_seed_server() {
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
        let url = "http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b";
        let (head, chunked) = write_request_head(
            &http::Method::POST,
            url,
            &h,
            Some(23),
            "01M8A8FBMJFW00008ZJ000000Y",
            "2026-11-25T21:06:16.294Z",
        );
        assert!(!chunked);
        let expected = "POST /invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: curl/7.88.1\r\n\
Content-Length: 23\r\n\
Accept: */*\r\n\
Content-Type: application/json\r\n\
Fn_call_id: 01M8A8FBMJFW00008ZJ000000Y\r\n\
Fn_deadline: 2026-11-25T21:06:16.294Z\r\n\
Fn_method: POST\r\n\
Fn_request_url: http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b\r\n\
X-Custom-Header: Custom Value\r\n\
X-Lower-Case: lc1\r\n\
X-Multi: a\r\n\
X-Multi: b\r\n\
\r\n";
        assert_eq!(String::from_utf8(head).unwrap(), expected);
        let (get, chunked) = write_request_head(
            &http::Method::GET,
            url,
            &HeaderMap::new(),
            Some(0),
            "c",
            "d",
        );
        assert!(!chunked);
        let get = String::from_utf8(get).unwrap();
        assert!(get.contains("User-Agent: Go-http-client/1.1\r\n"), "{get}");
        assert!(!get.contains("Content-Length"));
        let (_, chunked) =
            write_request_head(&http::Method::POST, url, &HeaderMap::new(), None, "c", "d");
        assert!(chunked);
    }

    #[test]
    fn parses_heads() {
        let r = parse_response_head(
            b"HTTP/1.1 418 Teapot\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc",
            1024,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 418);
        assert_eq!(r.framing, Framing::Length(3));
        assert_eq!(r.head_len, 50);
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nX-A", 1024)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", 1024).unwrap_err(),
            ParseError::NoFraming
        );
        assert!(matches!(
            parse_response_head(b"garbage\r\n\r\n", 1024),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_response_head(&[b'a'; 100], 10),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nX-A: 1111111111", 10).unwrap_err(),
            ParseError::HeadTooLarge
        );
    }

    #[test]
    fn decodes_chunks_split_anywhere() {
        let wire = b"3\r\nabc\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = ChunkedDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut fed = 0;
            let mut ended = false;
            for _ in 0..100 {
                match d.decode(&mut buf).unwrap() {
                    Chunk::Data(b) => out.extend_from_slice(&b),
                    Chunk::End => {
                        ended = true;
                        break;
                    }
                    Chunk::NeedMore => {
                        let next = if fed < split { split } else { wire.len() };
                        assert!(next > fed, "stuck at {fed}");
                        buf.extend_from_slice(&wire[fed..next]);
                        fed = next;
                    }
                }
            }
            assert!(ended);
            assert_eq!(out, b"abchello");
        }
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err(), ParseError::BadChunk);
    }
}
