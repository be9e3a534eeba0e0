//! Misbehaving http-stream functions: every one ends in Fn's status, never a
//! panic or a hung call, and the instance is ended where Fn would end it.

use std::time::Duration;

use fnrs_protocol::{HttpStreamConn, Limits, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::common::*;

/// Read one request head (up to the blank line) and its small body.
async fn read_request(s: &mut UnixStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).await.unwrap_or(0);
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            // Our test bodies are small and sent with the head or right after.
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            if head.contains("content-length: 0")
                || head.contains("transfer-encoding: chunked") && buf.ends_with(b"0\r\n\r\n")
            {
                return buf;
            }
            if !head.contains("transfer-encoding: chunked") {
                return buf;
            }
        }
    }
}

async fn call_err(server: &RawServer, limits: Limits, timeout: Duration) -> ProtocolError {
    let mut conn = HttpStreamConn::connect(server.path(), limits)
        .await
        .unwrap();
    let req = fnrs_protocol::CallRequest {
        timeout,
        ..json_request("{}", false)
    };
    match tokio::time::timeout(GUARD, conn.call(req))
        .await
        .expect("call hung")
    {
        Ok(h) => panic!("expected an error, got {:?}", h.response.status()),
        Err(e) => e,
    }
}

fn answer(reply: &'static [u8]) -> RawServer {
    RawServer::start(move |mut s| async move {
        read_request(&mut s).await;
        let _ = s.write_all(reply).await;
        let _ = s.shutdown().await;
    })
}

#[tokio::test]
async fn garbage_instead_of_http() {
    let s = answer(b"this is not HTTP at all\r\n\r\n");
    let e = call_err(&s, Limits::default(), Duration::from_secs(10)).await;
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "error receiving function response")
    );
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn truncated_head() {
    let s = answer(b"HTTP/1.1 200 OK\r\nContent-Ty");
    let e = call_err(&s, Limits::default(), Duration::from_secs(10)).await;
    assert_eq!(e.error.status, 502);
    assert_eq!(e.error.message, "error receiving function response");
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn truncated_body_ends_the_instance() {
    let s = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    let h = conn.call(json_request("{}", false)).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("error receiving function response"), "{err}");
    let o = outcome(h.done).await;
    assert!(!o.instance_ok);
}

#[tokio::test]
async fn exits_mid_chunked_body() {
    let s = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    let h = conn.call(json_request("{}", false)).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("error receiving function response"), "{err}");
    assert!(!outcome(h.done).await.instance_ok);
}

#[tokio::test]
async fn headers_larger_than_the_limit() {
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..40 {
            reply.extend_from_slice(format!("X-Big-{i}: {}\r\n", "v".repeat(100)).as_bytes());
        }
        reply.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        let _ = s.write_all(&reply).await;
    });
    let limits = Limits {
        max_response_header_bytes: 1024,
        ..Limits::default()
    };
    let e = call_err(&s, limits, Duration::from_secs(10)).await;
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "function response header too large")
    );
    assert!(!e.instance_ok);

    // Far beyond the read buffer: hyper's own limit, same answer.
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let mut reply = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
        reply.extend(std::iter::repeat_n(b'h', 3 << 20));
        reply.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        let _ = s.write_all(&reply).await;
    });
    let e = call_err(&s, Limits::default(), Duration::from_secs(10)).await;
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "function response header too large")
    );
}

#[tokio::test]
async fn content_length_over_the_body_limit() {
    let s = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
    let limits = Limits {
        max_response_body_bytes: Some(100),
        ..Limits::default()
    };
    let e = call_err(&s, limits, Duration::from_secs(10)).await;
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "function response body too large")
    );
}

#[tokio::test]
async fn chunked_body_over_the_limit() {
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..100 {
            if s.write_all(b"400\r\n").await.is_err() {
                return;
            }
            if s.write_all(&[b'z'; 1024]).await.is_err() {
                return;
            }
            if s.write_all(b"\r\n").await.is_err() {
                return;
            }
        }
    });
    let limits = Limits {
        max_response_body_bytes: Some(10_000),
        ..Limits::default()
    };
    let mut conn = HttpStreamConn::connect(s.path(), limits).await.unwrap();
    let h = conn.call(json_request("{}", false)).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("function response body too large"), "{err}");
    let o = outcome(h.done).await;
    assert!(!o.instance_ok);
    assert_eq!(
        o.error.unwrap().error.message,
        "function response body too large"
    );
}

