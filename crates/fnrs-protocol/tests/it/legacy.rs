//! The 2018 formats against the example functions, spawned as plain
//! processes with stdin/stdout pipes (contract §3).

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use fnrs_protocol::{
    BoxBody, CallRequest, Format, Limits, StdioConn, cold_call, cold_env, full_body,
};
use http_body_util::BodyExt;
use tokio::process::{Child, Command};

use crate::common::*;

/// The seed-era spy request: `POST …?q=1&x=a%20b` with custom, lower-case and repeated headers.
fn spy_request(body: BoxBody) -> CallRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "localhost:8080".parse().unwrap());
    headers.insert("user-agent", "curl/7.88.1".parse().unwrap());
    headers.insert("accept", "*/*".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("x-custom-header", "Custom Value".parse().unwrap());
    headers.insert("x-lower-case", "lc1".parse().unwrap());
    headers.append("x-multi", "a".parse().unwrap());
    headers.append("x-multi", "b".parse().unwrap());
    if let Some(n) = http_body::Body::size_hint(&body).exact() {
        headers.insert("content-length", n.into());
    }
    CallRequest {
        call_id: "01M8A8FBMJFW00008ZJ000000Y".into(),
        deadline: fnrs_model::DateTime::from_millis(1_764_104_776_294),
        timeout: Duration::from_secs(20),
        method: http::Method::POST,
        url: "http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b".into(),
        headers,
        gateway: false,
        body,
    }
}

fn spawn(example: &str, program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .current_dir(examples().join(example))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("FN_FORMAT", "x")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn example")
}

fn hot(example: &str, format: Format) -> (Child, StdioConn) {
    let mut child = spawn(example, "/usr/bin/python3", &["func.py"]);
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let conn = StdioConn::new(format, Box::pin(stdin), Box::pin(stdout), Limits::default());
    (child, conn)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test]
async fn http_format_request_and_response() {
    let (_child, mut conn) = hot("http-python", Format::Http);
    let h = conn
        .call(spy_request(full_body(r#"{"hello":"world","n":1}"#)))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["x-echo-method"], "POST");
    let v = json(&body);
    assert_eq!(v["method"], "POST");
    assert_eq!(
        v["target"],
        "/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b"
    );
    assert_eq!(
        v["header_order"],
        serde_json::json!([
            "Host",
            "User-Agent",
            "Content-Length",
            "Accept",
            "Content-Type",
            "Fn_call_id",
            "Fn_deadline",
            "Fn_method",
            "Fn_request_url",
            "X-Custom-Header",
            "X-Lower-Case",
            "X-Multi",
            "X-Multi"
        ])
    );
    assert_eq!(v["call_id"], "01M8A8FBMJFW00008ZJ000000Y");
    assert_eq!(v["deadline"], "2025-11-25T21:06:16.294Z");
    assert_eq!(
        v["request_url"],
        "http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b"
    );
    assert_eq!(v["headers"]["x-multi"], serde_json::json!(["a", "b"]));
    assert_eq!(v["body"], r#"{"hello":"world","n":1}"#);

    // The function's own status comes through; the instance is reused.
    let h = conn.call(spy_request(full_body("teapot"))).await.unwrap();
    let (parts, _, o) = text(h).await;
    assert_eq!(parts.status, 418);
    assert!(o.instance_ok);

    // A body of unknown length goes chunked.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, fnrs_protocol::BoxError>>(4);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"part1-"))))
        .await
        .unwrap();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"part2"))))
        .await
        .unwrap();
    drop(tx);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let body: BoxBody = http_body_util::StreamBody::new(stream).boxed_unsync();
    let mut req = spy_request(body);
    req.headers.remove("content-length");
    let h = conn.call(req).await.unwrap();
    let (_, body, _) = text(h).await;
    let v = json(&body);
    assert_eq!(v["body"], "part1-part2");
    assert_eq!(
        v["headers"]["transfer-encoding"],
        serde_json::json!(["chunked"])
    );

    // GET: no body, no Content-Length.
    let mut req = spy_request(full_body(""));
    req.method = http::Method::GET;
    req.headers.remove("content-length");
    let h = conn.call(req).await.unwrap();
    let v = json(&text(h).await.1);
    assert_eq!(v["method"], "GET");
    assert!(v["headers"].get("content-length").is_none());
}

