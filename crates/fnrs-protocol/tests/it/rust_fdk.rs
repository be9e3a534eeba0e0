//! http-stream against the Rust FDK served in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnrs_fdk::{Context, Incoming, Response};
use fnrs_protocol::{BoxBody, HttpStreamConn, Limits, full_body};
use http_body_util::BodyExt;

use crate::common::*;

struct Fdk {
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    produced: Arc<AtomicU64>,
}

impl Drop for Fdk {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn handler(
    ctx: Context,
    body: Incoming,
    produced: Arc<AtomicU64>,
) -> Result<Response, fnrs_fdk::BoxError> {
    let mode = ctx
        .http_headers()
        .get("x-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("echo")
        .to_owned();
    match mode.as_str() {
        "fail" => Err("user asked for failure".into()),
        "status" => Ok(Response::text("moved")
            .status(404)
            .header("location", "/elsewhere")),
        "echo-stream" => {
            // Echo each request chunk as it arrives.
            let stream = futures::stream::unfold(body, |mut b| async move {
                loop {
                    match b.frame().await? {
                        Ok(f) => {
                            if let Ok(d) = f.into_data() {
                                return Some((Ok::<_, fnrs_fdk::BoxError>(d), b));
                            }
                        }
                        Err(e) => return Some((Err(e.into()), b)),
                    }
                }
            });
            Ok(Response::stream(stream))
        }
        "endless" => {
            let stream = futures::stream::unfold(produced, |p| async move {
                p.fetch_add(65536, Ordering::SeqCst);
                Some((
                    Ok::<_, fnrs_fdk::BoxError>(Bytes::from(vec![b'x'; 65536])),
                    p,
                ))
            });
            Ok(Response::stream(stream))
        }
        _ => {
            let input = fnrs_fdk::read_body(body).await?;
            let g = ctx.gateway();
            let reply = serde_json::json!({
                "call_id": ctx.call_id(),
                "deadline": ctx.deadline(),
                "gateway": g.is_some(),
                "method": g.map(|g| g.method.clone()),
                "url": g.map(|g| g.request_url.clone()),
                "x_my_header": ctx.http_headers().get("x-my-header").and_then(|v| v.to_str().ok()),
                "host": ctx.headers().get("host").and_then(|v| v.to_str().ok()),
                "connection": ctx.headers().get("connection").and_then(|v| v.to_str().ok()),
                "input": String::from_utf8_lossy(&input),
            });
            Ok(Response::bytes(reply.to_string())
                .header("content-type", "application/json")
                .header("x-custom", "yes"))
        }
    }
}

async fn start() -> Fdk {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lsnr.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    tokio::spawn(async move {
        fnrs_fdk::serve(
            &sock,
            move |ctx, body| handler(ctx, body, p.clone()),
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    for _ in 0..200 {
        if dir.path().join("lsnr.sock").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let target = std::fs::read_link(dir.path().join("lsnr.sock")).unwrap();
    assert_eq!(
        target.to_str(),
        Some("phonylsnr.sock"),
        "relative symlink to the phony socket"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("phonylsnr.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    Fdk {
        dir,
        stop: Some(tx),
        produced,
    }
}

fn with_mode(mut req: fnrs_protocol::CallRequest, mode: &str) -> fnrs_protocol::CallRequest {
    req.headers.insert("x-mode", mode.parse().unwrap());
    req
}

#[tokio::test]
async fn plain_and_gateway_calls_on_one_connection() {
    let fdk = start().await;
    let mut conn = HttpStreamConn::connect(fdk.dir.path(), Limits::default())
        .await
        .unwrap();

    let h = conn
        .call(json_request(r#"{"name":"Rust"}"#, false))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert_eq!(parts.status, 200);
    assert!(o.instance_ok && o.error.is_none());
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["x-custom"], "yes");
    assert!(
        parts.headers["fn-fdk-version"]
            .to_str()
            .unwrap()
            .starts_with("fdk-rust/")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["call_id"], "01CALLID0000000000000000000");
    assert_eq!(v["gateway"], false);
    assert_eq!(
        v["host"], "localhost",
        "Host is the socket's, not the client's"
    );
    assert_eq!(
        v["connection"],
        serde_json::Value::Null,
        "hop-by-hop headers are not forwarded"
    );
    assert_eq!(v["x_my_header"], "foo");
    assert_eq!(v["input"], r#"{"name":"Rust"}"#);
    let dl = v["deadline"].as_str().unwrap();
    assert!(
        dl.ends_with('Z') && dl.len() == 20,
        "seconds precision: {dl}"
    );

    let h = conn
        .call(json_request(r#"{"name":"Gw"}"#, true))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers["x-custom"], "yes",
        "Fn-Http-H-X-Custom unwrapped"
    );
    assert_eq!(parts.headers["content-type"], "application/json");
    assert!(
        !parts.headers.contains_key("fn-fdk-version"),
        "gateway unwrap drops Fn-* metadata"
    );
    assert!(!parts.headers.contains_key("fn-http-status"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["gateway"], true);
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["url"], "http://localhost:8080/t/myapp/hello?x=1");
    assert_eq!(v["x_my_header"], "foo");

    let h = conn
        .call(with_mode(json_request("{}", true), "status"))
        .await
        .unwrap();
    let (parts, body, _) = text(h).await;
    assert_eq!(parts.status, 404);
    assert_eq!(parts.headers["location"], "/elsewhere");
    assert_eq!(body, "moved");

    // Plain: the status stays 200 (only the gateway carries a user status).
    let h = conn
        .call(with_mode(json_request("{}", false), "status"))
        .await
        .unwrap();
    let (parts, _, _) = text(h).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["location"], "/elsewhere");
}

#[tokio::test]
async fn handler_error_is_function_failed_and_instance_lives() {
    let fdk = start().await;
    let mut conn = HttpStreamConn::connect(fdk.dir.path(), Limits::default())
        .await
        .unwrap();
    let e = conn
        .call(with_mode(json_request("{}", false), "fail"))
        .await
        .unwrap_err();
    assert_eq!(e.error.status, 502);
    assert_eq!(e.error.message, "function failed");
    assert!(e.instance_ok);
    let h = conn.call(json_request("{}", false)).await.unwrap();
    assert_eq!(text(h).await.0.status, 200);
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let fdk = start().await;
    let mut conn = HttpStreamConn::connect(fdk.dir.path(), Limits::default())
        .await
        .unwrap();
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, fnrs_protocol::BoxError>>(1);
    let body: BoxBody = http_body_util::StreamBody::new(tokio_stream_from(rx)).boxed_unsync();
    let req = with_mode(
        fnrs_protocol::CallRequest {
            body,
            ..json_request("", false)
        },
        "echo-stream",
    );
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"ping-1"))))
        .await
        .unwrap();
    let h = tokio::time::timeout(GUARD, conn.call(req))
        .await
        .unwrap()
        .unwrap();
    let mut body = h.response.into_body();
    // Each chunk comes back before the next is sent: nothing waits for the
    // whole request or the whole response.
    for i in 1..=5 {
        let frame = tokio::time::timeout(GUARD, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), format!("ping-{i}").as_bytes());
        if i < 5 {
            tx.send(Ok(http_body::Frame::data(Bytes::from(format!(
                "ping-{}",
                i + 1
            )))))
            .await
            .unwrap();
        }
    }
    drop(tx);
    assert!(read_all(body).await.unwrap().is_empty());
    let o = outcome(h.done).await;
    assert!(o.instance_ok, "{:?}", o.error);
    // The connection is reused.
    let h = conn.call(json_request("{}", false)).await.unwrap();
    assert_eq!(text(h).await.0.status, 200);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn slow_client_holds_back_a_fast_function() {
    let fdk = start().await;
    let mut conn = HttpStreamConn::connect(fdk.dir.path(), Limits::default())
        .await
        .unwrap();
    let h = conn
        .call(with_mode(json_request("", false), "endless"))
        .await
        .unwrap();
    let mut body = h.response.into_body();
    let mut consumed = 0u64;
    for _ in 0..32 {
        let f = tokio::time::timeout(GUARD, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        consumed += f.into_data().map(|d| d.len() as u64).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let produced = fdk.produced.load(Ordering::SeqCst);
    // Only socket buffers and a few chunks may sit between the two.
    assert!(
        produced < consumed + 16 * 1024 * 1024,
        "produced {produced} while the client read {consumed}"
    );
    // The client goes away: done fires, the instance is fine, the next call
    // works on a fresh connection.
    drop(body);
    let o = outcome(h.done).await;
    assert!(o.instance_ok);
    let h = conn.call(json_request("{}", false)).await.unwrap();
    assert_eq!(text(h).await.0.status, 200);
}

#[tokio::test]
async fn endless_body_times_out_even_unpolled() {
    let fdk = start().await;
    let mut conn = HttpStreamConn::connect(fdk.dir.path(), Limits::default())
        .await
        .unwrap();
    let req = fnrs_protocol::CallRequest {
        timeout: Duration::from_millis(500),
        ..with_mode(json_request("", false), "endless")
    };
    let h = conn.call(req).await.unwrap();
    // Nobody polls the body; the timeout still ends the exchange.
    let o = outcome(h.done).await;
    assert!(!o.instance_ok);
    assert_eq!(o.error.unwrap().error.status, 504);
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("Timed out"), "{err}");
}

#[tokio::test]
async fn body_limit_mid_stream() {
    let fdk = start().await;
    let limits = Limits {
        max_response_body_bytes: Some(1 << 20),
        ..Limits::default()
    };
    let mut conn = HttpStreamConn::connect(fdk.dir.path(), limits)
        .await
        .unwrap();
    let h = conn
        .call(with_mode(json_request("", false), "endless"))
        .await
        .unwrap();
    let err = read_all(h.response.into_body()).await.unwrap_err();
    assert!(err.contains("function response body too large"), "{err}");
    let o = outcome(h.done).await;
    assert_eq!(
        o.error.unwrap().error.message,
        "function response body too large"
    );
    let _ = full_body("");
}
