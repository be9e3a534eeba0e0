//! Clients whose upload fails: over `FN_MAX_REQUEST_SIZE` in mid-stream, or
//! broken off. They get 413 or 400, and the hot instance goes on serving.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

use crate::common::{FnDir, Srv, py_fn};

/// Answers its pid and the size of what it read.
fn pid_fn() -> FnDir {
    py_fn(
        r#"    n = len(data.getvalue())
    return response.Response(ctx, response_data=f"{os.getpid()} {n}")"#,
    )
}

/// The pid the function answers with, checking the call read `len` bytes.
async fn pid_of_call(s: &Srv, f: &str, body: &str) -> String {
    let a = s.invoke(f, body).await;
    assert_eq!(a.status, 200, "{a:?}");
    let (pid, n) = a.body.split_once(' ').expect("pid and size");
    assert_eq!(n, body.len().to_string(), "{a:?}");
    pid.to_string()
}

/// A raw request: the head, then `sent` bytes of a body announced with
/// `head`'s framing; the write side closed; what the server answers.
fn raw_upload(addr: &str, head: &str, sent: &[u8]) -> String {
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(sent).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_is_413_or_400_and_the_instance_goes_on() {
    let s = Srv::start_with(&[("FN_MAX_REQUEST_SIZE", "1000")]).await;
    let d = pid_fn();
    let f = s.func("upload", &d.image(), json!({})).await;
    let pid = pid_of_call(&s, &f, "warm").await;
    let addr = s.url("").trim_start_matches("http://").to_string();
    let path = format!("/invoke/{f}");

    // Chunked, no length: the limit is only seen in mid-stream.
    let chunk = "x".repeat(600);
    let over = format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let answer = {
        let (addr, head) = (addr.clone(), head.clone());
        tokio::task::spawn_blocking(move || raw_upload(&addr, &head, over.as_bytes()))
            .await
            .unwrap()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("Request content too large"), "{answer}");
    assert_eq!(
        pid_of_call(&s, &f, "after 413").await,
        pid,
        "the same instance"
    );

    // A body that breaks off: 10 of 500 announced bytes, then EOF.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\nConnection: close\r\n\r\n"
    );
    let answer = tokio::task::spawn_blocking(move || raw_upload(&addr, &head, b"0123456789"))
        .await
        .unwrap();
    // The client may not be there to read it; when it is, it is a 400.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert_eq!(
        pid_of_call(&s, &f, "after 400").await,
        pid,
        "the same instance"
    );
    assert_eq!(s.instances().await, 1);
}