#[tokio::test]
async fn trickle_one_byte_a_second_times_out() {
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        for _ in 0..1000 {
            if s.write_all(b".").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    let req = fnrs_protocol::CallRequest {
        timeout: Duration::from_millis(1500),
        ..json_request("{}", false)
    };
    let h = conn.call(req).await.unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("Timed out"), "{err}");
    let o = outcome(h.done).await;
    assert!(!o.instance_ok);
    assert_eq!(o.error.unwrap().error.status, 504);
}

#[tokio::test]
async fn trickling_head_times_out() {
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        for b in b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let e = call_err(&s, Limits::default(), Duration::from_secs(1)).await;
    assert_eq!((e.error.status, &*e.error.message), (504, "Timed out"));
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn accepts_and_never_answers() {
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    });
    let e = call_err(&s, Limits::default(), Duration::from_millis(500)).await;
    assert_eq!((e.error.status, &*e.error.message), (504, "Timed out"));
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn status_rules() {
    for (reply, status, msg, ok) in [
        (
            &b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\nboom"[..],
            502,
            "function failed",
            true,
        ),
        (
            b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n",
            504,
            "Timed out",
            true,
        ),
        (
            b"HTTP/1.1 418 Teapot\r\nContent-Length: 0\r\n\r\n",
            502,
            "invalid function response",
            false,
        ),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            502,
            "invalid function response",
            false,
        ),
        (
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            502,
            "invalid function response",
            false,
        ),
    ] {
        let s = answer(reply);
        let e = call_err(&s, Limits::default(), Duration::from_secs(10)).await;
        assert_eq!(
            (e.error.status, &*e.error.message, e.instance_ok),
            (status, msg, ok)
        );
    }
}

#[tokio::test]
async fn stale_keep_alive_connection_is_redialled() {
    // Answers one request per connection with keep-alive, then hangs up,
    // like an FDK closing an idle connection.
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = s.shutdown().await;
    });
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    for _ in 0..5 {
        let h = conn
            .call(json_request("{}", false))
            .await
            .expect("a stale connection must not fail a call");
        let (parts, body, o) = text(h).await;
        assert_eq!(
            (parts.status.as_u16(), body.as_str(), o.instance_ok),
            (200, "ok", true)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn socket_validation() {
    // A symlink out of the iofs directory.
    let outside = RawServer::start(|_s| async {});
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("phonylsnr.sock"),
        dir.path().join("lsnr.sock"),
    )
    .unwrap();
    let e = HttpStreamConn::connect(dir.path(), Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.error.status, 502);
    assert!(
        e.error
            .message
            .starts_with("Container failed to initialize")
    );

    // A relative path that leaves the directory.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("../elsewhere/phonylsnr.sock", dir.path().join("lsnr.sock"))
        .unwrap();
    assert!(
        HttpStreamConn::connect(dir.path(), Limits::default())
            .await
            .is_err()
    );

    // A chain: lsnr.sock -> hop -> a socket elsewhere.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("phonylsnr.sock"),
        dir.path().join("hop"),
    )
    .unwrap();
    std::os::unix::fs::symlink("hop", dir.path().join("lsnr.sock")).unwrap();
    assert!(
        HttpStreamConn::connect(dir.path(), Limits::default())
            .await
            .is_err()
    );

    // A regular file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lsnr.sock"), b"x").unwrap();
    assert!(
        HttpStreamConn::connect(dir.path(), Limits::default())
            .await
            .is_err()
    );

    // Nothing there.
    let dir = tempfile::tempdir().unwrap();
    assert!(
        HttpStreamConn::connect(dir.path(), Limits::default())
            .await
            .is_err()
    );

    // A socket nobody listens on any more.
    let dir = tempfile::tempdir().unwrap();
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("phonylsnr.sock")).unwrap());
    std::os::unix::fs::symlink("phonylsnr.sock", dir.path().join("lsnr.sock")).unwrap();
    let e = HttpStreamConn::connect(dir.path(), Limits::default())
        .await
        .unwrap_err();
    assert!(
        e.error
            .message
            .starts_with("Container failed to initialize")
    );
}

#[tokio::test]
async fn swapping_the_socket_after_connect_does_not_redirect() {
    // After validation, the function replaces its socket by a symlink to a
    // socket outside; the next dial still goes to the validated inode.
    let outside = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nOUTSIDE")
            .await;
    });
    let s = RawServer::start(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ninside")
            .await;
    });
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    let phony = s.path().join("phonylsnr.sock");
    std::fs::rename(&phony, s.path().join("moved.sock")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("phonylsnr.sock"), &phony).unwrap();
    std::fs::remove_file(s.path().join("lsnr.sock")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("phonylsnr.sock"),
        s.path().join("lsnr.sock"),
    )
    .unwrap();
    for _ in 0..2 {
        let h = conn.call(json_request("{}", false)).await.unwrap();
        let (_, body, _) = text(h).await;
        assert_eq!(body, "inside");
    }
}

