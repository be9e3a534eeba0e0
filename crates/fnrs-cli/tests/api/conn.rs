//! Connections: slow and silent clients are closed, the number of
//! connections is bounded, kept-alive connections keep working.

use std::net::SocketAddr;
use std::time::Duration;

use fnrs_testkit::server::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const GET_VERSION: &[u8] = b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n";
const VERSION_BODY: &str = r#"{"version":"0.3.753"}"#;

async fn server(header: &str, idle: &str, extra: &[(&str, &str)]) -> Srv {
    let mut opts = ServerOptions::default()
        .env("FN_REQUEST_HEADER_READ_TIMEOUT", header)
        .env("FN_HTTP_IDLE_TIMEOUT", idle);
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    Srv::start_with(Backend::Sqlite, opts).await
}

/// Reads until the server closes the connection (EOF or reset), at most 10 s;
/// returns what arrived. Panics if the connection is still open then.
async fn until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the server closes the connection within 10 s");
    out
}

/// Reads one answer to `GET /version` (its body ends the answer).
async fn read_version_answer(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_one = async {
        while !String::from_utf8_lossy(&out).ends_with(VERSION_BODY) {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_one)
        .await
        .expect("an answer within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection that has been served once (so the server counts it).
async fn served_connection(addr: SocketAddr) -> Option<TcpStream> {
    let mut c = TcpStream::connect(addr).await.ok()?;
    c.write_all(GET_VERSION).await.ok()?;
    let a = read_version_answer(&mut c).await;
    a.starts_with("HTTP/1.1 200 ").then_some(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_is_closed_after_the_header_timeout() {
    let s = server("300ms", "60s", &[]).await;
    let mut c = TcpStream::connect(s.server.addr()).await.unwrap();
    c.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut c).await, b"", "closed without an answer");
    // The same on a kept-alive connection, after one request was served.
    let mut c = served_connection(s.server.addr()).await.expect("served");
    c.write_all(b"GET /version HTTP/1.1\r\n").await.unwrap();
    assert_eq!(until_closed(&mut c).await, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_new_connection_is_closed_after_the_header_timeout() {
    let s = server("300ms", "60s", &[]).await;
    let mut c = TcpStream::connect(s.server.addr()).await.unwrap();
    assert_eq!(until_closed(&mut c).await, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let s = server("60s", "300ms", &[]).await;
    let mut c = served_connection(s.server.addr()).await.expect("served");
    assert_eq!(until_closed(&mut c).await, b"");
}

/// The header timeout counts from the first byte of a request: waiting
/// longer than it between requests is the idle timeout's business.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_may_idle_longer_than_the_header_timeout() {
    let s = server("200ms", "60s", &[]).await;
    let mut c = served_connection(s.server.addr()).await.expect("served");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..3 {
        c.write_all(GET_VERSION).await.unwrap();
        let a = read_version_answer(&mut c).await;
        assert!(a.starts_with("HTTP/1.1 200 "), "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_until_one_closes() {
    let s = server("60s", "60s", &[("FN_MAX_CONNECTIONS", "2")]).await;
    let addr = s.server.addr();
    // The start-up probe's connection may take a moment to be let go.
    let mut held = Vec::new();
    for _ in 0..100 {
        if held.len() == 2 {
            break;
        }
        match served_connection(addr).await {
            Some(c) => held.push(c),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(held.len(), 2, "two connections are served");
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = String::from_utf8(until_closed(&mut third).await).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 15"),
        "{head}"
    );
    assert_eq!(body, "{\"message\":\"Too many connections\"}\n");
    // The held ones still work; once one closes, a new one is served.
    let mut first = held.remove(0);
    first.write_all(GET_VERSION).await.unwrap();
    assert!(
        read_version_answer(&mut first)
            .await
            .starts_with("HTTP/1.1 200 ")
    );
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        again = served_connection(addr).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "served again once a connection closed");
}
