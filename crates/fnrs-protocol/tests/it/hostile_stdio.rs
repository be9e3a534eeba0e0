//! Misbehaving stdin/stdout functions (http, json, cloudevent): Fn's status,
//! no panic, no hung call, the instance ended where Fn ends it.

use std::process::Stdio;
use std::time::Duration;

use fnrs_protocol::{CallHandle, Format, Limits, ProtocolError, StdioConn};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::common::*;

/// A fake function on in-memory pipes: `script` gets its stdin and stdout.
fn fake<F, Fut>(format: Format, limits: Limits, script: F) -> StdioConn
where
    F: FnOnce(DuplexStream, DuplexStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (to_fn, fn_stdin) = tokio::io::duplex(64 * 1024);
    let (fn_stdout, from_fn) = tokio::io::duplex(64 * 1024);
    tokio::spawn(script(fn_stdin, fn_stdout));
    StdioConn::new(format, Box::pin(to_fn), Box::pin(from_fn), limits)
}

/// Read until `end` was seen (a request's end for these tiny requests).
async fn read_until(s: &mut DuplexStream, end: &[u8]) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.windows(end.len()).any(|w| w == end) {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
}

async fn call(conn: &mut StdioConn, timeout: Duration) -> Result<CallHandle, ProtocolError> {
    let req = fnrs_protocol::CallRequest {
        timeout,
        ..json_request(r#"{"a":1}"#, false)
    };
    tokio::time::timeout(GUARD, conn.call(req))
        .await
        .expect("call hung")
}

fn http_replying(reply: &'static [u8]) -> StdioConn {
    fake(
        Format::Http,
        Limits::default(),
        move |mut i, mut o| async move {
            read_until(&mut i, b"{\"a\":1}").await;
            let _ = o.write_all(reply).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        },
    )
}

#[tokio::test]
async fn http_garbage() {
    let mut c = http_replying(b"this is no HTTP\r\n\r\n");
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(e.error.status, 502);
    assert!(
        e.error
            .message
            .starts_with("invalid http response from function err: "),
        "{}",
        e.error.message
    );
    assert!(!e.instance_ok);
    // The instance is done for: later calls fail at once, never hang.
    assert!(
        !call(&mut c, Duration::from_secs(10))
            .await
            .unwrap_err()
            .instance_ok
    );

    // Garbage without a blank line, pipe left open: found at once, no wait
    // for the timeout.
    let mut c = http_replying(b"garbage line\n");
    let e = call(&mut c, Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(e.error.status, 502);
    assert!(
        e.error
            .message
            .starts_with("invalid http response from function err: ")
    );
}

#[tokio::test]
async fn http_truncated_and_unframed() {
    let mut c = fake(Format::Http, Limits::default(), |mut i, mut o| async move {
        read_until(&mut i, b"{\"a\":1}").await;
        let _ = o.write_all(b"HTTP/1.1 200 OK\r\nContent-Ty").await;
    });
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert!(
        e.error
            .message
            .starts_with("invalid http response from function err: ")
    );
    assert!(!e.instance_ok);

    let mut c = http_replying(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nbody without framing");
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(e.error.status, 502);
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn http_headers_over_the_limit() {
    let limits = Limits {
        max_response_header_bytes: 512,
        ..Limits::default()
    };
    let mut c = fake(Format::Http, limits, |mut i, mut o| async move {
        read_until(&mut i, b"{\"a\":1}").await;
        let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..20 {
            r.extend_from_slice(format!("X-H{n}: {}\r\n", "v".repeat(60)).as_bytes());
        }
        r.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = o.write_all(&r).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "function response header too large")
    );
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn http_endless_body_times_out_unpolled() {
    let mut c = fake(Format::Http, Limits::default(), |mut i, mut o| async move {
        read_until(&mut i, b"{\"a\":1}").await;
        let _ = o.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n").await;
        loop {
            if o.write_all(b"4\r\nmore\r\n").await.is_err() {
                return;
            }
        }
    });
    let h = call(&mut c, Duration::from_millis(500)).await.unwrap();
    let o = outcome(h.done).await;
    assert_eq!(o.error.unwrap().error.status, 504);
    assert!(!o.instance_ok);
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("Timed out"), "{err}");
}

#[tokio::test]
async fn http_body_over_the_limit() {
    let limits = Limits {
        max_response_body_bytes: Some(100),
        ..Limits::default()
    };
    let mut c = fake(Format::Http, limits, |mut i, mut o| async move {
        read_until(&mut i, b"{\"a\":1}").await;
        let _ = o
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(e.error.message, "function response body too large");

    let mut c = fake(Format::Http, limits, |mut i, mut o| async move {
        read_until(&mut i, b"{\"a\":1}").await;
        let _ = o.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n").await;
        for _ in 0..100 {
            if o.write_all(b"a\r\n0123456789\r\n").await.is_err() {
                return;
            }
        }
        let _ = o.write_all(b"0\r\n\r\n").await;
    });
    let h = call(&mut c, Duration::from_secs(10)).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("function response body too large"), "{err}");
    let o = outcome(h.done).await;
    assert!(!o.instance_ok);
}

#[tokio::test]
async fn http_trickle_times_out() {
    let mut c = fake(Format::Http, Limits::default(), |mut i, mut o| async move {
        read_until(&mut i, b"{\"a\":1}").await;
        let _ = o
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n",
            )
            .await;
        for _ in 0..100 {
            if o.write_all(b".").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let h = call(&mut c, Duration::from_millis(1500)).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("Timed out"), "{err}");
    assert!(!outcome(h.done).await.instance_ok);
}

#[tokio::test]
async fn http_process_exits_mid_body() {
    // A real process that answers half a body and exits.
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"head -c 10 >/dev/null; printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nhalf'; exit 1"#)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut c = StdioConn::new(
        Format::Http,
        Box::pin(child.stdin.take().unwrap()),
        Box::pin(child.stdout.take().unwrap()),
        Limits::default(),
    );
    let h = call(&mut c, Duration::from_secs(10)).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("error receiving function response"), "{err}");
    assert!(!outcome(h.done).await.instance_ok);
}

#[tokio::test]
async fn http_never_answers() {
    let mut c = fake(Format::Http, Limits::default(), |i, o| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop((i, o));
    });
    let e = call(&mut c, Duration::from_millis(300)).await.unwrap_err();
    assert_eq!((e.error.status, &*e.error.message), (504, "Timed out"));
    assert!(!e.instance_ok);
}

fn json_replying(format: Format, reply: &'static [u8]) -> StdioConn {
    fake(format, Limits::default(), move |mut i, mut o| async move {
        read_until(&mut i, b"\n").await;
        let _ = o.write_all(reply).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
}

#[tokio::test]
async fn json_invalid() {
    for reply in [
        &b"not json at all\n"[..],
        b"{\"body\": 12}\n",
        b"{\"body\": \"x\", oops}\n",
        b"[1,2]\n",
    ] {
        let mut c = json_replying(Format::Json, reply);
        let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.error.status, 502);
        assert!(
            e.error
                .message
                .starts_with("invalid json response from function err: "),
            "{}",
            e.error.message
        );
        assert!(!e.instance_ok, "{:?}", String::from_utf8_lossy(reply));
    }
}

#[tokio::test]
async fn json_followed_by_junk_keeps_the_answer_ends_the_instance() {
    let mut c = json_replying(
        Format::Json,
        b"{\"body\":\"kept\",\"protocol\":{\"status_code\":201}} junk\n",
    );
    let h = call(&mut c, Duration::from_secs(10)).await.unwrap();
    let (parts, body, o) = text(h).await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (201, "kept"));
    assert!(!o.instance_ok);
    // Whitespace after the object is fine.
    let mut c = json_replying(Format::Json, b"{\"body\":\"{}\"}\n\n  \n");
    let h = call(&mut c, Duration::from_secs(10)).await.unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(body, "{}");
    assert_eq!(
        parts.headers["content-type"], "application/json; charset=utf-8",
        "sniffed"
    );
}

#[tokio::test]
async fn json_endless_and_truncated() {
    let mut c = fake(Format::Json, Limits::default(), |mut i, mut o| async move {
        read_until(&mut i, b"\n").await;
        let _ = o.write_all(b"{\"body\":\"").await;
        loop {
            if o.write_all(&[b'a'; 4096]).await.is_err() {
                return;
            }
        }
    });
    let limits_hit = call(&mut c, Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(limits_hit.error.status, 502 | 504));
    assert!(!limits_hit.instance_ok);

    let mut c = fake(Format::Json, Limits::default(), |mut i, mut o| async move {
        read_until(&mut i, b"\n").await;
        let _ = o.write_all(b"{\"body\":\"cut").await;
    });
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert!(
        e.error
            .message
            .starts_with("invalid json response from function err: ")
    );
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn json_body_over_the_limit() {
    let limits = Limits {
        max_response_body_bytes: Some(4),
        ..Limits::default()
    };
    let mut c = fake(Format::Json, limits, |mut i, mut o| async move {
        read_until(&mut i, b"\n").await;
        let _ = o.write_all(b"{\"body\":\"too long\"}\n").await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(e.error.message, "function response body too large");
}

#[tokio::test]
async fn cloudevent_missing_or_bad_fields() {
    for (reply, want) in [
        (&b"{\"data\":\"x\"}\n"[..], "Unknown content type"),
        (b"{\"contentType\":\"text/plain\",\"data\":5}\n", "not a string"),
        (b"{\"contentType\":\"application/json\",\"extensions\":{\"protocol\":{\"status_code\":\"x\"}}}\n", "status_code"),
        (b"{\"contentType\":\"application/json\",\"extensions\":{\"protocol\":{\"headers\":{\"A\":\"b\"}}}}\n", "protocol headers"),
        (b"{\"contentType\":\"application/json\",\"eventTime\":\"yesterday\"}\n", "eventTime"),
        (b"{\"contentType\":\"application/json\",\"extensions\":\"no\"}\n", "extensions"),
    ] {
        let mut c = json_replying(Format::CloudEvent, reply);
        let e = call(&mut c, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.error.status, 502);
        assert!(e.error.message.contains(want), "{} lacks {want}", e.error.message);
    }
    // A good reply on the same shape of fake works.
    let mut c = json_replying(
        Format::CloudEvent,
        b"{\"contentType\":\"application/json\",\"data\":{\"b\":2,\"a\":1}}\n",
    );
    let h = call(&mut c, Duration::from_secs(10)).await.unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(body, r#"{"a":1,"b":2}"#);
}

async fn cold(
    script: &str,
    limits: Limits,
    timeout: Duration,
) -> Result<http::Response<fnrs_protocol::BoxBody>, ProtocolError> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let exit = async move {
        let s = child.wait().await.unwrap();
        (s.code().unwrap_or(137), false)
    };
    let req = fnrs_protocol::CallRequest {
        timeout,
        ..json_request("{}", false)
    };
    tokio::time::timeout(
        GUARD,
        fnrs_protocol::cold_call(stdin, stdout, exit, req, limits),
    )
    .await
    .expect("cold call hung")
}

#[tokio::test]
async fn cold_never_ends_times_out() {
    // `exec`: the process killed on drop is the sleeper itself (a forked
    // `sleep` would outlive the test holding its stderr; the drivers kill a
    // whole cgroup or container, this test only its child).
    let e = cold(
        "exec sleep 30",
        Limits::default(),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!((e.error.status, &*e.error.message), (504, "Timed out"));
}

#[tokio::test]
async fn cold_output_over_the_limit() {
    let limits = Limits {
        max_response_body_bytes: Some(1000),
        ..Limits::default()
    };
    let e = cold("yes", limits, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "function response body too large")
    );
}

#[tokio::test]
async fn cold_killed_by_signal_is_out_of_memory() {
    let e = cold(
        "printf partial; kill -9 $$",
        Limits::default(),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(e.error.status, 502);
    assert!(
        e.error.message.starts_with("container out of memory"),
        "{}",
        e.error.message
    );
}

#[tokio::test]
async fn cold_ignores_its_input() {
    // Exits without reading a large body: still a clean 200.
    let req_body = "x".repeat(1 << 20);
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("printf done")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let exit = async move { (child.wait().await.unwrap().code().unwrap_or(137), false) };
    let req = fnrs_protocol::CallRequest {
        body: fnrs_protocol::full_body(req_body),
        ..json_request("", false)
    };
    let resp = tokio::time::timeout(
        GUARD,
        fnrs_protocol::cold_call(stdin, stdout, exit, req, Limits::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(read_all(resp.into_body()).await.unwrap(), "done");
}