/// Answers `ok` on a kept-alive connection, except to a request whose body
/// says `hang`, which it never answers.
fn ok_unless_hang() -> RawServer {
    RawServer::start(|mut s| async move {
        loop {
            let req = read_request(&mut s).await;
            if req.is_empty() {
                return;
            }
            if String::from_utf8_lossy(&req).contains("hang") {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

fn timed(body: &'static str, timeout: Duration) -> fnrs_protocol::CallRequest {
    request(fnrs_protocol::full_body(body), false, timeout)
}

/// Shorter than the first call's timeout below: a call that is only ended by
/// that earlier deadline fails the test instead of passing late.
const SHORT_GUARD: Duration = Duration::from_secs(20);

async fn expect_ok(conn: &mut HttpStreamConn, timeout: Duration) {
    let h = tokio::time::timeout(SHORT_GUARD, conn.call(timed("ok", timeout)))
        .await
        .expect("call hung")
        .expect("call failed");
    let (parts, body, o) = text(h).await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
    assert!(o.instance_ok && o.error.is_none(), "{o:?}");
}

async fn expect_timeout(conn: &mut HttpStreamConn, timeout: Duration) {
    let e = tokio::time::timeout(SHORT_GUARD, conn.call(timed("hang", timeout)))
        .await
        .expect("the call's own deadline did not end it")
        .expect_err("a hanging function answered");
    assert_eq!((e.error.status, &*e.error.message), (504, "Timed out"));
    assert!(!e.instance_ok);
}

#[tokio::test]
async fn every_call_gets_its_own_deadline() {
    let s = ok_unless_hang();
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    // A long deadline first, then a call with a much earlier one: the earlier
    // one ends the hanging call.
    expect_ok(&mut conn, Duration::from_secs(3600)).await;
    expect_timeout(&mut conn, Duration::from_millis(300)).await;
    // Calls back to back, together lasting longer than one timeout: a
    // finished call's deadline does not end a later call.
    for _ in 0..15 {
        expect_ok(&mut conn, Duration::from_millis(200)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Idle past every deadline, then a hanging call still times out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    expect_timeout(&mut conn, Duration::from_millis(300)).await;
    expect_ok(&mut conn, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unread_body_times_out_and_its_connection_closes() {
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let s = RawServer::start(move |mut s| {
        let closed_tx = closed_tx.clone();
        async move {
            read_request(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst bytes")
                .await;
            // The rest never comes; wait for the server to hang up.
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            let _ = closed_tx.send(());
        }
    });
    let mut conn = HttpStreamConn::connect(s.path(), Limits::default())
        .await
        .unwrap();
    let h = conn
        .call(timed("{}", Duration::from_millis(300)))
        .await
        .unwrap();
    // Nobody polls the body: the deadline is enforced all the same.
    let body = h.response.into_body();
    let o = outcome(h.done).await;
    assert!(!o.instance_ok);
    assert_eq!(o.error.unwrap().error.status, 504);
    tokio::time::timeout(GUARD, closed_rx.recv())
        .await
        .expect("the function's connection stayed open")
        .unwrap();
    // A late reader sees the timeout, not a clean end.
    let err = read_all(body).await.unwrap_err();
    assert!(err.contains("Timed out"), "{err}");
}

/// Many instances on a two-thread runtime, calls that answer (long deadlines)
/// and calls that hang (short ones) mixed on each: every answer arrives,
/// every hang times out, and no deadline ends a call it does not belong to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_hold_across_threads_and_instances() {
    let s = ok_unless_hang();
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let path = s.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpStreamConn::connect(&path, Limits::default())
                .await
                .unwrap();
            for j in 0..24u32 {
                if (i + j) % 3 == 0 {
                    expect_timeout(&mut conn, Duration::from_millis(40)).await;
                } else {
                    // Generous, so that a busy test machine does not time
                    // it out; the hanging calls' short deadlines come
                    // between these long ones.
                    expect_ok(&mut conn, Duration::from_secs(5 + u64::from(j % 4))).await;
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(GUARD, t)
            .await
            .expect("a call hung")
            .unwrap();
    }
}
