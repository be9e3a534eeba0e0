//! The `default` format (cold): one process per call, the body on stdin, the
//! response on stdout, the outcome from the exit code (contract §3.1).

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::headers::{go_canonical_header_key, sniff_content_type, strip_hop_by_hop};
use crate::{BoxBody, CallRequest, ErrorKind, Limits, ProtocolError, errors, full_body};

/// The per-call environment of a cold process (the agent adds the app and fn
/// config and the other `FN_*` variables): `FN_CALL_ID`, `FN_DEADLINE` (RFC
/// 3339 with milliseconds), `FN_METHOD`, `FN_REQUEST_URL` and
/// `FN_HEADER_<Go-canonical name>` with repeated values joined by `, ` (no
/// `Host`, no hop-by-hop headers).
pub fn cold_env(req: &CallRequest) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(4 + req.headers.keys_len());
    env.push(("FN_CALL_ID".to_owned(), req.call_id.clone()));
    env.push(("FN_DEADLINE".to_owned(), req.deadline.to_string()));
    env.push(("FN_METHOD".to_owned(), req.method.as_str().to_owned()));
    env.push(("FN_REQUEST_URL".to_owned(), req.url.clone()));
    let mut headers = req.headers.clone();
    strip_hop_by_hop(&mut headers);
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        if name == header::HOST {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(go_canonical_header_key(name.as_str()))
            .and_modify(|s| {
                s.push_str(", ");
                s.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    for (k, v) in joined {
        // An environment entry cannot hold a NUL byte.
        if !v.contains('\0') {
            env.push((format!("FN_HEADER_{k}"), v));
        }
    }
    env
}

/// One cold exchange: stream the body to `stdin` and close it, read `stdout`
/// to its end (at most the body limit, or [`crate::BUFFERED_REPLY_CAP`]),
/// then wait for `exit` (`(code, oom_killed)`); all bounded by `req.timeout`.
///
/// The output is held until the exit code is known, since a non-zero exit
/// turns it into an error. Exit 0 → 200 with stdout (Content-Type sniffed);
/// exit 137 or an OOM kill → 502 with Fn's out-of-memory message; other →
/// 502 `container exit code N`. On any error the agent must make sure the
/// process is gone (it may still run after a timeout or an oversized output).
pub async fn cold_call<W, R, E>(
    mut stdin: W,
    mut stdout: R,
    exit: E,
    req: CallRequest,
    limits: Limits,
) -> Result<Response<BoxBody>, ProtocolError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    E: Future<Output = (i32, bool)>,
{
    let deadline = Instant::now() + req.timeout;
    let cap = limits.buffered_cap();
    let mut body = req.body;
    let write = async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                // The client's body failed: the function sees it cut short.
                break;
            };
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                // The function does not read its input (or exited): fine.
                break;
            }
        }
        let _ = stdin.shutdown().await;
        drop(stdin);
    };
    let read = async {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match stdout.read(&mut chunk).await {
                Ok(0) => return Ok(out),
                Ok(n) => {
                    if (out.len() + n) as u64 > cap {
                        return Err(ProtocolError::new(
                            errors::BODY_TOO_LARGE,
                            ErrorKind::BadResponse,
                            false,
                        ));
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(ProtocolError::receive(e)),
            }
        }
    };
    let work = async {
        let ((), out) = tokio::join!(write, read);
        let out = out?;
        let (code, oom) = exit.await;
        Ok::<_, ProtocolError>((code, oom, out))
    };
    let (code, oom, out) = tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(ProtocolError::timeout()))?;
    if oom || code == 137 {
        return Err(ProtocolError::new(
            errors::OUT_OF_MEMORY,
            ErrorKind::FunctionFailed,
            false,
        ));
    }
    if code != 0 {
        return Err(ProtocolError::new(
            fnrs_model::Error::with_message(502, format!("container exit code {code}")),
            ErrorKind::FunctionFailed,
            false,
        ));
    }
    let ct = sniff_content_type(&out);
    let mut resp = Response::new(full_body(Bytes::from(out)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(body: &'static [u8]) -> CallRequest {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "localhost:8080".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-lower-case", "lc1".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        CallRequest {
            call_id: "01CALL".into(),
            deadline: fnrs_model::DateTime::from_millis(1_764_104_752_077),
            timeout: Duration::from_secs(5),
            method: http::Method::POST,
            url: "http://localhost:8080/invoke/F?q=1&x=a%20b".into(),
            headers,
            gateway: false,
            body: full_body(body),
        }
    }

    #[test]
    fn env_like_seed_server() {
        let env = cold_env(&req(b""));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("FN_CALL_ID"), Some("01CALL"));
        assert_eq!(get("FN_DEADLINE"), Some("2025-11-25T21:05:52.077Z"));
        assert_eq!(get("FN_METHOD"), Some("POST"));
        assert_eq!(
            get("FN_REQUEST_URL"),
            Some("http://localhost:8080/invoke/F?q=1&x=a%20b")
        );
        assert_eq!(get("FN_HEADER_Content-Type"), Some("application/json"));
        assert_eq!(get("FN_HEADER_X-Lower-Case"), Some("lc1"));
        assert_eq!(get("FN_HEADER_X-Multi"), Some("a, b"));
        assert_eq!(get("FN_HEADER_Host"), None);
    }

    #[tokio::test]
    async fn exit_codes() {
        // A fake process: echoes stdin to stdout through a duplex pipe.
        async fn run(
            code: i32,
            oom: bool,
            out: &'static [u8],
        ) -> Result<Response<BoxBody>, ProtocolError> {
            let (stdin_w, _stdin_r) = tokio::io::duplex(1024);
            let stdout = out;
            cold_call(
                stdin_w,
                stdout,
                async move { (code, oom) },
                req(b"in"),
                Limits::default(),
            )
            .await
        }
        let ok = run(0, false, b"{\"a\":1}").await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(
            ok.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        let e = run(3, false, b"partial").await.unwrap_err();
        assert_eq!(e.error.status, 502);
        assert_eq!(e.error.message, "container exit code 3");
        let e = run(137, false, b"").await.unwrap_err();
        assert!(e.error.message.starts_with("container out of memory"));
        let e = run(1, true, b"").await.unwrap_err();
        assert!(e.error.message.starts_with("container out of memory"));
        let empty = run(0, false, b"").await.unwrap();
        assert_eq!(empty.headers()["content-type"], "text/plain; charset=utf-8");
    }
}