#[tokio::test]
async fn json_format_envelope() {
    let (_child, mut conn) = hot("json-python", Format::Json);
    let h = conn
        .call(spy_request(full_body(r#"{"name":"Json"}"#)))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(
        parts.headers["x-echo-call-id"],
        "01M8A8FBMJFW00008ZJ000000Y"
    );
    let v = json(&body);
    assert_eq!(v["message"], "Hello Json");
    assert_eq!(v["deadline"], "2025-11-25T21:06:16.294Z");
    assert_eq!(v["content_type"], "application/json");
    assert_eq!(v["method"], "POST");
    assert_eq!(
        v["request_url"],
        "http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b"
    );
    assert_eq!(v["headers"]["X-Multi"], serde_json::json!(["a", "b"]));
    assert_eq!(v["headers"]["Content-Length"], serde_json::json!(["15"]));
    assert!(v["headers"].get("Host").is_none());

    let h = conn
        .call(spy_request(full_body(r#"{"name":"teapot"}"#)))
        .await
        .unwrap();
    assert_eq!(text(h).await.0.status, 418);

    let mut req = spy_request(full_body(""));
    req.method = http::Method::GET;
    req.headers.remove("content-type");
    req.headers.remove("content-length");
    let h = conn.call(req).await.unwrap();
    let v = json(&text(h).await.1);
    assert_eq!(v["message"], "Hello World");
    assert_eq!(v["content_type"], "");
}

#[tokio::test]
async fn cloudevent_format() {
    let (_child, mut conn) = hot("cloudevent-python", Format::CloudEvent);
    let h = conn
        .call(spy_request(full_body(r#"{"name":"Ce","n":1.50}"#)))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["x-event-id"], "01M8A8FBMJFW00008ZJ000000Y");
    let v = json(&body);
    assert_eq!(v["message"], "Hello Ce");
    let ev = &v["received"];
    assert_eq!(ev["cloudEventsVersion"], "0.1");
    assert_eq!(ev["eventID"], "01M8A8FBMJFW00008ZJ000000Y");
    assert_eq!(ev["eventType"], "http");
    assert_eq!(ev["eventTime"], "0001-01-01T00:00:00Z");
    assert_eq!(
        ev["source"],
        "http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b"
    );
    assert_eq!(ev["data"], serde_json::json!({"n": 1.5, "name": "Ce"}));
    assert_eq!(ev["extensions"]["deadline"], "2025-11-25T21:06:16.294Z");
    assert_eq!(ev["extensions"]["protocol"]["method"], "POST");
    // Keys come back sorted, compact: Go's re-encoding of `data`.
    assert!(
        body.starts_with(r#"{"message":"Hello Ce","received":{"#),
        "{body}"
    );

    let h = conn
        .call(spy_request(full_body(r#"{"name":"teapot"}"#)))
        .await
        .unwrap();
    assert_eq!(text(h).await.0.status, 418);

    // A body that is not JSON cannot become an event: 400, instance fine.
    let e = conn
        .call(spy_request(full_body("not json")))
        .await
        .unwrap_err();
    assert_eq!(e.error.status, 400);
    assert!(e.instance_ok);

    // The client's own CloudEvent is passed through; the answer is the whole
    // reply event.
    let mut req = spy_request(full_body(
        r#"{"cloudEventsVersion":"0.1","eventID":"CLIENT-1","source":"me","eventType":"ping","contentType":"application/json","data":{"name":"Own"}}"#,
    ));
    req.headers.insert(
        "content-type",
        "application/cloudevents+json".parse().unwrap(),
    );
    let h = conn.call(req).await.unwrap();
    let (parts, body, _) = text(h).await;
    assert_eq!(parts.status, 200);
    let v = json(&body);
    assert_eq!(v["eventID"], "CLIENT-1");
    assert_eq!(v["eventType"], "hello.reply");
    assert_eq!(v["data"]["message"], "Hello Own");
    assert_eq!(v["data"]["received"]["source"], "me");
    assert_eq!(
        v["data"]["received"]["extensions"]["deadline"],
        "2025-11-25T21:06:16.294Z"
    );
}

#[tokio::test]
async fn default_format_cold_process() {
    async fn run(
        body: &'static str,
    ) -> Result<(http::response::Parts, String), fnrs_protocol::ProtocolError> {
        let req = spy_request(full_body(body));
        let env = cold_env(&req);
        let mut child = Command::new("/bin/sh")
            .arg("func.sh")
            .current_dir(examples().join("default-sh"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let exit = async move {
            let s = child.wait().await.unwrap();
            (s.code().unwrap_or(137), false)
        };
        let resp = cold_call(stdin, stdout, exit, req, Limits::default()).await?;
        let (parts, body) = resp.into_parts();
        Ok((
            parts,
            String::from_utf8(read_all(body).await.unwrap().to_vec()).unwrap(),
        ))
    }
    let (parts, body) = run(r#"{"hello":"world","n":1}"#).await.unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "text/plain; charset=utf-8");
    assert!(body.starts_with("Hello from a cold function\n"), "{body}");
    for line in [
        "call_id=01M8A8FBMJFW00008ZJ000000Y",
        "method=POST",
        "request_url=http://localhost:8080/invoke/01M8A8E1YNFW00008ZJ0000003?q=1&x=a%20b",
        "deadline=2025-11-25T21:06:16.294Z",
        "FN_HEADER_Content-Type=application/json",
        "FN_HEADER_X-Custom-Header=Custom Value",
        "FN_HEADER_X-Lower-Case=lc1",
        "FN_HEADER_X-Multi=a, b",
        r#"input={"hello":"world","n":1}"#,
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in {body}"
        );
    }
    assert!(!body.contains("FN_HEADER_Host"));
    let e = run("fail").await.unwrap_err();
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "container exit code 3")
    );
}

/// A hot function (python, real pipes) that answers its first call twice:
/// `together` in one write, `later` once `go` exists (then it says so on
/// stderr). Every later call gets one answer, "fresh". `format` is `http`
/// or `json` (one JSON object a line; cloudevent reads the same).
const TWICE: &str = r#"
import os, sys, time
fmt, mode, go = sys.argv[1], sys.argv[2], sys.argv[3]
inp, out = sys.stdin.buffer, sys.stdout.buffer
def read_request():
    if fmt != "http":
        line = inp.readline()
        if not line:
            sys.exit(0)
        return
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        c = inp.read(1)
        if not c:
            sys.exit(0)
        head += c
    for l in head.split(b"\r\n"):
        if l.lower().startswith(b"content-length:"):
            inp.read(int(l.split(b":")[1]))
def answer(body):
    if fmt == "http":
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if fmt == "json":
        return b'{"body":"%s","content_type":"text/plain"}\n' % body
    return b'{"cloudEventsVersion":"0.1","eventID":"1","source":"s","eventType":"t","contentType":"text/plain","data":"%s"}\n' % body
read_request()
if mode == "together":
    out.write(answer(b"first") + answer(b"secret"))
    out.flush()
else:
    out.write(answer(b"first"))
    out.flush()
    for _ in range(3000):
        if os.path.exists(go):
            break
        time.sleep(0.01)
    out.write(answer(b"secret"))
    out.flush()
    sys.stderr.write("wrote\n")
    sys.stderr.flush()
while True:
    read_request()
    out.write(answer(b"fresh"))
    out.flush()
"#;

#[tokio::test]
async fn a_second_answer_never_reaches_the_next_call() {
    use tokio::io::AsyncBufReadExt;
    for format in [Format::Http, Format::Json, Format::CloudEvent] {
        for mode in ["together", "later"] {
            let what = format!("{format} {mode}");
            let dir = tempfile::tempdir().unwrap();
            let go = dir.path().join("go");
            let fmt = match format {
                Format::Http => "http",
                Format::Json => "json",
                _ => "cloudevent",
            };
            let mut child = Command::new("/usr/bin/python3")
                .args(["-c", TWICE, fmt, mode, go.to_str().unwrap()])
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
            let mut conn =
                StdioConn::new(format, Box::pin(stdin), Box::pin(stdout), Limits::default());
            let h = conn.call(spy_request(full_body("{}"))).await.unwrap();
            let (parts, body, o) = text(h).await;
            assert_eq!(parts.status, 200, "{what}");
            // The caller keeps the first answer.
            assert!(body.contains("first"), "{what}: {body}");
            if mode == "later" {
                assert!(o.instance_ok, "{what}");
                std::fs::write(&go, "").unwrap();
                let mut line = String::new();
                tokio::time::timeout(GUARD, stderr.read_line(&mut line))
                    .await
                    .expect("the function wrote its second answer")
                    .unwrap();
                assert_eq!(line, "wrote\n");
                // Whoever reuses the instance can tell.
                assert!(conn.has_stray_output(), "{what}");
            } else {
                // The instance ends once this answer is done.
                assert!(!o.instance_ok, "{what}");
            }
            // Whatever the next call gets, it is not the second answer.
            match conn.call(spy_request(full_body("{}"))).await {
                Ok(h) => {
                    let (_, body, _) = text(h).await;
                    panic!("{what}: the next call got {body:?}");
                }
                Err(e) => assert!(!e.instance_ok, "{what}"),
            }
        }
    }
}

#[tokio::test]
async fn a_function_quiet_between_calls_is_reused() {
    let (_child, mut conn) = hot("http-python", Format::Http);
    for _ in 0..3 {
        assert!(!conn.has_stray_output());
        let h = conn.call(spy_request(full_body("{}"))).await.unwrap();
        let (parts, _, o) = text(h).await;
        assert_eq!(parts.status, 200);
        assert!(o.instance_ok);
    }
    assert!(!conn.has_stray_output());
}
